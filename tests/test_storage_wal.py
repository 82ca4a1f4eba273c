"""The SQLite write-ahead logs stay bounded (issue 10, section 4; replichat/sqlite_wal.py): both
connections that write (the Raft log's and the chat state's) checkpoint early and truncate a
WAL that overran, so the data directory does not carry ~4 MiB of WAL per database."""
import os
import sqlite3
from typing import Callable

from replichat.chat.state import ChatState
from replichat.raft.messages import Entry, HardState
from replichat.sqlite_wal import (
    WAL_AUTOCHECKPOINT_PAGES, WAL_FRAME_BYTES, WAL_HEADER_BYTES, WAL_SIZE_LIMIT_BYTES, WalBound, wal_bound,
)
from replichat.runtime.storage import RaftStorage, SnapshotMeta

SQLITE_DEFAULT_AUTOCHECKPOINT_PAGES = 1000
ENTRY_BYTES = 1000
ENTRIES_PER_SAVE = 20  # ~6 pages a transaction


def wal_size(path: str) -> int:
    return os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0


def save_many(storage: RaftStorage, first: int, saves: int, after_each: Callable[[], None] = lambda: None) -> int:
    """`saves` transactions of ENTRIES_PER_SAVE entries from index `first`; returns the next index."""
    index = first
    for _ in range(saves):
        entries = [Entry(1, index + k, bytes([(index + k) % 251]) * ENTRY_BYTES) for k in range(ENTRIES_PER_SAVE)]
        storage.save(HardState(1, 1, index), entries)
        index += ENTRIES_PER_SAVE
        after_each()
    return index


# A WAL holds the frames written before the commit that crossed the autocheckpoint threshold,
# that commit's own frames (at most ENTRIES_PER_SAVE pages of entries, a hard-state page and
# b-tree pages above them) and its header; or, after it overran, at most the size limit.
ONE_SAVES_FRAMES = (ENTRIES_PER_SAVE + 8) * WAL_FRAME_BYTES
MOST_A_BOUNDED_WAL_HOLDS = max(
    WAL_HEADER_BYTES + WAL_AUTOCHECKPOINT_PAGES * WAL_FRAME_BYTES + ONE_SAVES_FRAMES, WAL_SIZE_LIMIT_BYTES)


def test_both_writing_connections_bound_their_wal(tmp_path) -> None:
    expected = WalBound(WAL_AUTOCHECKPOINT_PAGES, WAL_SIZE_LIMIT_BYTES)
    storage = RaftStorage(str(tmp_path / "raft.db"))
    chat = ChatState(str(tmp_path / "state.db"))
    try:
        assert wal_bound(storage._db) == expected
        assert wal_bound(chat._db) == expected
        # The bound is tighter than SQLite's default, and a reset WAL is cut to about its size.
        assert WAL_AUTOCHECKPOINT_PAGES < SQLITE_DEFAULT_AUTOCHECKPOINT_PAGES
        assert WAL_AUTOCHECKPOINT_PAGES * WAL_FRAME_BYTES < WAL_SIZE_LIMIT_BYTES < 1.5 * WAL_AUTOCHECKPOINT_PAGES * WAL_FRAME_BYTES
        # Durability is exactly as strict as before.
        assert storage._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert storage._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert chat._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        storage.close()
        chat.close()


def test_the_raft_logs_wal_never_outgrows_the_bound_however_much_is_written(tmp_path) -> None:
    path = str(tmp_path / "raft.db")
    storage = RaftStorage(path)
    sizes = []
    # ~3x what SQLite's default autocheckpoint would let the WAL grow to (~4 MiB).
    saves = 3 * SQLITE_DEFAULT_AUTOCHECKPOINT_PAGES // ENTRIES_PER_SAVE * 4
    save_many(storage, 1, saves, lambda: sizes.append(wal_size(path)))
    assert max(sizes) > WAL_SIZE_LIMIT_BYTES / 2  # it was written to, and checkpointed
    assert max(sizes) <= MOST_A_BOUNDED_WAL_HOLDS
    _, entries = storage.load()
    assert len(entries) == saves * ENTRIES_PER_SAVE
    storage.close()


def test_a_wal_that_overran_behind_a_reader_is_truncated_back_to_the_limit(tmp_path) -> None:
    # A reader holding an old view (a snapshot being copied, a lagging follower's entries being
    # read) stops checkpoints from resetting the WAL, which then grows past the bound. Once
    # the reader is gone, the next reset cuts the file back: it must not keep its largest size.
    path = str(tmp_path / "raft.db")
    storage = RaftStorage(path)
    index = save_many(storage, 1, 10)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM log").fetchone()  # holds its read snapshot
    index = save_many(storage, index, 3 * WAL_AUTOCHECKPOINT_PAGES // 6)
    overran = wal_size(path)
    assert overran > 1.5 * MOST_A_BOUNDED_WAL_HOLDS
    reader.execute("COMMIT")
    reader.close()
    sizes = []
    save_many(storage, index, 2 * WAL_AUTOCHECKPOINT_PAGES // 6, lambda: sizes.append(wal_size(path)))
    assert sizes[-1] <= MOST_A_BOUNDED_WAL_HOLDS
    assert min(sizes) <= WAL_SIZE_LIMIT_BYTES + ONE_SAVES_FRAMES
    storage.close()


class _WalWatch:
    """Stands in for RaftStorage's connection and reads the WAL's size after every statement:
    the most it held while a compaction ran (the compaction itself truncates it at the end)."""

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self._db, self._path = db, path
        self.most = 0

    def _seen(self, result: object) -> object:
        self.most = max(self.most, wal_size(self._path))
        return result

    def execute(self, *args: object) -> object:
        return self._seen(self._db.execute(*args))

    def executescript(self, script: str) -> object:
        return self._seen(self._db.executescript(script))

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


def test_a_compaction_keeps_the_wal_within_its_bound(tmp_path) -> None:
    """Deleting a prefix of 2,000 1-KB entries (~500 pages) and handing its pages back, each in
    one transaction, took the WAL to twice its bound; in chunks it stays within it."""
    path = str(tmp_path / "raft.db")
    storage = RaftStorage(path)
    last = save_many(storage, 1, 150) - 1  # 3,000 entries
    storage.save_snapshot(SnapshotMeta(2000, 1, "s", 1, "x"))
    watch = _WalWatch(storage._db, path)
    storage._db = watch  # type: ignore[assignment]
    assert storage.compact(2000) == 2000
    assert 0 < watch.most <= MOST_A_BOUNDED_WAL_HOLDS
    _, entries = storage.load()
    assert [e.index for e in entries] == list(range(2001, last + 1))
    storage.close()
