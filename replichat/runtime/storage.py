"""Durable Raft state in SQLite: the log, the hard state (term, vote, commit) and the metadata of
the latest snapshot.

`synchronous=FULL` in WAL mode: every commit fsyncs the write-ahead log before it returns, so
whatever `save` returned from survives a crash or power loss. One `save` is one transaction,
however many entries it carries: that is the group commit that lets throughput exceed the
disk's fsync rate. The object is used from one worker thread at a time (the runtime's disk
executor), never from the event loop; `reader()` gives a separate read-only connection for
fetching old entries elsewhere.

Every entry is stored with its checksum (integrity.entry_checksum) and verified whenever it is
read back: a mismatch raises CorruptDataError naming the index, so the bytes are never applied,
served or shipped to a peer.

The log may start after a compacted prefix: `log_base` holds the index and term of the last
entry removed (0, 0 when nothing was), so the entry after it can still be matched. Compaction
deletes whole prefixes: it moves the base in one transaction, then deletes the entries below it
in chunks (_drop_below_base: so that the WAL stays within its bound, sqlite_wal.py), and entries
below the base are never read. The pages it frees are kept for the entries that replace them;
free pages the last cycle did not reuse go back to the file system (auto_vacuum=INCREMENTAL).
So raft.db stays at the size of the most entries the log holds at once, and its WAL within
its bound: neither grows with history.

The configuration in effect at the log's base (raft/membership.py: configuration entries are
ordinary log entries, so compaction would delete them) is kept in `base_membership`, written in
the same transaction as the compaction or snapshot install that moves the base, with its own
checksum. No row: no configuration entry was ever compacted away (the bootstrap one holds).

Schema versions (PRAGMA user_version): 0 = the first layout (no checksums); 2 = checksums;
3 = this one (the base_membership table). A version-0 database is upgraded in place at open:
checksums are computed for the entries it holds (they protect them from then on; they cannot
vouch for what happened before). A version-2 database gains the empty table.
"""
import logging
import os
import sqlite3
import threading
import urllib.request
import zlib
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

from replichat.crashpoints import crash_point
from replichat.integrity import INDEX_TERM as _INDEX_TERM
from replichat.integrity import CorruptDataError, entry_checksum, verify_entry
from replichat.raft.messages import Entry, HardState
from replichat.sqlite_wal import PAGE_BYTES, bound_wal

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
# How much one transaction deletes when compaction removes a prefix (_drop_below_base): at
# most this many entries holding at most this many bytes of data (but always one entry), so a
# chunk writes a few dozen pages to the WAL, well under its checkpoint threshold.
COMPACTION_CHUNK_ENTRIES = 1000
COMPACTION_CHUNK_BYTES = 64 * PAGE_BYTES
VACUUM_STEP_PAGES = 64  # pages handed back to the file system per transaction (_reclaim)

_BASE_MEMBERSHIP_TABLE = """
CREATE TABLE IF NOT EXISTS base_membership (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    crc INTEGER NOT NULL
)"""

_TABLES = _BASE_MEMBERSHIP_TABLE + ";" + """
CREATE TABLE IF NOT EXISTS hard_state (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    term INTEGER NOT NULL,
    vote INTEGER NOT NULL,
    commit_index INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    idx INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    data BLOB NOT NULL,
    crc INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS log_base (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    idx INTEGER NOT NULL,
    term INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    idx INTEGER NOT NULL,
    term INTEGER NOT NULL,
    file TEXT NOT NULL,
    size INTEGER NOT NULL,
    checksum TEXT NOT NULL
);
"""


class SnapshotMeta(NamedTuple):
    """A chat-state snapshot file and the log position it covers. `file` is relative to the
    data directory; `checksum` is the SHA-256 of the whole file, hex."""

    index: int
    term: int
    file: str
    size: int
    checksum: str


class LogBase(NamedTuple):
    """The last entry removed by compaction (0, 0: none); the log continues at index + 1."""

    index: int = 0
    term: int = 0


def verified_entries(rows: Iterable[Tuple[int, int, bytes, int]]) -> List[Entry]:
    """Rows (idx, term, data, crc) as entries, each checked (CorruptDataError names the first
    bad index). Public because the simulator's disk loads through it too. The loop is inlined because it
    runs once per stored entry at every start: the checksum must not double the load time."""
    pack, crc32 = _INDEX_TERM.pack, zlib.crc32
    entries = []
    append = entries.append
    for idx, term, data, crc in rows:
        if crc32(data, crc32(pack(idx, term))) != crc:
            verify_entry(idx, term, data, crc)  # raises, with the message
        append(Entry(term, idx, data))
    return entries


