"""Many seeds: run them (in parallel processes if asked) and add up what they did.

Each run is independent and deterministic, so seeds can be farmed out to worker processes in
any order; only the totals and the failures come back.
"""
import multiprocessing
import time
from collections import Counter
from typing import Callable, Iterable, Iterator, List, Optional, TextIO

from replichat.sim.config import SimConfig
from replichat.sim.simulation import RunResult, run


class Totals:
    def __init__(self) -> None:
        self.seeds = 0
        self.failures: List[RunResult] = []
        self.events = 0
        self.ticks = 0
        self.faults: Counter[str] = Counter()
        self.elections = 0
        self.committed = 0
        self.client_ops = 0
        self.unknown_ops = 0
        self.inconclusive = 0
        self.max_heal_ticks = 0
        self.max_msgs_per_tick = 0
        self.snapshots: Counter[str] = Counter()
        self.started = time.monotonic()

    def add(self, result: RunResult) -> None:
        self.seeds += 1
        self.events += result.events
        self.ticks += result.ticks
        self.faults.update(result.faults)
        self.snapshots.update(result.snapshots)
        self.elections += result.elections
        self.committed += result.committed
        self.client_ops += result.client_ops
        self.unknown_ops += result.unknown_ops
        self.inconclusive += result.linearizability == "inconclusive"
        if result.heal_ticks is not None:
            self.max_heal_ticks = max(self.max_heal_ticks, result.heal_ticks)
        self.max_msgs_per_tick = max(self.max_msgs_per_tick, result.max_msgs_per_tick)
        if not result.ok:
            self.failures.append(result)

    def line(self) -> str:
        faults = ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items()))
        snapshots = ", ".join(f"{k}={v}" for k, v in sorted(self.snapshots.items()))
        elapsed = time.monotonic() - self.started
        return (
            f"summary: seeds={self.seeds} steps(ticks)={self.ticks} events={self.events} "
            f"faults[{faults}] elections={self.elections} committed={self.committed} "
            f"client_ops={self.client_ops} unknown_ops={self.unknown_ops} "
            f"linearizability_inconclusive={self.inconclusive} max_heal_ticks={self.max_heal_ticks} max_msgs_per_tick={self.max_msgs_per_tick} "
            f"snapshots[{snapshots}] violations={len(self.failures)} time={elapsed:.1f}s"
        )


def _run_one(config: SimConfig) -> RunResult:
    return run(config)


def run_many(
    configs: Iterable[SimConfig],
    jobs: int = 1,
    progress: Optional[TextIO] = None,
    on_failure: Optional[Callable[[RunResult], None]] = None,
    stop_on_failure: bool = False,
    total: int = 0,
) -> Totals:
    totals = Totals()
    last_report = time.monotonic()
    results: Iterator[RunResult]
    pool = None
    if jobs > 1:
        pool = multiprocessing.Pool(jobs)
        results = pool.imap_unordered(_run_one, configs, chunksize=4)
    else:
        results = (run(c) for c in configs)
    try:
        for result in results:
            totals.add(result)
            if not result.ok and on_failure is not None:
                on_failure(result)
            now = time.monotonic()
            if progress is not None and (now - last_report >= 2.0 or totals.seeds == total):
                last_report = now
                rate = totals.seeds / max(now - totals.started, 1e-9)
                progress.write(
                    f"[{totals.seeds:>7}/{total or '?'}] violations {len(totals.failures)}, "
                    f"{rate:.1f} seeds/s, {now - totals.started:.0f}s\n"
                )
                progress.flush()
            if stop_on_failure and not result.ok:
                break
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return totals


def first_failure(configs: Iterable[SimConfig]) -> Optional[RunResult]:
    """Run seeds in order until one fails (the fault-injection tests' search)."""
    for config in configs:
        result = run(config)
        if not result.ok:
            return result
    return None

