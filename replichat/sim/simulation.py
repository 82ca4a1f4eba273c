"""One deterministic simulated run: build the cluster, inject faults, heal, demand convergence.

A run has two phases. For `steps` ticks the nemesis injects faults while clients keep writing
and reading; the safety checker runs after every event. Then every fault ends at once (links
healed, replicas restarted and resumed), clients finish what they started and start nothing new,
and within `liveness_ticks` the cluster must: have one leader that every replica follows,
commit and apply everything on every replica, end with identical chat states, and have answered
every client, in at most `liveness_terms` new terms. Then the converged cluster's leader is
killed `failover_probes` times in a row, and each time the others must elect a leader that all
of them follow within `failover_ticks` ticks and `liveness_terms` new terms (so slow elections
fail the run, not only absent ones). Finally the clients' history must be linearizable.

Membership changes (the nemesis's membership fault) start new replicas during the run, outside
the bootstrap configuration, as an operator starts one before adding it. Clients learn the
membership as the service's clients will (replicas tell them): every tick their list of
replicas becomes the members of the current leader's configuration. Convergence and failover
then concern the members of the configuration in effect only: a removed replica (or one
started whose addition failed) may lag forever, as long as it disrupts nothing. A replica
added during the run copies the whole history, which the heal bound (measured on replicas that
lag by what a fault cost them) does not cover: the cluster converges without waiting for it to
catch up, then it must catch up within the liveness bound plus one tick per entry it lacks.

The first violation stops the run; its RunResult carries the replay command.
"""
import io
import traceback
from typing import Callable, Dict, FrozenSet, List, NamedTuple, Optional, TextIO, Tuple, Union

from replichat.raft.core import Config, Role
from replichat.raft.messages import Message
from replichat.sim import mutants
from replichat.sim.clients import NAMES, ClientNetwork, SimClient, make_clients
from replichat.sim.commands import is_read
from replichat.sim.config import SimConfig
from replichat.sim.invariants import InvariantViolation, LogView, check_heal, logs_of
from replichat.sim.linearizability import Operation, Result, check_history
from replichat.sim.network import Network
from replichat.sim.nemesis import Nemesis
from replichat.sim.replica import Parcel, SimReplica, Status
from replichat.runtime.snapshot_policy import SnapshotPolicy
from replichat.sim.requests import Request
from replichat.sim.workloads import Workloads
from replichat.sim.world import World

# Ticks between whole-cluster checks (pairwise log matching, committed entries on a quorum).
FULL_CHECK_EVERY = 20
# Messages one replica may send per tick before the run counts as livelocked (a message storm:
# say two replicas bouncing a rejected append forever). Normal traffic stays far below.
STORM_PER_REPLICA = 400
LINEARIZABILITY_BUDGET = 400_000
# Snapshot policy per run (SimConfig.snapshot_entries 0): applied entries between snapshots,
# log entries kept behind one. Runs commit ~100 entries, so these make several per replica.
SNAPSHOT_EVERY_CHOICES = (10, 20, 40, 80)
SNAPSHOT_KEEP_CHOICES = (0, 1, 4, 16)
# What RunResult.snapshots counts (world.counts keys).
SNAPSHOT_COUNTS = (
    "snapshots taken", "log compactions", "entries compacted", "snapshots sent", "snapshots installed",
    "snapshot restores at start",
)


class RunResult(NamedTuple):
    config: SimConfig
    ok: bool
    kind: str  # "" or the violated property
    detail: str
    time: int
    events: int
    ticks: int
    faults: Dict[str, int]
    elections: int
    committed: int
    client_ops: int
    unknown_ops: int
    # Ticks the healed cluster needed to converge (None if it did not get there).
    heal_ticks: Optional[int]
    linearizability: str  # "ok", "violation", "inconclusive", "skipped"
    max_msgs_per_tick: int
    trace_digest: str
    tail: List[str]
    # Leaders elected, and terms begun, between healing and convergence (None if it did not
    # converge): the liveness check bounds them (see invariants.check_heal).
    heal_elections: Optional[int] = None
    heal_terms: Optional[int] = None
    failover_ticks: Tuple[int, ...] = ()
    failover_terms: Tuple[int, ...] = ()
    # Snapshots taken, compactions, entries compacted, transfers, installs, restores at start.
    snapshots: Dict[str, int] = {}

    def summary(self) -> str:
        status = "ok" if self.ok else f"FAILED {self.kind}"
        return (
            f"seed {self.config.seed} replicas {self.config.replicas} steps {self.config.steps}: {status}; "
            f"{self.events} events, {self.elections} elections, {self.committed} committed, "
            f"{self.client_ops} client ops ({self.unknown_ops} unknown), healed in {self.heal_ticks} ticks, "
            f"linearizability {self.linearizability}; snapshots "
            f"{self.snapshots['snapshots taken']} taken, {self.snapshots['snapshots installed']} installed; "
            f"trace {self.trace_digest}"
        )

    def report(self) -> str:
        """What a failing run prints: the violation, the last events, and how to replay it."""
        lines = [self.summary(), f"  {self.kind}: {self.detail}", f"  at time {self.time} (tick {self.time // self.config.timing.tick})"]
        if self.tail:
            lines.append("  last events:")
            lines.extend("    " + line for line in self.tail)
        lines.append(f"  replay: {self.config.command()}")
        return "\n".join(lines)


