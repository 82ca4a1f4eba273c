"""The replica's view of its Raft log: entries, how far they are durable, committed, applied.

Pure bookkeeping, no IO. The runtime loads the durable log into it at start and persists what
`unstable()` returns; `mark_stable()` records that it did. Indexes start at 1; index 0 with
term 0 is the empty prefix every log agrees on.
"""
from typing import List, Sequence

from replichat.raft.messages import Entry


class RaftLog:
    def __init__(self, entries: Sequence[Entry] = (), committed: int = 0, applied: int = 0) -> None:
        self._entries: List[Entry] = list(entries)
        for position, entry in enumerate(self._entries, start=1):
            if entry.index != position:
                raise ValueError(f"log entry at position {position} has index {entry.index}")
        # Everything loaded from disk is durable by definition.
        self.stable = len(self._entries)
        self.committed = min(committed, self.stable)
        self.applied = min(applied, self.committed)

    @property
    def last_index(self) -> int:
        return len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else 0

    def term(self, index: int) -> int:
        """Term of the entry at index; 0 for index 0. Raises for an index past the end."""
        if index == 0:
            return 0
        return self._entries[index - 1].term

    def has(self, index: int, term: int) -> bool:
        return index <= self.last_index and self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft's voting rule (§5.4.1): a candidate's log at least as up to date as ours."""
        return last_term > self.last_term or (last_term == self.last_term and last_index >= self.last_index)

    def slice(self, lo: int, hi: int) -> List[Entry]:
        """Entries with lo <= index < hi."""
        return self._entries[lo - 1 : hi - 1]

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries sharing the term of the entry at `index`."""
        term = self.term(index)
        while index > 1 and self._entries[index - 2].term == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int) -> int:
        """The last index holding `term`, or 0 if the log has none (terms only grow along a log)."""
        index = self.last_index
        while index > 0 and self._entries[index - 1].term > term:
            index -= 1
        return index if index > 0 and self._entries[index - 1].term == term else 0

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries that follow the last one (the leader's own proposals)."""
        if entries and entries[0].index != self.last_index + 1:
            raise ValueError(f"append at {entries[0].index} after last index {self.last_index}")
        self._entries.extend(entries)

    def merge(self, prev_index: int, entries: Sequence[Entry]) -> int:
        """Merge a leader's entries that follow prev_index (which matched): skip those we already
        have, truncate at the first conflict, append the rest. Returns the last new index."""
        for offset, entry in enumerate(entries):
            index = prev_index + 1 + offset
            if index > self.last_index:
                self._entries.extend(entries[offset:])
                break
            if self._entries[index - 1].term != entry.term:
                if index <= self.committed:
                    raise AssertionError(f"leader overwrites committed entry {index}")
                del self._entries[index - 1 :]
                self.stable = min(self.stable, index - 1)
                self._entries.extend(entries[offset:])
                break
        return prev_index + len(entries)

    def unstable(self) -> List[Entry]:
        """Entries not yet known to be durable, to be persisted by the runtime."""
        return self._entries[self.stable :]

    def mark_stable(self, index: int, term: int) -> None:
        # A truncation between persisting and this call makes the claim stale: ignore it.
        if index <= self.last_index and self.term(index) == term:
            self.stable = max(self.stable, index)

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            if index > self.last_index:
                raise AssertionError(f"commit {index} past last index {self.last_index}")
            self.committed = index
            return True
        return False

    def to_apply(self) -> List[Entry]:
        return self._entries[self.applied : self.committed]

    def applied_to(self, index: int) -> None:
        if index > self.committed:
            raise AssertionError(f"applied {index} past commit {self.committed}")
        self.applied = max(self.applied, index)
