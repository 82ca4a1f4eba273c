"""The wire listener over real TCP on 127.0.0.1, in front of an in-memory backend.

Each test runs its own event loop (asyncio.run) under a time bound, starts a listener on
port 0 and closes it before returning. Nothing waits by sleeping: a test awaits the event
it expects (a frame, EOF, a session ending) with a timeout.
"""
import asyncio
import contextlib
import re
import socket
import time
from typing import AsyncIterator, Awaitable, Callable, Dict, List, Optional, TypeVar

import pytest

from replichat.errors import ChatError, Code
from replichat.proto import chat_pb2
from replichat.wire import codec
from replichat.wire.client import WireClient
from replichat.wire.codec import COMMAND_SIZE, FRAME_SIZE, PAYLOAD_SIZE, Direction, Reassembler
from replichat.wire.listener import WireListener, start_wire_listener

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
WAIT = 10.0  # bound on any single awaited event; tests finish far sooner
T = TypeVar("T")


# --- an in-memory backend -------------------------------------------------------------------


class _Session:
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.events: "asyncio.Queue[Optional[chat_pb2.ServerEvent]]" = asyncio.Queue()
        self.closed = asyncio.Event()


class FakeBackend:
    """Users and mailboxes in dicts; a session is an async generator fed by a queue.

    Follows the ChatBackend contract closely enough for the listener: per-recipient seq,
    messages stay until acked, one live session per user (a newer connect takes over).
    """

    def __init__(self) -> None:
        self.mailboxes: Dict[str, List[chat_pb2.Delivery]] = {}
        self.next_seq: Dict[str, int] = {}
        self.sessions: Dict[str, _Session] = {}
        self.ended_sessions: "asyncio.Queue[str]" = asyncio.Queue()
        self.writes: List[object] = []
        self.clock_ms = 1_700_000_000_000

    def _user(self, name: str) -> List[chat_pb2.Delivery]:
        if name not in self.mailboxes:
            raise ChatError(Code.NOT_FOUND, f"no such user: {name!r}")
        return self.mailboxes[name]

    async def create_user(self, request: chat_pb2.CreateUserRequest) -> chat_pb2.CreateUserResponse:
        self.writes.append(request)
        if not re.fullmatch(r"[\w.-]{1,32}", request.name):
            raise ChatError(Code.INVALID_ARGUMENT, f"invalid user name {request.name!r}")
        if request.name in self.mailboxes:
            raise ChatError(Code.ALREADY_EXISTS, f"user {request.name!r} already exists")
        self.mailboxes[request.name] = []
        self.next_seq[request.name] = 1
        return chat_pb2.CreateUserResponse(name=request.name)

    async def delete_user(self, request: chat_pb2.DeleteUserRequest) -> chat_pb2.DeleteUserResponse:
        self.writes.append(request)
        dropped = len(self._user(request.name))
        del self.mailboxes[request.name]
        session = self.sessions.pop(request.name, None)
        if session is not None:
            ended = chat_pb2.SessionEnded(reason=chat_pb2.SessionEnded.USER_DELETED, detail="user deleted")
            session.events.put_nowait(chat_pb2.ServerEvent(ended=ended))
        return chat_pb2.DeleteUserResponse(dropped_messages=dropped)

    async def list_users(self, pattern: str) -> List[str]:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ChatError(Code.INVALID_ARGUMENT, f"bad pattern: {exc}") from None
        return sorted(name for name in self.mailboxes if compiled.search(name))

    async def send_message(self, request: chat_pb2.SendMessageRequest) -> chat_pb2.SendMessageResponse:
        self.writes.append(request)
        mailbox = self._user(request.recipient)
        seq = self.next_seq[request.recipient]
        self.next_seq[request.recipient] = seq + 1
        self.clock_ms += 1
        delivery = chat_pb2.Delivery(
            recipient=request.recipient, seq=seq, sender=request.sender, text=request.text, sent_at_ms=self.clock_ms
        )
        mailbox.append(delivery)
        session = self.sessions.get(request.recipient)
        if session is not None:
            session.events.put_nowait(chat_pb2.ServerEvent(message=delivery))
        return chat_pb2.SendMessageResponse(seq=seq)

    def connect(self, request: chat_pb2.ConnectRequest) -> AsyncIterator[chat_pb2.ServerEvent]:
        return self._session(request)

    async def _session(self, request: chat_pb2.ConnectRequest) -> AsyncIterator[chat_pb2.ServerEvent]:
        self.writes.append(request)
        backlog = list(self._user(request.name))
        old = self.sessions.get(request.name)
        if old is not None:
            ended = chat_pb2.SessionEnded(reason=chat_pb2.SessionEnded.TAKEN_OVER, detail="a newer connect")
            old.events.put_nowait(chat_pb2.ServerEvent(ended=ended))
        session = self.sessions[request.name] = _Session(request.session_id)
        try:
            yield chat_pb2.ServerEvent(connected=chat_pb2.Connected(name=request.name, queued=len(backlog)))
            for delivery in backlog:
                yield chat_pb2.ServerEvent(message=delivery)
            while True:
                event = await session.events.get()
                if event is None:
                    raise ChatError(Code.UNAVAILABLE, "lost the quorum")
                yield event
                if event.HasField("ended"):
                    return
        finally:
            if self.sessions.get(request.name) is session:
                del self.sessions[request.name]
            session.closed.set()
            self.ended_sessions.put_nowait(request.name)

    async def ack(self, request: chat_pb2.AckRequest) -> None:
        self.writes.append(request)
        mailbox = self._user(request.name)
        mailbox[:] = [d for d in mailbox if d.seq > request.up_to_seq]

    def status(self) -> chat_pb2.StatusResponse:
        return chat_pb2.StatusResponse(role="leader")


