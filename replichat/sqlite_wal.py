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
  larger than this is truncated to it. The limit sits a little above what a steady cycle
  leaves (the threshold plus the frames of the commit that crossed it), so in steady state the
  WAL is reused in place and only a WAL that overran (behind a long reader) is cut back.
  Cutting it at the threshold itself made every cycle extend the file again, which each
  fdatasync then pays for: 4,601 against 5,030 one-entry saves/s (medians of 10 alternating
  rounds, noisy: the disk was shared).

These are per-connection settings (not stored in the file), applied at every open.
"""
import sqlite3
from typing import NamedTuple

PAGE_BYTES = 4096  # SQLite's default page size, which both databases use
WAL_FRAME_BYTES = PAGE_BYTES + 24  # a WAL frame: its header and one page
WAL_HEADER_BYTES = 32
WAL_AUTOCHECKPOINT_PAGES = 256  # ~1 MiB
# Headroom above the threshold for the commit that crosses it (a batch of entries or applied
# commands writes a handful of pages; a larger one merely gets truncated once).
WAL_SIZE_LIMIT_BYTES = WAL_HEADER_BYTES + (WAL_AUTOCHECKPOINT_PAGES + 64) * WAL_FRAME_BYTES  # ~1.26 MiB


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
