"""The simulator catches deliberately broken cores and runtimes within a fixed budget of seeds.

Each case names a classic bug (see replichat/sim/mutants.py), the fault kinds that provoke it,
how many seeds (from 0) the search may take, and which violations count as catching it. The
seed that catches it is printed with its replay command; the same seed must pass with the real
core, so it is the mutation that fails, not the scenario.

Seeds caught when these budgets were set (3 replicas, 300 steps): commit-earlier-terms seed 0
(leader-completeness), forget-votes seed 30 (double-vote), reads-without-quorum seed 6
(linearizability: a stale read), send-before-persist seed 3 (a message storm: a follower's
acknowledged entries vanished in a crash, so the leader's idea of it can never be true again)
and seed 5 (durability). Since the simulator runs the runtime's driver (leaders send while they
persist, as the node does): commit-earlier-terms seed 7, forget-votes seed 3,
reads-without-quorum seed 0, send-before-persist seed 10 (durability).
"""
from typing import FrozenSet

import pytest

from replichat.sim.config import SimConfig, parse_faults, parse_workloads
from replichat.sim.simulation import run

STEPS = 300
# Every case runs twice: with every replica starting without the runtime's election advance
# (the setting the budgets were first set with) and with it (the runtime's own setting), never
# with the per-seed draw, whose mix moves the first catch (install-stale-snapshot: seed 93 with
# the draw, 19 with the advance off, 13 with it on). With it on, when calibrated (2026-12-02):
# every case caught within its budget, at seeds 0-22. Snapshots are never staggered here (the
# budgets were set before staggering; the runtime staggers them, and the campaigns' per-seed
# draw runs half their seeds so).
ELECTION_ADVANCE = [False, True]
_ADVANCE_IDS = ["advance-off", "advance-on"]
# What a membership bug breaks: two majorities that do not meet commit or elect apart.
_MEMBERSHIP_KINDS = frozenset(
    {"leader-completeness", "state-machine-safety", "election-safety", "durability", "acknowledged", "log-matching",
     "linearizability", "core-error"}
)

CASES = [
    # A leader counts replicas for an entry of an earlier term (Figure 8): a later leader
    # overwrites it.
    ("commit-earlier-terms", "leader-churn", 30, {"leader-completeness", "state-machine-safety", "core-error", "durability"}),
    # A vote lost in a crash is cast again for another candidate of the same term.
    ("forget-votes", "crash,delay,duplicate,partition,flapping,leader-churn", 50, {"double-vote", "election-safety"}),
    # A deposed leader that does not know it yet answers a read from its stale state.
    ("reads-without-quorum", "pause,isolate-leader", 30, {"linearizability"}),
    # Acknowledgements outrun durability: a crash loses entries a quorum was counted for.
    (
        "send-before-persist",
        "all",
        30,
        {"durability", "acknowledged", "livelock", "liveness", "state-machine-safety", "leader-completeness", "log-matching"},
    ),
    # Runtime (driver) bugs: the asyncio node runs the same driver.
    # A follower's acknowledgement leaves before its fsync; the "ack" crash trap strikes then.
    ("ack-before-fsync", "crash,delay", 30, {"durability", "acknowledged", "state-machine-safety", "leader-completeness"}),
    # A linearizable read served before this replica applied its read index (lagging replicas).
    ("read-before-apply", "slow,delay,loss", 30, {"linearizability"}),
    # Pending reads answered from the local commit index when the leader changes.
    ("reads-answered-on-leader-change", "pause,isolate-leader,partition", 30, {"linearizability"}),
    # The disk loads without verifying checksums: a byte flipped while the replica was down is
    # taken as written (applied, committed, shipped). Caught at seed 0 when this case was added.
    (
        "unchecked-disk",
        "corrupt-disk",
        10,
        {"state-machine-safety", "log-matching", "corruption-propagated", "determinism", "convergence"},
    ),
    # Follower election timeouts without randomization: a killed leader's followers time out
    # together and split the vote again and again (caught by the failover probes' bound on
    # time and terms; a corrupted disk would skip the probes in 3 replicas, so none here).
    # Caught at seed 2 when this case was added (bounds 5 terms, 80 ticks); at seed 10 with
    # the bounds raised to 7 terms, 100 ticks.
    ("no-election-randomization", "crash,partition,isolate-leader,loss", 20, {"liveness"}),
    # State machine: apply ignores the stamped principal (another user's, or a stale account's).
    ("skip-principal-check", "crash,partition,loss", 10, {"linearizability"}),
    # Snapshots (issue 10). Caught when added: compact-unapplied seed 0 (durability: an entry
    # compacted past the snapshot), install-stale-snapshot seed 19 (commit-regressed: a late
    # transfer took a follower back), snapshot-without-clients seed 0 (determinism: a restored
    # state differs from the state the snapshot was taken from).
    # The durable log compacted past the snapshot: entries not yet applied are lost.
    ("compact-unapplied", "crash,power-loss,partition", 10, {"durability"}),
    # A snapshot older than the follower's state installed (a transfer that arrives late).
    (
        "install-stale-snapshot",
        "crash,power-loss,partition,isolate-leader",
        40,
        {"commit-regressed", "applied-regressed", "durability", "state-machine-safety", "determinism", "convergence"},
    ),
    # A snapshot without the exactly-once table: a restored replica applies a retry twice.
    ("snapshot-without-clients", "crash,power-loss,partition", 10, {"determinism", "convergence", "linearizability"}),
    # Membership (raft/membership.py). Seeds when added: learner-counts-as-voter 12,
    # concurrent-changes 7 (31 since the simulator takes snapshots: election-safety), old-configuration-quorum 3 (each: leader-completeness). The fourth,
    # change-before-term-commit, needs the exact 2015 sequence (a change from an earlier term
    # left uncommitted, a partition, then a specific second change): random faults alone did
    # not reach it in 200 seeds; the change-race workload does (WORKLOAD_CASES below), and
    # tests/raft/test_membership.py replays the thesis's sequence against it.
    ("learner-counts-as-voter", "membership,partition,crash,leader-churn", 40, _MEMBERSHIP_KINDS),
    ("concurrent-changes", "membership,partition", 60, _MEMBERSHIP_KINDS),
    # (With quorums too large after a removal, it can also lose every election: liveness.)
    ("old-configuration-quorum", "membership,partition,crash,leader-churn", 30, _MEMBERSHIP_KINDS | {"liveness"}),
]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("advance", ELECTION_ADVANCE, ids=_ADVANCE_IDS)
@pytest.mark.parametrize("mutant, faults, budget, kinds", CASES, ids=[c[0] for c in CASES])
def test_broken_core_is_caught(mutant: str, faults: str, budget: int, kinds: FrozenSet[str], advance: bool) -> None:
    for seed in range(budget):
        config = SimConfig(
            seed=seed, replicas=3, steps=STEPS, faults=parse_faults(faults), mutant=mutant,
            advance_first_timeout=advance, snapshot_stagger=False,
        )
        result = run(config)
        if result.ok:
            continue
        assert result.kind in kinds, result.report()
        print(f"{mutant} caught at seed {seed}: {result.kind}: {result.detail}\n  replay: {config.command()}")
        real = run(config._replace(mutant=""))
        assert real.ok, real.report()
        return
    pytest.fail(f"{mutant} survived {budget} seeds with faults {faults}")


