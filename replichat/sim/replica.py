"""One simulated replica: the real runtime driver, the real RaftCore and the real ChatState,
with simulated IO — disk time, crash points, pause, the network — in place of the asyncio node's.

The driver (replichat.runtime.driver) is the asyncio node's, so its ordering is what is tested:

    driver.feed() -> next_step() -> send early messages -> persist (takes disk time)
    -> send the rest -> apply committed entries -> driver.applied() -> driver.advance() -> repeat

While a Step is being persisted the core is left alone and input queues up in the driver,
exactly as in the node; that window is where a crash loses the whole Ready (nothing durable,
nothing sent but a leader's early appends). A crash can also be placed after the persist, after
the send or after the apply — the points where a real process can die between the steps.

Restart rebuilds the core with the driver's recover_core, as the node does: a plain crash keeps
the chat state database (SQLite keeps committed transactions across a process crash); a
power-loss crash replaces it with an empty one, so the replica re-applies the log from index 1 —
both recoveries get exercised.

A restart whose disk fails its checksums (the nemesis flipped a byte while the replica was
down) refuses, as the real replica does (it exits with status 3): the replica stays down for
the rest of the run, `refused` says why, and the cluster must carry on without it.

Client requests wait in the driver's tables (serving.py only maps them to simulated clients);
a stopped process holds them until it resumes, a dead one drops them.

Snapshots follow the driver's decisions with simulated IO (the node's snapshot_runtime.py does
the same with files and threads): after an applied batch the driver may say one is due; the
replica copies its chat state at the applied index (exactly-once table included), the copy
takes disk time to write, then is recorded on the disk, then the driver compacts the core's log
and the disk drops the log rows it names. A follower the leader's log no longer reaches is sent
the recorded snapshot as one parcel through the simulated network (lost, delayed, duplicated,
cut like any message) and acknowledges it; a transfer with no acknowledgement in
TRANSFER_TIMEOUT_TICKS fails and the core tries again. An installed snapshot is recorded on the
disk with the log emptied (one transaction), then the chat state is restored from it, and only
then is the rest of its Ready persisted and sent. Crashes can strike between each of these
steps (SNAPSHOT_CRASH_POINTS, INSTALL_CRASH_POINTS); at restart a state older than the log's
first entry (a power loss, or a crash between an install's two steps) is restored from the
recorded snapshot, as the node's state check does.
"""
import enum
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, TypeVar, Union

from replichat.chat.machine import ChatMachine
from replichat.chat.state import Applied, ChatState
from replichat.integrity import CorruptDataError
from replichat.raft.core import Config, RaftCore, Role
from replichat.raft.messages import Message, MsgType
from replichat.runtime.driver import Driver, RecoveryError, Step, recover_core
from replichat.runtime.snapshots import StateRecovery, state_recovery
from replichat.sim.disk import Disk, SimSnapshot
from replichat.sim.invariants import InvariantViolation
from replichat.sim.mutants import Mutant
from replichat.sim.network import Network, describe
from replichat.sim.requests import Reply, Request
from replichat.sim.serving import ClientDesk
from replichat.sim.world import World

T = TypeVar("T")

# Where a crash requested during a Ready's persist window strikes.
CRASH_POINTS = ("before-persist", "after-persist", "after-send", "after-apply")
# ... while a snapshot is being taken: its copy written (not recorded), recorded (log not yet
# compacted), log compacted.
SNAPSHOT_CRASH_POINTS = ("snapshot-after-write", "snapshot-after-record", "snapshot-after-compact")
# ... while a Ready installs a received snapshot: recorded with the log emptied (state not yet
# restored), state restored (nothing of the Ready persisted or sent yet).
INSTALL_CRASH_POINTS = ("install-after-log", "install-after-restore")

# A snapshot transfer with no acknowledgement for this many ticks failed: the core retries.
TRANSFER_TIMEOUT_TICKS = 5
# Streaming a snapshot takes up to this many ticks before its last chunk leaves (a big state
# over a busy link): some transfers outlive their timeout, so a retry (perhaps of a newer
# snapshot) and the old transfer arrive in either order.
TRANSFER_TIME_TICKS = 8


