"""The Raft runtime's logic, sans-IO: one driver shared by the asyncio node and the simulator.

The driver owns the Raft core and everything around it that is logic rather than IO: queued
input (peer messages, ticks, proposals, read requests, a leadership transfer), the Ready cycle's
ordering, the tables of pending writes and reads with their re-proposal on a leader change and
their retry/deadline bookkeeping, and applied-index waiters. It never touches a disk, a socket,
a thread or a clock: time is passed in (`expire(now)`), persisting and applying are done by the
shell, which tells the driver when each is done. That is what lets persisting be asynchronous
(the asyncio node awaits a thread; the simulator schedules disk time and can crash between the
steps).

One turn of the cycle, as the shell drives it:

    driver.feed()                      queued input -> the core (then leader-change handling)
    step = driver.next_step()          a Ready, or None
    send(step.early)                   what may leave before the Ready is durable (a leader's
                                       appends: thesis §10.2.1); nothing for a follower
    store.save(step.hard_state, step.entries)      when step.must_persist
    send(driver.persisted(step))       everything else, only now that it is durable
    results = fsm.apply_batch(step.committed_items())   when step.committed_items()
    driver.applied(step, results)      answers the writes those entries carry
    driver.advance(step)               core.advance, read states, released reads/waiters

Answers leave through a `Listener` the shell implements (futures for the node; replies to
simulated clients for the simulator).

Snapshots are decided here too (the policy, the order of their steps; runtime/snapshots.py):
`snapshot_due` / `snapshot_written` / `snapshot_recorded` around taking one and compacting the
log behind it, `Step.snapshots_early` / `snapshots_late` for followers the log no longer reaches
(the shell streams the file and reports with `snapshot_sent`), and `Step.install` for a received snapshot
the core accepted, installed log first (`install_logged`), then the state (`install_restored`),
before anything else of that Step is persisted or sent.

Membership: `change_membership(token, change, now)` proposes a configuration change at the
leader (raft/membership.py); `membership_result(token, index, error)` answers once it is
applied here, refused, or past its deadline. Configuration entries are the runtime's, not the
state machine's: `Step.committed_items()` hands them to it as no-ops (b""), so its indexes
stay contiguous and it never sees a byte it does not understand. `membership` is the
configuration in effect.
"""
import collections
from typing import Any, Callable, Deque, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

try:  # Python 3.8 has typing.Protocol
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore

from replichat.raft.core import Config, NotLeader, RaftCore, Ready
from replichat.raft.log import RaftLog
from replichat.raft.membership import Change, Membership, MembershipError
from replichat.raft.messages import NO_LEADER, Entry, HardState, Message, MsgType, SnapshotMeta
from replichat.runtime.snapshots import NEVER, compaction_target
from replichat.runtime.snapshot_policy import SnapshotPolicy

CoreFactory = Callable[[Config, RaftLog, HardState], RaftCore]


class RecoveryError(RuntimeError):
    """What is durable does not fit together: the replica must not start."""


def recover_core(
    config: Config, hard_state: HardState, entries: List[Entry], applied: int, make_core: CoreFactory = RaftCore,
    base: SnapshotMeta = SnapshotMeta(), snapshot: Optional[SnapshotMeta] = None,
    base_membership: Optional[Membership] = None,
) -> RaftCore:
    """Rebuild the core from what is durable: the log (entries after `base`, the last entry
    compacted into a snapshot) and hard state, the newest snapshot, the configuration at the
    log's base (None: the bootstrap one, `config.voters`), and the state machine's last
    applied index. Entries the state machine applied were committed even if the hard
    state's commit index (written lazily) lags behind. A configuration entry that does not
    decode is a RecoveryError."""
    if applied > base.index + len(entries):
        raise RecoveryError(
            f"the state machine applied {applied} entries but the raft log ends at {base.index + len(entries)}"
        )
    committed = max(hard_state.commit, applied)
    log = RaftLog(entries, committed, applied, base_index=base.index, base_term=base.term)
    extra: Dict[str, Any] = {}
    if base_membership is not None:
        extra["base_membership"] = base_membership
    try:
        if snapshot is None:
            return make_core(config, log, hard_state, **extra)  # type: ignore[call-arg]
        return make_core(config, log, hard_state, snapshot, **extra)  # type: ignore[call-arg]
    except MembershipError as error:
        raise RecoveryError(str(error)) from error


