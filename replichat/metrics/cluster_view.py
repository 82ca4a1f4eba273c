"""What the cluster page shows: every replica's Status (asked over gRPC once a second, which
also gives the peer reachability and round-trip metrics), the write and delivery counts of the
last minutes, and the users/queued-messages counts (read off the loop from the chat state)."""
import asyncio
import collections
import concurrent.futures
import logging
import os
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import grpc

from replichat.chat.state import ChatStateReader
from replichat.metrics.replica_metrics import ReplicaMetrics, counter_values
from replichat.proto import chat_pb2, chat_pb2_grpc

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 0.8
# The page's rate charts cover this many samples (one per probe): five minutes.
HISTORY = 300
# Counting users and queued messages reads whole tables: not every second.
STATE_COUNT_EVERY = 5


class ClusterView:
    def __init__(self, node_id: int, cluster: Dict[int, str], status: Callable[[], chat_pb2.StatusResponse],
                 metrics: ReplicaMetrics, data_dir: str,
                 credentials: Optional[grpc.ChannelCredentials] = None) -> None:
        """cluster: every replica's gRPC address (this one's included); credentials: TLS for
        replicas that serve gRPC with TLS (None: plaintext)."""
        self._credentials = credentials
        self.node_id = node_id
        self.cluster = dict(cluster)
        self._status = status
        self._metrics = metrics
        self._state_path = os.path.join(data_dir, "state.db")
        self._channels: Dict[int, grpc.aio.Channel] = {}
        self.statuses: Dict[int, Optional[chat_pb2.StatusResponse]] = {}
        self.history: Deque[Tuple[float, float, float]] = collections.deque(maxlen=HISTORY)
        self._task: Optional["asyncio.Task[None]"] = None
        # Its own thread and read-only connection: never in the way of the replica's.
        self._counter = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"metrics-{node_id}")
        self._reader: Optional[ChatStateReader] = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        for channel in self._channels.values():
            await channel.close()
        self._counter.submit(self._close_reader)
        self._counter.shutdown(wait=False)

    async def _run(self) -> None:
        rounds = 0
        while True:
            started = time.monotonic()
            await self.probe()
            if rounds % STATE_COUNT_EVERY == 0:
                await self._count_state()
            rounds += 1
            await asyncio.sleep(max(0.0, PROBE_INTERVAL_S - (time.monotonic() - started)))

    async def probe(self) -> None:
        """Ask every other replica for its status; note this replica's counters."""
        peers = [i for i in sorted(self.cluster) if i != self.node_id]
        answers = await asyncio.gather(*(self._probe(i) for i in peers))
        for peer, (status, rtt) in zip(peers, answers):
            self.statuses[peer] = status
            self._metrics.peer_up[peer] = status is not None
            if status is not None:
                self._metrics.peer_rtt_seconds[peer] = rtt
        self.statuses[self.node_id] = self._status()
        counts = counter_values(self._metrics)
        self.history.append((time.time(), counts["writes"], counts["deliveries"]))

    async def _probe(self, peer: int) -> Tuple[Optional[chat_pb2.StatusResponse], float]:
        channel = self._channels.get(peer)
        if channel is None:
            channel = self._channels[peer] = (
                grpc.aio.insecure_channel(self.cluster[peer]) if self._credentials is None
                else grpc.aio.secure_channel(self.cluster[peer], self._credentials))
        started = time.perf_counter()
        try:
            status = await chat_pb2_grpc.ChatStub(channel).Status(chat_pb2.StatusRequest(), timeout=PROBE_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return None, 0.0
        return status, time.perf_counter() - started

    async def _count_state(self) -> None:
        try:
            counts = await asyncio.get_event_loop().run_in_executor(self._counter, self._read_counts)
        except Exception as error:  # e.g. the database is not created yet: try again next time
            if repr(error) != self._metrics.state_count_error:
                log.warning("cannot count users and queued messages for the metrics: %r", error)
            self._metrics.state_count_error = repr(error)
            self._metrics.state_counts.clear()
            return
        self._metrics.state_count_error = ""
        self._metrics.state_counts.update(counts)

    def _read_counts(self) -> Dict[str, int]:
        if self._reader is None:
            self._reader = ChatStateReader(self._state_path)
        stats = self._reader.stats()
        return {"users": stats["users"], "messages": stats["messages"]}

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def snapshot(self) -> Dict[str, Any]:
        """The page's JSON."""
        self.statuses[self.node_id] = self._status()
        answered = [s for s in self.statuses.values() if s is not None]
        newest_commit = max((s.commit_index for s in answered), default=0)
        # The leader as the replicas of the highest term see it.
        top_term = max((s.term for s in answered), default=0)
        leaders = {s.leader_id for s in answered if s.term == top_term and s.leader_id}
        replicas: List[Dict[str, Any]] = []
        for node_id in sorted(self.cluster):
            status = self.statuses.get(node_id)
            row: Dict[str, Any] = {"id": node_id, "address": self.cluster[node_id], "reachable": status is not None,
                                   "self": node_id == self.node_id}
            if status is not None:
                row.update(role=status.role, term=status.term, leader=status.leader_id, commit=status.commit_index,
                           applied=status.applied_index, last=status.last_index,
                           lag=max(0, newest_commit - status.applied_index),
                           rtt_ms=None if node_id == self.node_id else round(self._metrics.peer_rtt_seconds.get(node_id, 0) * 1000, 2))
            replicas.append(row)
        return {
            "self": self.node_id,
            "time": time.time(),
            "leader": leaders.pop() if len(leaders) == 1 else 0,
            "term": top_term,
            "replicas": replicas,
            "timeline": list(self._metrics.timeline)[-50:],
            "history": [list(sample) for sample in self.history],
            "users": self._metrics.state_counts.get("users"),
            "queued": self._metrics.state_counts.get("messages"),
        }
