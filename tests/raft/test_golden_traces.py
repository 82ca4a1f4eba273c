"""Directed tests of the Raft rules: each trace in tests/raft/golden/ scripts one rule of the
paper step by step and holds the exact messages and state changes the core produced when it was
reviewed (see tests/raft/golden.py for the format). Record deliberately changed behaviour with
`GOLDEN_REWRITE=1 python3 -m pytest tests/raft/test_golden_traces.py`, then review the diff."""
import os

import pytest

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
