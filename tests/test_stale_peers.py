"""A replica restarted with the command line it was first started with (its --cluster and --peers
list only the original replicas) after the membership changed: it takes the members and their
Raft addresses from the configuration in its own log, follows a leader that is a member added
since, and says in its log that its command line and its log disagree.
"""
import asyncio
import time

import grpc
import pytest

from replichat.client.admin import MembershipClient
from replichat.client.api import ChatClient
from replichat.server.membership_admin import read_token_file
from replichat.proto import chat_pb2, chat_pb2_grpc

pytestmark = pytest.mark.timeout(150)


def admin(cluster) -> MembershipClient:
    return MembershipClient(cluster.servers, admin_token=read_token_file(cluster.admin_token_file),
                            say=lambda text: print(text, flush=True))


async def replace_1_and_3_by_4_and_5(cluster, operator: MembershipClient) -> None:
    """Adds replicas 4 and 5, then removes and stops 1 and 3: replica 2 is the only original left."""
    for new in (4, 5):
        cluster.start_joining(new)
        await operator.add(new, cluster.addresses[new], cluster.peer_addresses[new], catch_up_timeout_s=60)
    for old in (1, 3):
        await operator.remove(old)
        cluster.kill(old)


async def wait_until_following(cluster, node_id: int, leader: int, timeout: float = 30.0) -> None:
    """Replica node_id names `leader` as its leader and has applied the leader's commit index."""
    leader_status = await cluster.status(leader)
    assert leader_status is not None, f"leader {leader} does not answer status"
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = await cluster.status(node_id)
        if status is not None and status.leader_id == leader and status.applied_index >= leader_status.commit_index:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"replica {node_id} does not follow leader {leader} up to {leader_status.commit_index}: {status}")


def test_a_replica_restarted_with_its_original_peers_follows_a_leader_added_since(process_cluster) -> None:
    cluster = process_cluster(3, admin_token=True)
    original_command = cluster.command(2)

    async def scenario() -> None:
        await cluster.wait_for_leader()
        operator = admin(cluster)
        try:
            await replace_1_and_3_by_4_and_5(cluster, operator)
            cluster.kill(2)  # so the leader is one of the added replicas
            leader = await cluster.wait_for_leader(among=[4, 5])
            async with ChatClient([cluster.addresses[4], cluster.addresses[5]]) as client:
                await client.create("olga")
                for n in range(20):
                    await client.send("olga", f"while 2 was down {n}")
            assert cluster.command(2) == original_command  # --cluster and --peers: replicas 1-3 only
            assert str(cluster.peer_addresses[4]) not in " ".join(original_command)

            cluster.start(2)
            await wait_until_following(cluster, 2, leader)
            async with ChatClient([cluster.addresses[2]]) as client:
                assert await client.list() == ["olga"]
                await client.send("olga", "after the restart")  # forwarded to the leader, committed
        finally:
            await operator.close()

    asyncio.run(scenario())
    with open(cluster.log_path(2), errors="replace") as f:
        log = f.read()
    restarted = log[log.rindex("replica 2 data identity"):]  # what its second start logged
    four, five = (f"{i}={cluster.peer_addresses[i]}" for i in (4, 5))
    assert "the configuration in its log (voters {2,4,5}) differs from the one it was started with" in restarted
    warning = next(line for line in restarted.splitlines() if "its --peers and the configuration in its log" in line)
    assert "WARNING" in warning and f"members {four}, {five} are not in --peers" in warning, warning
    assert "replicas 1, 3 are in --peers but no longer in the configuration" in warning, warning
    starting = next(line for line in restarted.splitlines() if "replica 2 starting" in line)
    assert four in starting and five in starting, starting  # the peers in effect, not only --peers


def test_a_replica_that_was_down_while_members_were_added_follows_a_leader_among_them(process_cluster) -> None:
    """Replica 2 misses the adds of 4 and 5 and the removals of 1 and 3: neither its --peers nor
    its log name the leader. The leader's connection introduces itself (its Raft address, its
    certificate proving who it is); replica 2 answers it there, catches up, and from then on
    takes the members from its log."""
    cluster = process_cluster(3, admin_token=True)

    async def scenario() -> None:
        await cluster.wait_for_leader()
        operator = admin(cluster)
        try:
            cluster.kill(2)
            await replace_1_and_3_by_4_and_5(cluster, operator)
            leader = await cluster.wait_for_leader(among=[4, 5])
            async with ChatClient([cluster.addresses[4], cluster.addresses[5]]) as client:
                await client.create("pia")
                await client.send("pia", "while 2 was down")
            cluster.start(2)  # its command line names replicas 1-3 only; its log too
            await wait_until_following(cluster, 2, leader)
            async with grpc.aio.insecure_channel(cluster.addresses[2]) as channel:
                view = await chat_pb2_grpc.ChatStub(channel).Members(chat_pb2.MembersRequest(), timeout=5)
            assert view.replica_id == 2 and sorted(m.id for m in view.members if m.voter) == [2, 4, 5]
            async with ChatClient([cluster.addresses[2]]) as client:
                assert await client.list() == ["pia"]
        finally:
            await operator.close()

    asyncio.run(scenario())
    with open(cluster.log_path(2), errors="replace") as f:
        restarted = f.read().rsplit("replica 2 data identity", 1)[-1]
    assert "(its certificate says so) is not in this replica's configuration" in restarted, restarted[-3000:]
    assert "the Raft address it gave, until its log names it" in restarted
