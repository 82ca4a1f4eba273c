"""The asyncio Raft node: only the IO around the sans-IO driver (driver.py).

The node moves opaque bytes: `propose(key, data)` returns what the state machine's apply gave
for them, `read_index()` is a linearizable read barrier, `wait_applied`, `transfer_leadership`,
`status`. What the bytes mean is the state machine's business (for chat: replichat.chat).

One task (`_run`) owns the driver's cycle. Everything else — peer messages, proposals, read
requests, ticks — is queued in the driver and handed to the core between two Readies, so the
core never changes while a Ready is being persisted. Everything that arrived during one fsync is
persisted by the next: group commit falls out of the loop's shape. Where the blocking SQLite
work runs, and why:
  * A leader fsyncs its log on a single-thread executor: that is I/O, during which its loop
    serves clients (and its appends are already on their way to the followers).
  * A follower fsyncs on the loop, unless the batch is large: its acknowledgement is what
    every write waits for, and the hop to a thread and back costs about 0.3 ms on top of a
    0.3-0.4 ms fsync.
  * Committed batches of one or two entries (what a write at concurrency 1 commits) are
    applied on the loop, for the same reason (0.3 ms hop, 0.1 ms apply); larger ones on the
    state-machine executor, so the loop keeps serving while they apply.
  * A step with nothing to persist and such a small commit (a write at concurrency 1 ends
    with one) is applied before its messages are sent, and the loop lets the proposers it
    answered reply first: those messages only tell the followers the new commit index, and
    sending them first put a TLS write per follower before every answer (bench/write_ab.py:
    c=1 writes/s 1.10x with this order, in 12 paired slots).
  * Those commit notices (a leader's empty appends) are then held for a few milliseconds, and
    dropped if the next write's append or a heartbeat carries the same commit index first
    (commit_notices.py): each one cost every follower a receive, a core step and an
    acknowledgement, and the leader a send and a receive, for news the next message brings.
"""
import asyncio
import concurrent.futures
import itertools
import logging
import os
import time
import uuid
from typing import Any, Callable, Dict, Hashable, List, NamedTuple, Optional, Sequence, Set, Tuple, TypeVar

from replichat.errors import ChatError, Code, OutcomeUnknown
from replichat.metrics.observer import NO_OBSERVER, RuntimeObserver
from replichat.raft.core import Config, RaftCore, Role
from replichat.integrity import CorruptDataError
from replichat.raft import membership
from replichat.raft.membership import Change, Membership
from replichat.raft.messages import NO_LEADER, Entry, Message, SnapshotMeta
from replichat.runtime.commit_notices import DEFAULT_HOLD_S, CommitNotices
from replichat.runtime.driver import Driver, recover_core
from replichat.runtime import peer_addresses
from replichat.runtime.interfaces import LogExtent, LogStore, StateMachine
from replichat.runtime.snapshots import NEVER
from replichat.runtime.snapshot_policy import DEFAULT_KEEP_ENTRIES, DEFAULT_SNAPSHOT_ENTRIES, SnapshotPolicy
from replichat.runtime.snapshot_runtime import SnapshotRuntime
from replichat.runtime.storage import RaftStorage
from replichat.runtime.transport import PeerTransport, SnapshotPart

log = logging.getLogger(__name__)
T = TypeVar("T")

# Committed batches of at most this many entries are applied on the event loop (module doc).
INLINE_APPLY_MAX = 2
# A follower persists batches of at most this many entries on the event loop (module doc).
INLINE_PERSIST_MAX = 64

ApplyHook = Callable[[List[Any]], None]


