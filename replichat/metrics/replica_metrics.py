"""A replica's Prometheus metrics (prometheus_client), fed two ways:

* gauges are read at scrape time from the same data as the Status RPC (`backend.status()`),
  the peer prober and the transport's byte counts: nothing on the write path;
* events come through the RuntimeObserver hook: counters are plain integers and histograms
  plain bucket counts (Histogram below), turned into prometheus_client's metric families at
  scrape time. prometheus_client's own Histogram takes a lock and walks its buckets on every
  observation: three of them per write cost ~8 us; these ~2 us (bench/metrics_cost.py).

Names and units follow Prometheus conventions: `replichat_` prefix, `_total` counters,
`_seconds` and `_bytes` units.
"""
import bisect
import collections
import time
from typing import Any, Callable, Deque, Dict, Iterator, Optional, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from replichat.metrics.observer import RuntimeObserver

ROLES = ("follower", "pre-candidate", "candidate", "leader")
# fsync of a batch takes ~0.3 ms on a good disk, tens of ms on a slow one.
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Writing a snapshot of the chat state: a VACUUM INTO plus fsync, from milliseconds to minutes.
SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
# The page's timeline: the last leader changes this replica saw.
TIMELINE_LENGTH = 200


class Histogram:
    """Counts per bucket and a sum; only the event loop observes, so no lock."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = list(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def family(self) -> HistogramMetricFamily:
        cumulative, buckets = 0, []
        for bound, count in zip(self.bounds + [float("inf")], self.counts):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(cumulative)))
        return HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=self.sum)


class ClusterEvent(dict):  # type: ignore[type-arg]
    """{"t": unix seconds, "term", "leader", "role", "what"}: JSON for the page as it is."""


class ReplicaMetrics(RuntimeObserver):
    def __init__(self, node_id: int, status: Callable[[], Any]) -> None:
        """`status`: the backend's status() (a chat_pb2.StatusResponse)."""
        self.node_id = node_id
        self._status = status
        self.registry = CollectorRegistry(auto_describe=False)
        self.fsync_seconds = Histogram(
            "replichat_fsync_seconds", "Time to fsync one batch of log entries and hard state", FSYNC_BUCKETS)
        self.apply_seconds = Histogram(
            "replichat_apply_seconds", "Time to apply one batch of committed entries to the chat state",
            LATENCY_BUCKETS)
        self.propose_to_commit_seconds = Histogram(
            "replichat_propose_to_commit_seconds",
            "Time from a write's proposal on this replica to its commit and apply here", LATENCY_BUCKETS)
        self.snapshot_seconds = Histogram(
            "replichat_snapshot_seconds", "Time to write a snapshot of the chat state", SNAPSHOT_BUCKETS)
        self.snapshots: Dict[str, int] = collections.defaultdict(int)  # taken | installed
        self.snapshot_bytes: Optional[int] = None
        self.proposals = 0
        self.commits = 0
        self.persisted_entries = 0
        self.applied_commands: Dict[str, int] = collections.defaultdict(int)
        self.messages_acknowledged = 0
        self.elections_started = 0
        self.elections_won = 0
        self.leader_changes = 0
        self.sessions = 0
        self.sessions_opened = 0
        self.messages_delivered = 0
        self.requests: Dict[tuple, int] = collections.defaultdict(int)  # (transport, method, status)
        self.timeline: Deque[ClusterEvent] = collections.deque(maxlen=TIMELINE_LENGTH)
        self._role = ""
        self._term = -1
        self._leader = -1
        # Filled by the prober / transport / state reader; read at scrape time.
        self.peer_up: Dict[int, bool] = {}
        self.peer_rtt_seconds: Dict[int, float] = {}
        self.peer_bytes_sent: Optional[Callable[[], Dict[int, int]]] = None
        self.peer_bytes_received: Optional[Callable[[], int]] = None
        self.state_counts: Dict[str, int] = {}
        self.state_count_error = ""
        # The first index the log still holds (entries before it are in the snapshot); None: unknown.
        self.first_index: Callable[[], Optional[int]] = lambda: None
        self.registry.register(_ScrapeTimeCollector(self))

    # ----------------------------------------------------------------- RuntimeObserver

    def persisted(self, seconds: float, entries: int) -> None:
        self.fsync_seconds.observe(seconds)
        self.persisted_entries += entries

    def applied(self, seconds: float, results: Sequence[Any]) -> None:
        self.apply_seconds.observe(seconds)
        self.commits += len(results)
        for item in results:
            command = getattr(item, "command", None)
            op = command.WhichOneof("op") if command is not None else None
            if op is None:
                continue
            self.applied_commands[op] += 1
            if op == "ack":
                result = getattr(item, "result", None)
                self.messages_acknowledged += int(result.count) if result is not None else 0

    def proposed(self, count: int) -> None:
        self.proposals += count

    def write_committed(self, seconds: float) -> None:
        self.propose_to_commit_seconds.observe(seconds)

    def raft_state(self, role: str, term: int, leader: int) -> None:
        if role == self._role and term == self._term and leader == self._leader:
            return
        if role == "candidate" and (self._role != "candidate" or term != self._term):
            self.elections_started += 1
        if role == "leader" and self._role != "leader":
            if self._role != "candidate":  # candidate and winner within one step (a lone replica)
                self.elections_started += 1
            self.elections_won += 1
        if leader != self._leader and leader != 0:
            self.leader_changes += 1
        if leader != self._leader or term != self._term:
            if role == "leader":
                what = f"replica {self.node_id} became the leader"
            elif leader:
                what = f"replica {leader} is the leader"
            else:
                what = f"no leader ({role})"
            self.timeline.append(ClusterEvent(t=time.time(), term=term, leader=leader, role=role, what=what))
        self._role, self._term, self._leader = role, term, leader

    def session_opened(self) -> None:
        self.sessions += 1
        self.sessions_opened += 1

    def session_closed(self) -> None:
        self.sessions -= 1

    def delivered(self, count: int) -> None:
        self.messages_delivered += count

    def snapshot_taken(self, seconds: float, size_bytes: int) -> None:
        self.snapshot_seconds.observe(seconds)
        self.snapshots["taken"] += 1
        self.snapshot_bytes = size_bytes

    def snapshot_installed(self, seconds: float, size_bytes: int) -> None:
        self.snapshots["installed"] += 1
        self.snapshot_bytes = size_bytes

    # ----------------------------------------------------------------- transports

    def request_done(self, transport: str, method: str, status: str) -> None:
        """One client request answered: transport grpc|wire, its method, its status code name."""
        self.requests[(transport, method, status)] += 1


