"""The gRPC servicer over a fake backend: every RPC, the error mapping, health and reflection."""
import asyncio
import socket
from typing import Any, List

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from replichat.api.grpc_service import create_grpc_server
from replichat.proto import chat_pb2, chat_pb2_grpc

from .fake_backend import FakeCluster, FakeReplica, run, serving

pytestmark = pytest.mark.timeout(60)


async def _status_of(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def test_unary_rpcs_round_trip() -> None:
    async def scenario() -> None:
        replica = FakeReplica(FakeCluster())
        async with serving(replica) as (_, address):
            async with grpc.aio.insecure_channel(address) as channel:
                stub = chat_pb2_grpc.ChatStub(channel)
                created = await stub.CreateUser(chat_pb2.CreateUserRequest(name="alice", client_id="c", request_seq=1))
                assert created.name == "alice"
                await stub.CreateUser(chat_pb2.CreateUserRequest(name="bob", client_id="c", request_seq=2))
                listed = await stub.ListUsers(chat_pb2.ListUsersRequest(pattern=""))
                assert list(listed.names) == ["alice", "bob"]
                listed = await stub.ListUsers(chat_pb2.ListUsersRequest(pattern="^b"))
                assert list(listed.names) == ["bob"]
                sent = await stub.SendMessage(
                    chat_pb2.SendMessageRequest(sender="alice", recipient="bob", text="hi", client_id="c", request_seq=3)
                )
                assert sent.seq == 1
                sent = await stub.SendMessage(chat_pb2.SendMessageRequest(recipient="bob", text="yo"))
                assert sent.seq == 2
                await stub.Ack(chat_pb2.AckRequest(name="bob", up_to_seq=1, session_id="s"))
                assert [d.seq for d in replica.cluster.users["bob"].mailbox] == [2]
                deleted = await stub.DeleteUser(chat_pb2.DeleteUserRequest(name="bob", client_id="c", request_seq=4))
                assert deleted.dropped_messages == 1
                status = await stub.Status(chat_pb2.StatusRequest())
                assert (status.id, status.role, status.leader_id) == (1, "leader", 1)
                assert status.commit_index == len(replica.cluster.applied)

    run(scenario())


def test_chat_errors_map_to_grpc_status_with_the_message_as_details() -> None:
    async def scenario() -> None:
        replica = FakeReplica(FakeCluster())
        async with serving(replica) as (_, address):
            async with grpc.aio.insecure_channel(address) as channel:
                stub = chat_pb2_grpc.ChatStub(channel)
                await stub.CreateUser(chat_pb2.CreateUserRequest(name="alice", client_id="c", request_seq=5))

                error = await _status_of(stub.CreateUser(chat_pb2.CreateUserRequest(name="alice")))
                assert error.code() == grpc.StatusCode.ALREADY_EXISTS
                assert error.details() == "user alice already exists"

                error = await _status_of(stub.CreateUser(chat_pb2.CreateUserRequest(name="no spaces")))
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

                error = await _status_of(stub.ListUsers(chat_pb2.ListUsersRequest(pattern="(")))
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert error.details().startswith("bad pattern")

                error = await _status_of(stub.SendMessage(chat_pb2.SendMessageRequest(recipient="zed", text="x")))
                assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "no such user: zed")
                error = await _status_of(stub.DeleteUser(chat_pb2.DeleteUserRequest(name="zed")))
                assert error.code() == grpc.StatusCode.NOT_FOUND
                error = await _status_of(stub.Ack(chat_pb2.AckRequest(name="zed", up_to_seq=1)))
                assert error.code() == grpc.StatusCode.NOT_FOUND

                stale = chat_pb2.SendMessageRequest(recipient="alice", text="x", client_id="c", request_seq=4)
                error = await _status_of(stub.SendMessage(stale))
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "stale" in error.details()

                replica.available = False
                error = await _status_of(stub.ListUsers(chat_pb2.ListUsersRequest()))
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert error.details() == "replica 1 cannot reach a quorum"

    run(scenario())


