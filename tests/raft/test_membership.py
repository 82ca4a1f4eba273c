"""Directed tests of membership changes: the pure configuration logic (raft/membership.py) and
each rule the core keeps (raft/core.py): the configuration in effect, learners, quorums, the
leader's two rules, removal of the leader, non-members that must not disrupt, restarts and
snapshots carrying the configuration. The simulator (tests/sim) searches for what these miss."""
from typing import List

import pytest

from replichat.raft import membership as conf
from replichat.raft.core import Config, NotLeader, RaftCore, Role
from replichat.raft.log import RaftLog
from replichat.raft.membership import Change, Member, Membership, MembershipError
from replichat.raft.messages import Entry, Message, MsgType
from replichat.raft.validate import check_message
from replichat.runtime.driver import RecoveryError, recover_core
from tests.raft.harness import Cluster, Replica

# --------------------------------------------------------------------------- pure logic


def test_a_configuration_round_trips_through_its_entry_and_is_recognised() -> None:
    m = Membership.of([Member(1, True, (("grpc", "h:1"), ("raft", "h:2"))), Member(3, False), Member(2, True)])
    data = conf.encode(m)
    assert conf.is_configuration(data) and conf.decode(data) == m
    assert [x.id for x in m.members] == [1, 2, 3]
    assert m.voters == {1, 2} and m.learners == {3} and m.quorum == 2
    assert m.member(1).address("raft") == "h:2" and m.member(3).address("raft") == ""
    # Nothing the log held before can look like one: protobuf never starts with a zero byte.
    assert not conf.is_configuration(b"") and not conf.is_configuration(b"\x0a\x03abc")


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"not json", "not JSON"),
        (b'{"members":[]}', "without members"),
        (b'{"members":[{"id":1,"voter":false,"addresses":{}}]}', "without voters"),
        (b'{"members":[{"id":1,"voter":true,"addresses":{}},{"id":1,"voter":true,"addresses":{}}]}', "twice"),
        (b'{"members":[{"id":2,"voter":true,"addresses":{}},{"id":1,"voter":true,"addresses":{}}]}', "out of order"),
        (b'{"members":[{"id":true,"voter":true,"addresses":{}}]}', "not in 1.."),
        (b'{"members":[{"id":0,"voter":true,"addresses":{}}]}', "not in 1.."),
        (b'{"members":[{"id":1,"voter":1,"addresses":{}}]}', "true or false"),
        (b'{"members":[{"id":1,"voter":true,"addresses":{"smtp":"h:1"}}]}', "unknown address kind"),
        (b'{"members":[{"id":1,"voter":true,"addresses":{"raft":"a b"}}]}', "cannot have"),
        (b'{"members":[{"id":1,"voter":true,"addresses":{"raft":7}}]}', "map kinds to strings"),
        (b'{"members":[{"id":1,"voter":true}]}', "exactly id, voter and addresses"),
        (b'{"members":[{"id":1,"voter":true,"addresses":{}}],"x":1}', "object with a list"),
        (b'{"members": [{"id":1,"voter":true,"addresses":{}}]}', "canonical"),
        (b'{"members":[' + b",".join(b'{"id":%d,"voter":true,"addresses":{}}' % i for i in range(1, 70)) + b"]}", "at most"),
        (b"\xff" * 10, "not JSON"),
    ],
)
def test_hostile_configuration_bytes_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(MembershipError, match=reason):
        conf.decode(conf.MARKER + body)
    assert reason.split()[0] in (conf.check_entry(conf.MARKER + body) or "")


def test_a_huge_configuration_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(MembershipError, match="at most"):
        conf.decode(conf.MARKER + b" " * conf.MAX_CONFIGURATION_BYTES)


def test_single_server_changes_apply_or_say_why_not() -> None:
    m = Membership.of_voters([1, 2, 3])
    added = m.apply(Change.add_learner(4, {"raft": "h:4"}))
    assert added.voters == {1, 2, 3} and added.learners == {4} and conf.voter_difference(m, added) == 0
    promoted = added.apply(Change.promote(4))
    assert promoted.voters == {1, 2, 3, 4} and conf.voter_difference(added, promoted) == 1
    removed = promoted.apply(Change.remove(1))
    assert removed.voters == {2, 3, 4} and removed.member(4).address("raft") == "h:4"
    for membership, change, reason in [
        (m, Change.add_learner(2), "already a member"),
        (m, Change.promote(2), "already a voter"),
        (m, Change.promote(9), "not a member"),
        (m, Change.remove(9), "not a member"),
        (Membership.of_voters([1]), Change.remove(1), "only voter"),
        (m, Change.add_learner(0), "not in 1.."),
    ]:
        with pytest.raises(MembershipError, match=reason):
            membership.apply(change)


