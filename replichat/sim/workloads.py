"""Aimed workloads: extra work that makes rare moments of a run common (config.Workload).

Random clients rarely read at the instants where ReadIndex is fragile — in the round trip
between a leader's election and its first commit, or at a leader that was deposed and does not
know it yet — and random faults rarely cut a leader off exactly between committing a write
(and answering it) and telling its followers. A bug that only shows there (a read served from a
commit index that lags an acknowledged write) was caught in under 1% of seeds. These workloads
put the run in those moments on purpose, many times per run:

- leader-reads: a pool of read-only clients. When a replica wins an election, idle readers
  send it a read at once (one per mailbox, and a user list); every tick, while an older leader
  still believes it leads after a newer one was elected, an idle reader sends a read there.
  They are ordinary clients otherwise: their operations go into the history the
  linearizability check reads, and they retry and fail over like the others.
- commit-cutoff: sometimes, the moment a leader's commit index advances, its links to every
  peer are cut for a while. It still applies and answers the write; no follower hears the new
  commit index, and the next leader starts with a commit index behind it.

Nothing here draws from the run's generator unless its workload is on, so runs without it
replay exactly as before.
"""
from typing import Callable, Dict, List, Optional, Set, Tuple

from replichat.raft.core import Role
from replichat.raft.messages import Entry
from replichat.sim.chat_model import Fetch, Input, ListUsers
from replichat.sim.clients import ClientNetwork, SimClient, _Pending
from replichat.sim.config import Workload
from replichat.sim.linearizability import Operation
from replichat.sim.network import Network
from replichat.sim.replica import SimReplica
from replichat.sim.world import World

# Readers in the pool; op ids of their operations start here (apart from the clients').
READERS = 6
READER_OP_IDS = 1_000_000
# Chance that a commit by a leader cuts it off (while no cut-off is active), and for how long.
# Long enough for the followers to elect a new leader (a lease, then a randomized timeout).
CUTOFF_CHANCE = 0.25
CUTOFF_TICKS = (20, 45)


class TargetedReader(SimClient):
    """A read-only client that starts an operation only when told to, at a chosen replica."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._target: Optional[int] = None
        self._next_read: Optional[Input] = None

    def start(self) -> None:
        pass  # reads start from read_at, never on their own

    def read_at(self, replica: int, op: Input) -> bool:
        """Start reading `op` at `replica` now; False if busy or the run is draining."""
        if not self.idle or self.world.draining:
            return False
        self._target, self._next_read = replica, op
        self._begin()
        return True

    def _choose(self) -> Tuple[Input, int]:
        op, self._next_read = self._next_read, None
        assert op is not None
        return op, 0

    def _begin(self) -> None:
        if self._next_read is not None:
            super()._begin()

    def _choose_replica(self, pending: _Pending) -> int:
        if pending.attempts == 1 and self._target is not None:
            self.preferred, self._target = self._target, None
            return self.preferred
        return super()._choose_replica(pending)


class Workloads:
    def __init__(
        self,
        world: World,
        network: Network,
        client_net: ClientNetwork,
        replicas: Dict[int, SimReplica],
        names: List[str],
        history: List[Operation],
        on_acknowledged: Callable[[Entry], None],
        first_client: int,
    ) -> None:
        self.world = world
        self.network = network
        self.replicas = replicas
        self.names = names
        kinds = world.config.workloads
        self.readers: List[TargetedReader] = []
        if Workload.LEADER_READS in kinds:
            counter = [READER_OP_IDS]

            def next_op_id() -> int:
                counter[0] += 1
                return counter[0]

            ids = sorted(replicas)
            self.readers = [
                TargetedReader(first_client + n, world, client_net, ids, names, history, next_op_id, on_acknowledged, False)
                for n in range(READERS)
            ]
            chained_elected = world.on_elected

            def elected(rid: int) -> None:
                chained_elected(rid)
                self._elected(rid)

            world.on_elected = elected
        self._cutoff = Workload.COMMIT_CUTOFF in kinds
        self._cut_active = False
        self._commit_seen: Dict[int, int] = {}
        if self._cutoff:
            chained_commit = world.on_commit

            def committed(rid: int) -> None:
                chained_commit(rid)
                self._committed(rid)

            world.on_commit = committed

    def start(self) -> None:
        if self.readers:
            self.world.queue.after(self.world.timing.tick, self._watch_deposed)

    # ----------------------------------------------------------------- leader-reads

    def _idle_reader(self) -> Optional[TargetedReader]:
        return next((r for r in self.readers if r.idle), None)

    def _elected(self, rid: int) -> None:
        if self.world.draining:
            return
        reads: List[Input] = [Fetch(name) for name in self.names] + [ListUsers("")]
        for op in reads:
            reader = self._idle_reader()
            if reader is None or not reader.read_at(rid, op):
                return
            self.world.counts["workload reads at a new leader"] += 1

    def _watch_deposed(self) -> None:
        if self.world.draining:
            return
        leaders = [
            (r.core.term, rid) for rid, r in sorted(self.replicas.items()) if r.is_leader() and r.core is not None
        ]
        if len(leaders) > 1:
            newest = max(term for term, _ in leaders)
            for term, rid in leaders:
                reader = self._idle_reader()
                if term < newest and reader is not None:
                    op: Input = self.world.rng.choice([Fetch(name) for name in self.names] + [ListUsers("")])
                    if reader.read_at(rid, op):
                        self.world.counts["workload reads at a deposed leader"] += 1
        self.world.queue.after(self.world.timing.tick, self._watch_deposed)

    # ----------------------------------------------------------------- commit-cutoff

    def _committed(self, rid: int) -> None:
        replica = self.replicas[rid]
        core = replica.core
        if core is None:
            return
        before = min(self._commit_seen.get(rid, 0), core.log.committed)
        self._commit_seen[rid] = core.log.committed
        if self.world.draining or self._cut_active or core.role is not Role.LEADER:
            return
        # Only a commit that answers a client (not the leader's no-op alone) leaves anyone
        # told something the followers do not know.
        if before < core.log.first_index - 1 or not any(e.data for e in core.log.slice(before + 1, core.log.committed + 1)):
            return
        rng = self.world.rng
        if rng.random() >= CUTOFF_CHANCE:
            return
        others = [r for r in sorted(self.replicas) if r != rid]
        links: Set[Tuple[int, int]] = {(rid, o) for o in others} | {(o, rid) for o in others}
        fresh = links - self.network.blocked
        self.network.cut(fresh)
        self._cut_active = True
        self.world.faults["commit-cutoff (workload)"] += 1
        self.world.log(f"WORKLOAD commit-cutoff: leader r{rid} cut off at commit {core.log.committed}")

        def restore() -> None:
            self.network.blocked.difference_update(fresh)
            self._cut_active = False
            self.world.log(f"WORKLOAD commit-cutoff: r{rid} links restored")

        low, high = CUTOFF_TICKS
        self.world.queue.after(rng.randint(low, high) * self.world.timing.tick, restore)