class NodeOptions:
    def __init__(
        self,
        tick_s: float = 0.05,
        election_ticks: int = 10,
        request_timeout_s: float = 8.0,
        retry_interval_s: float = 2.0,
        snapshot_entries: int = DEFAULT_SNAPSHOT_ENTRIES,
        snapshot_keep: int = DEFAULT_KEEP_ENTRIES,
        advance_first_timeout: bool = True,
        commit_notice_hold_s: float = DEFAULT_HOLD_S,
    ) -> None:
        self.tick_s = tick_s
        self.election_ticks = election_ticks
        # A starting replica campaigns within one election timeout, not two (core.Config).
        self.advance_first_timeout = advance_first_timeout
        # How long a write may wait for a quorum before the client is told "unavailable".
        self.request_timeout_s = request_timeout_s
        # How long to wait for a commit before proposing again (same request id, applied once).
        self.retry_interval_s = retry_interval_s
        # A snapshot every snapshot_entries applied entries (0: never); the log keeps
        # snapshot_keep entries behind it for followers that lag a little (snapshot_policy.py).
        self.snapshot_entries = snapshot_entries
        self.snapshot_keep = snapshot_keep
        # How long a leader holds an empty append for the next append to carry its commit
        # index instead (commit_notices.py; 0: never held). Heartbeats carry the commit index
        # too, so an idle follower learns a commit within a tick whatever this is.
        self.commit_notice_hold_s = commit_notice_hold_s


class PeerStatus(NamedTuple):
    id: int
    match_index: int
    next_index: int


class NodeStatus(NamedTuple):
    id: int
    role: str
    term: int
    leader_id: int
    commit_index: int
    applied_index: int
    last_index: int
    peers: List[PeerStatus]
    first_index: int = 1
    snapshot_index: int = 0
    # The configuration in effect (the latest in the log, committed or not).
    voters: Tuple[int, ...] = ()
    learners: Tuple[int, ...] = ()