def test_the_leaders_rules() -> None:
    assert conf.check_proposal(0, 5, committed_in_term=True) is None
    assert conf.check_proposal(5, 5, committed_in_term=True) is None
    assert "not committed yet" in (conf.check_proposal(6, 5, committed_in_term=True) or "")
    assert "not yet committed an entry of its term" in (conf.check_proposal(0, 5, committed_in_term=False) or "")


# --------------------------------------------------------------------------- the core


class MembersCluster(Cluster):
    """The harness cluster, plus replicas started later (outside the bootstrap configuration)
    and restarts that keep the configuration at the log's base, as the runtime does."""

    def __init__(self, size: int, **options: object) -> None:
        super().__init__(size, **options)
        self.bootstrap = tuple(range(1, size + 1))
        self.options = options
        self.base_membership = {i: None for i in self.replicas}  # type: dict

    def start_new(self, i: int) -> Replica:
        """A new, empty replica that knows the bootstrap members but is not one of them."""
        replica = Replica(Config(i, self.bootstrap, seed=1, **self.options))  # type: ignore[arg-type]
        self.replicas[i] = replica
        self.base_membership[i] = None
        return replica

    def restart(self, i: int) -> None:
        replica = self.replicas[i]
        log = RaftLog(replica.disk_log, replica.disk_state.commit, len(replica.applied),
                      base_index=replica.disk_base.index, base_term=replica.disk_base.term)
        replica.core = RaftCore(replica.config, log, replica.disk_state, replica.snapshot, self.base_membership[i])
        replica.core.log.applied = min(len(replica.applied), replica.core.log.committed)

    def propose(self, leader: int, change: Change) -> int:
        index = self.core(leader).propose_membership(change)
        self.settle()
        return index

    def write(self, leader: int, data: bytes = b"cmd") -> int:
        index = self.core(leader).propose([data])
        self.settle()
        return index


def grown() -> MembersCluster:
    """Three voters with replica 1 leading, and a new replica 4 added as a learner."""
    cluster = MembersCluster(3)
    cluster.elect(1)
    cluster.start_new(4)
    index = cluster.propose(1, Change.add_learner(4, {"raft": "h:4"}))
    assert cluster.core(1).commit_index >= index
    return cluster


def test_a_new_replica_outside_its_bootstrap_configuration_waits_and_never_campaigns() -> None:
    cluster = MembersCluster(3)
    cluster.elect(1)
    new = cluster.start_new(4)
    cluster.tick(50, only=[4])
    assert new.core.role is Role.FOLLOWER and new.core.term == 0
    assert all(m.src != 4 for m in cluster.sent)


def test_a_learner_receives_the_log_but_is_never_asked_for_a_vote_nor_counted() -> None:
    cluster = grown()
    leader, learner = cluster.core(1), cluster.core(4)
    cluster.write(1)
    cluster.tick(1)  # the heartbeat carries the new commit index
    assert learner.log.last_index == leader.log.last_index and learner.commit_index == leader.commit_index
    assert learner.membership.learners == {4} and leader.status()["learners"] == [4]
    # The learner's acknowledgement does not make a quorum: with both other voters cut off,
    # nothing commits however many learners have it.
    cluster.isolate(2)
    cluster.isolate(3)
    cluster.cut -= {(1, 4), (4, 1)}
    committed = leader.commit_index
    index = leader.propose([b"lonely"])
    cluster.settle()
    assert learner.log.last_index == index and leader.commit_index == committed
    # No vote request goes to a learner: the voters' elections never wait for it.
    cluster.heal()
    cluster.isolate(1)
    sent_before = len(cluster.sent)
    cluster.tick(40, only=[2, 3])
    assert cluster.leaders() == [1, 2] or cluster.leaders() == [1, 3]
    asked = [m for m in cluster.sent[sent_before:] if m.type in (MsgType.VOTE, MsgType.PRE_VOTE)]
    assert asked and all(m.dst != 4 for m in asked)


