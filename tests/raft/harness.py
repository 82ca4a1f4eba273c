"""A tiny in-memory cluster for unit tests of the consensus core: instant durable disk, a
network that delivers in order unless a test cuts links. (The fault-injecting simulator with
loss, reordering and crashes is a separate, seeded harness.)"""
from typing import Callable, Dict, List, Optional, Set, Tuple

from replichat.raft.core import Config, RaftCore, Role
from replichat.raft.log import RaftLog
from replichat.raft.messages import Entry, HardState, LogRegression, Message, MsgType, ReadState, SnapshotMeta


class Replica:
    def __init__(self, config: Config) -> None:
        self.config = config
        # The durable log holds the entries after disk_base; the "state machine" is the list
        # of applied entries, and a snapshot is a copy of it.
        self.disk_log: List[Entry] = []
        self.disk_base = SnapshotMeta()
        self.disk_state = HardState()
        self.applied: List[Entry] = []
        self.reads: List[ReadState] = []
        self.snapshot = SnapshotMeta()
        self.snapshot_state: List[Entry] = []
        # A snapshot being received: what the leader's runtime streamed before its message.
        self.incoming: Optional[Tuple[SnapshotMeta, List[Entry]]] = None
        self.regressions: List[LogRegression] = []
        self.core = RaftCore(config)

    def restart(self) -> None:
        """Crash and restart from what was persisted."""
        log = RaftLog(
            self.disk_log, self.disk_state.commit, len(self.applied),
            base_index=self.disk_base.index, base_term=self.disk_base.term,
        )
        self.core = RaftCore(self.config, log, self.disk_state, self.snapshot)
        self.core.log.applied = min(len(self.applied), self.core.log.committed)

    def take_snapshot(self) -> SnapshotMeta:
        index = len(self.applied)
        meta = SnapshotMeta(index, self.core.log.term(index))
        self.snapshot, self.snapshot_state = meta, list(self.applied)
        self.core.snapshot_taken(meta)
        return meta

    def compact(self, index: int) -> None:
        term = self.core.log.term(index)
        self.core.compact(index)
        del self.disk_log[: index - self.disk_base.index]
        self.disk_base = SnapshotMeta(index, term)

    def handle_ready(self) -> List[Message]:
        ready = self.core.ready()
        self.regressions.extend(ready.log_regressions)
        if ready.snapshot is not None:
            assert self.incoming is not None and self.incoming[0] == ready.snapshot, (self.incoming, ready.snapshot)
            meta, state = self.incoming
            assert meta.index > len(self.applied), "installed a snapshot older than the state"
            self.snapshot, self.snapshot_state = meta, list(state)
            self.applied = list(state)
            self.disk_log, self.disk_base = [], meta
            self.incoming = None
        if ready.entries:
            first = ready.entries[0].index
            del self.disk_log[first - self.disk_base.index - 1 :]
            self.disk_log.extend(ready.entries)
        if ready.hard_state is not None:
            self.disk_state = ready.hard_state
        self.applied.extend(e for e in ready.committed if e.index > len(self.applied))
        self.reads.extend(ready.read_states)
        self.core.advance(ready)
        return ready.messages


class Cluster:
    def __init__(self, size: int, election_ticks: int = 10, seed: int = 1, **options: object) -> None:
        voters = tuple(range(1, size + 1))
        self.replicas: Dict[int, Replica] = {
            i: Replica(Config(i, voters, election_ticks=election_ticks, seed=seed, **options))  # type: ignore[arg-type]
            for i in voters
        }
        self.cut: Set[Tuple[int, int]] = set()
        self.down: Set[int] = set()
        # Rewrites each delivered message; None drops it.
        self.filter: Optional[Callable[[Message], Optional[Message]]] = None
        self.sent: List[Message] = []

    def core(self, i: int) -> RaftCore:
        return self.replicas[i].core

    def isolate(self, i: int) -> None:
        for j in self.replicas:
            if j != i:
                self.cut.add((i, j))
                self.cut.add((j, i))

    def heal(self) -> None:
        self.cut.clear()

    def settle(self, max_rounds: int = 1000) -> None:
        """Deliver messages until nothing is left to do."""
        for _ in range(max_rounds):
            outgoing: List[Message] = []
            for i, replica in self.replicas.items():
                if i not in self.down and replica.core.has_ready():
                    outgoing.extend(replica.handle_ready())
            if not outgoing:
                return
            self.sent.extend(outgoing)
            for sent in outgoing:
                m = self.filter(sent) if self.filter else sent
                # A core may answer an id no replica has (a hostile sequence steps messages from
                # made-up senders): like a network with no such host, that goes nowhere.
                delivered = not (m is None or m.dst not in self.replicas or m.dst in self.down or (m.src, m.dst) in self.cut)
                if sent.type is MsgType.SNAPSHOT:
                    # The runtime streams the file first, then reports how it went.
                    sender = self.replicas[sent.src]
                    if delivered:
                        self.replicas[sent.dst].incoming = (sender.snapshot, list(sender.snapshot_state))
                    sender.core.report_snapshot(sent.dst, delivered)
                if m is None or not delivered:
                    continue
                receiver = self.replicas[m.dst].core
                if m.type is MsgType.SNAPSHOT:
                    receiver.snapshot_received(m)
                else:
                    receiver.step(m)
        raise AssertionError("cluster did not settle")

    def tick(self, n: int = 1, only: Optional[List[int]] = None) -> None:
        for _ in range(n):
            for i, replica in self.replicas.items():
                if i not in self.down and (only is None or i in only):
                    replica.core.tick()
            self.settle()

    def elect(self, i: int) -> None:
        self.core(i).campaign()
        self.settle()
        assert self.core(i).role is Role.LEADER, self.core(i).status()

    def leaders(self) -> List[int]:
        return [i for i, r in self.replicas.items() if i not in self.down and r.core.role is Role.LEADER]

    def leader(self) -> int:
        leaders = self.leaders()
        assert len(leaders) == 1, leaders
        return leaders[0]
