"""The seed's wire protocol against real replica processes (`process_cluster(3, wire=True)`):
`client.py --transport wire` through the brief's walkthrough, wire and gRPC clients talking to
each other, a wire session surviving the kill of its replica, and replicas that keep serving
while a raw connection feeds them garbage.

The last tests pin WireChatApi's failover rules (what is retried, what is reported as maybe
applied, who the sender is after a failover) against scripted wire servers in this process,
where the moment a connection drops is exact.

Everything listens on 127.0.0.1; each test awaits the event it expects (a line, a frame, EOF)
under a timeout, and stops what it started.
"""
import asyncio
import contextlib
import random
import re
import socket
from typing import AsyncIterator, Awaitable, List, Optional, Sequence, Set, Type

import pytest

from replichat.client.api import ChatClient
from replichat.client.credentials import FileCredentials
from replichat.client import wire_api
from replichat.client.wire_api import WireChatApi, WireSession, split_address
from replichat.errors import ChatError, Code
from replichat.proto import chat_pb2
from replichat.wire import codec
from replichat.wire.codec import COMMAND_SIZE, FRAME_SIZE, PAYLOAD_SIZE, Direction, Reassembler, WireError
from tests.client_process import STAMP, ClientProcess, brief_walkthrough

pytestmark = pytest.mark.timeout(120)

WAIT = 15.0  # bound on any single awaited event


def wire_servers(cluster, first: Optional[int] = None) -> List[str]:
    """The cluster's wire addresses, replica `first` (if given) in front."""
    ids = sorted(cluster.wire_addresses)
    if first is not None:
        ids.remove(first)
        ids.insert(0, first)
    return [cluster.wire_addresses[i] for i in ids]


async def finish_cleanly(*clients: ClientProcess) -> List[str]:
    """EOF to each client; each must exit 0 without a traceback. Returns what each still printed."""
    rests = []
    for client in clients:
        code, rest, err = await client.finish()
        assert code == 0 and "Traceback" not in err, err
        rests.append(rest)
    return rests


# --- (a) the brief's walkthrough, word for word, over the wire ---------------------------------


def test_the_brief_walkthrough_over_the_wire_protocol(process_cluster) -> None:
    cluster = process_cluster(3, wire=True)

    async def scenario() -> None:
        await cluster.wait_for_leader()
        servers = ",".join(wire_servers(cluster))
        terminal2 = await ClientProcess.start("--transport", "wire", "--servers", servers)
        terminal3 = await ClientProcess.start("--transport", "wire", "--servers", servers)
        try:
            await brief_walkthrough(terminal2, terminal3)
            assert await terminal2.ask("status") == [
                "error: status is only available over gRPC; run client.py --transport grpc"
            ]
            assert await finish_cleanly(terminal2, terminal3) == ["", ""]
        finally:
            terminal2.kill()
            terminal3.kill()

    asyncio.run(scenario())


# --- (b) wire and gRPC clients talk to each other ----------------------------------------------


def test_wire_and_grpc_clients_talk_to_each_other_live(process_cluster) -> None:
    cluster = process_cluster(3, wire=True)

    async def scenario() -> None:
        await cluster.wait_for_leader()
        wire = await ClientProcess.start("--transport", "wire", "--servers", ",".join(wire_servers(cluster)))
        grpc_ = await ClientProcess.start("--servers", ",".join(cluster.servers))
        try:
            assert await wire.ask("create wanda") == ["ok: created wanda; you are now wanda"]
            assert await grpc_.ask("create gus") == ["ok: created gus; you are now gus"]
            assert await grpc_.ask("connect gus") == ["ok: connected as gus; 0 queued message(s)"]
            # Spaces, a comma and a backslash: the wire escaping must be lossless end to end.
            text = r"from the wire, with  two spaces and a \ backslash"
            assert await wire.ask(f"send gus {text}") == ["ok: sent to gus (#1)"]
            line = await grpc_.line()  # live: gus typed nothing
            assert line.endswith(f" wanda: {text}") and re.match(STAMP, line), line

            assert await wire.ask("connect wanda") == ["ok: connected as wanda; 0 queued message(s)"]
            assert await grpc_.ask("send wanda over gRPC, to the wire") == ["ok: sent to wanda (#1)"]
            line = await wire.line()  # live: wanda typed nothing
            assert re.fullmatch(STAMP + r" gus: over gRPC, to the wire", line), line

            # Both see the same users; the wire user still sends as wanda while connected.
            assert await wire.ask("list") == await grpc_.ask("list") == ["ok: 2 user(s): gus, wanda"]
            assert await wire.ask("send gus again") == ["ok: sent to gus (#2)"]
            assert re.fullmatch(STAMP + r" wanda: again", await grpc_.line())
            assert await finish_cleanly(wire, grpc_) == ["", ""]
        finally:
            wire.kill()
            grpc_.kill()

    asyncio.run(scenario())


