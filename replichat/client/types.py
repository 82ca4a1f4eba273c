"""What every client transport offers a front end (the CLI): the types, not the machinery.

Kept apart from the transports so that a front end imports no gRPC or wire code to name
them, and so both transports are checked against one definition.
"""
import enum
from typing import FrozenSet, List, Optional, Tuple, Union

try:  # Python 3.8 has typing.Protocol
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore

from replichat.proto import chat_pb2

DEFAULT_DEADLINE = 15.0
DEFAULT_ATTEMPT_TIMEOUT = 5.0
STATUS_TIMEOUT = 2.0

# What a session yields: the payloads of chat_pb2.ServerEvent, whatever the transport.
Event = Union[chat_pb2.Connected, chat_pb2.Delivery, chat_pb2.SessionEnded]
# One row of status_all(): (address, the replica's answer or None, why there is no answer).
ReplicaStatus = Tuple[str, Optional[chat_pb2.StatusResponse], Optional[str]]


class Capability(enum.Enum):
    """Something only some transports can do; a front end asks before offering it."""

    # status_all(): every replica's role, term and indexes (the wire protocol has no request).
    STATUS = "status"


class ChatSession(Protocol):
    """A live `connect`: iterate for events; acknowledge what was shown; close when done."""

    name: str
    session_id: str

    def __aiter__(self) -> "ChatSession":
        ...

    async def __anext__(self) -> Event:
        ...

    def ack(self, seq: int) -> None:
        ...

    async def close(self) -> None:
        ...


class ChatApi(Protocol):
    """What a front end (the CLI) needs from a client transport; gRPC and wire both provide it."""

    capabilities: FrozenSet[Capability]

    async def create(self, name: str) -> str:
        ...

    async def delete(self, name: str) -> int:
        ...

    async def list(self, pattern: str = "") -> List[str]:
        ...

    async def send(self, recipient: str, text: str, sender: str = "") -> int:
        ...

    async def ack(self, name: str, up_to_seq: int, session_id: str) -> None:
        ...

    async def connect(self, name: str) -> ChatSession:
        ...

    async def status_all(self) -> List[ReplicaStatus]:
        ...

    async def close(self) -> None:
        ...
