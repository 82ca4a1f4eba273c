"""Snapshot decisions, sans-IO: when to take one, what may be compacted after it, and how a
restarting replica's state machine fits its log. Pure functions and one small record; the
runtime driver (driver.py) owns them and the shells (the asyncio node's snapshot_runtime.py,
the simulator's replica.py) only do the IO they decide.

The ordering the shells follow, step by step (each arrow is a point a crash may strike):

    take:     Driver.snapshot_due() -> copy the state machine at its applied index (IO)
              -> Driver.snapshot_written(index) gives the meta (or None: an install overtook it)
              -> record the snapshot durably next to the log (IO)
              -> Driver.snapshot_recorded(meta) tells the core and compacts its log in memory,
                 returns how far the durable log may be compacted
              -> compact the durable log (IO)
    install:  a complete, verified snapshot arrived (IO) -> Driver.snapshot_messages()
              -> the core accepts it only if it is newer than its commit index (never back)
              -> Step.install: record it and empty the durable log (IO) -> Driver.install_logged
              -> restore the state machine from it (IO) -> Driver.install_restored
              -> only then persist/send the rest of the Step (the acknowledgement among it)
"""
import enum
from typing import Optional

from replichat.runtime.snapshot_policy import SnapshotPolicy

NEVER = SnapshotPolicy(every_entries=0)


def compaction_target(policy: SnapshotPolicy, snapshot_index: int, base_index: int, applied: int, stable: int) -> int:
    """How far the log may be forgotten after a snapshot at `snapshot_index`: the policy's tail
    kept, and never past the snapshot, the applied index or what is durable (an entry not yet
    in a snapshot is still needed to rebuild the state)."""
    return max(base_index, min(policy.compact_to(snapshot_index, base_index), snapshot_index, applied, stable))


class StateRecovery(enum.Enum):
    KEEP = "keep"  # the state machine continues the log: replay what follows its applied index
    RESTORE = "restore"  # it is older than the log's first entry: restore the recorded snapshot
    REFUSE = "refuse"  # it cannot be made to fit the log: the replica must not start


def state_recovery(applied: int, base_index: int, last_index: int, snapshot_index: Optional[int]) -> StateRecovery:
    """At start: what to do with a state machine that applied `applied` entries, given a log
    holding entries base_index + 1 .. last_index and the recorded snapshot (if any). A crash
    between recording an installed snapshot and restoring the state, or a power loss that took
    the state machine's unsynced writes, leaves a state older than the log's first entry."""
    if applied > last_index:
        return StateRecovery.REFUSE  # the log lost entries the state already applied
    if applied >= base_index:
        return StateRecovery.KEEP
    if snapshot_index is not None and snapshot_index >= base_index:
        return StateRecovery.RESTORE
    return StateRecovery.REFUSE
