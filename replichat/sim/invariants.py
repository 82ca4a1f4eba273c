"""Raft's safety properties, checked while the simulation runs.

Most checks are incremental, so they can run after every event without making long runs
quadratic:

- election safety: at most one leader per term, over the whole run (a dict term -> leader);
- one vote per term: no replica grants its vote to two candidates in one term, across its
  crashes (the VOTE_RESP messages it actually sends are the evidence);
- log matching: an (index, term) pair always names the same entry with the same predecessor
  term. Every entry a log ever holds passes through a Ready before anyone else sees it, and by
  induction on the index "same (index, term) -> same data and same previous term" is exactly
  "same (index, term) -> identical prefix";
- leader completeness: an entry committed in term t is in the log of every leader of a later
  term. A commit is observed on some replica at its current term b >= t, so a leader of term
  T > b must hold it: checked against the leader's log as it was elected (a leader only
  appends, and earlier-term entries can only have come from that log), both when the leader
  is elected and when a commit is observed after it was;
- state machine safety: every replica applies the same entry, and gets the same result, at
  each index; an applied entry is a committed one;
- monotonic commit: a replica's commit (and applied) index never goes back within one life;
- durability: no disk ever drops a committed entry, and every committed entry is on a quorum
  of disks (checked periodically: a minority crash can never lose it);
- acknowledged writes: the entry a client was answered from is committed, and stays so;
- corruption never propagates: bytes the nemesis flipped on a disk are never applied by any
  replica nor sent by any replica in an append.

The periodic `full_check` also compares every pair of logs directly (the incremental check's
backstop).

Liveness, once every fault is healed: the cluster converges (one leader followed by all,
everything committed and applied, every client answered) within `SimConfig.liveness_ticks`,
and gets there in at most `SimConfig.liveness_terms` new terms (each election round begins
one, won or split). Both bounds are tight on purpose — measured, then given a margin (see
config.py) — so that a cluster that still recovers, only slowly (say, every replica times out
at the same tick and splits the vote again and again), fails too.
Snapshots: a log may start after a base (entries up to it were compacted into a snapshot). The
checks that look at log contents look at what is still there; a snapshot vouches for the
entries it covers (it is a copy of the state that applied them: state machine safety and the
digest checks compare that state), and compaction must never drop an entry that the disk's
recorded snapshot does not cover (`on_compacted`).
"""
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple, Union

from replichat.chat.state import Applied
from replichat.raft.core import Ready, Role
from replichat.raft.log import RaftLog
from replichat.raft.messages import Entry, Message, MsgType