def test_a_backend_bug_is_internal_without_a_traceback() -> None:
    async def scenario() -> None:
        replica = FakeReplica(FakeCluster())
        async with serving(replica) as (_, address):
            async with grpc.aio.insecure_channel(address) as channel:
                stub = chat_pb2_grpc.ChatStub(channel)
                for op, call in [
                    ("send", lambda: stub.SendMessage(chat_pb2.SendMessageRequest(recipient="a"))),
                    ("status", lambda: stub.Status(chat_pb2.StatusRequest())),
                ]:
                    replica.crash_on = op
                    error = await _status_of(call())
                    assert error.code() == grpc.StatusCode.INTERNAL
                    assert "Traceback" not in error.details() and "bug in" not in error.details()
                replica.crash_on = None
                assert (await stub.Status(chat_pb2.StatusRequest())).id == 1

    run(scenario())


async def _read(call: Any) -> chat_pb2.ServerEvent:
    event = await asyncio.wait_for(call.read(), 5)
    assert event is not grpc.aio.EOF
    return event


def test_connect_streams_queued_then_live_and_ends_on_takeover() -> None:
    async def scenario() -> None:
        replica = FakeReplica(FakeCluster())
        async with serving(replica) as (_, address):
            async with grpc.aio.insecure_channel(address) as channel:
                stub = chat_pb2_grpc.ChatStub(channel)
                await stub.CreateUser(chat_pb2.CreateUserRequest(name="bob"))
                await stub.SendMessage(chat_pb2.SendMessageRequest(sender="al", recipient="bob", text="queued"))

                first = stub.Connect(chat_pb2.ConnectRequest(name="bob", session_id="one"))
                event = await _read(first)
                assert event.WhichOneof("event") == "connected"
                assert (event.connected.name, event.connected.queued) == ("bob", 1)
                event = await _read(first)
                assert (event.message.seq, event.message.text, event.message.sender) == (1, "queued", "al")

                await stub.SendMessage(chat_pb2.SendMessageRequest(recipient="bob", text="live"))
                event = await _read(first)
                assert (event.message.seq, event.message.text) == (2, "live")

                second = stub.Connect(chat_pb2.ConnectRequest(name="bob", session_id="two"))
                event = await _read(first)
                assert event.ended.reason == chat_pb2.SessionEnded.TAKEN_OVER
                assert await first.read() is grpc.aio.EOF
                assert await first.code() == grpc.StatusCode.OK
                assert (await _read(second)).connected.queued == 2

                await stub.DeleteUser(chat_pb2.DeleteUserRequest(name="bob"))
                skipped = [await _read(second), await _read(second)]
                assert [e.message.seq for e in skipped] == [1, 2]
                event = await _read(second)
                assert event.ended.reason == chat_pb2.SessionEnded.USER_DELETED

    run(scenario())


def test_connect_to_a_missing_user_is_not_found() -> None:
    async def scenario() -> None:
        async with serving(FakeReplica(FakeCluster())) as (_, address):
            async with grpc.aio.insecure_channel(address) as channel:
                call = chat_pb2_grpc.ChatStub(channel).Connect(chat_pb2.ConnectRequest(name="ghost"))
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call.read()
                assert info.value.code() == grpc.StatusCode.NOT_FOUND
                assert info.value.details() == "no such user: ghost"

    run(scenario())


def test_cancelling_a_stream_closes_the_backend_session() -> None:
    async def scenario() -> None:
        replica = FakeReplica(FakeCluster())
        async with serving(replica) as (_, address):
            async with grpc.aio.insecure_channel(address) as channel:
                stub = chat_pb2_grpc.ChatStub(channel)
                await stub.CreateUser(chat_pb2.CreateUserRequest(name="bob"))
                call = stub.Connect(chat_pb2.ConnectRequest(name="bob", session_id="s"))
                await _read(call)
                assert replica.cluster.users["bob"].live is not None
                call.cancel()
                await asyncio.wait_for(replica.cluster.session_closed.wait(), 5)
                assert replica.cluster.users["bob"].live is None

    run(scenario())


def test_health_reports_serving() -> None:
    async def scenario() -> None:
        async with serving(FakeReplica(FakeCluster())) as (_, address):
            async with grpc.aio.insecure_channel(address) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                for service in ("", "replichat.v1.Chat"):
                    answer = await stub.Check(health_pb2.HealthCheckRequest(service=service))
                    assert answer.status == health_pb2.HealthCheckResponse.SERVING
                error = await _status_of(stub.Check(health_pb2.HealthCheckRequest(service="nope")))
                assert error.code() == grpc.StatusCode.NOT_FOUND

    run(scenario())


