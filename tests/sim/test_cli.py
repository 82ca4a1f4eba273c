"""The command line: single runs, many seeds, traces, replay commands, shrinking."""
import pytest

from replichat.sim.cli import main
from replichat.sim.config import Fault, SimConfig
from replichat.sim.runner import first_failure
from replichat.sim.shrink import shrink
from replichat.sim.simulation import RunResult


def _failing_run() -> RunResult:
    """Some early seed on which a broken runtime (sends before persisting) fails."""
    failing = first_failure(SimConfig(seed=seed, steps=300, mutant="send-before-persist") for seed in range(60))
    assert failing is not None
    return failing


def test_one_seed(capsys: pytest.CaptureFixture) -> None:
    assert main(["--seed", "3", "--steps", "60"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("seed 3 replicas 3 steps 60: ok")
    assert "faults:" in out


def test_trace_prints_every_event(capsys: pytest.CaptureFixture) -> None:
    assert main(["--seed", "3", "--steps", "30", "--trace", "--history"]) == 0
    out = capsys.readouterr().out
    assert "deliver   APPEND" in out and "LEADER term" in out and "NEMESIS" not in out.split("\n")[0]
    assert "client 1:" in out  # the history


@pytest.mark.timeout(60)
def test_many_seeds_summary(capsys: pytest.CaptureFixture) -> None:
    assert main(["--seeds", "4", "--replicas", "3", "--steps", "40"]) == 0
    captured = capsys.readouterr()
    summary = captured.out.strip().splitlines()[-1]
    assert summary.startswith("summary: seeds=4 ")
    assert "violations=0" in summary and "elections=" in summary and "committed=" in summary
    assert "[      4/4]" in captured.err  # progress


@pytest.mark.timeout(60)
def test_a_failure_prints_its_replay_command(capsys: pytest.CaptureFixture) -> None:
    seed = _failing_run().config.seed
    code = main(["--seed", str(seed), "--steps", "300", "--faults", "all", "--mutant", "send-before-persist"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED" in out and "last events:" in out
    assert f"replay: python -m replichat.sim --seed {seed} --replicas 3 --steps 300 --mutant send-before-persist --trace" in out


def test_replay_command_round_trips_the_configuration() -> None:
    config = SimConfig(seed=9, replicas=5, steps=77, faults=frozenset({Fault.CRASH, Fault.LOSS}), clients=2, mutant="forget-votes")
    assert config.command() == (
        "python -m replichat.sim --seed 9 --replicas 5 --steps 77 --faults loss,crash --clients 2 --mutant forget-votes --trace"
    )


@pytest.mark.timeout(120)
def test_shrinking_keeps_a_failing_run() -> None:
    failing = _failing_run()
    smaller = shrink(failing, budget=12)
    assert not smaller.ok
    assert smaller.config.steps <= failing.config.steps
    assert len(smaller.config.faults) <= len(failing.config.faults)
    assert (smaller.config.steps, len(smaller.config.faults), smaller.config.clients) != (
        failing.config.steps, len(failing.config.faults), failing.config.clients
    )


def _first_leader_time(argv: list, capsys: pytest.CaptureFixture) -> int:
    assert main(argv + ["--trace"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if " LEADER term " in line)
    return int(line.split()[0])


def test_the_runtime_election_advance_can_be_simulated(capsys: pytest.CaptureFixture) -> None:
    """--advance-first-timeout starts the replicas as the asyncio runtime does: over a few seeds
    the first leader comes about an election timeout sooner, and the replay command keeps it."""
    plain, advanced = [], []
    for seed in range(6):
        argv = ["--seed", str(seed), "--steps", "30", "--faults", "none"]
        plain.append(_first_leader_time(argv + ["--advance-first-timeout", "off"], capsys))
        advanced.append(_first_leader_time(argv + ["--advance-first-timeout"], capsys))
    assert all(a < p for a, p in zip(advanced, plain)), (advanced, plain)
    assert SimConfig(seed=1, advance_first_timeout=True).command().endswith("--advance-first-timeout on --trace")
    assert SimConfig(seed=1, advance_first_timeout=False).command().endswith("--advance-first-timeout off --trace")


def test_without_the_flag_the_election_advance_is_drawn_per_seed(capsys: pytest.CaptureFixture) -> None:
    """A campaign covers the runtime's default and its opposite; a seed's draw is its own (the
    replay command needs no flag)."""
    drawn = [SimConfig(seed=seed).election_advance() for seed in range(200)]
    assert 60 < sum(drawn) < 140
    assert "--advance-first-timeout" not in SimConfig(seed=1).command()
    seed_on = drawn.index(True)
    argv = ["--seed", str(seed_on), "--steps", "30", "--faults", "none"]
    assert _first_leader_time(argv, capsys) == _first_leader_time(argv + ["--advance-first-timeout", "on"], capsys)
    seed_off = drawn.index(False)
    argv = ["--seed", str(seed_off), "--steps", "30", "--faults", "none"]
    assert _first_leader_time(argv, capsys) == _first_leader_time(argv + ["--advance-first-timeout", "off"], capsys)


def _snapshot_indexes(argv: list, capsys: pytest.CaptureFixture) -> dict:
    assert main(argv + ["--trace"]) == 0
    taken: dict = {}
    for line in capsys.readouterr().out.splitlines():
        if " taking a snapshot at " in line:
            replica, index = line.split()[1], int(line.split()[-1])
            taken.setdefault(replica, []).append(index)
    return taken


def test_snapshot_stagger_is_drawn_per_seed_and_can_be_fixed(capsys: pytest.CaptureFixture) -> None:
    """--snapshot-stagger on: each replica snapshots at its own offset (runtime/snapshot_policy.py),
    off: all every N entries from their latest; without the flag, drawn per seed."""
    drawn = [SimConfig(seed=seed).snapshots_staggered() for seed in range(200)]
    assert 60 < sum(drawn) < 140
    assert "--snapshot-stagger" not in SimConfig(seed=1).command()
    assert SimConfig(seed=1, snapshot_stagger=False).command().endswith("--snapshot-stagger off --trace")
    argv = ["--seed", "3", "--steps", "100", "--faults", "none", "--snapshot-entries", "20"]
    aligned = _snapshot_indexes(argv + ["--snapshot-stagger", "off"], capsys)
    staggered = _snapshot_indexes(argv + ["--snapshot-stagger", "on"], capsys)
    assert len(aligned) == len(staggered) == 3, (aligned, staggered)
    assert len({indexes[0] for indexes in aligned.values()}) == 1, aligned  # all at the same index
    assert len({indexes[0] for indexes in staggered.values()}) == 3, staggered

