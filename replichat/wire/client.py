"""An asyncio client for the seed's wire protocol.

IO only: framing, escaping and parsing are the codec's. One task reads the socket and sorts
what arrives: answers go to the waiting requests in the order they were sent (the server
answers in order), pushed messages and session notices go to a bounded queue read through
`next_event()` / `events()`. When that queue is full the reader stops reading, which pushes
back on the server instead of growing this process's memory.
"""
import asyncio
import ssl
import collections
from typing import AsyncIterator, Deque, List, Optional, Type, TypeVar, Union

from replichat.errors import ChatError, Code
from replichat.wire import codec
from replichat.wire.codec import FRAME_SIZE, Direction, Reassembler, WireError

# Below the listener's default idle timeout (300 s), so a session waiting for messages stays.
DEFAULT_KEEPALIVE = 60.0
DEFAULT_MAX_PENDING_EVENTS = 1024
# How long close() lets unsent frames drain before dropping them.
_CLOSE_TIMEOUT = 5.0

_R = TypeVar("_R")


class _Closed:
    """Queued after the last event, so a reader of the queue learns the connection ended."""


_CLOSED = _Closed()


def chat_error(error: codec.Error) -> ChatError:
    """The exception an `error` frame stands for, as the gRPC client would raise it."""
    try:
        code = Code[error.code.upper()]
    except KeyError:
        raise WireError(f"unknown error code {error.code!r}: {error.message}") from None
    return ChatError(code, error.message)