def test_reflection_lists_the_services() -> None:
    async def scenario() -> List[str]:
        async with serving(FakeReplica(FakeCluster())) as (_, address):
            async with grpc.aio.insecure_channel(address) as channel:
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                request = reflection_pb2.ServerReflectionRequest(list_services="")
                call = stub.ServerReflectionInfo(iter([request]))
                names: List[str] = []
                async for answer in call:
                    names.extend(s.name for s in answer.list_services_response.service)
                return names

    names = run(scenario())
    assert set(names) == {
        "replichat.v1.Chat",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }


def test_a_busy_port_fails_loudly() -> None:
    async def scenario() -> None:
        server, port = create_grpc_server(FakeReplica(FakeCluster()), "127.0.0.1:0")
        assert port > 0
        await server.start()
        try:
            with pytest.raises(OSError, match="cannot listen on"):
                create_grpc_server(FakeReplica(FakeCluster()), f"127.0.0.1:{port}")
        finally:
            await server.stop(None)

    run(scenario())


def test_a_port_held_by_another_socket_fails_loudly() -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]

        async def scenario() -> None:
            with pytest.raises(OSError):
                create_grpc_server(FakeReplica(FakeCluster()), f"127.0.0.1:{port}")

        run(scenario())
    finally:
        holder.close()


def test_connect_streams_per_client_address_are_capped() -> None:
    async def scenario() -> None:
        replica = FakeReplica(FakeCluster())
        server, port = create_grpc_server(replica, "127.0.0.1:0", max_streams_per_address=2)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = chat_pb2_grpc.ChatStub(channel)
                names = ["alice", "bob", "carol", "dave"]
                for n, name in enumerate(names, 1):
                    await stub.CreateUser(chat_pb2.CreateUserRequest(name=name, client_id="c", request_seq=n))
                calls = [stub.Connect(chat_pb2.ConnectRequest(name=names[k], session_id=f"s{k}")) for k in range(2)]
                for call in calls:
                    assert (await call.read()).WhichOneof("event") == "connected"
                third = stub.Connect(chat_pb2.ConnectRequest(name="carol", session_id="s3"))
                error = await _status_of(third.read())
                assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "too many connect streams from 127.0.0.1 (at most 2)" in (error.details() or "")
                calls[0].cancel()  # a slot comes back once a stream ends
                for _ in range(100):
                    fourth = stub.Connect(chat_pb2.ConnectRequest(name="dave", session_id="s4"))
                    try:
                        if (await fourth.read()).WhichOneof("event") == "connected":
                            break
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.05)  # the server has not seen the cancel yet
                else:
                    raise AssertionError("the slot never came back")
        finally:
            await server.stop(None)

    run(scenario())


def test_malformed_protobuf_is_invalid_argument_with_a_human_message() -> None:
    async def scenario() -> None:
        replica = FakeReplica(FakeCluster())
        async with serving(replica) as (_, address):
            async with grpc.aio.insecure_channel(address) as channel:
                raw = lambda method, stream=False: (channel.unary_stream if stream else channel.unary_unary)(  # noqa: E731
                    f"/replichat.v1.Chat/{method}", request_serializer=lambda b: b, response_deserializer=lambda b: b
                )
                invalid_utf8_name = b"\x0a\x02\xff\xfe"  # field 1 (name), 2 bytes that are not UTF-8
                error = await _status_of(raw("CreateUser")(invalid_utf8_name))
                assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert "malformed request" in error.details() and "CreateUserRequest" in error.details()
                assert "class" not in error.details() and "DecodeError" not in error.details()
                error = await _status_of(raw("Connect", stream=True)(invalid_utf8_name).read())
                assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and "ConnectRequest" in error.details()
                # Nothing changed and the replica keeps serving.
                stub = chat_pb2_grpc.ChatStub(channel)
                assert list((await stub.ListUsers(chat_pb2.ListUsersRequest())).names) == []

    run(scenario())
