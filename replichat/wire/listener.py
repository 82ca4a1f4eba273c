"""Serves the seed's wire protocol on a TCP port, in front of a ChatBackend.

The same service as the gRPC API, for clients that speak the seed's byte protocol. Each
connection is one task reading frames and answering them in order; a `connect` adds one
task pushing the session's events. Both write through one lock, so frames never interleave
mid-message. A connection's trouble (bad bytes, a stalled or vanished peer) ends at most
that connection: the other connections and the replica's event loop never wait on it.
"""
import asyncio
import logging
import unicodedata
import ssl
import uuid
from typing import AsyncIterator, Dict, Optional

from replichat.api.backend import ChatBackend
from replichat.api.validated import ValidatedBackend
from replichat.chat.auth import CLIENT_ADDRESS
from replichat.chat.credentials import new_token
from replichat.errors import ChatError, Code
from replichat.proto import chat_pb2
from replichat.wire import codec
from replichat.wire.codec import FRAME_SIZE, Direction, Reassembler, WireError

_log = logging.getLogger(__name__)

# A client waiting for messages pings (the client does, every minute); a connection that
# sends nothing for this long is gone or forgotten, and holds a slot of max_connections.
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_MAX_CONNECTIONS = 1000
# How long a peer may leave written frames unread (the socket buffers full) before it is
# dropped; without it, a client that never reads would make the replica buffer its
# messages without bound.
DEFAULT_WRITE_TIMEOUT = 10.0
# A client that connects but does not finish the TLS handshake holds a connection slot no longer.
TLS_HANDSHAKE_TIMEOUT_S = 10.0
# Once a frame has begun, the rest of its 1024 bytes must arrive within this: a client that
# trickles a partial frame (slowloris) holds a connection slot for seconds, not minutes.
DEFAULT_FRAME_TIMEOUT = 5.0
# Connections from one client address: one address cannot take every slot of max_connections.
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 64

_REASONS: Dict[int, str] = {
    chat_pb2.SessionEnded.TAKEN_OVER: "taken_over",
    chat_pb2.SessionEnded.USER_DELETED: "user_deleted",
    chat_pb2.SessionEnded.SHUTDOWN: "shutdown",
}


class _Dropped(ConnectionError):
    """We gave up on the peer (it stopped reading); the transport is already aborted."""


def error_frame(exc: ChatError) -> codec.Error:
    return codec.Error(exc.code.name.lower(), exc.message)


def event_message(event: chat_pb2.ServerEvent) -> Optional[codec.Response]:
    """The wire form of a session event; None for an event kind this version does not know."""
    kind = event.WhichOneof("event")
    if kind == "connected":
        return codec.Connected(event.connected.name, event.connected.queued)
    if kind == "message":
        m = event.message
        return codec.Delivery(m.recipient, m.seq, m.sender, m.sent_at_ms, m.text)
    if kind == "ended":
        return codec.Ended(_REASONS.get(event.ended.reason, "unspecified"), event.ended.detail)
    return None


def cluster_message(view: chat_pb2.MembersResponse) -> codec.Cluster:
    """The wire form of a replica's membership view: each member's id and wire address ("" when
    this replica does not know it), and the leader when it is known and a member."""
    members = tuple(sorted((m.id, m.wire_address) for m in view.members))
    leader = view.leader_id if any(rid == view.leader_id for rid, _ in members) else 0
    return codec.Cluster(leader, members)


