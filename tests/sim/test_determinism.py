"""A seed is a replay key: the same seed gives the same run, event for event.

Checked three ways: two runs in this process produce identical full traces; two runs in fresh
interpreters with different hash seeds (so any dependence on set or dict order of strings
would show) print the same trace digest; and different seeds do differ.
"""
import os
import subprocess
import sys

import pytest

from replichat.sim.config import SimConfig
from replichat.sim.simulation import run, trace_of

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("replicas", [3, 5])
def test_same_seed_same_trace(replicas: int) -> None:
    config = SimConfig(seed=11, replicas=replicas, steps=150)
    first, second = trace_of(config), trace_of(config)
    assert first.count("\n") > 50
    assert first == second


@pytest.mark.timeout(60)
def test_same_seed_same_result_and_digest() -> None:
    config = SimConfig(seed=5, steps=150)
    a, b = run(config), run(config)
    assert a == b


@pytest.mark.timeout(60)
def test_different_seeds_differ() -> None:
    digests = {run(SimConfig(seed=seed, steps=60)).trace_digest for seed in range(4)}
    assert len(digests) == 4


@pytest.mark.timeout(120)
def test_replay_in_fresh_interpreters_with_different_hash_seeds() -> None:
    outputs = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=ROOT)
        done = subprocess.run(
            [sys.executable, "-m", "replichat.sim", "--seed", "21", "--steps", "120"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=100,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout.splitlines()[0])
    assert "trace " in outputs[0]
    assert outputs[0] == outputs[1]