class Listener(Protocol):
    """How answers leave the driver. Called synchronously from driver methods."""

    def write_applied(self, key: Hashable, entry: Entry, result: Any) -> None:
        """The write proposed under `key` was applied here at `entry`, giving `result`."""

    def write_timed_out(self, key: Hashable) -> None:
        """The write got no commit before its deadline (it may still be applied later)."""

    def read_ready(self, context: bytes, index: int) -> None:
        """The linearizable read `context` may be served: its read index is applied here."""

    def read_timed_out(self, context: bytes) -> None:
        """The read got no read index, or it was not applied here, before its deadline."""

    def index_applied(self, token: Hashable) -> None:
        """The index a `watch_applied(index, token)` waited for is applied here."""

    def leader_changed(self, core: RaftCore) -> None:
        """The core's known leader changed (logging, waking whoever waits for one)."""

    def membership_result(self, token: Hashable, index: int, error: str) -> None:
        """The change proposed under `token` is applied here at `index` (error ""), or it
        was refused or gave no answer in time (index 0, error says why; after a timeout it
        may still commit later)."""


class Step:
    """One Ready on its way through persist -> send -> apply -> advance."""

    __slots__ = ("ready", "early", "late", "snapshots_early", "snapshots_late", "_phase", "_install_phase",
                 "_has_configuration")

    def __init__(self, ready: Ready, early: List[Message], late: List[Message],
                 snapshots_early: Sequence[Message] = (), snapshots_late: Sequence[Message] = (),
                 has_configuration: bool = True) -> None:
        self.ready = ready
        self.early = early  # to send now, while persisting
        self.late = late  # to send once persisted
        # SNAPSHOT messages (by the same rule: now, or once persisted): followers to stream the
        # recorded snapshot to; the shell reports each outcome with Driver.snapshot_sent.
        self.snapshots_early = snapshots_early
        self.snapshots_late = snapshots_late
        self._phase = 0  # 0 handed out, 1 persisted, 2 applied
        self._install_phase = 0  # with a snapshot to install: 1 log recorded, 2 state restored
        # Whether a configuration entry may be among the committed ones (the core knows where
        # they are: most steps have none, and skip looking).
        self._has_configuration = has_configuration

    @property
    def snapshots_to_send(self) -> List[Message]:
        return list(self.snapshots_early) + list(self.snapshots_late)

    @property
    def install(self) -> Optional[SnapshotMeta]:
        """A received snapshot to install before anything else of this step (see Driver)."""
        return self.ready.snapshot

    @property
    def hard_state(self) -> Optional[HardState]:
        return self.ready.hard_state

    @property
    def entries(self) -> List[Entry]:
        return self.ready.entries

    @property
    def must_persist(self) -> bool:
        return bool(self.ready.entries) or self.ready.hard_state is not None

    @property
    def leader_step(self) -> bool:
        """Messages went out before persisting (a leader's Ready): the shell may persist off
        its loop while it serves; a follower's acknowledgement waits for this persist."""
        return bool(self.early) or self.ready.send_before_persist

    def committed_items(self) -> List[Tuple[int, bytes]]:
        """What the state machine applies: configuration entries become no-ops (b"")."""
        if not self._has_configuration:
            return [(e.index, e.data) for e in self.ready.committed]
        return [(e.index, e.data if e.data[:1] != b"\x00" else b"") for e in self.ready.committed]


class _PendingWrite:
    __slots__ = ("data", "deadline", "retry_at")

    def __init__(self, data: bytes, deadline: float, retry_at: float) -> None:
        self.data = data
        self.deadline = deadline
        self.retry_at = retry_at


class _PendingChange:
    __slots__ = ("change", "deadline", "index", "term")

    def __init__(self, change: Change, deadline: float) -> None:
        self.change = change
        self.deadline = deadline
        self.index = 0  # where the leader appended it (0: not yet)
        self.term = 0


class _PendingRead:
    __slots__ = ("deadline", "retry_at", "index")

    def __init__(self, deadline: float, retry_at: float) -> None:
        self.deadline = deadline
        self.retry_at = retry_at
        self.index: Optional[int] = None


