"""One simulated replica: the real RaftCore and the real ChatState, driven like node.py does.

The loop is node.py's, with simulated time in place of awaits:

    feed queued input to the core -> ready() -> persist (takes disk time)
    -> send messages -> apply committed entries -> answer waiters -> advance() -> repeat

While a Ready is being persisted the core is left alone and input queues up, exactly as in the
runtime; that window is where a crash loses the whole Ready (nothing durable, nothing sent).
A crash can also be placed after the persist, after the send or after the apply — the points
where a real process can die between the steps of one Ready.

Restart rebuilds the core the way node.py does: durable log + hard state from the disk, the
chat state's last_applied taken as applied *and* committed (the hard state's commit index is
written lazily and may lag). A plain crash keeps the chat state database (SQLite keeps committed
transactions across a process crash); a power-loss crash replaces it with an empty one, so the
replica re-applies the log from index 1 — both recoveries get exercised.

Client requests are served as node.py serves them (serving.py); a stopped process holds them
until it resumes, a dead one drops them.
"""
import collections
import enum
from typing import Callable, Deque, List, Optional, Tuple

from replichat.chat.state import Applied, ChatState
from replichat.raft.core import Config, NotLeader, RaftCore, Ready, Role
from replichat.raft.log import RaftLog
from replichat.raft.messages import NO_LEADER, Entry, HardState, Message, MsgType
from replichat.sim.disk import Disk
from replichat.sim.invariants import InvariantViolation
from replichat.sim.network import Network, describe
from replichat.sim.requests import Reply, Request
from replichat.sim.serving import RequestServer
from replichat.sim.world import World

CoreFactory = Callable[[Config, RaftLog, HardState], RaftCore]