def test_a_learner_that_hears_from_its_leader_never_campaigns() -> None:
    cluster = grown()
    learner = cluster.core(4)
    sent_before = len(cluster.sent)
    cluster.tick(40)
    assert learner.role is Role.FOLLOWER and cluster.leaders() == [1]
    assert all(m.src != 4 or m.type not in (MsgType.VOTE, MsgType.PRE_VOTE) for m in cluster.sent[sent_before:])


def test_a_learner_waits_an_election_timeout_longer_than_any_voter_before_it_campaigns() -> None:
    """The voters get the first chance (their timeouts end before 2 * election_ticks): a
    learner that led would only hand over again, one more leader change."""
    cluster = grown()
    ticks = cluster.core(1).config.election_ticks
    for _ in range(20):  # each loss of the leader draws new timeouts
        leader = cluster.leader()
        cluster.down.add(leader)
        sent_before = len(cluster.sent)
        cluster.tick(2 * ticks - 1)
        assert all(m.src != 4 or m.type is not MsgType.PRE_VOTE for m in cluster.sent[sent_before:])
        cluster.tick(60)
        cluster.down.discard(leader)
        cluster.replicas[leader].restart()
        cluster.tick(5)
        assert cluster.leader() in (1, 2, 3, 4)


def test_a_learner_cut_off_from_a_live_leader_campaigns_but_is_refused_and_disturbs_no_one() -> None:
    """Pre-vote and the lease stop it, as they stop a voter: the voters hear from their leader."""
    cluster = grown()
    leader, learner = cluster.core(1), cluster.core(4)
    term = leader.term
    cluster.cut |= {(1, 4), (4, 1)}
    sent_before = len(cluster.sent)
    cluster.tick(40)
    assert any(m.src == 4 and m.type is MsgType.PRE_VOTE for m in cluster.sent[sent_before:])
    assert learner.role is not Role.LEADER and leader.role is Role.LEADER
    assert {cluster.core(i).term for i in (1, 2, 3)} == {term}


def test_a_learner_holding_the_newest_log_is_elected_when_no_voter_can_be_and_hands_over() -> None:
    """Simulator seed 85827, reduced. Leader 1 promotes learner 4 and the entry reaches no one;
    replica 3 wins the next term without it and replicates only to learner 4, then is lost for
    good. Voter 1 (its log promotes 4) needs 4's vote, which 4 refuses (its log has 3's newer
    term); voter 2 needs 1's, which 1 refuses (its log is longer). Only learner 4 can be
    elected: by voters 1 and 2 of its configuration {1,2,3}. It commits an entry of its term
    and hands leadership to a voter."""
    cluster = grown()
    cluster.isolate(1)
    cluster.core(1).propose_membership(Change.promote(4))
    cluster.settle()
    assert cluster.core(1).membership.voters == {1, 2, 3, 4}
    # Replica 3 wins the next term with 2's vote; nothing else of it reaches 2.
    cluster.filter = lambda m: None if m.src == 3 and m.dst == 2 and m.type is not MsgType.VOTE else m
    cluster.core(3).campaign(transfer=True)
    cluster.settle()
    three = cluster.core(3)
    assert three.role is Role.LEADER and cluster.core(4).log.last_term == three.term
    noop = three.log.last_index
    assert cluster.core(2).log.last_term < three.term
    cluster.filter = None
    cluster.heal()
    cluster.down.add(3)  # lost for good
    sent_before = len(cluster.sent)
    cluster.tick(200)
    assert cluster.leaders(), "no leader: the gap the learner's campaign closes"
    assert any(m.src == 4 and m.type is MsgType.VOTE for m in cluster.sent[sent_before:]), "the learner campaigned"
    leader = cluster.core(cluster.leader())
    assert leader.id in (1, 2), "a voter leads once the learner has settled the logs"
    assert leader.commit_index == leader.log.last_index and leader.log.last_term == leader.term
    # Replica 3's term survives on every log: the learner replicated it when it led.
    assert all(cluster.core(i).log.term(noop) == three.term for i in (1, 2, 4))
    assert leader.membership.voters == {1, 2, 3} and leader.membership.learners == {4}


