import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from replichat.chat.names import MAX_PATTERN_CHARS
from replichat.chat.search import compile_pattern, match_names, scan
from replichat.errors import ChatError, Code

NAMES = ["bob", "alice", "user2", "user3", "Zoë", "日本"]


def refusal(pattern: str) -> str:
    with pytest.raises(ChatError) as info:
        match_names(NAMES, pattern)
    assert info.value.code is Code.INVALID_ARGUMENT
    assert "\n" not in info.value.message
    return info.value.message


def test_empty_pattern_lists_everyone_sorted():
    assert match_names(NAMES, "") == sorted(NAMES)


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("li", ["alice"]),  # search, not full match
        ("^user", ["user2", "user3"]),
        ("[0-9]$", ["user2", "user3"]),
        ("^(bob|alice)$", ["alice", "bob"]),
        ("ALICE", []),  # case-sensitive, like grep
        ("(?i)ALICE", ["alice"]),
        ("^..$", ["日本"]),  # "." is one character, not one byte
        ("ë", ["Zoë"]),
        ("e\u0308", ["Zoë"]),  # a decomposed pattern finds the NFC name
        ("nobody", []),
    ],
)
def test_patterns_search_names(pattern, expected):
    assert match_names(NAMES, pattern) == expected


def test_result_is_sorted_whatever_the_input_order():
    assert match_names(iter(["c1", "a1", "b1"]), "1") == ["a1", "b1", "c1"]


@pytest.mark.parametrize(
    "pattern, names, expected",
    [
        # Each takes exponential time with a backtracking engine (Python's re would run
        # for minutes); RE2 answers in linear time. We check the answers: a hang fails the
        # run anyway.
        ("(a+)+$", ["a" * 30 + "!"], []),
        ("(a+)+$", ["a" * 30 + "!", "a" * 31], ["a" * 31]),
        ("(a|a)*b", ["a" * 32], []),
        ("(a|aa)*c", ["a" * 32, "a" * 31 + "c"], ["a" * 31 + "c"]),
        ("^(([a-z])+.)+[A-Z]([a-z])+$", ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaa!"], []),
        ("(x+x+)+y", ["x" * 32], []),
    ],
)
def test_hostile_patterns_answer_correctly(pattern, names, expected):
    assert match_names(names * 500, pattern) == sorted(expected * 500)


@pytest.mark.parametrize(
    "pattern, feature",
    [
        (r"(a)\1", "backreferences"),
        (r"(?P<x>a)(?P=x)", "named backreferences"),
        (r"a(?=b)", "look-ahead"),
        (r"(?<!a)b", "look-behind"),
        (r"(?>a+)", "atomic groups"),
        (r"a++", "possessive"),
        (r"a\Z", "\\Z"),
    ],
)
def test_features_re2_lacks_are_unsupported_errors(pattern, feature):
    # google-re2 refuses these rather than falling back to a backtracking engine.
    message = refusal(pattern)
    assert "unsupported" in message and "not supported" in message
    assert feature in message


@pytest.mark.parametrize(
    "pattern", ["[", "(", "a)", "*", "a{2,1}", "\\", "x{1001}", r"\pL{1000}"]
)
def test_malformed_patterns_are_errors(pattern):
    message = refusal(pattern)
    assert message.startswith("invalid pattern ")
    assert repr(pattern) in message


def test_refused_patterns_do_not_write_to_stderr(capfd):
    for pattern in ["[", r"(a)\1", "(?=x)"]:
        with pytest.raises(ChatError):
            compile_pattern(pattern)
    assert capfd.readouterr().err == ""


def test_error_stays_on_one_line():
    message = refusal("a\n[")
    assert "'a\\n['" in message


def test_pattern_length_limit():
    assert match_names(["a"], "a" * MAX_PATTERN_CHARS) == []
    message = refusal("a" * (MAX_PATTERN_CHARS + 1))
    assert "257 characters" in message and "256" in message


def test_lone_surrogate_pattern_is_refused():
    assert "Unicode" in refusal("\ud800")


def test_compile_pattern_returns_a_predicate():
    matches = compile_pattern("^b")
    assert matches("bob") and not matches("alice")
    assert compile_pattern("")("anything")


# Patterns over a small alphabet whose meaning Python's re and RE2 share: where both accept
# a pattern, they must find the same names (Python's re is safe here: names are short).
@pytest.mark.filterwarnings("ignore::FutureWarning")  # re's "possible nested set" notice
@given(
    st.text(alphabet="ab.*+?|()^$[]", max_size=8),
    st.lists(st.text(alphabet="abc", max_size=6), max_size=8),
)
def test_agrees_with_python_re_on_shared_syntax(pattern, names):
    try:
        expected = sorted(name for name in names if re.search(pattern, name))
    except re.error:
        assume(False)
    try:
        found = match_names(names, pattern)
    except ChatError:
        assume(False)
    assert found == expected


def test_a_pattern_whose_program_is_too_large_is_refused_clearly() -> None:
    with pytest.raises(ChatError) as error:
        compile_pattern("(.*){1000}")
    assert error.value.code is Code.INVALID_ARGUMENT
    assert "too complex" in error.value.message and "at most 1000" in error.value.message
    compile_pattern("(.*){100}")  # 903 instructions: allowed


def test_scan_gives_up_after_its_time_budget() -> None:
    ticks = iter(range(1000))
    clock = lambda: float(next(ticks))  # noqa: E731 - one second per look at the clock
    names = [f"user{n}" for n in range(500)]
    with pytest.raises(ChatError) as error:
        scan(names, compile_pattern("user"), budget_s=3.0, clock=clock)
    assert error.value.code is Code.INVALID_ARGUMENT and "too costly" in error.value.message
    assert scan(names, compile_pattern("user4[0-9]$"), budget_s=1000.0) == [f"user4{n}" for n in range(10)]