# Inbox items: (kind, payload).
_MESSAGE, _TICK, _PROPOSE, _READ, _TRANSFER = range(5)

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
        make_core: CoreFactory,
        reply: Callable[[Reply], None],
        send_before_persist: bool = False,
    ) -> None:
        self.id = rid
        self.world = world
        self.network = network
        self.config = config
        self._make_core = make_core
        # A deliberately broken runtime (mutants.py): messages leave before their Ready is durable.
        self._send_before_persist = send_before_persist
        self.disk = Disk()
        self.state = ChatState(":memory:")
        self.core: Optional[RaftCore] = None
        self.status = Status.DOWN
        self.busy = False
        self.life = 0
        self.inbox: Deque[Tuple[int, object]] = collections.deque()
        # Work that arrived while the process was stopped (SIGSTOP): runs on resume.
        self._held: List[Callable[[], None]] = []
        self._missed_tick = False
        self.crash_point: Optional[str] = None
        # A nemesis trap: crash at a critical moment. "commit": right after the commit index
        # next advances, before the Ready that would tell anyone is sent. "vote": right after
        # the next vote is granted and sent.
        self.trap: Optional[str] = None
        self._sprung: Optional[str] = None
        self._commit_seen = 0
        self.power_loss_pending = False
        self.tick_factor = 1
        self.disk_factor = 1
        self.server = RequestServer(
            world, rid, lambda data: self.inbox.append((_PROPOSE, data)), lambda ctx: self.inbox.append((_READ, ctx)), reply
        )
        self._known_leader = NO_LEADER

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """(Re)build the core from what is durable, as node.py does at start."""
        world = self.world
        hard_state, entries = self.disk.load()
        applied = self.state.last_applied
        if applied > len(entries):
            raise InvariantViolation(
                "durability", f"replica {self.id} chat state applied {applied} entries but its disk holds {len(entries)}"
            )
        committed = max(hard_state.commit, applied)
        config = self.config._replace(seed=world.rng.randrange(1 << 30))
        self.core = self._make_core(config, RaftLog(entries, committed, applied), hard_state)
        self.status = Status.UP
        self.busy = False
        self.life += 1
        self._known_leader = NO_LEADER
        self._seen_role: Tuple[Role, int] = (Role.FOLLOWER, -1)
        self.trap = None
        self._commit_seen = self.core.log.committed
        world.checker.new_life(self.id)
        world.log(
            f"r{self.id} start life {self.life}: term {hard_state.term} vote {hard_state.vote} "
            f"log {len(entries)} commit {committed} applied {applied}"
        )
        self._observe()
        self.kick()

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
        self.crash_point = None
        self.trap = None
        self.inbox.clear()
        self._held.clear()
        self.server.forget()
        if self.power_loss_pending:
            self.power_loss_pending = False
            self.state.close()
            self.state = ChatState(":memory:")
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
        # A woken process reads its sockets in no particular order: sometimes the client
        # requests that queued up go to the core before the peer messages that did.
        peers_first = self.world.rng.random() < 0.5
        if not peers_first:
            waiting, self.inbox = self.inbox, collections.deque()
        for action in held:
            if self.status is Status.UP:
                action()
        if not peers_first and self.status is Status.UP:
            self.inbox.extend(waiting)
        if self._missed_tick and self.status is Status.UP:
            # Like node.py after a stall: one tick, not a burst.
            self._missed_tick = False
            self.inbox.append((_TICK, None))
        self.kick()

    # ----------------------------------------------------------------- inputs

    def on_tick(self) -> None:
        if self.status is Status.PAUSED:
            self._missed_tick = True
            return
        if self.status is not Status.UP:
            return
        self.world.log(f"tick      r{self.id}")
        self.inbox.append((_TICK, None))
        self.server.timers()
        self.kick()

    def receive(self, m: Message) -> None:
        if self.status is Status.DOWN:
            return
        self.world.log(f"deliver   {describe(m)}")
        self.inbox.append((_MESSAGE, m))
        self.kick()

    def transfer(self, target: int) -> None:
        if self.status is Status.UP:
            self.inbox.append((_TRANSFER, target))
            self.kick()

    def kick(self) -> None:
        """Hand queued input to the core and start persisting its Ready, unless busy."""
        if self.status is not Status.UP or self.busy:
            return
        while self.status is Status.UP:
            if self.inbox:
                self._feed()
            if self.status is not Status.UP or self._start_ready() or not self.inbox:
                return

    def _feed(self) -> None:
        core = self.core
        assert core is not None
        inbox = self.inbox
        try:
            while inbox:
                kind, payload = inbox.popleft()
                if kind == _MESSAGE:
                    core.step(payload)  # type: ignore[arg-type]
                elif kind == _TICK:
                    core.tick()
                elif kind == _PROPOSE:
                    try:
                        core.propose([payload])  # type: ignore[list-item]
                    except NotLeader:
                        pass  # as node.py: the waiter re-proposes later
                elif kind == _READ:
                    try:
                        core.read_index(payload)  # type: ignore[arg-type]
                    except NotLeader:
                        pass
                elif kind == _TRANSFER:
                    self.world.log(f"r{self.id} transfers leadership to r{payload}")
                    core.transfer_leadership(payload)  # type: ignore[arg-type]
        except InvariantViolation:
            raise
        except Exception as error:
            raise InvariantViolation("core-error", f"replica {self.id} core raised {error!r}") from error
        self._observe()

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
            if self.trap == "commit" and self.crash_point is None:
                self.trap, self._sprung = None, "commit"
                self.crash_point = "after-persist"
                self.world.log(f"r{self.id} committed {core.log.committed}: will crash before telling anyone")
        if core.role is Role.LEADER and not was_leader:
            self.world.log(f"r{self.id} LEADER term {core.term} (log {core.log.last_index}, commit {core.log.committed})")
            self.world.on_elected(self.id)
        if core.leader != self._known_leader:
            self._known_leader = core.leader
            if core.leader != NO_LEADER:
                self.server.new_leader()

    # ----------------------------------------------------------------- the Ready cycle

    def _start_ready(self) -> bool:
        core = self.core
        assert core is not None
        try:
            if not core.has_ready():
                return False
            ready = core.ready()
        except Exception as error:
            raise InvariantViolation("core-error", f"replica {self.id} core raised {error!r} in ready") from error
        self.world.checker.on_ready(self.id, core.log, core.term, ready)
        if self.trap == "vote" and self.crash_point is None and any(
            m.type is MsgType.VOTE_RESP and not m.reject for m in ready.messages
        ):
            self.trap, self._sprung = None, "vote"
            self.crash_point = "after-send"
            self.world.log(f"r{self.id} grants a vote: will crash once it is sent")
        if self._send_before_persist:
            self._send(ready.messages)
        self.busy = True
        life = self.life
        has_write = bool(ready.entries) or ready.hard_state is not None
        delay = self.world.rng.randint(0, self.world.timing.disk) * self.disk_factor if has_write else 0
        self.world.queue.after(delay, lambda: self._persisted(ready, life))
        return True

    def _persisted(self, ready: Ready, life: int) -> None:
        if life != self.life or self.status is Status.DOWN:
            return  # crashed while persisting: nothing of this Ready is durable, nothing sent
        if self.status is Status.PAUSED:
            self._held.append(lambda: self._persisted(ready, life))
            return
        core = self.core
        assert core is not None
        world = self.world
        if ready.entries or ready.hard_state is not None:
            removed = self.disk.save(ready.hard_state, ready.entries)
            world.checker.on_saved(self.id, removed)
            hs = ready.hard_state
            world.log(
                f"r{self.id} persist {len(ready.entries)} entries"
                + (f" [{ready.entries[0].index}..{ready.entries[-1].index}]" if ready.entries else "")
                + (f" hs=t{hs.term}/v{hs.vote}/c{hs.commit}" if hs is not None else "")
            )
        if self._crash_here("after-persist"):
            return
        if not self._send_before_persist:
            self._send(ready.messages)
        if self._crash_here("after-send"):
            return
        if ready.committed:
            self._apply(ready.committed)
        if self._crash_here("after-apply"):
            return
        self.server.read_states(ready.read_states)
        try:
            core.advance(ready)
        except Exception as error:
            raise InvariantViolation("core-error", f"replica {self.id} core raised {error!r} in advance") from error
        self._observe()
        self.server.serve_reads(self.state)
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

    def _apply(self, entries: List[Entry]) -> None:
        world = self.world
        try:
            applied: List[Applied] = self.state.apply_batch([(e.index, e.data) for e in entries])
        except RuntimeError as error:
            raise InvariantViolation("apply", f"replica {self.id}: {error}") from error
        world.checker.on_applied(self.id, entries, applied)
        world.counts["applied"] += len(applied)
        last = entries[-1].index
        if last % DIGEST_EVERY == 0:
            world.checker.on_digest(self.id, last, self.state.digest())
        self.server.applied(entries, applied)

    # ----------------------------------------------------------------- serving clients

    def client_write(self, request: Request) -> None:
        if self.status is Status.PAUSED:
            self._held.append(lambda: self.client_write(request))
        elif self.status is Status.UP:
            self.server.write(request)
            self.kick()

    def client_read(self, request: Request) -> None:
        if self.status is Status.PAUSED:
            self._held.append(lambda: self.client_read(request))
        elif self.status is Status.UP:
            self.server.read(request, self.life)
            self.kick()

    # ----------------------------------------------------------------- views

    @property
    def up(self) -> bool:
        return self.status is Status.UP

    def is_leader(self) -> bool:
        return self.core is not None and self.status is not Status.DOWN and self.core.role is Role.LEADER
