"""The fault injector: every few ticks, one more thing goes wrong, for a while.

Faults overlap freely (a partition during a crash during message loss), and each has a random
duration, so the cluster sees both short blips and outages longer than an election timeout.
The pace changes in phases (storms with a fault every few ticks, calms with one a minute), so a
run both loses availability and gets time to build up state that later faults can threaten.

Random faults rarely hit the narrow windows where Raft bugs live, so some faults aim: a crash
may be a trap that springs at the victim's next vote grant or commit decision (and the process
comes straight back, as under a supervisor); leader churn crashes newly elected leaders at
once or at their first commit, and may first cut off the old leader. Those are the moments
behind Figure 8 of the Raft paper and behind votes forgotten across a restart.

Which kinds may be injected is part of the run's configuration, which is what lets the shrinker
look for the smallest set of fault kinds that still breaks a run. `heal_all` ends every fault at
once, for the liveness phase.

Membership changes are proposed at the leader like an operator's: a new replica is started
first (empty, outside the configuration) and then added as a learner; learners are promoted;
voters (the leader too) and learners are removed, never below the bootstrap number of voters
(so the checker's quorum stays meaningful) and never so that the replicas whose disks failed
their checks become a majority of any configuration that is or may come into effect (the
cluster must be able to recover). Sometimes a second change follows the first at once: the
leader must refuse it while the first is uncommitted.
"""
from typing import Callable, Dict, FrozenSet, List, Optional, Set, Tuple

from replichat.raft import membership as conf
from replichat.raft.membership import Change, ChangeKind, Membership, MembershipError

from replichat.sim.clients import ClientNetwork
from replichat.sim.config import Fault
from replichat.sim.network import Network
from replichat.sim.replica import SimReplica, Status
from replichat.sim.world import World

_WEIGHTS = {
    Fault.LOSS: 3,
    Fault.DUPLICATE: 2,
    Fault.DELAY: 3,
    Fault.PARTITION: 3,
    Fault.ASYMMETRIC: 2,
    Fault.FLAPPING: 1,
    Fault.ISOLATE_LEADER: 2,
    Fault.LEADER_CHURN: 2,
    Fault.CRASH: 4,
    Fault.POWER_LOSS: 1,
    Fault.PAUSE: 2,
    Fault.SLOW: 2,
    Fault.TRANSFER: 1,
    Fault.CLIENT_LOSS: 1,
    Fault.CORRUPT_DISK: 1,
    Fault.MEMBERSHIP: 3,
}
# Replicas a run may add, beyond the bootstrap ones.
MAX_ADDED = 4


