"""Benchmark of the replicated service on this machine: real replica processes on 127.0.0.1.

    python3 bench/replication.py [--replicas 5] [--seconds 5] [--kills 5] [--stored 100000]

Reports, for one cluster started fresh in a temporary folder:
  * baselines measured in the same run: SQLite commits/s with synchronous=FULL (the disk's
    fsync rate, on the same filesystem) and unary gRPC calls/s to one replica (Status, no
    consensus): what one RPC per write would cap at;
  * sends/s and latency p50/p99 with 1 and with 64 concurrent senders, each send a
    replicated, fsynced write, with ratios to both baselines;
  * the write pause after kill -9 of the leader (median of --kills kills);
  * restart time of the whole cluster with --stored messages queued.
Prints a table and writes JSON to bench/results/replication.json.
"""
import argparse
import asyncio
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.cluster import BenchCluster as ProcessCluster  # noqa: E402
from bench.common import percentile, progress, save_json  # noqa: E402
from replichat.client.api import ChatClient  # noqa: E402
from replichat.errors import ChatError, Code  # noqa: E402


def fsync_baseline(folder: str, seconds: float) -> float:
    db = sqlite3.connect(os.path.join(folder, "fsync-baseline.db"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        db.execute("INSERT INTO t (v) VALUES (?)", (b"x" * 64,))
        count += 1
    elapsed = time.perf_counter() - start
    db.close()
    return count / elapsed


async def rpc_baseline(cluster: ProcessCluster, node_id: int, seconds: float) -> float:
    import grpc

    from replichat.proto import chat_pb2, chat_pb2_grpc

    async with grpc.aio.insecure_channel(cluster.addresses[node_id]) as channel:
        stub = chat_pb2_grpc.ChatStub(channel)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            await stub.Status(chat_pb2.StatusRequest())
            count += 1
        return count / (time.perf_counter() - start)


async def throughput(servers: List[str], concurrency: int, seconds: float) -> Dict[str, float]:
    latencies: List[float] = []
    async with ChatClient(servers) as client:
        await client.create(f"sink{concurrency}")
        stop_at = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            n = 0
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                await client.send(f"sink{concurrency}", f"w{k}-{n}", sender="")
                latencies.append(time.perf_counter() - t0)
                n += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {
        "sends_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "sends": len(latencies),
    }


async def failover_pause(cluster: ProcessCluster) -> float:
    """Longest gap between two successful sends after a kill -9 of the leader."""
    leader = await cluster.wait_for_leader()
    servers = [a for i, a in sorted(cluster.addresses.items()) if i != leader] + [cluster.addresses[leader]]
    async with ChatClient(servers) as client:
        try:
            await client.create("failover")
        except ChatError as error:
            if error.code is not Code.ALREADY_EXISTS:  # made by an earlier round
                raise
        done_times: List[float] = []
        stop = asyncio.Event()

        async def writer() -> None:
            while not stop.is_set():
                await client.send("failover", "tick")
                done_times.append(time.perf_counter())

        task = asyncio.ensure_future(writer())
        while len(done_times) < 20:
            await asyncio.sleep(0.01)
        killed_at = time.perf_counter()
        cluster.kill(leader)
        while not done_times or done_times[-1] < killed_at + 0.2 or len([t for t in done_times if t > killed_at]) < 20:
            await asyncio.sleep(0.01)
        stop.set()
        await task
    cluster.start(leader)
    await cluster.wait_for_leader(among=list(cluster.addresses))
    # The longest gap between consecutive completed sends from just before the kill on.
    # (A send committed before the kill may still complete after it; the stall comes later.)
    window = [max(t for t in done_times if t <= killed_at)] + [t for t in done_times if t > killed_at]
    return max(b - a for a, b in zip(window, window[1:]))


async def restart_time(cluster: ProcessCluster, stored: int) -> Dict[str, float]:
    async with ChatClient(cluster.servers) as client:
        await client.create("archive")
        sem = asyncio.Semaphore(64)
        written = 0

        async def one(n: int) -> None:
            nonlocal written
            async with sem:
                await client.send("archive", f"stored message {n:07d}")
                written += 1
                if written % 20000 == 0:
                    progress(f"  stored {written}/{stored}")

        await asyncio.gather(*(one(n) for n in range(stored)))
    for node_id in list(cluster.addresses):
        cluster.kill(node_id)
    start = time.perf_counter()
    cluster.start_all()
    async with ChatClient(cluster.servers, deadline=120) as client:
        await client.send("archive", "after restart")
        first_write = time.perf_counter() - start
        users = await client.list("archive")
    assert users == ["archive"]
    return {"stored_messages": stored, "restart_to_first_write_s": first_write}


async def main_async(args: argparse.Namespace) -> Dict[str, object]:
    folder = tempfile.mkdtemp(prefix="replichat-bench-")
    progress(f"data in {folder}")
    results: Dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "python": platform.python_version(),
        "replicas": args.replicas,
    }
    progress("baseline: SQLite synchronous=FULL commits/s")
    results["fsync_commits_per_s"] = fsync_baseline(folder, args.seconds)
    cluster = ProcessCluster(os.path.join(folder, "cluster"), args.replicas)
    cluster.start_all()
    try:
        leader = await cluster.wait_for_leader()
        progress("baseline: unary gRPC calls/s to one replica")
        results["grpc_unary_per_s"] = await rpc_baseline(cluster, leader, args.seconds)
        for concurrency in (1, 64):
            progress(f"sends with {concurrency} in flight for {args.seconds}s")
            results[f"c{concurrency}"] = await throughput(cluster.servers, concurrency, args.seconds)
        pauses = []
        for k in range(args.kills):
            progress(f"kill -9 of the leader {k + 1}/{args.kills}")
            pauses.append(await failover_pause(cluster))
        results["failover_pause_s"] = {"median": statistics.median(pauses), "all": pauses} if pauses else None
        if args.stored:
            progress(f"storing {args.stored} messages, then restarting the whole cluster")
            results["restart"] = await restart_time(cluster, args.stored)
    finally:
        cluster.close()
    return results


def report(results: Dict[str, object]) -> None:
    fsync = float(results["fsync_commits_per_s"])  # type: ignore[arg-type]
    rpc = float(results["grpc_unary_per_s"])  # type: ignore[arg-type]
    print(f"replichat replication benchmark, {results['replicas']} replicas on 127.0.0.1, "
          f"{results['cores']} cores, Python {results['python']}, {results['date']}")
    print(f"  baseline  SQLite FULL commits/s (fsync rate) {fsync:10.0f}")
    print(f"  baseline  unary gRPC calls/s, 1 in flight    {rpc:10.0f}")
    for concurrency in (1, 64):
        r = results[f"c{concurrency}"]
        assert isinstance(r, dict)
        print(f"  sends/s, {concurrency:>2} in flight {r['sends_per_s']:10.0f}   p50 {r['p50_ms']:6.2f} ms   "
              f"p99 {r['p99_ms']:6.2f} ms   x{r['sends_per_s'] / fsync:.2f} fsync rate   x{r['sends_per_s'] / rpc:.2f} RPC rate")
    pause = results.get("failover_pause_s")
    if isinstance(pause, dict):
        print(f"  write pause after kill -9 of the leader: median {pause['median']:.3f} s "
              f"(all: {', '.join(f'{p:.3f}' for p in pause['all'])})")
    restart = results.get("restart")
    if isinstance(restart, dict):
        print(f"  full restart with {restart['stored_messages']} stored messages: first write after "
              f"{restart['restart_to_first_write_s']:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--replicas", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--stored", type=int, default=100_000, help="messages stored before the restart (0: skip)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "replication.json"))
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    save_json(args.out, results)
    report(results)


if __name__ == "__main__":
    main()
