"""Make a failing run smaller while it still fails: fewer steps, fewer fault kinds, fewer clients.

A violation during the fault phase at tick t happens again with `steps = t + 1`: the run is the
same event for event up to the moment faults stop (steps only says when that is), so the first
cut is exact. Removing a fault kind or a client changes what the generator draws, so those cuts
are trials: each is kept only if the smaller run still fails (with any violation — a different
symptom of the same bug is common and just as useful).
"""
from typing import Callable, Optional, TextIO

from replichat.sim.config import SimConfig
from replichat.sim.simulation import RunResult, run

Runner = Callable[[SimConfig], RunResult]


def shrink(failing: RunResult, budget: int = 60, log: Optional[TextIO] = None, runner: Runner = run) -> RunResult:
    best = failing
    tries = 0

    def attempt(config: SimConfig) -> bool:
        nonlocal best, tries
        if tries >= budget:
            return False
        tries += 1
        result = runner(config)
        if log is not None:
            log.write(f"  shrink try {config.command(trace=False)}: {'fails' if not result.ok else 'passes'}\n")
        if not result.ok:
            best = result
            return True
        return False

    def cut_at_failure() -> None:
        failed_at = best.time // best.config.timing.tick + 1
        if failed_at < best.config.steps:
            attempt(best.config._replace(steps=failed_at))

    cut_at_failure()
    # Fewer steps by halving while it still fails.
    while best.config.steps > 20 and attempt(best.config._replace(steps=best.config.steps // 2)):
        pass
    for kind in sorted(best.config.faults, key=lambda f: f.value):
        if kind in best.config.faults:
            attempt(best.config._replace(faults=best.config.faults - {kind}))
    while best.config.clients > 1 and attempt(best.config._replace(clients=best.config.clients - 1)):
        pass
    cut_at_failure()
    return best
