"""The SQLite Raft log: checksums, compaction that gives space back, snapshot metadata, upgrade."""
import os
import sqlite3

import pytest

from replichat.integrity import CorruptDataError, entry_checksum
from replichat.raft.messages import Entry, HardState
from replichat.runtime.storage import SCHEMA_VERSION, LogBase, RaftStorage, SnapshotMeta


def filled(path: str, count: int, size: int = 10) -> RaftStorage:
    storage = RaftStorage(path)
    storage.save(HardState(2, 1, 0), [Entry(1 + i // 50, i + 1, bytes([i % 251]) * size) for i in range(count)])
    return storage


def flip_byte(db_path: str, index: int) -> None:
    """Change one byte of an entry's data the way a disk or an editor would: under SQLite."""
    db = sqlite3.connect(db_path)
    (data,) = db.execute("SELECT data FROM log WHERE idx = ?", (index,)).fetchone()
    changed = bytes([data[0] ^ 0x01]) + bytes(data[1:])
    db.execute("UPDATE log SET data = ? WHERE idx = ?", (changed, index))
    db.commit()
    db.close()


def test_entries_and_hard_state_round_trip(tmp_path) -> None:
    path = str(tmp_path / "raft.db")
    filled(path, 5).close()
    storage = RaftStorage(path)
    hard_state, entries = storage.load()
    assert hard_state == HardState(2, 1, 0)
    assert [e.index for e in entries] == [1, 2, 3, 4, 5]
    assert storage.reader().entries(2, 4) == entries[1:3]


def test_a_flipped_byte_in_a_stored_entry_is_detected_with_its_index(tmp_path) -> None:
    path = str(tmp_path / "raft.db")
    filled(path, 20).close()
    flip_byte(path, 13)
    storage = RaftStorage(path)
    with pytest.raises(CorruptDataError, match="entry 13 "):
        storage.load()
    reader = storage.reader()
    assert len(reader.entries(1, 13)) == 12
    with pytest.raises(CorruptDataError, match="entry 13 "):
        reader.entries(10, 15)


def test_a_changed_term_or_moved_entry_is_detected(tmp_path) -> None:
    path = str(tmp_path / "raft.db")
    filled(path, 3).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE log SET term = term + 1 WHERE idx = 2")
    db.commit()
    db.close()
    with pytest.raises(CorruptDataError, match="entry 2 "):
        RaftStorage(path).load()


def test_the_checksum_covers_index_term_and_data() -> None:
    base = entry_checksum(5, 2, b"hello")
    assert len({base, entry_checksum(6, 2, b"hello"), entry_checksum(5, 3, b"hello"), entry_checksum(5, 2, b"hellp")}) == 4


def test_compaction_needs_a_snapshot_and_keeps_the_base_term(tmp_path) -> None:
    storage = filled(str(tmp_path / "raft.db"), 120)
    with pytest.raises(ValueError, match="not covered by a snapshot"):
        storage.compact(10)
    storage.save_snapshot(SnapshotMeta(100, 2, "snapshots/x.db", 10, "ab"))
    with pytest.raises(ValueError, match="not covered"):
        storage.compact(101)
    assert storage.compact(80) == 80
    assert storage.log_base() == LogBase(80, 2)
    _, entries = storage.load()
    assert [e.index for e in entries] == list(range(81, 121))
    assert storage.compact(70) == 0
    assert storage.snapshot() == SnapshotMeta(100, 2, "snapshots/x.db", 10, "ab")


def _main_file_size(storage: RaftStorage) -> int:
    """raft.db's size with the WAL folded in (the test measures the main file alone)."""
    storage._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return os.path.getsize(storage.path)


def _refill(storage: RaftStorage, first: int, count: int, size: int) -> None:
    for start in range(first, first + count, 100):
        storage.save(None, [Entry(80, i, bytes([i % 251]) * size) for i in range(start, min(start + 100, first + count))])


def test_compaction_keeps_its_freed_pages_for_the_entries_that_replace_them(tmp_path) -> None:
    """The log refills what a compaction deleted: the file keeps its size instead of giving
    the pages back and growing again page by page."""
    storage = filled(str(tmp_path / "raft.db"), 4000, size=1000)
    full = _main_file_size(storage)
    storage.save_snapshot(SnapshotMeta(3990, 80, "s", 1, "x"))
    storage.compact(3990)
    assert _main_file_size(storage) > 0.9 * full
    _refill(storage, 4001, 3990, 1000)
    assert _main_file_size(storage) < 1.05 * full
    storage.close()


def test_compaction_gives_back_the_pages_the_last_cycle_did_not_reuse(tmp_path) -> None:
    """After a burst of large entries the file shrinks back to what the entries since need."""
    storage = filled(str(tmp_path / "raft.db"), 4000, size=1000)
    full = _main_file_size(storage)
    storage.save_snapshot(SnapshotMeta(3990, 80, "s", 1, "x"))
    storage.compact(3990)
    _refill(storage, 4001, 3990, 10)
    storage.save_snapshot(SnapshotMeta(7980, 80, "s", 1, "x"))
    storage.compact(7980)
    assert _main_file_size(storage) < full / 10
    _, entries = storage.load()
    assert [e.index for e in entries] == list(range(7981, 7991))
    storage.close()


def test_install_replaces_the_whole_log_atomically(tmp_path) -> None:
    path = str(tmp_path / "raft.db")
    storage = filled(path, 30)
    meta = SnapshotMeta(500, 9, "snapshots/snapshot-500.db", 1234, "cd")
    storage.install_snapshot(meta, HardState(9, 1, 500))
    storage.close()
    storage = RaftStorage(path)
    hard_state, entries = storage.load()
    assert (hard_state, entries, storage.log_base(), storage.snapshot()) == (HardState(9, 1, 500), [], LogBase(500, 9), meta)
    storage.save(None, [Entry(9, 501, b"next")])
    assert storage.load()[1] == [Entry(9, 501, b"next")]


def test_a_gap_after_the_base_is_refused(tmp_path) -> None:
    path = str(tmp_path / "raft.db")
    filled(path, 5).close()
    db = sqlite3.connect(path)
    db.execute("DELETE FROM log WHERE idx = 3")
    db.commit()
    db.close()
    with pytest.raises(CorruptDataError, match="entry 3 is missing"):
        RaftStorage(path).load()


def test_a_version_0_log_is_upgraded_with_checksums(tmp_path) -> None:
    path = str(tmp_path / "raft.db")
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE hard_state (id INTEGER PRIMARY KEY CHECK (id = 0), term INTEGER NOT NULL,
                                 vote INTEGER NOT NULL, commit_index INTEGER NOT NULL);
        CREATE TABLE log (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, data BLOB NOT NULL);
        INSERT INTO hard_state VALUES (0, 3, 2, 2);
        INSERT INTO log VALUES (1, 1, x''), (2, 3, x'0a03');
        """
    )
    db.close()
    storage = RaftStorage(path)
    assert storage.load() == (HardState(3, 2, 2), [Entry(1, 1, b""), Entry(3, 2, b"\n\x03")])
    storage.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
    db.close()
    flip_byte(path, 2)
    with pytest.raises(CorruptDataError, match="entry 2 "):
        RaftStorage(path).load()


def test_an_unknown_schema_version_is_refused(tmp_path) -> None:
    path = str(tmp_path / "raft.db")
    filled(path, 1).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=7")
    db.close()
    with pytest.raises(CorruptDataError, match="schema version 7"):
        RaftStorage(path)


def test_writes_are_fully_synchronous(tmp_path) -> None:
    storage = RaftStorage(str(tmp_path / "raft.db"))
    assert storage._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert storage._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_compaction_interrupted_after_moving_the_base_is_finished_at_open(tmp_path) -> None:
    """Compaction moves the base first, then deletes below it in chunks: a crash in between
    leaves entries below the base, which nothing reads and the next open deletes."""
    path = str(tmp_path / "raft.db")
    storage = filled(path, 3000)
    storage.save_snapshot(SnapshotMeta(2500, 60, "s", 1, "x"))
    assert storage._move_base(2500, None)  # the first step only: the process dies here
    _, entries = storage.load()
    assert [e.index for e in entries] == list(range(2501, 3001))
    assert len(storage.reader().entries(2501, 3001)) == 500
    storage.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM log WHERE idx <= 2500").fetchone() == (2500,)
    db.close()

    storage = RaftStorage(path)
    assert storage.log_base() == LogBase(2500, 50)
    _, entries = storage.load()
    assert [e.index for e in entries] == list(range(2501, 3001))
    storage.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT MIN(idx), COUNT(*) FROM log").fetchone() == (2501, 500)
    db.close()


def test_install_drops_the_old_log_above_and_below_the_snapshot(tmp_path) -> None:
    path = str(tmp_path / "raft.db")
    storage = filled(path, 3000)
    storage.install_snapshot(SnapshotMeta(1200, 9, "s", 1, "x"), HardState(9, 1, 1200))
    _, entries = storage.load()
    assert entries == []
    storage.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM log").fetchone() == (0,)
    db.close()


def test_reopening_keeps_the_pages_a_compaction_kept(tmp_path) -> None:
    path = str(tmp_path / "raft.db")
    storage = filled(path, 4000, size=1000)
    storage.save_snapshot(SnapshotMeta(3990, 80, "s", 1, "x"))
    storage.compact(3990)
    kept = _main_file_size(storage)
    storage.close()
    storage = RaftStorage(path)
    assert _main_file_size(storage) == kept
    storage.close()


def test_a_damaged_base_stops_the_open_instead_of_deleting_entries(tmp_path) -> None:
    """At open the entries below the base are deleted (an interrupted compaction): a base
    moved by damage, past the snapshot or onto an entry of another term, must be refused and
    leave every entry in place."""
    path = str(tmp_path / "raft.db")
    storage = filled(path, 300)
    storage.save_snapshot(SnapshotMeta(100, 2, "s", 1, "x"))
    storage.compact(100)
    storage.close()
    for idx, term, message in ((250, 5, "past the recorded snapshot"), (100, 7, "does not match")):
        db = sqlite3.connect(path)
        db.execute("UPDATE log_base SET idx = ?, term = ?", (idx, term))
        if idx == 100:
            db.execute("INSERT INTO log (idx, term, data, crc) VALUES (100, 2, x'00', ?)", (entry_checksum(100, 2, b"\0"),))
        db.commit()
        db.close()
        with pytest.raises(CorruptDataError, match=message):
            RaftStorage(path)
        db = sqlite3.connect(path)
        assert db.execute("SELECT COUNT(*) FROM log WHERE idx > 100").fetchone() == (200,)
        db.close()
