"""The leader's record of one follower: how much of the log it has and how to send it more.

A follower is either probed (one append in flight until it answers, used after a rejection or a
leader change, to find where the logs agree) or replicated to (appends pipelined optimistically,
up to `max_inflight` unanswered at once).
"""
import collections
import enum
from typing import Deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"


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

    def __repr__(self) -> str:
        return f"Progress(match={self.match}, next={self.next}, {self.state.value}, inflight={len(self.inflight)})"

    @property
    def paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
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
        if self.state is ProgressState.REPLICATE:
            if probed_index <= self.match:
                return False
            self.become_probe()
            self.next = max(self.match + 1, min(retry_from, probed_index))
            return True
        if probed_index != self.next - 1:
            return False
        retry = max(self.match + 1, min(retry_from, probed_index))
        if retry == self.next:
            # The follower lacks what it once acknowledged (its disk lost acknowledged data,
            # outside Raft's model). Resending at once would spin; wait for the next heartbeat.
            return False
        self.next = retry
        self.probe_sent = False
        return True