def test_promotion_makes_the_quorum_three_of_four() -> None:
    cluster = grown()
    cluster.propose(1, Change.promote(4))
    leader = cluster.core(1)
    assert leader.membership.voters == {1, 2, 3, 4} and leader.quorum == 3
    assert all(cluster.core(i).membership.voters == {1, 2, 3, 4} for i in (2, 3, 4))
    # Leader + one follower were a quorum of three; of four they are not.
    cluster.isolate(3)
    cluster.isolate(4)
    cluster.cut -= {(1, 2), (2, 1)}
    committed = leader.commit_index
    leader.propose([b"x"])
    cluster.settle()
    assert leader.commit_index == committed
    cluster.heal()
    cluster.tick(1)
    assert leader.commit_index > committed


def test_the_configuration_takes_effect_when_appended_not_when_committed() -> None:
    cluster = MembersCluster(3)
    cluster.elect(1)
    cluster.start_new(4)
    cluster.isolate(1)
    cluster.cut -= {(1, 2), (2, 1)}
    cluster.filter = lambda m: None if m.type is MsgType.APPEND_RESP else m  # nothing commits
    index = cluster.core(1).propose_membership(Change.add_learner(4))
    cluster.settle()
    assert cluster.core(1).commit_index < index
    assert cluster.core(1).membership.learners == {4} and cluster.core(2).membership.learners == {4}
    assert cluster.core(3).membership.learners == frozenset()


def test_one_change_at_a_time_and_none_before_the_leader_commits_in_its_term() -> None:
    cluster = MembersCluster(3)
    cluster.elect(1)
    cluster.start_new(4)
    cluster.start_new(5)
    cluster.isolate(1)
    first = cluster.core(1).propose_membership(Change.add_learner(4))
    with pytest.raises(MembershipError, match="not committed yet: one change at a time"):
        cluster.core(1).propose_membership(Change.add_learner(5))
    cluster.heal()
    cluster.tick(1)
    assert cluster.core(1).commit_index >= first
    cluster.propose(1, Change.add_learner(5))
    # A new leader: until its term's no-op commits, it proposes no change.
    cluster.isolate(2)
    cluster.core(2).campaign(transfer=True)  # wins no votes while cut off
    cluster.heal()
    cluster.filter = lambda m: None if m.type is MsgType.APPEND_RESP else m
    cluster.tick(30)
    new = cluster.leader()
    core = cluster.core(new)
    assert core.log.term(core.commit_index) != core.term
    with pytest.raises(MembershipError, match="not yet committed an entry of its term"):
        core.propose_membership(Change.promote(4))
    cluster.filter = None
    cluster.tick(1)
    cluster.propose(new, Change.promote(4))
    assert core.membership.voters == {1, 2, 3, 4}


def test_a_follower_cannot_propose_a_change_and_none_travels_as_a_proposal() -> None:
    cluster = grown()
    with pytest.raises(NotLeader):
        cluster.core(2).propose_membership(Change.promote(4))
    with pytest.raises(ValueError, match="propose_membership"):
        cluster.core(2).propose([conf.encode(Membership.of_voters([2]))])
    forged = Message(MsgType.PROPOSE, 2, 1, cluster.core(1).term, entries=(Entry(0, 0, conf.encode(Membership.of_voters([2]))),))
    assert "configuration change as a proposal" in (check_message(forged) or "")
    cluster.core(1).step(forged)
    cluster.settle()
    assert cluster.core(1).membership.voters == {1, 2, 3} and cluster.core(1).dropped.count == 1


def test_an_append_carrying_an_invalid_configuration_is_dropped_by_validation() -> None:
    bad = Entry(1, 1, conf.MARKER + b'{"members":[]}')
    m = Message(MsgType.APPEND, 1, 2, 1, entries=(bad,))
    assert "entry 1" in (check_message(m) or "") and "without members" in (check_message(m) or "")
    good = Entry(1, 1, conf.encode(Membership.of_voters([1, 2])))
    assert check_message(m._replace(entries=(good,))) is None


