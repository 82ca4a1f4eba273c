"""The replica's view of its Raft log: entries, how far they are durable, committed, applied.

Pure bookkeeping, no IO of its own. The runtime loads the durable log into it at start and
persists what `unstable()` returns; `mark_stable()` records that it did. Indexes start at 1;
index 0 with term 0 is the empty prefix every log agrees on.

The log may start after a snapshot: `base_index`/`base_term` name the last entry folded into
the snapshot (or removed by compaction), so the entry after it can still be matched (§7 of
the paper). Entries at or before the base are gone; asking for them raises `Compacted` and the
leader sends the snapshot instead.

Memory holds a bounded window: with a `reader` and a `window`, entries that are durable and
applied and older than the newest `window` are dropped from memory and read back through the
reader when a lagging follower needs them. Terms of every entry after the base stay in memory
as runs (first index, term) — terms change rarely, so that costs a few tuples, not an entry
each — so matching and voting never touch the disk.
"""
import bisect
from typing import List, Optional, Sequence

try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python 3.7
    Protocol = object  # type: ignore[assignment]

from replichat.raft.messages import Entry


class Compacted(LookupError):
    """The entry was folded into a snapshot: only the snapshot can bring a replica past it."""


class LogReader(Protocol):
    """Durable entries the in-memory window no longer holds (storage.SqliteLogReader)."""

    def entries(self, lo: int, hi: int) -> List[Entry]:
        """Entries with lo <= index < hi, each verified; raises if one is missing or corrupt."""