class SnapshotParcel(NamedTuple):
    """The whole snapshot, on its way to a follower (the node streams it in chunks)."""

    src: int
    dst: int
    message: Message  # the leader's SNAPSHOT message (index, term of the snapshot)
    snapshot: SimSnapshot

    def describe(self) -> str:
        return f"SNAPSHOT-FILE {self.src}->{self.dst} t{self.message.term} idx={self.message.index}"


class SnapshotAck(NamedTuple):
    """The follower holds the whole snapshot (the node's final chunk acknowledgement)."""

    src: int
    dst: int
    index: int

    def describe(self) -> str:
        return f"SNAPSHOT-ACK {self.src}->{self.dst} idx={self.index}"


Parcel = Union[SnapshotParcel, SnapshotAck]

DIGEST_EVERY = 16

# One empty chat state per kind (the real one, a mutant's), copied for every replica that
# starts empty or loses power: creating the schema costs ten times the copy.
_EMPTY_STATES: Dict[Callable[[str], ChatState], ChatState] = {}


def empty_state(make_state: Callable[[str], ChatState]) -> ChatState:
    template = _EMPTY_STATES.get(make_state)
    if template is None:
        template = _EMPTY_STATES[make_state] = make_state(":memory:")
    return template.copy_to(":memory:")


class Status(enum.Enum):
    UP = "up"
    DOWN = "down"
    PAUSED = "paused"