class _ScrapeTimeCollector:
    """Everything that is cheaper to read when scraped than to keep up to date."""

    def __init__(self, metrics: ReplicaMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        for histogram in (m.fsync_seconds, m.apply_seconds, m.propose_to_commit_seconds, m.snapshot_seconds):
            yield histogram.family()
        snapshots = CounterMetricFamily("replichat_snapshots", "Snapshots taken here or installed from the leader",
                                        labels=["kind"])
        for kind in ("taken", "installed"):
            snapshots.add_metric([kind], float(m.snapshots.get(kind, 0)))
        yield snapshots
        if m.snapshot_bytes is not None:
            yield GaugeMetricFamily("replichat_snapshot_bytes", "Size of the latest snapshot taken or installed",
                                    value=float(m.snapshot_bytes))
        status = m._status()
        role = GaugeMetricFamily("replichat_raft_role", "1 for this replica's current Raft role", labels=["role"])
        for name in ROLES:
            role.add_metric([name], 1.0 if status.role == name else 0.0)
        yield role
        for name, value, help_text in (
            ("replichat_raft_term", status.term, "Current Raft term"),
            ("replichat_raft_leader_id", status.leader_id, "Id of the leader this replica knows (0: none)"),
            ("replichat_raft_commit_index", status.commit_index, "Highest log index known committed"),
            ("replichat_raft_applied_index", status.applied_index, "Highest log index applied to the chat state"),
            ("replichat_raft_last_index", status.last_index, "Index of the last entry in this replica's log"),
            ("replichat_connect_sessions", m.sessions, "Live connect sessions served by this replica"),
        ):
            yield GaugeMetricFamily(name, help_text, value=float(value))
        first_index = m.first_index()
        if first_index is not None:
            yield GaugeMetricFamily("replichat_raft_first_index",
                                    "First index the log still holds (earlier entries are in the snapshot)",
                                    value=float(first_index))
        for key, help_text in (("users", "Users in the chat state"),
                               ("messages", "Messages queued for their recipients and not yet acknowledged")):
            if key in m.state_counts:
                name = "replichat_users" if key == "users" else "replichat_queued_messages"
                yield GaugeMetricFamily(name, help_text, value=float(m.state_counts[key]))
        for name, value, help_text in (
            ("replichat_proposals", m.proposals, "Proposals this replica handed to its Raft core"),
            ("replichat_commits", m.commits, "Committed log entries applied by this replica"),
            ("replichat_persisted_entries", m.persisted_entries, "Log entries fsynced by this replica"),
            ("replichat_messages_acknowledged", m.messages_acknowledged,
             "Messages acknowledged by their recipients (delivered), as applied here"),
            ("replichat_elections_started", m.elections_started, "Elections this replica started as a candidate"),
            ("replichat_elections_won", m.elections_won, "Elections this replica won"),
            ("replichat_leader_changes", m.leader_changes, "Times the leader this replica knows changed"),
            ("replichat_connect_sessions_opened", m.sessions_opened, "Connect sessions opened on this replica"),
            ("replichat_messages_delivered", m.messages_delivered, "Messages pushed to sessions on this replica"),
        ):
            yield CounterMetricFamily(name, help_text, value=float(value))
        applied = CounterMetricFamily("replichat_applied_commands", "Chat commands applied, by command",
                                      labels=["command"])
        for command, count in sorted(m.applied_commands.items()):
            applied.add_metric([command], float(count))
        yield applied
        requests = CounterMetricFamily("replichat_requests", "Client requests answered, by transport, method and status",
                                       labels=["transport", "method", "status"])
        for (transport, method, code), count in sorted(m.requests.items()):
            requests.add_metric([transport, method, code], float(count))
        yield requests
        up = GaugeMetricFamily("replichat_peer_up", "1 if the peer answered its last status probe", labels=["peer"])
        rtt = GaugeMetricFamily("replichat_peer_rtt_seconds", "Round trip of the last status probe to the peer",
                                labels=["peer"])
        for peer, ok in sorted(m.peer_up.items()):
            up.add_metric([str(peer)], 1.0 if ok else 0.0)
            if ok and peer in m.peer_rtt_seconds:
                rtt.add_metric([str(peer)], m.peer_rtt_seconds[peer])
        yield up
        yield rtt
        if m.peer_bytes_sent is not None:
            sent = CounterMetricFamily("replichat_peer_sent_bytes", "Raft bytes written to each peer", labels=["peer"])
            for peer, count in sorted(m.peer_bytes_sent().items()):
                sent.add_metric([str(peer)], float(count))
            yield sent
        if m.peer_bytes_received is not None:
            yield CounterMetricFamily("replichat_peer_received_bytes", "Raft bytes received from peers",
                                      value=float(m.peer_bytes_received()))


def counter_values(metrics: ReplicaMetrics) -> Dict[str, float]:
    """The page's rates: cumulative writes (applied sends) and deliveries (acknowledged)."""
    return {"writes": float(metrics.applied_commands.get("send", 0)), "deliveries": float(metrics.messages_acknowledged)}