class WireClient:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        keepalive: Optional[float],
        max_pending_events: int,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._pending: Deque["asyncio.Future[codec.Response]"] = collections.deque()
        self._events: "asyncio.Queue[Union[codec.Push, _Closed]]" = asyncio.Queue()
        self._room = asyncio.Semaphore(max_pending_events)
        self._closed = asyncio.Event()
        self._close_reason: BaseException = ConnectionResetError("wire connection closed")
        self._read_task = asyncio.ensure_future(self._read_loop())
        self._keepalive_task: Optional["asyncio.Future[None]"] = None
        if keepalive is not None:
            self._keepalive_task = asyncio.ensure_future(self._keep_alive(keepalive))

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        keepalive: Optional[float] = DEFAULT_KEEPALIVE,
        max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> "WireClient":
        """ssl_context: TLS to a replica serving the wire protocol with --cert (see
        security/tls.py client_context); None: the brief's plain TCP."""
        if ssl_context is None:
            reader, writer = await asyncio.open_connection(host, port)
        else:
            reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context, server_hostname=host)
        return cls(reader, writer, keepalive, max_pending_events)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        """Returns once the connection has ended, whichever side ended it."""
        await self._closed.wait()

    async def request(self, request: codec.Request) -> codec.Response:
        """Send one request and return its answer, `error` frames included.

        Safe to call concurrently: frames of one request are written in one call, and the
        answers arrive in the same order as the requests.
        """
        data = codec.encode(request)
        if self._closed.is_set():
            raise self._close_reason
        future: "asyncio.Future[codec.Response]" = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        self._writer.write(data)
        try:
            await self._writer.drain()
        except ConnectionError:
            future.cancel()  # the reading task reports the broken connection to the others
            raise
        return await future

    async def next_event(self) -> codec.Push:
        """The next pushed message or session notice; raises the close reason at the end."""
        item = await self._events.get()
        if isinstance(item, _Closed):
            self._events.put_nowait(item)  # for the next caller too
            raise self._close_reason
        self._room.release()
        return item

    async def events(self) -> AsyncIterator[codec.Push]:
        """Pushed events until the connection closes (quietly) or breaks (raises)."""
        while True:
            try:
                yield await self.next_event()
            except ConnectionError:
                return

    async def close(self) -> None:
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            await asyncio.wait({self._keepalive_task})
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), _CLOSE_TIMEOUT)
        except asyncio.TimeoutError:  # the server is not reading: don't wait to flush
            self._writer.transport.abort()
        except ConnectionError:
            pass
        # The reader may be waiting for room in a full event queue rather than for the socket.
        self._read_task.cancel()
        await asyncio.wait({self._read_task})

    async def _read_loop(self) -> None:
        reassembler = Reassembler(Direction.RESPONSE)
        try:
            while True:
                message = reassembler.push(await self._reader.readexactly(FRAME_SIZE))
                if message is None:
                    continue
                if isinstance(message, codec.PUSHES):
                    await self._room.acquire()
                    self._events.put_nowait(message)  # type: ignore[arg-type]
                    continue
                if not self._answer(message):  # type: ignore[arg-type]
                    if isinstance(message, codec.Error):  # e.g. the connection limit
                        self._close_reason = chat_error(message)
                        return
                    raise WireError(f"unexpected {codec.command_of(type(message))!r} frame: nothing was asked")
        except asyncio.IncompleteReadError:
            pass
        except (ConnectionError, WireError) as exc:
            self._close_reason = exc
        finally:
            self._closed.set()
            while self._pending:
                future = self._pending.popleft()
                if not future.done():
                    future.set_exception(self._close_reason)
            self._events.put_nowait(_CLOSED)
            self._writer.close()

    def _answer(self, message: codec.Response) -> bool:
        """Hand an answer to the oldest waiting request; False if none is waiting."""
        if not self._pending:
            return False
        future = self._pending.popleft()
        if not future.done():  # a cancelled request's answer is dropped, not misdelivered
            future.set_result(message)
        return True

    async def _keep_alive(self, interval: float) -> None:
        while True:
            try:
                await asyncio.wait_for(self._closed.wait(), interval)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self.ping()
            except (ConnectionError, ChatError, WireError):
                return

    async def _call(self, request: codec.Request, expected: Type[_R]) -> _R:
        response = await self.request(request)
        if isinstance(response, codec.Error):
            raise chat_error(response)
        if not isinstance(response, expected):
            raise WireError(f"expected {codec.command_of(expected)!r}, got {codec.command_of(type(response))!r}")
        return response

    # The service's operations, raising ChatError as the gRPC client does.

    async def create(self, name: str, credential: str = "") -> str:
        """Create `name` with `credential`; this connection is then logged in as `name`.
        Returns the canonical name."""
        return (await self._call(codec.Create(name, credential), codec.Created)).name

    async def create_with_token(self, name: str, credential: str = "") -> codec.Created:
        """Like create(), with the whole answer (a credential the server made, if any)."""
        return await self._call(codec.Create(name, credential), codec.Created)

    async def auth(self, name: str, credential: str) -> str:
        """Log this connection in as `name`; returns the canonical name."""
        return (await self._call(codec.Auth(name, credential), codec.Authed)).name

    async def connect(self, name: str) -> codec.Connected:
        """Start the session of `name`: its queued messages, then live ones, via events()."""
        return await self._call(codec.Connect(name), codec.Connected)

    async def delete(self, name: str) -> int:
        """Delete `name`; returns how many unread messages went with it."""
        return (await self._call(codec.Delete(name), codec.Deleted)).dropped_messages

    async def list_users(self, pattern: str = "") -> List[str]:
        return list((await self._call(codec.ListUsers(pattern), codec.Users)).names)

    async def send(self, recipient: str, text: str) -> int:
        """Returns the message's sequence number in the recipient's mailbox."""
        return (await self._call(codec.Send(recipient, text), codec.Sent)).seq

    async def ack(self, name: str, up_to_seq: int) -> None:
        await self._call(codec.Ack(name, up_to_seq), codec.Acked)

    async def ping(self) -> None:
        await self._call(codec.Ping(), codec.Pong)

    async def members(self) -> codec.Cluster:
        """The cluster's members and their wire addresses, as the replica at the other end
        knows them (a replica older than the `members` request answers INVALID_ARGUMENT)."""
        return await self._call(codec.Members(), codec.Cluster)


async def open_wire_client(
    host: str,
    port: int,
    *,
    keepalive: Optional[float] = DEFAULT_KEEPALIVE,
    max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS,
) -> WireClient:
    return await WireClient.open(host, port, keepalive=keepalive, max_pending_events=max_pending_events)
