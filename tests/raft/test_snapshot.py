"""The core's side of snapshots: compaction, InstallSnapshot, and followers whose log went back."""
from typing import List

import pytest

from replichat.raft.core import Config, RaftCore
from replichat.raft.log import RaftLog
from replichat.raft.messages import Entry, HardState, Message, MsgType, SnapshotMeta
from replichat.raft.progress import ProgressState
from tests.raft.harness import Cluster


def data(cluster: Cluster, i: int) -> List[bytes]:
    return [e.data for e in cluster.replicas[i].applied if e.data]


def write(cluster: Cluster, leader: int, items: List[bytes]) -> None:
    cluster.core(leader).propose(items)
    cluster.settle()


def test_a_follower_behind_the_compacted_log_catches_up_by_snapshot() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    write(cluster, 1, [b"a", b"b"])
    cluster.down.add(3)
    write(cluster, 1, [b"c", b"d", b"e"])
    leader = cluster.replicas[1]
    meta = leader.take_snapshot()
    leader.compact(meta.index)
    assert cluster.core(1).log.first_index == meta.index + 1
    cluster.down.discard(3)
    cluster.sent.clear()
    write(cluster, 1, [b"f"])
    cluster.tick(2)
    snapshots = [m for m in cluster.sent if m.type is MsgType.SNAPSHOT]
    assert [(m.dst, m.index, m.log_term) for m in snapshots] == [(3, meta.index, meta.term)]
    for i in (1, 2, 3):
        assert data(cluster, i) == [b"a", b"b", b"c", b"d", b"e", b"f"]
    follower = cluster.core(3)
    assert follower.log.base_index == meta.index and follower.snapshot == meta
    assert cluster.core(1).progress[3].state is ProgressState.REPLICATE
    assert cluster.core(1).progress[3].match == cluster.core(1).log.last_index


def test_a_replica_restarts_from_a_compacted_log_and_keeps_going() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    write(cluster, 1, [b"a", b"b", b"c"])
    for i in (1, 2, 3):
        replica = cluster.replicas[i]
        replica.compact(replica.take_snapshot().index - 1)  # keep a tail of one entry
        replica.restart()
    cluster.tick(40)
    leader = cluster.leader()
    write(cluster, leader, [b"d"])
    for i in (1, 2, 3):
        assert data(cluster, i) == [b"a", b"b", b"c", b"d"]


def test_a_failed_transfer_is_retried() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.down.add(3)
    write(cluster, 1, [b"a"])
    cluster.replicas[1].compact(cluster.replicas[1].take_snapshot().index)
    cluster.down.discard(3)
    dropped = []

    def drop_first_snapshot(m: Message) -> "Message | None":
        if m.type is MsgType.SNAPSHOT and not dropped:
            dropped.append(m)
            return None
        return m

    cluster.filter = drop_first_snapshot
    cluster.tick(3)
    assert len(dropped) == 1
    assert data(cluster, 3) == [b"a"]


def test_an_older_snapshot_is_never_installed() -> None:
    log = RaftLog([Entry(1, i) for i in range(1, 11)], committed=8, applied=8)
    core = RaftCore(Config(2, (1, 2, 3)), log, HardState(term=1, commit=8))
    core.snapshot_received(Message(MsgType.SNAPSHOT, 1, 2, 1, log_term=1, index=5))
    ready = core.ready()
    assert ready.snapshot is None
    assert [(m.type, m.index, m.reject) for m in ready.messages] == [(MsgType.APPEND_RESP, 8, False)]
    assert core.log.last_index == 10 and core.log.base_index == 0


def test_a_snapshot_the_log_already_holds_commits_instead_of_replacing() -> None:
    log = RaftLog([Entry(1, i) for i in range(1, 11)], committed=3, applied=3)
    core = RaftCore(Config(2, (1, 2, 3)), log, HardState(term=1, commit=3))
    core.snapshot_received(Message(MsgType.SNAPSHOT, 1, 2, 1, log_term=1, index=7))
    ready = core.ready()
    assert ready.snapshot is None
    assert [e.index for e in ready.committed] == [4, 5, 6, 7]
    assert ready.messages[-1].index == 7


def test_a_newer_snapshot_replaces_a_divergent_log_and_is_persisted_before_the_answer() -> None:
    log = RaftLog([Entry(1, 1), Entry(1, 2), Entry(2, 3)], committed=1, applied=1)
    core = RaftCore(Config(2, (1, 2, 3)), log, HardState(term=2, commit=1))
    forged = Message(MsgType.SNAPSHOT, 1, 2, 3, log_term=3, index=9)
    core.step(forged)  # from the network: a snapshot file that was never received
    assert not core.has_ready() and core.log.last_index == 3
    core.snapshot_received(forged)
    ready = core.ready()
    assert ready.snapshot == SnapshotMeta(9, 3)
    assert not ready.send_before_persist and ready.hard_state is not None and ready.hard_state.commit == 9
    assert ready.committed == [] and ready.entries == []
    assert [(m.type, m.index) for m in ready.messages] == [(MsgType.APPEND_RESP, 9)]
    core.advance(ready)
    assert not core.has_ready()
    assert (core.log.base_index, core.log.last_index, core.log.applied) == (9, 9, 9)


def test_compaction_and_snapshots_are_bounded_by_what_was_applied() -> None:
    core = RaftCore(Config(1, (1,)))
    core.campaign()
    core.propose([b"x"])
    core.advance(core.ready())
    core.advance(core.ready())
    assert core.log.applied == 2
    with pytest.raises(AssertionError):
        core.snapshot_taken(SnapshotMeta(3, 1))
    with pytest.raises(AssertionError):
        core.compact(1)  # no snapshot covers it yet
    core.snapshot_taken(SnapshotMeta(2, 1))
    assert core.compact(2) == 2
    assert core.status()["first"] == 3 and core.status()["snapshot"] == 2


def test_a_follower_whose_log_went_back_is_reported_and_caught_up() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    write(cluster, 1, [b"a", b"b", b"c"])
    acknowledged = cluster.core(1).progress[3].match
    # Replica 3 loses its data (wiped directory) and comes back under the same id.
    wiped = cluster.replicas[3]
    wiped.disk_log, wiped.applied, wiped.disk_state = [], [], HardState(term=wiped.disk_state.term)
    wiped.restart()
    cluster.tick(3, only=[1])  # idle: heartbeats only
    assert [(r.peer, r.acknowledged) for r in cluster.replicas[1].regressions] == [(3, acknowledged)]
    assert cluster.core(1).status()["regressed"] == {3: acknowledged}
    assert data(cluster, 3) == [b"a", b"b", b"c"]
    assert cluster.core(1).progress[3].match == cluster.core(1).log.last_index


def test_the_snapshot_policy_counts_applied_entries_and_keeps_a_tail() -> None:
    from replichat.runtime.snapshot_policy import SnapshotPolicy

    policy = SnapshotPolicy(every_entries=100, keep_entries=30, staggered=False)
    assert not policy.due(applied=199, last_snapshot=100, replica_id=1)
    assert policy.due(applied=200, last_snapshot=100, replica_id=1)
    assert policy.compact_to(snapshot_index=200, base_index=100) == 170
    assert policy.compact_to(snapshot_index=120, base_index=100) == 100
    assert not SnapshotPolicy(every_entries=0).due(10**9, 0, 1)  # 0 turns snapshots off
