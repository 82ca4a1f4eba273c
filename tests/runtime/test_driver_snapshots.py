"""Directed tests of the driver's snapshot decisions and their order (runtime/snapshots.py).

The same driver runs in the asyncio node (snapshot_runtime.py does the file IO) and in the
simulator (tests/sim/test_snapshots.py, and the snapshot mutants in tests/sim/test_mutants.py).
"""
from typing import List, Tuple

import pytest

from replichat.raft.core import Config, RaftCore, Role
from replichat.raft.messages import Entry, HardState, Message, MsgType, SnapshotMeta
from replichat.runtime.driver import Driver, Step
from replichat.runtime.snapshots import StateRecovery, compaction_target, state_recovery
from replichat.runtime.snapshot_policy import SnapshotPolicy
from tests.runtime.test_driver import Answers, key_of, run_step, settle


def leader_with_entries(count: int, policy: SnapshotPolicy, voters: Tuple[int, ...] = (1,)) -> Driver:
    core = RaftCore(Config(id=1, voters=voters, seed=1, pre_vote=False))
    driver = Driver(core, key_of, Answers(), retry_interval=2.0, request_timeout=8.0, snapshot_policy=policy)
    core.campaign()
    settle(driver)
    if len(voters) > 1:
        for peer in voters[1:]:
            driver.step_messages([Message(MsgType.VOTE_RESP, peer, 1, core.term)])
        settle(driver)
    assert core.role is Role.LEADER
    for n in range(count):
        driver.propose(f"k{n}".encode(), f"k{n}".encode(), now=0.0)
        settle(driver)
    return driver


def test_compaction_never_passes_the_snapshot_applied_or_durable_index() -> None:
    policy = SnapshotPolicy(every_entries=10, keep_entries=3)
    assert compaction_target(policy, snapshot_index=20, base_index=0, applied=25, stable=30) == 17
    assert compaction_target(SnapshotPolicy(10, 0), snapshot_index=20, base_index=0, applied=15, stable=30) == 15
    assert compaction_target(SnapshotPolicy(10, 0), snapshot_index=20, base_index=0, applied=25, stable=12) == 12
    assert compaction_target(policy, snapshot_index=20, base_index=19, applied=25, stable=30) == 19


def test_state_recovery_keeps_restores_or_refuses() -> None:
    assert state_recovery(applied=5, base_index=3, last_index=9, snapshot_index=3) is StateRecovery.KEEP
    # A power loss took the state, or a crash struck between an install's log and state steps.
    assert state_recovery(applied=0, base_index=3, last_index=9, snapshot_index=5) is StateRecovery.RESTORE
    assert state_recovery(applied=0, base_index=0, last_index=9, snapshot_index=None) is StateRecovery.KEEP
    # The log was compacted past the snapshot: nothing can bring those entries back.
    assert state_recovery(applied=0, base_index=6, last_index=9, snapshot_index=5) is StateRecovery.REFUSE
    assert state_recovery(applied=12, base_index=0, last_index=9, snapshot_index=None) is StateRecovery.REFUSE


def test_a_snapshot_is_due_every_n_applied_entries_one_at_a_time() -> None:
    driver = leader_with_entries(12, SnapshotPolicy(every_entries=10, keep_entries=4))
    applied = driver.core.log.applied
    assert applied >= 10
    assert driver.snapshot_due()
    assert not driver.snapshot_due(), "one snapshot in flight at a time"
    meta = driver.snapshot_written(applied)
    assert meta == SnapshotMeta(applied, driver.core.term)
    to = driver.snapshot_recorded(meta)
    assert to == applied - 4
    assert driver.core.snapshot == meta and driver.core.log.base_index == to
    assert not driver.snapshot_due(), "not due again until another 10 entries are applied"


def test_a_snapshot_overtaken_by_a_newer_one_is_dropped() -> None:
    driver = leader_with_entries(12, SnapshotPolicy(every_entries=5, keep_entries=0))
    assert driver.snapshot_due()
    first = driver.snapshot_written(8)
    assert first is not None
    driver.snapshot_recorded(first)
    assert driver.snapshot_due()
    assert driver.snapshot_written(6) is None, "older than the snapshot the core has"
    assert driver.core.snapshot == first


def test_never_is_the_default_policy() -> None:
    driver = leader_with_entries(30, SnapshotPolicy(every_entries=0))
    assert not driver.snapshot_due()


