"""The replica runtime: drives the Raft core, persists, sends, applies, and serves the chat API.

One task (`_run`) owns the core. Everything else — peer messages, proposals, read requests,
ticks — is queued and handed to the core between two Readies, so the core never changes while
a Ready is being persisted. Each turn of the loop:

    step queued input -> ready() -> fsync entries + hard state -> send messages (a leader
    sends while it persists) -> apply committed entries (one SQLite transaction)
    -> answer waiters -> advance()

Everything that arrived during one fsync is persisted by the next: group commit falls out of
the loop's shape. Where the blocking SQLite work runs, and why:
  * A leader fsyncs its log on a single-thread executor: that is I/O, during which its loop
    serves clients (and its appends are already on their way to the followers).
  * A follower fsyncs on the loop, unless the batch is large: its acknowledgement is what
    every write waits for, and the hop to a thread and back costs about 0.3 ms on top of a
    0.3-0.4 ms fsync.
  * Committed batches of one or two entries (what a write at concurrency 1 commits) are
    applied on the loop, for the same reason (0.3 ms hop, 0.1 ms apply); larger ones on the
    chat-state executor, so the loop keeps serving while they apply.
  * Reads of the chat state go through their own read-only connection: they see applied
    batches only, so they never race an apply on either thread.
"""
import asyncio
import concurrent.futures
import itertools
import logging
import os
import collections
import time
import uuid
from typing import Any, AsyncIterator, Callable, Deque, Dict, Hashable, List, Optional, Set, Tuple, TypeVar

from replichat import defaults
from replichat.chat.auth import Account, Authenticator, AuthLimits
from replichat.chat.names import normalize_name, quote, validate_text
from replichat.chat.search import compile_pattern, scan
from replichat.chat.state import Applied, ChatState, ChatStateReader, MessageQueued
from replichat.chat.state_check import LogBounds, prepare_state
from replichat.errors import ChatError, Code
from replichat.metrics.observer import NO_OBSERVER, RuntimeObserver
from replichat.proto import chat_pb2, command_pb2
from replichat.raft.core import Config, NotLeader, RaftCore, Role
from replichat.raft.log import RaftLog
from replichat.raft.messages import NO_LEADER, Message
from replichat.storage import RaftStorage
from replichat.transport import PeerTransport

log = logging.getLogger(__name__)
T = TypeVar("T")

_RESULT_ERRORS = {
    command_pb2.CommandResult.INVALID_ARGUMENT: Code.INVALID_ARGUMENT,
    command_pb2.CommandResult.ALREADY_EXISTS: Code.ALREADY_EXISTS,
    command_pb2.CommandResult.NOT_FOUND: Code.NOT_FOUND,
    command_pb2.CommandResult.STALE_REQUEST: Code.STALE_REQUEST,
    command_pb2.CommandResult.UNAUTHENTICATED: Code.UNAUTHENTICATED,
}
# Deliveries read from the state per wake-up of a connect stream.
STREAM_BATCH = 256
# `list` requests queued or running per replica (each may take up to search.SCAN_BUDGET_S).
MAX_PENDING_SEARCHES = 8
# Committed batches of at most this many entries are applied on the event loop (module doc).
INLINE_APPLY_MAX = 2
# A follower persists batches of at most this many entries on the event loop (module doc).
INLINE_PERSIST_MAX = 64


class NodeOptions:
    def __init__(
        self,
        tick_s: float = 0.05,
        election_ticks: int = 10,
        request_timeout_s: float = 8.0,
        retry_interval_s: float = 2.0,
        auth_enabled: bool = True,
        auth_limits: AuthLimits = AuthLimits(),
    ) -> None:
        self.tick_s = tick_s
        self.election_ticks = election_ticks
        # How long a write may wait for a quorum before the client is told "unavailable".
        self.request_timeout_s = request_timeout_s
        # How long to wait for a commit before proposing again (same request id, applied once).
        self.retry_interval_s = retry_interval_s
        # False only with --insecure-no-auth: the brief's open service (chat/auth.py).
        self.auth_enabled = auth_enabled
        self.auth_limits = auth_limits