async def _aclose(events: AsyncIterator[chat_pb2.ServerEvent]) -> None:
    """Let the backend release the session now rather than when the iterator is collected."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


class _Connection:
    """One client connection: its request ids, its identity and its session."""

    def __init__(
        self,
        backend: ChatBackend,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        idle_timeout: float,
        write_timeout: float,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
    ) -> None:
        self._backend = backend
        self._reader = reader
        self._writer = writer
        self._idle_timeout = idle_timeout
        self._write_timeout = write_timeout
        self._frame_timeout = frame_timeout
        # A wire connection that dies takes its in-flight request with it, so the pair
        # (connection id, counter) is a sufficient exactly-once key.
        self._client_id = uuid.uuid4().hex
        self._request_seq = 0
        self._session_id = uuid.uuid4().hex
        # Who the connection is logged in as (`send` is from): the user it last created,
        # authenticated or connected as, and that user's credential ('' if none was given).
        self._acting_as = ""
        self._credential = ""
        self._write_lock = asyncio.Lock()
        self._session: Optional["asyncio.Future[None]"] = None
        self._reassembler = Reassembler(Direction.REQUEST)

    async def serve(self) -> None:
        peer = self._writer.get_extra_info("peername")
        CLIENT_ADDRESS.set(str(peer[0]) if isinstance(peer, tuple) and peer else "")
        try:
            while True:
                frame = await self._read_frame()
                if frame is None:
                    return
                try:
                    request = self._reassembler.push(frame)
                except WireError as exc:
                    await self._send(codec.Error(Code.INVALID_ARGUMENT.name.lower(), f"bad request: {exc}"))
                    continue
                if request is not None:
                    await self._handle(request)  # type: ignore[arg-type]
        except ConnectionError:
            pass
        finally:
            await self._end_session()
            await close_writer(self._writer, self._write_timeout)

    async def _read_frame(self) -> Optional[bytes]:
        """The next frame, or None at EOF (a partial frame is dropped), after the idle timeout
        without its first byte, or when the rest of a begun frame takes longer than the
        frame timeout."""
        try:
            first = await asyncio.wait_for(self._reader.readexactly(1), self._idle_timeout)
        except asyncio.IncompleteReadError:
            return None
        except asyncio.TimeoutError:
            _log.debug("wire connection idle for %.1fs: closing", self._idle_timeout)
            return None
        try:
            return first + await asyncio.wait_for(self._reader.readexactly(FRAME_SIZE - 1), self._frame_timeout)
        except asyncio.IncompleteReadError:
            return None
        except asyncio.TimeoutError:
            _log.info("wire connection from %s left a frame incomplete for %.1fs: closing",
                      CLIENT_ADDRESS.get() or "an unknown address", self._frame_timeout)
            return None

    async def _send(self, message: codec.Response) -> None:
        try:
            data = codec.encode(message)
        except WireError as exc:  # e.g. a `users` answer past the response size limit
            data = codec.encode(codec.Error(Code.INVALID_ARGUMENT.name.lower(), f"cannot answer: {exc}"))
        async with self._write_lock:
            self._writer.write(data)
            try:
                await asyncio.wait_for(self._writer.drain(), self._write_timeout)
            except asyncio.TimeoutError:
                self._writer.transport.abort()
                raise _Dropped(f"peer left its socket unread for {self._write_timeout}s") from None

    def _next_seq(self) -> int:
        self._request_seq += 1
        return self._request_seq

    async def _handle(self, request: codec.Request) -> None:
        try:
            response = await self._call(request)
        except ChatError as exc:
            if exc.code is Code.UNAUTHENTICATED and not self._credential:
                exc = ChatError(exc.code, f"{exc.message}; log in first with `auth NAME,CREDENTIAL`")
            response = error_frame(exc)
        if response is not None:
            await self._send(response)

    async def _call(self, request: codec.Request) -> Optional[codec.Response]:
        """Answer one request; None when the answer was already written (connect)."""
        backend = self._backend
        client_id = self._client_id
        if isinstance(request, codec.Send):
            sent = await backend.send_message(
                chat_pb2.SendMessageRequest(
                    sender=self._acting_as,
                    credential=self._credential,
                    recipient=request.recipient,
                    text=request.text,
                    client_id=client_id,
                    request_seq=self._next_seq(),
                )
            )
            return codec.Sent(request.recipient, sent.seq)
        if isinstance(request, codec.Ack):
            await backend.ack(
                chat_pb2.AckRequest(
                    name=request.name,
                    up_to_seq=request.up_to_seq,
                    session_id=self._session_id,
                    credential=self._credential_for(request.name),
                    client_id=client_id,
                    request_seq=self._next_seq(),
                )
            )
            return codec.Acked(request.name, request.up_to_seq)
        if isinstance(request, codec.Connect):
            return await self._connect(request)
        if isinstance(request, codec.ListUsers):
            return codec.Users(tuple(await backend.list_users(request.pattern)))
        if isinstance(request, codec.Create):
            # A client that brings no credential (one written from the brief) gets one made
            # here, in the answer: it is the only way to log in as the new user later.
            made = "" if request.credential else new_token()
            credential = request.credential or made
            created = await backend.create_user(
                chat_pb2.CreateUserRequest(
                    name=request.name, credential=credential, client_id=client_id, request_seq=self._next_seq()
                )
            )
            self._acting_as, self._credential = created.name or request.name, credential
            return codec.Created(self._acting_as, made)
        if isinstance(request, codec.Auth):
            name = await backend.authenticate(request.name, request.credential)
            self._acting_as, self._credential = name, request.credential
            return codec.Authed(name)
        if isinstance(request, codec.Delete):
            deleted = await backend.delete_user(
                chat_pb2.DeleteUserRequest(
                    name=request.name,
                    credential=self._credential_for(request.name),
                    client_id=client_id,
                    request_seq=self._next_seq(),
                )
            )
            if request.name == self._acting_as:
                self._acting_as, self._credential = "", ""
            return codec.Deleted(request.name, deleted.dropped_messages)
        if isinstance(request, codec.Ping):
            return codec.Pong()
        if isinstance(request, codec.Members):
            members = getattr(backend, "members", None)
            if members is None:
                # A backend with no membership (a service without Raft, as in tests) answers as
                # a server older than the request: a client then keeps its own list.
                raise ChatError(Code.INVALID_ARGUMENT, "bad request: this server does not serve 'members'")
            return cluster_message(members())
        raise AssertionError(f"unhandled request {request!r}")  # the codec decodes nothing else

    def _credential_for(self, name: str) -> str:
        """The connection's credential if it is logged in as `name`, else none."""
        if self._acting_as and unicodedata.normalize("NFC", name) == unicodedata.normalize("NFC", self._acting_as):
            return self._credential
        return ""

    async def _connect(self, request: codec.Connect) -> Optional[codec.Response]:
        """Answer with the session's first event, then push the rest from another task.

        The Connected frame is written before the pushing task exists, so a client always
        reads it before the first pushed message. One session per connection: a new connect
        ends the previous one.
        """
        await self._end_session()
        events = self._backend.connect(
            chat_pb2.ConnectRequest(
                name=request.name,
                credential=self._credential_for(request.name),
                session_id=self._session_id,
                client_id=self._client_id,
                request_seq=self._next_seq(),
            )
        )
        try:
            first = await events.__anext__()
        except StopAsyncIteration:
            return codec.Error(Code.UNAVAILABLE.name.lower(), "the session ended before it started")
        except ChatError:
            await _aclose(events)
            raise
        message = event_message(first)
        if not isinstance(message, codec.Connected):
            await _aclose(events)
            return codec.Error(Code.UNAVAILABLE.name.lower(), "the session ended before it started")
        if self._credential_for(message.name) == "":
            self._credential = ""  # connected without one (--insecure-no-auth)
        self._acting_as = message.name
        try:
            await self._send(message)
        except ConnectionError:
            await _aclose(events)
            raise
        self._session = asyncio.ensure_future(self._push(events))
        return None

    async def _push(self, events: AsyncIterator[chat_pb2.ServerEvent]) -> None:
        try:
            try:
                async for event in events:
                    message = event_message(event)
                    if message is None:
                        continue
                    await self._send(message)
                    if isinstance(message, codec.Ended):
                        return
            except ChatError as exc:  # e.g. the replica lost its quorum mid-session
                await self._send(codec.Ended("unspecified", f"{exc.code.value}: {exc.message}"))
        except ConnectionError:
            # The reading task notices the aborted or lost transport and ends the connection.
            self._writer.transport.abort()
        finally:
            await _aclose(events)

    async def _end_session(self) -> None:
        task, self._session = self._session, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            _log.error("wire session task failed", exc_info=task.exception())


