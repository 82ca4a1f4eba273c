"""Async client library for the replichat gRPC API, with transparent failover between replicas.

Any replica serves any request (followers forward writes to the leader), so failover is
simply "try the next address". What makes retrying safe is the (client_id, request_seq) pair
every write carries: the replicated state remembers the newest answer per client_id, so a
write retried after a lost answer is applied once. Because the server keeps only the newest
request per client_id, writes that are in flight at the same time must not share a client_id
(the older one would be refused as stale); see _Lanes.

A Session (from `connect`) survives replica failures: it reconnects elsewhere with the same
session_id and drops deliveries it already yielded, so each message is shown exactly once.
"""
import asyncio
import logging
import uuid
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

import grpc

from replichat.chat.credentials import new_token
from replichat.client.credentials import PROCESS_CREDENTIALS, CredentialStore
from replichat.client.core import Failover, ReplicaRing, ResumableSession, Retry, Stop, call_with_failover, deleted_on_resume
from replichat.client.members import MEMBERS_TIMEOUT_S, MembersRefresh
from replichat.client.types import (  # noqa: F401 - re-exported: callers import them from here
    DEFAULT_ATTEMPT_TIMEOUT,
    DEFAULT_DEADLINE,
    STATUS_TIMEOUT,
    Capability,
    ChatApi,
    ChatSession,
    Event,
    ReplicaStatus,
)
from replichat.errors import OUTCOME_UNKNOWN, ChatError, Code, OutcomeUnknown
from replichat.proto import chat_pb2, chat_pb2_grpc

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024

CHANNEL_OPTIONS: List[Tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # A Connect stream may sit idle for hours; pings notice a replica that vanished without
    # closing the connection (power loss, partition), which otherwise looks like silence.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's default reconnect backoff grows to 2 minutes: a restarted replica would be
    # shunned long after it is back. Keep probing down replicas about once a second.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]

# Answers about the request itself: the same request gets the same answer anywhere.
# Anything else (UNAVAILABLE, a timeout, a dying connection, a replica's bug, an address that
# is not a replica at all) is about that replica: try the next one. Retrying is safe because
# a retried write keeps its (client_id, request_seq).
FINAL = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)

CODE_FOR_STATUS: Dict[grpc.StatusCode, Code] = {
    grpc.StatusCode.INVALID_ARGUMENT: Code.INVALID_ARGUMENT,
    grpc.StatusCode.ALREADY_EXISTS: Code.ALREADY_EXISTS,
    grpc.StatusCode.NOT_FOUND: Code.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: Code.STALE_REQUEST,
    grpc.StatusCode.UNAVAILABLE: Code.UNAVAILABLE,
    # A limit: too many failed logins, creates or streams (or a request over the size limit).
    grpc.StatusCode.RESOURCE_EXHAUSTED: Code.RATE_LIMITED,
    grpc.StatusCode.UNAUTHENTICATED: Code.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: Code.PERMISSION_DENIED,
}


def _chat_error(error: grpc.aio.AioRpcError, address: str) -> ChatError:
    """The ChatError the server meant; its one-line message is what a user sees."""
    status = error.code()
    code = CODE_FOR_STATUS.get(status)
    if code is not None:
        return ChatError(code, error.details() or status.name.lower())
    # Not a chat answer (only reached if FINAL grows): say which replica, for the operator.
    return ChatError(Code.UNAVAILABLE, f"{address} failed: {error.details() or status.name}")


def _describe(error: grpc.aio.AioRpcError, address: str) -> str:
    """One short clause for the give-up message; gRPC's connect failures are paragraphs."""
    details = error.details() or error.code().name
    if details.startswith("failed to connect"):
        reason = "connection refused" if "refused" in details else "cannot connect"
        return f"{address}: {reason}"
    return f"{address}: {details}"


class _Lanes:
    """Hands out client ids so that concurrent writes never make each other stale.

    The server remembers only the newest request_seq per client_id and refuses older ones.
    Two writes in flight under one id could be applied out of order, and the older one would
    be refused. So each in-flight write borrows a lane (its own client id) for its whole life,
    retries included; sequential use always gets lane 0, which is the client id itself.
    """

    def __init__(self, client_id: str) -> None:
        self._client_id = client_id
        self._idle: List[str] = []
        self._count = 0

    def acquire(self) -> str:
        if self._idle:
            return self._idle.pop()
        lane = self._client_id if self._count == 0 else f"{self._client_id}.{self._count}"
        self._count += 1
        return lane

    def release(self, lane: str) -> None:
        self._idle.append(lane)
        # Shortest last, so a client back to one request at a time uses lane 0 (the bare id).
        self._idle.sort(key=len, reverse=True)


