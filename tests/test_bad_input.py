"""Bad input against a real replica: each gets a clear error, changes nothing, and the replica
keeps serving (its event loop is never stalled)."""
import asyncio
import unicodedata

import grpc
import pytest

from replichat.client.api import ChatClient
from replichat.errors import ChatError, Code
from replichat.identity import cluster_id_from_members
from replichat.proto import chat_pb2, chat_pb2_grpc
from replichat.raft.messages import Message, MsgType
from replichat.runtime.transport import MAGIC, encode_frame, split_address
from tests.test_transport import closed_by_peer

pytestmark = pytest.mark.timeout(120)

BAD_NAMES = ["", "x" * 33, "two words", "comma,name", "tab\tname", "nul\x00name", "new\nline"]


def test_bad_requests_are_refused_clearly_and_change_nothing(process_cluster) -> None:
    cluster = process_cluster(1)

    async def scenario() -> None:
        await cluster.wait_for_leader()
        async with ChatClient(cluster.servers, deadline=5) as client:
            await client.create("alice")
            await client.send("alice", "first", sender="alice")
            before = await cluster.status(1)

            async def refused(code: Code, call) -> str:
                with pytest.raises(ChatError) as error:
                    await call
                assert error.value.code is code, error.value
                assert error.value.message and "\n" not in error.value.message
                return error.value.message

            for name in BAD_NAMES:
                await refused(Code.INVALID_ARGUMENT, client.create(name))
                await refused(Code.INVALID_ARGUMENT, client.send(name, "hi"))
            assert "already exists" in await refused(Code.ALREADY_EXISTS, client.create("alice"))
            # The same name in another Unicode normalisation is the same user.
            await client.create(unicodedata.normalize("NFC", "jos\u00e9"))
            await refused(Code.ALREADY_EXISTS, client.create(unicodedata.normalize("NFD", "jos\u00e9")))
            assert "4096" in await refused(Code.INVALID_ARGUMENT, client.send("alice", "x" * 4097))
            await refused(Code.INVALID_ARGUMENT, client.send("alice", ""))
            await refused(Code.NOT_FOUND, client.send("nobody", "hello?", sender="alice"))
            await refused(Code.NOT_FOUND, client.connect("nobody"))
            await refused(Code.NOT_FOUND, client.delete("nobody"))
            await refused(Code.INVALID_ARGUMENT, client.list("("))
            await refused(Code.INVALID_ARGUMENT, client.list(r"(a)\1"))
            await refused(Code.INVALID_ARGUMENT, client.list("a" * 257))

            await client.create("gone")
            await client.delete("gone")
            await refused(Code.NOT_FOUND, client.connect("gone"))

            assert await client.list() == ["alice", "jos\u00e9"]
            after = await cluster.status(1)
            # Malformed requests never reach the log. Refusals that depend on the state (exists,
            # not found) are decided by the state machine, so they are entries that change
            # nothing: 3 of them (create alice, create josé again, send to nobody), plus create
            # josé and create/delete gone. connect/delete of a missing user stop earlier: the
            # credential check finds no such user.
            assert after.last_index == before.last_index + 6
            session = await client.connect("alice")
            first = await session.__anext__()
            assert isinstance(first, chat_pb2.Connected) and first.queued == 1
            message = await session.__anext__()
            assert message.text == "first"

    asyncio.run(scenario())


def test_hostile_regular_expressions_do_not_stall_the_replica(process_cluster) -> None:
    cluster = process_cluster(1)

    async def scenario() -> None:
        await cluster.wait_for_leader()
        async with ChatClient(cluster.servers) as client:
            long_names = ["a" * 31 + "b", "a" * 32, "a" * 30 + "-x"]
            for name in long_names:
                await client.create(name)
            # Catastrophic for a backtracking engine; linear for RE2.
            results = await asyncio.gather(
                client.list("(a+)+$"), client.list("(a|a)*b"), client.list("^(a|aa)+$"), cluster.status(1),
            )
            assert results[0] == ["a" * 32]
            assert results[1] == ["a" * 31 + "b"]
            assert results[2] == ["a" * 32]
            assert results[3] is not None and results[3].role == "leader"

    asyncio.run(scenario())


