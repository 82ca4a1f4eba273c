"""Write throughput of this tree against a baseline commit, measured side by side in time.

    python3 bench/write_ab.py                                   # against BASELINE, c=1 and 64
    python3 bench/write_ab.py --baseline 3befbfd --slots 20 --seconds 4 --concurrency 1,16,64
    python3 bench/write_ab.py --peers plain                     # this tree's peers without TLS
    python3 bench/write_ab.py --peers both                      # both, in the same slots

Why not two runs of bench/compare.py: on a shared or virtual 2-core machine the speed of the
whole machine drifts by ±20% within minutes (the same tree measured 1,695-2,521 writes/s at
c=64 in rounds half an hour apart), as much as the differences worth finding. Here both
clusters run for the whole measurement (3 replicas each, on 127.0.0.1, each tree's own
server.py and bench cluster), and short slots alternate between them in a random order: one
cluster is loaded at a time while the other idles (heartbeats only), so drift moves both sides
alike and each slot's ratio compares runs seconds apart. The load is compare.py's (bench/loadgen.py:
C writers, each with one SendMessage of a 64-byte text in flight, to the leader).

Reported per concurrency: each side's median writes/s, servers' CPU per write and the leader's
part of it, and the median of the per-slot ratios (this tree over the baseline; above 1: this
tree is faster), their range, and in how many slots this tree was faster. `--peers both` holds
a third cluster, this tree with plain-TCP peers, and loads it in the same slots: one run then
separates what the tree's peer TLS costs from everything else (the baseline has no peer TLS).
The baseline is
extracted with `git archive` and must have bench/loadgen.py's ReplichatSystem (3befbfd and
later).
"""
import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import extract_tree, guarded, keep_grpc_aio_initialized, progress  # noqa: E402
from bench.loadgen import ReplichatSystem, System, Write, run_load  # noqa: E402

# The tree before peer TLS, authentication, checksums, the runtime split, snapshots and
# membership changes (2026-11-30): what issue 10's "no loss in write throughput" compares with.
BASELINE = "3befbfd"
REPLICAS = 3
# This tree's sides: the label each is reported under and the bench cluster's options.
PEER_VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "tls": ("this tree", {}),
    "plain": ("this tree, plain peers", {"peer_tls": False}),
}

# Run in a tree's own folder: starts that tree's 3-replica bench cluster, creates the recipient,
# prints the cluster as one JSON line, and stops it when its stdin closes (the benchmark ended,
# or died: the pipe closes either way).
_HOLDER = r"""
import asyncio, json, os, sys, tempfile
sys.path.insert(0, os.getcwd())
from bench.loadgen import ReplichatSystem

async def main():
    options = json.loads(sys.argv[1])
    system = ReplichatSystem(tempfile.mkdtemp(prefix="write-ab-", dir=sys.argv[2]), int(sys.argv[3]), 64, **options)
    system.start_all()
    try:
        leader = await system.wait_for_leader()
        await system.prepare()
        print(json.dumps({"addresses": system.addresses, "pids": system.pids(), "leader": leader}), flush=True)
        await asyncio.get_event_loop().run_in_executor(None, sys.stdin.read)
    finally:
        await system.aclose()
        system.close()

asyncio.run(main())
"""


class HeldCluster(System):
    """A cluster another process started (and stops): writes go through this tree's load
    generator and client stubs (the request is the same message in every tree since 3befbfd)."""

    name = "replichat"

    def __init__(self, label: str, tree: str, work_dir: str, options: Dict[str, Any]) -> None:
        super().__init__(work_dir, REPLICAS, 64)
        self.label = label
        self.library_client = False  # raw stubs, like compare.py's default (ReplichatSystem.new_write)
        self.process = subprocess.Popen(
            guarded([sys.executable, "-c", _HOLDER, json.dumps(options), work_dir, str(REPLICAS)]),
            cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {label} cluster did not start (its output is above)")
        started = json.loads(line)
        self.addresses = {int(k): v for k, v in started["addresses"].items()}
        self._pids = {int(k): v for k, v in started["pids"].items()}
        self.leader: int = started["leader"]

    def pids(self) -> Dict[int, int]:
        return dict(self._pids)

    def new_write(self, address: str, stream: str, n: int) -> Write:
        return ReplichatSystem.new_write(self, address, stream, n)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default=BASELINE, help="commit to compare against (default %(default)s)")
    p.add_argument("--slots", type=int, default=12, help="slots per side and concurrency (default %(default)s)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of one slot (default %(default)s)")
    p.add_argument("--concurrency", default="1,64", help="writers in flight, comma-separated (default %(default)s)")
    p.add_argument("--peers", choices=sorted(PEER_VARIANTS) + ["both"], default="tls",
                   help="this tree's replicas talk to each other over mutual TLS (the default, as deployed), "
                        "plain TCP, or both: two clusters of this tree in the same slots (what TLS costs)")
    p.add_argument("--insecure-peers", dest="peers", action="store_const", const="plain",
                   help="the same as --peers plain")
    p.add_argument("--seed", type=int, default=None, help="seed of the slot order (default: random)")
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.variants = ["tls", "plain"] if args.peers == "both" else [args.peers]
    if args.slots < 1 or args.seconds <= 0 or not args.concurrency or min(args.concurrency) < 1:
        p.error("--slots and --concurrency must be at least 1, --seconds above 0")
    return args


