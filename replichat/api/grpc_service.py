"""The gRPC face of a replica: the Chat service plus the standard health and reflection services.

The servicer is deliberately thin: decode, call the ChatBackend, encode. All chat semantics
live behind the backend, so the gRPC and seed-wire transports cannot drift apart. What this
module owns is the mapping of ChatError codes to gRPC status codes, which is the contract
clients retry on (UNAVAILABLE means "try another replica").
"""
import logging
from typing import AsyncIterator, Awaitable, Callable, Dict, List, NoReturn, Optional, Tuple, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from replichat.api.backend import ChatBackend
from replichat.api.decoding import add_chat_servicer
from replichat.api.reflection import enable_server_reflection
from replichat.api.validated import ValidatedBackend
from replichat.chat.limits import MAX_REQUEST_BYTES
from replichat.chat.auth import CLIENT_ADDRESS
from replichat.errors import ChatError, Code
from replichat.proto import chat_pb2, chat_pb2_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")

CHAT_SERVICE_NAME = chat_pb2.DESCRIPTOR.services_by_name["Chat"].full_name

# Answers may be large (a `list` of every user); requests are small and bounded field by
# field (replichat/chat/limits.py): gRPC refuses a larger one before decoding it.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

SERVER_OPTIONS: List[Tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    # Clients hold Connect streams open for hours and ping to detect a dead replica; without
    # these the server answers frequent pings with GOAWAY("too_many_pings").
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    # Our own pings find clients that vanished without closing their streams, so a dead
    # client's session does not linger forever.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # gRPC sets SO_REUSEPORT by default on Linux: a second replica configured with the same
    # port would then start "successfully" and steal half the connections. Fail loudly instead.
    ("grpc.so_reuseport", 0),
]

STATUS_FOR_CODE: Dict[Code, grpc.StatusCode] = {
    Code.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Code.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Code.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    # The request_seq is older than one already applied for this client: retrying cannot help.
    Code.STALE_REQUEST: grpc.StatusCode.FAILED_PRECONDITION,
    Code.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Code.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Code.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
}


def client_host(peer: str) -> str:
    """The address part of grpc's peer string ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000")."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = rest.rpartition(":")[0]
        return host[1:-1] if host.startswith("[") else host
    return peer  # unix sockets and the like: the whole string names the client


def _note_client(context: grpc.aio.ServicerContext) -> None:
    """Tells the backend (rate limits per address) who is asking, for this RPC's task."""
    CLIENT_ADDRESS.set(client_host(context.peer() or ""))


async def _abort(context: grpc.aio.ServicerContext, error: ChatError) -> NoReturn:
    """Ends the RPC with the status the client library maps back to the same ChatError."""
    status = STATUS_FOR_CODE.get(error.code, grpc.StatusCode.UNKNOWN)
    await context.abort(status, error.message)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


async def _abort_internal(context: grpc.aio.ServicerContext, method: str) -> NoReturn:
    """A bug must not leak a Python traceback to clients, but must be loud in the replica's log."""
    log.exception("Chat/%s failed", method)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the replica's log")
    raise AssertionError("context.abort returned")  # pragma: no cover


async def _answer(context: grpc.aio.ServicerContext, method: str, call: Awaitable[T]) -> T:
    """The backend's answer, or the status its ChatError maps to. Anything else is a bug:
    logged with its traceback here, answered INTERNAL (no Python internals sent to clients)."""
    _note_client(context)
    try:
        return await call
    except ChatError as error:
        await _abort(context, error)
    except Exception:
        await _abort_internal(context, method)


# Concurrent Connect streams from one client address (each holds memory on the replica).
DEFAULT_MAX_STREAMS_PER_ADDRESS = 1000


