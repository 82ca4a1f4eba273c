"""The leader's record of one follower: how much of the log it has and how to send it more.

A follower is either probed (one append in flight until it answers, used after a rejection or a
leader change, to find where the logs agree) or replicated to (appends pipelined optimistically,
up to `max_inflight` unanswered at once), or is being sent a snapshot (nothing else is sent
until the runtime reports how the transfer went).
"""
import collections
import enum
from typing import Deque, Optional


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        # Last index carried by each unanswered pipelined append, oldest first.
        self.inflight: Deque[int] = collections.deque()
        self.max_inflight = max_inflight
        # Heard from since the last check-quorum round.
        self.recent_active = False
        # SNAPSHOT: the index of the snapshot being sent.
        self.pending_snapshot = 0
        # The highest index this follower acknowledged before it reported a shorter log
        # (its data was lost or rolled back); None while that never happened under this leader.
        self.regressed_from: Optional[int] = None

    def __repr__(self) -> str:
        return f"Progress(match={self.match}, next={self.next}, {self.state.value}, inflight={len(self.inflight)})"

    @property
    def paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.SNAPSHOT:
            return True
        return len(self.inflight) >= self.max_inflight

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.next = self.match + 1

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.probe_sent = False
        self.inflight.clear()
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.probe_sent = False
        self.inflight.clear()
        self.pending_snapshot = snapshot_index

    def snapshot_done(self, success: bool) -> None:
        """The runtime finished streaming the snapshot. Either way probe next: after a success
        from just past the snapshot (the follower answers once it installed it), after a failure
        from what is known to match (which leads to the snapshot again if still needed)."""
        if self.state is not ProgressState.SNAPSHOT:
            return
        pending = self.pending_snapshot
        self.pending_snapshot = 0
        self.become_probe()
        if success:
            self.next = max(self.next, pending + 1)

    def sent(self, last_index: int) -> None:
        """Record an append that carried entries up to last_index."""
        if self.state is ProgressState.REPLICATE:
            self.next = last_index + 1
            self.inflight.append(last_index)
        else:
            self.probe_sent = True

    def acknowledged(self, index: int) -> bool:
        """The follower matches up to index. Returns whether that is news."""
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        self.probe_sent = False
        if index > self.match:
            self.match = index
            self.next = max(self.next, index + 1)
            return True
        return False

    def rejected(self, probed_index: int, retry_from: int) -> bool:
        """The follower's log does not hold the entry at probed_index. Move `next` back to
        retry_from (never at or below what is known to match). Returns False for a stale
        rejection that says nothing new (an older pipelined append)."""
        if self.state is ProgressState.SNAPSHOT:
            return False  # answers to appends sent before the snapshot: it decides now
        if self.state is ProgressState.REPLICATE:
            if probed_index <= self.match:
                return False
            self.become_probe()
            self.next = max(self.match + 1, min(retry_from, probed_index))
            return True
        if probed_index != self.next - 1:
            return False
        if probed_index <= self.match:
            # A fresh probe at what the follower acknowledged, rejected: it lacks entries it
            # once had durably (its disk lost them, or was restored from an older copy). That
            # is outside Raft's model; the leader says so (regressed_from) and, rather than
            # stall, resumes it from where it really is. Counting it lower is always safe.
            if self.regressed_from is None:
                self.regressed_from = self.match
            self.match = 0
            self.next = max(1, min(retry_from, probed_index))
            self.probe_sent = False
            return True
        retry = max(self.match + 1, min(retry_from, probed_index))
        self.next = retry
        self.probe_sent = False
        return True
