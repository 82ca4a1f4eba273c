"""RaftLog with a snapshot base, compaction, restore and a bounded in-memory window."""
from typing import Dict, List

import pytest

from replichat.raft.log import Compacted, RaftLog
from replichat.raft.messages import Entry


class DictReader:
    """Stands in for the durable log: every entry ever persisted, and a count of reads."""

    def __init__(self) -> None:
        self.stored: Dict[int, Entry] = {}
        self.reads = 0

    def entries(self, lo: int, hi: int) -> List[Entry]:
        self.reads += 1
        return [self.stored[i] for i in range(lo, hi)]


def entries(terms: List[int], first: int = 1) -> List[Entry]:
    return [Entry(term, first + i, b"%d" % (first + i)) for i, term in enumerate(terms)]


def test_a_log_after_a_snapshot_base_matches_at_the_base_and_not_before() -> None:
    log = RaftLog(entries([3, 3, 4], first=11), committed=12, applied=11, base_index=10, base_term=2)
    assert (log.first_index, log.last_index, log.last_term) == (11, 13, 4)
    assert log.term(10) == 2 and log.term(13) == 4
    assert log.has(10, 2) and not log.has(10, 3)
    with pytest.raises(Compacted):
        log.term(9)
    assert not log.has(9, 2)
    with pytest.raises(Compacted):
        log.slice(10, 12)
    assert [e.index for e in log.slice(11, 100)] == [11, 12, 13]
    assert log.first_index_of_term(12) == 11
    assert log.last_index_of_term(3) == 12 and log.last_index_of_term(2) == 10 and log.last_index_of_term(1) == 0


def test_an_applied_index_before_the_base_is_refused() -> None:
    with pytest.raises(ValueError, match="restore it first"):
        RaftLog(entries([1], first=6), committed=6, applied=3, base_index=5, base_term=1)


def test_compaction_keeps_terms_for_matching_and_refuses_unapplied_entries() -> None:
    log = RaftLog(entries([1, 1, 2, 2, 3]), committed=5, applied=3)
    with pytest.raises(AssertionError, match="not yet applied"):
        log.compact(4)
    assert log.compact(3) == 3
    assert (log.base_index, log.base_term, log.first_index) == (3, 2, 4)
    assert log.term(3) == 2 and log.term(4) == 2 and log.term(5) == 3
    assert log.to_apply() == entries([2, 3], first=4)
    assert log.first_index_of_term(4) == 3  # the run continues into the base, no further back
    assert log.compact(2) == 0  # already gone


def test_merge_over_a_compacted_prefix_skips_it_and_appends_the_rest() -> None:
    log = RaftLog(entries([1, 1, 1]), committed=3, applied=3)
    log.compact(3)
    last = log.merge(1, entries([1, 1, 1, 2], first=2))
    assert last == 5 and log.last_index == 5 and log.term(5) == 2
    assert [e.index for e in log.unstable()] == [4, 5]


def test_merge_truncates_a_conflicting_tail_and_its_term_runs() -> None:
    log = RaftLog(entries([1, 2, 2, 3]), committed=1)
    log.merge(1, [Entry(4, 2)])
    assert log.last_index == 2 and log.last_term == 4 and log.stable == 1
    assert log.last_index_of_term(2) == 0 and log.last_index_of_term(3) == 0
    assert log.first_index_of_term(2) == 2


def test_restore_replaces_the_log_by_a_newer_snapshot_only() -> None:
    log = RaftLog(entries([1, 1, 2]), committed=2, applied=1)
    with pytest.raises(AssertionError, match="not newer"):
        log.restore(2, 1)
    log.restore(40, 7)
    assert (log.first_index, log.last_index, log.last_term) == (41, 40, 7)
    assert log.committed == log.applied == log.stable == 40
    assert log.has(40, 7) and log.unstable() == [] and log.to_apply() == []
    log.append([Entry(7, 41, b"x")])
    assert log.slice(41, 42) == [Entry(7, 41, b"x")]


def test_the_window_drops_only_durable_applied_entries_and_reads_them_back() -> None:
    reader = DictReader()
    log = RaftLog(reader=reader, window=4)
    for index in range(1, 21):
        entry = Entry(1 + index // 8, index, b"%d" % index)
        log.append([entry])
        reader.stored[index] = entry  # persisted
        log.mark_stable(index, entry.term)
    # Nothing is applied yet: everything stays (apply needs it).
    assert log.in_memory == 20
    log.commit_to(20)
    log.applied_to(18)
    assert log.in_memory <= 5 + 2  # window plus the unapplied tail
    assert log.term(3) == 1 and log.term(16) == 3  # terms need no reads
    assert reader.reads == 0
    assert log.slice(2, 6) == [reader.stored[i] for i in range(2, 6)]
    assert log.slice(1, 21) == [reader.stored[i] for i in range(1, 21)]
    assert reader.reads == 2
    assert log.to_apply() == [reader.stored[19], reader.stored[20]]


def test_unstable_entries_never_leave_memory() -> None:
    reader = DictReader()
    log = RaftLog(reader=reader, window=2)
    log.append(entries([1] * 10))
    log.commit_to(0)
    assert log.in_memory == 10 and len(log.unstable()) == 10


def test_merge_into_a_windowed_log_skips_entries_only_on_disk() -> None:
    reader = DictReader()
    log = RaftLog(reader=reader, window=2)
    batch = entries([1] * 10)
    log.append(batch)
    reader.stored.update({e.index: e for e in batch})
    log.mark_stable(10, 1)
    log.commit_to(10)
    log.applied_to(10)
    assert log.in_memory < 10
    assert log.merge(0, batch + [Entry(2, 11)]) == 11
    assert log.last_index == 11 and [e.index for e in log.unstable()] == [11]


def test_a_window_without_a_reader_is_refused() -> None:
    with pytest.raises(ValueError):
        RaftLog(window=10)