def test_a_truncated_configuration_entry_rolls_the_configuration_back() -> None:
    cluster = MembersCluster(5)
    cluster.elect(1)
    cluster.start_new(6)
    # Replica 1 appends the change and reaches only replica 2 (a minority), then is cut off.
    for i in (3, 4, 5):
        cluster.isolate(i)
    cluster.filter = lambda m: None if m.type is MsgType.APPEND_RESP else m
    cluster.core(1).propose_membership(Change.add_learner(6))
    cluster.settle()
    cluster.filter = None
    assert cluster.core(2).membership.learners == {6}
    # Replicas 3, 4, 5 elect a leader of a new term, whose log never had the change.
    cluster.heal()
    cluster.isolate(1)
    cluster.isolate(2)
    for i in (3, 4, 5):
        cluster.cut -= {(i, j) for j in (3, 4, 5)}
    cluster.tick(40, only=[3, 4, 5])
    (leader,) = [i for i in (3, 4, 5) if cluster.core(i).role is Role.LEADER]
    cluster.write(leader)
    cluster.heal()
    cluster.tick(2)
    for i in (1, 2, 3, 4, 5):
        assert cluster.core(i).membership.ids == {1, 2, 3, 4, 5}, i
        assert cluster.core(i).latest_change_index == 0


def test_a_removed_leader_steps_down_once_its_removal_commits_and_hands_over() -> None:
    cluster = MembersCluster(3)
    cluster.elect(1)
    index = cluster.propose(1, Change.remove(1))
    old = cluster.core(1)
    assert old.role is Role.FOLLOWER and old.commit_index >= index
    # It handed over: a remaining voter leads without waiting for an election timeout.
    assert cluster.leader() in (2, 3)
    new = cluster.core(cluster.leader())
    assert new.membership.voters == {2, 3} and 1 not in new.progress
    # The removed replica never campaigns again, and the cluster goes on without it.
    term = new.term
    cluster.tick(60)
    assert new.role is Role.LEADER and new.term == term and old.role is Role.FOLLOWER
    cluster.write(cluster.leader())
    assert new.commit_index == new.log.last_index


def test_a_leader_that_lost_office_before_its_removal_committed_campaigns_to_finish_it() -> None:
    # Four voters, one (2) lost for good: the other three are all needed for a quorum. The
    # leader appends its own removal but is cut off before anyone else stores it, so it holds
    # the longest log: the others cannot win without its vote, and it must not be barred from
    # campaigning by a removal that is not committed (simulator seeds 1476, 2323, 2986).
    cluster = grown()
    cluster.propose(1, Change.promote(4))
    assert cluster.core(3).membership.voters == {1, 2, 3, 4}
    cluster.down.add(2)
    cluster.isolate(1)
    index = cluster.core(1).propose_membership(Change.remove(1))
    cluster.settle()
    old = cluster.core(1)
    assert old.membership.voters == {2, 3, 4} and old.commit_index < index
    cluster.tick(40)
    assert old.role is not Role.LEADER and not cluster.leaders()
    cluster.heal()
    cluster.tick(100)
    # It was elected by the new configuration's voters, committed its removal and handed over.
    leader = cluster.core(cluster.leader())
    assert leader.id in (3, 4) and leader.membership.voters == {2, 3, 4}
    assert leader.log.committed >= index and old.role is Role.FOLLOWER
    # With its removal committed it never campaigns again.
    term = leader.term
    cluster.tick(60)
    assert leader.role is Role.LEADER and leader.term == term
    cluster.write(leader.id)
    assert leader.commit_index == leader.log.last_index


def test_a_read_waiting_on_a_voter_being_removed_is_answered_once_the_quorum_shrinks() -> None:
    # Four voters, two unreachable: a read round needs three acknowledgements and gets two.
    # Removing one unreachable voter makes two a quorum; the acknowledgements already in must
    # then answer the read (simulator seed 13493: no new one comes for a round already
    # acknowledged, so the read, and every read after it, waited for ever).
    cluster = grown()
    cluster.propose(1, Change.promote(4))
    cluster.down.update({3, 4})
    leader = cluster.core(1)
    leader.read_index(b"r")
    cluster.settle()
    cluster.tick(3)
    assert cluster.replicas[1].reads == []
    leader.propose_membership(Change.remove(4))
    cluster.settle()
    cluster.tick(3)
    assert [r.context for r in cluster.replicas[1].reads] == [b"r"]
    leader.read_index(b"after")
    cluster.tick(3)
    assert [r.context for r in cluster.replicas[1].reads] == [b"r", b"after"]


