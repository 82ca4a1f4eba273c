"""The `members` request: the listener answers it from the backend's membership view, and the
wire client (replichat/client/wire_api.py) learns the replicas it fails over between from it.

Real TCP on 127.0.0.1 in front of the in-memory backend of test_listener.py; two listeners that
share one backend stand for two replicas of one replicated state.
"""
import asyncio
from typing import List, Optional

import pytest

from replichat.client import members, wire_api
from replichat.client.wire_api import WireChatApi
from replichat.errors import ChatError, Code
from replichat.proto import chat_pb2
from replichat.wire import codec
from replichat.wire.listener import cluster_message
from tests.wire.test_listener import HOST, FakeBackend, Raw, bad_request, client, frame, run, serving, within

pytestmark = pytest.mark.timeout(60)


def view(leader: int, *members: "tuple[int, str]") -> chat_pb2.MembersResponse:
    return chat_pb2.MembersResponse(
        replica_id=members[0][0] if members else 0, leader_id=leader,
        members=[chat_pb2.MemberInfo(id=rid, wire_address=address, voter=True) for rid, address in members],
    )


class MembersBackend(FakeBackend):
    """A FakeBackend with a membership view that a test sets, counting the questions."""

    def __init__(self) -> None:
        super().__init__()
        self.view = view(0)
        self.refusal: Optional[ChatError] = None
        self.asked = 0

    def members(self) -> chat_pb2.MembersResponse:
        self.asked += 1
        if self.refusal is not None:
            raise self.refusal
        return self.view


# --- the listener ---------------------------------------------------------------------------


def test_members_is_answered_from_the_view_whoever_asks() -> None:
    async def main() -> None:
        backend = MembersBackend()
        backend.view = view(4, (5, "127.0.0.1:50155"), (1, ""), (4, "[::1]:50154"))
        async with serving(backend) as listener, client(listener) as c:
            # Not logged in: anyone may ask, as over gRPC.
            assert await c.members() == codec.Cluster(4, ((1, ""), (4, "[::1]:50154"), (5, "127.0.0.1:50155")))
            backend.refusal = ChatError(Code.UNAVAILABLE, "replica 1 is starting")
            with pytest.raises(ChatError) as refused:
                await c.members()
            assert refused.value.code is Code.UNAVAILABLE and "starting" in refused.value.message
            await c.ping()  # the connection goes on

    run(main())


def test_a_backend_without_a_membership_answers_as_an_older_server() -> None:
    async def main() -> None:
        async with serving(FakeBackend()) as listener, client(listener) as c:
            with pytest.raises(ChatError) as refused:
                await c.members()
            assert refused.value.code is Code.INVALID_ARGUMENT and "bad request" in refused.value.message
            await c.ping()

    run(main())


def test_an_unknown_or_removed_leader_is_sent_as_none() -> None:
    assert cluster_message(view(9, (1, "h:1"), (2, "h:2"))) == codec.Cluster(0, ((1, "h:1"), (2, "h:2")))
    assert cluster_message(view(0, (1, "h:1"))) == codec.Cluster(0, ((1, "h:1"),))


def test_members_with_arguments_is_a_bad_request_and_the_connection_goes_on() -> None:
    async def main() -> None:
        backend = MembersBackend()
        backend.view = view(1, (1, "h:1"))
        async with serving(backend) as listener:
            raw = await Raw.open(listener)
            await raw.write(frame(b"members", b"1"))
            assert bad_request(await raw.response(), "takes 0 argument(s), got 1")
            await raw.write(frame(b"members"))
            assert await raw.response() == codec.Cluster(1, ((1, "h:1"),))
            assert backend.asked == 1
            raw.close()

    run(main())


def test_a_view_that_cannot_be_encoded_is_answered_with_an_error() -> None:
    async def main() -> None:
        backend = MembersBackend()
        backend.view = view(0, (1, "not an address"))
        async with serving(backend) as listener, client(listener) as c:
            with pytest.raises(ChatError, match="cannot answer"):
                await c.members()
            await c.ping()

    run(main())


