"""ChatClient against two fake replicas sharing one state: failover, retries, session resume."""
import asyncio
from typing import List, Tuple

import pytest

from replichat.client.api import ChatClient, Event, Session
from replichat.errors import ChatError, Code
from replichat.proto import chat_pb2

from .fake_backend import FakeCluster, FakeReplica, run, serving

pytestmark = pytest.mark.timeout(60)


async def _next(session: Session) -> Event:
    return await asyncio.wait_for(session.__anext__(), 10)


async def _dead_address() -> str:
    """An address nobody listens on: a server we started and stopped."""
    async with serving(FakeReplica(FakeCluster())) as (_, address):
        pass
    return address


def _writes(replica: FakeReplica, op: str) -> List[Tuple[str, int]]:
    return [(client_id, seq) for seen_op, client_id, seq in replica.seen if seen_op == op]


def test_fails_over_from_an_unavailable_replica_with_the_same_request_seq() -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        a, b = FakeReplica(cluster, 1), FakeReplica(cluster, 2)
        async with serving(a) as (_, addr_a), serving(b) as (_, addr_b):
            async with ChatClient([addr_a, addr_b], client_id="me") as client:
                assert await client.create("bob") == "bob"
                a.available = False
                assert await client.send("bob", "hello") == 1
                assert _writes(a, "send") == [("me", 2)]
                assert _writes(b, "send") == [("me", 2)]
                # The client now sticks to the replica that worked.
                assert await client.send("bob", "again") == 2
                assert _writes(a, "send") == [("me", 2)]
                assert [d.text for d in cluster.users["bob"].mailbox] == ["hello", "again"]

    run(scenario())


def test_a_write_whose_answer_was_lost_is_applied_once() -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        a, b = FakeReplica(cluster, 1), FakeReplica(cluster, 2)
        async with serving(a) as (_, addr_a), serving(b) as (_, addr_b):
            async with ChatClient([addr_a, addr_b], client_id="me") as client:
                await client.create("bob")
                a.lose_answers = 1  # applied, but the client hears UNAVAILABLE
                assert await client.send("bob", "once") == 1
                assert _writes(a, "send") == _writes(b, "send") == [("me", 2)]
                assert [op for op, _, _ in cluster.applied].count("send") == 1
                assert [d.text for d in cluster.users["bob"].mailbox] == ["once"]

    run(scenario())


def test_fails_over_from_a_stopped_replica() -> None:
    async def scenario() -> None:
        dead = await _dead_address()
        cluster = FakeCluster()
        async with serving(FakeReplica(cluster, 2)) as (_, live):
            async with ChatClient([dead, live]) as client:
                assert await client.create("bob") == "bob"
                assert await client.list() == ["bob"]

    run(scenario())


def test_fails_over_from_a_replica_with_a_bug() -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        a, b = FakeReplica(cluster, 1), FakeReplica(cluster, 2)
        a.crash_on = "send"  # answers INTERNAL
        async with serving(a) as (_, addr_a), serving(b) as (_, addr_b):
            async with ChatClient([addr_a, addr_b], client_id="me") as client:
                await client.create("bob")
                assert await client.send("bob", "x") == 1
                assert _writes(a, "send") == _writes(b, "send") == [("me", 2)]

    run(scenario())


def test_gives_up_after_the_deadline_with_a_clear_error() -> None:
    async def scenario() -> None:
        dead = await _dead_address()
        cluster = FakeCluster()
        down = FakeReplica(cluster, 1)
        down.available = False
        async with serving(down) as (_, addr_down):
            async with ChatClient([addr_down, dead], deadline=0.5) as client:
                loop = asyncio.get_running_loop()
                started = loop.time()
                with pytest.raises(ChatError) as info:
                    await client.send("bob", "x")
                assert loop.time() - started < 3
        error = info.value
        assert error.code == Code.UNAVAILABLE
        assert error.message.startswith(f"no replica could reach a quorum within 0.5s (tried: {addr_down}, {dead}")
        assert "\n" not in error.message
        # Every attempt was the same request.
        assert len({seq for _, _, seq in down.seen}) == 1 and len(down.seen) >= 2

    run(scenario())


def test_refusals_are_not_retried_and_keep_the_server_message() -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        a, b = FakeReplica(cluster, 1), FakeReplica(cluster, 2)
        async with serving(a) as (_, addr_a), serving(b) as (_, addr_b):
            async with ChatClient([addr_a, addr_b]) as client:
                await client.create("bob")
                cases = [
                    (client.create("bob"), Code.ALREADY_EXISTS, "user bob already exists"),
                    (client.send("zed", "x"), Code.NOT_FOUND, "no such user: zed"),
                    (client.delete("zed"), Code.NOT_FOUND, "no such user: zed"),
                    (client.list("("), Code.INVALID_ARGUMENT, None),
                    (client.connect("zed"), Code.NOT_FOUND, "no such user: zed"),
                ]
                for call, code, message in cases:
                    with pytest.raises(ChatError) as info:
                        await call
                    assert info.value.code == code
                    if message is not None:
                        assert info.value.message == message
                assert b.seen == []

    run(scenario())


def test_concurrent_writes_are_never_stale() -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        async with serving(FakeReplica(cluster)) as (_, address):
            async with ChatClient([address], client_id="me") as client:
                await client.create("bob")
                seqs = await asyncio.gather(*(client.send("bob", str(i)) for i in range(30)))
                assert sorted(seqs) == list(range(1, 31))
                await client.send("bob", "alone")
        # Each in-flight write had its own client id; lone writes go back to the bare id.
        ids = [client_id for _, client_id, _ in cluster.applied]
        assert len(set(ids)) > 1 and ids[-1] == "me"

    run(scenario())