# --- (c) the wire client's replica is killed -----------------------------------------------------


def test_a_wire_session_survives_the_kill_of_its_replica(process_cluster) -> None:
    cluster = process_cluster(3, wire=True)

    async def scenario() -> None:
        # The wire client talks to the leader first: its kill also costs the cluster a leader.
        leader = await cluster.wait_for_leader()
        wire = await ClientProcess.start(
            "--transport", "wire", "--servers", ",".join(wire_servers(cluster, first=leader))
        )
        others = [cluster.addresses[i] for i in sorted(cluster.addresses) if i != leader]
        try:
            # carol's client shares the credentials file of the client.py processes (the
            # test's XDG config directory), so it may look into dave's mailbox below.
            async with ChatClient(others, deadline=20, credentials=FileCredentials()) as carol:
                await carol.create("carol")
                assert await wire.ask("create dave") == ["ok: created dave; you are now dave"]
                await carol.send("dave", "queued before", sender="carol")
                connected, first = await wire.ask("connect dave", answers=2)
                assert connected == "ok: connected as dave; 1 queued message(s)"
                assert first.endswith(" carol: queued before")
                await carol.send("dave", "live before", sender="carol")
                assert (await wire.line()).endswith(" carol: live before")

                cluster.kill(leader)  # kill -9: the wire connection drops mid-session
                await carol.send("dave", "after the kill", sender="carol")
                # The session resumed elsewhere; the unacknowledged backlog is not shown again.
                assert (await wire.line()).endswith(" carol: after the kill")
                # The resumed session made dave this connection's sender again.
                assert await wire.ask("send carol dave is back") == ["ok: sent to carol (#1)"]
                assert await wire.ask("list") == ["ok: 2 user(s): carol, dave"]
                (rest,) = await finish_cleanly(wire)
                assert rest == "", "shown after the failover: " + rest

                # Every message dave was shown was acknowledged, the ones around the kill too.
                session = await carol.connect("dave")
                event = await asyncio.wait_for(session.__anext__(), WAIT)
                assert isinstance(event, chat_pb2.Connected) and event.queued == 0
                await session.close()
                session = await carol.connect("carol")
                event = await asyncio.wait_for(session.__anext__(), WAIT)
                assert isinstance(event, chat_pb2.Connected) and event.queued == 1
                message = await asyncio.wait_for(session.__anext__(), WAIT)
                assert (message.sender, message.text) == ("dave", "dave is back")
        finally:
            wire.kill()

    asyncio.run(scenario())


# --- (d) garbage on a raw connection --------------------------------------------------------------


def _frame(command: bytes, payload: bytes = b"") -> bytes:
    return command.ljust(COMMAND_SIZE, b"\0") + payload.ljust(PAYLOAD_SIZE, b"\0")


