"""Snapshots on real replica processes: a replica kept down while the others take several
snapshots (and compact their logs past what it has) catches up by InstallSnapshot and then
serves the same users and deliveries as the others; every replica restarts from its snapshot."""
import asyncio
import glob
import os
import re
import time

import pytest

from replichat.client.api import ChatClient
from tests.test_replication import receive

pytestmark = pytest.mark.timeout(180)

SNAPSHOT_ENTRIES = 40


def log_of(cluster, node_id: int) -> str:
    with open(cluster.log_path(node_id), errors="replace") as f:
        return f.read()


def test_a_replica_down_across_snapshots_catches_up_by_install(process_cluster) -> None:
    cluster = process_cluster(3, server_args=["--snapshot-entries", str(SNAPSHOT_ENTRIES), "--snapshot-keep", "5"])

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        lagging = next(i for i in cluster.addresses if i != leader)
        cluster.kill(lagging)
        async with ChatClient([cluster.addresses[leader]]) as client:
            await client.create("hana")
            for n in range(5 * SNAPSHOT_ENTRIES):
                await client.send("hana", f"m{n}")
        for node_id in cluster.addresses:
            if node_id != lagging:
                taken = re.findall(r"took a snapshot at index (\d+)", log_of(cluster, node_id))
                assert len(taken) >= 3, f"replica {node_id} took {len(taken)} snapshots"
        status = await cluster.status(leader)
        assert status.first_index > 2, "the leader's log was not compacted past what the lagging replica has"
        cluster.start(lagging)
        await cluster.wait_for_applied(status.commit_index, [lagging])
        assert "installed snapshot" in log_of(cluster, lagging)
        caught_up = await cluster.status(lagging)
        assert caught_up.snapshot_index >= 3 * SNAPSHOT_ENTRIES and caught_up.first_index > 1
        async with ChatClient([cluster.addresses[lagging]]) as client:
            assert await client.list() == ["hana"]
            session = await client.connect("hana")
            got = await receive(session, 5 * SNAPSHOT_ENTRIES, timeout=20)
            assert [d.text for d in got] == [f"m{n}" for n in range(5 * SNAPSHOT_ENTRIES)]
            assert [d.seq for d in got] == list(range(1, 5 * SNAPSHOT_ENTRIES + 1))
        # Everyone restarts from a snapshot plus a short log, and still serves the same.
        for node_id in list(cluster.addresses):
            cluster.kill(node_id)
        cluster.start_all()
        await cluster.wait_for_leader()
        # Leftovers of the kill are removed before a replica serves; one that was killed while
        # taking a snapshot may take it again once it applies the new leader's no-op, and holds
        # two files until that snapshot is recorded and the older one deleted: wait for one.
        deadline = time.monotonic() + 20
        while True:
            counts = {
                node_id: len(glob.glob(os.path.join(cluster.replica_dir(node_id), "snapshots", "snapshot-*.db")))
                for node_id in cluster.addresses
            }
            if set(counts.values()) == {1} or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert set(counts.values()) == {1}, f"snapshot files per replica: {counts}"
        async with ChatClient([cluster.addresses[lagging]]) as client:
            await client.send("hana", "after")
            session = await client.connect("hana")
            got = await receive(session, 5 * SNAPSHOT_ENTRIES + 1, timeout=20)
            assert [d.text for d in got][-1] == "after"

    asyncio.run(scenario())
