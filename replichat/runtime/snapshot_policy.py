"""When a replica takes a snapshot and how much log it keeps behind it. Pure arithmetic.

A snapshot is taken once `every_entries` entries were applied since the previous one (etcd's
--snapshot-count default: 10,000). After it, the log is compacted up to the snapshot's index
minus `keep_entries`: a follower lagging by less than that still catches up from the log (cheap)
instead of by a snapshot transfer (the whole state).
"""
from typing import NamedTuple

DEFAULT_SNAPSHOT_ENTRIES = 10_000
DEFAULT_KEEP_ENTRIES = 5_000


class SnapshotPolicy(NamedTuple):
    every_entries: int = DEFAULT_SNAPSHOT_ENTRIES
    keep_entries: int = DEFAULT_KEEP_ENTRIES

    def due(self, applied: int, last_snapshot: int) -> bool:
        return self.every_entries > 0 and applied - last_snapshot >= self.every_entries

    def compact_to(self, snapshot_index: int, base_index: int) -> int:
        """The index to compact the log to (<= snapshot_index); base_index if nothing to do."""
        return max(base_index, snapshot_index - self.keep_entries)