def test_a_removed_replica_that_missed_its_removal_cannot_disrupt_the_cluster() -> None:
    cluster = MembersCluster(5)
    cluster.elect(1)
    cluster.isolate(5)
    cluster.propose(1, Change.remove(5))
    assert cluster.core(5).membership.voters == {1, 2, 3, 4, 5}
    cluster.heal()
    leader = cluster.core(1)
    term = leader.term
    # Replica 5 still believes it is a voter and campaigns over and over: pre-vote fails (the
    # members hold newer entries and hear from their leader), so no term grows.
    cluster.tick(80)
    assert leader.role is Role.LEADER and leader.term == term
    assert all(cluster.core(i).term == term for i in (2, 3, 4))
    cluster.write(1)
    assert leader.commit_index == leader.log.last_index


def test_a_replica_outside_the_configuration_is_not_replicated_to_nor_heard_answering() -> None:
    cluster = grown()
    cluster.propose(1, Change.remove(4))
    leader = cluster.core(1)
    assert 4 not in leader.progress and leader.peers == (2, 3)
    before = leader.dropped.count
    leader.step(Message(MsgType.APPEND_RESP, 4, 1, leader.term, index=leader.log.last_index))
    assert leader.dropped.count == before + 1


def test_the_configuration_is_restored_from_the_log_at_restart() -> None:
    cluster = grown()
    cluster.propose(1, Change.promote(4))
    cluster.restart(2)
    assert cluster.core(2).membership.voters == {1, 2, 3, 4}
    # A configuration entry that does not decode stops the restart, loudly.
    replica = cluster.replicas[3]
    index = next(e.index for e in replica.disk_log if conf.is_configuration(e.data))
    position = index - replica.disk_base.index - 1
    replica.disk_log[position] = replica.disk_log[position]._replace(data=conf.MARKER + b"{}")
    with pytest.raises(RecoveryError, match=f"log entry {index} holds an invalid configuration"):
        recover_core(replica.config, replica.disk_state, replica.disk_log, len(replica.applied))


def _snapshot_and_compact(cluster: MembersCluster, i: int) -> None:
    replica = cluster.replicas[i]
    meta = replica.take_snapshot()
    replica.compact(meta.index)
    cluster.base_membership[i] = replica.core.base_membership


def test_compaction_keeps_the_configuration_and_a_snapshot_carries_it_to_a_new_replica() -> None:
    cluster = grown()
    cluster.propose(1, Change.promote(4))
    cluster.write(1)
    _snapshot_and_compact(cluster, 1)
    leader = cluster.core(1)
    assert leader.latest_change_index == 0 and leader.base_membership.voters == {1, 2, 3, 4}
    cluster.restart(1)
    assert cluster.core(1).membership.voters == {1, 2, 3, 4}
    cluster.tick(40)
    leader_id = cluster.leader()
    # A replica added now can only get the snapshot: its configuration comes with it.
    new = cluster.start_new(5)
    cluster.isolate(5)
    cluster.propose(leader_id, Change.add_learner(5))
    cluster.write(leader_id)
    _snapshot_and_compact(cluster, leader_id)
    cluster.heal()
    cluster.tick(2)
    assert new.snapshot.index > 0 and new.core.base_membership.ids == {1, 2, 3, 4, 5}
    assert new.core.membership.learners == {5}
    assert new.core.commit_index == cluster.core(leader_id).commit_index


def test_a_snapshot_message_carries_a_valid_configuration_or_is_dropped() -> None:
    m = Message(MsgType.SNAPSHOT, 1, 2, 3, log_term=3, index=10, context=conf.encode(Membership.of_voters([1, 2])))
    assert check_message(m) is None
    assert "not a configuration" in (check_message(m._replace(context=b"x")) or "")
    assert "without members" in (check_message(m._replace(context=conf.MARKER + b'{"members":[]}')) or "")


def test_a_five_replica_cluster_is_replaced_one_server_at_a_time() -> None:
    """3 -> 5 -> a different 3, each step a single-server change, writes committing throughout."""
    cluster = MembersCluster(3)
    cluster.elect(1)
    for new in (4, 5, 6):
        cluster.start_new(new)
        cluster.propose(cluster.leader(), Change.add_learner(new))
        cluster.propose(cluster.leader(), Change.promote(new))
        cluster.write(cluster.leader())
    for old in (1, 2, 3):
        leader = cluster.leader()
        cluster.propose(leader, Change.remove(old))
        cluster.tick(30)
        cluster.write(cluster.leader())
    leader = cluster.core(cluster.leader())
    assert cluster.leader() in (4, 5, 6) and leader.membership.voters == {4, 5, 6}
    for i in (4, 5, 6):
        assert cluster.core(i).commit_index == leader.log.last_index
    for i in (1, 2, 3):
        assert cluster.core(i).role is Role.FOLLOWER