def garbage_frames(rng: random.Random, count: int) -> List[bytes]:
    """Hostile frames of every kind: random bytes, bad UTF-8, bad escapes, junk after padding,
    unknown commands, interrupted and over-long continuation runs."""
    commands = [b"send", b"create", b"connect", b"list", b"ack", b"message", b"shout", b"send+", b"cr\xffate"]
    frames: List[bytes] = []
    while len(frames) < count:
        kind = rng.randrange(6)
        if kind == 0:
            frames.append(bytes(rng.randrange(256) for _ in range(FRAME_SIZE)))
        elif kind == 1:
            # Never valid (0xff is not UTF-8), so no request of this test changes the state.
            payload = b"\xff" + bytes(rng.randrange(1, 256) for _ in range(rng.randrange(PAYLOAD_SIZE - 1)))
            frames.append(_frame(rng.choice(commands), payload))
        elif kind == 2:
            frames.append(_frame(b"send", b"user3,hi\0junk"))
        elif kind == 3:
            frames.append(_frame(b"send", rng.choice([b"user3,a\\nb", b"user3,a\\", b"us\xc3er,x"])))
        elif kind == 4:
            frames.extend([_frame(b"send+", b"x" * PAYLOAD_SIZE)] * 10 + [_frame(b"send", b"x")])
        else:
            frames.extend([_frame(b"send+", b"user3,a"), _frame(b"create", b"b")])
    return frames


def answers_expected(frames: Sequence[bytes]) -> int:
    """How many answers the listener owes for `frames`: one per message or spoiled run."""
    reassembler = Reassembler(Direction.REQUEST)
    answers = 0
    for frame in frames:
        try:
            if reassembler.push(frame) is not None:
                answers += 1
        except WireError:
            answers += 1
    return answers


async def read_answers(reader: asyncio.StreamReader, count: int) -> List[codec.Response]:
    reassembler = Reassembler(Direction.RESPONSE)
    answers: List[codec.Response] = []
    while len(answers) < count:
        message = reassembler.push(await asyncio.wait_for(reader.readexactly(FRAME_SIZE), WAIT))
        if message is not None:
            answers.append(message)  # type: ignore[arg-type]
    return answers


async def hostile_connection(address: str, seed: int) -> None:
    """Garbage, then two pings: every frame is answered in step, and the connection still works."""
    host, port = split_address(address)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        frames = garbage_frames(random.Random(seed), 60) + [_frame(b"ping"), _frame(b"ping")]
        for frame in frames:
            writer.write(frame)
        await writer.drain()
        answers = await read_answers(reader, answers_expected(frames))
        # The first ping ends a continuation run the garbage may have left open (one more
        # error); otherwise it is answered too.
        assert answers[-1] == codec.Pong()
        errors = [a for a in answers[:-1] if a != codec.Pong()]
        assert len(errors) >= len(answers) - 2 and all(
            isinstance(a, codec.Error) and a.code == "invalid_argument" and a.message.startswith("bad request:")
            for a in errors
        ), errors
    finally:
        writer.close()


async def truncated_then_eof(address: str) -> None:
    """Half a frame, then EOF: dropped, never answered, the connection closed."""
    host, port = split_address(address)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(_frame(b"send", b"user3,hi")[:500])
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    writer.close()


def test_replicas_keep_serving_while_a_raw_connection_sends_garbage(process_cluster) -> None:
    cluster = process_cluster(3, wire=True)

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        target = cluster.wire_addresses[leader]  # the busiest replica: it also leads
        other = next(a for i, a in sorted(cluster.wire_addresses.items()) if i != leader)
        host, port = split_address(target)
        # Two connections that stay open and idle mid-frame, one that never reads its answers.
        stalled = [await asyncio.open_connection(host, port) for _ in range(3)]
        for _, writer in stalled[:2]:
            writer.write(b"send\0\0\0")
        unread = stalled[2][1]
        for frame in garbage_frames(random.Random(7), 300):
            unread.write(frame)
        try:
            async with WireChatApi([target], deadline=20) as near, WireChatApi([other], deadline=20) as far:
                await near.create("near")
                await far.create("far")
                session = await near.connect("near")
                first = await asyncio.wait_for(session.__anext__(), WAIT)
                assert isinstance(first, chat_pb2.Connected)

                async def chat() -> List[str]:
                    texts = [f"message {n}" for n in range(20)]
                    for text in texts:
                        await far.send("near", text, sender="far")
                    got: List[str] = []
                    while len(got) < len(texts):
                        event = await asyncio.wait_for(session.__anext__(), WAIT)
                        assert isinstance(event, chat_pb2.Delivery), event
                        got.append(event.text)
                        session.ack(event.seq)
                    assert got == texts
                    return await near.list()

                results = await asyncio.gather(
                    chat(),
                    *(hostile_connection(target, seed) for seed in range(3)),
                    truncated_then_eof(target),
                    hostile_connection(other, 99),
                )
                assert results[0] == ["far", "near"]
                assert await near.send("far", "still here", sender="near") == 1
        finally:
            for _, writer in stalled:
                writer.transport.abort()

    asyncio.run(scenario())


