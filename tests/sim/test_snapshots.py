"""The simulator takes, compacts and installs snapshots, and crashes at each of their steps.

The decisions are the runtime driver's (the asyncio node's too); the simulated disk keeps the
recorded snapshot and compacts its log; a follower the leader's log no longer reaches gets the
snapshot through the simulated network. Every run must stay safe and converge; across a few
dozen seeds every step of taking and installing a snapshot must have been struck by a crash.
The three snapshot mutants (mutants.py) are in test_mutants.py.
"""
from collections import Counter

import pytest

from replichat.sim.config import SimConfig, parse_faults
from replichat.sim.replica import INSTALL_CRASH_POINTS, SNAPSHOT_CRASH_POINTS
from replichat.sim.simulation import Simulation

SEEDS = 40


@pytest.mark.timeout(300)
def test_snapshots_taken_compacted_installed_and_crashed_at_every_step() -> None:
    counts: Counter = Counter()
    for seed in range(SEEDS):
        config = SimConfig(seed=seed, replicas=3 + 2 * (seed % 2), steps=200, faults=parse_faults("all"))
        simulation = Simulation(config)
        result = simulation.run()
        assert result.ok, result.report()
        counts.update(result.snapshots)
        counts.update({k: v for k, v in simulation.world.counts.items() if k.startswith("crash at ")})
    print(dict(counts))
    assert counts["snapshots taken"] >= SEEDS
    assert counts["entries compacted"] > 0 and counts["log compactions"] > 0
    assert counts["snapshots installed"] >= 10
    assert counts["snapshot restores at start"] > 0
    for point in SNAPSHOT_CRASH_POINTS + INSTALL_CRASH_POINTS:
        assert counts[f"crash at {point}"] > 0, f"no crash struck at {point} in {SEEDS} seeds: {dict(counts)}"


def test_never_snapshotting_keeps_the_whole_log() -> None:
    simulation = Simulation(SimConfig(seed=3, replicas=3, steps=100, faults=parse_faults("crash"), snapshot_entries=-1))
    result = simulation.run()
    assert result.ok, result.report()
    assert result.snapshots["snapshots taken"] == 0
    assert all(r.disk.base.index == 0 and r.disk.snapshot is None for r in simulation.replicas.values())


def test_a_fixed_snapshot_interval_is_part_of_the_replay_command() -> None:
    config = SimConfig(seed=1, snapshot_entries=25)
    assert "--snapshot-entries 25" in config.command()
    simulation = Simulation(config)
    assert simulation.world.snapshot_policy.every_entries == 25
