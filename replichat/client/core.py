"""The transport-neutral client core: a replica ring, failover, and a resumable session.

Both transports (gRPC in `api.py`, the seed's wire protocol in `wire_api.py`) are built from
these pieces, so the rules a user relies on are written once:

- ReplicaRing: the ordered replicas and the current one; a replica that failed us is
  skipped, unless a concurrent request already moved on.
- Failover / call_with_failover: for one logical operation, which replica next, how long to
  pause (growing, capped), and when to give up with one clear UNAVAILABLE error that names
  the replicas tried and the last problem.
- ResumableSession: what a `connect` yields, exactly once: deliveries at or below the last
  yielded seq are dropped (a resume redelivers what was not acknowledged), acks coalesce
  (one in flight; later calls raise the target), and a user deleted while the session was
  resuming ends it the way a live session would (`deleted_on_resume`).
"""
import asyncio
import logging
from typing import Awaitable, Callable, List, Optional, Sequence, TypeVar, Union

from replichat.client.types import DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_DEADLINE, Event
from replichat.errors import ChatError, Code
from replichat.proto import chat_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_BACKOFF = 0.05
MAX_BACKOFF = 0.5


class ReplicaRing:
    """The replicas a client knows, in order, and the one it currently talks to.

    `deadline` bounds one logical operation (and each session resume); `attempt_timeout`
    bounds one try on one replica.
    """

    def __init__(
        self,
        servers: Sequence[str],
        deadline: float = DEFAULT_DEADLINE,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
    ) -> None:
        if isinstance(servers, str):
            raise TypeError("servers must be a sequence of addresses, not one string")
        self.servers: List[str] = list(servers)
        if not self.servers:
            raise ValueError("at least one server address is needed")
        self.deadline = deadline
        self.attempt_timeout = attempt_timeout
        self._current = 0

    @property
    def current(self) -> str:
        return self.servers[self._current]

    def learn(self, addresses: Sequence[str], complete: bool) -> bool:
        """Take the members the cluster reports: add replicas not known yet and, when the list
        is `complete` (every member's address, from a replica that knows a leader), drop those
        no longer members. The current replica stays current if it still is one. Returns
        whether the ring changed."""
        known = [a for a in addresses if a]
        if not known:
            return False
        current = self.current
        if complete:
            servers = [a for a in self.servers if a in known] + [a for a in known if a not in self.servers]
        else:
            servers = self.servers + [a for a in known if a not in self.servers]
        if servers == self.servers:
            return False
        self.servers = servers
        self._current = servers.index(current) if current in servers else 0
        return True

    def rotate_from(self, address: str) -> None:
        """Skips past a failed replica, unless a concurrent request already moved on."""
        if self.servers[self._current] == address:
            self._current = (self._current + 1) % len(self.servers)


class Failover:
    """One logical operation's retry budget across replicas."""

    def __init__(self, ring: ReplicaRing, unavailable: str) -> None:
        """unavailable: how the final error describes the failure, e.g. "could reach a quorum"."""
        self._ring = ring
        self._unavailable = unavailable
        self._loop = asyncio.get_running_loop()
        self._give_up_at = self._loop.time() + ring.deadline
        self._delay = FIRST_BACKOFF
        self._tried: List[str] = []

    def remaining(self) -> float:
        return max(0.05, self._give_up_at - self._loop.time())

    def attempt_timeout(self) -> float:
        return min(self._ring.attempt_timeout, self.remaining())

    async def retry_after(self, address: str, problem: str) -> None:
        """Moves on to the next replica after a brief, growing pause, or raises UNAVAILABLE."""
        log.debug("failing over from %s", problem)
        if address not in self._tried:
            self._tried.append(address)
        self._ring.rotate_from(address)
        remaining = self._give_up_at - self._loop.time()
        if remaining <= 0:
            raise ChatError(
                Code.UNAVAILABLE,
                f"no replica {self._unavailable} within {self._ring.deadline:g}s "
                f"(tried: {', '.join(self._tried)}; last error: {problem})",
            )
        await asyncio.sleep(min(self._delay, remaining))
        self._delay = min(self._delay * 2, MAX_BACKOFF)


class Retry(Exception):
    """Raised by one attempt of call_with_failover: that replica failed us, try the next.

    `address` is the replica that failed (it may differ from the ring's current one when a
    connection was opened elsewhere); `problem` one short clause for the give-up message.
    """

    def __init__(self, address: str, problem: str) -> None:
        super().__init__(problem)
        self.address = address
        self.problem = problem


