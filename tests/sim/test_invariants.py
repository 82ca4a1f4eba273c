"""The safety checker fires on each property it claims to check (fed hand-made evidence)."""
import pytest

from replichat.chat.state import Applied
from replichat.proto import command_pb2
from replichat.raft.core import Ready, Role
from replichat.raft.log import RaftLog
from replichat.raft.messages import Entry, HardState, Message, MsgType
from replichat.sim.invariants import InvariantViolation, SafetyChecker


def log_of(*terms: int, committed: int = 0) -> RaftLog:
    entries = [Entry(t, i, f"{i}/{t}".encode()) for i, t in enumerate(terms, start=1)]
    return RaftLog(entries, committed=committed)


def ready(entries=(), messages=()) -> Ready:  # type: ignore[no-untyped-def]
    return Ready(None, list(entries), list(messages), [], [])


def test_two_leaders_in_one_term() -> None:
    checker = SafetyChecker([1, 2, 3])
    checker.observe(1, log_of(1), Role.LEADER, 2)
    with pytest.raises(InvariantViolation, match="election-safety"):
        checker.observe(2, log_of(1), Role.LEADER, 2)


def test_log_matching_same_index_and_term_different_entry() -> None:
    checker = SafetyChecker([1, 2, 3])
    checker.on_ready(1, log_of(1, 2), 2, ready([Entry(2, 2, b"2/2")]))
    other = RaftLog([Entry(1, 1, b"1/1"), Entry(2, 2, b"different")])
    with pytest.raises(InvariantViolation, match="log-matching"):
        checker.on_ready(2, other, 2, ready([Entry(2, 2, b"different")]))


def test_log_matching_same_entry_different_predecessor() -> None:
    checker = SafetyChecker([1, 2, 3])
    checker.on_ready(1, log_of(1, 3), 3, ready([Entry(3, 2, b"2/3")]))
    with pytest.raises(InvariantViolation, match="log-matching"):
        checker.on_ready(2, log_of(2, 3), 3, ready([Entry(3, 2, b"2/3")]))


def test_double_vote_in_one_term() -> None:
    checker = SafetyChecker([1, 2, 3])
    checker.on_sent(3, [Message(MsgType.VOTE_RESP, 3, 1, 4)])
    checker.on_sent(3, [Message(MsgType.VOTE_RESP, 3, 1, 4)])  # the same vote again: fine
    checker.on_sent(3, [Message(MsgType.VOTE_RESP, 3, 2, 4, reject=True)])  # a refusal: fine
    with pytest.raises(InvariantViolation, match="double-vote"):
        checker.on_sent(3, [Message(MsgType.VOTE_RESP, 3, 2, 4)])


def test_a_vote_lost_with_its_ready_was_never_cast() -> None:
    # Granted in a Ready that a crash lost before it was persisted and sent: not a vote.
    checker = SafetyChecker([1, 2, 3])
    checker.on_ready(3, log_of(), 4, ready(messages=[Message(MsgType.VOTE_RESP, 3, 1, 4)]))
    checker.on_sent(3, [Message(MsgType.VOTE_RESP, 3, 2, 4)])


def test_commit_index_going_back_within_a_life() -> None:
    checker = SafetyChecker([1, 2, 3])
    checker.observe(1, log_of(1, 1, committed=2), Role.FOLLOWER, 1)
    with pytest.raises(InvariantViolation, match="commit-regressed"):
        checker.observe(1, log_of(1, 1, committed=1), Role.FOLLOWER, 1)
    checker.new_life(1)  # after a restart it may start lower
    checker.observe(1, log_of(1, 1, committed=1), Role.FOLLOWER, 1)


def test_two_different_entries_committed_at_one_index() -> None:
    checker = SafetyChecker([1, 2, 3])
    checker.observe(1, log_of(1, 2, committed=2), Role.FOLLOWER, 2)
    with pytest.raises(InvariantViolation, match="state-machine-safety"):
        checker.observe(2, log_of(1, 3, committed=2), Role.FOLLOWER, 3)


def test_leader_without_an_earlier_committed_entry() -> None:
    checker = SafetyChecker([1, 2, 3])
    checker.observe(1, log_of(1, 2, committed=2), Role.LEADER, 2)
    with pytest.raises(InvariantViolation, match="leader-completeness"):
        checker.observe(2, log_of(1, 3), Role.LEADER, 3)


def test_commit_observed_after_a_later_leader_without_it() -> None:
    checker = SafetyChecker([1, 2, 3])
    checker.observe(2, log_of(1, 3), Role.LEADER, 3)
    with pytest.raises(InvariantViolation, match="leader-completeness"):
        checker.observe(1, log_of(1, 2, committed=2), Role.FOLLOWER, 2)


def test_committed_entry_removed_from_a_disk() -> None:
    checker = SafetyChecker([1, 2, 3])
    checker.observe(1, log_of(1, 1, committed=2), Role.FOLLOWER, 1)
    with pytest.raises(InvariantViolation, match="durability"):
        checker.on_saved(2, [Entry(1, 2, b"2/1")])