def test_a_learner_is_never_sent_a_transfer_and_the_leader_hands_only_to_voters() -> None:
    cluster = grown()
    leader = cluster.core(1)
    leader.transfer_leadership(4)
    cluster.settle()
    assert leader.role is Role.LEADER and leader.transferee == 0
    assert all(m.type is not MsgType.TIMEOUT_NOW for m in cluster.sent)


def _committed(cluster: MembersCluster, i: int) -> List[Entry]:
    core = cluster.core(i)
    return core.log.slice(1, core.commit_index + 1)


@pytest.mark.parametrize("guarded", [True, False], ids=["real-core", "without-the-2015-fix"])
def test_the_2015_scenario_a_change_before_the_leaders_first_commit(guarded: bool) -> None:
    """The bug in the thesis's single-server algorithm (raft-dev, 2015): S1 leads {1,2,3,4}
    and promotes learner 5 (reaching only 5); S2 is elected by {2,3,4} and, before committing
    anything in its term, removes S1 (committed by {2,3}); S1 is then elected by {1,4,5} under
    its configuration, and overwrites what S2 committed. The rule refuses S2's change."""
    from replichat.sim.mutants import ChangesBeforeTermCommit

    cluster = MembersCluster(4)
    if not guarded:
        for i, replica in cluster.replicas.items():
            replica.core = ChangesBeforeTermCommit(replica.config)
    cluster.elect(1)
    cluster.start_new(5)
    if not guarded:
        cluster.replicas[5].core = ChangesBeforeTermCommit(cluster.replicas[5].config)
    cluster.propose(1, Change.add_learner(5))
    # S1 promotes 5; only 5 hears of it.
    for i in (2, 3, 4):
        cluster.cut |= {(1, i), (i, 1)}
    cluster.core(1).propose_membership(Change.promote(5))
    cluster.settle()
    assert cluster.core(5).membership.voters == {1, 2, 3, 4, 5}
    # S2 is elected by 2, 3, 4; S4 will hear nothing of its term.
    cluster.cut |= {(5, i) for i in (2, 3, 4)} | {(i, 5) for i in (2, 3, 4)}
    # Its no-op stays uncommitted (no acknowledgement arrives), and never reaches S4.
    cluster.filter = lambda m: None if m.type is MsgType.APPEND_RESP or (m.type is MsgType.APPEND and m.dst == 4) else m
    cluster.core(2).campaign(transfer=True)
    cluster.settle()
    s2 = cluster.core(2)
    assert s2.role is Role.LEADER and s2.log.term(s2.commit_index) != s2.term
    if guarded:
        with pytest.raises(MembershipError, match="not yet committed an entry of its term"):
            s2.propose_membership(Change.remove(1))
        return
    s2.propose_membership(Change.remove(1))
    cluster.filter = lambda m: None if m.dst == 4 and m.src == 2 else m
    cluster.tick(1, only=[2])
    cluster.filter = None
    assert s2.membership.voters == {2, 3, 4} and s2.commit_index == s2.log.last_index
    # S1 comes back where only 4 and 5 hear it: elected under its own configuration.
    cluster.cut = {(a, b) for a in (1, 4, 5) for b in (2, 3)} | {(b, a) for a in (1, 4, 5) for b in (2, 3)}
    cluster.tick(40, only=[1, 4, 5])
    s1 = cluster.core(1)
    assert s1.role is Role.LEADER
    cluster.tick(2, only=[1, 4, 5])
    mine, theirs = _committed(cluster, 1), _committed(cluster, 2)
    common = min(len(mine), len(theirs))
    assert mine[:common] != theirs[:common], "both leaders committed; their committed logs must conflict"


def test_a_learner_told_to_campaign_does_not() -> None:
    cluster = grown()
    learner = cluster.core(4)
    learner.step(Message(MsgType.TIMEOUT_NOW, 1, 4, learner.term))
    assert learner.role is Role.FOLLOWER and learner.dropped.count == 0
