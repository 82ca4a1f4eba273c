"""The narrow interfaces the runtime drives: where the log lives and what applies it.

In the spirit of hashicorp/raft's LogStore and FSM and etcd's Storage: SQLite
(replichat.runtime.storage) and the simulator's disk are interchangeable LogStores; the chat state
(replichat.chat.machine) and anything else that applies committed commands are StateMachines.
"""
from typing import Any, Hashable, List, NamedTuple, Optional, Sequence, Tuple

try:  # Python 3.8 has typing.Protocol
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore

from replichat.raft.messages import Entry, HardState


class LogExtent(NamedTuple):
    """What the durable Raft log holds: entries base_index + 1 .. last_index. Handed to the
    state machine's opener, so it can check (and repair or refuse) its own state against it."""

    base_index: int
    last_index: int
    # The recorded snapshot (storage.SnapshotMeta) the state can be restored from, if any.
    snapshot: Optional[Any] = None


class LogStore(Protocol):
    def load(self) -> Tuple[HardState, List[Entry]]:
        """Everything durable: the hard state and the log from index 1, in order."""

    def save(self, hard_state: Optional[HardState], entries: Sequence[Entry]) -> Any:
        """Durably (fsynced, atomically) store `entries`, replacing any log suffix from the
        first one on, and the hard state if given. Returns once durable."""

    def close(self) -> None:
        ...


class StateMachine(Protocol):
    @property
    def last_applied(self) -> int:
        """The index of the last entry applied (durably: survives a process crash)."""

    def apply_batch(self, items: Sequence[Tuple[int, bytes]]) -> List[Any]:
        """Apply consecutive committed entries (index, command bytes; b"" is a Raft no-op)
        atomically; one result per entry, in order. Raises before changing anything if the
        indexes do not continue from last_applied."""

    def request_key(self, result: Any) -> Optional[Hashable]:
        """The proposer's key of an applied result (what `Driver.propose` was given), or None
        (a no-op, or a command nobody waits for by key): how an answer finds its waiter."""

    def close(self) -> None:
        ...
