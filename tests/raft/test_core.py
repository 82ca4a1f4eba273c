"""Unit tests of the sans-IO Raft core, driven by the in-memory harness."""
from typing import List

import pytest

from replichat.raft.core import Config, NotLeader, RaftCore, Role
from replichat.raft.log import RaftLog
from replichat.raft.messages import Entry, HardState, Message, MsgType

from tests.raft.harness import Cluster


def tick_until_leader(cluster: Cluster, limit: int = 200) -> int:
    for _ in range(limit):
        cluster.tick()
        if len(cluster.leaders()) == 1:
            return cluster.leader()
    raise AssertionError("no leader elected")


def applied_data(cluster: Cluster, i: int) -> List[bytes]:
    return [e.data for e in cluster.replicas[i].applied if e.data]


@pytest.mark.parametrize("size", [1, 3, 5])
def test_one_leader_is_elected_and_known_by_all(size: int) -> None:
    cluster = Cluster(size)
    leader = tick_until_leader(cluster)
    cluster.tick(2)
    assert cluster.leaders() == [leader]
    terms = {cluster.core(i).term for i in cluster.replicas}
    assert len(terms) == 1
    assert all(cluster.core(i).leader == leader for i in cluster.replicas)


def test_proposals_commit_and_apply_in_order_everywhere() -> None:
    cluster = Cluster(3)
    leader = tick_until_leader(cluster)
    for n in range(20):
        cluster.core(leader).propose([f"cmd{n}".encode()])
    cluster.settle()
    cluster.tick(1)  # the heartbeat carries the final commit index to followers
    expected = [f"cmd{n}".encode() for n in range(20)]
    for i in cluster.replicas:
        assert applied_data(cluster, i) == expected


def test_a_batch_of_proposals_travels_in_one_append() -> None:
    cluster = Cluster(3)
    leader = tick_until_leader(cluster)
    cluster.sent.clear()
    cluster.core(leader).propose([b"a", b"b", b"c"])
    cluster.settle()
    appends = [m for m in cluster.sent if m.type is MsgType.APPEND and m.entries]
    assert len(appends) == 2  # one per follower
    assert [e.data for e in appends[0].entries] == [b"a", b"b", b"c"]


def test_follower_forwards_proposals_to_the_leader() -> None:
    cluster = Cluster(3)
    leader = tick_until_leader(cluster)
    follower = next(i for i in cluster.replicas if i != leader)
    assert cluster.core(follower).propose([b"via-follower"]) == 0
    cluster.settle()
    cluster.tick(1)
    for i in cluster.replicas:
        assert applied_data(cluster, i) == [b"via-follower"]


def test_proposal_without_a_leader_is_refused() -> None:
    core = RaftCore(Config(1, (1, 2, 3)))
    with pytest.raises(NotLeader):
        core.propose([b"x"])


def test_an_entry_of_an_earlier_term_is_not_committed_by_counting_replicas() -> None:
    """Figure 8 of the Raft paper: S1 (term 4) puts index 2 (term 2) on a majority; that must
    not commit it, because S5 (holding a term-3 entry at index 2) can still win and overwrite."""
    cluster = Cluster(5, max_entries_per_append=1)
    logs = {1: [1, 2], 2: [1, 2], 3: [1], 4: [1], 5: [1, 3]}
    for i, terms in logs.items():
        replica = cluster.replicas[i]
        replica.disk_log = [Entry(t, n + 1, f"t{t}-{n + 1}".encode()) for n, t in enumerate(terms)]
        replica.disk_state = HardState(term=3, vote=0, commit=1)
        replica.applied = [replica.disk_log[0]]
        replica.restart()
    for j in (4, 5):
        cluster.cut.update({(1, j), (j, 1)})
    # Index 3 (S1's term-4 no-op) never leaves S1.
    cluster.filter = lambda m: m._replace(entries=tuple(e for e in m.entries if e.index < 3))
    cluster.elect(1)
    assert cluster.core(1).term == 4
    assert cluster.core(1).progress[2].match == 2 and cluster.core(1).progress[3].match == 2
    assert cluster.core(1).commit_index == 1, "index 2 (term 2) must not commit by counting"

    # S1 crashes before its term-4 entry spreads; S5 can be elected and overwrites index 2.
    cluster.down.add(1)
    cluster.heal()
    cluster.filter = None
    for _ in range(300):
        cluster.tick()
        if cluster.leaders():
            break
    cluster.tick(3)
    leader = cluster.leader()
    entry2 = {cluster.replicas[i].applied[1] for i in cluster.replicas if i != 1 and len(cluster.replicas[i].applied) > 1}
    assert len(entry2) == 1, f"replicas applied different entries at index 2: {entry2}"
    assert cluster.core(leader).commit_index >= 3


