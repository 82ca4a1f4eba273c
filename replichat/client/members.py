"""When a client asks its replica for the cluster's members: one schedule for both clients.

The gRPC and the wire client keep their list of replicas in step with the cluster's
membership (ReplicaRing.learn). Each asks the replica that just answered it: at once after a
connection opens or a failover (the replica it used may have been removed), and otherwise at
most every MEMBERS_REFRESH_S. One question is in flight at a time, and a replica older than
membership changes, which does not know the request, is not asked again. How the question is
put (a gRPC call or a wire frame) is the client's business; this module only decides when.
"""
import asyncio
from typing import Callable, Coroutine, Optional

# How often the members are asked again while nothing fails, and how long an answer may take
# before the question is dropped until the next time. Read when used, so tests can change them.
MEMBERS_REFRESH_S = 2.0
MEMBERS_TIMEOUT_S = 2.0


class MembersRefresh:
    """The members schedule of one client."""

    def __init__(self) -> None:
        self._asked_at: Optional[float] = None
        self._stale = True
        self._supported = True
        self.task: Optional["asyncio.Task[None]"] = None

    def mark_stale(self) -> None:
        """The replica in use failed us: the next one that answers is asked at once."""
        self._stale = True

    def mark_unsupported(self) -> None:
        """A replica answered that it does not know the request: stop asking for good."""
        self._supported = False

    def ask_if_due(self, ask: Callable[[], Coroutine[None, None, None]]) -> None:
        """Starts `ask()` in the background if a question is due and none is in flight."""
        if not self._supported or (self.task is not None and not self.task.done()):
            return
        loop = asyncio.get_running_loop()
        recent = self._asked_at is not None and loop.time() - self._asked_at < MEMBERS_REFRESH_S
        if recent and not self._stale:
            return
        self._stale = False
        self._asked_at = loop.time()
        self.task = loop.create_task(ask())

    async def close(self) -> None:
        """Cancels a question in flight and waits until it has stopped."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task])
