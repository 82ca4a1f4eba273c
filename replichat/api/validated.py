"""A ChatBackend wrapper that checks every request's bounds (replichat/chat/limits.py) before
the backend sees it: what would be refused later costs nothing now. Both client edges (gRPC
servicer, wire listener) wrap their backend in it."""
from typing import AsyncIterator, List

from replichat.api.backend import ChatBackend
from replichat.chat.limits import FIELD_CHARS, check_request
from replichat.chat.names import quote
from replichat.errors import ChatError, Code
from replichat.proto import chat_pb2


class ValidatedBackend:
    def __init__(self, backend: ChatBackend) -> None:
        self._backend = backend

    @property
    def inner(self) -> ChatBackend:
        return self._backend

    def __getattr__(self, name: str) -> object:
        # Anything else the backend offers (say, a method a newer API adds) passes through;
        # a request-carrying method must get its own checked wrapper above.
        return getattr(self._backend, name)

    async def create_user(self, request: chat_pb2.CreateUserRequest) -> chat_pb2.CreateUserResponse:
        check_request(request)
        return await self._backend.create_user(request)

    async def delete_user(self, request: chat_pb2.DeleteUserRequest) -> chat_pb2.DeleteUserResponse:
        check_request(request)
        return await self._backend.delete_user(request)

    async def list_users(self, pattern: str) -> List[str]:
        if len(pattern) > FIELD_CHARS["pattern"]:
            raise ChatError(
                Code.INVALID_ARGUMENT,
                f"invalid pattern {quote(pattern)}: {len(pattern)} characters, at most {FIELD_CHARS['pattern']}",
            )
        return await self._backend.list_users(pattern)

    async def send_message(self, request: chat_pb2.SendMessageRequest) -> chat_pb2.SendMessageResponse:
        check_request(request)
        return await self._backend.send_message(request)

    async def connect(self, request: chat_pb2.ConnectRequest) -> AsyncIterator[chat_pb2.ServerEvent]:
        check_request(request)
        events = self._backend.connect(request)
        try:
            async for event in events:
                yield event
        finally:
            # Closed with us, not when collected: the backend unregisters the session now.
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    async def ack(self, request: chat_pb2.AckRequest) -> None:
        check_request(request)
        await self._backend.ack(request)

    def status(self) -> chat_pb2.StatusResponse:
        return self._backend.status()
