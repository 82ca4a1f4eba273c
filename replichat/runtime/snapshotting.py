"""The blocking steps of taking, compacting to and installing a snapshot, in the order that keeps
a crash at any point safe (docs/snapshots.md). The runtime runs each on the right thread and
tells the core between steps; nothing here touches the core.

    take:     chat.snapshot.take_snapshot (any thread: its own read-only connection)
              -> record() on the disk thread (raft.db knows the snapshot)
              -> core.snapshot_taken(meta); core.compact(n) on the loop
              -> compact() on the disk thread (raft.db forgets the prefix, old files go)
    install:  the file arrived complete and verified (snapshot_transfer.IncomingSnapshot)
              -> the core's Ready carries the snapshot
              -> install() with every state connection closed, then reopen them
"""
import logging
import os
from typing import Optional

from replichat.chat.snapshot import ChatSnapshot, file_checksum, remove_snapshots_before, restore_state
from replichat.crashpoints import crash_point
from replichat.raft.messages import HardState
from replichat.runtime.storage import RaftStorage, SnapshotMeta

log = logging.getLogger(__name__)


def snapshot_file_name(index: int) -> str:
    """Where a snapshot at `index` lives, relative to the data directory (taken or received)."""
    return os.path.join("snapshots", f"snapshot-{index:020d}.db")


def record(storage: RaftStorage, snapshot: ChatSnapshot, term: int) -> SnapshotMeta:
    meta = SnapshotMeta(snapshot.index, term, snapshot.file, snapshot.size, snapshot.checksum)
    storage.save_snapshot(meta)
    crash_point("snapshot-take:recorded")
    return meta


def compact(storage: RaftStorage, data_dir: str, to_index: int, base_membership: Optional[bytes] = None) -> int:
    """Forget the durable log up to `to_index` and the snapshot files older than the recorded
    one (a newer one may be arriving from the leader); `base_membership` (raft/membership.py
    encoding) is the configuration in effect there, stored in the same transaction. Returns
    the number of entries deleted."""
    freed = storage.compact(to_index, base_membership)
    crash_point("snapshot-take:compacted")
    current = storage.snapshot()
    if current is not None:
        remove_snapshots_before(data_dir, current.index)
    return freed


def install(storage: RaftStorage, data_dir: str, state_path: str, index: int, term: int,
            hard_state: HardState, base_membership: Optional[bytes] = None) -> SnapshotMeta:
    """Make the received snapshot at (index, term) this replica's state: raft.db first (the log
    becomes empty after it, and `base_membership` records the snapshot's configuration), then
    state.db. A crash between the two leaves a state older than
    the log's first entry, which the check at start restores from the recorded snapshot."""
    name = snapshot_file_name(index)
    size, checksum = file_checksum(os.path.join(data_dir, name))
    meta = SnapshotMeta(index, term, name, size, checksum)
    storage.install_snapshot(meta, hard_state, base_membership)
    restore_state(state_path, os.path.join(data_dir, name), size, checksum, index)
    remove_snapshots_before(data_dir, index)
    return meta


def recorded_snapshot_path(storage: RaftStorage, data_dir: str) -> Optional[str]:
    meta = storage.snapshot()
    return None if meta is None else os.path.join(data_dir, meta.file)