# Rare-event bugs, with the aimed workloads that make their moment common (see
# replichat/sim/workloads.py). The read bugs: caught in 1 of 200 seeds each without them; with
# them (and these faults) in 83/200 and 157/200; the membership bug: 0/200 with every fault and
# no workload, 34/200 with every fault and change-race, 100/200 with change-race alone (caught
# at seed 4 when added). tests/sim/test_workloads.py has the table.
WORKLOAD_CASES = [
    # A new leader serves a read before its first commit, from a commit index behind an
    # acknowledged write (the previous leader was cut off as it committed).
    ("reads-before-first-commit", "loss,delay", "leader-reads,commit-cutoff", 20, frozenset({"linearizability"})),
    # A deposed leader answers its pending reads as it steps down.
    ("pending-reads-answered-on-step-down", "none", "leader-reads,commit-cutoff", 10, frozenset({"linearizability"})),
    # A new leader proposes a change before committing in its term, while the previous
    # leader's change is stranded on that leader alone (the 2015 single-server-change bug).
    ("change-before-term-commit", "none", "change-race", 20, _MEMBERSHIP_KINDS),
]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("advance", ELECTION_ADVANCE, ids=_ADVANCE_IDS)
@pytest.mark.parametrize("mutant, faults, workloads, budget, kinds", WORKLOAD_CASES, ids=[c[0] for c in WORKLOAD_CASES])
def test_rare_bug_is_caught_with_its_workload(
    mutant: str, faults: str, workloads: str, budget: int, kinds: FrozenSet[str], advance: bool
) -> None:
    for seed in range(budget):
        config = SimConfig(
            seed=seed, replicas=3, steps=STEPS, faults=parse_faults(faults), mutant=mutant,
            workloads=parse_workloads(workloads), advance_first_timeout=advance, snapshot_stagger=False,
        )
        result = run(config)
        if result.ok:
            continue
        assert result.kind in kinds, result.report()
        print(f"{mutant} caught at seed {seed}: {result.kind}: {result.detail}\n  replay: {config.command()}")
        real = run(config._replace(mutant=""))
        assert real.ok, real.report()
        return
    pytest.fail(f"{mutant} survived {budget} seeds with faults {faults} and workloads {workloads}")