def test_a_divergent_uncommitted_tail_is_repaired() -> None:
    cluster = Cluster(3)
    leader = tick_until_leader(cluster)
    cluster.core(leader).propose([b"committed"])
    cluster.settle()
    # The old leader, cut off, accepts proposals that can never commit.
    cluster.isolate(leader)
    for n in range(5):
        cluster.core(leader).propose([f"doomed{n}".encode()])
    cluster.settle()
    others = [i for i in cluster.replicas if i != leader]
    for _ in range(200):
        cluster.tick(only=others)
        if any(cluster.core(i).role is Role.LEADER for i in others):
            break
    new_leader = next(i for i in others if cluster.core(i).role is Role.LEADER)
    cluster.core(new_leader).propose([b"after"])
    cluster.settle()
    cluster.heal()
    cluster.tick(3)
    assert cluster.leader() == new_leader
    for i in cluster.replicas:
        assert applied_data(cluster, i) == [b"committed", b"after"]
        assert [e.term for e in cluster.replicas[i].disk_log] == [e.term for e in cluster.replicas[new_leader].disk_log]


def test_conflict_back_off_skips_a_whole_term() -> None:
    """A follower with a long conflicting tail is repaired in a few round trips, not one per entry."""
    cluster = Cluster(3)
    logs = {1: [1] * 101, 2: [1, 2, 2], 3: [1, 2, 2]}
    for i, terms in logs.items():
        replica = cluster.replicas[i]
        replica.disk_log = [Entry(t, n + 1, f"t{t}-{n + 1}".encode()) for n, t in enumerate(terms)]
        replica.disk_state = HardState(term=2, vote=0, commit=1)
        replica.restart()
    cluster.elect(2)
    cluster.tick(2)
    rejects = [m for m in cluster.sent if m.type is MsgType.APPEND_RESP and m.reject and m.src == 1]
    assert len(rejects) == 1
    assert cluster.replicas[1].disk_log == cluster.replicas[2].disk_log
    assert len(cluster.replicas[1].disk_log) == 4


def test_pre_vote_keeps_a_partitioned_replica_from_disrupting_the_leader() -> None:
    cluster = Cluster(3)
    leader = tick_until_leader(cluster)
    term = cluster.core(leader).term
    loner = next(i for i in cluster.replicas if i != leader)
    cluster.isolate(loner)
    cluster.tick(100)
    assert cluster.core(loner).term == term, "pre-vote must not raise the term of a cut-off replica"
    cluster.heal()
    cluster.tick(5)
    assert cluster.leader() == leader
    assert cluster.core(leader).term == term


def test_without_pre_vote_the_same_partition_would_disrupt() -> None:
    """The counterpart of the test above: proves the scenario exercises pre-vote."""
    cluster = Cluster(3, pre_vote=False, check_quorum=False)
    leader = tick_until_leader(cluster)
    term = cluster.core(leader).term
    loner = next(i for i in cluster.replicas if i != leader)
    cluster.isolate(loner)
    cluster.tick(100)
    assert cluster.core(loner).term > term