# --- helpers --------------------------------------------------------------------------------


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


async def within(awaitable: Awaitable[T], timeout: float = WAIT) -> T:
    return await asyncio.wait_for(awaitable, timeout)


@contextlib.asynccontextmanager
async def serving(backend: Optional[FakeBackend] = None, **options: float) -> AsyncIterator[WireListener]:
    listener = await start_wire_listener(backend or FakeBackend(), HOST, 0, **options)  # type: ignore[arg-type]
    try:
        yield listener
    finally:
        await listener.close()


@contextlib.asynccontextmanager
async def client(listener: WireListener) -> AsyncIterator[WireClient]:
    c = await WireClient.open(HOST, listener.port, keepalive=None)
    try:
        yield c
    finally:
        await c.close()


class Raw:
    """A client that writes whatever bytes a test wants and reads whole responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._reassembler = Reassembler(Direction.RESPONSE)

    @classmethod
    async def open(cls, listener: WireListener, rcvbuf: Optional[int] = None) -> "Raw":
        if rcvbuf is None:
            return cls(*await asyncio.open_connection(HOST, listener.port))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (HOST, listener.port))
        return cls(*await asyncio.open_connection(sock=sock))

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> codec.Response:
        while True:
            frame = await within(self.reader.readexactly(FRAME_SIZE))
            message = self._reassembler.push(frame)
            if message is not None:
                return message  # type: ignore[return-value]

    async def eof(self) -> bytes:
        """Everything the server still sends, once it has closed the connection."""
        return await within(self.reader.read())

    def close(self) -> None:
        self.writer.transport.abort()


def frame(command: bytes, payload: bytes = b"") -> bytes:
    return command.ljust(COMMAND_SIZE, b"\0") + payload.ljust(PAYLOAD_SIZE, b"\0")


def bad_request(response: codec.Response, why: str) -> bool:
    return isinstance(response, codec.Error) and response.code == "invalid_argument" and why in response.message


# --- every command --------------------------------------------------------------------------


def test_every_command_and_its_errors() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        async with serving(backend) as listener, client(listener) as user2, client(listener) as user3:
            assert await user2.create("user2") == "user2"
            assert await user3.create("user3") == "user3"
            assert await user2.list_users() == ["user2", "user3"]
            assert await user2.list_users("3$") == ["user3"]
            assert await user2.send("user3", "hello") == 1
            assert await user2.send("user3", "hello, there \\ you") == 2
            await user2.ping()
            assert await user3.delete("user2") == 0
            assert await user3.list_users() == ["user3"]

            for call, code in [
                (user3.create("user3"), Code.ALREADY_EXISTS),
                (user3.create("bad name!"), Code.INVALID_ARGUMENT),
                (user3.send("nobody", "hi"), Code.NOT_FOUND),
                (user3.delete("nobody"), Code.NOT_FOUND),
                (user3.connect("nobody"), Code.NOT_FOUND),
                (user3.ack("nobody", 1), Code.NOT_FOUND),
                (user3.list_users("("), Code.INVALID_ARGUMENT),
            ]:
                with pytest.raises(ChatError) as caught:
                    await call
                assert caught.value.code is code

        sends = [w for w in backend.writes if isinstance(w, chat_pb2.SendMessageRequest)]
        assert [(s.sender, s.recipient, s.text) for s in sends] == [
            ("user2", "user3", "hello"),
            ("user2", "user3", "hello, there \\ you"),
            ("user3", "nobody", "hi"),
        ]
        # Exactly-once keys: one client id per connection, request numbers counting up.
        ids: Dict[str, List[int]] = {}
        for write in backend.writes:
            ids.setdefault(write.client_id, []).append(write.request_seq)  # type: ignore[attr-defined]
        assert len(ids) == 2
        for seqs in ids.values():
            assert seqs == list(range(1, len(seqs) + 1))

    run(scenario())


def test_brief_walkthrough_queued_then_live_then_ack() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        async with serving(backend) as listener, client(listener) as t2, client(listener) as t3:
            await t2.create("user2")
            await t3.create("user3")
            assert await t2.list_users() == ["user2", "user3"]
            await t2.send("user3", "hello")
            assert await t3.connect("user3") == codec.Connected("user3", 1)
            first = await within(t3.next_event())
            assert isinstance(first, codec.Delivery)
            assert (first.recipient, first.seq, first.sender, first.text) == ("user3", 1, "user2", "hello")
            await t2.send("user3", "helloagain")
            live = await within(t3.next_event())
            assert isinstance(live, codec.Delivery) and (live.seq, live.text) == (2, "helloagain")
            assert live.sent_at_ms > first.sent_at_ms
            # While its session pushes, the connection still answers requests.
            assert await t3.send("user2", "hi back") == 1
            await t3.ack("user3", 2)
            assert backend.mailboxes["user3"] == []
            acks = [w for w in backend.writes if isinstance(w, chat_pb2.AckRequest)]
            connects = [w for w in backend.writes if isinstance(w, chat_pb2.ConnectRequest)]
            assert acks[0].session_id == connects[0].session_id != ""

    run(scenario())


def test_long_and_tricky_text_is_delivered_exactly() -> None:
    texts = ["a,b\\c\0d  e 😀", "," * 4096, "é" * 2048, " leading and trailing ", ""]

    async def scenario() -> None:
        async with serving() as listener, client(listener) as sender, client(listener) as reader:
            await sender.create("user2")
            await reader.create("user3")
            await reader.connect("user3")
            for text in texts:
                await sender.send("user3", text)
            received = [await within(reader.next_event()) for _ in texts]
            assert [m.text for m in received] == texts  # type: ignore[union-attr]

    run(scenario())


def test_unacknowledged_messages_are_delivered_again_on_reconnect() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        async with serving(backend) as listener:
            async with client(listener) as first:
                await first.create("user3")
                await first.send("user3", "one")
                await first.connect("user3")
                assert (await within(first.next_event())).text == "one"  # type: ignore[union-attr]
            assert await within(backend.ended_sessions.get()) == "user3"
            async with client(listener) as second:
                assert await second.connect("user3") == codec.Connected("user3", 1)
                again = await within(second.next_event())
                assert isinstance(again, codec.Delivery) and (again.seq, again.text) == (1, "one")

    run(scenario())


def test_sessions_end_with_a_notice() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        async with serving(backend) as listener, client(listener) as a, client(listener) as b:
            await a.create("user3")
            await a.connect("user3")
            await b.connect("user3")
            assert await within(a.next_event()) == codec.Ended("taken_over", "a newer connect")
            await a.delete("user3")
            assert await within(b.next_event()) == codec.Ended("user_deleted", "user deleted")
            # A session that fails mid-way (the replica lost its quorum) ends with a notice too.
            await a.create("user4")
            await b.connect("user4")
            backend.sessions["user4"].events.put_nowait(None)
            ended = await within(b.next_event())
            assert isinstance(ended, codec.Ended) and ended.reason == "unspecified" and "quorum" in ended.detail
            await b.ping()  # the connection outlives its session

    run(scenario())


def test_pipelined_requests_are_answered_in_order() -> None:
    async def scenario() -> None:
        async with serving() as listener, client(listener) as c:
            await c.create("user3")
            seqs = await within(asyncio.gather(*(c.send("user3", f"m{i}") for i in range(30))))
            assert seqs == list(range(1, 31))

    run(scenario())


# --- bad input ------------------------------------------------------------------------------


def test_bad_requests_get_an_error_and_the_connection_keeps_serving() -> None:
    over_long = frame(b"send+", b"x" * PAYLOAD_SIZE) * 12 + frame(b"send", b"x")
    cases = [
        (frame(b"shout", b"hello"), "unknown command"),
        (frame(b"create", b"us\xffer"), "not valid UTF-8"),
        (frame(b"cr\xc3ate", b"a"), "not valid UTF-8"),
        (frame(b"send", b""), "missing argument"),
        (frame(b"ack", b"user3,x"), "decimal integer"),
        (frame(b""), "empty command"),
        (frame(b"send+", b"user3,a") + frame(b"list", b""), "continued by"),
        (over_long, "longer than"),
    ]

    async def scenario() -> None:
        async with serving() as listener:
            raw = await Raw.open(listener)
            try:
                for data, why in cases:
                    await raw.write(data)
                    response = await raw.response()
                    assert bad_request(response, why), (why, response)
                    await raw.write(codec.encode(codec.Ping()))
                    assert await raw.response() == codec.Pong()
            finally:
                raw.close()

    run(scenario())


def test_truncated_frame_closes_the_connection() -> None:
    async def scenario() -> None:
        async with serving() as listener:
            raw = await Raw.open(listener)
            await raw.write(codec.encode(codec.Ping()) + codec.encode(codec.Ping())[:500])
            raw.writer.write_eof()
            assert await raw.response() == codec.Pong()
            assert await raw.eof() == b""
            raw.close()

    run(scenario())


def test_idle_connection_is_closed() -> None:
    async def scenario() -> None:
        async with serving(idle_timeout=0.2, frame_timeout=0.2) as listener:
            raw = await Raw.open(listener)
            started = time.monotonic()
            assert await raw.eof() == b""
            assert time.monotonic() - started >= 0.15
            raw.close()
            # A half-sent frame counts as idle too.
            raw = await Raw.open(listener)
            await raw.write(b"send\0")
            assert await raw.eof() == b""
            raw.close()

    run(scenario())


def test_a_partial_frame_must_complete_within_the_frame_timeout() -> None:
    """Slowloris: the idle timeout is long, but a begun frame gets only frame_timeout."""

    async def scenario() -> None:
        async with serving(idle_timeout=300.0, frame_timeout=0.3) as listener:
            raw = await Raw.open(listener)
            await raw.write(b"send\0")
            started = time.monotonic()
            assert await raw.eof() == b""
            assert time.monotonic() - started < 5.0
            raw.close()
            assert await _eventually(lambda: listener.active_connections == 0)

    run(scenario())


async def _eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def test_connections_per_address_are_capped() -> None:
    async def scenario() -> None:
        async with serving(max_per_address=2) as listener:
            async with client(listener) as one, client(listener) as two:
                await one.ping()
                await two.ping()
                raw = await Raw.open(listener)
                refusal = await raw.response()
                assert isinstance(refusal, codec.Error) and refusal.code == "unavailable"
                assert "too many connections from 127.0.0.1 (at most 2)" in refusal.message
                assert await raw.eof() == b""
                raw.close()
                await one.ping()  # the others keep being served
            # Slots come back when connections close.
            assert await _eventually(lambda: listener.active_connections == 0)
            async with client(listener) as three:
                await three.ping()

    run(scenario())


def test_slow_client_works_and_is_bounded_by_the_idle_timeout_per_frame() -> None:
    async def scenario() -> None:
        async with serving(idle_timeout=1.0, frame_timeout=1.0) as listener:
            raw = await Raw.open(listener)
            raw.writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Fast enough: a whole frame, byte by byte, well inside the idle timeout.
            for byte in codec.encode(codec.Ping()):
                await raw.write(bytes([byte]))
                await asyncio.sleep(0)
            assert await raw.response() == codec.Pong()
            # Too slow: every byte is sooner than the idle timeout, the frame is not.
            closed = asyncio.ensure_future(raw.reader.read())
            sent = 0
            started = time.monotonic()
            for byte in codec.encode(codec.Ping()):
                try:
                    await raw.write(bytes([byte]))
                except (ConnectionResetError, BrokenPipeError):
                    break  # the server closed first and our byte met a reset: also a close
                sent += 1
                done, _ = await asyncio.wait({closed}, timeout=0.02)  # paces the bytes
                if done:
                    break
            await asyncio.wait({closed}, timeout=5)
            assert closed.done()
            assert closed.exception() is not None or closed.result() == b"", "the server must close the connection"
            assert sent < FRAME_SIZE
            assert time.monotonic() - started >= 0.9
            raw.close()

    run(scenario())


def test_connection_limit() -> None:
    async def scenario() -> None:
        async with serving(max_connections=2) as listener:
            async with client(listener) as a, client(listener) as b:
                await a.ping()
                await b.ping()
                raw = await Raw.open(listener)
                refused = await raw.response()
                assert isinstance(refused, codec.Error) and refused.code == "unavailable"
                assert "too many connections" in refused.message
                assert await raw.eof() == b""
                raw.close()
                async with client(listener) as c:
                    with pytest.raises(ChatError) as caught:
                        await c.ping()
                    assert caught.value.code is Code.UNAVAILABLE
                await b.ping()
            # Both slots free again once the listener has seen the two connections go.
            for _ in range(200):
                async with client(listener) as d:
                    try:
                        await d.ping()
                        break
                    except ChatError:
                        continue
            else:
                pytest.fail("a freed connection slot was never reused")

    run(scenario())


def test_client_that_does_not_read_is_dropped() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        async with serving(backend, write_timeout=0.3) as listener:
            async with client(listener) as sender:
                await sender.create("user3")
                for i in range(1500):
                    await backend.send_message(chat_pb2.SendMessageRequest(recipient="user3", text=f"{i:04}" * 1000))
            raw = await Raw.open(listener, rcvbuf=4096)
            await raw.write(codec.encode(codec.Connect("user3")))
            # Never read: the listener gives up on the peer instead of buffering 6 MB for it.
            assert await within(backend.ended_sessions.get()) == "user3"
            raw.close()

    run(scenario())


def test_misbehaving_clients_do_not_hold_up_others() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        async with serving(backend, idle_timeout=5.0, write_timeout=5.0) as listener:
            async with client(listener) as good:
                await good.create("user2")
                await good.create("user3")
                for i in range(300):
                    await good.send("user3", "x" * 4000)
                stalled = await Raw.open(listener)
                await stalled.write(b"send+\0\0")  # half a frame, then nothing
                not_reading = await Raw.open(listener, rcvbuf=4096)
                await not_reading.write(codec.encode(codec.Connect("user3")))
                garbage = await Raw.open(listener)

                async def spew() -> None:
                    for _ in range(200):
                        await garbage.write(b"\xff" * FRAME_SIZE)
                        assert isinstance(await garbage.response(), codec.Error)

                spewing = asyncio.ensure_future(spew())
                for i in range(50):
                    assert await within(good.send("user2", f"m{i}"), 2.0) == i + 1
                    assert await within(good.list_users("user"), 2.0) == ["user2", "user3"]
                await within(spewing)
                for raw in (stalled, not_reading, garbage):
                    raw.close()

    run(scenario())


def test_close_ends_connections_and_sessions() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        listener = await start_wire_listener(backend, HOST, 0)  # type: ignore[arg-type]
        c = await WireClient.open(HOST, listener.port, keepalive=None)
        await c.create("user3")
        await c.connect("user3")
        assert listener.active_connections == 1
        await listener.close()
        await within(c.wait_closed())
        assert await within(backend.ended_sessions.get()) == "user3"
        with pytest.raises(ConnectionError):
            await c.ping()
        await c.close()

    run(scenario())


def test_client_keepalive_outlives_the_idle_timeout() -> None:
    async def scenario() -> None:
        async with serving(idle_timeout=0.5) as listener:
            c = await WireClient.open(HOST, listener.port, keepalive=0.05)
            try:
                await c.create("user3")
                await c.connect("user3")
                # Quiet for several idle timeouts but for the pings; a message still arrives.
                other = await WireClient.open(HOST, listener.port, keepalive=None)
                try:
                    idle_closed = await asyncio.wait({asyncio.ensure_future(other.wait_closed())}, timeout=WAIT)
                    assert idle_closed[0], "the quiet connection was not closed"
                finally:
                    await other.close()
                assert not c.closed
                async with client(listener) as sender:
                    await sender.send("user3", "still here")
                assert (await within(c.next_event())).text == "still here"  # type: ignore[union-attr]
            finally:
                await c.close()

    run(scenario())