def test_a_follower_behind_the_compacted_log_is_sent_a_snapshot_not_entries() -> None:
    driver = leader_with_entries(0, SnapshotPolicy(every_entries=5, keep_entries=0), voters=(1, 2, 3))
    core = driver.core
    for n in range(8):
        driver.propose(f"k{n}".encode(), f"k{n}".encode(), now=0.0)
        settle(driver)
        driver.step_messages([Message(MsgType.APPEND_RESP, 2, 1, core.term, index=core.log.last_index)])
        settle(driver)
    assert core.log.applied >= 5 and driver.snapshot_due()
    meta = driver.snapshot_written(core.log.applied)
    assert meta is not None
    driver.snapshot_recorded(meta)
    # Replica 3 never answered: it needs entries the log no longer holds.
    driver.step_messages([Message(MsgType.APPEND_RESP, 3, 1, core.term, index=0, reject=True, reject_hint=0)])
    driver.feed()
    step = driver.next_step()
    assert step is not None
    assert [(m.dst, m.index) for m in step.snapshots_to_send] == [(3, meta.index)]
    assert all(m.type is not MsgType.SNAPSHOT for m in step.early + step.late)


def follower_installing(snapshot_index: int) -> Tuple[Driver, Step]:
    core = RaftCore(Config(id=2, voters=(1, 2, 3), seed=1))
    driver = Driver(core, key_of, Answers(), retry_interval=2.0, request_timeout=8.0)
    driver.snapshot_messages([Message(MsgType.SNAPSHOT, 1, 2, 3, log_term=2, index=snapshot_index)])
    driver.feed()
    step = driver.next_step()
    assert step is not None and step.install == SnapshotMeta(snapshot_index, 2)
    return driver, step


def test_an_install_goes_log_first_then_state_then_the_acknowledgement() -> None:
    driver, step = follower_installing(40)
    assert step.early == [], "the acknowledgement waits for the install"
    with pytest.raises(AssertionError):
        driver.install_restored(step)  # the state before the log knows the snapshot
    with pytest.raises(AssertionError):
        driver.persisted(step)  # persisting (and sending) before the install
    assert driver.install_hard_state(step) == HardState(3, 0, 40)
    driver.install_logged(step)
    with pytest.raises(AssertionError):
        driver.persisted(step)
    driver.install_restored(step)
    assert driver.applied_index == 40
    late = driver.persisted(step)
    assert [(m.type, m.index) for m in late] == [(MsgType.APPEND_RESP, 40)]
    driver.advance(step)
    assert driver.core.log.applied == 40 and driver.core.log.base_index == 40


def test_a_snapshot_not_newer_than_the_commit_index_is_refused() -> None:
    driver, step = follower_installing(40)
    driver.install_logged(step)
    driver.install_restored(step)
    driver.persisted(step)
    driver.advance(step)
    driver.snapshot_messages([Message(MsgType.SNAPSHOT, 1, 2, 3, log_term=2, index=30)])
    disk: List[Step] = []
    step2 = run_step(driver, disk)
    assert step2 is not None and step2.install is None
    assert [(m.type, m.index) for m in step2.late] == [(MsgType.APPEND_RESP, 40)], "says how far it is"
    assert driver.core.log.committed == 40


def test_a_snapshot_recorded_after_an_install_overtook_it_compacts_nothing() -> None:
    """The node records a snapshot it took on its disk thread; meanwhile the loop may install a
    newer one from the leader. Compacting to the install's base then would outrun the snapshot
    raft.db has recorded so far (seen in a real-process crash test: the replica stopped with
    "compaction to 165 is not covered by a snapshot (index=119)")."""
    core = RaftCore(Config(id=2, voters=(1, 2, 3), seed=1))
    driver = Driver(core, key_of, Answers(), retry_interval=2.0, request_timeout=8.0,
                    snapshot_policy=SnapshotPolicy(every_entries=5, keep_entries=0))
    entries = tuple(Entry(3, i, f"k{i}".encode()) for i in range(1, 11))
    driver.step_messages([Message(MsgType.APPEND, 1, 2, 3, log_term=0, index=0, entries=entries, commit=10)])
    settle(driver)
    assert core.log.applied == 10 and driver.snapshot_due()
    taken = driver.snapshot_written(10)
    assert taken == SnapshotMeta(10, 3)
    # The leader's snapshot at 40 arrives and is installed while `taken` is being recorded.
    driver.snapshot_messages([Message(MsgType.SNAPSHOT, 1, 2, 3, log_term=3, index=40)])
    driver.feed()
    step = driver.next_step()
    assert step is not None and step.install == SnapshotMeta(40, 3)
    driver.install_logged(step)
    driver.install_restored(step)
    driver.persisted(step)
    driver.advance(step)
    assert driver.snapshot_recorded(taken) is None
    assert core.snapshot == SnapshotMeta(40, 3) and core.log.base_index == 40