class InvariantViolation(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def _short(e: Entry) -> str:
    data = e.data[:24].hex() + ("…" if len(e.data) > 24 else "")
    return f"({e.index}, t{e.term}, {data or 'no-op'})"


class LogView(NamedTuple):
    """A log that may start after a base: entries base + 1 .. base + len(entries); `covered`:
    the index its recorded snapshot covers (those entries count as held)."""

    base: int
    entries: Sequence[Entry]
    covered: int = 0

    def holds(self, index: int, entry: Entry) -> bool:
        if index <= self.covered:
            return True
        position = index - self.base - 1
        return 0 <= position < len(self.entries) and self.entries[position] == entry


AnyLog = Union[Sequence[Entry], LogView]


def _view(log: AnyLog) -> LogView:
    return log if isinstance(log, LogView) else LogView(0, log)


def _contents(log: RaftLog) -> Tuple[int, List[Entry]]:
    """(base, entries) of an in-memory log, without touching what was compacted."""
    return log.base_index, log.slice(log.first_index, log.last_index + 1)


class SafetyChecker:
    def __init__(self, replica_ids: Sequence[int]) -> None:
        self.quorum = len(replica_ids) // 2 + 1
        self.leaders: Dict[int, int] = {}
        # Each leader's log as it was elected: (base, entries after it).
        self._leader_logs: Dict[int, Tuple[int, Tuple[Entry, ...]]] = {}
        self._max_leader_term = 0
        self._votes: Dict[Tuple[int, int], int] = {}
        self._entries: Dict[Tuple[int, int], Tuple[bytes, int]] = {}
        self.committed: Dict[int, Entry] = {}
        self._commit_bound: Dict[int, int] = {}
        self._results: Dict[int, bytes] = {}
        self._digests: Dict[int, str] = {}
        self.acknowledged: Dict[int, Entry] = {}
        self._commit = {r: 0 for r in replica_ids}
        self._applied = {r: 0 for r in replica_ids}
        # (index, term, data) of every entry as a corrupted disk now stores it.
        self._corrupt: Set[Tuple[int, int, bytes]] = set()

    # ----------------------------------------------------------------- per event

    def new_life(self, rid: int) -> None:
        """A restart: commit may legitimately restart lower (it is persisted lazily)."""
        self._commit[rid] = 0
        self._applied[rid] = 0

    def observe(self, rid: int, log: RaftLog, role: Role, term: int) -> None:
        """After the core changed: its commit index, its leadership."""
        if role is Role.LEADER and self.leaders.get(term) != rid:
            self._elected(rid, term, log)
        committed = log.committed
        last = self._commit[rid]
        if committed < last:
            raise InvariantViolation("commit-regressed", f"replica {rid} commit index went from {last} back to {committed}")
        if committed > last:
            # Entries up to the base came with an installed snapshot: committed elsewhere.
            for entry in log.slice(max(last, log.base_index) + 1, committed + 1):
                self._record_commit(rid, entry, term)
            self._commit[rid] = committed
        applied = log.applied
        if applied < self._applied[rid]:
            raise InvariantViolation("applied-regressed", f"replica {rid} applied index went from {self._applied[rid]} back to {applied}")
        self._applied[rid] = applied

    def _elected(self, rid: int, term: int, log: RaftLog) -> None:
        other = self.leaders.get(term)
        if other is not None:
            raise InvariantViolation("election-safety", f"replicas {other} and {rid} are both leaders of term {term}")
        self.leaders[term] = rid
        base, entries = _contents(log)
        self._leader_logs[term] = (base, tuple(entries))
        self._max_leader_term = max(self._max_leader_term, term)
        for index, entry in self.committed.items():
            # What the leader compacted into its snapshot it holds as state (checked by digests).
            if index > base and self._commit_bound[index] < term and not _has(base, entries, entry):
                raise InvariantViolation(
                    "leader-completeness",
                    f"replica {rid} became leader of term {term} without committed entry {_short(entry)} "
                    f"(committed by term {self._commit_bound[index]})",
                )

    def _record_commit(self, rid: int, entry: Entry, term: int) -> None:
        known = self.committed.get(entry.index)
        if known is None:
            self.committed[entry.index] = entry
            self._commit_bound[entry.index] = term
            if term < self._max_leader_term:
                for leader_term, (base, entries) in self._leader_logs.items():
                    if leader_term > term and entry.index > base and not _has(base, entries, entry):
                        raise InvariantViolation(
                            "leader-completeness",
                            f"entry {_short(entry)} committed by term {term} is missing from the log of "
                            f"term {leader_term}'s leader {self.leaders[leader_term]}",
                        )
        elif known != entry:
            raise InvariantViolation(
                "state-machine-safety",
                f"replica {rid} committed {_short(entry)} at index {entry.index}, where {_short(known)} was committed",
            )

    def on_ready(self, rid: int, log: RaftLog, term: int, ready: Ready) -> None:
        for entry in ready.entries:
            prev_term = log.term(entry.index - 1)
            if entry.term < prev_term or entry.term > term:
                raise InvariantViolation(
                    "log-terms",
                    f"replica {rid} log has entry {_short(entry)} after term {prev_term} while in term {term}",
                )
            key = (entry.index, entry.term)
            seen = (entry.data, prev_term)
            known = self._entries.setdefault(key, seen)
            if known != seen:
                raise InvariantViolation(
                    "log-matching",
                    f"replica {rid} holds entry {_short(entry)} (previous term {prev_term}); another log has "
                    f"index {entry.index} term {entry.term} with previous term {known[1]} and data {known[0][:24].hex()}",
                )

    def on_corrupted(self, rid: int, entry: Entry, stored: bytes) -> None:
        """The nemesis flipped a byte of `entry` on replica `rid`'s disk: `stored` is what it holds now."""
        self._corrupt.add((entry.index, entry.term, stored))

    def _never_corrupt(self, rid: int, entries: Iterable[Entry], what: str) -> None:
        for e in entries:
            if (e.index, e.term, e.data) in self._corrupt:
                raise InvariantViolation(
                    "corruption-propagated", f"replica {rid} {what} entry {_short(e)}, whose bytes were corrupted on a disk"
                )

    def on_sent(self, rid: int, messages: Sequence[Message]) -> None:
        """Messages leaving a replica. A vote counts once sent: a Ready lost to a crash before
        its persist completed never granted anything."""
        for m in messages:
            if self._corrupt and m.entries:
                self._never_corrupt(rid, m.entries, "sent")
            if m.type is MsgType.VOTE_RESP and not m.reject:
                voted = self._votes.setdefault((rid, m.term), m.dst)
                if voted != m.dst:
                    raise InvariantViolation(
                        "double-vote", f"replica {rid} voted for {voted} and then for {m.dst} in term {m.term}"
                    )

    def on_saved(self, rid: int, removed: Sequence[Entry], replacing_term: Optional[int] = None, covered: int = 0) -> None:
        """`removed`: entries a save (or an install) took off the disk; `replacing_term`: the
        term of the entry the save wrote at the first removed index (None: it wrote none
        there); `covered`: the index the disk's snapshot covers (an install replaces the log by
        a newer snapshot).

        Raft lets a replica drop a committed entry in one case only: it never learnt the entry
        was committed, and the entry that replaces it (with everything after it) is of a term
        before the one that committed it: an append delayed from an older leader, reaching a
        replica that was cut off or paused (seed 52161). That leader need not hold the entry
        (Leader Completeness covers only later terms), the majority that committed it refuses
        its appends, so the entry stays on a quorum (full_check counts the copies), and a
        leader of a later term that lacked it is caught when elected (_elected). Any other
        removal of a committed entry is a violation."""
        for entry in removed:
            if entry.index <= covered or self.committed.get(entry.index) != entry:
                continue
            bound = self._commit_bound[entry.index]
            if replacing_term is None or replacing_term >= bound or entry.index <= self._commit[rid]:
                replaced = f"by an entry of term {replacing_term}" if replacing_term is not None else "without a conflicting entry"
                raise InvariantViolation(
                    "durability",
                    f"replica {rid} removed committed entry {_short(entry)} (committed by term {bound}) from its disk, "
                    f"{replaced}",
                )

    def on_compacted(self, rid: int, removed: Sequence[Entry], snapshot_index: int) -> None:
        """Compaction dropped `removed` from replica `rid`'s disk, whose recorded snapshot
        covers up to `snapshot_index`: anything past it is lost for good."""
        for entry in removed:
            if entry.index > snapshot_index:
                raise InvariantViolation(
                    "durability",
                    f"replica {rid} compacted entry {_short(entry)} away, past its snapshot at {snapshot_index}",
                )

    def on_applied(self, rid: int, entries: Sequence[Entry], applied: Sequence[Applied]) -> None:
        if len(entries) != len(applied):
            raise InvariantViolation("apply", f"replica {rid} applied {len(applied)} results for {len(entries)} entries")
        if self._corrupt:
            self._never_corrupt(rid, entries, "applied")
        for entry, item in zip(entries, applied):
            if item.index != entry.index:
                raise InvariantViolation("apply", f"replica {rid} applied index {item.index} for entry {_short(entry)}")
            known = self.committed.get(entry.index)
            if known != entry:
                raise InvariantViolation(
                    "state-machine-safety",
                    f"replica {rid} applied {_short(entry)}; committed there: {_short(known) if known else 'nothing'}",
                )
            result = item.result.SerializeToString(deterministic=True) if item.result is not None else b""
            if self._results.setdefault(entry.index, result) != result:
                raise InvariantViolation(
                    "determinism",
                    f"replica {rid} got a different result applying {_short(entry)}: {item.result!r}",
                )

    def on_digest(self, rid: int, index: int, digest: str) -> None:
        if self._digests.setdefault(index, digest) != digest:
            raise InvariantViolation("determinism", f"replica {rid} chat state after index {index} differs from another replica's")

    def on_acknowledged(self, entry: Entry) -> None:
        """A client was answered from `entry`: it must be committed, for good."""
        if self.committed.get(entry.index) != entry:
            raise InvariantViolation("acknowledged", f"a client was answered from uncommitted entry {_short(entry)}")
        self.acknowledged[entry.index] = entry

    # ----------------------------------------------------------------- whole-cluster

    def full_check(self, logs: Mapping[str, AnyLog], disks: Mapping[int, AnyLog], lost: int = 0) -> None:
        """`disks`: the disks still trusted; `lost`: how many others were lost to corruption
        (each can take one copy of a committed entry with it, so a quorum less that many)."""
        views = {label: _view(log) for label, log in logs.items()}
        labels = sorted(views)
        for a_pos, a in enumerate(labels):
            for b in labels[a_pos + 1 :]:
                _check_pair(a, views[a], b, views[b])
        disk_views = [_view(d) for d in disks.values()]
        for index, entry in self.committed.items():
            holders = sum(1 for d in disk_views if d.holds(index, entry))
            if holders < self.quorum - lost:
                raise InvariantViolation(
                    "durability",
                    f"committed entry {_short(entry)} is on {holders} disks, fewer than a quorum of {self.quorum}"
                    + (f" less {lost} corrupted" if lost else ""),
                )

    def final_check(self, logs: Dict[int, RaftLog], digests: Dict[int, str]) -> None:
        """After the healed cluster converged: acknowledged writes are everywhere, replicas agree."""
        for rid, log in sorted(logs.items()):
            for index, entry in self.acknowledged.items():
                if index <= log.base_index:
                    continue  # in its snapshot: the state digests below compare that
                if index > log.committed or log.slice(index, index + 1) != [entry]:
                    raise InvariantViolation(
                        "acknowledged", f"acknowledged entry {_short(entry)} is not committed on replica {rid}"
                    )
        if len(set(digests.values())) > 1:
            raise InvariantViolation("convergence", f"chat state digests differ after convergence: {digests}")

    @property
    def elections(self) -> int:
        return len(self.leaders)


def _has(base: int, entries: Sequence[Entry], entry: Entry) -> bool:
    position = entry.index - base - 1
    return 0 <= position < len(entries) and entries[position] == entry


def _check_pair(a: str, log_a: LogView, b: str, log_b: LogView) -> None:
    """Log matching between two logs, over the indexes both still hold: at the highest index
    where the terms agree, everything from the first common index up to it is identical."""
    first = max(log_a.base, log_b.base) + 1
    last = min(log_a.base + len(log_a.entries), log_b.base + len(log_b.entries))
    entries_a, entries_b = log_a.entries, log_b.entries
    index = last
    while index >= first and entries_a[index - log_a.base - 1].term != entries_b[index - log_b.base - 1].term:
        index -= 1
    if index < first:
        return
    part_a = entries_a[first - log_a.base - 1 : index - log_a.base]
    part_b = entries_b[first - log_b.base - 1 : index - log_b.base]
    if part_a != part_b:
        offset = next(i for i in range(len(part_a)) if part_a[i] != part_b[i])
        raise InvariantViolation(
            "log-matching",
            f"{a} and {b} agree on the term at index {index} but differ at index {first + offset}: "
            f"{_short(part_a[offset])} vs {_short(part_b[offset])}",
        )


def logs_of(cores: Mapping[int, Optional[RaftLog]], disks: Mapping[int, AnyLog]) -> Dict[str, LogView]:
    """Every log worth comparing: each live replica's in-memory log and each disk."""
    logs: Dict[str, LogView] = {}
    for rid, log in cores.items():
        if log is not None:
            base, entries = _contents(log)
            logs[f"replica {rid} (memory)"] = LogView(base, entries, base)
    for rid, disk in disks.items():
        logs[f"replica {rid} (disk)"] = _view(disk)
    return logs


def check_heal(ticks: int, elections: int, terms: int, max_terms: int, after: str) -> None:
    """The cluster settled `ticks` after `after`, having elected `elections` leaders in `terms`
    new terms: more election rounds than `max_terms` is a liveness failure."""
    if terms > max_terms:
        raise InvariantViolation(
            "liveness",
            f"{terms} election rounds (new terms) to settle after {after}, more than {max_terms} "
            f"({elections} leaders elected, settled after {ticks} ticks): elections keep failing",
        )