# --- WireChatApi's failover rules, against scripted servers ----------------------------------------


class ScriptedReplica:
    """A wire server with canned answers that hangs up on chosen requests without answering,
    or ignores them and everything after them on that connection (as a stopped process would),
    or answers them `unavailable`. It predates the `members` request (the client then keeps
    the replicas it was given).

    `mailbox` is pushed after every `connected` (deliveries above the last ack), like a real
    session's backlog. Records every request it received, on any connection.
    """

    def __init__(
        self,
        hang_up_on: Sequence[Type[object]] = (),
        hang_up_after_connect: bool = False,
        unavailable_on: Sequence[Type[object]] = (),
        silent_on: Sequence[Type[object]] = (),
    ) -> None:
        self.hang_up_on = tuple(hang_up_on)
        self.silent_on = tuple(silent_on)
        self.unavailable_on = tuple(unavailable_on)
        self.hang_up_after_connect = hang_up_after_connect
        self.mailbox: List[codec.Delivery] = []
        self.acked = 0
        self.received: List[codec.Request] = []
        self.address = ""
        self._server: Optional[asyncio.AbstractServer] = None
        self._writers: Set[asyncio.StreamWriter] = set()

    async def start(self) -> "ScriptedReplica":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    def count(self, kind: Type[object]) -> int:
        return sum(isinstance(r, kind) for r in self.received)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        reassembler = Reassembler(Direction.REQUEST)
        stopped = False
        try:
            while True:
                request = reassembler.push(await reader.readexactly(FRAME_SIZE))
                if request is None:
                    continue
                self.received.append(request)  # type: ignore[arg-type]
                if isinstance(request, self.hang_up_on):
                    return
                # Like a stopped process: no answer, to this request nor any after it (answers
                # come in request order, so a later answer would be taken for this one's).
                stopped = stopped or isinstance(request, self.silent_on)
                if stopped:
                    continue
                writer.write(b"".join(codec.encode(m) for m in self._answer(request)))  # type: ignore[arg-type]
                await writer.drain()
                if isinstance(request, codec.Connect) and self.hang_up_after_connect:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _answer(self, request: codec.Request) -> List[codec.Response]:
        if isinstance(request, self.unavailable_on):
            return [codec.Error("unavailable", "no quorum: the write did not complete within 8s")]
        if isinstance(request, codec.Create):
            return [codec.Created(request.name)]
        if isinstance(request, codec.ListUsers):
            return [codec.Users(("alice", "bob"))]
        if isinstance(request, codec.Send):
            return [codec.Sent(request.recipient, 1)]
        if isinstance(request, codec.Ack):
            self.acked = max(self.acked, request.up_to_seq)
            return [codec.Acked(request.name, request.up_to_seq)]
        if isinstance(request, codec.Ping):
            return [codec.Pong()]
        if isinstance(request, codec.Auth):
            return [codec.Authed(request.name)]
        if isinstance(request, codec.Connect):
            backlog = [d for d in self.mailbox if d.seq > self.acked]
            return [codec.Connected(request.name, len(backlog)), *backlog]
        if isinstance(request, codec.Members):  # what a replica older than the request answers
            return [codec.Error("invalid_argument", "bad request: unknown command 'members'")]
        return [codec.Error("not_found", "no such user")]