def test_a_hostile_cluster_answer_ends_the_connection_not_the_client() -> None:
    """A server answering `members` with an invalid `cluster` (here: 65 members) is not the
    protocol: the client drops the connection with a WireError and keeps no more than the
    answer's bound of it."""

    async def main() -> None:
        async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readexactly(1024)
            writer.write(frame(b"cluster", ("0," + ",".join(f"{i}=" for i in range(1, 66))).encode()))
            await writer.drain()
            await reader.read()

        server = await asyncio.start_server(hostile, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        c = await codec_client(port)
        try:
            with pytest.raises(codec.WireError, match="65 members"):
                await within(c.members())
            await within(c.wait_closed())
        finally:
            await c.close()
            server.close()
            await server.wait_closed()

    run(main())


async def codec_client(port: int):
    from replichat.wire.client import WireClient

    return await WireClient.open(HOST, port, keepalive=None)


# --- the client learns the members -----------------------------------------------------------


def addr(listener) -> str:
    return f"{HOST}:{listener.port}"


def test_the_client_fails_over_to_members_it_was_never_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """Started with replica A only, the client learns B (and skips C, whose wire address is not
    known) from A; once A is gone, requests go to B."""
    monkeypatch.setattr(members, "MEMBERS_REFRESH_S", 3600.0)  # only connects and failovers ask

    async def main() -> None:
        backend = MembersBackend()
        async with serving(backend) as a, serving(backend) as b:
            backend.view = view(2, (1, addr(a)), (2, addr(b)), (3, ""))
            api = WireChatApi([addr(a)], deadline=5.0, attempt_timeout=1.0)
            try:
                await api.create("ann")
                await within(api._members.task)  # type: ignore[arg-type]
                assert api.servers == [addr(a), addr(b)]  # not complete (3 has no address): nothing dropped
                assert backend.asked == 1
                for _ in range(5):
                    assert await api.list() == ["ann"]
                assert backend.asked == 1  # bounded: not once per request

                await a.close()
                assert await api.list() == ["ann"]  # failed over to B, learned from A
                assert api.ring.current == addr(b)
                await within(api._members.task)  # type: ignore[arg-type]
                assert backend.asked == 2  # a failover asks at once
            finally:
                await api.close()

    run(main())


def test_a_complete_answer_drops_replicas_that_are_no_longer_members(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(members, "MEMBERS_REFRESH_S", 0.0)  # every answered request asks

    async def main() -> None:
        backend = MembersBackend()
        async with serving(backend) as a, serving(backend) as b, serving(backend) as c:
            backend.view = view(1, (1, addr(a)), (2, addr(b)), (3, ""))
            api = WireChatApi([addr(a), "127.0.0.1:9"], deadline=5.0, attempt_timeout=1.0)
            try:
                await api.list()
                await within(api._members.task)  # type: ignore[arg-type]
                # No leader-complete answer yet (3's address unknown): 127.0.0.1:9 is kept.
                assert api.servers == [addr(a), "127.0.0.1:9", addr(b)]
                backend.view = view(3, (2, addr(b)), (3, addr(c)))  # 1 removed, 3's address known
                await api.list()
                await within(api._members.task)  # type: ignore[arg-type]
                assert api.servers == [addr(b), addr(c)]
                # Still answered by the connection it has, then by the new members only.
                assert await api.list() == []
            finally:
                await api.close()

    run(main())


def test_a_replica_that_does_not_know_members_is_not_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """An older replica answers `members` as an unknown command (INVALID_ARGUMENT): the client
    keeps its own list and stops asking."""
    monkeypatch.setattr(members, "MEMBERS_REFRESH_S", 0.0)

    async def main() -> None:
        backend = MembersBackend()
        backend.refusal = ChatError(Code.INVALID_ARGUMENT, "bad request: unknown command 'members'")
        async with serving(backend) as a:
            api = WireChatApi([addr(a)], deadline=5.0, attempt_timeout=1.0)
            try:
                for _ in range(5):
                    assert await api.list() == []
                    if api._members.task is not None:
                        await within(api._members.task)
                assert backend.asked == 1
                assert api.servers == [addr(a)]
            finally:
                await api.close()

    run(main())


def test_members_learned_keep_the_order_of_known_ones() -> None:
    ring = wire_api.ReplicaRing(["a:1", "b:1"])
    assert ring.learn(["", "c:1", "a:1"], complete=False)
    assert ring.servers == ["a:1", "b:1", "c:1"]
    assert not ring.learn(["", ""], complete=True)  # nothing with an address: nothing learned
    ring_servers: List[str] = ring.servers
    assert ring_servers == ["a:1", "b:1", "c:1"]