class ChatServicer(chat_pb2_grpc.ChatServicer):
    """Serves replichat.v1.Chat by delegating every call to a ChatBackend."""

    def __init__(self, backend: ChatBackend, max_streams_per_address: int = DEFAULT_MAX_STREAMS_PER_ADDRESS) -> None:
        self._backend = backend
        self._max_streams = max_streams_per_address
        self._streams: Dict[str, int] = {}

    async def CreateUser(
        self, request: chat_pb2.CreateUserRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.CreateUserResponse:
        return await _answer(context, "CreateUser", self._backend.create_user(request))

    async def DeleteUser(
        self, request: chat_pb2.DeleteUserRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.DeleteUserResponse:
        return await _answer(context, "DeleteUser", self._backend.delete_user(request))

    async def ListUsers(
        self, request: chat_pb2.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ListUsersResponse:
        names = await _answer(context, "ListUsers", self._backend.list_users(request.pattern))
        return chat_pb2.ListUsersResponse(names=names)

    async def SendMessage(
        self, request: chat_pb2.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.SendMessageResponse:
        return await _answer(context, "SendMessage", self._backend.send_message(request))

    async def Connect(
        self, request: chat_pb2.ConnectRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.ServerEvent]:
        events: Optional[AsyncIterator[chat_pb2.ServerEvent]] = None
        _note_client(context)
        address = CLIENT_ADDRESS.get()
        if self._streams.get(address, 0) >= self._max_streams:
            await _abort(context, ChatError(
                Code.RATE_LIMITED, f"too many connect streams from {address} (at most {self._max_streams}); close some first"
            ))
        self._streams[address] = self._streams.get(address, 0) + 1
        try:
            events = self._backend.connect(request)
            async for event in events:
                yield event
        except ChatError as error:
            await _abort(context, error)
        except Exception:
            await _abort_internal(context, "Connect")
        finally:
            # The client went away (or we aborted): let the backend unregister the session now
            # rather than whenever the garbage collector finalizes its generator.
            self._streams[address] -= 1
            if not self._streams[address]:
                del self._streams[address]
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    async def Ack(self, request: chat_pb2.AckRequest, context: grpc.aio.ServicerContext) -> chat_pb2.AckResponse:
        await _answer(context, "Ack", self._backend.ack(request))
        return chat_pb2.AckResponse()

    async def Status(
        self, request: chat_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.StatusResponse:
        return await _answer(context, "Status", _now(self._backend.status))

    async def Members(
        self, request: chat_pb2.MembersRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.MembersResponse:
        return await _answer(context, "Members", _now(self._backend.members))

    async def ChangeMembership(
        self, request: chat_pb2.ChangeMembershipRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ChangeMembershipResponse:
        return await _answer(context, "ChangeMembership", self._backend.change_membership(request))


async def _now(fn: Callable[[], T]) -> T:
    return fn()


class _HealthServicer(health.aio.HealthServicer):
    """The library's asyncio health service, reporting SERVING for our services from the start.

    The library's `set` is a coroutine, but the server is assembled synchronously before the
    event loop serves anything and no Watch can be waiting yet, so seeding the table directly
    is equivalent and keeps create_grpc_server a plain function.
    """

    def __init__(self, services: List[str]) -> None:
        super().__init__()
        for service in services:
            self._server_status[service] = health_pb2.HealthCheckResponse.SERVING


def create_grpc_server(
    backend: ChatBackend,
    bind_address: str,
    tls_key_pair: Optional[Tuple[bytes, bytes]] = None,
    max_streams_per_address: int = DEFAULT_MAX_STREAMS_PER_ADDRESS,
) -> Tuple[grpc.aio.Server, int]:
    """Builds (but does not start) a replica's gRPC server; returns it with the bound port.

    Binding happens here, so a busy port fails at once with a clear error instead of after
    the node has started its other parts. (Raft peers do not use gRPC: see transport.py.)
    """
    server = grpc.aio.server(options=SERVER_OPTIONS)
    add_chat_servicer(ChatServicer(ValidatedBackend(backend), max_streams_per_address), server)
    health_pb2_grpc.add_HealthServicer_to_server(_HealthServicer(["", CHAT_SERVICE_NAME]), server)
    enable_server_reflection([CHAT_SERVICE_NAME, health.SERVICE_NAME], server)
    try:
        if tls_key_pair is None:
            port = server.add_insecure_port(bind_address)
        else:  # (PEM key, PEM certificate chain): clients verify us, we do not ask them for one
            port = server.add_secure_port(bind_address, grpc.ssl_server_credentials([tls_key_pair]))
    except RuntimeError as error:  # grpc raises RuntimeError("Failed to bind to address ...")
        raise OSError(f"cannot listen on {bind_address}: {error}") from error
    if port == 0:  # older grpc releases report a failed bind this way
        raise OSError(f"cannot listen on {bind_address}")
    return server, port
