"""The rule for a member's Raft address (runtime/peer_addresses.py), and the warning a replica
gives when the addresses it was started with (--peers) and the configuration in its log disagree."""
import pytest

from replichat.raft.membership import Member, Membership
from replichat.runtime.peer_addresses import address_problem, disagreements, raft_addresses

GIVEN = {1: "h1:7001", 2: "h2:7002", 3: "h3:7003"}  # replica 2's original --peers


def config(*members: Member) -> Membership:
    return Membership.of(members)


def member(rid: int, raft: str = "") -> Member:
    return Member(rid, True, (("raft", raft),) if raft else ())


def test_agreeing_addresses_say_nothing() -> None:
    membership = config(member(1), member(2), member(3))
    assert raft_addresses(GIVEN, membership) == GIVEN
    assert disagreements(2, GIVEN, membership) == []


def test_members_added_since_are_reached_at_the_logs_addresses() -> None:
    """Replicas 4 and 5 were added, 1 and 3 removed; replica 2 restarts with its first --peers."""
    membership = config(member(2), member(4, "h4:7004"), member(5, "h5:7005"))
    assert raft_addresses(GIVEN, membership) == {**GIVEN, 4: "h4:7004", 5: "h5:7005"}
    clauses = disagreements(2, GIVEN, membership)
    assert clauses == [
        "members 4=h4:7004, 5=h5:7005 are not in --peers: it reaches them at the Raft addresses recorded in its log",
        "replicas 1, 3 are in --peers but no longer in the configuration: it keeps their links (harmless; drop them from --peers)",
    ]


def test_the_address_given_wins_and_the_difference_is_said() -> None:
    """--peers is a per-replica view (a proxy, a NAT): it wins, and the warning says so."""
    membership = config(member(1), member(2), member(3), member(4, "h4:7004"))
    given = {**GIVEN, 4: "proxy:9004"}
    assert raft_addresses(given, membership)[4] == "proxy:9004"
    assert disagreements(2, given, membership) == [
        "replica 4 is at proxy:9004 in --peers but h4:7004 in the log: it uses proxy:9004 "
        "(correct --peers if replica 4 moved)"
    ]


def test_a_member_nobody_gives_an_address_for_is_named() -> None:
    membership = config(member(1), member(2), member(3), member(6))
    assert 6 not in raft_addresses(GIVEN, membership)
    assert disagreements(2, GIVEN, membership) == [
        "member 6 is in neither --peers nor the log's addresses: it cannot reach them (give their Raft "
        "addresses in --peers)"
    ]


def test_its_own_address_is_kept_and_never_a_disagreement() -> None:
    membership = config(member(2, "elsewhere:1"), member(4, "h4:7004"))
    given = {2: "h2:7002", 4: "h4:7004"}
    assert raft_addresses(given, membership) == given
    assert disagreements(2, given, membership) == []


def test_an_introduced_address_is_the_last_resort() -> None:
    membership = config(member(2), member(4, "h4:7004"))
    introduced = {4: "claimed:1", 5: "h5:7005"}
    assert raft_addresses(GIVEN, membership, introduced) == {**GIVEN, 4: "h4:7004", 5: "h5:7005"}


@pytest.mark.parametrize("address, problem", [
    ("h:1", None), ("[::1]:65535", None), ("", "0 characters"), ("h", "not HOST:PORT"), (":1", "not HOST:PORT"),
    ("h:0", "not HOST:PORT"), ("h:99999", "not HOST:PORT"), ("a b:1", "cannot have"), ("h:" + "1" * 300, "characters"),
])
def test_a_peers_claimed_address_is_checked(address: str, problem: str) -> None:
    found = address_problem(address)
    assert (found is None) if problem is None else (problem in found)
