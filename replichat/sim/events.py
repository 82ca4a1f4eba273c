"""The simulated clock: one priority queue of timed callbacks, and a record of what happened.

Determinism rests here. Callbacks run in (time, insertion order): two events at the same time
always run in the order they were scheduled, never in an order a hash or an OS decides. The
trace hashes every event's description, so two runs of a seed can be compared event for event
(and printed in full with --trace to read a failure).
"""
import hashlib
import heapq
from typing import Callable, List, Optional, TextIO, Tuple

Action = Callable[[], None]


class EventQueue:
    def __init__(self) -> None:
        self._heap: List[Tuple[int, int, Action]] = []
        self._order = 0
        self.now = 0
        self.processed = 0

    def at(self, time: int, action: Action) -> None:
        if time < self.now:
            raise ValueError(f"cannot schedule in the past ({time} < {self.now})")
        self._order += 1
        heapq.heappush(self._heap, (time, self._order, action))

    def after(self, delay: int, action: Action) -> None:
        self.at(self.now + max(0, delay), action)

    def next_time(self) -> Optional[int]:
        return self._heap[0][0] if self._heap else None

    def run_until(self, end: int) -> None:
        """Run every callback scheduled at or before `end`, in order (run_next in a loop, with
        the loop's lookups hoisted: this is the simulator's innermost loop)."""
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= end:
            time, _, action = pop(heap)
            self.now = time
            self.processed += 1
            action()

    def run_next(self) -> bool:
        """Run the earliest callback; False if nothing is scheduled."""
        if not self._heap:
            return False
        time, _, action = heapq.heappop(self._heap)
        self.now = time
        self.processed += 1
        action()
        return True


class Trace:
    """A running hash of every event; with a sink, also a readable line per event."""

    def __init__(self, sink: Optional[TextIO] = None, keep: int = 0) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self._sink = sink
        # The last `keep` lines, to show what led to a failure without a full trace.
        self._keep = keep
        self.tail: List[str] = []
        self.count = 0

    @property
    def verbose(self) -> bool:
        return self._sink is not None or self._keep > 0

    def event(self, time: int, text: str) -> None:
        self.count += 1
        line = f"{time:>8} {text}"
        self._hash.update(f"{line}\n".encode())  # the same bytes as hashing line, then b"\n"
        if self._sink is not None:
            self._sink.write(line + "\n")
        if self._keep:
            self.tail.append(line)
            if len(self.tail) > 2 * self._keep:
                del self.tail[: -self._keep]

    def digest(self) -> str:
        return self._hash.hexdigest()