async def call_with_failover(
    ring: ReplicaRing, unavailable: str, attempt: Callable[[str, float], Awaitable[T]]
) -> T:
    """Runs `attempt(address, timeout)` on the current replica, then the next ones, until it
    returns, raises anything but Retry (a final answer), or the ring's deadline passes."""
    failover = Failover(ring, unavailable)
    while True:
        try:
            return await attempt(ring.current, failover.attempt_timeout())
        except Retry as retry:
            await failover.retry_after(retry.address, retry.problem)


def deleted_on_resume(detail: str) -> chat_pb2.SessionEnded:
    """A session whose user was deleted while it was failing over ends as a live one would."""
    return chat_pb2.SessionEnded(reason=chat_pb2.SessionEnded.USER_DELETED, detail=detail)


class AckCoalescer:
    """Acknowledges "everything up to seq" in the background, one request at a time.

    While one ack is in flight, later calls only raise the target, so a burst of deliveries
    costs a few requests rather than one each. `send(target)` returns False when it could
    not send now (the next ack, or a resume, covers it): an unacked message is only
    redelivered, never lost.
    """

    def __init__(self, send: Callable[[int], Awaitable[bool]]) -> None:
        self._send = send
        self.wanted = 0
        self.done = 0
        self._task: Optional["asyncio.Task[None]"] = None

    def want(self, seq: int) -> None:
        if seq <= self.wanted:
            return
        self.wanted = seq
        self.kick()

    def kick(self) -> None:
        """Starts sending if something is owed and nothing is in flight."""
        if self.done < self.wanted and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self.done < self.wanted:
            target = self.wanted
            if not await self._send(target):
                return
            self.done = max(self.done, target)

    async def flush(self) -> None:
        """Waits until acks asked for so far were sent (or failed)."""
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])


class Stop:
    """Queued after a session's last event: over cleanly (error None) or failed."""

    def __init__(self, error: Optional[ChatError]) -> None:
        self.error = error


class ResumableSession:
    """The reader's side of a `connect`, whatever carries it: an async iterator of Connected,
    Delivery and SessionEnded events that ends after a final SessionEnded, or raises the
    ChatError that ended it.

    Subclasses feed `_events` (Delivery objects through `_is_new`, which drops what was
    already yielded) and implement `_send_ack(target) -> bool`.
    """

    def __init__(self, name: str, session_id: str, queue_size: int = 0) -> None:
        self.name = name
        self.session_id = session_id
        self._events: "asyncio.Queue[Union[Event, Stop]]" = asyncio.Queue(queue_size)
        self._finished = False  # the reader has seen the end
        self._last_seq = 0
        self._acks = AckCoalescer(self._send_ack)
        self.last_ack_error: Optional[ChatError] = None

    # -- iteration -----------------------------------------------------------------

    def __aiter__(self) -> "ResumableSession":
        return self

    async def __anext__(self) -> Event:
        if self._finished:
            raise StopAsyncIteration
        first = self._take_first()
        if first is not None:
            return first
        item = await self._events.get()
        if isinstance(item, Stop):
            self._finished = True
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        self._taken(item)
        return item

    def _take_first(self) -> Optional[Event]:
        """An event to yield before the queue's (the wire session's Connected)."""
        return None

    def _taken(self, item: Event) -> None:
        """The reader took `item` off the queue."""

    def _is_new(self, seq: int) -> bool:
        """True (and remembered) for a delivery not yielded yet; a resume redelivers."""
        if seq <= self._last_seq:
            return False
        self._last_seq = seq
        return True

    # -- acknowledgements ----------------------------------------------------------

    def ack(self, seq: int) -> None:
        """Acknowledges every message up to `seq`, in the background (coalesced)."""
        self._acks.want(seq)

    async def _send_ack(self, target: int) -> bool:
        raise NotImplementedError

    async def flush_acks(self) -> None:
        """Waits until acks asked for so far were sent (or failed)."""
        await self._acks.flush()

    def _ack_failed(self, target: int, error: ChatError) -> bool:
        """Records a refused ack; it is not retried on its own (the next one covers it)."""
        self.last_ack_error = error
        log.debug("ack of %s up to #%d failed: %s", self.name, target, error)
        return False