class Driver:
    def __init__(
        self,
        core: RaftCore,
        request_key: Callable[[Any], Optional[Hashable]],
        listener: Listener,
        retry_interval: float,
        request_timeout: float,
        snapshot_policy: SnapshotPolicy = NEVER,
    ) -> None:
        """`retry_interval`: how long a write (or a read without its index) waits for an
        answer before it is proposed again; `request_timeout`: when it is given up. Same unit
        as the `now` the shell passes in. `snapshot_policy`: when to take snapshots and how
        much log to keep behind them (the default never takes one)."""
        self.core = core
        self.snapshot_policy = snapshot_policy
        self._snapshot_in_flight = False
        self._request_key = request_key
        self._listener = listener
        self._retry = retry_interval
        self._timeout = request_timeout
        self._messages: Deque[Message] = collections.deque()
        self._snapshots: List[Message] = []
        self._proposals: List[bytes] = []
        self._read_requests: List[bytes] = []
        self._ticks = 0
        self._transfer_to = NO_LEADER
        self._writes: Dict[Hashable, _PendingWrite] = {}
        self._reads: Dict[bytes, _PendingRead] = {}
        self._watches: List[Tuple[int, Hashable]] = []
        self._changes: Dict[Hashable, _PendingChange] = {}
        self._change_requests: List[Hashable] = []
        self.applied_index = core.log.applied
        self._known_leader = NO_LEADER
        # Proposals handed to the core so far (the shell's metrics read it).
        self.proposals_handed = 0

    # ----------------------------------------------------------------- input (queued)

    def step_messages(self, messages: Iterable[Message]) -> None:
        self._messages.extend(messages)

    def snapshot_messages(self, messages: Iterable[Message]) -> None:
        """SNAPSHOT messages whose files the shell received whole and verified."""
        self._snapshots.extend(messages)

    def tick(self) -> None:
        self._ticks += 1

    def transfer(self, target: int) -> None:
        self._transfer_to = target

    def propose(self, key: Hashable, data: bytes, now: float) -> None:
        """Propose a command and wait (by `key`) for it to be applied here. A key already
        pending keeps its deadline; the data is proposed again (the state machine applies a
        repeated key once)."""
        if key not in self._writes:
            self._writes[key] = _PendingWrite(data, now + self._timeout, now + self._retry)
        self._proposals.append(data)

    def read(self, context: bytes, now: float) -> None:
        """Ask for a linearizable read: `read_ready(context, index)` once this replica has
        applied an index covering every write acknowledged before this call."""
        self._reads[context] = _PendingRead(now + self._timeout, now + self._retry)
        self._read_requests.append(context)

    def change_membership(self, token: Hashable, change: Change, now: float) -> None:
        """Propose a configuration change (this replica must lead): `membership_result`
        answers once it is applied here, refused, or past the request timeout."""
        self._changes[token] = _PendingChange(change, now + self._timeout)
        self._change_requests.append(token)

    @property
    def membership(self) -> Membership:
        """The configuration in effect (the latest in the log, committed or not)."""
        return self.core.membership

    @property
    def unappended_changes(self) -> List[Change]:
        """Changes asked for that the core has not appended yet (this replica was paused, or
        its core refused them for now and they wait for a retry): each may still come into
        effect. The simulator's fault injector keeps those configurations survivable too."""
        return [pending.change for pending in self._changes.values() if not pending.index]

    def watch_applied(self, index: int, token: Hashable) -> None:
        """`index_applied(token)` once `index` is applied here (at once if it already is)."""
        if index <= self.applied_index:
            self._listener.index_applied(token)
        else:
            self._watches.append((index, token))

    def expire(self, now: float) -> None:
        """Retry what is due, give up what is past its deadline."""
        for key in [k for k, w in self._writes.items() if now >= w.deadline or now >= w.retry_at]:
            write = self._writes[key]
            if now >= write.deadline:
                del self._writes[key]
                self._listener.write_timed_out(key)
            else:
                write.retry_at = now + self._retry
                self._proposals.append(write.data)
        for context in [c for c, r in self._reads.items() if now >= r.deadline or (r.index is None and now >= r.retry_at)]:
            read = self._reads[context]
            if now >= read.deadline:
                del self._reads[context]
                self._listener.read_timed_out(context)
            else:
                read.retry_at = now + self._retry
                self._read_requests.append(context)
        for token in [t for t, c in self._changes.items() if now >= c.deadline]:
            change = self._changes.pop(token)
            what = "was not applied" if change.index else "could not be proposed"
            self._listener.membership_result(token, 0, f"the change {change.change.describe()} {what} in time")

    def has_input(self) -> bool:
        return bool(
            self._messages or self._snapshots or self._proposals or self._read_requests or self._ticks
            or self._transfer_to or self._change_requests
        )

    @property
    def pending_writes(self) -> int:
        return len(self._writes)

    @property
    def pending_reads(self) -> int:
        return len(self._reads)

    # ----------------------------------------------------------------- the cycle

    def feed(self) -> None:
        """Hand every queued input to the core. Only between steps: never while a Step
        handed out by next_step() has not been advanced."""
        core = self.core
        while self.has_input():
            while self._messages:
                core.step(self._messages.popleft())
            if self._snapshots:
                snapshots, self._snapshots = self._snapshots, []
                for m in snapshots:
                    core.snapshot_received(m)
            if self._proposals:
                proposals, self._proposals = self._proposals, []
                try:
                    core.propose(proposals)
                    self.proposals_handed += len(proposals)
                except NotLeader:
                    pass  # proposed again on the next leader change or retry
            if self._read_requests:
                reads, self._read_requests = self._read_requests, []
                for context in reads:
                    try:
                        core.read_index(context)
                    except NotLeader:
                        pass
            while self._ticks:
                self._ticks -= 1
                core.tick()
            if self._transfer_to != NO_LEADER:
                target, self._transfer_to = self._transfer_to, NO_LEADER
                core.transfer_leadership(target)
            if self._change_requests:
                self._propose_changes()
            self._check_leader()

    def next_step(self) -> Optional[Step]:
        core = self.core
        if not core.has_ready():
            return None
        ready = core.ready()
        early, late = self._split(ready)
        committed = ready.committed
        has_configuration = bool(committed) and core.has_configuration_between(committed[0].index, committed[-1].index)
        if any(m.type is MsgType.SNAPSHOT for m in ready.messages):
            snapshots_early = [m for m in early if m.type is MsgType.SNAPSHOT]
            snapshots_late = [m for m in late if m.type is MsgType.SNAPSHOT]
            early = [m for m in early if m.type is not MsgType.SNAPSHOT]
            late = [m for m in late if m.type is not MsgType.SNAPSHOT]
            return Step(ready, early, late, snapshots_early, snapshots_late, has_configuration)
        return Step(ready, early, late, has_configuration=has_configuration)

    def _split(self, ready: Ready) -> Tuple[List[Message], List[Message]]:
        """Which messages may leave before the Ready is durable. A leader's promise nothing
        about its own disk (it counts itself toward a commit only after advance); anything
        else — an acknowledgement, a vote — only once durable."""
        if ready.send_before_persist:
            return ready.messages, []
        return [], ready.messages

    def persisted(self, step: Step) -> List[Message]:
        """The shell made the step durable (or it had nothing to persist): what to send now."""
        assert step._phase == 0, "persisted() twice"
        if step.ready.snapshot is not None:
            assert step._install_phase == 2, "persisted before the snapshot in this step was installed"
        step._phase = 1
        return step.late

    def applied(self, step: Step, results: Sequence[Any]) -> None:
        """The state machine applied `step.committed_items()` with these results."""
        assert step._phase == 1, "applied before persisted"
        step._phase = 2
        committed = step.ready.committed
        if len(results) != len(committed):
            raise RuntimeError(f"state machine gave {len(results)} results for {len(committed)} entries")
        for entry, result in zip(committed, results):
            key = self._request_key(result)
            if key is not None and self._writes.pop(key, None) is not None:
                self._listener.write_applied(key, entry, result)
        if committed:
            self.applied_index = committed[-1].index
            if self._changes:
                self._changes_applied(committed)

    # ----------------------------------------------------------------- snapshots

    def snapshot_due(self) -> bool:
        """Whether the shell should take a snapshot of the state machine now (after an applied
        batch). True marks one in flight until snapshot_written or snapshot_abandoned."""
        core = self.core
        if self._snapshot_in_flight or not self.snapshot_policy.due(core.log.applied, core.snapshot.index, core.id):
            return False
        self._snapshot_in_flight = True
        return True

    def snapshot_written(self, index: int) -> Optional[SnapshotMeta]:
        """The shell wrote a snapshot of the state at applied index `index` (not yet recorded):
        its meta to record, or None if it is no newer than the core's snapshot (an install
        overtook it: drop it)."""
        self._snapshot_in_flight = False
        core = self.core
        if index <= core.snapshot.index:
            return None
        if index > self.applied_index:
            raise AssertionError(f"snapshot at {index} is past the applied index {self.applied_index}")
        return SnapshotMeta(index, core.log.term(index))

    def snapshot_abandoned(self) -> None:
        self._snapshot_in_flight = False

    def snapshot_recorded(self, meta: SnapshotMeta) -> Optional[int]:
        """The snapshot is durably recorded: the core sends it from now on and forgets its log
        up to the returned index, which the shell then compacts its durable log to. None: a
        snapshot from the leader was installed while this one was being recorded (the shell
        records on another thread); the install replaces the whole log, so nothing is
        compacted here, and the durable log may not yet know the install (compacting it to
        the new base would outrun the snapshot it has recorded)."""
        core = self.core
        if meta.index < core.snapshot.index:
            return None
        core.snapshot_taken(meta)
        to = self._compaction_target(meta.index)
        core.compact(to)
        return to

    def _compaction_target(self, snapshot_index: int) -> int:
        log = self.core.log
        return compaction_target(self.snapshot_policy, snapshot_index, log.base_index, log.applied, log.stable)

    def snapshot_sent(self, peer: int, success: bool) -> None:
        """The shell finished (or gave up) streaming the snapshot to `peer`."""
        self.core.report_snapshot(peer, success)

    def install_hard_state(self, step: Step) -> HardState:
        """The hard state to record with the install of `step.install` (its commit is the
        snapshot's index at least)."""
        assert step.install is not None
        if step.hard_state is not None:
            return step.hard_state
        core = self.core
        return HardState(core.term, core.vote, max(core.log.committed, step.install.index))

    def install_logged(self, step: Step) -> None:
        """The shell durably recorded `step.install` and emptied its log (one transaction)."""
        assert step.install is not None and step._install_phase == 0, "install_logged out of order"
        step._install_phase = 1

    def install_restored(self, step: Step) -> None:
        """The shell restored the state machine from `step.install`: it counts as applied."""
        assert step.install is not None and step._install_phase == 1, "state restored before the log recorded the snapshot"
        step._install_phase = 2
        self.applied_index = max(self.applied_index, step.install.index)

    def advance(self, step: Step) -> None:
        if step.ready.committed:
            assert step._phase == 2, "advance before the committed entries were applied"
        else:
            assert step._phase >= 1, "advance before persisted"
        for read_state in step.ready.read_states:
            read = self._reads.get(read_state.context)
            if read is not None and read.index is None:
                read.index = read_state.index
        self.core.advance(step.ready)
        self._check_leader()
        self._release()

    # ----------------------------------------------------------------- internals

    def _release(self) -> None:
        applied = self.applied_index
        if self._reads:
            for context in [c for c, r in self._reads.items() if r.index is not None and self._may_serve(r.index, applied)]:
                read = self._reads.pop(context)
                assert read.index is not None
                self._listener.read_ready(context, read.index)
        if self._watches:
            due = [token for index, token in self._watches if index <= applied]
            if due:
                self._watches = [(index, token) for index, token in self._watches if index > applied]
                for token in due:
                    self._listener.index_applied(token)

    def _propose_changes(self) -> None:
        tokens, self._change_requests = self._change_requests, []
        for token in tokens:
            pending = self._changes.get(token)
            if pending is None:
                continue
            try:
                pending.index = self.core.propose_membership(pending.change)
                pending.term = self.core.term
            except NotLeader as error:
                del self._changes[token]
                self._listener.membership_result(token, 0, str(error))
            except MembershipError as error:
                del self._changes[token]
                self._listener.membership_result(token, 0, str(error))

    def _changes_applied(self, committed: Sequence[Entry]) -> None:
        first, last = committed[0].index, committed[-1].index
        for token in [t for t, c in self._changes.items() if c.index and first <= c.index <= last]:
            pending = self._changes.pop(token)
            entry = committed[pending.index - first]
            if entry.term == pending.term:
                self._listener.membership_result(token, pending.index, "")
            else:
                self._listener.membership_result(
                    token, 0, f"the change {pending.change.describe()} was lost in a leader change: propose it again"
                )

    def _may_serve(self, read_index: int, applied: int) -> bool:
        return read_index <= applied

    def _check_leader(self) -> None:
        core = self.core
        if core.leader == self._known_leader:
            return
        self._known_leader = core.leader
        self._listener.leader_changed(core)
        if core.leader != NO_LEADER:
            # What went to the old leader may be lost: send it again (applied at most once).
            for write in self._writes.values():
                self._proposals.append(write.data)
            for context, read in self._reads.items():
                if read.index is None:
                    self._read_requests.append(context)