def test_delete_and_status_all() -> None:
    async def scenario() -> None:
        dead = await _dead_address()
        cluster = FakeCluster()
        async with serving(FakeReplica(cluster, 1)) as (_, address):
            async with ChatClient([address, dead]) as client:
                await client.create("bob")
                await client.send("bob", "x")
                assert await client.delete("bob") == 1
                rows = await client.status_all()
        assert [row[0] for row in rows] == [address, dead]
        assert rows[0][1] is not None and rows[0][1].role == "leader" and rows[0][2] is None
        assert rows[1][1] is None and rows[1][2]

    run(scenario())


async def _connected(client: ChatClient, name: str) -> Session:
    session = await client.connect(name)
    event = await _next(session)
    assert isinstance(event, chat_pb2.Connected)
    return session


def test_session_resumes_on_another_replica_without_duplicates() -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        a, b = FakeReplica(cluster, 1), FakeReplica(cluster, 2)
        async with serving(a) as (server_a, addr_a), serving(b) as (_, addr_b):
            async with ChatClient([addr_a, addr_b]) as reader, ChatClient([addr_b]) as writer:
                await writer.create("bob")
                await writer.send("bob", "one")
                session = await _connected(reader, "bob")
                assert (await _next(session)).text == "one"
                await writer.send("bob", "two")
                assert (await _next(session)).text == "two"
                session.ack(1)
                await session.flush_acks()
                # Replica A dies mid-session: message 2 is unacknowledged, so B will deliver
                # it again, and the session must not show it twice.
                await server_a.stop(None)
                await writer.send("bob", "three")
                event = await _next(session)
                assert isinstance(event, chat_pb2.Delivery) and (event.seq, event.text) == (3, "three")
                assert [c.session_id for c in b.connects] == [session.session_id]
                assert a.connects[0].session_id == session.session_id
                # A resume is a new request, not a retry of the first connect.
                assert b.connects[0].request_seq > a.connects[0].request_seq
                await session.close()

    run(scenario())


def test_session_resumes_after_a_shutdown_notice() -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        a, b = FakeReplica(cluster, 1), FakeReplica(cluster, 2)
        async with serving(a) as (_, addr_a), serving(b) as (_, addr_b):
            async with ChatClient([addr_a, addr_b]) as client:
                await client.create("bob")
                session = await _connected(client, "bob")
                await client.send("bob", "before")
                assert (await _next(session)).text == "before"
                a.shutdown_streams()
                a.available = False
                await client.send("bob", "after")
                event = await _next(session)
                assert isinstance(event, chat_pb2.Delivery) and event.text == "after"
                assert len(b.connects) == 1

    run(scenario())


def test_session_ends_when_taken_over_or_deleted() -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        async with serving(FakeReplica(cluster)) as (_, address):
            async with ChatClient([address]) as one, ChatClient([address]) as two:
                await one.create("bob")
                first = await _connected(one, "bob")
                second = await _connected(two, "bob")
                ended = await _next(first)
                assert isinstance(ended, chat_pb2.SessionEnded)
                assert ended.reason == chat_pb2.SessionEnded.TAKEN_OVER
                with pytest.raises(StopAsyncIteration):
                    await _next(first)

                await one.delete("bob")
                ended = await _next(second)
                assert isinstance(ended, chat_pb2.SessionEnded)
                assert ended.reason == chat_pb2.SessionEnded.USER_DELETED
                assert [e async for e in second] == []

    run(scenario())


def test_session_gives_up_after_the_deadline() -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        replica = FakeReplica(cluster)
        async with serving(replica) as (server, address):
            client = ChatClient([address], deadline=0.5)
            try:
                await client.create("bob")
                session = await _connected(client, "bob")
                replica.available = False
                replica.shutdown_streams()
                with pytest.raises(ChatError) as info:
                    await _next(session)
                assert info.value.code == Code.UNAVAILABLE
                assert "within 0.5s" in info.value.message
            finally:
                await client.close()

    run(scenario())


def test_acks_coalesce() -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        replica = FakeReplica(cluster)
        async with serving(replica) as (_, address):
            async with ChatClient([address]) as client:
                await client.create("bob")
                await asyncio.gather(*(client.send("bob", str(i)) for i in range(300)))
                session = await _connected(client, "bob")
                for expected in range(1, 301):
                    event = await _next(session)
                    assert isinstance(event, chat_pb2.Delivery) and event.seq == expected
                    session.ack(event.seq)
                await session.flush_acks()
                assert cluster.users["bob"].mailbox == []
                assert len(replica.acks) < 100  # one per delivery would be 300
                assert replica.acks[-1].up_to_seq == 300
                assert {a.session_id for a in replica.acks} == {session.session_id}

    run(scenario())


def test_closing_a_session_stops_iteration() -> None:
    async def scenario() -> None:
        cluster = FakeCluster()
        async with serving(FakeReplica(cluster)) as (_, address):
            async with ChatClient([address]) as client:
                await client.create("bob")
                session = await _connected(client, "bob")
                waiting = asyncio.ensure_future(_next(session))
                await session.close()
                with pytest.raises(StopAsyncIteration):
                    await waiting
                await asyncio.wait_for(cluster.session_closed.wait(), 5)

    run(scenario())