def test_oversized_grpc_request_is_refused_and_replica_keeps_serving(process_cluster) -> None:
    cluster = process_cluster(1)

    async def scenario() -> None:
        await cluster.wait_for_leader()
        async with grpc.aio.insecure_channel(cluster.addresses[1], options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
            stub = chat_pb2_grpc.ChatStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.SendMessage(chat_pb2.SendMessageRequest(recipient="a", text="x" * (20 << 20)))
            assert error.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.ListUsers(chat_pb2.ListUsersRequest(pattern="(?P<x>a)(?P=x)"))
            assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            status = await stub.Status(chat_pb2.StatusRequest())
            assert status.role == "leader"

    asyncio.run(scenario())


def test_garbage_on_the_raft_port_is_dropped_and_the_cluster_keeps_serving(process_cluster) -> None:
    # Plain TCP peers (--insecure-peers): the frame decoder itself faces the garbage. (With
    # mutual TLS nothing gets past the handshake: tests/test_peer_attacks.py.)
    cluster = process_cluster(3, peer_tls=False)
    hello = MAGIC + cluster_id_from_members(cluster.addresses) + bytes(32)  # the identity greeting
    hostile = {
        "garbage": bytes(range(256)) * 4,
        "bad greeting": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "undecodable frame": hello + b"\x00\x00\x00\x03\xff\xff\xff",
        "oversized frame": hello + b"\xff\xff\xff\xff",
    }

    async def refused(address: str, data: bytes) -> None:
        """The replica closes the connection: the reader sees EOF (or a reset)."""
        reader, writer = await asyncio.open_connection(*split_address(address))
        try:
            writer.write(data)
            await writer.drain()
            assert await closed_by_peer(reader, timeout=10)
        finally:
            writer.close()

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        async with ChatClient(cluster.servers, deadline=10) as client:
            await client.create("alice")
            for node_id, address in sorted(cluster.peer_addresses.items()):
                for data in hostile.values():
                    await refused(address, data)
                # Well formed, but addressed to another replica, or from a replica that is not a
                # member (which the replica would answer, to no one: that used to stop it).
                other = node_id % 3 + 1
                await refused(address, hello + encode_frame([Message(MsgType.HEARTBEAT, other, other, term=1)]))
                await refused(address, hello + encode_frame([Message(MsgType.HEARTBEAT, 99, node_id, term=0)]))
                await refused(address, MAGIC + bytes(48) + encode_frame([Message(MsgType.HEARTBEAT, 99, node_id, term=0)]))
            # Every replica still runs, replication works and nobody lost the leader over it.
            assert cluster.alive() == [1, 2, 3]
            assert await client.send("alice", "still here", sender="alice") == 1
            assert await cluster.wait_for_leader() == leader
        logs = cluster.logs()
        for reason in ("bad greeting", "undecodable frame", "exceeds the limit", "message for replica", "from replica 99",
                       "a replica of another cluster"):
            assert reason in logs, reason

    asyncio.run(scenario())


def test_oversized_fields_are_refused_before_anything_is_replicated(process_cluster) -> None:
    """A request the state machine would refuse must not cost a log entry first (it used to:
    a 15 MiB session id was written into every replica's log, then answered INVALID_ARGUMENT)."""
    cluster = process_cluster(1)

    async def scenario() -> None:
        await cluster.wait_for_leader()
        async with grpc.aio.insecure_channel(cluster.addresses[1], options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
            stub = chat_pb2_grpc.ChatStub(channel)
            await stub.CreateUser(chat_pb2.CreateUserRequest(name="alice", credential="k" * 43, client_id="c", request_seq=1))
            before = await stub.Status(chat_pb2.StatusRequest())
            big = "s" * 60_000  # under the request size limit: refused by its field's bound
            calls = [
                stub.CreateUser(chat_pb2.CreateUserRequest(name="bob", client_id=big, request_seq=2)),
                stub.SendMessage(chat_pb2.SendMessageRequest(recipient="alice", text="hi", client_id="c",
                                                             request_seq=(1 << 64) - 1)),
                stub.Ack(chat_pb2.AckRequest(name="alice", up_to_seq=1, session_id=big)),
                stub.DeleteUser(chat_pb2.DeleteUserRequest(name="n" * 200)),
            ]
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await call
                assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT, error.value
                assert "at most" in error.value.details()
            connect = stub.Connect(chat_pb2.ConnectRequest(name="alice", session_id=big))
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await connect.read()
            assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            # 15 MiB: refused by gRPC itself, before it is even decoded.
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.CreateUser(chat_pb2.CreateUserRequest(name="bob", client_id="x" * (15 << 20), request_seq=3))
            assert error.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            after = await stub.Status(chat_pb2.StatusRequest())
            assert after.last_index == before.last_index and after.role == "leader"

    asyncio.run(scenario())