class Simulation:
    def __init__(self, config: SimConfig, trace: Optional[TextIO] = None, keep: int = 40) -> None:
        self.config = config
        world = self.world = World(config, trace, keep)
        rng = world.rng
        timing = config.timing
        ids = list(range(1, config.replicas + 1))
        mutant = mutants.resolve(config.mutant)
        self.network = Network(rng, world.queue, timing, world.trace, world.faults, self._deliver)
        self.client_net = ClientNetwork(world)
        # Small batches and pipelines on some runs: more partial appends, more interleavings.
        batch = rng.choice((1, 1, 2, 3, 8, 512))
        inflight = rng.choice((1, 2, 4, 32))
        # A leader's appends sent while it persists are out before a crash: never, half the
        # time, always (never keeps the logs of short-lived leaders apart: Figure 8's setting).
        world.early_send_chance = rng.choice((0.0, 0.5, 1.0))
        # Snapshots every few dozen applied entries, keeping a short tail of log behind them:
        # followers that were down or cut off often need a snapshot instead of entries.
        every = config.snapshot_entries or rng.choice(SNAPSHOT_EVERY_CHOICES)
        keep = rng.choice(SNAPSHOT_KEEP_CHOICES) if config.snapshot_entries >= 0 else 0
        world.snapshot_policy = SnapshotPolicy(max(every, 0), keep, config.snapshots_staggered())
        self.replicas: Dict[int, SimReplica] = {}
        self._mutant = mutant
        self._core_config = Config(
            id=0, voters=tuple(ids), election_ticks=timing.election_ticks,
            max_entries_per_append=batch, max_inflight=inflight,
            advance_first_timeout=config.election_advance(),
        )
        for rid in ids:
            self._make_replica(rid)
        # The replicas clients send to (one list, shared with them): the members they learn of.
        self.ids = ids
        world.log(
            f"config {config.command(trace=False)}; batch {batch}, inflight {inflight}, "
            f"early sends {world.early_send_chance:g}, snapshot every {world.snapshot_policy.every_entries} "
            f"keep {world.snapshot_policy.keep_entries}{' staggered' if world.snapshot_policy.staggered else ''}, "
            f"election advance {'on' if config.election_advance() else 'off'}"
        )
        self.history: List[Operation] = []
        self.clients: List[SimClient] = make_clients(
            world, self.client_net, ids, config.clients, list(NAMES[: config.names]), self.history,
            world.checker.on_acknowledged,
        )
        self.nemesis = Nemesis(world, self.network, self.client_net, self.replicas, self._start_new_replica)
        # Aimed extra work (config.workloads; none by default): after the nemesis, whose
        # election hook it wraps.
        self.workloads = Workloads(
            world, self.network, self.client_net, self.replicas, list(NAMES[: config.names]), self.history,
            world.checker.on_acknowledged, first_client=config.clients + 1, nemesis=self.nemesis, client_replicas=ids,
        )
        self.clients.extend(self.workloads.readers)
        # Right after any crash, not only every FULL_CHECK_EVERY ticks: an entry a crash took
        # off a disk can be re-replicated within a tick, hiding that it was ever on too few.
        restart_after = world.on_down

        def on_down(rid: int, trap: Optional[str]) -> None:
            self.full_check()
            restart_after(rid, trap)

        world.on_down = on_down
        self.heal_ticks: Optional[int] = None
        self.heal_elections: Optional[int] = None
        self.heal_terms: Optional[int] = None
        # Per failover probe: ticks until a new leader was followed by all, new terms it took.
        self.failover_ticks: List[int] = []
        self.failover_terms: List[int] = []
        self.lin_result: Optional[Result] = None

    def _make_replica(self, rid: int) -> SimReplica:
        replica = SimReplica(
            rid, self.world, self.network, self._core_config._replace(id=rid), self._mutant, self.client_net.reply
        )
        self.replicas[rid] = replica
        self.client_net.replicas[rid] = self._handler(replica)
        return replica

    def _start_new_replica(self, rid: int) -> SimReplica:
        """A replica outside the bootstrap configuration, started empty (to be added)."""
        replica = self._make_replica(rid)
        replica.start()
        self._tick_loop(replica, self.world.rng.randint(1, self.config.timing.tick))
        return replica

    @staticmethod
    def _handler(replica: SimReplica) -> Callable[[Request], None]:
        def handle(request: Request) -> None:
            if is_read(request.input):
                replica.client_read(request)
            else:
                replica.client_write(request)

        return handle

    def _deliver(self, m: Union[Message, Parcel]) -> None:
        replica = self.replicas.get(m.dst)
        if replica is None:
            return
        if isinstance(m, Message):
            replica.receive(m)
        else:
            replica.receive_parcel(m)

    # ----------------------------------------------------------------- running

    def run(self) -> RunResult:
        world = self.world
        tick = self.config.timing.tick
        kind, detail = "", ""
        linearizability = "skipped"
        try:
            # Tick phases: spread at random, or nearly aligned (replicas started together keep
            # ticking together: ties between election timeouts, so split votes, get common).
            aligned = world.rng.random() < 0.5
            phase = world.rng.randint(1, tick)
            for replica in self.replicas.values():
                replica.start()
                self._tick_loop(replica, phase + world.rng.randint(0, 5) if aligned else world.rng.randint(1, tick))
            for client in self.clients:
                client.start()
            self._full_check_loop()
            self._storm_watch()
            self._membership_watch()
            self.nemesis.start()
            self.workloads.start()
            self._run_until(self.config.steps * tick)
            world.draining = True
            self.nemesis.heal_all()
            self._converge()
            self._probe_failovers()
            if self.config.check_linearizability:
                self.lin_result = check_history(self.history, LINEARIZABILITY_BUDGET)
                if self.lin_result.inconclusive:
                    linearizability = "inconclusive"
                elif not self.lin_result.ok:
                    linearizability = "violation"
                    raise InvariantViolation("linearizability", self.lin_result.explanation)
                else:
                    linearizability = "ok"
        except InvariantViolation as violation:
            kind, detail = violation.kind, violation.detail
            world.log(f"VIOLATION {kind}: {detail}")
        except Exception as error:  # a bug anywhere else: still a failing seed to replay
            kind = "error"
            detail = "".join(traceback.format_exception(type(error), error, error.__traceback__)).strip()
            world.log(f"ERROR {error!r}")
        finally:
            for replica in self.replicas.values():
                replica.state.close()
        return RunResult(
            config=self.config,
            ok=not kind,
            kind=kind,
            detail=detail,
            time=world.now,
            events=world.queue.processed,
            ticks=world.now // tick,
            faults=dict(world.faults),
            elections=world.checker.elections,
            committed=len(world.checker.committed),
            client_ops=len(self.history),
            unknown_ops=sum(1 for op in self.history if not op.known),
            heal_ticks=self.heal_ticks,
            linearizability=linearizability,
            max_msgs_per_tick=world.counts["max msgs/tick"],
            trace_digest=world.trace.digest(),
            tail=list(world.trace.tail[-40:]) if kind else [],
            heal_elections=self.heal_elections,
            heal_terms=self.heal_terms,
            failover_ticks=tuple(self.failover_ticks),
            failover_terms=tuple(self.failover_terms),
            snapshots={name: world.counts[name] for name in SNAPSHOT_COUNTS},
        )

    def _run_until(self, end: int) -> None:
        self.world.queue.run_until(end)

    def _tick_loop(self, replica: SimReplica, first: int) -> None:
        world = self.world
        tick = self.config.timing.tick

        def fire() -> None:
            replica.on_tick()
            world.queue.after(tick * replica.tick_factor, fire)

        world.queue.after(first, fire)

    def _membership_watch(self) -> None:
        """Every tick, clients learn the members of the current leader's configuration (when
        there is a leader; otherwise they keep what they knew)."""
        world = self.world

        def watch() -> None:
            leaders = [r.core for r in self.replicas.values() if r.up and r.core is not None and r.core.role is Role.LEADER]
            if leaders:
                members = sorted(max(leaders, key=lambda c: c.term).membership.ids)
                if members != self.ids:
                    self.ids[:] = members
            world.queue.after(self.config.timing.tick, watch)

        world.queue.after(self.config.timing.tick, watch)

    def _storm_watch(self) -> None:
        world = self.world
        tick = self.config.timing.tick
        limit = STORM_PER_REPLICA * self.config.replicas
        last = [self.network.sent]

        def watch() -> None:
            sent = self.network.sent - last[0]
            last[0] = self.network.sent
            world.counts["max msgs/tick"] = max(world.counts["max msgs/tick"], sent)
            if sent > limit:
                raise InvariantViolation(
                    "livelock", f"{sent} messages in one tick (limit {limit}): a message storm; {self.describe_cluster()}"
                )
            world.queue.after(tick, watch)

        world.queue.after(tick, watch)

    def _full_check_loop(self) -> None:
        world = self.world

        def check() -> None:
            self.full_check()
            world.queue.after(FULL_CHECK_EVERY * self.config.timing.tick, check)

        world.queue.after(FULL_CHECK_EVERY * self.config.timing.tick, check)

    def full_check(self) -> None:
        cores = {rid: (r.core.log if r.core is not None else None) for rid, r in self.replicas.items()}
        disks = {
            rid: LogView(r.disk.base.index, r.disk.entries, r.disk.snapshot.index if r.disk.snapshot else 0)
            for rid, r in self.replicas.items()
        }
        # A corrupted disk no longer vouches for what it holds (the real one is replaced).
        trusted = {rid: d for rid, d in disks.items() if not self.replicas[rid].disk.stored_data}
        self.world.checker.full_check(logs_of(cores, disks), trusted, lost=len(disks) - len(trusted))

    # ----------------------------------------------------------------- liveness

    def _converge(self, after: str = "healing") -> None:
        world = self.world
        tick = self.config.timing.tick
        start = world.now
        elections_before = world.checker.elections
        terms_before = self._highest_term()
        deadline = start + self.config.liveness_ticks * tick
        while world.now < deadline:
            self._run_until(world.now + tick)
            members = self._converged()
            if members is not None:
                ticks = (world.now - start) // tick
                elections = world.checker.elections - elections_before
                terms = self._highest_term() - terms_before
                if self.heal_ticks is None:
                    self.heal_ticks, self.heal_elections, self.heal_terms = ticks, elections, terms
                check_heal(ticks, elections, terms, self.config.liveness_terms, after)
                self._await_added(members, after)
                self.full_check()
                self.world.checker.final_check(
                    {rid: r.core.log for rid, r in self.replicas.items() if r.core is not None and rid in members},
                    {rid: r.state.digest() for rid, r in self.replicas.items() if not r.refused and rid in members},
                )
                world.log(f"converged after {ticks} ticks ({after})")
                return
        raise InvariantViolation(
            "liveness", f"no convergence {self.config.liveness_ticks} ticks after {after}: {self.describe_cluster()}"
        )

    def _lag_of_added(self, members: FrozenSet[int]) -> Optional[int]:
        """How many entries the most lagging added member still has to apply to reach the
        leader's last index (0: all caught up); None while there is no single leader with
        its whole log committed. The target moves: the leader may append after convergence
        (a retried change), and the state digests are only comparable at one index."""
        leaders = [r.core for r in self.replicas.values() if r.core is not None and not r.refused and r.is_leader()]
        if len(leaders) != 1 or leaders[0].log.committed != leaders[0].log.last_index:
            return None
        target = leaders[0].log.last_index
        lag = 0
        for rid in sorted(members):
            r = self.replicas[rid]
            if r.refused:
                continue
            applied = r.state.last_applied if r.core is not None else 0
            lag = max(lag, target - applied)
        return lag

    def _await_added(self, members: FrozenSet[int], after: str) -> None:
        """Members added during the run (not bootstrap replicas) that are still copying the
        history get the liveness bound plus one tick per entry they lack; then every member
        has applied the leader's last index, so their chat states are comparable."""
        world = self.world
        tick = self.config.timing.tick
        lag = self._lag_of_added(members)
        if lag == 0:
            return
        added = [rid for rid in sorted(members) if rid > self.config.replicas and not self.replicas[rid].refused]
        bound = self.config.liveness_ticks + (lag or 0)
        deadline = world.now + bound * tick
        world.log(f"converged but for added replicas {added} still catching up ({lag} entries): up to {bound} ticks")
        while self._lag_of_added(members) != 0:
            if world.now >= deadline:
                raise InvariantViolation(
                    "liveness",
                    f"added replicas {added} did not catch up {bound} ticks after {after} ({lag} entries behind): "
                    f"{self.describe_cluster()}",
                )
            self._run_until(world.now + tick)

    def _probe_failovers(self) -> None:
        """Kill the converged cluster's leader and time the election that replaces it, a few
        times in a row (each time the old leader comes back and the cluster converges again
        first). Skipped when losing one more replica would leave no quorum."""
        world = self.world
        tick = self.config.timing.tick
        for probe in range(1, self.config.failover_probes + 1):
            old = next(r for r in self.replicas.values() if not r.refused and r.is_leader())
            assert old.core is not None
            voters = old.core.membership.voters
            alive = [rid for rid in voters if not self.replicas[rid].refused]
            if len(alive) - 1 < len(voters) // 2 + 1:
                return
            world.log(f"LIVENESS failover probe {probe}: leader r{old.id} killed")
            old.crash()
            start = world.now
            elections_before = world.checker.elections
            terms_before = self._highest_term()
            deadline = start + self.config.failover_ticks * tick
            while not self._failed_over(old):
                if world.now >= deadline:
                    raise InvariantViolation(
                        "liveness",
                        f"failover probe {probe}: no new leader followed by all within {self.config.failover_ticks} ticks "
                        f"of killing leader r{old.id}: {self.describe_cluster()}",
                    )
                self._run_until(world.now + tick)
            ticks = (world.now - start) // tick
            elections = world.checker.elections - elections_before
            terms = self._highest_term() - terms_before
            self.failover_ticks.append(ticks)
            self.failover_terms.append(terms)
            world.log(f"LIVENESS failover probe {probe}: new leader after {ticks} ticks, {terms} new terms")
            check_heal(ticks, elections, terms, self.config.liveness_terms, f"failover probe {probe}")
            old.start()
            self._converge(f"failover probe {probe}: the old leader rejoining")

    def _failed_over(self, old: SimReplica) -> bool:
        """A new leader that every other member of its configuration follows (a replica
        outside it, removed or never added, may follow no one)."""
        leaders = [r for r in self.replicas.values() if r is not old and not r.refused and r.is_leader()]
        if len(leaders) != 1:
            return False
        leader = leaders[0].core
        assert leader is not None
        members = leader.membership.ids
        others = [r for r in self.replicas.values() if r is not old and not r.refused and r.id in members]
        if any(r.status is not Status.UP for r in others):
            return False
        return leader.log.committed == leader.log.last_index and all(
            r.core is not None and r.core.term == leader.term and r.core.leader == leader.id for r in others
        )

    def _highest_term(self) -> int:
        """The highest term any replica is in (durable terms for those that are down)."""
        return max(r.core.term if r.core is not None else r.disk.hard_state.term for r in self.replicas.values())

    def _converged(self) -> Optional[FrozenSet[int]]:
        """The members of the final configuration, once converged; None until then."""
        if any(not c.idle for c in self.clients):
            return None
        # A replica that refused to start (corrupt disk) is out for good: the rest must carry on.
        replicas = [r for r in self.replicas.values() if not r.refused]
        if any(r.status is not Status.UP or r.core is None for r in replicas):
            return None
        leaders = [r for r in replicas if r.core is not None and r.core.role is Role.LEADER]
        if len(leaders) != 1:
            return None
        leader = leaders[0].core
        assert leader is not None
        target = leader.log.last_index
        if leader.log.committed != target:
            return None
        members = leader.membership.ids
        if leader.id not in leader.membership.voters:
            return None
        for r in replicas:
            if r.id not in members:
                continue  # removed (or never added): it may lag, as long as it disrupts nothing
            core = r.core
            assert core is not None
            if core.term != leader.term or core.leader != leader.id:
                return None
            if r.id > self.config.replicas:
                continue  # added during the run: it may still be copying the history (_await_added)
            if core.log.committed != target:
                return None
            if r.state.last_applied != target or core.log.last_index != target:
                return None
        return members

    def describe_cluster(self) -> str:
        parts = []
        for rid, r in sorted(self.replicas.items()):
            if r.core is None:
                parts.append(f"r{rid} {r.status.value}" + (" (refused to start: corrupt disk)" if r.refused else ""))
                continue
            c = r.core
            parts.append(
                f"r{rid} {r.status.value} {c.role.value} term {c.term} leader {c.leader} last {c.log.last_index} "
                f"commit {c.log.committed} applied {r.state.last_applied} {c.membership.describe()}"
            )
        pending = [f"c{c.number} op {c.current.op_id} ({c.current.attempts} tries)" for c in self.clients if c.current]
        return "; ".join(parts) + ("; pending: " + ", ".join(pending) if pending else "; no client pending")


def run(config: SimConfig, trace: Optional[TextIO] = None) -> RunResult:
    return Simulation(config, trace).run()


def trace_of(config: SimConfig) -> str:
    """The full event trace of a run, as text (tests compare two of them)."""
    sink = io.StringIO()
    Simulation(config, sink).run()
    return sink.getvalue()

