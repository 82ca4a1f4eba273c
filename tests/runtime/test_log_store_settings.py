"""The SQLite Raft log must fsync every commit: `synchronous=FULL` in WAL mode.

With `synchronous=NORMAL` or `OFF`, a WAL commit returns before it is on disk: a power loss
can take back entries the replica already acknowledged. Nothing else in the suite would notice
(no test cuts the power of a real disk), so the setting itself is asserted here.
"""
import sqlite3

from replichat.raft.messages import Entry, HardState
from replichat.runtime.storage import RaftStorage

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def test_raft_log_commits_are_fsynced(tmp_path) -> None:
    storage = RaftStorage(str(tmp_path / "raft.db"))
    try:
        # The pragma is per connection: ask the one the log writes through.
        db: sqlite3.Connection = storage._db
        (synchronous,) = db.execute("PRAGMA synchronous").fetchone()
        (journal_mode,) = db.execute("PRAGMA journal_mode").fetchone()
        assert synchronous >= FULL, f"raft log runs with synchronous={synchronous}: acknowledged entries can be lost"
        assert journal_mode == "wal"
        storage.save(HardState(1, 1, 0), [Entry(1, 1, b"x")])
    finally:
        storage.close()
    reopened = RaftStorage(str(tmp_path / "raft.db"))
    try:
        assert reopened.load() == (HardState(1, 1, 0), [Entry(1, 1, b"x")])
    finally:
        reopened.close()
