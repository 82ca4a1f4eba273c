"""A replica's simulated durable storage: the Raft log and hard state that survive a crash.

Same contract as `replichat.storage.RaftStorage`: one `save` is one atomic, fsynced transaction
that replaces the log suffix from its first entry on and (if given) the hard state. The write
takes simulated time; a crash before it completes leaves nothing of it (SQLite's atomic commit),
a crash after it leaves all of it. The chat state database is not here: it lives with the
replica and is either kept (process crash) or lost (power loss) — see replica.py.
"""
from typing import List, Optional, Sequence, Tuple

from replichat.raft.messages import Entry, HardState


class Disk:
    def __init__(self) -> None:
        self.entries: List[Entry] = []
        self.hard_state = HardState()
        self.saves = 0

    def save(self, hard_state: Optional[HardState], entries: Sequence[Entry]) -> List[Entry]:
        """Persist; returns the entries this save removed or overwrote with different ones
        (the safety checker makes sure none of them was committed)."""
        self.saves += 1
        removed: List[Entry] = []
        if entries:
            first = entries[0].index
            if first > len(self.entries) + 1:
                raise AssertionError(f"save leaves a gap: entry {first} after {len(self.entries)} on disk")
            old_suffix = self.entries[first - 1 :]
            new_by_index = {e.index: e for e in entries}
            removed = [e for e in old_suffix if new_by_index.get(e.index) != e]
            del self.entries[first - 1 :]
            self.entries.extend(entries)
        if hard_state is not None:
            self.hard_state = hard_state
        return removed

    def load(self) -> Tuple[HardState, List[Entry]]:
        return self.hard_state, list(self.entries)