def _channel_credentials(ca_file: Optional[str]) -> Optional[grpc.ChannelCredentials]:
    if ca_file is None:
        return None
    with open(ca_file, "rb") as f:
        return grpc.ssl_channel_credentials(root_certificates=f.read())


class ChatClient:
    """Talks to a replichat cluster over gRPC, failing over between `servers` transparently.

    Every write carries (client_id, request_seq); a write retried on another replica keeps
    its request_seq so it is applied once. Give up after `deadline` seconds without success.
    """

    capabilities: FrozenSet[Capability] = frozenset({Capability.STATUS})

    def __init__(
        self,
        servers: Sequence[str],
        *,
        client_id: Optional[str] = None,
        deadline: float = DEFAULT_DEADLINE,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        credentials: Optional[CredentialStore] = None,
        ca_file: Optional[str] = None,
    ) -> None:
        """credentials: where the tokens of users this client creates are kept and found
        (default: in memory, shared by this process's clients). ca_file: connect with TLS,
        verifying replicas against this CA (None: plaintext)."""
        self.ring = ReplicaRing(servers, deadline, attempt_timeout)
        self.credentials: CredentialStore = credentials if credentials is not None else PROCESS_CREDENTIALS
        self._channel_credentials = _channel_credentials(ca_file)
        # Per process by default: request_seq restarts at 1, so an id must not outlive us.
        self.client_id = client_id or uuid.uuid4().hex
        self._lanes = _Lanes(self.client_id)
        self._request_seq = 0
        self._channels: Dict[str, grpc.aio.Channel] = {}
        self._stubs: Dict[str, chat_pb2_grpc.ChatStub] = {}
        self._sessions: Set["Session"] = set()
        # Membership (replichat/server/membership_admin.py): the ring follows the cluster's members.
        self._members = MembersRefresh()

    @property
    def servers(self) -> List[str]:
        return self.ring.servers

    @property
    def deadline(self) -> float:
        return self.ring.deadline

    # -- plumbing shared with Session -------------------------------------------------

    def _next_request_seq(self) -> int:
        self._request_seq += 1
        return self._request_seq

    def _stub(self, address: str) -> chat_pb2_grpc.ChatStub:
        stub = self._stubs.get(address)
        if stub is None:
            if self._channel_credentials is None:
                channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.secure_channel(address, self._channel_credentials, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
            stub = self._stubs[address] = chat_pb2_grpc.ChatStub(channel)
        return stub

    async def _call(self, method: str, request: Any) -> Any:
        """One unary RPC with failover; `request` is sent unchanged on every attempt."""

        async def attempt(address: str, timeout: float) -> Any:
            try:
                response = await getattr(self._stub(address), method)(request, timeout=timeout)
            except grpc.aio.AioRpcError as error:
                if error.code() in FINAL:
                    raise _chat_error(error, address) from None
                self._members.mark_stale()
                raise Retry(address, _describe(error, address)) from None
            self._check_members(address)
            return response

        return await call_with_failover(self.ring, "could reach a quorum", attempt)

    async def _write(self, method: str, request: Any) -> Any:
        """A write: stamps (client_id, request_seq) once, then retries it as is."""
        lane = self._lanes.acquire()
        try:
            request.client_id = lane
            request.request_seq = self._next_request_seq()
            try:
                return await self._call(method, request)
            except ChatError as error:
                if error.code is not Code.UNAVAILABLE or isinstance(error, OutcomeUnknown):
                    raise
                # Some attempt may have reached a replica that proposed it: it can still apply.
                raise OutcomeUnknown(
                    f"{error.message}; {OUTCOME_UNKNOWN}: the write may or may not have been applied",
                    client_id=request.client_id, request_seq=request.request_seq,
                ) from None
        finally:
            self._lanes.release(lane)

    # -- the API -------------------------------------------------------------------

    async def create(self, name: str) -> str:
        """Creates user `name` with a fresh credential, which is then remembered in
        `credentials`; returns the name as the service stored it."""
        token = new_token()
        response = await self._write("CreateUser", chat_pb2.CreateUserRequest(name=name, credential=token))
        created = response.name or name
        self.credentials.put(created, token)
        return created

    async def delete(self, name: str) -> int:
        """Deletes user `name`; returns how many unread messages were dropped with it."""
        request = chat_pb2.DeleteUserRequest(name=name, credential=self.credentials.get(name))
        response = await self._write("DeleteUser", request)
        self.credentials.forget(name)
        return int(response.dropped_messages)

    async def list(self, pattern: str = "") -> List[str]:
        """Users whose name matches the regular expression `pattern` (search semantics)."""
        response = await self._call("ListUsers", chat_pb2.ListUsersRequest(pattern=pattern))
        return [str(name) for name in response.names]

    async def send(self, recipient: str, text: str, sender: str = "") -> int:
        """Sends `text`; returns its per-recipient sequence number once it is committed."""
        credential = self.credentials.get(sender) if sender else ""
        request = chat_pb2.SendMessageRequest(sender=sender, recipient=recipient, text=text, credential=credential)
        response = await self._write("SendMessage", request)
        return int(response.seq)

    async def ack(self, name: str, up_to_seq: int, session_id: str) -> None:
        """Removes `name`'s messages with seq <= up_to_seq from its mailbox."""
        request = chat_pb2.AckRequest(
            name=name, up_to_seq=up_to_seq, session_id=session_id, credential=self.credentials.get(name)
        )
        await self._write("Ack", request)

    async def connect(self, name: str) -> "Session":
        """Logs in as `name`; raises ChatError (e.g. NOT_FOUND) if that cannot start."""
        session = Session(self, name)
        await session._open()
        self._sessions.add(session)
        return session

    async def status_all(self, timeout: float = STATUS_TIMEOUT) -> List[ReplicaStatus]:
        """Every replica's own view, asked directly (no failover: the point is to see each)."""

        async def one(address: str) -> ReplicaStatus:
            try:
                response = await self._stub(address).Status(chat_pb2.StatusRequest(), timeout=timeout)
                return address, response, None
            except grpc.aio.AioRpcError as error:
                return address, None, error.details() or error.code().name

        return list(await asyncio.gather(*(one(address) for address in self.servers)))

    def _check_members(self, address: str) -> None:
        """Ask `address` (which just answered) for the members in the background, when due."""
        self._members.ask_if_due(lambda: self._learn_members(address))

    async def _learn_members(self, address: str) -> None:
        try:
            view = await self._stub(address).Members(chat_pb2.MembersRequest(), timeout=MEMBERS_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:  # a replica older than membership changes
                self._members.mark_unsupported()
            else:
                self._members.mark_stale()
            return
        addresses = [m.address for m in view.members]
        complete = bool(view.leader_id) and all(addresses)
        if self.ring.learn(addresses, complete):
            log.info("replicas now: %s (from the cluster's membership)", ", ".join(self.ring.servers))

    async def close(self) -> None:
        """Ends open sessions (flushing their acks) and closes every channel."""
        await self._members.close()
        for session in list(self._sessions):
            await session.close()
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> "ChatClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def _forget(self, session: "Session") -> None:
        self._sessions.discard(session)


class Session(ResumableSession):
    """A logged-in user: an async iterator of Connected, Delivery and SessionEnded events.

    A background task reads the Connect stream and, when it breaks or the replica shuts down,
    reconnects to the next replica with the same session_id (a resume, not a takeover).
    Deliveries at or below the last yielded seq are dropped, and only the first Connected is
    yielded, so a failover is invisible to the reader. Iteration stops after a final
    SessionEnded (TAKEN_OVER, USER_DELETED) or raises ChatError(UNAVAILABLE) when no replica
    answered within the client's deadline.
    """

    QUEUE_SIZE = 256  # read ahead this far; beyond it gRPC flow control pushes back

    def __init__(self, client: ChatClient, name: str) -> None:
        super().__init__(name, uuid.uuid4().hex, self.QUEUE_SIZE)
        self._client = client
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._opened: "asyncio.Future[None]" = loop.create_future()
        self._pump: Optional["asyncio.Task[None]"] = None
        self._connected_seen = False  # ever, on any stream: later Connected events are resumes
        self._stream_connected = False  # on the current stream

    async def _send_ack(self, target: int) -> bool:
        try:
            await self._client.ack(self.name, target, self.session_id)
        except ChatError as error:
            return self._ack_failed(target, error)
        return True

    # -- lifetime ------------------------------------------------------------------

    async def close(self) -> None:
        """Stops reading (the server sees the stream cancelled) and flushes pending acks."""
        pump = self._pump
        if pump is not None and not pump.done():
            pump.cancel()
            await asyncio.wait([pump])
        if not self._finished:
            try:  # wake a reader blocked on an empty queue; a non-empty one has no reader waiting
                self._events.put_nowait(Stop(None))
            except asyncio.QueueFull:
                pass
        self._finished = True
        await self.flush_acks()
        self._client._forget(self)

    async def _open(self) -> None:
        """Starts the stream and waits for its first Connected, so errors reach `connect`."""
        self._pump = self._loop.create_task(self._run())
        try:
            await asyncio.shield(self._opened)
        except BaseException:
            self._pump.cancel()
            await asyncio.wait([self._pump])
            raise

    async def _run(self) -> None:
        error: Optional[ChatError] = None
        try:
            await self._follow()
        except asyncio.CancelledError:  # close(): it wakes the reader itself
            if not self._opened.done():
                self._opened.cancel()
            raise
        except ChatError as failure:
            error = failure
        except Exception as failure:  # a bug: end the session visibly rather than hang
            log.exception("session for %s failed", self.name)
            error = ChatError(Code.UNAVAILABLE, f"session failed: {failure!r}")
        if not self._opened.done():
            self._opened.set_exception(error or ChatError(Code.UNAVAILABLE, "session ended before it started"))
        else:
            await self._events.put(Stop(error))

    async def _follow(self) -> None:
        """Reads Connect streams, replica after replica, until the session really ends."""
        client = self._client
        failover = Failover(client.ring, "could reach a quorum")
        lane = client._lanes.acquire()
        request = self._connect_request(lane)
        try:
            while True:
                address = client.ring.current
                call = client._stub(address).Connect(request)
                first_timeout = failover.attempt_timeout()
                self._stream_connected = False
                try:
                    if await self._relay(call, first_timeout):
                        return
                    problem = f"{address}: stream ended"
                except asyncio.TimeoutError:
                    problem = f"{address}: no answer within {first_timeout:g}s"
                except grpc.aio.AioRpcError as error:
                    code = error.code()
                    if self._connected_seen and code == grpc.StatusCode.NOT_FOUND:
                        # Deleted while we were failing over; say so the way a live session would.
                        await self._events.put(deleted_on_resume(error.details() or ""))
                        return
                    if code in FINAL:
                        raise _chat_error(error, address) from None
                    problem = _describe(error, address)
                finally:
                    call.cancel()
                if self._stream_connected:
                    # That stream worked for a while: the next one is a new request (a resume)
                    # with a fresh deadline, not a retry of the old one.
                    failover = Failover(client.ring, "could reach a quorum")
                    client._lanes.release(lane)
                    lane = client._lanes.acquire()
                    request = self._connect_request(lane)
                await failover.retry_after(address, problem)
        finally:
            client._lanes.release(lane)

    def _connect_request(self, lane: str) -> chat_pb2.ConnectRequest:
        return chat_pb2.ConnectRequest(
            name=self.name,
            session_id=self.session_id,
            credential=self._client.credentials.get(self.name),
            client_id=lane,
            request_seq=self._client._next_request_seq(),
        )

    async def _relay(self, call: Any, first_timeout: float) -> bool:
        """Forwards one stream's new events; True when the session is over for good."""
        while True:
            if self._stream_connected:
                event = await call.read()
            else:  # a replica that cannot serve us must not hold the session hostage
                event = await asyncio.wait_for(call.read(), first_timeout)
            if event is grpc.aio.EOF:
                return False
            kind = event.WhichOneof("event")
            if kind == "connected":
                self._stream_connected = True
                if not self._opened.done():
                    self._opened.set_result(None)
                if not self._connected_seen:
                    self._connected_seen = True
                    await self._events.put(event.connected)
            elif kind == "message":
                if self._is_new(event.message.seq):
                    await self._events.put(event.message)
            elif kind == "ended":
                if event.ended.reason == chat_pb2.SessionEnded.SHUTDOWN:
                    return False  # that replica is going away; resume on another
                await self._events.put(event.ended)
                return True