def test_check_quorum_makes_an_isolated_leader_step_down() -> None:
    cluster = Cluster(5)
    leader = tick_until_leader(cluster)
    cluster.isolate(leader)
    cluster.tick(cluster.core(leader).config.election_ticks * 2 + 1, only=[leader])
    assert cluster.core(leader).role is Role.FOLLOWER
    with pytest.raises(NotLeader):
        cluster.core(leader).propose([b"x"])


def test_majority_side_of_a_partition_elects_a_new_leader_and_old_one_follows_after_heal() -> None:
    cluster = Cluster(5)
    old = tick_until_leader(cluster)
    cluster.isolate(old)
    majority = [i for i in cluster.replicas if i != old]
    new = None
    for _ in range(300):
        cluster.tick()
        leaders = [i for i in majority if cluster.core(i).role is Role.LEADER]
        if leaders:
            new = leaders[0]
            break
    assert new is not None
    cluster.core(new).propose([b"majority-write"])
    cluster.settle()
    cluster.heal()
    cluster.tick(3)
    assert cluster.leader() == new
    assert applied_data(cluster, old) == [b"majority-write"]


def test_read_index_on_leader_and_via_follower() -> None:
    cluster = Cluster(3)
    leader = tick_until_leader(cluster)
    cluster.core(leader).propose([b"w"])
    cluster.settle()
    commit = cluster.core(leader).commit_index
    cluster.core(leader).read_index(b"r1")
    follower = next(i for i in cluster.replicas if i != leader)
    cluster.core(follower).read_index(b"r2")
    cluster.settle()
    assert [(r.index, r.context) for r in cluster.replicas[leader].reads] == [(commit, b"r1")]
    assert [(r.index, r.context) for r in cluster.replicas[follower].reads] == [(commit, b"r2")]


def test_read_index_needs_a_quorum() -> None:
    cluster = Cluster(3)
    leader = tick_until_leader(cluster)
    cluster.isolate(leader)
    cluster.core(leader).read_index(b"stale?")
    cluster.settle()
    cluster.tick(3, only=[leader])
    assert cluster.replicas[leader].reads == []


def test_a_read_arriving_mid_round_waits_for_the_next_round() -> None:
    cluster = Cluster(3)
    leader = tick_until_leader(cluster)
    core = cluster.core(leader)
    core.read_index(b"first")
    round_of_first = core._read_round
    core.read_index(b"second")  # arrives while the first round is in flight
    cluster.settle()
    assert [r.context for r in cluster.replicas[leader].reads] == [b"first", b"second"]
    assert core._read_round == round_of_first + 1


def test_leadership_transfer() -> None:
    cluster = Cluster(3)
    leader = tick_until_leader(cluster)
    target = next(i for i in cluster.replicas if i != leader)
    cluster.core(leader).propose([b"before"])
    cluster.settle()
    cluster.core(leader).transfer_leadership(target)
    cluster.settle()
    assert cluster.leader() == target
    cluster.core(target).propose([b"after"])
    cluster.settle()
    cluster.tick(1)
    for i in cluster.replicas:
        assert applied_data(cluster, i) == [b"before", b"after"]


def test_restart_of_every_replica_keeps_the_log() -> None:
    cluster = Cluster(3)
    leader = tick_until_leader(cluster)
    for n in range(5):
        cluster.core(leader).propose([f"m{n}".encode()])
    cluster.settle()
    for replica in cluster.replicas.values():
        replica.restart()
    leader = tick_until_leader(cluster)
    cluster.core(leader).propose([b"later"])
    cluster.settle()
    cluster.tick(1)
    for i in cluster.replicas:
        assert applied_data(cluster, i) == [f"m{n}".encode() for n in range(5)] + [b"later"]


def test_vote_is_in_the_same_ready_as_the_grant() -> None:
    """The runtime persists a Ready before sending its messages, so a grant and the vote it
    records must come out together."""
    core = RaftCore(Config(2, (1, 2, 3)))
    core.step(Message(MsgType.VOTE, 1, 2, 1, log_term=0, index=0))
    ready = core.ready()
    assert ready.hard_state is not None and ready.hard_state.vote == 1 and ready.hard_state.term == 1
    assert [m.type for m in ready.messages] == [MsgType.VOTE_RESP]
    assert not ready.messages[0].reject


