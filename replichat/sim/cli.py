"""Command line of the simulator.

    python -m replichat.sim --seed 1234 --replicas 5 --steps 3000 --trace   # replay one run
    python -m replichat.sim --seeds 100000 --replicas 3,5 --jobs 2          # search many seeds

A failing seed prints its violation, the events that led to it and the exact command that
replays it; --shrink then looks for a smaller run that still fails.
"""
import argparse
import logging

import sys
from typing import Iterator, List, Optional, Sequence

from replichat.sim.config import SimConfig, Workload, format_faults, parse_faults, parse_workloads
from replichat.sim.linearizability import describe
from replichat.sim.mutants import MUTANTS
from replichat.sim.runner import run_many
from replichat.sim.shrink import shrink
from replichat.sim.simulation import RunResult, Simulation


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m replichat.sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--seed", type=int, help="run this one seed")
    which.add_argument("--seeds", type=int, help="run this many seeds, from --start on")
    p.add_argument("--start", type=int, default=0, help="first seed of --seeds (default 0)")
    p.add_argument("--replicas", default=None, help="3, 5, or a list like 3,5 cycled over seeds (default: 3 for --seed, 3,5 for --seeds)")
    p.add_argument("--steps", type=int, default=SimConfig._field_defaults["steps"], help="ticks of faults before healing")
    p.add_argument("--clients", type=int, default=SimConfig._field_defaults["clients"])
    p.add_argument("--faults", default="all", help="fault kinds to inject: all, none, or e.g. crash,partition,loss")
    p.add_argument("--mutant", default="", choices=sorted(MUTANTS), help="run against a deliberately broken core")
    p.add_argument(
        "--workloads", default="none",
        help="aimed extra work on top of the clients' mix: none, all, or a list of "
        + ", ".join(w.value for w in Workload) + " (see replichat/sim/workloads.py)",
    )
    p.add_argument(
        "--liveness-ticks", type=int, default=SimConfig._field_defaults["liveness_ticks"],
        help="ticks the healed cluster gets to converge (default %(default)s)",
    )
    p.add_argument(
        "--liveness-terms", type=int, default=SimConfig._field_defaults["liveness_terms"],
        help="election rounds (new terms) allowed while healing and per failover (default %(default)s)",
    )
    p.add_argument(
        "--failover-probes", type=int, default=SimConfig._field_defaults["failover_probes"],
        help="times the converged cluster's leader is killed to time the failover (default %(default)s)",
    )
    p.add_argument(
        "--failover-ticks", type=int, default=SimConfig._field_defaults["failover_ticks"],
        help="ticks allowed per failover (default %(default)s)",
    )
    p.add_argument(
        "--snapshot-entries", type=int, default=0,
        help="applied entries between snapshots (default 0: drawn per seed from a few dozen; negative: never)",
    )
    p.add_argument(
        "--advance-first-timeout", nargs="?", const="on", choices=("on", "off"), default=None,
        help="replicas (re)start with (on; the flag alone) or without (off) the runtime's election advance, "
        "server.py's default (default: drawn per seed, on for about half)",
    )
    p.add_argument(
        "--snapshot-stagger", nargs="?", const="on", choices=("on", "off"), default=None,
        help="replicas take their snapshots at their own offsets into the period, as server.py does (on), "
        "or all every N entries from their latest (off) (default: drawn per seed, on for about half)",
    )
    p.add_argument("--no-linearizability", action="store_true", help="skip the history check")
    p.add_argument("--trace", action="store_true", help="print every event (single seed)")
    p.add_argument("--history", action="store_true", help="print the client history (single seed)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes for --seeds")
    p.add_argument("--shrink", action="store_true", help="on failure, look for a smaller failing run")
    p.add_argument("--stop-on-failure", action="store_true")
    return p


def _sizes(text: Optional[str], default: str) -> List[int]:
    sizes = [int(s) for s in (text or default).split(",") if s.strip()]
    for size in sizes:
        if size < 1:
            raise SystemExit(f"bad replica count {size}")
    return sizes


def _config(args: argparse.Namespace, seed: int, replicas: int) -> SimConfig:
    return SimConfig(
        seed=seed,
        replicas=replicas,
        steps=args.steps,
        faults=parse_faults(args.faults),
        clients=args.clients,
        liveness_ticks=args.liveness_ticks,
        mutant=args.mutant,
        check_linearizability=not args.no_linearizability,
        workloads=parse_workloads(args.workloads),
        liveness_terms=args.liveness_terms,
        failover_probes=args.failover_probes,
        failover_ticks=args.failover_ticks,
        snapshot_entries=args.snapshot_entries,
        advance_first_timeout=None if args.advance_first_timeout is None else args.advance_first_timeout == "on",
        snapshot_stagger=None if args.snapshot_stagger is None else args.snapshot_stagger == "on",
    )


def _print_failure(result: RunResult) -> None:
    print(result.report(), flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    # Replicas log what they drop (say, a removed replica still forwarding to its old leader):
    # expected under simulated faults, and in the trace already; not worth a line on stderr.
    logging.getLogger("replichat.raft.core").setLevel(logging.ERROR)
    if args.seed is not None:
        return _one(args)
    sizes = _sizes(args.replicas, "3,5")

    def configs() -> Iterator[SimConfig]:
        for n, seed in enumerate(range(args.start, args.start + args.seeds)):
            yield _config(args, seed, sizes[n % len(sizes)])

    print(
        f"running {args.seeds} seeds from {args.start}: replicas {','.join(map(str, sizes))}, {args.steps} steps, "
        f"faults {format_faults(parse_faults(args.faults))}" + (f", mutant {args.mutant}" if args.mutant else ""),
        flush=True,
    )
    totals = run_many(configs(), args.jobs, sys.stderr, _print_failure, args.stop_on_failure, total=args.seeds)
    if totals.failures and args.shrink:
        smallest = shrink(totals.failures[0], log=sys.stdout)
        print("smallest failing run found:")
        print(smallest.report())
    print(totals.line(), flush=True)
    return 1 if totals.failures else 0


def _one(args: argparse.Namespace) -> int:
    config = _config(args, args.seed, _sizes(args.replicas, "3")[0])
    simulation = Simulation(config, sys.stdout if args.trace else None)
    result = simulation.run()
    if args.history:
        for op in sorted(simulation.history, key=lambda o: o.call):
            print(describe(op))
    if result.ok:
        print(result.summary())
        print("faults: " + ", ".join(f"{k}={v}" for k, v in sorted(result.faults.items())))
        return 0
    print(result.report())
    if args.shrink:
        smallest = shrink(result, log=sys.stdout)
        print("smallest failing run found:")
        print(smallest.report())
    return 1



