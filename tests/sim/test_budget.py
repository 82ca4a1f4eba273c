"""The CI budget: many short simulated runs with every fault kind, real core and state machine.

200 seeds on 3 replicas and 100 on 5, 200 ticks (20 election timeouts) of faults each, then
healing and the liveness, convergence and linearizability checks. Any failure prints its report, which ends with the
command that replays it. Longer searches: `python -m replichat.sim --seeds 10000 --jobs 2`.
"""
from typing import List

import pytest

from replichat.sim.config import SimConfig
from replichat.sim.runner import run_many

STEPS = 200
BLOCK = 50


def _run_block(replicas: int, first: int) -> None:
    configs = [SimConfig(seed=seed, replicas=replicas, steps=STEPS) for seed in range(first, first + BLOCK)]
    failures: List[str] = []
    totals = run_many(configs, on_failure=lambda result: failures.append(result.report()))
    assert totals.seeds == BLOCK
    assert not failures, "\n\n".join(failures)
    assert totals.committed > 0 and totals.elections > 0 and totals.client_ops > 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("first", range(0, 200, BLOCK))
def test_three_replicas(first: int) -> None:
    _run_block(3, first)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("first", range(0, 100, BLOCK))
def test_five_replicas(first: int) -> None:
    _run_block(5, first)
