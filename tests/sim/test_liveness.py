"""Liveness: once every fault ends, the cluster recovers within a bounded number of ticks.

The bound is asserted inside every simulated run (`liveness_ticks`): a leader that everyone
follows, every replica committed and applied up to the leader's last entry with identical chat
states, and every client's pending request answered. Here it is tightened, and shown to fire.
"""
import pytest

from replichat.raft.core import RaftCore
from replichat.sim import mutants
from replichat.sim.config import ALL_FAULTS, SimConfig
from replichat.sim.simulation import Simulation, run

# Ticks a healed cluster may take: a crashed leader's followers wait out its lease and their own
# randomized timeout (up to 2 x 10 ticks), a pre-vote and a vote round, then clients' retries
# (timeouts of 25 ticks) finish. Observed runs need under 30.
BOUND = 60


@pytest.mark.timeout(90)
@pytest.mark.parametrize("replicas", [3, 5])
def test_healed_cluster_converges_within_the_bound(replicas: int) -> None:
    for seed in range(100, 120):
        simulation = Simulation(SimConfig(seed=seed, replicas=replicas, steps=200, liveness_ticks=BOUND))
        result = simulation.run()
        assert result.ok, result.report()
        assert result.heal_ticks is not None and result.heal_ticks <= BOUND
        assert simulation.history and all(c.idle for c in simulation.clients)


class NeverCampaigns(RaftCore):
    """A core whose followers never start an election: nothing recovers after a leader dies."""

    def campaign(self, transfer: bool = False) -> None:
        return


@pytest.mark.timeout(60)
def test_a_cluster_that_cannot_elect_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(mutants.MUTANTS, "never-campaigns", mutants.Mutant(NeverCampaigns))
    result = run(SimConfig(seed=1, steps=50, faults=ALL_FAULTS, mutant="never-campaigns", liveness_ticks=100))
    assert not result.ok
    assert result.kind == "liveness"
    assert "no convergence 100 ticks after healing" in result.detail
    assert "pending" in result.detail  # the clients still waiting are named