class RaftStorage:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        fresh = not self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'log'").fetchone()
        if fresh:
            # Must precede the first table: it decides how the file is laid out.
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        bound_wal(self._db)
        if fresh:
            self._db.executescript(_TABLES)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version == 0:
            self._upgrade_from_v0()
        elif version == 2:
            with self._transaction() as db:
                db.execute(_BASE_MEMBERSHIP_TABLE)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            log.info("raft log %s upgraded to schema %d (the configuration at the log's base)", path, SCHEMA_VERSION)
        elif version != SCHEMA_VERSION:
            raise CorruptDataError(
                f"raft log database {path} has schema version {version}; this replichat reads "
                f"versions 0, 2 and {SCHEMA_VERSION}"
            )
        if not fresh:
            self._check_base()
            if self._drop_below_base():
                log.info("raft log %s: finished deleting the entries below its base (a compaction was interrupted)", path)

    def _check_base(self) -> None:
        """Refuse a log base that compaction or an install could not have written, before
        anything below it is deleted at open: a damaged base must stop the replica, not make
        it throw entries away. Every base is covered by the recorded snapshot (compaction
        refuses otherwise; an install records both at once), and an entry still stored at the
        base (a compaction interrupted before deleting it) has the base's term."""
        base = self.log_base()
        if base.index == 0:
            return
        snapshot = self.snapshot()
        if snapshot is None or base.index > snapshot.index:
            raise CorruptDataError(
                f"raft log {self.path}: its base (index {base.index}) is past the recorded snapshot ({snapshot})"
            )
        row = self._db.execute("SELECT term FROM log WHERE idx = ?", (base.index,)).fetchone()
        if row is not None and row[0] != base.term:
            raise CorruptDataError(
                f"raft log {self.path}: its base (index {base.index}, term {base.term}) does not match the "
                f"entry stored there (term {row[0]})"
            )

    def _upgrade_from_v0(self) -> None:
        db = self._db
        with self._transaction():
            count = db.execute("SELECT COUNT(*) FROM log").fetchone()[0]
            db.execute("ALTER TABLE log RENAME TO log_v0")
            for statement in _TABLES.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.executemany(
                "INSERT INTO log (idx, term, data, crc) VALUES (?, ?, ?, ?)",
                ((idx, term, data, entry_checksum(idx, term, bytes(data)))
                 for idx, term, data in db.execute("SELECT idx, term, data FROM log_v0").fetchall()),
            )
            db.execute("DROP TABLE log_v0")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        # Switching an existing file to incremental auto-vacuum takes one full VACUUM.
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("VACUUM")
        log.warning(
            "raft log %s upgraded to schema %d: checksums computed for its %d existing entries",
            self.path, SCHEMA_VERSION, count,
        )

    # ----------------------------------------------------------------- reading

    def load(self) -> Tuple[HardState, List[Entry]]:
        """The hard state and every entry after the compacted prefix, each verified."""
        with self._lock:
            return self._load()

    def _load(self) -> Tuple[HardState, List[Entry]]:
        row = self._db.execute("SELECT term, vote, commit_index FROM hard_state WHERE id = 0").fetchone()
        hard_state = HardState(*row) if row else HardState()
        base = self.log_base()
        entries = verified_entries(
            self._db.execute("SELECT idx, term, data, crc FROM log WHERE idx > ? ORDER BY idx", (base.index,))
        )
        _check_contiguous(entries, base.index + 1)
        return hard_state, entries

    def log_base(self) -> LogBase:
        with self._lock:
            row = self._db.execute("SELECT idx, term FROM log_base WHERE id = 0").fetchone()
        return LogBase(*row) if row else LogBase()

    def base_membership(self) -> Optional[bytes]:
        """The configuration in effect at the log's base (raft/membership.py encoding; the
        caller decodes and validates it), or None if none was ever recorded. Checksummed."""
        with self._lock:
            row = self._db.execute("SELECT idx, data, crc FROM base_membership WHERE id = 0").fetchone()
        if row is None:
            return None
        index, data, crc = row[0], bytes(row[1]), row[2]
        if entry_checksum(index, 0, data) != crc:
            raise CorruptDataError(f"raft log {self.path}: the configuration recorded at index {index} fails its checksum")
        base = self.log_base().index
        if index != base:
            raise CorruptDataError(
                f"raft log {self.path}: the configuration recorded at index {index} is not the log's base ({base})"
            )
        return data

    def snapshot(self) -> Optional[SnapshotMeta]:
        with self._lock:
            row = self._db.execute("SELECT idx, term, file, size, checksum FROM snapshot WHERE id = 0").fetchone()
        return SnapshotMeta(*row) if row else None

    def reader(self) -> "SqliteLogReader":
        return SqliteLogReader(self.path)

    # ----------------------------------------------------------------- writing

    def save(self, hard_state: Optional[HardState], entries: Sequence[Entry]) -> None:
        """Durably store new entries (replacing any conflicting suffix) and the hard state."""
        with self._transaction() as db:
            if entries:
                db.execute("DELETE FROM log WHERE idx >= ?", (entries[0].index,))
                db.executemany(
                    "INSERT INTO log (idx, term, data, crc) VALUES (?, ?, ?, ?)",
                    [(e.index, e.term, e.data, entry_checksum(e.index, e.term, e.data)) for e in entries],
                )
            if hard_state is not None:
                self._write_hard_state(hard_state)

    def save_snapshot(self, meta: SnapshotMeta) -> None:
        """Record a snapshot this replica took (its file is already durable). The log is left
        alone: compaction is a separate decision (it keeps a tail for lagging followers)."""
        with self._transaction():
            current = self.snapshot()
            if current is None or meta.index > current.index:  # never replace a newer one
                self._write_snapshot(meta)

    def compact(self, index: int, base_membership: Optional[bytes] = None) -> int:
        """Delete the entries up to `index` (which a durable snapshot covers). `base_membership`
        is the configuration in effect at `index`, recorded in the transaction that moves the
        base (None: leave the record alone; `base_membership()` then refuses a record that no
        longer names the base). Returns the number of entries deleted."""
        with self._lock:
            if not self._move_base(index, base_membership):
                return 0
        crash_point("snapshot-take:base-moved")
        # The lock is let go between chunks: a follower's save may go in between.
        return self._drop_below_base()

    def _move_base(self, index: int, base_membership: Optional[bytes]) -> bool:
        snapshot = self.snapshot()
        if snapshot is None or index > snapshot.index:
            raise ValueError(f"compaction to {index} is not covered by a snapshot ({snapshot})")
        if index <= self.log_base().index:
            return False
        row = self._db.execute("SELECT term FROM log WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise ValueError(f"compaction to {index}: no such entry in the log")
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO log_base (id, idx, term) VALUES (0, ?, ?)", (index, row[0]))
            self._write_base_membership(index, base_membership)
        return True

    def _drop_below_base(self) -> int:
        """Delete the entries at or below the log's base, a chunk (COMPACTION_CHUNK_*) per
        transaction, then reclaim space (_reclaim), keeping the pages just freed. Returns the
        number of entries deleted.

        Compaction first moves the base (one small transaction: from then on the entries below
        it are ignored), then deletes them in chunks. One DELETE of a whole prefix wrote every
        page it emptied into the WAL in a single transaction, which no checkpoint can split:
        the WAL overran its bound (sqlite_wal.py) by ~0.8 MiB at each compaction. Chunks let
        the automatic checkpoint run between them, and let a follower's save in between. A
        crash part-way leaves entries below the base, which nothing reads (load starts above
        it, and the core never asks for entries it compacted) and the next open deletes."""
        deleted = 0
        base = self.log_base().index
        with self._lock:
            free_before = _free_pages(self._db)
        while True:
            with self._transaction() as db:
                sizes = db.execute(
                    "SELECT idx, length(data) FROM log WHERE idx <= ? ORDER BY idx LIMIT ?",
                    (base, COMPACTION_CHUNK_ENTRIES),
                ).fetchall()
                if not sizes:
                    break
                upto, total = sizes[0][0], 0
                for idx, size in sizes:
                    total += size
                    if total > COMPACTION_CHUNK_BYTES:
                        break
                    upto = idx
                deleted += db.execute("DELETE FROM log WHERE idx <= ?", (upto,)).rowcount
        if deleted:  # (at every open: nothing to delete, and the kept pages stay kept)
            with self._lock:
                freed = _free_pages(self._db) - free_before
            self._reclaim(keep_free=freed)
        return deleted

    def install_snapshot(self, meta: SnapshotMeta, hard_state: HardState, base_membership: Optional[bytes] = None) -> None:
        """A snapshot from the leader replaces this replica's whole log, in one transaction:
        after a crash the log is either the old one or empty after the snapshot (entries
        below the new base may remain until deleted; nothing reads them).
        `base_membership`: the configuration the snapshot carries."""
        with self._transaction() as db:
            db.execute("DELETE FROM log WHERE idx > ?", (meta.index,))
            db.execute("INSERT OR REPLACE INTO log_base (id, idx, term) VALUES (0, ?, ?)", (meta.index, meta.term))
            self._write_base_membership(meta.index, base_membership)
            self._write_snapshot(meta)
            self._write_hard_state(hard_state)
        self._drop_below_base()  # the rest of the old log, in chunks (see there)

    def close(self) -> None:
        self._db.close()

    # ----------------------------------------------------------------- plumbing

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db, self._lock)

    def _write_hard_state(self, hard_state: HardState) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO hard_state (id, term, vote, commit_index) VALUES (0, ?, ?, ?)",
            (hard_state.term, hard_state.vote, hard_state.commit),
        )

    def _write_base_membership(self, index: int, data: Optional[bytes]) -> None:
        if data is None:
            return  # left alone: a record that no longer names the base is refused at load
        self._db.execute(
            "INSERT OR REPLACE INTO base_membership (id, idx, data, crc) VALUES (0, ?, ?, ?)",
            (index, data, entry_checksum(index, 0, data)),
        )

    def _write_snapshot(self, meta: SnapshotMeta) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO snapshot (id, idx, term, file, size, checksum) VALUES (0, ?, ?, ?, ?, ?)",
            tuple(meta),
        )

    def _reclaim(self, keep_free: int) -> None:
        """Keep up to `keep_free` free pages (what a deletion just freed) for the entries that
        will replace them; hand the rest back to the file system.

        The log refills what a compaction deleted before the next compaction, so its file's
        working size is the most entries it holds at once (`--snapshot-entries` plus
        `--snapshot-keep`). Handing every freed page back made the file saw-tooth between a
        third of that and all of it, re-extending it page by page each cycle, so the data
        directory's size depended on where in the cycle it was read (issue 10: 2.0 -> 4.0 MiB
        from 10^4 to 10^5 messages by single readings, 1.2-1.8x by peaks). Free pages older
        than this deletion were not reused by the last cycle (say, after a burst of large
        entries), so they go back: the file follows the last cycle, not the largest ever.

        The vacuum goes VACUUM_STEP_PAGES at a time, each step its own transaction, for the
        reason the deletion goes in chunks (one step moves pages through the WAL). The WAL is
        not truncated: it stays within its bound (sqlite_wal.py) at its working size, which
        a truncation would only make the next commits extend again. (Through execute(),
        Python's sqlite3 steps incremental_vacuum once, which frees one page; executescript
        runs it to completion.)"""
        free = -1
        while True:
            with self._lock:
                before, free = free, _free_pages(self._db)
                excess = free - max(0, keep_free)
                if excess <= 0 or free == before:  # done, or a file not in incremental mode
                    return
                self._db.executescript(f"PRAGMA incremental_vacuum({min(excess, VACUUM_STEP_PAGES)});")


