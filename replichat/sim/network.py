"""The simulated network between replicas: latency, loss, duplication, long delays, cut links.

Links are directed, so one cut can be asymmetric (A hears B, B does not hear A). A link is
checked when a message is sent and again when it arrives: a partition also drops what was in
flight, as a real one does. Reordering needs no code of its own: two messages with random
latencies, one of them delayed, arrive in either order.
"""
import random
from typing import Callable, Collection, Counter, Iterable, Set, Tuple

from replichat.raft.messages import Message, MsgType
from replichat.sim.config import Fault, Timing
from replichat.sim.events import EventQueue, Trace


# Enum attributes (.name, .value) are Python-level properties before 3.12: looked up once here,
# not per message (describe runs for every message delivered or dropped).
_TYPE_NAMES = {t: t.name for t in MsgType}
_WITH_PREV = (MsgType.APPEND, MsgType.VOTE, MsgType.PRE_VOTE)
_LOSS, _DUPLICATE, _DELAY = Fault.LOSS.value, Fault.DUPLICATE.value, Fault.DELAY.value


def describe(m: Message) -> str:
    if not isinstance(m, Message):  # a snapshot parcel (replica.py) describes itself
        return m.describe()  # type: ignore[attr-defined]
    text = f"{_TYPE_NAMES[m.type]} {m.src}->{m.dst} t{m.term}"
    if m.type in _WITH_PREV:
        text += f" prev={m.index}/{m.log_term}"
    elif m.index:
        text += f" idx={m.index}"
    entries = m.entries
    if entries:
        text += f" n={len(entries)}"
        if entries[0].index:
            text += f"[{entries[0].index}..{entries[-1].index}]"
    if m.commit:
        text += f" commit={m.commit}"
    if m.reject:
        text += f" REJECT hint={m.reject_hint}/{m.hint_term}"
    if m.context:
        text += f" ctx={m.context.decode(errors='replace')}"
    return text


class Network:
    def __init__(
        self,
        rng: random.Random,
        queue: EventQueue,
        timing: Timing,
        trace: Trace,
        faults: Counter[str],
        deliver: Callable[[Message], None],
    ) -> None:
        self._rng = rng
        self._queue = queue
        self._timing = timing
        self._trace = trace
        self._faults = faults
        self._deliver = deliver
        self.blocked: Set[Tuple[int, int]] = set()
        # Probabilities per message, set by the nemesis.
        self.loss = 0.0
        self.duplicate = 0.0
        self.delay = 0.0
        self.sent = 0

    def send(self, m: Message) -> None:
        self.sent += 1
        if (m.src, m.dst) in self.blocked:
            self._trace.event(self._queue.now, f"net cut   {describe(m)}")
            return
        rng = self._rng
        if self.loss and rng.random() < self.loss:
            self._faults[_LOSS] += 1
            self._trace.event(self._queue.now, f"net lost  {describe(m)}")
            return
        copies = 1
        if self.duplicate and rng.random() < self.duplicate:
            self._faults[_DUPLICATE] += 1
            copies = 2
        for _ in range(copies):
            latency = rng.randint(1, self._timing.latency)
            if self.delay and rng.random() < self.delay:
                self._faults[_DELAY] += 1
                latency = rng.randint(self._timing.tick, self._timing.long_delay)
            self._queue.after(latency, lambda: self._arrive(m))

    def _arrive(self, m: Message) -> None:
        if (m.src, m.dst) in self.blocked:
            self._trace.event(self._queue.now, f"net cut   {describe(m)}")
            return
        self._deliver(m)

    # ------------------------------------------------------------- link faults

    def cut(self, links: Iterable[Tuple[int, int]]) -> None:
        self.blocked.update(links)

    def split(self, side: Collection[int], others: Collection[int]) -> None:
        """Cut every link between the two sides, both ways."""
        self.cut((a, b) for a in side for b in others)
        self.cut((b, a) for a in side for b in others)

    def heal(self) -> None:
        self.blocked.clear()

    def calm(self) -> None:
        self.loss = self.duplicate = self.delay = 0.0
