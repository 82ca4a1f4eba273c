"""The chat service: api.backend.ChatBackend on top of the Raft runtime.

Validation, the log's command format (command_pb2.Command, stamped with the proposer's clock),
connect sessions and their subscribers, and delivery polling live here; the runtime below
(replichat.runtime.node) moves opaque bytes and knows nothing of chat. Reads of the chat state
go through their own read-only connection: they see applied batches only, so they never race
an apply on either thread.
"""
import asyncio
import collections
import concurrent.futures
import itertools
import time
import uuid
from typing import TYPE_CHECKING, AsyncIterator, Dict, List, Optional, Set, Tuple

from replichat.chat.auth import Account, Authenticator, AuthLimits
from replichat.chat.machine import command_key
from replichat.chat.names import normalize_name, quote, validate_text
from replichat.chat.search import compile_pattern, scan
from replichat.chat.state import Applied, ChatStateReader, MessageQueued
from replichat.errors import ChatError, Code
from replichat.metrics.observer import RuntimeObserver
from replichat.proto import chat_pb2, command_pb2
from replichat.runtime.node import Node

if TYPE_CHECKING:
    from replichat.server.membership_admin import MembershipAdmin

_RESULT_ERRORS = {
    command_pb2.CommandResult.INVALID_ARGUMENT: Code.INVALID_ARGUMENT,
    command_pb2.CommandResult.ALREADY_EXISTS: Code.ALREADY_EXISTS,
    command_pb2.CommandResult.NOT_FOUND: Code.NOT_FOUND,
    command_pb2.CommandResult.STALE_REQUEST: Code.STALE_REQUEST,
    command_pb2.CommandResult.UNAUTHENTICATED: Code.UNAUTHENTICATED,
}
# Deliveries read from the state per wake-up of a connect stream.
STREAM_BATCH = 256
# `list` requests queued or running per replica (each may take up to search.SCAN_BUDGET_S).
MAX_PENDING_SEARCHES = 8


