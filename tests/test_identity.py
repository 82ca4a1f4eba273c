"""Data-directory identity (replichat/identity.py): the store on its own, the greeting rules
(transport.IdentityGuard), and a real replica restarted with a wiped directory."""
import asyncio
import os
import shutil
import time

import pytest

from replichat.client.api import ChatClient
from replichat.identity import NO_INCARNATION, IdentityError, IdentityStore, cluster_id_from_members
from replichat.runtime.transport import MAGIC, FrameDecoder, FrameError, IdentityGuard

pytestmark = pytest.mark.timeout(120)
CLUSTER = cluster_id_from_members({1: "a:1", 2: "b:1", 3: "c:1"})


def test_the_identity_is_created_once_and_another_clusters_directory_is_refused(tmp_path) -> None:
    first = IdentityStore(str(tmp_path), 1, CLUSTER)
    assert first.identity.fresh and first.identity.cluster_id == CLUSTER
    first.record(2, b"\x02" * 16)
    again = IdentityStore(str(tmp_path), 1, CLUSTER)
    assert not again.identity.fresh and again.identity.incarnation == first.identity.incarnation
    assert again.known(2) == b"\x02" * 16 and again.known(3) is None
    with pytest.raises(IdentityError, match="another cluster"):
        IdentityStore(str(tmp_path), 1, cluster_id_from_members({1: "a:1", 2: "b:1"}))


def test_greetings_admit_known_peers_record_new_ones_and_refuse_replaced_ones(tmp_path) -> None:
    replaced = []
    guard = IdentityGuard(CLUSTER, replaced.append)
    assert "still starting" in (guard.admit(2, b"\x02" * 16, NO_INCARNATION) or "")
    guard.open(IdentityStore(str(tmp_path), 1, CLUSTER))
    me = guard.incarnation
    assert guard.admit(2, b"\x02" * 16, NO_INCARNATION) is None     # first contact: recorded
    assert guard.admit(2, b"\x02" * 16, me) is None                 # the same life again
    assert "not 0202" in (guard.admit(2, b"\x09" * 16, me) or "")   # peer 2's directory was replaced
    assert replaced == []
    # Replica 3 knew us under another incarnation: this directory was replaced.
    assert guard.admit(3, b"\x03" * 16, b"\x07" * 16) is not None
    assert len(replaced) == 1 and "wiped or replaced" in replaced[0]
    # The greeting says who we are and how we know the peer.
    assert guard.greeting(2) == MAGIC + CLUSTER + me + b"\x02" * 16
    assert guard.greeting(3) == MAGIC + CLUSTER + me + NO_INCARNATION


def test_a_greeting_from_another_cluster_is_a_frame_error() -> None:
    decoder = FrameDecoder(2, [1, 2, 3], cluster_id=CLUSTER)
    assert decoder.feed(MAGIC + CLUSTER[:5]) == []  # incomplete: nothing judged yet
    with pytest.raises(FrameError, match="another cluster"):
        decoder.feed(b"\x00" * 11 + bytes(32))


def test_a_replica_restarted_with_a_wiped_directory_refuses_to_serve(process_cluster) -> None:
    cluster = process_cluster(3)

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        victim = next(i for i in sorted(cluster.addresses) if i != leader)
        async with ChatClient(cluster.servers, deadline=20) as client:
            await client.create("carol")
            await client.send("carol", "before the wipe")
            cluster.kill(victim)
            shutil.rmtree(cluster.replica_dir(victim))
            process = cluster.start(victim)
            deadline = time.monotonic() + 60
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert process.poll() == 4, "the wiped replica kept running"
            # The others still serve, and said what happened.
            assert await client.send("carol", "after the wipe") == 2
        with open(cluster.log_path(victim), errors="replace") as f:
            victim_log = f.read()
        assert "refuses to serve" in victim_log and "put that directory back" in victim_log
        # (Whether the others also logged it depends on whether the victim dialled them before
        # their greetings stopped it: the greeting rules are checked on both sides above.)

    asyncio.run(scenario())
