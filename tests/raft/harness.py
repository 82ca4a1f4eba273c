"""A tiny in-memory cluster for unit tests of the consensus core: instant durable disk, a
network that delivers in order unless a test cuts links. (The fault-injecting simulator with
loss, reordering and crashes is a separate, seeded harness.)"""
from typing import Callable, Dict, List, Optional, Set, Tuple

from replichat.raft.core import Config, RaftCore, Role
from replichat.raft.log import RaftLog
from replichat.raft.messages import Entry, HardState, Message, ReadState


class Replica:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.disk_log: List[Entry] = []
        self.disk_state = HardState()
        self.applied: List[Entry] = []
        self.reads: List[ReadState] = []
        self.core = RaftCore(config)

    def restart(self) -> None:
        """Crash and restart from what was persisted."""
        self.core = RaftCore(self.config, RaftLog(self.disk_log, self.disk_state.commit), self.disk_state)
        self.core.log.applied = min(len(self.applied), self.core.log.committed)

    def handle_ready(self) -> List[Message]:
        ready = self.core.ready()
        if ready.entries:
            first = ready.entries[0].index
            del self.disk_log[first - 1 :]
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
                if m is None or m.dst in self.down or (m.src, m.dst) in self.cut:
                    continue
                self.replicas[m.dst].core.step(m)
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
