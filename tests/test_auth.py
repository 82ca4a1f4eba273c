"""Users own their mailboxes: every attack of issue 12 against a real replica, over gRPC and
the wire protocol, each asserting the refusal AND that nothing changed.

The attacker is a client with its own (empty) credential store: it knows every name and may
learn session ids and client ids, but not the victims' credentials.
"""
import asyncio
import glob
import os
from typing import Awaitable, List, Tuple

import pytest

from replichat.client.api import ChatClient
from replichat.client.credentials import FileCredentials, MemoryCredentials
from replichat.errors import ChatError, Code
from replichat.proto import chat_pb2
from replichat.wire import codec
from replichat.wire.client import WireClient, open_wire_client

pytestmark = pytest.mark.timeout(120)

WAIT = 15.0


async def refused(code: Code, call: Awaitable[object]) -> str:
    with pytest.raises(ChatError) as error:
        await asyncio.wait_for(call, WAIT)
    assert error.value.code is code, error.value
    return error.value.message


async def mailbox(client: ChatClient, name: str) -> Tuple[int, List[str]]:
    """(queued, texts) of `name`'s mailbox, read by a client holding name's credential; the
    session is closed without acknowledging anything."""
    session = await client.connect(name)
    try:
        connected = await asyncio.wait_for(session.__anext__(), WAIT)
        assert isinstance(connected, chat_pb2.Connected)
        texts = []
        for _ in range(connected.queued):
            delivery = await asyncio.wait_for(session.__anext__(), WAIT)
            texts.append(delivery.text)
        return connected.queued, texts
    finally:
        session._acks.wanted = session._acks.done = 0  # nothing to flush: we acked nothing
        await session.close()


def wire_address(cluster) -> Tuple[str, int]:
    host, _, port = cluster.wire_addresses[1].rpartition(":")
    return host, int(port)


def test_grpc_attacks_are_refused_and_change_nothing(process_cluster, tmp_path) -> None:
    cluster = process_cluster(1, wire=True)

    async def scenario() -> None:
        await cluster.wait_for_leader()
        async with ChatClient(cluster.servers, credentials=MemoryCredentials()) as owner, ChatClient(
            cluster.servers, credentials=MemoryCredentials()
        ) as mallory:
            await owner.create("alice")
            await owner.create("bob")
            await owner.send("bob", "for bob 1", sender="alice")
            await owner.send("bob", "for bob 2", sender="alice")
            assert await mailbox(owner, "bob") == (2, ["for bob 1", "for bob 2"])

            # Reading bob's mailbox, taking over, acking, deleting: all need bob's credential.
            assert "needs bob's credential" in await refused(Code.UNAUTHENTICATED, mallory.connect("bob"))
            await refused(Code.UNAUTHENTICATED, mallory.ack("bob", 2**64 - 1, "any-session"))
            await refused(Code.UNAUTHENTICATED, mallory.delete("bob"))
            # A wrong credential is no better than none.
            mallory.credentials.put("bob", "x" * 43)
            assert "wrong credential for bob" in await refused(Code.UNAUTHENTICATED, mallory.connect("bob"))
            await refused(Code.UNAUTHENTICATED, mallory.ack("bob", 2**64 - 1, "any-session"))
            mallory.credentials.forget("bob")
            # Sending as someone else, or as a user that does not exist.
            await refused(Code.UNAUTHENTICATED, mallory.send("bob", "from alice, really", sender="alice"))
            await refused(Code.NOT_FOUND, mallory.send("bob", "from a ghost", sender="ghost"))
            assert await mailbox(owner, "bob") == (2, ["for bob 1", "for bob 2"])
            assert await owner.list() == ["alice", "bob"]

            # A live session cannot be taken over, and its acks need its own session id.
            session = await owner.connect("bob")
            assert isinstance(await asyncio.wait_for(session.__anext__(), WAIT), chat_pb2.Connected)
            await refused(Code.UNAUTHENTICATED, mallory.connect("bob"))
            # Even with bob's credential, an ack must name bob's current session.
            message = await refused(Code.INVALID_ARGUMENT, owner.ack("bob", 2**64 - 1, "not-the-session"))
            assert "current session" in message
            await owner.send("bob", "still live", sender="alice")
            texts = [(await asyncio.wait_for(session.__anext__(), WAIT)).text for _ in range(3)]
            assert texts == ["for bob 1", "for bob 2", "still live"]
            await session.close()

            # Reusing the victim's client id with a huge request number disturbs nothing: the
            # exactly-once table is per user.
            victim = ChatClient(cluster.servers, client_id="victim-id", credentials=owner.credentials)
            thief = ChatClient(cluster.servers, client_id="victim-id", credentials=MemoryCredentials())
            try:
                assert await victim.send("alice", "one", sender="bob") == 1
                thief._request_seq = 10**12
                await thief.create("mallory")
                assert await thief.send("alice", "from mallory", sender="mallory") == 2
                assert await victim.send("alice", "two", sender="bob") == 3  # not "stale request"
            finally:
                await victim.close()
                await thief.close()

    asyncio.run(scenario())