@contextlib.asynccontextmanager
async def scripted(*replicas: ScriptedReplica) -> AsyncIterator[List[str]]:
    for replica in replicas:
        await replica.start()
    try:
        yield [replica.address for replica in replicas]
    finally:
        for replica in replicas:
            await replica.stop()


def run_bounded(scenario: Awaitable[None]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(scenario, 60)
        # Everything the client started has ended with it.
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftovers, leftovers

    asyncio.run(bounded())


def test_a_write_whose_connection_dies_is_reported_not_retried() -> None:
    async def scenario() -> None:
        a, b = ScriptedReplica(hang_up_on=[codec.Send]), ScriptedReplica()
        async with scripted(a, b) as servers, WireChatApi(servers, deadline=5) as api:
            assert await api.create("alice") == "alice"
            with pytest.raises(ChatError) as lost:
                await api.send("bob", "hi", sender="alice")
            assert lost.value.code is Code.UNAVAILABLE
            assert lost.value.message == (
                f"connection to {a.address} lost before the answer; the request may or may not have been applied"
            )
            assert (a.count(codec.Send), b.count(codec.Send)) == (1, 0)  # not retried
            # The next request goes to the next replica, where nobody is alice yet: the client
            # holds alice's credential, so it logs the new connection in as alice first.
            assert await api.send("bob", "hi again", sender="alice") == 1
            token = api.credentials.get("alice")
            assert token and b.received[-2:] == [codec.Auth("alice", token), codec.Send("bob", "hi again")]
            assert await api.list() == ["alice", "bob"]
            # A client without alice's credential cannot make a connection send as alice.
            api.credentials.forget("alice")
            b.received.clear()
            await api._link.client.create("carol", "c" * 20)  # type: ignore[union-attr]
            api._link.identity = "carol"  # type: ignore[union-attr]
            with pytest.raises(ChatError) as refused:
                await api.send("bob", "as alice?", sender="alice")
            assert "a message goes out as carol" in refused.value.message
            assert b.count(codec.Send) == 0

    run_bounded(scenario())


def test_a_write_refused_for_want_of_a_quorum_may_still_apply_so_is_not_retried() -> None:
    async def scenario() -> None:
        a, b = ScriptedReplica(unavailable_on=[codec.Create, codec.ListUsers]), ScriptedReplica()
        async with scripted(a, b) as servers, WireChatApi(servers, deadline=5) as api:
            with pytest.raises(ChatError) as error:
                await api.create("alice")
            assert error.value.code is Code.UNAVAILABLE
            assert error.value.message == (
                "no quorum: the write did not complete within 8s; the request may or may not have been applied"
            )
            assert (a.count(codec.Create), b.count(codec.Create)) == (1, 0)
            # That replica is not serving: the next request goes elsewhere.
            assert await api.list() == ["alice", "bob"]
            assert (a.count(codec.ListUsers), b.count(codec.ListUsers)) == (0, 1)

    run_bounded(scenario())


def test_reads_and_acks_are_retried_on_the_next_replica() -> None:
    async def scenario() -> None:
        a, b = ScriptedReplica(hang_up_on=[codec.ListUsers, codec.Ack]), ScriptedReplica()
        async with scripted(a, b) as servers, WireChatApi(servers, deadline=5) as api:
            assert await api.list("^a") == ["alice", "bob"]
            assert (a.count(codec.ListUsers), b.count(codec.ListUsers)) == (1, 1)
            await api.ack("alice", 3)
            assert b.acked == 3

    run_bounded(scenario())


def test_a_session_resumes_on_the_next_replica_showing_each_message_once() -> None:
    async def scenario() -> None:
        first = codec.Delivery("alice", 1, "bob", 1_700_000_000_000, "one")
        second = codec.Delivery("alice", 2, "bob", 1_700_000_000_001, "two")
        # a pushes the backlog and hangs up before any ack can land; b still has both.
        a, b = ScriptedReplica(hang_up_on=[codec.Ack], hang_up_after_connect=True), ScriptedReplica()
        a.mailbox = [first]
        b.mailbox = [first, second]
        async with scripted(a, b) as servers, WireChatApi(servers, deadline=5) as api:
            session: WireSession = await api.connect("alice")
            events = [await asyncio.wait_for(session.__anext__(), WAIT) for _ in range(3)]
            assert events[0] == chat_pb2.Connected(name="alice", queued=1)
            assert [(e.seq, e.text) for e in events[1:]] == [(1, "one"), (2, "two")]
            assert b.count(codec.Connect) == 1  # the resume
            session.ack(2)
            await session.flush_acks()
            assert b.acked == 2
            # The resumed connection sends as alice.
            assert await api.send("bob", "back", sender="alice") == 1
            await session.close()

    run_bounded(scenario())


def test_a_replica_that_stops_answering_loses_the_session_and_the_write(monkeypatch) -> None:
    monkeypatch.setattr(wire_api, "KEEPALIVE_INTERVAL", 0.1)

    async def scenario() -> None:
        a, b = ScriptedReplica(silent_on=[codec.Ping, codec.Send]), ScriptedReplica()
        b.mailbox = [codec.Delivery("alice", 1, "bob", 1_700_000_000_000, "sent while a was silent")]
        async with scripted(a, b) as servers:
            async with WireChatApi(servers, deadline=1) as api:
                session = await api.connect("alice")
                first = await asyncio.wait_for(session.__anext__(), WAIT)
                assert first == chat_pb2.Connected(name="alice", queued=0)
                # Nothing but the unanswered ping tells that a stopped: the session moves to b.
                delivery = await asyncio.wait_for(session.__anext__(), WAIT)
                assert isinstance(delivery, chat_pb2.Delivery) and delivery.text == "sent while a was silent"
                assert a.count(codec.Ping) >= 1 and b.count(codec.Connect) == 1
                await session.close()
            async with WireChatApi([a.address], deadline=1) as api:
                with pytest.raises(ChatError) as error:
                    await api.send("bob", "into the void")
                assert error.value.message == (
                    f"no answer from {a.address} within 1s; the request may or may not have been applied"
                )
                assert a.count(codec.Send) == 1

    run_bounded(scenario())


def test_an_ack_lost_with_its_connection_is_sent_again_after_the_resume() -> None:
    async def scenario() -> None:
        first = codec.Delivery("alice", 1, "bob", 1_700_000_000_000, "one")
        second = codec.Delivery("alice", 2, "bob", 1_700_000_000_001, "two")
        a, b = ScriptedReplica(hang_up_on=[codec.Ack]), ScriptedReplica()
        a.mailbox = [first]
        b.mailbox = [first, second]
        async with scripted(a, b) as servers, WireChatApi(servers, deadline=5) as api:
            session = await api.connect("alice")
            assert await asyncio.wait_for(session.__anext__(), WAIT) == chat_pb2.Connected(name="alice", queued=1)
            shown = await asyncio.wait_for(session.__anext__(), WAIT)
            assert isinstance(shown, chat_pb2.Delivery) and shown.seq == 1
            session.ack(1)  # a hangs up on it: unknown whether it landed
            shown = await asyncio.wait_for(session.__anext__(), WAIT)
            assert isinstance(shown, chat_pb2.Delivery) and (shown.seq, shown.text) == (2, "two")
            await session.flush_acks()
            assert (a.count(codec.Ack), b.acked) == (1, 1)  # sent again, on b
            await session.close()

    run_bounded(scenario())


def test_no_reachable_replica_is_a_clear_error() -> None:
    async def scenario() -> None:
        with socket.socket() as probe:  # a port with nobody listening
            probe.bind(("127.0.0.1", 0))
            dead = f"127.0.0.1:{probe.getsockname()[1]}"
        async with WireChatApi([dead], deadline=0.5) as api:
            with pytest.raises(ChatError) as error:
                await api.list()
            assert error.value.code is Code.UNAVAILABLE
            assert "no replica answered over the wire protocol within 0.5s" in error.value.message
            assert dead in error.value.message
        with pytest.raises(ValueError):
            WireChatApi(["no-port-here"])

    run_bounded(scenario())