def test_a_leader_does_not_count_itself_before_its_entries_are_durable() -> None:
    core = RaftCore(Config(1, (1,)))
    core.campaign()
    assert core.role is Role.LEADER
    core.propose([b"x"])
    assert core.commit_index == 0
    core.advance(core.ready())
    assert core.commit_index == 2  # no-op and x, once persisted


def test_vote_denied_to_a_candidate_with_a_shorter_log() -> None:
    log = RaftLog([Entry(1, 1), Entry(1, 2)])
    core = RaftCore(Config(2, (1, 2, 3)), log, HardState(term=1))
    core.step(Message(MsgType.VOTE, 1, 2, 2, log_term=1, index=1))
    reply = core.ready().messages[0]
    assert reply.type is MsgType.VOTE_RESP and reply.reject


def test_a_follower_that_lost_acknowledged_entries_is_flagged_and_resumed_without_spinning() -> None:
    from replichat.raft.progress import Progress

    progress = Progress(next_index=11, max_inflight=4)
    progress.acknowledged(10)
    progress.become_replicate()
    # The follower's disk now ends at 5: it rejects everything past what it acknowledged.
    assert progress.rejected(probed_index=11, retry_from=6) is True  # falls back to probing at 11
    progress.sent(10)
    assert progress.regressed_from is None
    # The fresh probe at what it acknowledged is rejected too: its log went back.
    assert progress.rejected(probed_index=10, retry_from=6) is True
    assert progress.regressed_from == 10
    assert (progress.match, progress.next) == (0, 6)  # resumes from where the follower really is
    progress.sent(6)
    assert progress.rejected(probed_index=5, retry_from=6) is True and progress.next == 5  # strictly backwards


def ticks_until_some_leader(cluster: Cluster, limit: int = 200) -> int:
    for n in range(1, limit + 1):
        cluster.tick()
        if len(cluster.leaders()) == 1:
            return n
    raise AssertionError("no leader elected")


def test_an_advanced_first_timeout_elects_the_first_leader_an_election_timeout_sooner() -> None:
    """A starting replica counts election_ticks - 1 ticks as waited (Config.advance_first_timeout):
    over many seeds a fresh cluster elects within election_ticks + 1 ticks (the first timeout
    is drawn from [election_ticks, 2 * election_ticks), one tick of it left at the least), where
    without the advance no leader is ever elected before election_ticks."""
    advanced = [ticks_until_some_leader(Cluster(3, seed=s, advance_first_timeout=True)) for s in range(40)]
    plain = [ticks_until_some_leader(Cluster(3, seed=s)) for s in range(40)]
    assert max(advanced) <= 10 + 1, advanced
    assert min(plain) >= 10, plain
    assert sum(advanced) < sum(plain) - 40 * 8, (advanced, plain)


def test_a_restarted_replica_with_an_advanced_timeout_does_not_disrupt_the_leader() -> None:
    """A restarted replica that does not hear from the leader in time campaigns early; its
    pre-vote is refused by the replica in the leader's lease, so the leader and the term stay.
    (With pre_vote=False the same run raises the term: the scenario does campaign.)"""
    for pre_vote, disrupted in ((True, False), (False, True)):
        cluster = Cluster(3, advance_first_timeout=True, pre_vote=pre_vote, check_quorum=pre_vote)
        leader = tick_until_leader(cluster)
        term = cluster.core(leader).term
        follower = next(i for i in cluster.replicas if i != leader)
        cluster.replicas[follower].restart()
        cluster.cut.add((leader, follower))  # the leader's heartbeats are lost on the way
        cluster.tick(10)  # its first timeout falls within 10 ticks of the start
        assert (cluster.core(follower).term > term) is disrupted, cluster.core(follower).status()
        if not disrupted:
            cluster.heal()
            cluster.tick(2)
            assert cluster.leaders() == [leader] and cluster.core(leader).term == term
            assert cluster.core(follower).leader == leader
