"""Durable Raft state: the log and the hard state (term, vote, commit) in SQLite.

`synchronous=FULL` in WAL mode: every commit fsyncs the write-ahead log before it returns, so
whatever `save` returned from survives a crash or power loss. One `save` is one transaction,
however many entries it carries: that is the group commit that lets throughput exceed the
disk's fsync rate. The object is used from one worker thread at a time (the runtime's disk
executor), never from the event loop.
"""
import sqlite3
from typing import List, Optional, Sequence, Tuple

from replichat.raft.messages import Entry, HardState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hard_state (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    term INTEGER NOT NULL,
    vote INTEGER NOT NULL,
    commit_index INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    idx INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    data BLOB NOT NULL
);
"""


class RaftStorage:
    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def load(self) -> Tuple[HardState, List[Entry]]:
        row = self._db.execute("SELECT term, vote, commit_index FROM hard_state WHERE id = 0").fetchone()
        hard_state = HardState(*row) if row else HardState()
        entries = [Entry(term, idx, bytes(data)) for idx, term, data in self._db.execute("SELECT idx, term, data FROM log ORDER BY idx")]
        for position, entry in enumerate(entries, start=1):
            if entry.index != position:
                raise RuntimeError(f"raft log is corrupt: entry {position} is missing (found {entry.index})")
        return hard_state, entries

    def save(self, hard_state: Optional[HardState], entries: Sequence[Entry]) -> None:
        """Durably store new entries (replacing any conflicting suffix) and the hard state."""
        db = self._db
        db.execute("BEGIN")
        try:
            if entries:
                db.execute("DELETE FROM log WHERE idx >= ?", (entries[0].index,))
                db.executemany("INSERT INTO log (idx, term, data) VALUES (?, ?, ?)", [(e.index, e.term, e.data) for e in entries])
            if hard_state is not None:
                db.execute(
                    "INSERT OR REPLACE INTO hard_state (id, term, vote, commit_index) VALUES (0, ?, ?, ?)",
                    (hard_state.term, hard_state.vote, hard_state.commit),
                )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
