"""A replica's simulated durable storage: the Raft log and hard state that survive a crash.

Same contract as `replichat.runtime.storage.RaftStorage`: one `save` is one atomic, fsynced transaction
that replaces the log suffix from its first entry on and (if given) the hard state. The write
takes simulated time; a crash before it completes leaves nothing of it (SQLite's atomic commit),
a crash after it leaves all of it. The chat state database is not here: it lives with the
replica and is either kept (process crash) or lost (power loss) — see replica.py.

Each entry is stored with its checksum, computed and verified by the real storage's own
functions (integrity.entry_checksum, storage.verified_entries), so a flipped byte (the nemesis's
corrupt-disk fault) is caught on load exactly as the real replica catches it: CorruptDataError
naming the index. `entries` stays what Raft wrote (the checkers compare logs by it); the bytes
a load reads are `stored_data`, which differs from it only where the disk was corrupted.

Snapshots: the disk also holds the recorded snapshot (`SimSnapshot`: index, term and a copy of
the chat state at that applied index, the exactly-once table included) and the log's base (the
last compacted entry), like raft.db's snapshot row and `log_base`. Recording a snapshot,
compacting the log and installing a received snapshot (record it and empty the log, with the
hard state) are each one atomic transaction, as in storage.py; a snapshot copy taken but not yet
recorded is not on the disk (the real one is a file removed at the next start).
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from replichat.chat.state import ChatState
from replichat.integrity import entry_checksum
from replichat.raft.membership import Membership
from replichat.raft.messages import Entry, HardState, SnapshotMeta
from replichat.runtime.storage import verified_entries


class SimSnapshot(NamedTuple):
    """A recorded (or received) snapshot. `state` is never changed: restoring copies it."""

    index: int
    term: int
    state: ChatState

    @property
    def meta(self) -> SnapshotMeta:
        return SnapshotMeta(self.index, self.term)


class Disk:
    def __init__(self) -> None:
        # The log after the base: entries base.index + 1 .. base.index + len(entries).
        self.entries: List[Entry] = []
        self.checksums: List[int] = []
        self.base = SnapshotMeta()
        # The configuration in effect at the base (None: never recorded, the bootstrap one).
        self.base_membership: Optional[Membership] = None
        self.snapshot: Optional[SimSnapshot] = None
        # Index -> the bytes now stored in place of that entry's data (a corrupted sector).
        self.stored_data: Dict[int, bytes] = {}
        self.hard_state = HardState()
        self.saves = 0

    @property
    def last_index(self) -> int:
        return self.base.index + len(self.entries)

    def holds(self, index: int, entry: Entry) -> bool:
        """Whether this disk vouches for committed `entry`: in its log, or folded into its
        recorded snapshot (which covers only committed entries)."""
        if self.snapshot is not None and index <= self.snapshot.index:
            return True
        position = index - self.base.index - 1
        return 0 <= position < len(self.entries) and self.entries[position] == entry

    def save(self, hard_state: Optional[HardState], entries: Sequence[Entry]) -> List[Entry]:
        """Persist; returns the entries this save removed or overwrote with different ones
        (the safety checker makes sure none of them was committed)."""
        self.saves += 1
        removed: List[Entry] = []
        if entries:
            first = entries[0].index
            if first > self.last_index + 1:
                raise AssertionError(f"save leaves a gap: entry {first} after {self.last_index} on disk")
            if first <= self.base.index:
                raise AssertionError(f"save of entry {first}, which is compacted (the log starts after {self.base.index})")
            position = first - self.base.index - 1
            old_suffix = self.entries[position:]
            new_by_index = {e.index: e for e in entries}
            removed = [e for e in old_suffix if new_by_index.get(e.index) != e]
            del self.entries[position:]
            del self.checksums[position:]
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
        data = bytearray(self.stored_data.get(index, self.entries[index - self.base.index - 1].data))
        data[position] ^= mask
        self.stored_data[index] = bytes(data)
        return self.stored_data[index]

    def load(self) -> Tuple[HardState, List[Entry]]:
        """The hard state and the log after `base`. Raises CorruptDataError (naming the index)
        if a stored entry fails its checksum."""
        return self.hard_state, verified_entries(self.rows())

    # ----------------------------------------------------------------- snapshots

    def record_snapshot(self, snapshot: SimSnapshot) -> None:
        """One transaction: this is the replica's snapshot from now on (storage.save_snapshot)."""
        if self.snapshot is not None and snapshot.index <= self.snapshot.index:
            raise AssertionError(f"recording snapshot {snapshot.index} over a newer one at {self.snapshot.index}")
        self.snapshot = snapshot

    def compact(self, to_index: int, base_membership: Optional[Membership] = None) -> List[Entry]:
        """One transaction: forget the log up to `to_index` (storage.compact), recording the
        configuration in effect there (raft/membership.py). Returns what it removed (the
        checker makes sure the recorded snapshot covers all of it)."""
        if to_index <= self.base.index:
            return []
        if base_membership is not None:
            self.base_membership = base_membership
        if to_index > self.last_index:
            raise AssertionError(f"compaction to {to_index} past the last entry {self.last_index}")
        count = to_index - self.base.index
        removed = self.entries[:count]
        self.base = SnapshotMeta(to_index, removed[-1].term)
        del self.entries[:count]
        del self.checksums[:count]
        for index in [i for i in self.stored_data if i <= to_index]:
            del self.stored_data[index]
        return removed

    def install(self, snapshot: SimSnapshot, hard_state: HardState,
                base_membership: Optional[Membership] = None) -> List[Entry]:
        """One transaction: record a received snapshot and empty the log after it, with the hard
        state and the snapshot's configuration (storage.install_snapshot). Returns the entries
        it removed."""
        if base_membership is not None:
            self.base_membership = base_membership
        removed = list(self.entries)
        self.entries, self.checksums, self.stored_data = [], [], {}
        self.base = snapshot.meta
        self.snapshot = snapshot
        self.hard_state = hard_state
        return removed