class _Subscriber:
    """A connect stream waiting for its user's mailbox or session to change."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()


class _Pending:
    __slots__ = ("resend", "future", "deadline", "timer")

    def __init__(self, resend: Callable[[], None], future: "asyncio.Future[Any]", deadline: float) -> None:
        self.resend = resend
        self.future = future
        self.deadline = deadline
        self.timer: Optional[asyncio.TimerHandle] = None


class _PendingTable:
    """Requests (proposals or reads) waiting for their answer from the log. Each is sent again
    when the leader changes and every `retry_s`, and fails with UNAVAILABLE at its deadline.
    One future and one timer per request: no task per wait."""

    def __init__(self, retry_s: float, timeout_s: float, on_timeout: Callable[[], ChatError]) -> None:
        self._entries: Dict[Hashable, _Pending] = {}
        self._retry_s = retry_s
        self._timeout_s = timeout_s
        self._on_timeout = on_timeout

    def track(self, key: Hashable, resend: Callable[[], None]) -> "asyncio.Future[Any]":
        pending = self._entries.get(key)
        if pending is None or pending.future.done():
            loop = asyncio.get_event_loop()
            pending = _Pending(resend, loop.create_future(), loop.time() + self._timeout_s)
            self._entries[key] = pending
            resend()
            pending.timer = loop.call_later(self._retry_s, self._retry, key)
        return pending.future

    def _retry(self, key: Hashable) -> None:
        pending = self._entries.get(key)
        if pending is None:
            return
        if pending.future.done():  # the caller went away
            del self._entries[key]
            return
        loop = asyncio.get_event_loop()
        remaining = pending.deadline - loop.time()
        if remaining <= 0:
            del self._entries[key]
            pending.future.set_exception(self._on_timeout())
            return
        pending.resend()
        pending.timer = loop.call_later(min(self._retry_s, remaining), self._retry, key)

    def resolve(self, key: Hashable, result: Any) -> None:
        pending = self._entries.pop(key, None)
        if pending is not None:
            if pending.timer is not None:
                pending.timer.cancel()
            if not pending.future.done():
                pending.future.set_result(result)

    def resend_all(self) -> None:
        for pending in self._entries.values():
            pending.resend()

    def fail_all(self, error: ChatError) -> None:
        for pending in self._entries.values():
            if pending.timer is not None:
                pending.timer.cancel()
            if not pending.future.done():
                pending.future.set_exception(error)
        self._entries.clear()


class Node:
    def __init__(
        self,
        node_id: int,
        cluster: Dict[int, str],
        data_dir: str,
        options: Optional[NodeOptions] = None,
        peers: Optional[Dict[int, str]] = None,
    ) -> None:
        """`cluster`: every replica's gRPC address; `peers`: every replica's Raft address
        (default: derived from `cluster`, see defaults.raft_addresses)."""
        self.id = node_id
        self.cluster = dict(cluster)
        self.address = cluster[node_id]
        self.wire_address = ""
        self.data_dir = data_dir
        self.options = options or NodeOptions()
        self._instance = uuid.uuid4().hex
        self._request_numbers = itertools.count(1)
        self._read_numbers = itertools.count(1)
        self._inbox: Deque[Message] = collections.deque()
        self._proposals: List[bytes] = []
        self._read_requests: List[bytes] = []
        self._pending_ticks = 0
        self._wake = asyncio.Event()
        self._leader_changed = asyncio.Event()
        self._writes = _PendingTable(
            self.options.retry_interval_s, self.options.request_timeout_s, lambda: self._unavailable("the write"))
        self._reads = _PendingTable(
            self.options.retry_interval_s, self.options.request_timeout_s, lambda: self._unavailable("the read"))
        self._applied_waiters: List[Tuple[int, "asyncio.Future[None]"]] = []
        self._subscribers: Dict[str, Set[_Subscriber]] = collections.defaultdict(set)
        self._tasks: List["asyncio.Task[None]"] = []
        self._stopping = False
        self._failure: Optional[BaseException] = None
        self.stopped = asyncio.Event()
        self._disk = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"raft-log-{node_id}")
        self._sm = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"chat-state-{node_id}")
        self._search = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"list-{node_id}")
        self._searches = 0
        self.peers = dict(peers) if peers is not None else defaults.raft_addresses(cluster)
        self.transport = PeerTransport(node_id, self.peers)
        self._storage: Optional[RaftStorage] = None
        self._state: Optional[ChatState] = None
        self._reader: Optional[ChatStateReader] = None
        self.core: Optional[RaftCore] = None
        self.applied_index = 0
        self._known_leader = NO_LEADER
        self._transfer_to = NO_LEADER
        # Metrics (--metrics) watch through this; the default does nothing.
        self.observer: RuntimeObserver = NO_OBSERVER
        self._auth = Authenticator(
            self._account_of, self._catch_up, enabled=self.options.auth_enabled, limits=self.options.auth_limits
        )

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        self._storage = await self._on_disk(RaftStorage, os.path.join(self.data_dir, "raft.db"))
        hard_state, entries = await self._on_disk(self._storage.load)
        state_path = os.path.join(self.data_dir, "state.db")
        # Checked before anything serves from it: a damaged state is rebuilt or the start refused.
        outcome = await self._on_state(prepare_state, state_path, LogBounds(0, len(entries)), None)
        if outcome != "ok":
            log.warning("replica %d chat state: %s", self.id, outcome)
        self._state = await self._on_state(ChatState, state_path)
        self._reader = ChatStateReader(state_path)
        applied = self._state.last_applied
        # Entries the state machine applied were committed even if the hard state's commit
        # index (written lazily) lags behind.
        committed = max(hard_state.commit, applied)
        config = Config(
            id=self.id,
            voters=tuple(sorted(self.cluster)),
            election_ticks=self.options.election_ticks,
            seed=int.from_bytes(os.urandom(4), "big"),
        )
        self.core = RaftCore(config, RaftLog(entries, committed, applied), hard_state)
        self.applied_index = applied
        log.info(
            "replica %d starting: term %d, %d log entries, applied %d, peers %s",
            self.id, hard_state.term, len(entries), applied,
            ", ".join(f"{i}={a}" for i, a in sorted(self.peers.items()) if i != self.id) or "none",
        )
        self.transport.start()
        self._tasks = [asyncio.ensure_future(self._run()), asyncio.ensure_future(self._ticker())]

    async def stop(self, transfer_leadership: bool = True) -> None:
        """Stop serving. A leader first hands leadership to a caught-up peer so the cluster
        does not wait an election timeout to notice it is gone."""
        if self._stopping:
            return
        if transfer_leadership and self.core is not None and self.core.role is Role.LEADER and self.core.peers:
            progress = self.core.progress
            self._transfer_to = max(progress, key=lambda peer: progress[peer].match)
            log.info("replica %d handing leadership to replica %d before stopping", self.id, self._transfer_to)
            self._wake.set()
            deadline = time.monotonic() + self.options.tick_s * self.options.election_ticks
            while self.core.role is Role.LEADER and time.monotonic() < deadline:
                await self._next_leader_change(deadline - time.monotonic())
        self._stopping = True
        for subscribers in self._subscribers.values():
            for subscriber in subscribers:
                subscriber.changed.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self.transport.close()
        self._fail_waiters(ChatError(Code.UNAVAILABLE, f"replica {self.id} is shutting down"))
        if self._storage is not None:
            await self._on_disk(self._storage.close)
        if self._reader is not None:
            self._reader.close()
        if self._state is not None:
            await self._on_state(self._state.close)
        self._disk.shutdown()
        self._sm.shutdown()
        self._search.shutdown()
        self._auth.close()
        self.stopped.set()

    @property
    def failure(self) -> Optional[BaseException]:
        return self._failure

    def deliver(self, messages: List[Message]) -> None:
        """Peer messages from the transport; stepped by the loop."""
        if not self._stopping:
            self._inbox.extend(messages)
            self._wake.set()

    # ----------------------------------------------------------------- the loop

    async def _ticker(self) -> None:
        interval = self.options.tick_s
        next_tick = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            next_tick += interval
            # After a stall (say SIGSTOP), do not fire a burst of ticks that would start an
            # election at once: one tick per wake-up.
            next_tick = max(next_tick, time.monotonic())
            self._pending_ticks += 1
            self._wake.set()

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._feed_core()
                await self._process_ready()
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            # Continuing after a failed fsync or apply could corrupt state: stop loudly.
            self._failure = error
            log.critical("replica %d stopping after an unrecoverable error", self.id, exc_info=True)
            self.stopped.set()
            raise

    def _feed_core(self) -> None:
        core = self.core
        assert core is not None
        while self._inbox:
            core.step(self._inbox.popleft())
        if self._proposals:
            proposals, self._proposals = self._proposals, []
            try:
                core.propose(proposals)
                self.observer.proposed(len(proposals))
            except NotLeader:
                pass  # the proposers retry once a leader is known
        if self._read_requests:
            reads, self._read_requests = self._read_requests, []
            for context in reads:
                try:
                    core.read_index(context)
                except NotLeader:
                    pass
        while self._pending_ticks:
            self._pending_ticks -= 1
            core.tick()
        if self._transfer_to != NO_LEADER:
            core.transfer_leadership(self._transfer_to)
            self._transfer_to = NO_LEADER

    async def _process_ready(self) -> None:
        core = self.core
        assert core is not None and self._storage is not None and self._state is not None
        while core.has_ready():
            ready = core.ready()
            if ready.send_before_persist:
                self.transport.send(ready.messages)
            if ready.entries or ready.hard_state is not None:
                started = time.perf_counter()
                if not ready.send_before_persist and len(ready.entries) <= INLINE_PERSIST_MAX:
                    # A follower: nothing else it does is as urgent as its acknowledgement.
                    self._storage.save(ready.hard_state, ready.entries)
                else:
                    await self._on_disk(self._storage.save, ready.hard_state, ready.entries)
                self.observer.persisted(time.perf_counter() - started, len(ready.entries))
            if not ready.send_before_persist:
                self.transport.send(ready.messages)
            if ready.committed:
                items = [(e.index, e.data) for e in ready.committed]
                started = time.perf_counter()
                if len(items) <= INLINE_APPLY_MAX:
                    applied = self._state.apply_batch(items)
                else:
                    applied = await self._on_state(self._state.apply_batch, items)
                self.observer.applied(time.perf_counter() - started, applied)
                self._after_apply(applied)
            for read in ready.read_states:
                self._reads.resolve(read.context, read.index)
            core.advance(ready)
            # Input that arrived during the awaits above joins the next Ready.
            self._feed_core()
        if core.leader != self._known_leader:
            self._known_leader = core.leader
            self._announce_leader(core)
        self.observer.raft_state(core.role.value, core.term, core.leader)

    def _announce_leader(self, core: RaftCore) -> None:
        if core.role is Role.LEADER:
            log.info("replica %d is the leader for term %d", self.id, core.term)
        elif core.leader != NO_LEADER:
            log.info("replica %d follows leader %d in term %d", self.id, core.leader, core.term)
        else:
            log.info("replica %d has no leader (term %d, %s)", self.id, core.term, core.role.value)
        self._leader_changed.set()
        self._leader_changed = asyncio.Event()
        if core.leader != NO_LEADER:
            # What went to the old leader may be lost: send it again (applied at most once).
            self._writes.resend_all()
            self._reads.resend_all()

    def _after_apply(self, applied: List[Applied]) -> None:
        for item in applied:
            self.applied_index = item.index
            op = item.command.WhichOneof("op") if item.command is not None else None
            if op is not None:
                request = getattr(item.command, op)
                self._writes.resolve((item.command.principal, request.client_id, request.request_seq), item)
            for event in item.events:
                user = event.delivery.recipient if isinstance(event, MessageQueued) else event.user
                for subscriber in self._subscribers.get(user, ()):
                    subscriber.changed.set()
        still_waiting = []
        for index, future in self._applied_waiters:
            if index <= self.applied_index:
                if not future.done():
                    future.set_result(None)
            else:
                still_waiting.append((index, future))
        self._applied_waiters = still_waiting

    def _fail_waiters(self, error: ChatError) -> None:
        self._writes.fail_all(error)
        self._reads.fail_all(error)

    async def _on_disk(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_event_loop().run_in_executor(self._disk, fn, *args)

    async def _on_state(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_event_loop().run_in_executor(self._sm, fn, *args)

    # ----------------------------------------------------------------- writes and reads

    async def _next_leader_change(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._leader_changed.wait(), max(0.0, timeout))
        except asyncio.TimeoutError:
            pass

    def _unavailable(self, what: str) -> ChatError:
        assert self.core is not None
        leader = self.core.leader
        return ChatError(
            Code.UNAVAILABLE,
            f"no quorum: {what} did not complete within {self.options.request_timeout_s:g}s "
            f"(replica {self.id} sees {'leader ' + str(leader) if leader else 'no leader'}, term {self.core.term})",
        )

    async def _replicate(self, command: command_pb2.Command) -> Applied:
        """Propose a command and wait until this replica has applied it. Re-proposed on a
        leader change and every retry_interval (the client id and request number make a
        repeated command a no-op); fails with UNAVAILABLE after request_timeout."""
        if self._stopping:
            raise ChatError(Code.UNAVAILABLE, f"replica {self.id} is shutting down")
        request = getattr(command, command.WhichOneof("op"))
        if not request.client_id:
            # No client identity: give it one so the answer can find its way back here.
            request.client_id = f"{self._instance}-anon"
            request.request_seq = next(self._request_numbers)
        command.timestamp_ms = int(time.time() * 1000)
        data = command.SerializeToString()
        # Keyed like the state's exactly-once table: another user's request with the same
        # (client_id, request_seq) is a different request.
        key = (command.principal, request.client_id, request.request_seq)
        started = time.perf_counter()
        applied = await self._writes.track(key, lambda: self._propose(data))
        self.observer.write_committed(time.perf_counter() - started)
        return applied

    def _propose(self, data: bytes) -> None:
        self._proposals.append(data)
        self._wake.set()

    async def _write(self, command: command_pb2.Command) -> command_pb2.CommandResult:
        applied = await self._replicate(command)
        result = applied.result
        assert result is not None
        if result.code != command_pb2.CommandResult.OK:
            raise ChatError(_RESULT_ERRORS[result.code], result.error)
        return result

    async def _linearizable_index(self) -> int:
        """ReadIndex: an index such that state applied up to it reflects every write
        acknowledged before this call."""
        context = f"{self._instance}:{next(self._read_numbers)}".encode()
        return await self._reads.track(context, lambda: self._request_read(context))

    def _request_read(self, context: bytes) -> None:
        self._read_requests.append(context)
        self._wake.set()

    async def _wait_applied(self, index: int) -> None:
        if index <= self.applied_index:
            return
        future: "asyncio.Future[None]" = asyncio.get_event_loop().create_future()
        self._applied_waiters.append((index, future))
        await future

    # ----------------------------------------------------------------- credentials

    def _account_of(self, name: str) -> Optional[Account]:
        assert self._reader is not None
        account = self._reader.account_of(name)
        return None if account is None else Account(*account)

    async def _catch_up(self) -> None:
        await self._wait_applied(await self._linearizable_index())

    async def _stamped(self, command: command_pb2.Command, name: str, token: str, action: str) -> command_pb2.Command:
        """`command` (whose request no longer holds `token`) with its verified principal."""
        await self._auth.stamp(command, name, token, action)
        return command

    # ----------------------------------------------------------------- ChatBackend
    # Each request's credential is taken out before the command is built: it is checked
    # here (chat/auth.py) and never enters the log.

    async def create_user(self, request: chat_pb2.CreateUserRequest) -> chat_pb2.CreateUserResponse:
        request.name = normalize_name(request.name)
        token, request.credential = request.credential, ""
        credential_hash = await self._auth.new_credential(token)
        result = await self._write(command_pb2.Command(create=request, credential_hash=credential_hash))
        self._auth.created(result.name, token, credential_hash)
        return chat_pb2.CreateUserResponse(name=result.name)

    async def delete_user(self, request: chat_pb2.DeleteUserRequest) -> chat_pb2.DeleteUserResponse:
        name = request.name = normalize_name(request.name)
        token, request.credential = request.credential, ""
        command = await self._stamped(command_pb2.Command(delete=request), name, token, f"delete {name}")
        result = await self._write(command)
        return chat_pb2.DeleteUserResponse(dropped_messages=result.count)

    async def send_message(self, request: chat_pb2.SendMessageRequest) -> chat_pb2.SendMessageResponse:
        request.recipient = normalize_name(request.recipient)
        if request.sender:
            request.sender = normalize_name(request.sender)
        validate_text(request.text)
        token, request.credential = request.credential, ""
        command = command_pb2.Command(send=request)
        if request.sender:
            await self._stamped(command, request.sender, token, f"send as {request.sender}")
        # No sender: an anonymous message, delivered with an empty sender, which every client
        # shows as "(anonymous)" (a name cannot contain parentheses, so nobody can pose as it).
        result = await self._write(command)
        return chat_pb2.SendMessageResponse(seq=result.seq)

    async def ack(self, request: chat_pb2.AckRequest) -> None:
        name = request.name = normalize_name(request.name)
        token, request.credential = request.credential, ""
        command = await self._stamped(command_pb2.Command(ack=request), name, token, f"ack for {name}")
        await self._check_current_session(name, request.session_id)
        await self._write(command)

    async def authenticate(self, name: str, credential: str) -> str:
        name = normalize_name(name)
        if await self._auth.authenticate(name, credential, f"auth {name}") is None:
            raise ChatError(Code.NOT_FOUND, f"no such user {quote(name)}")
        return name

    async def _check_current_session(self, name: str, session_id: str) -> None:
        """An ack must name the session its user's connect opened (the newest)."""
        assert self._reader is not None
        if self._reader.session_of(name) == session_id:
            return
        await self._catch_up()  # the connect may have been applied elsewhere a moment ago
        current = self._reader.session_of(name)
        if current is None:
            raise ChatError(Code.NOT_FOUND, f"no such user {quote(name)}")
        if current != session_id:
            raise ChatError(
                Code.INVALID_ARGUMENT,
                f"ack for {name} names session {quote(session_id)}, not {name}'s current session",
            )

    async def list_users(self, pattern: str) -> List[str]:
        matcher = compile_pattern(pattern)  # a bad pattern fails before any cluster work
        index = await self._linearizable_index()
        await self._wait_applied(index)
        assert self._reader is not None
        # Off the loop: the user table may be large. (The reader connection is safe to share:
        # SQLite serializes its use, and it holds no transaction between statements.)
        # Reading the names and matching them run on their own thread, with a time budget
        # (chat/search.py): a costly pattern delays neither the loop nor applying the log.
        if self._searches >= MAX_PENDING_SEARCHES:
            raise ChatError(Code.RATE_LIMITED, "too many list requests in progress on this replica; try again shortly")
        self._searches += 1
        reader = self._reader
        try:
            return await asyncio.get_event_loop().run_in_executor(
                self._search, lambda: scan(reader.names(), matcher)
            )
        finally:
            self._searches -= 1

    async def connect(self, request: chat_pb2.ConnectRequest) -> AsyncIterator[chat_pb2.ServerEvent]:
        name = request.name = normalize_name(request.name)
        if not request.session_id:
            request.session_id = uuid.uuid4().hex
        token, request.credential = request.credential, ""
        command = await self._stamped(command_pb2.Command(connect=request), name, token, f"connect {name}")
        subscriber = _Subscriber()
        self._subscribers[name].add(subscriber)
        opened = False
        try:
            result = await self._write(command)
            self.observer.session_opened()
            opened = True
            yield chat_pb2.ServerEvent(connected=chat_pb2.Connected(name=name, queued=result.count))
            last_seq = 0
            while True:
                subscriber.changed.clear()
                if self._stopping:
                    yield _ended(chat_pb2.SessionEnded.SHUTDOWN, f"replica {self.id} is shutting down; reconnect elsewhere")
                    return
                session, deliveries = self._poll_mailbox(name, last_seq)
                for delivery in deliveries:
                    yield chat_pb2.ServerEvent(message=delivery)
                    last_seq = delivery.seq
                    self.observer.delivered(1)
                if session is None:
                    yield _ended(chat_pb2.SessionEnded.USER_DELETED, f"user {name} was deleted")
                    return
                if session != request.session_id:
                    yield _ended(chat_pb2.SessionEnded.TAKEN_OVER, f"a newer connect for {name} took over this session")
                    return
                if len(deliveries) < STREAM_BATCH:
                    await subscriber.changed.wait()
        finally:
            if opened:
                self.observer.session_closed()
            self._subscribers[name].discard(subscriber)
            if not self._subscribers[name]:
                del self._subscribers[name]

    def _poll_mailbox(self, name: str, after_seq: int) -> Tuple[Optional[str], List[chat_pb2.Delivery]]:
        """The user's session (None: user gone) and the next deliveries, as last applied."""
        reader = self._reader
        assert reader is not None
        if not reader.user_exists(name):
            return None, []
        return reader.session_of(name) or "", reader.pending(name, after_seq, STREAM_BATCH)

    def status(self) -> chat_pb2.StatusResponse:
        core = self.core
        assert core is not None
        return chat_pb2.StatusResponse(
            id=self.id,
            role=core.role.value,
            term=core.term,
            leader_id=core.leader,
            commit_index=core.commit_index,
            applied_index=self.applied_index,
            last_index=core.log.last_index,
            peers=[
                chat_pb2.PeerProgress(id=peer, match_index=pr.match, next_index=pr.next)
                for peer, pr in sorted(core.progress.items())
            ],
            address=self.address,
            wire_address=self.wire_address,
        )


def _ended(reason: "chat_pb2.SessionEnded.Reason", detail: str) -> chat_pb2.ServerEvent:
    return chat_pb2.ServerEvent(ended=chat_pb2.SessionEnded(reason=reason, detail=detail))
