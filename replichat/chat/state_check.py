"""The chat state database is checked before a replica serves from it.

At start: SQLite's `quick_check`, the meta record, and its applied index against the Raft log
(it may not be ahead of the log's last entry, nor behind the log's first one, since what comes
before that is only in the snapshot). A state that fails is rebuilt, never served:
  * damaged or missing, and the log still starts at entry 1: set aside as state.db.corrupt and
    rebuilt by replaying the log from the start;
  * damaged, missing or behind the log's first entry, with a snapshot: restored from the
    snapshot (checked against its checksum), then the log is replayed from there;
  * ahead of the log (the Raft log lost entries the state had applied: a rolled-back or
    replaced raft.db): refused. Rebuilding could not bring back what the log lost.
If none of that is possible the replica refuses to start, with a message saying why.
"""
import logging
import os
import sqlite3
from typing import NamedTuple, Optional

from replichat.chat.snapshot import database_problem, restore_state, retire_database
from replichat.integrity import CorruptDataError

log = logging.getLogger(__name__)


class LogBounds(NamedTuple):
    """What the Raft log holds: entries base_index + 1 .. last_index."""

    base_index: int
    last_index: int


class SnapshotFile(NamedTuple):
    path: str
    index: int
    size: int
    checksum: str


def prepare_state(state_path: str, bounds: LogBounds, snapshot: Optional[SnapshotFile]) -> str:
    """Make state_path a healthy state database the log can continue, or raise
    CorruptDataError. Returns what was done ("ok", "rebuilt from the log", "restored from the
    snapshot at N") for the start-up log line. Blocking: run before serving."""
    problem = _problem(state_path, bounds)
    if problem is None:
        return "ok"
    log.error("chat state database %s cannot be used: %s", state_path, problem)
    if snapshot is not None and snapshot.index >= bounds.base_index:
        if os.path.exists(state_path) and database_problem(state_path) is not None:
            retire_database(state_path, keep_as=state_path + ".corrupt")
        restore_state(state_path, snapshot.path, snapshot.size, snapshot.checksum, snapshot.index)
        return f"restored from the snapshot at {snapshot.index}"
    if bounds.base_index == 0:
        retire_database(state_path, keep_as=state_path + ".corrupt" if os.path.exists(state_path) else None)
        return "rebuilt from the log (the damaged file is kept as state.db.corrupt)"
    raise CorruptDataError(
        f"chat state database {state_path} cannot be used ({problem}) and cannot be rebuilt: the "
        f"log starts after entry {bounds.base_index} and there is no usable snapshot. Replace this "
        f"replica's data directory from a healthy replica's snapshot, or remove and re-add the replica"
    )


def _problem(state_path: str, bounds: LogBounds) -> Optional[str]:
    if not os.path.exists(state_path):
        return None if bounds.base_index == 0 else "it is missing"
    problem = database_problem(state_path)
    if problem is not None:
        return problem
    applied = _applied(state_path)
    if applied > bounds.last_index:
        raise CorruptDataError(
            f"chat state applied {applied} entries but the raft log ends at {bounds.last_index}: the "
            f"raft log lost entries (rolled back or replaced?); refusing to start"
        )
    if applied < bounds.base_index:
        return f"it applied {applied} entries, behind the snapshot at {bounds.base_index}"
    return None


def _applied(state_path: str) -> int:
    db = sqlite3.connect(state_path, isolation_level=None)
    try:
        (value,) = db.execute("SELECT value FROM meta WHERE key = 'last_applied'").fetchone()
    finally:
        db.close()
    return int(value)