def _free_pages(db: sqlite3.Connection) -> int:
    (count,) = db.execute("PRAGMA freelist_count").fetchone()
    return int(count)


class _Transaction:
    """One transaction, holding the storage's lock: a follower saves on the event loop while
    compaction may run on the disk thread, and one SQLite connection must not interleave."""

    def __init__(self, db: sqlite3.Connection, lock: "threading.RLock") -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN")
        except BaseException:
            self._lock.release()
            raise
        return self._db

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        try:
            self._db.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self._lock.release()


class SqliteLogReader:
    """Reads old entries through its own read-only connection (WAL: it sees committed
    transactions only), for a leader whose in-memory window no longer holds what a lagging
    follower needs. Every entry is verified before it is returned."""

    def __init__(self, path: str) -> None:
        uri = "file:" + urllib.request.pathname2url(os.path.abspath(path)) + "?mode=ro"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)

    def entries(self, lo: int, hi: int) -> List[Entry]:
        """Entries with lo <= index < hi; raises if any of them is missing."""
        rows = self._db.execute(
            "SELECT idx, term, data, crc FROM log WHERE idx >= ? AND idx < ? ORDER BY idx", (lo, hi)
        ).fetchall()
        entries = verified_entries(rows)
        _check_contiguous(entries, lo)
        if len(entries) != max(0, hi - lo):
            raise CorruptDataError(f"raft log is missing entries in [{lo}, {hi}): found {len(entries)}")
        return entries

    def close(self) -> None:
        self._db.close()


def _check_contiguous(entries: Iterable[Entry], first: int) -> None:
    for expected, entry in enumerate(entries, start=first):
        if entry.index != expected:
            raise CorruptDataError(f"raft log is corrupt: entry {expected} is missing (found {entry.index})")