async def close_writer(writer: asyncio.StreamWriter, timeout: float) -> None:
    """Close politely (flushing what is buffered), but not for longer than `timeout`."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), timeout)
    except asyncio.TimeoutError:
        writer.transport.abort()
    except ConnectionError:
        pass


class WireListener:
    """A running wire-protocol server; `close()` ends it and all its connections."""

    def __init__(
        self,
        backend: ChatBackend,
        idle_timeout: float,
        max_connections: int,
        write_timeout: float,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        max_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    ) -> None:
        # Every request's fields are bounded before the backend proposes anything.
        self._backend = ValidatedBackend(backend)
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._write_timeout = write_timeout
        self._frame_timeout = frame_timeout
        self._max_per_address = max_per_address
        self._per_address: Dict[str, int] = {}
        self._server: Optional["asyncio.base_events.Server"] = None
        self._connections: Dict["asyncio.Task[None]", asyncio.StreamWriter] = {}
        self._closing = False

    @property
    def port(self) -> int:
        """The bound port (the one the OS chose when asked for port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    async def _start(self, host: str, port: int, ssl_context: Optional[ssl.SSLContext] = None) -> None:
        extra = {"ssl": ssl_context, "ssl_handshake_timeout": TLS_HANDSHAKE_TIMEOUT_S} if ssl_context else {}
        self._server = await asyncio.start_server(self._serve, host, port, **extra)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if self._closing or len(self._connections) >= self._max_connections:
            await self._reject(writer)
            return
        if self._per_address.get(address, 0) >= self._max_per_address:
            await self._reject(writer, f"too many connections from {address} (at most {self._max_per_address})")
            return
        self._connections[task] = writer
        self._per_address[address] = self._per_address.get(address, 0) + 1
        try:
            await _Connection(
                self._backend, reader, writer, self._idle_timeout, self._write_timeout, self._frame_timeout
            ).serve()
        except asyncio.CancelledError:
            # close() cancelled us and the connection is closed: end normally, since asyncio's
            # stream callback on Python 3.11 reports a cancelled handler as an error.
            if not self._closing:
                raise
        finally:
            self._connections.pop(task, None)
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]

    async def _reject(self, writer: asyncio.StreamWriter, why: str = "") -> None:
        if not why:
            why = "shutting down" if self._closing else f"too many connections (at most {self._max_connections})"
        writer.write(codec.encode(codec.Error(Code.UNAVAILABLE.name.lower(), f"{why}; try again later")))
        try:
            await asyncio.wait_for(writer.drain(), self._write_timeout)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        await close_writer(writer, self._write_timeout)

    async def close(self) -> None:
        """Stop accepting, end every connection (their sessions with them), then return."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = set(self._connections)
        for task, writer in self._connections.items():
            # Unsent frames are dropped: a peer that does not read must not delay shutdown.
            writer.transport.abort()
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._server is not None:
            await self._server.wait_closed()


async def start_wire_listener(
    backend: ChatBackend,
    host: str,
    port: int,
    *,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
    ssl_context: Optional[ssl.SSLContext] = None,
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
    max_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
) -> WireListener:
    """Listen on host:port (port 0: any free port, see `.port`) until `close()`; with
    `ssl_context`, every connection starts with a TLS handshake (then the same frames)."""
    listener = WireListener(backend, idle_timeout, max_connections, write_timeout, frame_timeout, max_per_address)
    await listener._start(host, port, ssl_context)
    return listener
