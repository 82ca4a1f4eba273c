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
"""
import enum
from typing import Callable, List, Optional, Tuple, TypeVar

from replichat.chat.machine import ChatMachine
from replichat.chat.state import Applied
from replichat.integrity import CorruptDataError
from replichat.raft.core import Config, RaftCore, Role
from replichat.raft.messages import Message, MsgType
from replichat.runtime.driver import Driver, RecoveryError, Step, recover_core
from replichat.sim.disk import Disk
from replichat.sim.invariants import InvariantViolation
from replichat.sim.mutants import Mutant
from replichat.sim.network import Network, describe
from replichat.sim.requests import Reply, Request
from replichat.sim.serving import ClientDesk
from replichat.sim.world import World

T = TypeVar("T")

# Where a crash requested during a Ready's persist window strikes.
CRASH_POINTS = ("before-persist", "after-persist", "after-send", "after-apply")

DIGEST_EVERY = 16


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
        self.world = world
        self.network = network
        self.config = config
        # The real core and driver, or a deliberately broken one (mutants.py).
        self._mutant = mutant
        self._reply = reply
        self.disk: Disk = mutant.make_disk()
        # Why this replica refused to start (its stored data failed a check); it stays down.
        self.refused = ""
        self.state = mutant.make_state(":memory:")
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
        applied = self.state.last_applied
        config = self.config._replace(seed=world.rng.randrange(1 << 30))
        try:
            core = recover_core(config, hard_state, entries, applied, self._mutant.make_core)
        except RecoveryError as error:
            raise InvariantViolation("durability", f"replica {self.id}: {error}") from error
        self.life += 1
        self.desk = ClientDesk(world, self.id, self.life, self.state, self._reply)
        timing = world.timing
        self.driver = self._mutant.make_driver(
            core, ChatMachine.request_key, self.desk, timing.server_retry, timing.server_timeout
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
            f"log {len(entries)} commit {core.log.committed} applied {applied}"
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
        if point is not None and point != "before-persist" and self.busy and self.status is Status.UP:
            self.crash_point = point
            self.world.log(f"r{self.id} will crash {point}")
            return
        self._die("crash")

    def _die(self, how: str) -> None:
        self.status = Status.DOWN
        self.busy = False
        self.core = None
        self.driver = None  # its queued input and pending requests die with the process
        self.desk = None
        self.crash_point = None
        self.trap = None
        self._held.clear()
        if self.power_loss_pending:
            self.power_loss_pending = False
            self.state.close()
            self.state = self._mutant.make_state(":memory:")
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
        self.world.log(f"tick      r{self.id}")
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
        if step.must_persist:
            removed = self.disk.save(step.hard_state, step.entries)
            world.checker.on_saved(self.id, removed)
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
        if self._crash_here("after-send"):
            return
        if step.ready.committed:
            self._apply(driver, step)
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