class RaftLog:
    def __init__(
        self,
        entries: Sequence[Entry] = (),
        committed: int = 0,
        applied: int = 0,
        *,
        base_index: int = 0,
        base_term: int = 0,
        reader: Optional[LogReader] = None,
        window: Optional[int] = None,
    ) -> None:
        if window is not None and (reader is None or window < 1):
            raise ValueError("a bounded window needs a reader for the entries it drops, and a size >= 1")
        self.base_index = base_index
        self.base_term = base_term
        self._reader = reader
        self._window = window
        self._entries: List[Entry] = list(entries)
        for position, entry in enumerate(self._entries, start=base_index + 1):
            if entry.index != position:
                raise ValueError(f"log entry at position {position} has index {entry.index}")
        # Index of _entries[0]; entries in [first_index, _mem_first) are only on disk.
        self._mem_first = base_index + 1
        # Term runs over [base_index, last_index]: _run_starts[i] is the first index of a run
        # of entries of term _run_terms[i].
        self._run_starts: List[int] = [base_index]
        self._run_terms: List[int] = [base_term]
        self._add_runs(self._entries)
        # Everything loaded from disk is durable by definition.
        self.stable = self.last_index
        self.committed = max(base_index, min(committed, self.stable))
        self.applied = min(applied, self.committed)
        if self.applied < base_index:
            raise ValueError(f"applied index {applied} is before the snapshot at {base_index}: restore it first")
        self._trim()

    # ----------------------------------------------------------------- views

    @property
    def first_index(self) -> int:
        """The first index still in the log (entries before it are in the snapshot)."""
        return self.base_index + 1

    @property
    def last_index(self) -> int:
        return self._mem_first - 1 + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._run_terms[-1]

    @property
    def in_memory(self) -> int:
        return len(self._entries)

    def term(self, index: int) -> int:
        """Term of the entry at index; 0 for index 0. Raises IndexError past the end and
        Compacted before the base."""
        if index > self.last_index:
            raise IndexError(f"no entry {index}: the log ends at {self.last_index}")
        if index >= self._mem_first:
            return self._entries[index - self._mem_first].term
        if index < self.base_index:
            raise Compacted(f"entry {index} is in the snapshot (log starts after {self.base_index})")
        return self._run_terms[bisect.bisect_right(self._run_starts, index) - 1]

    def has(self, index: int, term: int) -> bool:
        return self.base_index <= index <= self.last_index and self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft's voting rule (§5.4.1): a candidate's log at least as up to date as ours."""
        return last_term > self.last_term or (last_term == self.last_term and last_index >= self.last_index)

    def slice(self, lo: int, hi: int) -> List[Entry]:
        """Entries with lo <= index < hi (hi is clipped to the end of the log)."""
        hi = min(hi, self.last_index + 1)
        if lo >= hi:
            return []
        if lo < self.first_index:
            raise Compacted(f"entry {lo} is in the snapshot (log starts after {self.base_index})")
        if lo >= self._mem_first:
            return self._entries[lo - self._mem_first : hi - self._mem_first]
        assert self._reader is not None  # entries leave memory only when there is a reader
        older = self._reader.entries(lo, min(hi, self._mem_first))
        return older + self._entries[: max(0, hi - self._mem_first)]

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries sharing the term of the entry at `index`
        (never before the base: what precedes it is not known any more)."""
        self.term(index)  # range check
        return max(self.base_index, self._run_starts[bisect.bisect_right(self._run_starts, index) - 1])

    def last_index_of_term(self, term: int) -> int:
        """The last index holding `term`, or 0 if the log has none (terms only grow along a log)."""
        position = bisect.bisect_right(self._run_terms, term) - 1
        if position < 0 or self._run_terms[position] != term:
            return 0
        return self._run_end(position)

    def _run_end(self, position: int) -> int:
        return self._run_starts[position + 1] - 1 if position + 1 < len(self._run_starts) else self.last_index

    # ----------------------------------------------------------------- changes

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries that follow the last one (the leader's own proposals)."""
        if entries and entries[0].index != self.last_index + 1:
            raise ValueError(f"append at {entries[0].index} after last index {self.last_index}")
        self._entries.extend(entries)
        self._add_runs(entries)

    def merge(self, prev_index: int, entries: Sequence[Entry]) -> int:
        """Merge a leader's entries that follow prev_index (which matched): skip those we already
        have, truncate at the first conflict, append the rest. Returns the last new index."""
        for offset, entry in enumerate(entries):
            index = prev_index + 1 + offset
            if index < self._mem_first:
                # Compacted, or durable and applied: committed, so they cannot conflict.
                continue
            if index > self.last_index:
                self.append(entries[offset:])
                break
            if self._entries[index - self._mem_first].term != entry.term:
                if index <= self.committed:
                    raise AssertionError(f"leader overwrites committed entry {index}")
                self._truncate_from(index)
                self.stable = min(self.stable, index - 1)
                self.append(entries[offset:])
                break
        return prev_index + len(entries)

    def unstable(self) -> List[Entry]:
        """Entries not yet known to be durable, to be persisted by the runtime."""
        return self._entries[self.stable + 1 - self._mem_first :]

    def mark_stable(self, index: int, term: int) -> None:
        # A truncation between persisting and this call makes the claim stale: ignore it.
        if self.has(index, term):
            self.stable = max(self.stable, index)
            self._trim()

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            if index > self.last_index:
                raise AssertionError(f"commit {index} past last index {self.last_index}")
            self.committed = index
            return True
        return False

    def to_apply(self) -> List[Entry]:
        return self.slice(self.applied + 1, self.committed + 1)

    def applied_to(self, index: int) -> None:
        if index > self.committed:
            raise AssertionError(f"applied {index} past commit {self.committed}")
        self.applied = max(self.applied, index)
        self._trim()

    def compact(self, index: int) -> int:
        """Forget entries up to `index`, which a durable snapshot covers. Only applied, durable
        entries may go: anything else is still needed. Returns how many were forgotten."""
        if index <= self.base_index:
            return 0
        if index > self.applied or index > self.stable:
            raise AssertionError(
                f"compaction to {index} would drop entries not yet applied ({self.applied}) or durable ({self.stable})"
            )
        term = self.term(index)
        freed = index - self.base_index
        drop = max(0, index + 1 - self._mem_first)
        del self._entries[:drop]
        self._mem_first = max(self._mem_first, index + 1)
        position = bisect.bisect_right(self._run_starts, index) - 1
        self._run_starts = [index] + self._run_starts[position + 1 :]
        self._run_terms = [term] + self._run_terms[position + 1 :]
        self.base_index, self.base_term = index, term
        return freed

    def restore(self, index: int, term: int) -> None:
        """Replace the whole log by a snapshot at (index, term), newer than anything committed
        here: the log is empty after it, and it counts as durable, committed and applied once
        the runtime has installed it (the Ready that carries it)."""
        if index <= self.committed:
            raise AssertionError(f"snapshot at {index} is not newer than commit index {self.committed}")
        self._entries = []
        self._mem_first = index + 1
        self._run_starts, self._run_terms = [index], [term]
        self.base_index, self.base_term = index, term
        self.stable = self.committed = self.applied = index

    # ----------------------------------------------------------------- plumbing

    def _add_runs(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            if entry.term != self._run_terms[-1]:
                self._run_starts.append(entry.index)
                self._run_terms.append(entry.term)

    def _truncate_from(self, index: int) -> None:
        del self._entries[index - self._mem_first :]
        position = bisect.bisect_left(self._run_starts, index)
        del self._run_starts[max(1, position) :]
        del self._run_terms[max(1, position) :]

    def _trim(self) -> None:
        """Drop durable, applied entries beyond the window from memory (amortized: only once
        the window is exceeded by a quarter, so each trim moves many entries at once)."""
        if self._window is None or len(self._entries) <= self._window + self._window // 4:
            return
        keep_from = max(self.last_index + 1 - self._window, self._mem_first)
        keep_from = min(keep_from, self.stable + 1, self.applied + 1)
        if keep_from > self._mem_first:
            del self._entries[: keep_from - self._mem_first]
            self._mem_first = keep_from