def test_a_committed_entry_replaced_by_an_append_of_an_older_leader_is_allowed_once() -> None:
    """Seed 52161: entry 2 (term 1) is committed in term 3; replica 3, paused since before and
    never told, takes a delayed append of the term-2 leader that lacks it. Raft allows that (the
    committing majority keeps it); the same removal by an entry of term 3, or on a replica that
    knew the entry committed, is a violation."""
    checker = SafetyChecker([1, 2, 3])
    checker.observe(1, log_of(1, 1, committed=2), Role.LEADER, 3)
    checker.on_saved(3, [Entry(1, 2, b"2/1")], replacing_term=2)
    with pytest.raises(InvariantViolation, match="durability.*by an entry of term 3"):
        checker.on_saved(3, [Entry(1, 2, b"2/1")], replacing_term=3)
    checker.observe(2, log_of(1, 1, committed=2), Role.FOLLOWER, 3)
    with pytest.raises(InvariantViolation, match="durability"):
        checker.on_saved(2, [Entry(1, 2, b"2/1")], replacing_term=2)


def test_committed_entry_on_fewer_disks_than_a_quorum() -> None:
    checker = SafetyChecker([1, 2, 3])
    checker.observe(1, log_of(1, committed=1), Role.FOLLOWER, 1)
    entry = Entry(1, 1, b"1/1")
    checker.full_check({}, {1: [entry], 2: [entry], 3: []})
    with pytest.raises(InvariantViolation, match="durability"):
        checker.full_check({}, {1: [entry], 2: [], 3: []})


def test_pairwise_log_matching_backstop() -> None:
    checker = SafetyChecker([1, 2])
    a = [Entry(1, 1, b"a"), Entry(2, 2, b"x")]
    b = [Entry(1, 1, b"b"), Entry(2, 2, b"x")]
    with pytest.raises(InvariantViolation, match="log-matching"):
        checker.full_check({"a": a, "b": b}, {})


def test_replicas_applying_different_results() -> None:
    checker = SafetyChecker([1, 2, 3])
    checker.observe(1, log_of(1, committed=1), Role.FOLLOWER, 1)
    entry = Entry(1, 1, b"1/1")
    ok = command_pb2.CommandResult(seq=1)
    checker.on_applied(1, [entry], [Applied(1, None, ok)])
    with pytest.raises(InvariantViolation, match="determinism"):
        checker.on_applied(2, [entry], [Applied(1, None, command_pb2.CommandResult(seq=2))])


def test_applying_an_uncommitted_entry() -> None:
    checker = SafetyChecker([1, 2, 3])
    with pytest.raises(InvariantViolation, match="state-machine-safety"):
        checker.on_applied(1, [Entry(1, 1, b"x")], [Applied(1, None, None)])


def test_acknowledging_an_uncommitted_entry() -> None:
    checker = SafetyChecker([1, 2, 3])
    with pytest.raises(InvariantViolation, match="acknowledged"):
        checker.on_acknowledged(Entry(1, 1, b"x"))


def test_acknowledged_entry_missing_after_convergence() -> None:
    checker = SafetyChecker([1, 2])
    checker.observe(1, log_of(1, committed=1), Role.FOLLOWER, 1)
    checker.on_acknowledged(Entry(1, 1, b"1/1"))
    with pytest.raises(InvariantViolation, match="acknowledged"):
        checker.final_check({1: log_of(1, committed=1), 2: log_of(committed=0)}, {1: "d", 2: "d"})


def test_diverging_state_digests() -> None:
    checker = SafetyChecker([1, 2])
    with pytest.raises(InvariantViolation, match="convergence"):
        checker.final_check({}, {1: "aa", 2: "bb"})


def test_hard_state_alone_is_not_evidence() -> None:
    # A Ready with only a hard state passes through the checker untouched.
    checker = SafetyChecker([1, 2, 3])
    checker.on_ready(1, log_of(), 1, Ready(HardState(1, 1, 0), [], [], [], []))


def test_corrupted_bytes_sent_or_applied() -> None:
    checker = SafetyChecker([1, 2, 3])
    good = Entry(1, 1, b"hello")
    checker.on_corrupted(2, good, b"hellp")
    bad = Entry(1, 1, b"hellp")
    checker.on_sent(1, [Message(MsgType.APPEND, 1, 3, 1, entries=(good,))])  # the real bytes: fine
    with pytest.raises(InvariantViolation, match="corruption-propagated"):
        checker.on_sent(2, [Message(MsgType.APPEND, 2, 3, 1, entries=(bad,))])
    checker.committed[1] = bad  # so the apply reaches the corruption check, not another one
    with pytest.raises(InvariantViolation, match="corruption-propagated"):
        checker.on_applied(2, [bad], [Applied(1, None, None)])


def test_durability_allows_for_corrupted_disks_only() -> None:
    checker = SafetyChecker([1, 2, 3, 4, 5])
    entry = Entry(1, 1, b"x")
    checker.committed[1] = entry
    disks = {1: [entry], 2: [entry], 3: []}  # disks 4 and 5 corrupted and left out
    checker.full_check({}, disks, lost=1)
    with pytest.raises(InvariantViolation, match="durability"):
        checker.full_check({}, disks)
