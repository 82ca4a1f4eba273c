"""The wire client learns the cluster's members (`members`, docs/wire-protocol.md) on real
replica processes: started with the wire addresses of the original three replicas only, it keeps
working, session included, after two replicas were added and the original three removed and
stopped.
"""
import asyncio
import time
from typing import Callable, List

import pytest

from replichat.client.admin import MembershipClient
from replichat.client.wire_api import WireChatApi
from replichat.server.membership_admin import read_token_file
from replichat.proto import chat_pb2

pytestmark = pytest.mark.timeout(150)


async def until(condition: Callable[[], bool], what: str, poke: Callable[[], "asyncio.Future"], timeout: float = 30.0) -> None:
    """Await `poke()` (a request that lets the client ask for the members) until `condition()`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await poke()
        await asyncio.sleep(0.1)


def test_a_wire_client_follows_the_members_from_the_original_three_to_the_added_two(process_cluster) -> None:
    cluster = process_cluster(3, wire=True, admin_token=True)
    originals = [cluster.wire_addresses[i] for i in (1, 2, 3)]

    async def scenario() -> None:
        await cluster.wait_for_leader()
        operator = MembershipClient(cluster.servers, admin_token=read_token_file(cluster.admin_token_file),
                                    say=lambda text: print(text, flush=True))
        writer = WireChatApi(list(originals), deadline=20.0)
        reader = WireChatApi(list(originals), deadline=20.0)
        received: List[str] = []
        try:
            await writer.create("wanda")
            await writer.send("wanda", "before", sender="wanda")
            session = await reader.connect("wanda")

            async def read() -> None:
                async for event in session:
                    if isinstance(event, chat_pb2.Delivery):
                        received.append(event.text)
                        session.ack(event.seq)

            reading = asyncio.ensure_future(read())
            for new in (4, 5):
                cluster.start_joining(new)
                await operator.add(new, cluster.addresses[new], cluster.peer_addresses[new],
                                   cluster.wire_addresses[new], catch_up_timeout_s=60)
            added = {cluster.wire_addresses[4], cluster.wire_addresses[5]}
            for client in (writer, reader):
                await until(lambda: added <= set(client.servers), "the client learns replicas 4 and 5",
                            lambda: client.list())
            assert set(writer.servers) == set(originals) | added  # 1-3's wire addresses are not all known

            for old in (1, 2, 3):  # removing the leader hands leadership over first
                await operator.remove(old)
            for old in (1, 2, 3):
                cluster.kill(old)
            # A read first: the write after it then starts on a live replica (a write whose
            # connection dies under it is reported as "may or may not have been applied").
            assert await writer.list() == ["wanda"]
            await writer.send("wanda", "after", sender="wanda")
            await until(lambda: set(writer.servers) == added, "the client drops the removed replicas",
                        lambda: writer.list())

            deadline = time.monotonic() + 30
            while received != ["before", "after"]:
                assert time.monotonic() < deadline, f"the session got {received}"
                await asyncio.sleep(0.05)
            assert set(reader.servers) <= set(originals) | added
            reading.cancel()
        finally:
            await operator.close()
            await writer.close()
            await reader.close()

    asyncio.run(scenario())


def test_a_wire_client_given_one_replica_learns_the_others_and_fails_over_to_them(process_cluster) -> None:
    """Replicas started from --cluster know each other's wire addresses (--wire-cluster, which the
    launcher passes): any one of them answers `members` with all three, so a wire client told of
    replica 1 alone keeps working when replica 1 is stopped."""
    cluster = process_cluster(3, wire=True)
    everyone = {cluster.wire_addresses[i] for i in (1, 2, 3)}

    async def scenario() -> None:
        await cluster.wait_for_leader()
        for i in (1, 2, 3):  # each replica's own answer is complete: a leader and every address
            async with WireChatApi([cluster.wire_addresses[i]], deadline=20.0) as alone:
                await until(lambda: set(alone.servers) == everyone, f"replica {i} names all three",
                            lambda: alone.list())
        client = WireChatApi([cluster.wire_addresses[1]], deadline=20.0)
        try:
            await client.create("xena")
            await until(lambda: set(client.servers) == everyone, "the client learns replicas 2 and 3",
                        lambda: client.list())
            cluster.kill(1)
            # A read first, answered by replica 2 or 3: a write whose connection dies under it
            # would be reported as "may or may not have been applied".
            assert await client.list() == ["xena"]
            assert client.ring.current != cluster.wire_addresses[1]
            await client.send("xena", "after replica 1 stopped", sender="xena")
        finally:
            await client.close()

    asyncio.run(scenario())
