"""Snapshot timing (runtime/snapshot_policy.py): one snapshot per period of `every_entries`
applied entries on each replica, at an offset of its own, so that replicas applying the same
entries do not all copy their state at once."""
from typing import List

from replichat.runtime.snapshot_policy import SnapshotPolicy

EVERY = 10_000


def snapshots_taken(policy: SnapshotPolicy, replica_id: int, upto: int, batch: int = 7, start: int = 0) -> List[int]:
    """The applied indexes at which a replica applying batches of `batch` entries from `start`
    (its latest snapshot) takes its snapshots."""
    taken, last = [], start
    for applied in range(start + batch, upto + 1, batch):
        if policy.due(applied, last, replica_id):
            taken.append(applied)
            last = applied
    return taken


def test_each_replica_snapshots_once_a_period() -> None:
    policy = SnapshotPolicy(every_entries=EVERY)
    for replica_id in range(1, 8):
        taken = snapshots_taken(policy, replica_id, 100_000)
        assert len(taken) in (9, 10), (replica_id, taken)
        assert EVERY // 2 <= taken[0] <= EVERY, "the first one comes within a period, not before half of one"
        # The first one is wherever the offset or the half period put it; from there on, a period.
        gaps = [b - a for a, b in zip(taken[1:], taken[2:])]
        assert all(EVERY - 7 <= gap <= EVERY + 7 for gap in gaps), (replica_id, gaps)


def test_replicas_applying_together_snapshot_apart() -> None:
    policy = SnapshotPolicy(every_entries=EVERY)
    for replicas in (3, 5):
        # After each replica's first snapshot (ids whose offset is under half a period all take
        # their first at half a period: small states, and once).
        taken = sorted(index for replica_id in range(1, replicas + 1)
                       for index in snapshots_taken(policy, replica_id, 100_000)[1:])
        closest = min(b - a for a, b in zip(taken, taken[1:]))
        # Fibonacci hashing: 3 ids are >= 0.23 of a period apart, 5 ids >= 0.09.
        assert closest >= {3: 2_300, 5: 900}[replicas], (replicas, closest)


def test_after_an_install_the_next_snapshot_waits_half_a_period_then_keeps_its_offset() -> None:
    policy = SnapshotPolicy(every_entries=EVERY)
    offset = policy.offset(2)
    installed = 4 * EVERY + offset - 1_000  # 1,000 entries before one of replica 2's boundaries
    taken = snapshots_taken(policy, 2, installed + 3 * EVERY, batch=1, start=installed)
    assert taken[0] == installed + EVERY // 2
    assert all((index - offset) % EVERY == 0 for index in taken[1:]), taken


def test_offsets_are_the_documented_ones_and_zero_turns_snapshots_off() -> None:
    policy = SnapshotPolicy(every_entries=EVERY)
    assert [policy.offset(i) for i in (1, 2, 3)] == [6_180, 2_360, 8_541]  # 0.62, 0.24, 0.85
    assert 0 <= min(policy.offset(i) for i in range(1, 50)) and max(policy.offset(i) for i in range(1, 50)) < EVERY
    assert not SnapshotPolicy(every_entries=0).due(10**9, 0, 1)  # 0 turns snapshots off
    assert SnapshotPolicy(every_entries=1).due(1, 0, 5)
