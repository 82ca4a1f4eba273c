"""How large a replica's SQLite write-ahead logs may get (issue 10, section 4: the data directory
must not grow with history).

In WAL mode SQLite appends every commit to `NAME-wal` and copies the frames into the database
file at a checkpoint. By default it checkpoints once the WAL holds 1000 pages (~4 MiB) and then
reuses the file from its start without ever shrinking it; a checkpoint that cannot finish (a
reader holds old frames, say while a snapshot is being copied) lets it grow past that. Each of
a replica's two databases (raft.db, state.db) so carried ~4 MiB of WAL once written enough,
more than all of their data at 10^4 messages: the directory's size was mostly where each WAL
happened to be in its saw-tooth.

Both connections that write (the Raft log's, the state machine's) therefore checkpoint earlier
and cap the file a checkpoint leaves behind:

- `wal_autocheckpoint` = WAL_AUTOCHECKPOINT_PAGES: a PASSIVE checkpoint runs in the commit that
  takes the WAL past this many pages, on the thread that commits (the disk or state-machine
  thread, never the event loop). Durability is unchanged: a checkpoint copies frames that are
  already durable in the WAL, and with synchronous=FULL (raft.db) SQLite fsyncs the database
  file before the WAL may be reused.
- `journal_size_limit` = WAL_SIZE_LIMIT_BYTES: when the WAL is reset after a checkpoint, a file
  larger than this is truncated to it. The limit is the autocheckpoint's size, so in steady
  state the WAL is reused in place (appending inside an allocated file is what an fsync is
  cheapest for) and only a WAL that overran (a long reader) is cut back.

These are per-connection settings (not stored in the file), applied at every open.
"""
import sqlite3
from typing import NamedTuple

PAGE_BYTES = 4096  # SQLite's default page size, which both databases use
WAL_AUTOCHECKPOINT_PAGES = 256  # ~1 MiB
WAL_SIZE_LIMIT_BYTES = WAL_AUTOCHECKPOINT_PAGES * PAGE_BYTES


class WalBound(NamedTuple):
    """The settings in effect on a connection, as SQLite reports them."""

    autocheckpoint_pages: int
    size_limit_bytes: int


def bound_wal(db: sqlite3.Connection) -> WalBound:
    """Apply the WAL bound to `db` (already in WAL mode) and return what SQLite says is in effect."""
    (pages,) = db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}").fetchone()
    (limit,) = db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}").fetchone()
    return WalBound(int(pages), int(limit))


def wal_bound(db: sqlite3.Connection) -> WalBound:
    """The WAL settings in effect on `db` (for tests and diagnostics)."""
    (pages,) = db.execute("PRAGMA wal_autocheckpoint").fetchone()
    (limit,) = db.execute("PRAGMA journal_size_limit").fetchone()
    return WalBound(int(pages), int(limit))
