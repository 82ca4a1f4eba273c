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

- change-race: the 2015 bug of the single-server membership algorithm needs a leader that
  proposes a change before it committed an entry of its term, while an earlier leader's
  uncommitted change sits in that earlier leader's log; then the new change commits under one
  configuration and the earlier leader wins an election under the other. Random faults almost
  never line that up. Here, every few ticks the leader is asked for a membership change (the
  nemesis's kinds: add a learner, promote, remove), and often (mostly when the voters are even
  in number, which the bug needs) it is cut off from every peer as the change leaves, so the
  change stays on it alone. When the others elect a leader, that leader is asked at once for a
  change (removing the stranded leader, when it is one of its voters), and the cluster is
  split: the new leader with just enough of its new configuration's voters to commit that
  change, against everyone else, the stranded leader included, who may elect it under the
  configuration only it holds. The real core refuses the second change (no entry of its term
  committed yet), so for it these are only partitions.

Nothing here draws from the run's generator unless its workload is on, so runs without it
replay exactly as before.
"""
from typing import Callable, Dict, List, Optional, Set, Tuple

from replichat.raft.core import Role
from replichat.raft.membership import Change
from replichat.raft.messages import Entry
from replichat.sim.chat_model import Fetch, Input, ListUsers
from replichat.sim.clients import ClientNetwork, SimClient, _Pending
from replichat.sim.config import Workload
from replichat.sim.linearizability import Operation
from replichat.sim.nemesis import Nemesis
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
# change-race: ticks between the leader's changes; the chance a change is stranded on its
# leader, and for how long (long enough for the others to elect a leader); how long the split
# after the new leader's change lasts (long enough for the stranded leader to be elected).
CHANGE_TICKS = (3, 15)
# The bug needs an even number of voters before the stranded change (4 of them: a majority
# of 3 elects the next leader, 2 of the 3 left commit its change, and the stranded leader
# finds its own majority among the rest): stranded mostly then, sometimes otherwise.
STRAND_CHANCE_EVEN = 0.9
STRAND_CHANCE_ODD = 0.2
STRAND_TICKS = (15, 40)
RACE_TICKS = (20, 60)


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
        nemesis: Optional[Nemesis] = None,
        client_replicas: Optional[List[int]] = None,
    ) -> None:
        """client_replicas: the list of replicas the clients send to, which the simulation keeps
        up to date with the membership (shared, not copied: readers retry among today's members,
        not a removed replica forever)."""
        self.world = world
        self.nemesis = nemesis
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

            ids = client_replicas if client_replicas is not None else sorted(replicas)
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
        self._race = Workload.CHANGE_RACE in kinds and nemesis is not None
        # The leader whose change is stranded on it (None: no race on), and its cut links.
        self._stranded: Optional[int] = None
        self._strand_links: Set[Tuple[int, int]] = set()
        self._strands = 0
        if self._race:
            chained_race = world.on_elected

            def elected_race(rid: int) -> None:
                chained_race(rid)
                if self._stranded is not None and rid != self._stranded and not world.draining:
                    old = self._stranded
                    world.queue.after(0, lambda: self._second_change(rid, old))

            world.on_elected = elected_race

    def start(self) -> None:
        if self.readers:
            self.world.queue.after(self.world.timing.tick, self._watch_deposed)
        if self._race:
            self.world.queue.after(self._ticks(CHANGE_TICKS), self._first_change)

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

    # ----------------------------------------------------------------- change-race

    def _ticks(self, bounds: Tuple[int, int]) -> int:
        return self.world.rng.randint(*bounds) * self.world.timing.tick

    def _first_change(self) -> None:
        world = self.world
        if world.draining:
            return
        world.queue.after(self._ticks(CHANGE_TICKS), self._first_change)
        assert self.nemesis is not None
        leaders = [r for _, r in sorted(self.replicas.items()) if r.up and r.is_leader() and r.driver is not None]
        if self._stranded is not None or not leaders:
            return
        leader = max(leaders, key=lambda r: r.core.term if r.core is not None else 0)
        assert leader.core is not None
        voters = len(leader.core.membership.voters)
        if self.nemesis.propose_change(leader, leader.core.membership) is None:
            return
        world.counts["workload changes"] += 1
        if world.rng.random() >= (STRAND_CHANCE_ODD if voters % 2 else STRAND_CHANCE_EVEN):
            return
        # Cut off as the change leaves (its appends in flight are dropped on arrival too).
        others = [rid for rid in sorted(self.replicas) if rid != leader.id]
        links = {(leader.id, o) for o in others} | {(o, leader.id) for o in others}
        self._strand_links = links - self.network.blocked
        self.network.cut(self._strand_links)
        self._stranded = leader.id
        self._strands += 1
        strand = self._strands
        world.counts["workload stranded changes"] += 1
        world.log(f"WORKLOAD change-race: r{leader.id} cut off with its change")
        world.queue.after(self._ticks(STRAND_TICKS), lambda: self._end_strand(strand))

    def _end_strand(self, strand: int) -> None:
        if strand != self._strands or self._stranded is None:
            return  # a race ended it already, or a newer strand began
        self.network.blocked.difference_update(self._strand_links)
        self.world.log(f"WORKLOAD change-race: r{self._stranded}'s links restored")
        self._strand_links = set()
        self._stranded = None

    def _second_change(self, rid: int, old: int) -> None:
        """The new leader `rid` is asked for a change at once; the cluster splits so that it
        could commit with as few voters as its new configuration allows, the rest (the stranded
        leader `old` among them) on the other side."""
        world = self.world
        leader = self.replicas[rid]
        if world.draining or self._stranded != old or not leader.up or not leader.is_leader() or leader.core is None:
            return
        assert self.nemesis is not None
        current = leader.core.membership
        new = None
        if old in current.voters:
            new = self.nemesis.propose(leader, current, Change.remove(old))
        if new is None:
            new = self.nemesis.propose_change(leader, current)
        if new is None:
            return
        world.counts["workload changes at a new leader"] += 1
        # The strand ends here; the split takes over.
        self.network.blocked.difference_update(self._strand_links)
        self._strand_links = set()
        self._stranded = None
        rng = world.rng
        voters = sorted(new.voters - {rid, old})
        needed = len(new.voters) // 2 + 1 - (1 if rid in new.voters else 0)
        side = {rid} | set(rng.sample(voters, min(max(needed, 0), len(voters))))
        rest = [r for r in sorted(self.replicas) if r not in side]
        links = {(a, b) for a in side for b in rest} | {(b, a) for a in side for b in rest}
        fresh = links - self.network.blocked
        self.network.cut(fresh)
        world.log(f"WORKLOAD change-race: r{rid} asked for a change at once; split {sorted(side)} | {rest}")

        def restore() -> None:
            self.network.blocked.difference_update(fresh)
            world.log(f"WORKLOAD change-race: split {sorted(side)} | {rest} healed")

        world.queue.after(self._ticks(RACE_TICKS), restore)
