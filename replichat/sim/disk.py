"""A replica's simulated durable storage: the Raft log and hard state that survive a crash.

Same contract as `replichat.storage.RaftStorage`: one `save` is one atomic, fsynced transaction
that replaces the log suffix from its first entry on and (if given) the hard state. The write
takes simulated time; a crash before it completes leaves nothing of it (SQLite's atomic commit),
a crash after it leaves all of it. The chat state database is not here: it lives with the
replica and is either kept (process crash) or lost (power loss) — see replica.py.

Each entry is stored with its checksum, computed and verified by the real storage's own
functions (integrity.entry_checksum, storage.verified_entries), so a flipped byte (the nemesis's
corrupt-disk fault) is caught on load exactly as the real replica catches it: CorruptDataError
naming the index. `entries` stays what Raft wrote (the checkers compare logs by it); the bytes
a load reads are `stored_data`, which differs from it only where the disk was corrupted.
"""
from typing import Dict, List, Optional, Sequence, Tuple

from replichat.integrity import entry_checksum
from replichat.raft.messages import Entry, HardState
from replichat.storage import verified_entries


class Disk:
    def __init__(self) -> None:
        self.entries: List[Entry] = []
        self.checksums: List[int] = []
        # Index -> the bytes now stored in place of that entry's data (a corrupted sector).
        self.stored_data: Dict[int, bytes] = {}
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
            del self.checksums[first - 1 :]
            for index in [i for i in self.stored_data if i >= first]:
                del self.stored_data[index]  # the rewritten rows are fresh bytes
            self.entries.extend(entries)
            self.checksums.extend(entry_checksum(e.index, e.term, e.data) for e in entries)
        if hard_state is not None:
            self.hard_state = hard_state
        return removed

    def rows(self) -> List[Tuple[int, int, bytes, int]]:
        """The log as stored: (index, term, data, checksum), as the real log table holds it."""
        stored = self.stored_data
        return [(e.index, e.term, stored.get(e.index, e.data), crc) for e, crc in zip(self.entries, self.checksums)]

    def corrupt(self, index: int, position: int, mask: int) -> bytes:
        """Flip bits (`mask`, non-zero) of one byte of entry `index`'s stored data; returns
        the bytes now stored. The checksum is left as it was written."""
        data = bytearray(self.stored_data.get(index, self.entries[index - 1].data))
        data[position] ^= mask
        self.stored_data[index] = bytes(data)
        return self.stored_data[index]

    def load(self) -> Tuple[HardState, List[Entry]]:
        """Raises CorruptDataError (naming the index) if a stored entry fails its checksum."""
        return self.hard_state, verified_entries(self.rows())