def test_failed_logins_are_rate_limited_and_secrets_stay_out_of_logs(process_cluster) -> None:
    cluster = process_cluster(1, wire=True)

    async def scenario() -> None:
        await cluster.wait_for_leader()
        async with ChatClient(cluster.servers, credentials=MemoryCredentials()) as owner, ChatClient(
            cluster.servers, credentials=MemoryCredentials()
        ) as mallory:
            await owner.create("carol")
            token = owner.credentials.get("carol")
            mallory.credentials.put("carol", "guess-" + "y" * 20)
            codes = []
            for _ in range(12):
                with pytest.raises(ChatError) as error:
                    await mallory.delete("carol")
                codes.append(error.value.code)
            # 10 failures a minute per user, then refused before any hashing.
            assert codes[:10] == [Code.UNAUTHENTICATED] * 10
            assert codes[10:] == [Code.RATE_LIMITED] * 2
            assert await owner.list() == ["carol"]
            # The owner's credential, verified before, still works (remembered by this replica).
            await owner.send("carol", "hi", sender="carol")
            # Neither the log nor the state nor the replica's own log holds the secret.
            for path in glob.glob(os.path.join(os.path.dirname(cluster.replica_dir(1)), "**", "*"), recursive=True):
                if os.path.isfile(path):
                    with open(path, "rb") as file:
                        assert token.encode() not in file.read(), path

    asyncio.run(scenario())


def test_wire_attacks_are_refused_and_a_brief_client_still_works(process_cluster) -> None:
    cluster = process_cluster(1, wire=True)

    async def scenario() -> None:
        await cluster.wait_for_leader()
        host, port = wire_address(cluster)
        brief = await open_wire_client(host, port)
        mallory = await open_wire_client(host, port)
        try:
            # A client written from the brief: create and list work; create logs it in.
            await brief.create("user3", "t" * 43)
            created = await brief.create_with_token("user2")
            assert created.name == "user2" and len(created.credential) >= 16
            assert await brief.list_users() == ["user2", "user3"]
            assert await brief.send("user3", "hello") == 1  # from user2 (logged in by create)

            # `connect NAME` without NAME's credential is refused (and does not make later
            # sends come from NAME); so are ack and delete.
            with pytest.raises(ChatError) as error:
                await mallory.connect("user3")
            assert error.value.code is Code.UNAUTHENTICATED and "auth NAME,CREDENTIAL" in error.value.message
            for call in (mallory.ack("user3", 2**64 - 1), mallory.delete("user3")):
                with pytest.raises(ChatError) as error:
                    await call
                assert error.value.code is Code.UNAUTHENTICATED
            assert await mallory.send("user2", "who am i") == 1  # anonymous: no sender
            with pytest.raises(ChatError) as error:
                await mallory.auth("user3", "w" * 43)
            assert error.value.code is Code.UNAUTHENTICATED

            # The rightful owner logs in and reads everything, untouched.
            owner = await open_wire_client(host, port)
            try:
                assert await owner.auth("user3", "t" * 43) == "user3"
                connected = await owner.connect("user3")
                assert connected.queued == 1
                delivery = await asyncio.wait_for(owner.next_event(), WAIT)
                assert isinstance(delivery, codec.Delivery)
                assert (delivery.sender, delivery.text) == ("user2", "hello")
                # And user2's mailbox has mallory's message marked anonymous.
                assert await brief.connect("user2") == codec.Connected("user2", 1)
                anonymous = await asyncio.wait_for(brief.next_event(), WAIT)
                assert isinstance(anonymous, codec.Delivery) and anonymous.sender == ""
            finally:
                await owner.close()
        finally:
            await brief.close()
            await mallory.close()

    asyncio.run(scenario())


def test_insecure_no_auth_restores_the_open_brief(process_cluster) -> None:
    cluster = process_cluster(1, wire=True, server_args=["--insecure-no-auth"])

    async def scenario() -> None:
        await cluster.wait_for_leader()
        async with ChatClient(cluster.servers, credentials=MemoryCredentials()) as one, ChatClient(
            cluster.servers, credentials=MemoryCredentials()
        ) as other:
            await one.create("dora")
            await one.send("dora", "hi", sender="dora")
            assert await mailbox(other, "dora") == (1, ["hi"])
            assert await other.send("dora", "as dora", sender="dora") == 2
            assert await other.delete("dora") == 2
        assert "--insecure-no-auth" in cluster.logs()

    asyncio.run(scenario())


def test_the_stock_client_keeps_credentials_in_a_private_file(private_credentials: str) -> None:
    store = FileCredentials()
    assert store.path == private_credentials
    assert store.get("user2") == ""
    store.put("user2", "a" * 43)
    FileCredentials(private_credentials).put("user3", "b" * 43)  # another client, same file
    assert (store.get("user2"), store.get("user3")) == ("a" * 43, "b" * 43)
    assert os.stat(private_credentials).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(private_credentials)).st_mode & 0o077 == 0
    store.forget("user2")
    assert store.get("user2") == "" and store.get("user3") == "b" * 43
