"""Snapshots of the chat state: a consistent copy of the whole state database at an applied index,
written crash-safely, checked on every read, and restored atomically.

A snapshot is the state database itself (every table: users, mailboxes and their sequence
numbers, sessions, the exactly-once `clients` table, and `meta.last_applied`, which is the
index the snapshot covers), copied with `VACUUM INTO` through a read-only connection of its own.
That copy runs inside one read transaction, so it sees exactly the batches applied when it
started and never half of one, while apply goes on writing through the WAL: taking a snapshot
does not stop the state machine. (VACUUM INTO rather than the online backup API: it writes a
compact file without free pages and was faster at 10^5 users and messages; see
bench/snapshot.py.)

Crash safety, step by step:
  taking:   copy to snapshots/tmp-*.db -> fsync it -> checksum it -> rename to
            snapshots/snapshot-<index>.db -> fsync the directory. A crash leaves at most a tmp
            file (removed at the next take) or a complete, named snapshot.
  restoring: verify size and SHA-256 -> copy to state.db.restore -> fsync -> check it
            (quick_check, last_applied == the snapshot's index) -> checkpoint and close the old
            state, remove its WAL -> rename over state.db -> fsync the directory. state.db is
            at every moment either the old, complete state or the new one; which one the
            replica starts from is decided by comparing its last_applied with the Raft log
            (chat/state_check.py).
"""
import glob
import hashlib
import logging
import os
import shutil
import sqlite3
import time
import urllib.request
import uuid
from typing import NamedTuple, Optional, Tuple

from replichat.crashpoints import crash_point
from replichat.integrity import CorruptDataError

log = logging.getLogger(__name__)

SNAPSHOT_DIR = "snapshots"
_HASH_BLOCK = 1 << 20


class ChatSnapshot(NamedTuple):
    """A snapshot file: `file` relative to the data directory, SHA-256 `checksum` (hex)."""

    index: int
    file: str
    size: int
    checksum: str
    seconds: float = 0.0


def take_snapshot(state_path: str, data_dir: str) -> ChatSnapshot:
    """Copy the state database's last committed batch into a new snapshot file. Blocking (run
    it off the event loop); safe while another connection applies batches."""
    started = time.monotonic()
    directory = os.path.join(data_dir, SNAPSHOT_DIR)
    os.makedirs(directory, exist_ok=True)
    for leftover in glob.glob(os.path.join(directory, "tmp-*.db")):
        os.unlink(leftover)
    temp = os.path.join(directory, f"tmp-{uuid.uuid4().hex}.db")
    source = _read_only(state_path)
    try:
        source.execute("VACUUM INTO ?", (temp,))
    finally:
        source.close()
    index = _last_applied(temp)
    _fsync_file(temp)
    size, checksum = file_checksum(temp)
    crash_point("snapshot-take:copied")
    name = os.path.join(SNAPSHOT_DIR, f"snapshot-{index:020d}.db")
    os.replace(temp, os.path.join(data_dir, name))
    _fsync_dir(directory)
    crash_point("snapshot-take:renamed")
    return ChatSnapshot(index, name, size, checksum, time.monotonic() - started)


def file_checksum(path: str) -> Tuple[int, str]:
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_BLOCK), b""):
            hasher.update(block)
            size += len(block)
    return size, hasher.hexdigest()


def verify_snapshot(path: str, size: int, checksum: str) -> None:
    """Raise CorruptDataError unless the file has exactly this size and SHA-256."""
    try:
        actual_size, actual = file_checksum(path)
    except FileNotFoundError:
        raise CorruptDataError(f"snapshot {path} is missing") from None
    if (actual_size, actual) != (size, checksum):
        raise CorruptDataError(
            f"snapshot {path} fails its checksum ({actual_size} bytes, sha256 {actual[:16]}..., "
            f"expected {size} bytes, {checksum[:16]}...): it must not be installed or sent"
        )


def restore_state(state_path: str, snapshot_path: str, size: int, checksum: str, index: int) -> None:
    """Replace the state database by the snapshot, atomically. No connection to state_path may
    be open. Raises CorruptDataError (changing nothing) if the snapshot fails a check."""
    crash_point("snapshot-restore:start")
    verify_snapshot(snapshot_path, size, checksum)
    staged = state_path + ".restore"
    shutil.copyfile(snapshot_path, staged)
    _fsync_file(staged)
    problem = database_problem(staged)
    if problem is None and _last_applied(staged) != index:
        problem = f"it covers index {_last_applied(staged)}, not {index}"
    if problem is not None:
        os.unlink(staged)
        raise CorruptDataError(f"snapshot {snapshot_path} cannot be restored: {problem}")
    crash_point("snapshot-restore:staged")
    retire_database(state_path)
    os.replace(staged, state_path)
    _fsync_dir(os.path.dirname(os.path.abspath(state_path)))


def retire_database(path: str, keep_as: Optional[str] = None) -> None:
    """Take a SQLite database out of the way with its WAL: fold a healthy WAL into the file
    first (so the file alone is complete), then move or delete the files."""
    if os.path.exists(path) and os.path.exists(path + "-wal") and database_problem(path) is None:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            db.close()
    for suffix in ("-wal", "-shm", ""):
        if os.path.exists(path + suffix):
            if keep_as is not None:
                os.replace(path + suffix, keep_as + suffix)
            else:
                os.unlink(path + suffix)


def database_problem(path: str) -> Optional[str]:
    """What is wrong with a chat state database (SQLite's quick_check, the meta row), or None."""
    try:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            rows = db.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                return "quick_check: " + "; ".join(str(r[0]) for r in rows[:5])
            row = db.execute("SELECT value FROM meta WHERE key = 'last_applied'").fetchone()
            if row is None:
                return "it has no last_applied record"
        finally:
            db.close()
    except sqlite3.DatabaseError as error:
        return f"{type(error).__name__}: {error}"
    return None


def remove_snapshots_except(data_dir: str, keep_file: str) -> int:
    """Delete snapshot files other than `keep_file` (relative); returns how many."""
    removed = 0
    keep = os.path.abspath(os.path.join(data_dir, keep_file))
    for path in glob.glob(os.path.join(data_dir, SNAPSHOT_DIR, "snapshot-*.db")):
        if os.path.abspath(path) != keep:
            os.unlink(path)
            removed += 1
    return removed


def remove_snapshots_before(data_dir: str, index: int) -> int:
    """Delete the snapshot files of indexes below `index`; returns how many. Newer files stay:
    one may be a snapshot just received from the leader and about to be installed (deleting
    it made that install fail: found by tests/test_snapshot_crash.py)."""
    removed = 0
    for path in glob.glob(os.path.join(data_dir, SNAPSHOT_DIR, "snapshot-*.db")):
        digits = os.path.basename(path)[len("snapshot-"):-len(".db")]
        if digits.isdigit() and int(digits) < index:
            os.unlink(path)
            removed += 1
    return removed


def _last_applied(path: str) -> int:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'last_applied'").fetchone()
    finally:
        db.close()
    if row is None:
        raise CorruptDataError(f"{path} has no last_applied record")
    return int(row[0])


def _read_only(path: str) -> sqlite3.Connection:
    uri = "file:" + urllib.request.pathname2url(os.path.abspath(path)) + "?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
