"""Simulator speed: seeds per CPU-second of this tree against a baseline commit, same machine, same run.

    python3 bench/sim_speed.py                       # uncommitted changes against HEAD, 3 rounds of 20 seeds
    python3 bench/sim_speed.py --baseline c7d68d3 --seeds 40 --rounds 5   # the last commit that changed a run

The baseline is extracted with `git archive` into a temporary folder. Each round runs the same
seeds (3 and 5 replicas alternating, every fault, as `python -m replichat.sim --seeds`) once in
each tree, in a fresh process, alternating which goes first; a process reports the CPU time its
seeds took (imports excluded), so other load on the machine moves both sides alike. The ratio
is per round, baseline CPU over this tree's: above 1 means this tree is faster. Both trees must
give every seed the same trace digest (checked: a speed-up must not change what a run does), so
the baseline must be a commit whose simulator behaves as this tree's does: by default HEAD,
which measures what the uncommitted changes do. (The simulator's speed work was measured
against 65ace1d; the core changed behaviour since, and c7d68d3 the snapshot timing of half the
seeds, so earlier commits fail the digest check.)
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import extract_tree  # noqa: E402
BASELINE = "HEAD"

_CHILD = r"""
import json, logging, sys, time
logging.getLogger("replichat.raft.core").setLevel(logging.ERROR)
from replichat.sim.config import SimConfig
from replichat.sim.simulation import run
start, count = int(sys.argv[1]), int(sys.argv[2])
digests = {}
cpu = time.process_time()
for seed in range(start, start + count):
    digests[seed] = run(SimConfig(seed=seed, replicas=(3, 5)[seed % 2])).trace_digest
print(json.dumps({"cpu": time.process_time() - cpu, "digests": digests}))
"""


def _run(tree: Path, start: int, count: int) -> Dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(start), str(count)],
        cwd=tree, check=True, capture_output=True, text=True, timeout=3600,
    )
    return json.loads(out.stdout)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default=BASELINE, help="commit to compare against (default %(default)s)")
    p.add_argument("--seeds", type=int, default=20, help="seeds per round (default %(default)s)")
    p.add_argument("--start", type=int, default=1000, help="first seed (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, alternating which tree runs first (default %(default)s)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="sim-speed-") as tmp:
        trees = {"baseline": Path(extract_tree(args.baseline, str(ROOT), tmp)), "this tree": ROOT}
        ratios: List[float] = []
        for round_ in range(args.rounds):
            order = ["baseline", "this tree"] if round_ % 2 == 0 else ["this tree", "baseline"]
            results = {name: _run(trees[name], args.start, args.seeds) for name in order}
            if results["baseline"]["digests"] != results["this tree"]["digests"]:
                print("trace digests differ: the two trees do not run the same simulation", file=sys.stderr)
                return 1
            b, t = results["baseline"]["cpu"], results["this tree"]["cpu"]
            ratios.append(b / t)
            print(
                f"round {round_ + 1}: baseline {args.seeds / b:.2f} seeds/CPU-s, this tree {args.seeds / t:.2f} "
                f"seeds/CPU-s: {b / t:.2f}x",
                flush=True,
            )
    print(
        f"{args.seeds} seeds x {args.rounds} rounds from seed {args.start}, baseline {args.baseline}: "
        f"median {statistics.median(ratios):.2f}x (min {min(ratios):.2f}x, max {max(ratios):.2f}x); same trace digests"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
