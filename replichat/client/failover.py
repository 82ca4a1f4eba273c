"""Failover bookkeeping shared by the gRPC and wire clients: for one logical operation,
which replica next, how long to pause, and when to give up with a clear error."""
import asyncio
import logging
from typing import List

try:  # Python 3.8 has typing.Protocol
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore

from replichat.errors import ChatError, Code

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.05
MAX_BACKOFF = 0.5


class Rotating(Protocol):
    """A client with an ordered list of replicas and a current one."""

    deadline: float
    attempt_timeout: float

    def _rotate_from(self, address: str) -> None:
        """Make the replica after `address` the current one."""


class Failover:
    def __init__(self, owner: Rotating, unavailable: str) -> None:
        """unavailable: how the final error describes the failure, e.g. "could reach a quorum"."""
        self._owner = owner
        self._unavailable = unavailable
        self._loop = asyncio.get_running_loop()
        self._give_up_at = self._loop.time() + owner.deadline
        self._delay = FIRST_BACKOFF
        self._tried: List[str] = []

    def remaining(self) -> float:
        return max(0.05, self._give_up_at - self._loop.time())

    def attempt_timeout(self) -> float:
        return min(self._owner.attempt_timeout, self.remaining())

    async def retry_after(self, address: str, problem: str) -> None:
        """Moves on to the next replica after a brief, growing pause, or raises UNAVAILABLE."""
        log.debug("failing over from %s", problem)
        if address not in self._tried:
            self._tried.append(address)
        self._owner._rotate_from(address)
        remaining = self._give_up_at - self._loop.time()
        if remaining <= 0:
            raise ChatError(
                Code.UNAVAILABLE,
                f"no replica {self._unavailable} within {self._owner.deadline:g}s "
                f"(tried: {', '.join(self._tried)}; last error: {problem})",
            )
        await asyncio.sleep(min(self._delay, remaining))
        self._delay = min(self._delay * 2, MAX_BACKOFF)
