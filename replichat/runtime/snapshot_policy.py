"""When a replica takes a snapshot and how much log it keeps behind it. Pure arithmetic.

A replica takes a snapshot once every `every_entries` applied entries (etcd's --snapshot-count
default: 10,000). After it, the log is compacted up to the snapshot's index minus
`keep_entries`: a follower lagging by less than that still catches up from the log (cheap)
instead of by a snapshot transfer (the whole state).

Each replica snapshots at its own offset into that period. Replicas apply the same entries
within milliseconds of each other, so counting from the same start they would all copy their
state at once: no follower is then free of a copy to acknowledge a write promptly, and on
shared hardware the copies compete for the same disk. The offset comes from the replica's id
(Fibonacci hashing: the fractional part of id x 0.618..., which spreads consecutive ids over
the period: ids 1, 2, 3 at 0.62, 0.24 and 0.85 of it). The boundaries are fixed indexes, so
the offset holds across restarts and installs; after an install the next snapshot waits at
least half a period. `staggered=False` is the plain rule (every `every_entries` from the latest
snapshot, whatever the replica): the simulator draws one or the other per seed.
"""
from typing import NamedTuple

DEFAULT_SNAPSHOT_ENTRIES = 10_000
DEFAULT_KEEP_ENTRIES = 5_000
_GOLDEN_FRACTION = 0.6180339887498949


class SnapshotPolicy(NamedTuple):
    every_entries: int = DEFAULT_SNAPSHOT_ENTRIES
    keep_entries: int = DEFAULT_KEEP_ENTRIES
    staggered: bool = True

    def offset(self, replica_id: int) -> int:
        """Where in each period of `every_entries` indexes this replica takes its snapshot."""
        return int((replica_id * _GOLDEN_FRACTION) % 1.0 * self.every_entries)

    def due(self, applied: int, last_snapshot: int, replica_id: int) -> bool:
        """Whether `applied` crossed one of this replica's boundaries (offset + k * every_entries)
        since `last_snapshot`, at least half a period after it."""
        every = self.every_entries
        if every <= 0:
            return False
        if not self.staggered:
            return applied - last_snapshot >= every
        if applied - last_snapshot < max(1, every // 2):
            return False
        offset = self.offset(replica_id)
        return (applied - offset) // every > (last_snapshot - offset) // every

    def compact_to(self, snapshot_index: int, base_index: int) -> int:
        """The index to compact the log to (<= snapshot_index); base_index if nothing to do."""
        return max(base_index, snapshot_index - self.keep_entries)