class Nemesis:
    def __init__(
        self,
        world: World,
        network: Network,
        client_net: ClientNetwork,
        replicas: Dict[int, SimReplica],
        start_replica: Optional[Callable[[int], SimReplica]] = None,
    ) -> None:
        self.world = world
        self._start_replica = start_replica
        self._bootstrap = Membership.of_voters(range(1, world.config.replicas + 1))
        self._next_id = world.config.replicas + 1
        self._changes = 0
        # Replicas this nemesis started to add, and those it asked to remove.
        self._started: List[int] = []
        self._removal_asked: Set[int] = set()
        self.network = network
        self.client_net = client_net
        self.replicas = replicas
        self.active = False
        enabled = world.config.faults
        self._kinds = [k for k in Fault if k in enabled]
        self._weights = [_WEIGHTS[k] for k in self._kinds]
        # Weather changes: phases of storm and calm, each with its own mean gap (in ticks)
        # between two faults, so every run has both outages and time to make progress.
        self._gap = 10
        self._phase_ends = 0
        self._churn_until = -1
        world.on_elected = self._elected
        world.on_down = self._down

    def start(self) -> None:
        if self._kinds:
            self.active = True
            self._schedule_next()
        # Snapshot steps are too short for a crash at a random time to land in: while faults
        # run, each snapshot taken or installed is struck at one of its steps with this chance
        # (a crash, or a power loss if that fault is on) — on top of the nemesis's own traps.
        faults = self.world.config.faults
        if Fault.CRASH in faults or Fault.POWER_LOSS in faults:
            self.world.snapshot_crash_chance = 0.15
            self.world.snapshot_power_loss = Fault.POWER_LOSS in faults

    def _ticks(self, low: int, high: int) -> int:
        return self.world.rng.randint(low, high) * self.world.timing.tick

    def _schedule_next(self) -> None:
        rng = self.world.rng
        if self.world.now >= self._phase_ends:
            self._gap = rng.choice((3, 8, 20, 60))
            self._phase_ends = self.world.now + self._ticks(30, 200)
            self.world.log(f"NEMESIS weather: a fault every ~{self._gap} ticks until {self._phase_ends}")
        self.world.queue.after(self._ticks(1, 2 * self._gap), self._act)

    def _act(self) -> None:
        if not self.active:
            return
        kind = self.world.rng.choices(self._kinds, weights=self._weights)[0]
        getattr(self, "_" + kind.value.replace("-", "_"))()
        self._schedule_next()

    def _count(self, kind: Fault, text: str) -> None:
        self.world.faults[kind.value + " (events)"] += 1
        self.world.log(f"NEMESIS {kind.value}: {text}")

    def _later(self, delay: int, action: Callable[[], None]) -> None:
        """Run `action` after `delay` unless everything was healed meanwhile."""

        def run() -> None:
            if self.active:
                action()

        self.world.queue.after(delay, run)

    # ----------------------------------------------------------------- message weather

    def _rate(self, high: float) -> float:
        rng = self.world.rng
        return 0.0 if rng.random() < 0.4 else rng.uniform(0.01, high)

    def _loss(self) -> None:
        self.network.loss = self._rate(0.3)
        self._count(Fault.LOSS, f"rate {self.network.loss:.2f}")

    def _duplicate(self) -> None:
        self.network.duplicate = self._rate(0.3)
        self._count(Fault.DUPLICATE, f"rate {self.network.duplicate:.2f}")

    def _delay(self) -> None:
        self.network.delay = self._rate(0.3)
        self._count(Fault.DELAY, f"rate {self.network.delay:.2f}")

    # ----------------------------------------------------------------- links

    def _cut_for(self, links: Set[Tuple[int, int]], low: int, high: int) -> None:
        fresh = links - self.network.blocked
        self.network.cut(fresh)
        self._later(self._ticks(low, high), lambda: self._restore(fresh))

    def _restore(self, links: Set[Tuple[int, int]]) -> None:
        self.network.blocked.difference_update(links)
        self.world.log(f"NEMESIS links restored: {sorted(links)}")

    def _split(self) -> Tuple[List[int], List[int]]:
        ids = sorted(self.replicas)
        self.world.rng.shuffle(ids)
        k = self.world.rng.randint(1, len(ids) - 1)
        return sorted(ids[:k]), sorted(ids[k:])

    @staticmethod
    def _between(a: List[int], b: List[int]) -> Set[Tuple[int, int]]:
        return {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}

    def _partition(self) -> None:
        a, b = self._split()
        self._count(Fault.PARTITION, f"{a} | {b}")
        self._cut_for(self._between(a, b), 3, 60)

    def _asymmetric(self) -> None:
        rng = self.world.rng
        ids = sorted(self.replicas)
        links = {(src, dst) for src in ids for dst in ids if src != dst}
        chosen = set(rng.sample(sorted(links), rng.randint(1, len(ids))))
        self._count(Fault.ASYMMETRIC, f"one-way cuts {sorted(chosen)}")
        self._cut_for(chosen, 3, 60)

    def _flapping(self) -> None:
        a, b = self._split()
        links = self._between(a, b)
        end = self.world.now + self._ticks(10, 60)
        self._count(Fault.FLAPPING, f"{a} | {b} on and off")

        def toggle(cut: bool) -> None:
            if self.world.now >= end:
                self.network.blocked.difference_update(links)
                return
            if cut:
                self.network.cut(links)
            else:
                self.network.blocked.difference_update(links)
            self._later(self._ticks(1, 4), lambda: toggle(not cut))

        toggle(True)

    def _leader(self) -> Optional[SimReplica]:
        leaders = [r for r in self.replicas.values() if r.is_leader()]
        if not leaders:
            return None
        return max(leaders, key=lambda r: r.core.term if r.core else 0)

    def _isolate_leader(self) -> None:
        leader = self._leader()
        if leader is None:
            return
        others = [r for r in sorted(self.replicas) if r != leader.id]
        self._count(Fault.ISOLATE_LEADER, f"r{leader.id}")
        self._cut_for(self._between([leader.id], others), 3, 50)

    def _leader_churn(self) -> None:
        self._churn_until = self.world.now + self._ticks(30, 150)
        self._count(Fault.LEADER_CHURN, f"new leaders crash until {self._churn_until}")
        leader = self._leader()
        if leader is not None and self.world.rng.random() < 0.5:
            # Cut off the current leader too: it keeps appending client writes alone, in its
            # term, while the short-lived leaders after it each leave a no-op of their own —
            # the divergent logs of Figure 8 in the Raft paper.
            others = [r for r in sorted(self.replicas) if r != leader.id]
            self.world.log(f"NEMESIS leader-churn: isolating r{leader.id} first")
            self._cut_for(self._between([leader.id], others), 5, 30)

    def _elected(self, rid: int) -> None:
        """A new leader during a churn window crashes, either as soon as its first Ready is
        durable (its term's no-op exists on its disk alone) or right after its first commit
        decision, before any follower hears of it. Either leaves logs that diverge by term.
        With membership changes on, a new leader is sometimes asked for a change at once,
        before it committed anything in its term (it must refuse until it has)."""
        if self.active and Fault.MEMBERSHIP in self._kinds and self.world.rng.random() < 0.3:
            self.world.queue.after(0, self._membership)
        if not self.active or self.world.now >= self._churn_until:
            return
        rng = self.world.rng
        choice = rng.random()
        if choice < 0.2:
            return
        replica = self.replicas[rid]
        if choice < 0.6:
            self._count(Fault.LEADER_CHURN, f"new leader r{rid} will crash at its first commit")
            replica.trap = "commit"  # restarted by _down once it springs
            return
        self._count(Fault.LEADER_CHURN, f"new leader r{rid} crashes once its no-op is durable")
        life = replica.life

        def strike() -> None:
            # By now the Ready holding the no-op is being persisted.
            if self.active and replica.life == life:
                replica.crash("after-persist" if replica.busy else None)

        self.world.queue.after(0, strike)
        self.world.queue.after(self._ticks(1, 15), lambda: self._restart(replica))

    # ----------------------------------------------------------------- processes

    def _victim(self, prefer_leader: float) -> Optional[SimReplica]:
        rng = self.world.rng
        leader = self._leader()
        if leader is not None and rng.random() < prefer_leader:
            return leader
        alive = [r for _, r in sorted(self.replicas.items()) if r.status is not Status.DOWN]
        return rng.choice(alive) if alive else None

    def _crash(self, power_loss: bool = False) -> None:
        victim = self._victim(0.4)
        if victim is None:
            return
        rng = self.world.rng
        if not power_loss and victim.trap is None and rng.random() < 0.3:
            # A trap: crash at the victim's next critical moment, and come back quickly (a
            # crash-looping process), while what it said just before still travels.
            victim.trap = rng.choice(("vote", "commit", "ack"))
            self._count(Fault.CRASH, f"r{victim.id} will crash at its next {victim.trap}")
            return
        if victim.trap is None and rng.random() < 0.25:
            # A snapshot trap: crash (or lose power) at a random step of the victim's next
            # snapshot taken or installed — windows too short for a crash at a random time.
            victim.trap = rng.choice(("snapshot", "install"))
            victim.power_loss_pending = power_loss
            kind = Fault.POWER_LOSS if power_loss else Fault.CRASH
            self._count(kind, f"r{victim.id} will {'lose power' if power_loss else 'crash'} during its next {victim.trap}")
            return
        points = victim.crash_points()
        point = rng.choice(points) if points else None
        victim.power_loss_pending = power_loss
        self._count(Fault.POWER_LOSS if power_loss else Fault.CRASH, f"r{victim.id}" + (f" ({point})" if point else ""))
        victim.crash(point)
        downtime = self._ticks(1, 40) if rng.random() < 0.2 else self._ticks(1, 12)
        self.world.queue.after(downtime, lambda: self._restart(victim))

    def _down(self, rid: int, trap: Optional[str]) -> None:
        """A trap sprang: restart like a crash-looping process under a supervisor. After a vote,
        at once — so a second candidate's request, a moment behind the first, finds the replica
        back up in the same term."""
        if trap is None or not self.active:
            return
        replica = self.replicas[rid]
        delay = self.world.rng.randint(0, self.world.timing.latency) if trap == "vote" else self._ticks(1, 3)
        self.world.queue.after(delay, lambda: self._restart(replica))

    def _power_loss(self) -> None:
        self._crash(power_loss=True)

    def _restart(self, replica: SimReplica) -> None:
        if not self.active:
            # heal_all started every replica that was down; a restart scheduled before it would
            # now bring back one that was stopped since (the failover probes' killed leader,
            # which then won again: seed 63967).
            return
        if replica.refused:
            return  # its disk failed a check: it stays out, like the real replica (exit 3)
        if replica.status is Status.DOWN:
            replica.start()
        elif replica.crash_point is not None:
            # The crash is still waiting for its moment: come back soon after it.
            self.world.queue.after(self._ticks(1, 3), lambda: self._restart(replica))

    # ----------------------------------------------------------------- disks

    def _corrupt_disk(self) -> None:
        """Flip one byte of a stored entry's data on a replica that is down (crashing one
        first if none is), then restart it as usual: it must detect the flip and refuse to
        start. At most a minority of disks is ever corrupted, so a majority stays healthy."""
        replicas = [r for _, r in sorted(self.replicas.items())]
        damaged = self._damaged()
        configurations = self._configurations()
        rng = self.world.rng
        with_data = [
            r for r in replicas
            if not r.disk.stored_data and any(e.data for e in r.disk.entries)
            and all(_survivable(c, damaged | {r.id}) for c in configurations)
        ]
        down = [r for r in with_data if r.status is Status.DOWN]
        if down:
            victim = rng.choice(down)
        else:
            alive = [r for r in with_data if r.status is not Status.DOWN]
            if not alive:
                return
            victim = rng.choice(alive)
            self.world.log(f"NEMESIS corrupt-disk: r{victim.id} is crashed first")
            victim.crash()
            self.world.queue.after(self._ticks(1, 12), lambda: self._restart(victim))
        entry = rng.choice([e for e in victim.disk.entries if e.data])
        position = rng.randrange(len(entry.data))
        stored = victim.disk.corrupt(entry.index, position, rng.randint(1, 255))
        self.world.checker.on_corrupted(victim.id, entry, stored)
        self._count(Fault.CORRUPT_DISK, f"r{victim.id} entry {entry.index} byte {position} flipped")

    def _pause(self) -> None:
        victim = self._victim(0.5)
        if victim is None or victim.status is not Status.UP:
            return
        self._count(Fault.PAUSE, f"r{victim.id}")
        victim.pause()
        self.world.queue.after(self._ticks(3, 40), victim.resume)

    def _slow(self) -> None:
        victim = self._victim(0.3)
        if victim is None:
            return
        rng = self.world.rng
        victim.tick_factor = rng.randint(2, 5)
        victim.disk_factor = rng.randint(5, 40)
        self._count(Fault.SLOW, f"r{victim.id} ticks x{victim.tick_factor}, disk x{victim.disk_factor}")

        def recover() -> None:
            victim.tick_factor = victim.disk_factor = 1

        self.world.queue.after(self._ticks(10, 80), recover)

    def _transfer(self) -> None:
        leader = self._leader()
        if leader is None:
            return
        target = self.world.rng.choice([r for r in sorted(self.replicas) if r != leader.id])
        self._count(Fault.TRANSFER, f"r{leader.id} -> r{target}")
        leader.transfer(target)

    def _client_loss(self) -> None:
        self.client_net.loss = self.world.rng.uniform(0.05, 0.5)
        self._count(Fault.CLIENT_LOSS, f"rate {self.client_net.loss:.2f}")

        def recover() -> None:
            self.client_net.loss = 0.0

        self._later(self._ticks(5, 40), recover)

    # ----------------------------------------------------------------- membership

    def _damaged(self) -> FrozenSet[int]:
        """Replicas whose disks failed (or will fail) their checks: out for good."""
        return frozenset(rid for rid, r in self.replicas.items() if r.disk.stored_data or r.refused)

    def _configurations(self) -> List[Membership]:
        """Every configuration in effect somewhere, or that may still come into effect: on
        each replica, the one at its commit index and every later one in its log (memory
        or, for a replica that is down, its disk), and what a change its driver holds but has
        not appended yet would make of its latest (a leader paused as the change was asked:
        seed 23190 corrupted a second disk of a 4-voter configuration appended after)."""
        found: List[Membership] = []
        for _, r in sorted(self.replicas.items()):
            if r.core is not None:
                found.extend(r.core.configurations_since(r.core.commit_index))
                for change in r.driver.unappended_changes if r.driver is not None else ():
                    try:
                        found.append(r.core.membership.apply(change))
                    except MembershipError:
                        pass  # it will be refused: it cannot come into effect
                continue
            commit = r.disk.hard_state.commit
            current = r.disk.base_membership or self._bootstrap
            for entry in r.disk.entries:
                if conf.is_configuration(entry.data):
                    if entry.index > commit:
                        found.append(current)
                    current = conf.decode(entry.data)
            found.append(current)
        return found

    def _membership(self) -> None:
        leader = self._leader()
        if leader is None or leader.core is None or leader.driver is None:
            return
        rng = self.world.rng
        current = leader.core.membership
        latest = first = self.propose_change(leader, current)
        if first is not None and rng.random() < 0.4:
            # Right behind it, a second one, as if from the new configuration: the real
            # leader refuses it while the first is uncommitted.
            latest = self.propose_change(leader, first, may_add=False) or first
        if latest is not None and rng.random() < 0.5:
            # Aim: cut the cluster as the change leaves the leader, the leader and the voters
            # it adds (with some of the others) on one side, the voters it removes and the
            # rest on the other: where a majority of the old configuration and one of the new
            # would be disjoint if the change were larger than one server.
            added = latest.voters - current.voters
            others = sorted(latest.voters - added - {leader.id})
            side = sorted({leader.id} | added | set(rng.sample(others, rng.randint(0, len(others)))))
            rest = sorted(set(self.replicas) - set(side))
            if rest:
                self.world.log(f"NEMESIS membership: cutting {side} | {rest} while the change is in flight")
                self._cut_for(self._between(side, rest), 5, 50)

    def propose_change(self, leader: SimReplica, current: Membership, may_add: bool = True) -> Optional[Membership]:
        """Ask `leader` for a random change to `current` (see propose)."""
        rng = self.world.rng
        n = self.world.config.replicas
        damaged = self._damaged()
        options: List[Tuple[str, int]] = []
        if current.learners:
            options += [("promote", 4), ("remove-learner", 1)]
        can_start = self._next_id <= n + MAX_ADDED or any(
            r not in current.ids and r not in self._removal_asked for r in self._started
        )
        if may_add and len(current.ids) < n + 2 and can_start and self._start_replica is not None:
            options.append(("add", 3))
        if len(current.voters) > n:
            options.append(("remove-voter", 4))
        if not options:
            return None
        kind = rng.choices([k for k, _ in options], weights=[w for _, w in options])[0]
        if kind == "promote":
            change = Change.promote(rng.choice(sorted(current.learners)))
        elif kind == "remove-learner":
            change = Change.remove(rng.choice(sorted(current.learners)))
        elif kind == "remove-voter":
            dead = sorted(current.voters & damaged)
            if dead and rng.random() < 0.5:
                target = rng.choice(dead)  # replacing a replica whose disk died
            elif rng.random() < 0.3:
                target = leader.id
            else:
                target = rng.choice(sorted(current.voters))
            change = Change.remove(target)
        else:
            # An operator whose addition failed (refused, lost with a leader) retries it with
            # the replica it already started, rather than start another.
            waiting = [r for r in self._started if r not in current.ids and r not in self._removal_asked]
            rid = waiting[0] if waiting else self._next_id
            change = Change.add_learner(rid, {"raft": f"sim:{rid}"})
        return self.propose(leader, current, change, damaged)

    def propose(
        self, leader: SimReplica, current: Membership, change: Change, damaged: Optional[FrozenSet[int]] = None
    ) -> Optional[Membership]:
        """Ask `leader` for `change` to `current` (starting the replica an addition names first);
        None, and nothing asked, if the change is invalid or would leave the healthy voters no
        majority. The leader itself may still refuse it (a change already in flight, no entry of
        its term committed yet): the result is the configuration asked for."""
        if damaged is None:
            damaged = self._damaged()
        try:
            new = current.apply(change)
        except MembershipError:
            return None
        if not _survivable(new, damaged):
            return None
        if change.kind is ChangeKind.ADD_LEARNER and change.id == self._next_id:
            assert self._start_replica is not None
            self._next_id += 1
            self._started.append(change.id)
            self._start_replica(change.id)
        if change.kind is ChangeKind.REMOVE:
            self._removal_asked.add(change.id)
        assert leader.driver is not None
        self._changes += 1
        self._count(Fault.MEMBERSHIP, f"r{leader.id} proposes {change.describe()} ({current.describe()})")
        leader.driver.change_membership(f"m{self._changes}", change, self.world.now)
        leader.kick()
        return new

    # ----------------------------------------------------------------- the end

    def heal_all(self) -> None:
        """Every fault ends now: links, weather, stopped and crashed processes, slowness."""
        self.active = False
        self.world.snapshot_crash_chance = 0.0
        self.network.heal()
        self.network.calm()
        self.client_net.loss = 0.0
        self.world.log("NEMESIS heal all")
        for _, replica in sorted(self.replicas.items()):
            replica.tick_factor = replica.disk_factor = 1
            if replica.status is Status.PAUSED:
                replica.resume()
            if replica.status is Status.DOWN:
                replica.start()  # refuses (and stays down) if its disk was corrupted
            else:
                replica.crash_point = None
                replica.trap = None


def _survivable(membership: Membership, damaged: FrozenSet[int]) -> bool:
    """Whether the voters left healthy are still a majority of this configuration's voters."""
    return len(membership.voters & damaged) <= (len(membership.voters) - 1) // 2