class Node:
    def __init__(
        self,
        node_id: int,
        peers: Dict[int, str],
        data_dir: str,
        open_state_machine: Callable[[LogExtent], StateMachine],
        options: Optional[NodeOptions] = None,
        open_log_store: Optional[Callable[[], LogStore]] = None,
        voters: Optional[Sequence[int]] = None,
    ) -> None:
        """`peers`: every replica's Raft address (this one's included). `voters`: the
        bootstrap configuration (default: every replica in `peers`); the log's configuration
        entries take over from it (raft/membership.py). `open_log_store`
        (default: SQLite's raft.db in `data_dir`) and `open_state_machine` (given what the
        loaded log holds, so it can check its state against it) run on the node's disk and
        state-machine threads, which then own what they open."""
        self.id = node_id
        self.peers = dict(peers)
        # The Raft addresses this replica was given (--peers/--cluster). `peers` then follows
        # the configuration in effect (the log's), in place: the transport's links and the
        # Raft port's admitted senders are built from it (see _follow_membership).
        self._static_peers = dict(peers)
        # Raft addresses replicas neither --peers nor the configuration name gave for themselves
        # on an authenticated connection (`introduce`): a leader added while this one was down.
        self._introduced: Dict[int, str] = {}
        self._membership_seen: Optional[Membership] = None
        self._membership_hooks: List[Callable[[Membership], None]] = []
        self._bootstrap_voters = tuple(sorted(voters if voters is not None else self.peers))
        # Members of the configuration whose Raft address this replica does not know: their
        # messages are dropped (logged once each) rather than sent nowhere.
        self._unreachable_members: Set[int] = set()
        self._membership_changes: Dict[Hashable, "asyncio.Future[int]"] = {}
        self.data_dir = data_dir
        self.options = options or NodeOptions()
        self._open_state_machine = open_state_machine
        self._open_log_store = open_log_store or (lambda: RaftStorage(os.path.join(data_dir, "raft.db")))
        self._instance = uuid.uuid4().hex
        self._read_numbers = itertools.count(1)
        self._wake = asyncio.Event()
        self._leader_changed = asyncio.Event()
        self._writes: Dict[Hashable, "asyncio.Future[Any]"] = {}
        self._reads: Dict[bytes, "asyncio.Future[int]"] = {}
        self._watches: Dict[Hashable, "asyncio.Future[None]"] = {}
        self._watch_numbers = itertools.count(1)
        self._apply_hooks: List[ApplyHook] = []
        self._tasks: List["asyncio.Task[None]"] = []
        self._stopping = False
        self._failure: Optional[BaseException] = None
        self.stopped = asyncio.Event()
        self._disk = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"raft-log-{node_id}")
        self._sm = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"state-machine-{node_id}")
        # Taking a snapshot reads state.db through its own connection: on its own thread, so
        # batches keep applying on the state-machine thread meanwhile.
        self._snapshot_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"snapshot-{node_id}")
        self.transport = PeerTransport(node_id, self.peers)
        self._notices = CommitNotices(self.options.commit_notice_hold_s)
        self._notice_timer: Optional[asyncio.TimerHandle] = None
        self._store: Optional[LogStore] = None
        self._machine: Optional[StateMachine] = None
        self.driver: Optional[Driver] = None
        # Peer messages that arrive before start() built the driver.
        self._early: List[Message] = []
        # Metrics (--metrics) watch through this; the default does nothing.
        self.observer: RuntimeObserver = NO_OBSERVER
        self._proposals_seen = 0
        self._snapshots: Optional[SnapshotRuntime] = None
        self._extent = LogExtent(0, 0)
        # Called on the loop after a snapshot from the leader replaced the state (to reopen
        # read-only connections to it).
        self._install_hooks: List[Callable[[], None]] = []

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        self._store = store = await self._on_disk(self._open_log_store)
        hard_state, entries = await self._on_disk(store.load)
        base = SnapshotMeta()
        recorded = None
        base_membership: Optional[Membership] = None
        if isinstance(store, RaftStorage):
            base = SnapshotMeta(*await self._on_disk(store.log_base))
            recorded_membership = await self._on_disk(store.base_membership)
            if recorded_membership is not None:
                try:
                    base_membership = membership.decode(recorded_membership)
                except membership.MembershipError as error:
                    raise CorruptDataError(f"the configuration recorded at the log's base is invalid: {error}") from None
            self._snapshots = SnapshotRuntime(
                self.id, self.data_dir, os.path.join(self.data_dir, "state.db"), store,
                self._driver, self._on_disk, self.on_state_thread, self._on_snapshot_thread,
                self.transport.send, self._step_snapshot, self._wake.set, lambda: self.observer,
            )
            recorded = await self._snapshots.load()
        extent = self._extent = LogExtent(base.index, base.index + len(entries), recorded)
        self._machine = machine = await self.on_state_thread(self._open_state_machine, extent)
        applied = machine.last_applied
        config = Config(
            id=self.id,
            voters=self._bootstrap_voters,
            election_ticks=self.options.election_ticks,
            seed=int.from_bytes(os.urandom(4), "big"),
            advance_first_timeout=self.options.advance_first_timeout,
        )
        snapshot = SnapshotMeta(recorded.index, recorded.term) if recorded is not None else None
        core = recover_core(config, hard_state, entries, applied, base=base, snapshot=snapshot,
                            base_membership=base_membership)
        if set(core.membership.voters) != set(self._bootstrap_voters):
            # The log (or the snapshot) decides from now on, not --cluster (raft/membership.py).
            log.warning("replica %d: the configuration in its log (%s) differs from the one it was started with "
                        "(voters %s): the log's is in effect", self.id, core.membership.describe(),
                        ",".join(map(str, self._bootstrap_voters)))
        policy = SnapshotPolicy(self.options.snapshot_entries, self.options.snapshot_keep) if self._snapshots else NEVER
        self.driver = Driver(
            core, machine.request_key, self, self.options.retry_interval_s, self.options.request_timeout_s, policy
        )
        self.transport.start()
        self._follow_membership(starting=True)
        # The peers in effect (the configuration's, see peer_addresses.py), not only those given.
        log.info(
            "replica %d starting: term %d, %d log entries after index %d (snapshot at %d), applied %d, peers %s",
            self.id, hard_state.term, len(entries), base.index, core.snapshot.index, applied,
            ", ".join(f"{i}={a}" for i, a in sorted(self.peers.items()) if i != self.id) or "none",
        )
        clauses = peer_addresses.disagreements(self.id, self._static_peers, core.membership)
        if clauses:
            log.warning("replica %d: its --peers and the configuration in its log (%s) disagree: %s. The log decides "
                        "who is a member (README: Changing the membership)", self.id, core.membership.describe(),
                        "; ".join(clauses))
        self._tasks = [asyncio.ensure_future(self._run()), asyncio.ensure_future(self._ticker())]

    async def hand_over_leadership(self) -> None:
        """A leader hands leadership to its most caught-up peer (waiting at most an election
        timeout), so the cluster does not wait an election timeout to notice it is gone."""
        core = self.core
        if self._stopping or core is None or core.role is not Role.LEADER or not core.peers:
            return
        progress = core.progress
        voters = [peer for peer in progress if peer in core.membership.voters]  # learners cannot lead
        if not voters:
            return
        target = max(voters, key=lambda peer: progress[peer].match)
        log.info("replica %d handing leadership to replica %d before stopping", self.id, target)
        self.transfer_leadership(target)
        deadline = time.monotonic() + self.options.tick_s * self.options.election_ticks
        while core.role is Role.LEADER and time.monotonic() < deadline:
            await self._next_leader_change(deadline - time.monotonic())

    async def stop(self, transfer_leadership: bool = True) -> None:
        """Stop serving; a leader first hands over leadership (see hand_over_leadership)."""
        if self._stopping:
            return
        if transfer_leadership:
            await self.hand_over_leadership()
        self._stopping = True
        if self._notice_timer is not None:
            self._notice_timer.cancel()
        self._notices.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self.transport.close()
        if self._snapshots is not None:
            await self._snapshots.close()
        self._fail_waiters(ChatError(Code.UNAVAILABLE, f"replica {self.id} is shutting down"))
        if self._store is not None:
            await self._on_disk(self._store.close)
        if self._machine is not None:
            await self.on_state_thread(self._machine.close)
        self._disk.shutdown()
        self._sm.shutdown()
        self._snapshot_thread.shutdown()
        self.stopped.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def failure(self) -> Optional[BaseException]:
        return self._failure

    @property
    def core(self) -> Optional[RaftCore]:
        return self.driver.core if self.driver is not None else None

    @property
    def applied_index(self) -> int:
        return self.driver.applied_index if self.driver is not None else 0

    def deliver(self, messages: List[Message]) -> None:
        """Peer messages from the transport; stepped by the loop. (Before start() they wait.)"""
        if self._stopping:
            return
        if self.driver is None:
            self._early.extend(messages)
            return
        self.driver.step_messages(messages)
        self._wake.set()

    def deliver_snapshot_parts(self, parts: List[SnapshotPart]) -> None:
        """Snapshot chunks and acknowledgements from the transport (dropped before start)."""
        if self._stopping or self._snapshots is None or self.driver is None:
            return
        self._snapshots.on_parts(parts)

    def _step_snapshot(self, messages: List[Message]) -> None:
        self._driver().snapshot_messages(messages)
        self._wake.set()

    def add_install_hook(self, hook: Callable[[], None]) -> None:
        """`hook()` on the loop after a snapshot from the leader replaced the state machine."""
        self._install_hooks.append(hook)

    def add_apply_hook(self, hook: ApplyHook) -> None:
        """`hook(results)` after each applied batch, on the loop (say, to wake subscribers)."""
        self._apply_hooks.append(hook)

    async def on_state_thread(self, fn: Callable[..., T], *args: object) -> T:
        """Run blocking state-machine work (say, a large read) on the state-machine thread."""
        return await asyncio.get_event_loop().run_in_executor(self._sm, fn, *args)

    # ----------------------------------------------------------------- the loop

    async def _ticker(self) -> None:
        interval = self.options.tick_s
        next_tick = time.monotonic() + interval
        loop = asyncio.get_event_loop()
        while True:
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            next_tick += interval
            # After a stall (say SIGSTOP), do not fire a burst of ticks that would start an
            # election at once: one tick per wake-up.
            next_tick = max(next_tick, time.monotonic())
            driver = self._driver()
            driver.tick()
            driver.expire(loop.time())
            if self._snapshots is not None:
                self._snapshots.check_stalled()
            self._wake.set()

    async def _run(self) -> None:
        driver = self._driver()
        if self._early:
            driver.step_messages(self._early)
            self._early = []
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._snapshots is not None and self._snapshots.failure is not None:
                    raise self._snapshots.failure
                self._feed(driver)
                await self._process_steps(driver)
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            # Continuing after a failed fsync or apply could corrupt state: stop loudly.
            self._failure = error
            log.critical("replica %d stopping after an unrecoverable error", self.id, exc_info=True)
            self.stopped.set()
            raise

    async def _process_steps(self, driver: Driver) -> None:
        store = self._store
        assert store is not None and self._machine is not None
        snapshots = self._snapshots
        while True:
            step = driver.next_step()
            if step is None:
                return
            for regression in step.ready.log_regressions:
                log.error(
                    "replica %d: replica %d lost log entries it had acknowledged (up to %d; it now needs %d "
                    "onwards): its data was wiped or rolled back; catching it up from there",
                    self.id, regression.peer, regression.acknowledged, regression.now_before,
                )
            if step.install is not None:
                assert snapshots is not None
                await snapshots.install(step, self._close_machine, self._reopen_machine)
                for install_hook in self._install_hooks:
                    install_hook()
            machine = self._machine
            if step.snapshots_early and snapshots is not None:
                snapshots.send_snapshots(step.snapshots_early)
            items = step.committed_items()
            # Nothing to persist and a commit small enough to apply on the loop: apply it, let
            # the proposers it answers reply, then send (module doc). The messages (the leader
            # telling followers the commit index, a follower acknowledging it) may leave a tenth
            # of a millisecond later; a client's answer is its latency.
            apply_first = not step.must_persist and 0 < len(items) <= INLINE_APPLY_MAX
            if step.early and not apply_first:
                self._send(step.early)
            if step.must_persist:
                started = time.perf_counter()
                if not step.leader_step and len(step.entries) <= INLINE_PERSIST_MAX:
                    # A follower: nothing else it does is as urgent as its acknowledgement.
                    store.save(step.hard_state, step.entries)
                else:
                    await self._on_disk(store.save, step.hard_state, step.entries)
                self.observer.persisted(time.perf_counter() - started, len(step.entries))
            late = driver.persisted(step)
            if late and not apply_first:
                self._send(late)
            if step.snapshots_late and snapshots is not None:
                snapshots.send_snapshots(step.snapshots_late)
            if items:
                started = time.perf_counter()
                if len(items) <= INLINE_APPLY_MAX:
                    results = machine.apply_batch(items)
                else:
                    results = await self.on_state_thread(machine.apply_batch, items)
                self.observer.applied(time.perf_counter() - started, results)
                driver.applied(step, results)
                for hook in self._apply_hooks:
                    hook(results)
                if snapshots is not None:
                    if snapshots.failure is not None:
                        raise snapshots.failure
                    snapshots.after_apply()
            if apply_first:
                # Let the proposers the apply answered reply to their clients first.
                await asyncio.sleep(0)
                if step.early or late:
                    self._send(step.early + late)
            driver.advance(step)
            if driver.membership is not self._membership_seen:
                self._follow_membership()
            # Input that arrived during the awaits above joins the next Ready.
            self._feed(driver)

    def _send(self, messages: List[Message]) -> None:
        """Send a step's messages; empty appends wait a little for a later one to carry their
        commit index instead (commit_notices.py)."""
        loop = asyncio.get_event_loop()
        messages = self._notices.outgoing(messages, loop.time())
        if self._notices.held and self._notice_timer is None:
            self._arm_notice_timer(loop)
        if messages:
            self._send_now(messages)

    def _arm_notice_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        deadline = self._notices.next_deadline()
        if deadline is not None:
            self._notice_timer = loop.call_at(deadline, self._send_due_notices)

    def _send_due_notices(self) -> None:
        self._notice_timer = None
        if self._stopping:
            return
        loop = asyncio.get_event_loop()
        # Timers fire to the millisecond (uvloop), possibly a little before the deadline.
        due = self._notices.due(loop.time() + 0.001)
        if due:
            self._send_now(due)
        if self._notices.held:
            self._arm_notice_timer(loop)

    def _send_now(self, messages: List[Message]) -> None:
        peers = self.peers
        if all(m.dst in peers for m in messages):
            self.transport.send(messages)
            return
        if self._driver().membership is not self._membership_seen:
            self._follow_membership()  # a member added by the entry just appended
        for m in messages:
            if m.dst not in peers and m.dst not in self._unreachable_members:
                self._unreachable_members.add(m.dst)
                log.warning("replica %d has no Raft address for replica %d, a member of %s: not sending to it",
                            self.id, m.dst, self._driver().membership.describe())
        self.transport.send([m for m in messages if m.dst in peers])

    def add_membership_hook(self, hook: Callable[[Membership], None]) -> None:
        """`hook(membership)` on the loop whenever the configuration in effect changes (and
        once at start)."""
        self._membership_hooks.append(hook)

    def raft_address(self, member: int) -> str:
        """Where this replica reaches `member`'s Raft port ("" if it does not know)."""
        return self.peers.get(member) or self._static_peers.get(member, "")

    def _follow_membership(self, starting: bool = False) -> None:
        """Make the peer links and the Raft port's admitted senders those of the configuration
        in effect (and those given at start). A member's Raft address is the one this replica
        was given for it (--peers:
        a per-replica view, which may go through a proxy or a NAT), else the configuration's
        (recorded by `members add`)."""
        membership = self._driver().membership
        self._membership_seen = membership
        # The replicas given at start stay reachable even when the configuration in effect here
        # lacks them: a replica whose log is behind (say, it was paused while a member was
        # removed and added back) must still answer that member when it leads, or it could
        # never catch up to the entry that adds it.
        wanted = peer_addresses.raft_addresses(self._static_peers, membership, self._introduced)
        if wanted != self.peers:
            added = sorted(set(wanted) - set(self.peers))
            removed = sorted(set(self.peers) - set(wanted))
            if not starting:
                log.info("replica %d follows the configuration %s: peer links%s%s", self.id, membership.describe(),
                         f" added {added}" if added else "", f" dropped {removed}" if removed else "")
            # In place: the Raft listener admits the senders in this very dict.
            self.peers.clear()
            self.peers.update(wanted)
            self.transport.set_peers(wanted)
            self._unreachable_members -= set(wanted)
        for hook in self._membership_hooks:
            hook(membership)

    def introduce(self, peer: int, address: str) -> None:
        """A connection whose certificate (signed by the cluster CA) names replica `peer`, which
        this replica does not know, gave `address` as its Raft address (transport.py): answer it
        there. So a replica that was down while members were added, restarted with --peers that
        predate them, still follows a leader among them and catches up on the entries that add
        them. At most MAX_MEMBERS such addresses; the first one given for a replica stays."""
        if peer in self.peers or peer in self._introduced or peer == self.id:
            return
        problem = peer_addresses.address_problem(address)
        if problem is not None or len(self._introduced) >= membership.MAX_MEMBERS:
            log.warning("replica %d ignores the Raft address replica %d gave for itself: %s", self.id, peer,
                        problem or f"{len(self._introduced)} such addresses already")
            return
        self._introduced[peer] = address
        core = self.core
        log.warning("replica %d: replica %d (its certificate says so) is not in this replica's configuration%s: "
                    "its log is behind, or its --peers lack that replica. It answers replica %d at %s, the Raft "
                    "address it gave, until its log names it", self.id, peer,
                    f" ({core.membership.describe()})" if core is not None else "", peer, address)
        if self.driver is None:  # still starting: start() follows the configuration with it
            self.peers[peer] = address
            self.transport.set_peers(self.peers)
            return
        self._follow_membership()

    def _feed(self, driver: Driver) -> None:
        driver.feed()
        if driver.proposals_handed != self._proposals_seen:
            self.observer.proposed(driver.proposals_handed - self._proposals_seen)
            self._proposals_seen = driver.proposals_handed
        core = driver.core
        self.observer.raft_state(core.role.value, core.term, core.leader)

    def _driver(self) -> Driver:
        assert self.driver is not None, "the node has not started"
        return self.driver

    async def _close_machine(self) -> None:
        assert self._machine is not None
        await self.on_state_thread(self._machine.close)

    async def _reopen_machine(self) -> None:
        core = self._driver().core
        self._extent = LogExtent(core.log.base_index, core.log.last_index, self._snapshots.recorded if self._snapshots else None)
        self._machine = await self.on_state_thread(self._open_state_machine, self._extent)

    async def _on_snapshot_thread(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_event_loop().run_in_executor(self._snapshot_thread, fn, *args)

    async def _on_disk(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_event_loop().run_in_executor(self._disk, fn, *args)

    # ----------------------------------------------------------------- Listener (driver answers)

    def write_applied(self, key: Hashable, entry: Entry, result: Any) -> None:
        future = self._writes.pop(key, None)
        if future is not None and not future.done():
            future.set_result(result)

    def write_timed_out(self, key: Hashable) -> None:
        future = self._writes.pop(key, None)
        if future is not None and not future.done():
            # Not "failed": the entry may already be in a leader's log and commit later. The
            # driver stops proposing it; retrying the same request resolves it (errors.py).
            future.set_exception(OutcomeUnknown(
                f"{self._unavailable('the write').message}; it may still be applied: "
                "retry it with the same request id to find out"
            ))

    def read_ready(self, context: bytes, index: int) -> None:
        future = self._reads.pop(context, None)
        if future is not None and not future.done():
            future.set_result(index)

    def read_timed_out(self, context: bytes) -> None:
        future = self._reads.pop(context, None)
        if future is not None and not future.done():
            future.set_exception(self._unavailable("the read"))

    def index_applied(self, token: Hashable) -> None:
        future = self._watches.pop(token, None)
        if future is not None and not future.done():
            future.set_result(None)

    def membership_result(self, token: Hashable, index: int, error: str) -> None:
        future = self._membership_changes.pop(token, None)
        if future is None or future.done():
            return
        if index:
            log.info("replica %d: configuration change applied at %d: now %s", self.id, index,
                     self._driver().membership.describe())
            future.set_result(index)
        else:
            future.set_exception(ChatError(Code.UNAVAILABLE, error))

    def leader_changed(self, core: RaftCore) -> None:
        if core.role is Role.LEADER:
            log.info("replica %d is the leader for term %d", self.id, core.term)
        elif core.leader != NO_LEADER:
            log.info("replica %d follows leader %d in term %d", self.id, core.leader, core.term)
        else:
            log.info("replica %d has no leader (term %d, %s)", self.id, core.term, core.role.value)
        self._leader_changed.set()
        self._leader_changed = asyncio.Event()

    def _fail_waiters(self, error: ChatError) -> None:
        for futures in (self._writes, self._reads, self._watches, self._membership_changes):
            for future in futures.values():  # type: ignore[attr-defined]
                if not future.done():
                    future.set_exception(error)
            futures.clear()  # type: ignore[attr-defined]

    # ----------------------------------------------------------------- the runtime's API

    async def propose(self, key: Hashable, data: bytes) -> Any:
        """Propose `data` and return the state machine's result once this replica applied it.
        `key` identifies the request (the state machine's request_key of its result): it is
        proposed again on a leader change and every retry_interval (a repeat must apply once);
        fails with UNAVAILABLE after request_timeout."""
        if self._stopping:
            raise ChatError(Code.UNAVAILABLE, f"replica {self.id} is shutting down")
        future = self._writes.get(key)
        if future is None or future.done():
            future = asyncio.get_event_loop().create_future()
            self._writes[key] = future
            self._driver().propose(key, data, asyncio.get_event_loop().time())
            self._wake.set()
        started = time.perf_counter()
        result = await future
        self.observer.write_committed(time.perf_counter() - started)
        return result

    async def read_index(self) -> int:
        """ReadIndex: returns once this replica has applied an index that reflects every write
        acknowledged before this call (the index is returned)."""
        if self._stopping:
            raise ChatError(Code.UNAVAILABLE, f"replica {self.id} is shutting down")
        context = f"{self._instance}:{next(self._read_numbers)}".encode()
        future: "asyncio.Future[int]" = asyncio.get_event_loop().create_future()
        self._reads[context] = future
        self._driver().read(context, asyncio.get_event_loop().time())
        self._wake.set()
        return await future

    async def wait_applied(self, index: int) -> None:
        driver = self._driver()
        if index <= driver.applied_index:
            return
        token = ("watch", next(self._watch_numbers))
        future: "asyncio.Future[None]" = asyncio.get_event_loop().create_future()
        self._watches[token] = future
        driver.watch_applied(index, token)
        await future

    def transfer_leadership(self, target: int) -> None:
        self._driver().transfer(target)
        self._wake.set()

    async def change_membership(self, change: Change) -> int:
        """Propose a configuration change at this replica, which must be the leader (add a
        learner, promote it, remove a member; raft/membership.py), and return the index of
        its entry once it is committed and applied here. Fails with UNAVAILABLE (saying why)
        when this replica does not lead, a change is already in progress, this leader has
        not committed in its term yet, the change does not apply, or no quorum commits it
        within the request timeout. A new member's Raft address must be known to this
        replica (`peers`) for it to be replicated to."""
        if self._stopping:
            raise ChatError(Code.UNAVAILABLE, f"replica {self.id} is shutting down")
        token = ("membership", next(self._watch_numbers))
        future: "asyncio.Future[int]" = asyncio.get_event_loop().create_future()
        self._membership_changes[token] = future
        self._driver().change_membership(token, change, asyncio.get_event_loop().time())
        self._wake.set()
        return await future

    @property
    def membership(self) -> Membership:
        return self._driver().membership

    def status(self) -> NodeStatus:
        core = self.core
        assert core is not None
        return NodeStatus(
            id=self.id,
            role=core.role.value,
            term=core.term,
            leader_id=core.leader,
            commit_index=core.commit_index,
            applied_index=self.applied_index,
            last_index=core.log.last_index,
            peers=[PeerStatus(peer, pr.match, pr.next) for peer, pr in sorted(core.progress.items())],
            first_index=core.log.first_index,
            snapshot_index=core.snapshot.index,
            voters=tuple(sorted(core.membership.voters)),
            learners=tuple(sorted(core.membership.learners)),
        )

    async def _next_leader_change(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._leader_changed.wait(), max(0.0, timeout))
        except asyncio.TimeoutError:
            pass

    def _unavailable(self, what: str) -> ChatError:
        core = self._driver().core
        leader = core.leader
        return ChatError(
            Code.UNAVAILABLE,
            f"no quorum: {what} did not complete within {self.options.request_timeout_s:g}s "
            f"(replica {self.id} sees {'leader ' + str(leader) if leader else 'no leader'}, term {core.term})",
        )
