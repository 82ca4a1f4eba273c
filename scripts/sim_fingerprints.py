"""Print the one-line summary of a fixed set of simulator runs, one line per seed.

Each summary holds the run's trace digest (a hash over every event's text), its event count and
its verdict, so a change that must not alter any run's behaviour (a speed-up) is checked with:

    python3 scripts/sim_fingerprints.py > before.txt     # on the old tree
    python3 scripts/sim_fingerprints.py > after.txt      # on the new tree
    diff before.txt after.txt                            # must print nothing

The set: seeds 0..299 with 3 and 5 replicas alternating, 0..59 with the aimed workloads
leader-reads and commit-cutoff, and 0..39 against several mutants (--quick: a tenth of each).
Lines come out in a fixed order whatever --jobs is. On a 2-core machine the whole set takes
about 5 CPU-minutes per tree.
"""
import argparse
import logging
import multiprocessing
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

# Run as a script from any directory: the package is the checkout this file is in.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replichat.sim.config import ALL_FAULTS, SimConfig, parse_workloads
from replichat.sim.simulation import run

# "all" as it was when this list was made (named, so a new workload does not change the lines).
WORKLOADS = parse_workloads("leader-reads,commit-cutoff")
MUTANTS = (
    "commit-earlier-terms", "forget-votes", "reads-without-quorum",
    "install-stale-snapshot", "concurrent-changes", "change-before-term-commit",
)


def configs(scale: float) -> Iterator[Tuple[str, SimConfig]]:
    def n(count: int) -> int:
        return max(1, int(count * scale))

    for seed in range(n(300)):
        yield "default", SimConfig(seed=seed, replicas=(3, 5)[seed % 2], faults=ALL_FAULTS)
    for seed in range(n(60)):
        yield "workloads=leader-reads,commit-cutoff", SimConfig(seed=seed, replicas=(3, 5)[seed % 2], faults=ALL_FAULTS, workloads=WORKLOADS)
    for mutant in MUTANTS:
        for seed in range(n(40)):
            yield f"mutant={mutant}", SimConfig(seed=seed, replicas=(3, 5)[seed % 2], faults=ALL_FAULTS, mutant=mutant)


def _line(item: Tuple[str, SimConfig]) -> str:
    label, config = item
    return f"{label}: {run(config).summary()}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--quick", action="store_true", help="a tenth of the seeds")
    args = p.parse_args(argv)
    # As the simulator's command line: replicas log what they drop, expected under faults.
    logging.getLogger("replichat.raft.core").setLevel(logging.ERROR)
    items: List[Tuple[str, SimConfig]] = list(configs(0.1 if args.quick else 1.0))
    if args.jobs > 1:
        with multiprocessing.Pool(args.jobs) as pool:
            lines = pool.imap(_line, items, chunksize=2)
            for line in lines:
                print(line, flush=True)
    else:
        for item in items:
            print(_line(item), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
