"""Whole-cluster restart -> first acknowledged write, with and without the election advance.

    python3 bench/restart.py [--replicas 3] [--rounds 8] [--stored 1000]

One cluster of real replica processes on 127.0.0.1 stores --stored messages; then, --rounds
times per mode, alternating the modes round by round, every replica is killed with kill -9 and
all are started again, and the time from the start until a write is acknowledged is taken.
The modes: the default (a starting replica counts all but one tick of its first election
timeout as waited, core.Config.advance_first_timeout) and the baseline `--no-election-advance`
(the whole timeout, as before), on the same data in the same run. Prints each mode's median,
minimum and maximum and the ratio of the medians; JSON to bench/results/restart.json.
"""
import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.cluster import BenchCluster  # noqa: E402
from bench.common import progress, save_json  # noqa: E402
from replichat.client.api import ChatClient  # noqa: E402

BASELINE_FLAG = "--no-election-advance"
MODES = ("advance", "baseline")


async def store(cluster: BenchCluster, count: int) -> None:
    async with ChatClient(cluster.servers) as client:
        await client.create("archive")
        for n in range(count):
            await client.send("archive", f"stored message {n:07d}")


async def restart_to_first_write(cluster: BenchCluster, mode: str) -> float:
    if mode == "baseline":
        cluster.extra_args.append(BASELINE_FLAG)
    else:
        while BASELINE_FLAG in cluster.extra_args:
            cluster.extra_args.remove(BASELINE_FLAG)
    for node_id in list(cluster.addresses):
        cluster.kill(node_id)
    started = time.perf_counter()
    cluster.start_all()
    async with ChatClient(cluster.servers, deadline=60) as client:
        await client.send("archive", f"after a restart ({mode})")
        return time.perf_counter() - started


async def main_async(args: argparse.Namespace) -> Dict[str, object]:
    folder = tempfile.mkdtemp(prefix="replichat-bench-restart-")
    cluster = BenchCluster(os.path.join(folder, "cluster"), args.replicas)
    cluster.start_all()
    times: Dict[str, List[float]] = {mode: [] for mode in MODES}
    try:
        await cluster.wait_for_leader()
        progress(f"storing {args.stored} messages")
        await store(cluster, args.stored)
        for k in range(args.rounds):
            for mode in (MODES if k % 2 == 0 else MODES[::-1]):
                seconds = await restart_to_first_write(cluster, mode)
                times[mode].append(seconds)
                progress(f"round {k + 1}/{args.rounds}, {mode}: first write {seconds:.3f} s after the start")
    finally:
        cluster.close()
    return {
        "date": time.strftime("%Y-%m-%d"), "replicas": args.replicas, "stored": args.stored,
        "load_average": os.getloadavg()[0], "first_write_s": times,
    }


def report(results: Dict[str, object]) -> None:
    times = results["first_write_s"]
    assert isinstance(times, dict)
    print(f"whole-cluster restart -> first write, {results['replicas']} replicas, {results['stored']} messages stored, "
          f"{len(times['advance'])} rounds per mode (load average {results['load_average']:.1f})")
    for mode in MODES:
        t = times[mode]
        print(f"  {mode:<9} median {statistics.median(t):.3f} s   min {min(t):.3f}   max {max(t):.3f}")
    print(f"  advance / baseline medians: {statistics.median(times['advance']) / statistics.median(times['baseline']):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=8, help="restarts per mode (default %(default)s)")
    parser.add_argument("--stored", type=int, default=1000, help="messages stored before the first restart")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "restart.json"))
    args = parser.parse_args()
    if args.rounds < 1 or args.replicas < 1 or args.stored < 0:
        parser.error("--rounds and --replicas must be at least 1, --stored at least 0")
    results = asyncio.run(main_async(args))
    save_json(args.out, results)
    report(results)


if __name__ == "__main__":
    main()