class SimReplica:
    def __init__(
        self,
        rid: int,
        world: World,
        network: Network,
        config: Config,
        mutant: Mutant,
        reply: Callable[[Reply], None],
    ) -> None:
        self.id = rid
        self._tick_text = f"tick      r{rid}"  # a trace line per tick: formatted once
        self.world = world
        self.network = network
        self.config = config
        # The real core and driver, or a deliberately broken one (mutants.py).
        self._mutant = mutant
        self._reply = reply
        self.disk: Disk = mutant.make_disk()
        # Why this replica refused to start (its stored data failed a check); it stays down.
        self.refused = ""
        self.state = empty_state(mutant.make_state)
        self.driver: Optional[Driver] = None
        self.core: Optional[RaftCore] = None
        self.desk: Optional[ClientDesk] = None
        self.status = Status.DOWN
        self.busy = False
        self.life = 0
        # Work that arrived while the process was stopped (SIGSTOP): runs on resume.
        self._held: List[Callable[[], None]] = []
        self._missed_tick = False
        self.crash_point: Optional[str] = None
        # A nemesis trap: crash at a critical moment. "commit": right after the commit index
        # next advances, before the Ready that would tell anyone is sent. "vote": right after
        # the next vote is granted and sent. "ack": while persisting the next Ready that
        # acknowledges appended entries (harmless if the runtime sends acks only once durable).
        self.trap: Optional[str] = None
        self._sprung: Optional[str] = None
        self._commit_seen = 0
        self.power_loss_pending = False
        self.tick_factor = 1
        self.disk_factor = 1
        # Snapshots: one being taken (its copy on the way to the disk); received ones not yet
        # installed, by index; transfers to followers awaiting an acknowledgement (peer ->
        # (transfer number, index)); whether the Ready in flight installs one.
        self._taking = False
        self._incoming: Dict[int, SimSnapshot] = {}
        self._transfers: Dict[int, Tuple[int, int]] = {}
        self._transfer_numbers = 0
        self._installing = False

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """(Re)build the core and driver from what is durable, as the node does at start."""
        world = self.world
        if self.refused:
            return
        try:
            hard_state, entries = self.disk.load()
        except CorruptDataError as error:
            self._refuse(error)
            return
        disk = self.disk
        recorded = disk.snapshot
        applied = self.state.last_applied
        recovery = state_recovery(applied, disk.base.index, disk.last_index, recorded.index if recorded else None)
        if recovery is StateRecovery.RESTORE:
            assert recorded is not None
            world.log(f"r{self.id} chat state at {applied} is older than the log's first entry: restoring snapshot {recorded.index}")
            self._restore_state(recorded)
            world.counts["snapshot restores at start"] += 1
            applied = self.state.last_applied
        elif recovery is StateRecovery.REFUSE and applied <= disk.last_index:
            raise InvariantViolation(
                "durability",
                f"replica {self.id}: chat state at {applied} cannot continue a log that starts after "
                f"{disk.base.index} and no snapshot covers the gap",
            )
        config = self.config._replace(seed=world.rng.randrange(1 << 30))
        try:
            core = recover_core(
                config, hard_state, entries, applied, self._mutant.make_core,
                base=disk.base, snapshot=recorded.meta if recorded is not None else None,
                base_membership=disk.base_membership,
            )
        except (RecoveryError, ValueError) as error:  # ValueError: the log and snapshot do not fit
            raise InvariantViolation("durability", f"replica {self.id}: {error}") from error
        self.life += 1
        self.desk = ClientDesk(world, self.id, self.life, self.state, self._reply)
        timing = world.timing
        self.driver = self._mutant.make_driver(
            core, ChatMachine.request_key, self.desk, timing.server_retry, timing.server_timeout,
            snapshot_policy=world.snapshot_policy,
        )
        self.core = core
        self.status = Status.UP
        self.busy = False
        self._seen_role: Tuple[Role, int] = (Role.FOLLOWER, -1)
        self.trap = None
        self._commit_seen = core.log.committed
        world.checker.new_life(self.id)
        world.log(
            f"r{self.id} start life {self.life}: term {hard_state.term} vote {hard_state.vote} "
            f"log {len(entries)} after {disk.base.index} (snapshot {core.snapshot.index}) commit {core.log.committed} "
            f"applied {applied}"
        )
        self._observe()
        self.kick()

    def _refuse(self, error: CorruptDataError) -> None:
        """The real replica's answer to a failed check at start: say what and where, stay down."""
        first_bad = min(self.disk.stored_data, default=None)
        if first_bad is None or f"entry {first_bad} " not in str(error):
            raise InvariantViolation(
                "corruption-detection", f"replica {self.id} refused to start naming the wrong place: {error}"
            )
        self.refused = str(error)
        self.world.faults["corrupt-disk (refused to start)"] += 1
        self.world.log(f"r{self.id} REFUSES to start: {error}")

    def crash(self, point: Optional[str] = None) -> None:
        """kill -9. With `point`, and a Ready being persisted, strike at that point of it."""
        if self.status is Status.DOWN:
            return
        if point is not None and point != "before-persist" and self.status is Status.UP and (self.busy or self._taking):
            self.crash_point = point
            self.world.log(f"r{self.id} will crash {point}")
            return
        self._die("crash")

    def crash_points(self) -> List[str]:
        """Where a crash asked for now could strike (the nemesis picks one)."""
        points: List[str] = list(CRASH_POINTS) if self.busy else []
        if self._installing:
            points.extend(INSTALL_CRASH_POINTS)
        if self._taking:
            points.extend(SNAPSHOT_CRASH_POINTS)
        return points

    def _die(self, how: str) -> None:
        self.status = Status.DOWN
        self.busy = False
        self.core = None
        self.driver = None  # its queued input and pending requests die with the process
        self.desk = None
        self.crash_point = None
        self.trap = None
        self._held.clear()
        # A snapshot copy not yet recorded, files received but not installed, transfers: gone.
        self._taking = self._installing = False
        self._incoming.clear()
        self._transfers.clear()
        if self.power_loss_pending:
            self.power_loss_pending = False
            self.state.close()
            self.state = empty_state(self._mutant.make_state)
            how += " + power loss (chat state lost)"
        sprung, self._sprung = self._sprung, None
        self.world.log(f"r{self.id} DOWN ({how}{', trap: ' + sprung if sprung else ''})")
        self.world.on_down(self.id, sprung)

    def pause(self) -> None:
        if self.status is Status.UP:
            self.status = Status.PAUSED
            self.world.log(f"r{self.id} paused")

    def resume(self) -> None:
        if self.status is not Status.PAUSED:
            return
        self.status = Status.UP
        self.world.log(f"r{self.id} resumed")
        held, self._held = self._held, []
        for action in held:
            if self.status is Status.UP:
                action()
        if self._missed_tick and self.status is Status.UP and self.driver is not None:
            # Like the node after a stall: one tick, not a burst.
            self._missed_tick = False
            self.driver.tick()
        self.kick()

    # ----------------------------------------------------------------- inputs

    def on_tick(self) -> None:
        if self.status is Status.PAUSED:
            self._missed_tick = True
            return
        if self.status is not Status.UP:
            return
        driver = self.driver
        assert driver is not None
        self.world.log(self._tick_text)
        driver.tick()
        driver.expire(self.world.now)
        self.kick()

    def receive(self, m: Message) -> None:
        if self.status is Status.DOWN:
            return
        driver = self.driver
        assert driver is not None
        self.world.log(f"deliver   {describe(m)}")
        driver.step_messages((m,))
        self.kick()

    def transfer(self, target: int) -> None:
        if self.status is Status.UP:
            assert self.driver is not None
            self.world.log(f"r{self.id} transfers leadership to r{target}")
            self.driver.transfer(target)
            self.kick()

    def kick(self) -> None:
        """Hand queued input to the core and start persisting its Ready, unless busy."""
        if self.status is not Status.UP or self.busy:
            return
        driver = self.driver
        assert driver is not None
        while self.status is Status.UP:
            if driver.has_input():
                self._guarded(driver.feed, "")
                self._observe()
            if self.status is not Status.UP:
                return
            step = self._guarded(driver.next_step, " in ready")
            if step is not None:
                self._start_step(step)
                return
            if not driver.has_input():
                return

    def _guarded(self, action: Callable[[], "T"], where: str) -> "T":
        try:
            return action()
        except InvariantViolation:
            raise
        except Exception as error:
            raise InvariantViolation("core-error", f"replica {self.id} core raised {error!r}{where}") from error

    def _observe(self) -> None:
        core = self.core
        assert core is not None
        was_leader = self.world.checker.leaders.get(core.term) == self.id
        self.world.checker.observe(self.id, core.log, core.role, core.term)
        if (core.role, core.term) != self._seen_role:
            self._seen_role = (core.role, core.term)
            if core.role is not Role.LEADER:
                self.world.log(f"r{self.id} {core.role.value} term {core.term}")
        if core.log.committed > self._commit_seen:
            self._commit_seen = core.log.committed
            self.world.on_commit(self.id)
            if self.trap == "commit" and self.crash_point is None:
                self.trap, self._sprung = None, "commit"
                self.crash_point = "after-persist"
                self.world.log(f"r{self.id} committed {core.log.committed}: will crash before telling anyone")
        if core.role is Role.LEADER and not was_leader:
            self.world.log(f"r{self.id} LEADER term {core.term} (log {core.log.last_index}, commit {core.log.committed})")
            self.world.on_elected(self.id)

    # ----------------------------------------------------------------- the Ready cycle

    def _start_step(self, step: Step) -> None:
        core = self.core
        assert core is not None
        ready = step.ready
        self.world.checker.on_ready(self.id, core.log, core.term, ready)
        if self.trap == "vote" and self.crash_point is None and any(
            m.type is MsgType.VOTE_RESP and not m.reject for m in ready.messages
        ):
            self.trap, self._sprung = None, "vote"
            self.crash_point = "after-send"
            self.world.log(f"r{self.id} grants a vote: will crash once it is sent")
        # A leader may send while it persists (the node does); whether those messages are out of
        # the process before it crashes is up to its transport: both cases happen (the run
        # picks how often: never, half the time, or always, see simulation.py).
        chance = self.world.early_send_chance
        early_out = bool(step.early) and (chance >= 1.0 or (chance > 0.0 and self.world.rng.random() < chance))
        if early_out:
            self._send(step.early)
        if step.snapshots_early:
            self._send_snapshots(step.snapshots_early)
        self._installing = step.install is not None
        if self._installing:
            self._maybe_strike("install", INSTALL_CRASH_POINTS)
        self.busy = True
        life = self.life
        delay = self.world.rng.randint(0, self.world.timing.disk) * self.disk_factor if step.must_persist else 0
        self.world.queue.after(delay, lambda: self._persisted(step, life, early_out))
        if self.trap == "ack" and self.crash_point is None and step.must_persist and any(
            m.type is MsgType.APPEND_RESP and not m.reject for m in ready.messages
        ):
            self.trap, self._sprung = None, "ack"
            self._die("crash while persisting an acknowledgement")

    def _persisted(self, step: Step, life: int, early_out: bool = True) -> None:
        if life != self.life or self.status is Status.DOWN:
            return  # crashed while persisting: nothing of this Ready is durable, nothing sent
        if self.status is Status.PAUSED:
            self._held.append(lambda: self._persisted(step, life, early_out))
            return
        driver = self.driver
        assert driver is not None
        world = self.world
        if step.install is not None and not self._install(driver, step):
            return  # crashed between its steps
        if step.must_persist:
            removed = self.disk.save(step.hard_state, step.entries)
            if removed:  # the term of what the save wrote where the removed entries began
                first = removed[0].index
                world.checker.on_saved(self.id, removed, next((e.term for e in step.entries if e.index == first), None))
            hs = step.hard_state
            world.log(
                f"r{self.id} persist {len(step.entries)} entries"
                + (f" [{step.entries[0].index}..{step.entries[-1].index}]" if step.entries else "")
                + (f" hs=t{hs.term}/v{hs.vote}/c{hs.commit}" if hs is not None else "")
            )
        if self._crash_here("after-persist"):
            return
        late = driver.persisted(step)
        self._send(late if early_out else step.early + late)
        if step.snapshots_late:
            self._send_snapshots(step.snapshots_late)
        if self._crash_here("after-send"):
            return
        if step.ready.committed:
            self._apply(driver, step)
            if not self._taking and self._guarded(driver.snapshot_due, " in snapshot_due"):
                self._take_snapshot()
        if self._crash_here("after-apply"):
            return
        self._guarded(lambda: driver.advance(step), " in advance")
        self._observe()
        self.busy = False
        self.kick()

    def _send(self, messages: List[Message]) -> None:
        self.world.checker.on_sent(self.id, messages)
        for m in messages:
            self.network.send(m)

    def _crash_here(self, point: str) -> bool:
        if self.crash_point == point:
            self.world.counts[f"crash at {point}"] += 1
            self._die(f"crash {point}")
            return True
        return False

    def _apply(self, driver: Driver, step: Step) -> None:
        world = self.world
        entries = step.ready.committed
        try:
            applied: List[Applied] = self.state.apply_batch(step.committed_items())
        except RuntimeError as error:
            raise InvariantViolation("apply", f"replica {self.id}: {error}") from error
        world.checker.on_applied(self.id, entries, applied)
        world.counts["applied"] += len(applied)
        last = entries[-1].index
        if last % DIGEST_EVERY == 0:
            world.checker.on_digest(self.id, last, self.state.digest())
        driver.applied(step, applied)

    # ----------------------------------------------------------------- snapshots

    def _restore_state(self, snapshot: SimSnapshot) -> None:
        """The chat state becomes a copy of the snapshot's (the node's restore_state)."""
        self.state.close()
        self.state = snapshot.state.copy_to(":memory:")
        if self.state.last_applied != snapshot.index:
            raise InvariantViolation(
                "snapshot", f"replica {self.id}: snapshot {snapshot.index} holds a state applied to {self.state.last_applied}"
            )
        if self.desk is not None:
            self.desk.state = self.state
        # The restored state must be the state every replica had after this index.
        self.world.checker.on_digest(self.id, snapshot.index, self.state.digest())

    def _maybe_strike(self, trap: str, points: Tuple[str, ...]) -> None:
        """A snapshot step starts: crash at one of its points if a trap waits for it or the
        nemesis's chance says so (then come back soon, as after any sprung trap)."""
        world = self.world
        if self.crash_point is not None:
            return
        if self.trap == trap:
            self.trap = None
        elif not (world.snapshot_crash_chance and world.rng.random() < world.snapshot_crash_chance):
            return
        else:
            self.power_loss_pending = self.power_loss_pending or (world.snapshot_power_loss and world.rng.random() < 0.5)
        self._sprung = trap
        self.crash_point = world.rng.choice(points)
        world.log(f"r{self.id} will {'lose power' if self.power_loss_pending else 'crash'} {self.crash_point}")

    def _take_snapshot(self) -> None:
        """Copy the state at its applied index (one read transaction in the node: the copy is
        consistent); writing it takes disk time, during which apply goes on."""
        world = self.world
        index = self.state.last_applied
        copy = self.state.copy_to(":memory:")
        world.checker.on_digest(self.id, index, self.state.digest())
        self._taking = True
        life = self.life
        world.log(f"r{self.id} taking a snapshot at {index}")
        self._maybe_strike("snapshot", SNAPSHOT_CRASH_POINTS)
        delay = world.rng.randint(0, world.timing.disk) * self.disk_factor
        world.queue.after(delay, lambda: self._snapshot_written(index, copy, life))

    def _snapshot_written(self, index: int, copy: ChatState, life: int) -> None:
        if life != self.life or self.status is Status.DOWN:
            copy.close()  # an unrecorded file: removed at the next start
            return
        if self.status is Status.PAUSED:
            self._held.append(lambda: self._snapshot_written(index, copy, life))
            return
        driver = self.driver
        assert driver is not None
        world = self.world
        if self._crash_here("snapshot-after-write"):
            return
        meta = self._guarded(lambda: driver.snapshot_written(index), " in snapshot_written")
        if meta is None:
            self._taking = False
            copy.close()
            if self.crash_point in SNAPSHOT_CRASH_POINTS:
                self.crash_point = self._sprung = None  # the steps it waited for never come
            world.log(f"r{self.id} drops its snapshot at {index}: an installed one is newer")
            return
        self.disk.record_snapshot(SimSnapshot(meta.index, meta.term, copy))
        world.counts["snapshots taken"] += 1
        if self._crash_here("snapshot-after-record"):
            return
        to = self._guarded(lambda: driver.snapshot_recorded(meta), " in snapshot_recorded")
        if to is None:  # an installed snapshot overtook it (the disk keeps the newer record)
            self._taking = False
            world.log(f"r{self.id} records its snapshot at {meta.index} after a newer install: nothing compacted")
            return
        removed = self.disk.compact(to, driver.core.base_membership)
        world.checker.on_compacted(self.id, removed, meta.index)
        if removed:
            world.counts["log compactions"] += 1
            world.counts["entries compacted"] += len(removed)
        self._taking = False
        world.log(f"r{self.id} snapshot {meta.index} (t{meta.term}) recorded; log compacted to {to} ({len(removed)} entries)")
        if self._crash_here("snapshot-after-compact"):
            return
        self._observe()
        self.kick()

    def _send_snapshots(self, messages: List[Message]) -> None:
        driver = self.driver
        assert driver is not None
        recorded = self.disk.snapshot
        for m in messages:
            if recorded is None or recorded.index != m.index:
                # Asked for before a newer snapshot replaced it (the node's file is gone too):
                # this transfer fails and the core asks again for the current one.
                self.world.log(f"r{self.id} has no snapshot {m.index} for r{m.dst} any more")
                self._guarded(lambda: driver.snapshot_sent(m.dst, False), " in snapshot_sent")
                continue
            self._transfer_numbers += 1
            number = self._transfer_numbers
            self._transfers[m.dst] = (number, m.index)
            self.world.counts["snapshots sent"] += 1
            life = self.life
            tick = self.world.timing.tick
            streaming = self.world.rng.randint(0, TRANSFER_TIME_TICKS * tick)
            parcel = SnapshotParcel(self.id, m.dst, m, recorded)
            self.world.queue.after(streaming, lambda p=parcel: self._stream_done(p, life))
            self.world.queue.after(
                TRANSFER_TIMEOUT_TICKS * tick, lambda peer=m.dst, n=number: self._transfer_timed_out(peer, n, life)
            )

    def _stream_done(self, parcel: SnapshotParcel, life: int) -> None:
        """The transfer's last chunk leaves (a crashed sender's transfer dies with it)."""
        if life != self.life or self.status is Status.DOWN:
            return
        if self.status is Status.PAUSED:
            self._held.append(lambda: self._stream_done(parcel, life))
            return
        self.network.send(parcel)  # type: ignore[arg-type]

    def _transfer_timed_out(self, peer: int, number: int, life: int) -> None:
        if life != self.life or self.status is Status.DOWN or self._transfers.get(peer, (0, 0))[0] != number:
            return
        if self.status is Status.PAUSED:
            self._held.append(lambda: self._transfer_timed_out(peer, number, life))
            return
        del self._transfers[peer]
        assert self.driver is not None
        self.world.log(f"r{self.id} snapshot transfer to r{peer} timed out")
        self._guarded(lambda: self.driver.snapshot_sent(peer, False), " in snapshot_sent")  # type: ignore[union-attr]
        self.kick()

    def receive_parcel(self, parcel: Parcel) -> None:
        if self.status is Status.DOWN:
            return
        if self.status is Status.PAUSED:
            self._held.append(lambda: self.receive_parcel(parcel))
            return
        driver = self.driver
        assert driver is not None
        self.world.log(f"deliver   {parcel.describe()}")
        if isinstance(parcel, SnapshotParcel):
            # The whole file arrived and checks out (the node verifies chunks and SHA-256):
            # keep it, tell the core, acknowledge it.
            self._incoming[parcel.message.index] = parcel.snapshot
            driver.snapshot_messages([parcel.message])
            self.network.send(SnapshotAck(self.id, parcel.src, parcel.message.index))  # type: ignore[arg-type]
        else:
            pending = self._transfers.get(parcel.src)
            if pending is None or pending[1] != parcel.index:
                return
            del self._transfers[parcel.src]
            self._guarded(lambda: driver.snapshot_sent(parcel.src, True), " in snapshot_sent")
        self.kick()

    def _install(self, driver: Driver, step: Step) -> bool:
        """Install the snapshot the core accepted, in the driver's order; False if a crash
        struck between the steps."""
        meta = step.install
        assert meta is not None
        snapshot = self._incoming.pop(meta.index, None)
        if snapshot is None or snapshot.meta != meta:
            raise InvariantViolation("snapshot", f"replica {self.id} installs snapshot {meta} it never received")
        world = self.world
        removed = self.disk.install(snapshot, driver.install_hard_state(step), driver.core.base_membership)
        world.checker.on_saved(self.id, removed, covered=meta.index)
        driver.install_logged(step)
        if self._crash_here("install-after-log"):
            return False
        self._restore_state(snapshot)
        driver.install_restored(step)
        self._installing = False
        world.counts["snapshots installed"] += 1
        world.log(f"r{self.id} installed snapshot {meta.index} (t{meta.term})")
        return not self._crash_here("install-after-restore")

    # ----------------------------------------------------------------- serving clients

    def client_write(self, request: Request) -> None:
        if self.status is Status.PAUSED:
            self._held.append(lambda: self.client_write(request))
        elif self.status is Status.UP:
            assert self.desk is not None and self.driver is not None
            self.desk.write(self.driver, request)
            self.kick()
        elif self.refused:
            self._refuse_client(request)

    def client_read(self, request: Request) -> None:
        if self.status is Status.PAUSED:
            self._held.append(lambda: self.client_read(request))
        elif self.status is Status.UP:
            assert self.desk is not None and self.driver is not None
            self.desk.read(self.driver, request)
            self.kick()
        elif self.refused:
            self._refuse_client(request)

    def _refuse_client(self, request: Request) -> None:
        """No process listens on a replica that refused to start: the client's connection is
        refused at once (UNAVAILABLE) and it fails over, rather than waiting out a timeout."""
        self._reply(Reply(request, None))

    # ----------------------------------------------------------------- views

    @property
    def up(self) -> bool:
        return self.status is Status.UP

    def is_leader(self) -> bool:
        return self.core is not None and self.status is not Status.DOWN and self.core.role is Role.LEADER
