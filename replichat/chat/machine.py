"""The chat state as the Raft runtime's state machine (runtime.interfaces.StateMachine).

The runtime moves opaque bytes; this adapter is where they become chat commands: ChatState
applies them, and `request_key` reads back the (client_id, request_seq) a proposer waits by.
"""
import logging
import os
from typing import Hashable, List, Optional, Sequence, Tuple

from replichat.chat.state import Applied, ChatState
from replichat.chat.state_check import LogBounds, SnapshotFile, prepare_state
from replichat.proto.command_pb2 import Command
from replichat.runtime.interfaces import LogExtent

log = logging.getLogger(__name__)


def command_key(command: Optional[Command]) -> Optional[Hashable]:
    """Who waits for a command: (principal, client_id, request_seq), keyed like the state's
    exactly-once table (another user's request with the same ids is a different request).
    None for a no-op or undecodable bytes."""
    if command is None:
        return None
    op = command.WhichOneof("op")
    if op is None:
        return None
    request = getattr(command, op)
    return (command.principal, request.client_id, int(request.request_seq))


def request_key(applied: Applied) -> Optional[Hashable]:
    """The command_key of an applied entry's command."""
    return command_key(applied.command)


class ChatMachine:
    def __init__(self, state: ChatState) -> None:
        self.state = state

    @classmethod
    def open(cls, path: str, log_extent: LogExtent) -> "ChatMachine":
        """Open the chat state at `path`, first checked against what the Raft log holds: a
        damaged state is rebuilt (or restored) or the start refused (CorruptDataError).
        Blocking: the runtime runs it on its state-machine thread."""
        recorded = log_extent.snapshot
        snapshot = None
        if recorded is not None:
            snapshot = SnapshotFile(
                os.path.join(os.path.dirname(path), recorded.file), recorded.index, recorded.size, recorded.checksum
            )
        outcome = prepare_state(path, LogBounds(log_extent.base_index, log_extent.last_index), snapshot)
        if outcome != "ok":
            log.warning("chat state %s: %s", path, outcome)
        return cls(ChatState(path))

    @property
    def last_applied(self) -> int:
        return self.state.last_applied

    def apply_batch(self, items: Sequence[Tuple[int, bytes]]) -> List[Applied]:
        return self.state.apply_batch(items)

    @staticmethod
    def request_key(result: Applied) -> Optional[Hashable]:
        return request_key(result)

    def close(self) -> None:
        self.state.close()
