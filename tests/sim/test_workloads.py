"""The aimed workloads (replichat/sim/workloads.py) do what they are for, cost nothing when off,
and keep the real core passing.

Catch rates they buy (3 replicas, 300 steps, seeds 0-199, each seed run once; replay one with
`python -m replichat.sim --seed N --replicas 3 --steps 300 --mutant M --faults F --workloads W`),
measured when they were added:

    mutant                               faults all,     faults all,      aimed faults,
                                         no workload     all workloads    all workloads
    reads-before-first-commit            1/200 (0.5%)    40/200 (20%)     83/200 (41.5%) loss,delay
    pending-reads-answered-on-step-down  1/200 (0.5%)    54/200 (27%)     157/200 (78.5%) none

and the real core with every fault and both workloads: 0 failures in 300 seeds. change-race,
added later (same seeds; faults all with change-race alone, then no fault but change-race):

    change-before-term-commit            0/200 (0%)      34/200 (17%)     100/200 (50%) none

and the real core with every fault and change-race: 0 failures in 1000 seeds (3 and 5 replicas).
"""
import pytest

from replichat.sim.cli import main
from replichat.sim.config import ALL_FAULTS, SimConfig, Workload, parse_faults, parse_workloads
from replichat.sim.simulation import Simulation, run

ALL = frozenset(Workload)


def test_workloads_are_off_by_default_and_add_nobody() -> None:
    config = SimConfig(seed=3, steps=40)
    assert config.workloads == frozenset()
    assert "--workloads" not in config.command()
    simulation = Simulation(config)
    assert simulation.workloads.readers == []
    assert len(simulation.clients) == config.clients


def test_workloads_round_trip_through_the_replay_command() -> None:
    config = SimConfig(seed=3, workloads=parse_workloads("commit-cutoff,leader-reads"))
    assert "--workloads leader-reads,commit-cutoff" in config.command()
    assert parse_workloads("all") == ALL and parse_workloads("none") == frozenset()
    with pytest.raises(ValueError):
        parse_workloads("reads-everywhere")


@pytest.mark.timeout(120)
def test_each_workload_makes_its_moment_happen_and_the_real_core_passes() -> None:
    counts = {"new leader": 0, "deposed leader": 0, "cutoffs": 0}
    for seed in range(6):
        simulation = Simulation(SimConfig(seed=seed, steps=300, faults=parse_faults("none"), workloads=ALL))
        result = simulation.run()
        assert result.ok, result.report()
        assert result.linearizability == "ok"
        counts["new leader"] += simulation.world.counts["workload reads at a new leader"]
        counts["deposed leader"] += simulation.world.counts["workload reads at a deposed leader"]
        counts["cutoffs"] += result.faults.get("commit-cutoff (workload)", 0)
        readers = simulation.workloads.readers
        assert readers and all(r.idle for r in readers)  # every read answered in the end
        assert any(op.client == readers[0].number for op in simulation.history)
    # Without faults, every leader change here comes from a commit-cutoff.
    assert counts["cutoffs"] >= 6 and counts["new leader"] >= 6 and counts["deposed leader"] >= 1, counts


@pytest.mark.timeout(120)
def test_real_core_with_every_fault_and_workload() -> None:
    for seed in range(20):
        result = run(SimConfig(seed=seed, steps=200, faults=ALL_FAULTS, workloads=ALL))
        assert result.ok, result.report()


@pytest.mark.timeout(120)
def test_change_race_strands_changes_and_asks_new_leaders_and_the_real_core_passes() -> None:
    counts = {"changes": 0, "stranded": 0, "asked at once": 0}
    for seed in range(4):
        simulation = Simulation(
            SimConfig(seed=seed, steps=300, faults=parse_faults("none"), workloads=parse_workloads("change-race"))
        )
        result = simulation.run()
        assert result.ok, result.report()
        counts["changes"] += simulation.world.counts["workload changes"]
        counts["stranded"] += simulation.world.counts["workload stranded changes"]
        counts["asked at once"] += simulation.world.counts["workload changes at a new leader"]
    # Every stranded change leads to an election; most new leaders are then asked at once.
    assert counts["changes"] >= 20 and counts["stranded"] >= 8 and counts["asked at once"] >= 4, counts


def test_cli_takes_workloads(capsys: pytest.CaptureFixture) -> None:
    assert main(["--seed", "2", "--steps", "60", "--faults", "none", "--workloads", "all"]) == 0
    assert "seed 2" in capsys.readouterr().out


def test_readers_retry_among_the_members_the_clients_learn() -> None:
    """Seed 1 of the test above once failed: a reader targeted at a replica later removed
    retried among the bootstrap replicas only, and kept picking the removed one, which has
    no leader to answer for. Readers share the clients' list, which follows the membership."""
    simulation = Simulation(SimConfig(seed=1, steps=300, faults=parse_faults("none"), workloads=ALL))
    assert simulation.workloads.readers
    assert all(reader.replicas is simulation.ids for reader in simulation.workloads.readers)
