"""An in-memory stand-in for the replicated chat service, for testing the transports.

FakeCluster holds the "replicated" state (users, mailboxes, the per-client last answer);
each FakeReplica is one replica's ChatBackend over it, which a test can make unavailable,
make lose its answers after applying, or shut down. Every replica records the requests it
received, so tests can assert on what a client actually sent (e.g. the same request_seq
on a retry).
"""
import asyncio
import contextlib
import re
import time
from typing import Any, AsyncIterator, Callable, Coroutine, Dict, List, Optional, Tuple, TypeVar

import grpc

from replichat.api.grpc_service import create_grpc_server
from replichat.errors import ChatError, Code
from replichat.proto import chat_pb2

T = TypeVar("T")

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class _Live:
    """One open Connect stream: where live events for its user go."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.queue: "asyncio.Queue[Optional[chat_pb2.ServerEvent]]" = asyncio.Queue()

    def end(self, reason: "chat_pb2.SessionEnded.Reason", detail: str = "") -> None:
        ended = chat_pb2.SessionEnded(reason=reason, detail=detail)
        self.queue.put_nowait(chat_pb2.ServerEvent(ended=ended))

    def drop(self) -> None:
        """Ends the stream without an event: the session resumed on another stream."""
        self.queue.put_nowait(None)


class _User:
    def __init__(self) -> None:
        self.mailbox: List[chat_pb2.Delivery] = []
        self.next_seq = 1
        self.live: Optional[_Live] = None


class FakeCluster:
    """The state every fake replica shares, as if replicated; writes deduplicated per client."""

    def __init__(self) -> None:
        self.users: Dict[str, _User] = {}
        # client_id -> (request_seq, answer or the ChatError it raised): a single slot, like
        # the real state machine, so a client that interleaves requests gets STALE_REQUEST.
        self.answers: Dict[str, Tuple[int, object]] = {}
        self.applied: List[Tuple[str, str, int]] = []  # (op, client_id, request_seq)
        self.session_closed = asyncio.Event()  # set whenever a Connect stream ends

    def write(self, op: str, client_id: str, request_seq: int, apply: Callable[[], T]) -> T:
        if client_id:
            last = self.answers.get(client_id)
            if last is not None and request_seq == last[0]:
                return self._replay(last[1])
            if last is not None and request_seq < last[0]:
                raise ChatError(Code.STALE_REQUEST, f"request {request_seq} of {client_id} is stale")
        try:
            answer: object = apply()
        except ChatError as error:
            answer = error
        self.applied.append((op, client_id, request_seq))
        if client_id:
            self.answers[client_id] = (request_seq, answer)
        return self._replay(answer)

    @staticmethod
    def _replay(answer: object) -> T:  # type: ignore[type-var]
        if isinstance(answer, ChatError):
            raise answer
        return answer  # type: ignore[return-value]

    def user(self, name: str) -> _User:
        user = self.users.get(name)
        if user is None:
            raise ChatError(Code.NOT_FOUND, f"no such user: {name}")
        return user


class FakeReplica:
    """One replica's ChatBackend over a FakeCluster, with knobs for failure tests."""

    def __init__(self, cluster: FakeCluster, replica_id: int = 1) -> None:
        self.cluster = cluster
        self.replica_id = replica_id
        self.available = True
        self.lose_answers = 0  # apply the next N writes, then answer UNAVAILABLE anyway
        self.crash_on: Optional[str] = None  # raise a plain exception in this method
        self.seen: List[Tuple[str, str, int]] = []  # (op, client_id, request_seq) received
        self.connects: List[chat_pb2.ConnectRequest] = []
        self.acks: List[chat_pb2.AckRequest] = []
        self._streams: List[_Live] = []

    def _check(self, op: str, client_id: str = "", request_seq: int = 0) -> None:
        self.seen.append((op, client_id, request_seq))
        if self.crash_on == op:
            raise RuntimeError(f"bug in {op}")
        if not self.available:
            raise ChatError(Code.UNAVAILABLE, f"replica {self.replica_id} cannot reach a quorum")

    def _write(self, op: str, client_id: str, request_seq: int, apply: Callable[[], T]) -> T:
        self._check(op, client_id, request_seq)
        answer = self.cluster.write(op, client_id, request_seq, apply)
        if self.lose_answers > 0:
            self.lose_answers -= 1
            raise ChatError(Code.UNAVAILABLE, f"replica {self.replica_id} lost its leader")
        return answer

    def shutdown_streams(self) -> None:
        """What a stopping replica does: tell its clients to resume elsewhere."""
        for live in list(self._streams):
            live.end(chat_pb2.SessionEnded.SHUTDOWN, "replica stopping")

    # -- ChatBackend -----------------------------------------------------------------

    async def create_user(self, request: chat_pb2.CreateUserRequest) -> chat_pb2.CreateUserResponse:
        def apply() -> chat_pb2.CreateUserResponse:
            if not _NAME.fullmatch(request.name):
                raise ChatError(Code.INVALID_ARGUMENT, f"invalid user name {request.name!r}")
            if request.name in self.cluster.users:
                raise ChatError(Code.ALREADY_EXISTS, f"user {request.name} already exists")
            self.cluster.users[request.name] = _User()
            return chat_pb2.CreateUserResponse(name=request.name)

        return self._write("create", request.client_id, request.request_seq, apply)

    async def delete_user(self, request: chat_pb2.DeleteUserRequest) -> chat_pb2.DeleteUserResponse:
        def apply() -> chat_pb2.DeleteUserResponse:
            user = self.cluster.user(request.name)
            del self.cluster.users[request.name]
            if user.live is not None:
                user.live.end(chat_pb2.SessionEnded.USER_DELETED, f"user {request.name} was deleted")
            return chat_pb2.DeleteUserResponse(dropped_messages=len(user.mailbox))

        return self._write("delete", request.client_id, request.request_seq, apply)

    async def list_users(self, pattern: str) -> List[str]:
        self._check("list")
        try:
            regex = re.compile(pattern)
        except re.error as error:
            raise ChatError(Code.INVALID_ARGUMENT, f"bad pattern: {error}") from None
        return sorted(name for name in self.cluster.users if regex.search(name))

    async def send_message(self, request: chat_pb2.SendMessageRequest) -> chat_pb2.SendMessageResponse:
        def apply() -> chat_pb2.SendMessageResponse:
            user = self.cluster.user(request.recipient)
            delivery = chat_pb2.Delivery(
                recipient=request.recipient,
                seq=user.next_seq,
                sender=request.sender,
                text=request.text,
                sent_at_ms=int(time.time() * 1000),
            )
            user.next_seq += 1
            user.mailbox.append(delivery)
            if user.live is not None:
                user.live.queue.put_nowait(chat_pb2.ServerEvent(message=delivery))
            return chat_pb2.SendMessageResponse(seq=delivery.seq)

        return self._write("send", request.client_id, request.request_seq, apply)

    async def ack(self, request: chat_pb2.AckRequest) -> None:
        def apply() -> None:
            user = self.cluster.user(request.name)
            user.mailbox = [d for d in user.mailbox if d.seq > request.up_to_seq]

        self.acks.append(request)
        self._write("ack", request.client_id, request.request_seq, apply)

    def connect(self, request: chat_pb2.ConnectRequest) -> AsyncIterator[chat_pb2.ServerEvent]:
        return self._connect(request)

    async def _connect(self, request: chat_pb2.ConnectRequest) -> AsyncIterator[chat_pb2.ServerEvent]:
        self.connects.append(request)
        live = _Live(request.session_id)

        def apply() -> None:
            user = self.cluster.user(request.name)
            if user.live is not None:
                if user.live.session_id == request.session_id:
                    user.live.drop()
                else:
                    user.live.end(chat_pb2.SessionEnded.TAKEN_OVER, "a newer connect took over")

        self._write("connect", request.client_id, request.request_seq, apply)
        # Registration and the backlog snapshot happen with no await between them, so no
        # message can fall between "queued" and "live".
        user = self.cluster.user(request.name)
        user.live = live
        backlog = list(user.mailbox)
        self._streams.append(live)
        try:
            yield chat_pb2.ServerEvent(connected=chat_pb2.Connected(name=request.name, queued=len(backlog)))
            last = 0
            for delivery in backlog:
                last = delivery.seq
                yield chat_pb2.ServerEvent(message=delivery)
            while True:
                event = await live.queue.get()
                if event is None:
                    return
                if event.WhichOneof("event") == "message" and event.message.seq <= last:
                    continue
                yield event
                if event.WhichOneof("event") == "ended":
                    return
        finally:
            self._streams.remove(live)
            current = self.cluster.users.get(request.name)
            if current is not None and current.live is live:
                current.live = None
            self.cluster.session_closed.set()

    def status(self) -> chat_pb2.StatusResponse:
        if self.crash_on == "status":
            raise RuntimeError("bug in status")
        index = len(self.cluster.applied)
        return chat_pb2.StatusResponse(
            id=self.replica_id,
            role="leader" if self.replica_id == 1 else "follower",
            term=3,
            leader_id=1,
            commit_index=index,
            applied_index=index,
            last_index=index,
        )


@contextlib.asynccontextmanager
async def serving(backend: FakeReplica) -> AsyncIterator[Tuple[grpc.aio.Server, str]]:
    """A started gRPC server for `backend` on a free loopback port; stopped on exit."""
    server, port = create_grpc_server(backend, "127.0.0.1:0")
    await server.start()
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Runs one test scenario on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