Results = Dict[Tuple[str, int], List[Dict[str, Any]]]


async def measure(clusters: List[HeldCluster], args: argparse.Namespace) -> Results:
    order = random.Random(args.seed)
    results: Results = {(c.label, n): [] for c in clusters for n in args.concurrency}
    for cluster in clusters:  # connections made, caches warm, the log past its first snapshot's size
        await run_load(cluster, 64, 3.0, [cluster.addresses[cluster.leader]], leader=cluster.leader)
    for slot in range(args.slots):
        for concurrency in args.concurrency:
            for cluster in order.sample(clusters, len(clusters)):
                run = await run_load(cluster, concurrency, args.seconds, [cluster.addresses[cluster.leader]],
                                     leader=cluster.leader)
                if run["errors"]:
                    raise RuntimeError(f"{cluster.label}: writes failed in slot {slot + 1}: {run['errors']}")
                results[(cluster.label, concurrency)].append(run)
                progress(f"slot {slot + 1}/{args.slots} c={concurrency} {cluster.label}: "
                         f"{run['writes_per_s']:,.0f} writes/s, servers' CPU {run['server_cpu_us_per_write']:,.0f} us/write, "
                         f"other processes {run['other_cpu_cores']:.2f} cores")
    return results


def report(results: Results, labels: List[str], args: argparse.Namespace) -> str:
    """One table per side of this tree, each against the baseline's runs of the same slots."""
    baseline, sides = labels[0], labels[1:]
    lines = [f"{REPLICAS} replicas, {args.slots} slots of {args.seconds:g} s per side and concurrency, "
             f"baseline {args.baseline}"]
    for side in sides:
        lines += _table(results, baseline, side, args)
    return "\n".join(lines)


def _table(results: Results, baseline: str, this: str, args: argparse.Namespace) -> List[str]:
    lines = ["", f"{this}:",
             f"| writers | baseline writes/s | {this} writes/s | ratio, median of slots (range) | slots faster | "
             f"servers' CPU per write, baseline / {this} | of which the leader's |",
             "|---|---|---|---|---|---|---|"]
    for concurrency in args.concurrency:
        base_runs, runs = results[(baseline, concurrency)], results[(this, concurrency)]
        ratios = sorted(r["writes_per_s"] / b["writes_per_s"] for r, b in zip(runs, base_runs))

        def median(key: str, side: List[Dict[str, Any]]) -> float:
            return statistics.median(r[key] for r in side)

        def leader_us(side: List[Dict[str, Any]]) -> float:
            return statistics.median(r["leader_cpu_cores"] * r["elapsed_s"] / r["writes"] * 1e6 for r in side)

        lines.append(
            f"| {concurrency} | {median('writes_per_s', base_runs):,.0f} | {median('writes_per_s', runs):,.0f} | "
            f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f}) | {sum(r > 1 for r in ratios)}/{len(ratios)} | "
            f"{median('server_cpu_us_per_write', base_runs):,.0f} / {median('server_cpu_us_per_write', runs):,.0f} us | "
            f"{leader_us(base_runs):,.0f} / {leader_us(runs):,.0f} us |"
        )
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    keep_grpc_aio_initialized()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="write-ab-") as tmp:
        try:
            baseline_tree = extract_tree(args.baseline, ROOT, tmp)
        except subprocess.CalledProcessError as error:
            print(f"write_ab: cannot extract the baseline {args.baseline!r} with git archive: "
                  f"{error.stderr.decode(errors='replace').strip()}", file=sys.stderr)
            return 2
        if not os.path.exists(os.path.join(baseline_tree, "bench", "loadgen.py")):
            print(f"write_ab: the baseline {args.baseline} has no bench/loadgen.py (3befbfd and later have)",
                  file=sys.stderr)
            return 2
        sides = [PEER_VARIANTS[v] for v in args.variants]
        labels = [f"baseline {args.baseline}"] + [label for label, _ in sides]
        clusters: List[HeldCluster] = []
        try:
            progress(f"starting a {REPLICAS}-replica cluster of {args.baseline} and "
                     f"{len(sides)} of this tree ({', '.join(args.variants)} peers)")
            clusters.append(HeldCluster(labels[0], baseline_tree, tmp, {}))
            for label, options in sides:
                clusters.append(HeldCluster(label, ROOT, tmp, options))
            results = asyncio.run(_measure_and_close(clusters, args))
        finally:
            for cluster in clusters:
                cluster.stop()
    print(report(results, labels, args))
    progress(f"done in {time.monotonic() - started:.0f} s")
    return 0


async def _measure_and_close(clusters: List[HeldCluster], args: argparse.Namespace) -> Results:
    try:
        return await measure(clusters, args)
    finally:
        for cluster in clusters:
            await cluster.aclose()


if __name__ == "__main__":
    sys.exit(main())
