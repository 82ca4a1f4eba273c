"""What a client transport (gRPC or the seed wire protocol) needs from a replica.

Both transports are thin: they decode a request, call one of these methods, and encode the
answer or the ChatError it raised. The replica's ChatService (replichat.chat.service) implements this; tests may fake it.
"""
from typing import AsyncIterator, List

try:  # Python 3.8 has typing.Protocol
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore

from replichat.proto import chat_pb2


class ChatBackend(Protocol):
    async def create_user(self, request: chat_pb2.CreateUserRequest) -> chat_pb2.CreateUserResponse:
        """Raises ChatError(ALREADY_EXISTS | INVALID_ARGUMENT | UNAVAILABLE)."""

    async def delete_user(self, request: chat_pb2.DeleteUserRequest) -> chat_pb2.DeleteUserResponse:
        """Raises ChatError(NOT_FOUND | INVALID_ARGUMENT | UNAVAILABLE)."""

    async def list_users(self, pattern: str) -> List[str]:
        """Linearizable; search semantics (like grep); empty pattern lists everyone, sorted."""

    async def send_message(self, request: chat_pb2.SendMessageRequest) -> chat_pb2.SendMessageResponse:
        """Returns once the message is committed on a majority (fsynced)."""

    def connect(self, request: chat_pb2.ConnectRequest) -> AsyncIterator[chat_pb2.ServerEvent]:
        """Yields Connected, then every unacknowledged Delivery oldest first, then live ones;
        ends after a SessionEnded event. Raises ChatError before the first event if the user
        does not exist."""

    async def authenticate(self, name: str, credential: str) -> str:
        """The canonical name if `credential` is `name`'s (wire `auth`); raises
        ChatError(UNAUTHENTICATED | RATE_LIMITED | NOT_FOUND)."""

    async def ack(self, request: chat_pb2.AckRequest) -> None:
        """Removes the user's messages with seq <= up_to_seq (a replicated write)."""

    def status(self) -> chat_pb2.StatusResponse:
        """This replica's view: role, term, leader, commit/applied/last index."""

    def members(self) -> chat_pb2.MembersResponse:
        """The configuration in effect as this replica sees it (replichat/server/membership_admin.py)."""

    async def change_membership(self, request: chat_pb2.ChangeMembershipRequest) -> chat_pb2.ChangeMembershipResponse:
        """An admin operation: raises ChatError(PERMISSION_DENIED | INVALID_ARGUMENT | UNAVAILABLE)."""
