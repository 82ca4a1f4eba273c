"""What every simulated component shares: the one random generator, the clock, the trace.

A single `random.Random(seed)` feeds every decision (latencies, faults, client choices, the
cores' own seeds), and components draw from it in event order, which the event queue fixes:
that is the whole reason a seed replays exactly.
"""
import random
from collections import Counter
from typing import Callable, Optional, TextIO

from replichat.sim.config import SimConfig
from replichat.sim.events import EventQueue, Trace
from replichat.runtime.snapshots import NEVER
from replichat.sim.invariants import SafetyChecker
from replichat.runtime.snapshot_policy import SnapshotPolicy


class World:
    def __init__(self, config: SimConfig, trace_sink: Optional[TextIO] = None, keep: int = 0) -> None:
        self.config = config
        self.timing = config.timing
        self.rng = random.Random(config.seed)
        self.queue = EventQueue()
        self.trace = Trace(trace_sink, keep)
        # Faults injected, by kind (Fault values), and other things worth a count.
        self.faults: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.checker = SafetyChecker(tuple(range(1, config.replicas + 1)))
        # How often a leader's messages leave while it persists (rather than after): drawn
        # per run by the simulation.
        self.early_send_chance = 1.0
        # When replicas take snapshots and how much log they keep: drawn per run too.
        self.snapshot_policy: SnapshotPolicy = NEVER
        # Set by the nemesis: how often a snapshot being taken or installed crashes at one of
        # its steps, and whether that crash may be a power loss.
        self.snapshot_crash_chance = 0.0
        self.snapshot_power_loss = False
        # Set once faults stop: clients finish what they started and start nothing new.
        self.draining = False
        # Called with a replica id whenever a replica becomes leader (the nemesis listens).
        self.on_elected: Callable[[int], None] = lambda rid: None
        # Called with a replica id whenever its commit index advanced (workloads listen).
        self.on_commit: Callable[[int], None] = lambda rid: None
        # Called with a replica id and the trap that crashed it (None for a plain crash).
        self.on_down: Callable[[int, Optional[str]], None] = lambda rid, trap: None

    @property
    def now(self) -> int:
        return self.queue.now

    def log(self, text: str) -> None:
        self.trace.event(self.queue.now, text)