class _Subscriber:
    """A connect stream waiting for its user's mailbox or session to change."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()


class ChatService:
    def __init__(self, node: Node, state_path: str, address: str = "", auth_enabled: bool = True,
                 auth_limits: AuthLimits = AuthLimits()) -> None:
        """`node` applies the log to a ChatMachine on `state_path` (see chat.machine);
        `address`: this replica's gRPC address, for status. `auth_enabled` is False only with
        --insecure-no-auth (the brief's open service); `auth_limits`: chat/auth.py."""
        self.node = node
        self.id = node.id
        self.address = address
        self.wire_address = ""
        # Members and ChangeMembership (replichat/server/membership_admin.py), set by the replica.
        self.admin: Optional["MembershipAdmin"] = None
        self._state_path = state_path
        self._instance = uuid.uuid4().hex
        self._request_numbers = itertools.count(1)
        self._subscribers: Dict[str, Set[_Subscriber]] = collections.defaultdict(set)
        self._reader: Optional[ChatStateReader] = None
        self._stopping = False
        self._search = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"list-{node.id}")
        self._searches = 0
        node.add_apply_hook(self._after_apply)
        self._auth = Authenticator(self._account_of, self._catch_up, enabled=auth_enabled, limits=auth_limits)

    @property
    def observer(self) -> RuntimeObserver:
        """Metrics (--metrics) watch the runtime and the sessions through the node's observer."""
        return self.node.observer

    @observer.setter
    def observer(self, observer: RuntimeObserver) -> None:
        self.node.observer = observer

    async def start(self) -> None:
        self.node.add_install_hook(self._state_replaced)
        await self.node.start()
        self._reader = ChatStateReader(self._state_path)

    def _state_replaced(self) -> None:
        """A snapshot from the leader replaced state.db: read the new file, and let every
        connect stream look at its mailbox again."""
        old, self._reader = self._reader, ChatStateReader(self._state_path)
        if old is not None:
            old.close()
        for subscribers in self._subscribers.values():
            for subscriber in subscribers:
                subscriber.changed.set()

    async def stop(self, transfer_leadership: bool = True) -> None:
        """Hand over leadership (a leader), end every connect stream, stop the node."""
        if self._stopping:
            return
        if transfer_leadership:
            await self.node.hand_over_leadership()
        self._stopping = True
        for subscribers in self._subscribers.values():
            for subscriber in subscribers:
                subscriber.changed.set()
        await self.node.stop(transfer_leadership=False)
        self._search.shutdown()
        if self._reader is not None:
            self._reader.close()
        self._auth.close()

    def _after_apply(self, applied: List[Applied]) -> None:
        for item in applied:
            for event in item.events:
                user = event.delivery.recipient if isinstance(event, MessageQueued) else event.user
                for subscriber in self._subscribers.get(user, ()):
                    subscriber.changed.set()

    # ----------------------------------------------------------------- writes

    async def _replicate(self, command: command_pb2.Command) -> Applied:
        """Propose a command and wait until this replica has applied it (the runtime proposes
        it again on a leader change and on retry: the client id and request number make a
        repeated command a no-op); fails with UNAVAILABLE after the request timeout."""
        if self._stopping:
            raise ChatError(Code.UNAVAILABLE, f"replica {self.id} is shutting down")
        request = getattr(command, command.WhichOneof("op"))
        if not request.client_id:
            # No client identity: give it one so the answer can find its way back here.
            request.client_id = f"{self._instance}-anon"
            request.request_seq = next(self._request_numbers)
        command.timestamp_ms = int(time.time() * 1000)
        applied: Applied = await self.node.propose(command_key(command), command.SerializeToString())
        return applied

    async def _write(self, command: command_pb2.Command) -> command_pb2.CommandResult:
        applied = await self._replicate(command)
        result = applied.result
        assert result is not None
        if result.code != command_pb2.CommandResult.OK:
            raise ChatError(_RESULT_ERRORS[result.code], result.error)
        return result

    # ----------------------------------------------------------------- credentials

    def _account_of(self, name: str) -> Optional[Account]:
        assert self._reader is not None
        account = self._reader.account_of(name)
        return None if account is None else Account(*account)

    async def _catch_up(self) -> None:
        await self.node.read_index()  # returns once this replica applied the read index

    async def _stamped(self, command: command_pb2.Command, name: str, token: str, action: str) -> command_pb2.Command:
        """`command` (whose request no longer holds `token`) with its verified principal."""
        await self._auth.stamp(command, name, token, action)
        return command

    # ----------------------------------------------------------------- ChatBackend
    # Each request's credential is taken out before the command is built: it is checked
    # here (chat/auth.py) and never enters the log.

    async def create_user(self, request: chat_pb2.CreateUserRequest) -> chat_pb2.CreateUserResponse:
        request.name = normalize_name(request.name)
        token, request.credential = request.credential, ""
        credential_hash = await self._auth.new_credential(token)
        result = await self._write(command_pb2.Command(create=request, credential_hash=credential_hash))
        self._auth.created(result.name, token, credential_hash)
        return chat_pb2.CreateUserResponse(name=result.name)

    async def delete_user(self, request: chat_pb2.DeleteUserRequest) -> chat_pb2.DeleteUserResponse:
        name = request.name = normalize_name(request.name)
        token, request.credential = request.credential, ""
        command = await self._stamped(command_pb2.Command(delete=request), name, token, f"delete {name}")
        result = await self._write(command)
        return chat_pb2.DeleteUserResponse(dropped_messages=result.count)

    async def send_message(self, request: chat_pb2.SendMessageRequest) -> chat_pb2.SendMessageResponse:
        request.recipient = normalize_name(request.recipient)
        if request.sender:
            request.sender = normalize_name(request.sender)
        validate_text(request.text)
        token, request.credential = request.credential, ""
        command = command_pb2.Command(send=request)
        if request.sender:
            await self._stamped(command, request.sender, token, f"send as {request.sender}")
        # No sender: an anonymous message, delivered with an empty sender, which every client
        # shows as "(anonymous)" (a name cannot contain parentheses, so nobody can pose as it).
        result = await self._write(command)
        return chat_pb2.SendMessageResponse(seq=result.seq)

    async def ack(self, request: chat_pb2.AckRequest) -> None:
        name = request.name = normalize_name(request.name)
        token, request.credential = request.credential, ""
        command = await self._stamped(command_pb2.Command(ack=request), name, token, f"ack for {name}")
        await self._check_current_session(name, request.session_id)
        await self._write(command)

    async def authenticate(self, name: str, credential: str) -> str:
        name = normalize_name(name)
        if await self._auth.authenticate(name, credential, f"auth {name}") is None:
            raise ChatError(Code.NOT_FOUND, f"no such user {quote(name)}")
        return name

    async def _check_current_session(self, name: str, session_id: str) -> None:
        """An ack must name the session its user's connect opened (the newest)."""
        assert self._reader is not None
        if self._reader.session_of(name) == session_id:
            return
        await self._catch_up()  # the connect may have been applied elsewhere a moment ago
        current = self._reader.session_of(name)
        if current is None:
            raise ChatError(Code.NOT_FOUND, f"no such user {quote(name)}")
        if current != session_id:
            raise ChatError(
                Code.INVALID_ARGUMENT,
                f"ack for {name} names session {quote(session_id)}, not {name}'s current session",
            )

    async def list_users(self, pattern: str) -> List[str]:
        matcher = compile_pattern(pattern)  # a bad pattern fails before any cluster work
        await self.node.read_index()  # returns once this replica applied the read index
        assert self._reader is not None
        # Off the loop: the user table may be large. (The reader connection is safe to share:
        # SQLite serializes its use, and it holds no transaction between statements.)
        # Reading the names and matching them run on their own thread, with a time budget
        # (chat/search.py): a costly pattern delays neither the loop nor applying the log.
        if self._searches >= MAX_PENDING_SEARCHES:
            raise ChatError(Code.RATE_LIMITED, "too many list requests in progress on this replica; try again shortly")
        self._searches += 1
        reader = self._reader
        try:
            return await asyncio.get_event_loop().run_in_executor(self._search, lambda: scan(reader.names(), matcher))
        finally:
            self._searches -= 1

    async def connect(self, request: chat_pb2.ConnectRequest) -> AsyncIterator[chat_pb2.ServerEvent]:
        name = request.name = normalize_name(request.name)
        if not request.session_id:
            request.session_id = uuid.uuid4().hex
        token, request.credential = request.credential, ""
        command = await self._stamped(command_pb2.Command(connect=request), name, token, f"connect {name}")
        subscriber = _Subscriber()
        self._subscribers[name].add(subscriber)
        opened = False
        try:
            result = await self._write(command)
            self.observer.session_opened()
            opened = True
            yield chat_pb2.ServerEvent(connected=chat_pb2.Connected(name=name, queued=result.count))
            last_seq = 0
            while True:
                subscriber.changed.clear()
                if self._stopping:
                    yield _ended(chat_pb2.SessionEnded.SHUTDOWN, f"replica {self.id} is shutting down; reconnect elsewhere")
                    return
                session, deliveries = self._poll_mailbox(name, last_seq)
                for delivery in deliveries:
                    yield chat_pb2.ServerEvent(message=delivery)
                    last_seq = delivery.seq
                    self.observer.delivered(1)
                if session is None:
                    yield _ended(chat_pb2.SessionEnded.USER_DELETED, f"user {name} was deleted")
                    return
                if session != request.session_id:
                    yield _ended(chat_pb2.SessionEnded.TAKEN_OVER, f"a newer connect for {name} took over this session")
                    return
                if len(deliveries) < STREAM_BATCH:
                    await subscriber.changed.wait()
        finally:
            if opened:
                self.observer.session_closed()
            self._subscribers[name].discard(subscriber)
            if not self._subscribers[name]:
                del self._subscribers[name]

    def _poll_mailbox(self, name: str, after_seq: int) -> Tuple[Optional[str], List[chat_pb2.Delivery]]:
        """The user's session (None: user gone) and the next deliveries, as last applied."""
        reader = self._reader
        assert reader is not None
        if not reader.user_exists(name):
            return None, []
        return reader.session_of(name) or "", reader.pending(name, after_seq, STREAM_BATCH)

    def members(self) -> chat_pb2.MembersResponse:
        if self.admin is None:
            raise ChatError(Code.UNAVAILABLE, f"replica {self.id} serves no membership view")
        return self.admin.members()

    async def change_membership(self, request: chat_pb2.ChangeMembershipRequest) -> chat_pb2.ChangeMembershipResponse:
        if self.admin is None:
            raise ChatError(Code.PERMISSION_DENIED, f"replica {self.id} takes no membership changes")
        return await self.admin.change_membership(request)

    def status(self) -> chat_pb2.StatusResponse:
        status = self.node.status()
        return chat_pb2.StatusResponse(
            id=status.id,
            role=status.role,
            term=status.term,
            leader_id=status.leader_id,
            commit_index=status.commit_index,
            applied_index=status.applied_index,
            last_index=status.last_index,
            peers=[chat_pb2.PeerProgress(id=p.id, match_index=p.match_index, next_index=p.next_index) for p in status.peers],
            address=self.address,
            wire_address=self.wire_address,
            first_index=status.first_index,
            snapshot_index=status.snapshot_index,
        )


def _ended(reason: "chat_pb2.SessionEnded.Reason", detail: str) -> chat_pb2.ServerEvent:
    return chat_pb2.ServerEvent(ended=chat_pb2.SessionEnded(reason=reason, detail=detail))
