"""Counts client requests by transport, method and outcome, around any ChatBackend: the gRPC
servicer and the wire listener each get their own wrapper, so neither needs to know metrics
exist. The outcome is `ok`, the ChatError's code in lower case (`not_found`, `unavailable`,
...), `cancelled` when the client went away first, or `internal` for anything else."""
import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable, List, TypeVar

from replichat.errors import ChatError
from replichat.metrics.replica_metrics import ReplicaMetrics
from replichat.proto import chat_pb2

T = TypeVar("T")


class CountingBackend:
    def __init__(self, backend: Any, transport: str, metrics: ReplicaMetrics) -> None:
        self._backend = backend
        self._transport = transport
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        """Everything else (status, addresses) is the backend's own."""
        return getattr(self._backend, name)

    async def _counted(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        outcome = "internal"
        try:
            result = await call()
            outcome = "ok"
            return result
        except ChatError as error:
            outcome = error.code.name.lower()
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self._metrics.request_done(self._transport, method, outcome)

    async def create_user(self, request: chat_pb2.CreateUserRequest) -> chat_pb2.CreateUserResponse:
        return await self._counted("create_user", lambda: self._backend.create_user(request))

    async def delete_user(self, request: chat_pb2.DeleteUserRequest) -> chat_pb2.DeleteUserResponse:
        return await self._counted("delete_user", lambda: self._backend.delete_user(request))

    async def list_users(self, pattern: str) -> List[str]:
        return await self._counted("list_users", lambda: self._backend.list_users(pattern))

    async def send_message(self, request: chat_pb2.SendMessageRequest) -> chat_pb2.SendMessageResponse:
        return await self._counted("send_message", lambda: self._backend.send_message(request))

    async def ack(self, request: chat_pb2.AckRequest) -> None:
        return await self._counted("ack", lambda: self._backend.ack(request))

    async def connect(self, request: chat_pb2.ConnectRequest) -> AsyncIterator[chat_pb2.ServerEvent]:
        """Counted once: when the session starts (its first event) or fails to."""
        events = self._backend.connect(request)
        counted = False
        try:
            async for event in events:
                if not counted:
                    counted = True
                    self._metrics.request_done(self._transport, "connect", "ok")
                yield event
        except ChatError as error:
            if not counted:
                counted = True
                self._metrics.request_done(self._transport, "connect", error.code.name.lower())
            raise
        except (asyncio.CancelledError, GeneratorExit):
            if not counted:
                counted = True
                self._metrics.request_done(self._transport, "connect", "cancelled")
            raise
        finally:
            if not counted:
                self._metrics.request_done(self._transport, "connect", "internal")
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
