"""Directed tests of the Raft rules: each trace in tests/raft/golden/ scripts one rule of the
paper step by step and holds the exact messages and state changes the core produced when it was
reviewed (see tests/raft/golden.py for the format). Record deliberately changed behaviour with
`GOLDEN_REWRITE=1 python3 -m pytest tests/raft/test_golden_traces.py`, then review the diff."""
import os

import pytest

from replichat.raft.core import RaftCore
from replichat.sim import mutants
from tests.raft.golden import GoldenRunner, TraceError, check_file, parse, replay, trace_files

HERE = os.path.join(os.path.dirname(__file__), "golden")
TRACES = list(trace_files(HERE))


@pytest.mark.parametrize("path", TRACES, ids=[os.path.basename(p)[: -len(".trace")] for p in TRACES])
def test_trace_replays_exactly(path: str) -> None:
    diff = check_file(path)
    assert diff is None, f"{os.path.basename(path)} no longer replays as recorded:\n{diff}"


def test_every_trace_states_its_rule_and_checks_something() -> None:
    assert len(TRACES) >= 12
    for path in TRACES:
        with open(path, encoding="utf-8") as f:
            blocks, _ = parse(f.read())
        assert blocks and blocks[0].comments and blocks[0].comments[0].startswith("# Rule"), path
        assert sum(len(b.expected) for b in blocks) >= 5, f"{path} prints almost nothing"


def test_a_changed_output_line_is_reported_as_a_diff(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOLDEN_REWRITE", raising=False)
    trace = "# Rule: a fresh cluster has no leader\n> cluster 3\nr1 leader t9 vote 0 leader 1 log [] commit 0 applied 0\n"
    path = tmp_path / "wrong.trace"
    path.write_text(trace)
    diff = check_file(str(path))
    assert diff is not None and "-r1 leader t9" in diff and "+r1 follower t0" in diff


def test_a_malformed_command_is_a_trace_error_not_a_pass() -> None:
    with pytest.raises(TraceError):
        replay("> cluster 3\n> deliver 1->2 APPEND\n")
    with pytest.raises(TraceError):
        GoldenRunner().run("teleport 1")


# ----------------------------------------------------------------- the traces catch broken rules
# Each trace must fail when its rule is broken. These cores break one rule each (the simulator's
# mutants, and a few more here); every one was also planted as a one-line change in the core
# itself when the traces were recorded.


class CountsItsUnsyncedEntry(RaftCore):
    """The leader counts its own entries toward a commit before they are durable."""

    def _maybe_commit(self) -> bool:
        stable = self.log.stable
        self.log.stable = self.log.last_index
        try:
            return super()._maybe_commit()
        finally:
            self.log.stable = stable


class HeartbeatsCarryTheWholeCommit(RaftCore):
    """Heartbeats carry the leader's commit index, not bounded by what the follower matched."""

    def _broadcast_heartbeat(self) -> None:
        match = {p: pr.match for p, pr in self.progress.items()}
        for pr in self.progress.values():
            pr.match = self.log.committed
        try:
            super()._broadcast_heartbeat()
        finally:
            for p, pr in self.progress.items():
                pr.match = match[p]


class PreVoteAdoptsTerm(RaftCore):
    """A pre-candidate moves to the term it only asks about."""

    def _become_pre_candidate(self) -> None:
        self.term += 1
        super()._become_pre_candidate()


class NeverStepsDownForQuorum(RaftCore):
    """Check-quorum never fires: an isolated leader leads on."""

    def _quorum_active(self) -> bool:
        return True


class TransferByPreVote(RaftCore):
    """TIMEOUT_NOW starts an ordinary (pre-vote) election, which the others' lease refuses."""

    def _become_candidate(self, transfer: bool) -> None:
        super()._become_candidate(False)


BROKEN = [
    ("01_election_vote_once_per_term", mutants.ForgetsVotes),
    ("03_leader_counts_itself_only_once_durable", CountsItsUnsyncedEntry),
    ("04_commit_only_current_term_by_counting", mutants.CommitsEarlierTerms),
    ("05_follower_commit_bounded_by_this_leaders_entries", HeartbeatsCarryTheWholeCommit),
    ("07_no_reads_before_the_first_commit_of_the_term", mutants.ReadsBeforeFirstCommit),
    ("08_pending_reads_dropped_on_step_down", mutants.AnswersPendingReadsOnStepDown),
    ("09_pre_vote_does_not_bump_terms", PreVoteAdoptsTerm),
    ("10_check_quorum_step_down", NeverStepsDownForQuorum),
    ("11_read_index_needs_a_quorum_round", mutants.ReadsWithoutQuorum),
    ("12_leadership_transfer", TransferByPreVote),
]


@pytest.mark.parametrize("name, broken", BROKEN, ids=[b[0][:2] + "-" + b[1].__name__ for b in BROKEN])
def test_the_trace_fails_with_its_rule_broken(name: str, broken: type) -> None:
    with open(os.path.join(HERE, name + ".trace"), encoding="utf-8") as f:
        recorded = f.read()
    try:
        replayed = replay(recorded, broken)
    except TraceError:  # the broken core made a scripted step impossible (a message never sent)
        return
    assert replayed != recorded, f"{name} replays unchanged with {broken.__name__}"
