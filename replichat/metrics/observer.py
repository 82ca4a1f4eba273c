"""The hook the replica runtime calls as it works. The runtime knows only this interface; the
default does nothing, so a replica started without --metrics pays one no-op call per event.

Kept free of prometheus_client so the runtime (and the simulator) never import it."""
from typing import Any, Sequence


class RuntimeObserver:
    """Every method is called on the replica's event loop and must return at once."""

    def persisted(self, seconds: float, entries: int) -> None:
        """The log and hard state were fsynced: how long it took, how many entries."""

    def applied(self, seconds: float, results: Sequence[Any]) -> None:
        """A batch of committed entries was applied to the state machine."""

    def proposed(self, count: int) -> None:
        """This replica handed `count` proposals to its Raft core."""

    def write_committed(self, seconds: float) -> None:
        """A write proposed here was committed and applied, `seconds` after its proposal."""

    def raft_state(self, role: str, term: int, leader: int) -> None:
        """The core's role, term and known leader after a step (called often: compare cheaply)."""

    def session_opened(self) -> None:
        """A `connect` session started streaming (either transport)."""

    def session_closed(self) -> None:
        """A `connect` session ended."""

    def delivered(self, count: int) -> None:
        """`count` messages were pushed to a connected session."""

    def snapshot_taken(self, seconds: float, size_bytes: int) -> None:
        """This replica wrote a snapshot of its applied state (how long it took, its size)."""

    def snapshot_installed(self, seconds: float, size_bytes: int) -> None:
        """This replica installed a snapshot received from the leader."""


NO_OBSERVER = RuntimeObserver()
