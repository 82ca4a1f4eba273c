"""Damaged data on a real replica: a flipped byte in its Raft log makes it refuse to start,
naming the entry, and nothing of it reaches the others; a damaged chat state database is
rebuilt from the log before the replica serves, and it then serves what the others serve."""
import asyncio
import os
import sqlite3

import pytest

from replichat.client.api import ChatClient
from tests.test_replication import receive

pytestmark = pytest.mark.timeout(120)


async def fill(cluster, leader: int) -> None:
    async with ChatClient([cluster.addresses[leader]]) as client:
        await client.create("gina")
        for n in range(30):
            await client.send("gina", f"m{n}")


def test_a_flipped_byte_in_the_raft_log_stops_the_replica_naming_the_entry(process_cluster) -> None:
    cluster = process_cluster(3)

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        await fill(cluster, leader)
        victim = next(i for i in cluster.addresses if i != leader)
        status = await cluster.status(leader)
        await cluster.wait_for_applied(status.commit_index, [victim])
        cluster.kill(victim)
        db = sqlite3.connect(os.path.join(cluster.replica_dir(victim), "raft.db"))
        (index, data) = db.execute("SELECT idx, data FROM log WHERE length(data) > 20 ORDER BY idx LIMIT 1 OFFSET 10").fetchone()
        db.execute("UPDATE log SET data = ? WHERE idx = ?", (bytes([data[0]]) + bytes([data[1] ^ 1]) + bytes(data[2:]), index))
        db.commit()
        db.close()
        process = cluster.start(victim)
        assert process.wait(30) == 3
        with open(cluster.log_path(victim), errors="replace") as f:
            output = f.read()
        assert f"refuses to start: raft log entry {index} " in output, output[-2000:]
        # The others are unaffected and still agree.
        async with ChatClient([cluster.addresses[leader]]) as client:
            session = await client.connect("gina")
            got = await receive(session, 30, timeout=10)
            assert [d.text for d in got] == [f"m{n}" for n in range(30)]

    asyncio.run(scenario())


def test_a_damaged_state_database_is_rebuilt_before_serving(process_cluster) -> None:
    cluster = process_cluster(3)

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        await fill(cluster, leader)
        victim = next(i for i in cluster.addresses if i != leader)
        status = await cluster.status(leader)
        await cluster.wait_for_applied(status.commit_index, [victim])
        cluster.kill(victim)
        state_path = os.path.join(cluster.replica_dir(victim), "state.db")
        db = sqlite3.connect(state_path)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        with open(state_path, "r+b") as f:
            for offset in range(4096 + 8, os.path.getsize(state_path), 4096):
                f.seek(offset)
                f.write(b"\xff" * 64)
        cluster.start(victim)
        await cluster.wait_for_applied(status.commit_index, [victim])
        assert os.path.exists(state_path + ".corrupt")
        async with ChatClient([cluster.addresses[victim]]) as client:
            assert await client.list() == ["gina"]
            session = await client.connect("gina")
            got = await receive(session, 30, timeout=10)
            assert [d.text for d in got] == [f"m{n}" for n in range(30)]

    asyncio.run(scenario())
