"""The ChatApi over the seed's wire protocol, failing over between replicas.

The gRPC ChatClient fails over transparently because every write carries its own
(client_id, request_seq): a write retried on another replica is applied once. The wire
protocol has no such key that survives a connection: the listener gives each connection a
fresh client id and numbers its requests itself (docs/wire-protocol.md, "Sessions"). So this
client is transparent where that is safe and honest where it is not:

- One connection at a time, to the first replica that accepts; when it is lost, stalls, or
  its replica answers `unavailable`, the next request goes to the next replica.
- A write (create, delete, send) whose connection dies or stays silent before its answer, or
  whose replica answers `unavailable` (it gave up waiting for a quorum, but the entry may
  still commit), is reported as UNAVAILABLE "may or may not have been applied" and never
  retried: over a new connection it would be a new request, and could be applied twice. A
  write that provably never left (its connection was already closed) goes to the next replica.
- Reads (list), `connect` and acks are retried on the next replica: repeating them changes
  nothing (an ack removes "everything up to seq"; a connect makes this connection the
  user's session, as the lost one was).
- A live session is resumed on the new connection by `connect`ing its user again; deliveries
  at or below the last one yielded are dropped, and acks that did not land are re-sent, so each
  message is shown once. That `connect` also makes the user the connection's sender again.
- The sender of `send` is whom the connection last created or connected as (the listener's
  rule). A user who was only created cannot be made the sender of a new connection without a
  `connect`, which would take over that user's live session wherever it is; such a send is
  refused with a message saying so, rather than sent anonymously.
- Pushed frames carry no session marker, so a connection that has hosted one session never
  hosts another: a later `connect` opens a new connection, and a stale push of the previous
  session (its `ended`, say) can never end the new one.
- The replicas it fails over across follow the cluster's membership: after a connection opens,
  at once after a failover, and otherwise at most every MEMBERS_REFRESH_S (client/members.py),
  it asks its replica for the members (`members`, docs/wire-protocol.md) and adds those with a
  wire address to its ring; a complete answer (a leader known, every member's wire address)
  also drops replicas that are no longer members. So a client started with the old `--servers` keeps working after replicas
  were added and the old ones removed. A replica older than `members` is not asked again.
- `status` has no wire equivalent: status_all() says so for every replica.
"""
import asyncio
import logging
import unicodedata
import uuid
from typing import Awaitable, Callable, FrozenSet, List, Optional, Sequence, Set, Tuple, TypeVar

from replichat.chat.credentials import new_token
from replichat.client.credentials import PROCESS_CREDENTIALS, CredentialStore
from replichat.client.core import Failover, ReplicaRing, ResumableSession, Retry, Stop, call_with_failover, deleted_on_resume
from replichat.client.members import MEMBERS_TIMEOUT_S, MembersRefresh
from replichat.client.types import DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_DEADLINE, Capability, Event, ReplicaStatus
from replichat.errors import ChatError, Code
from replichat.proto import chat_pb2
from replichat.wire import codec
from replichat.security.tls import client_context
from replichat.wire.client import WireClient
from replichat.wire.codec import WireError

log = logging.getLogger(__name__)

# What status_all() reports per replica: the wire protocol has no status request.
STATUS_NOT_OVER_WIRE = "status is only available over gRPC"
# The end of every error about a write whose outcome this client cannot know.
MAYBE_APPLIED = "the request may or may not have been applied"
# How often an otherwise quiet connection is pinged. A replica that vanished without closing
# the connection (stopped, partitioned) answers nothing; noticing that is what moves a waiting
# session to another replica. Well below the listener's 300 s idle timeout as well.
KEEPALIVE_INTERVAL = 10.0

_T = TypeVar("_T")

# The `ended` reasons after which a session is over for good; any other reason (shutdown,
# unspecified: e.g. the replica lost its quorum) is about that replica, so the session resumes
# on another one.
_FINAL_REASONS = {
    "taken_over": chat_pb2.SessionEnded.TAKEN_OVER,
    "user_deleted": chat_pb2.SessionEnded.USER_DELETED,
}
# A connection's failures as WireClient reports them: a broken or closed socket, bytes that
# are not the protocol, or the server's parting `error` frame (e.g. too many connections).
_LINK_ERRORS = (ConnectionError, WireError)


class _NotSent(Exception):
    """The connection was closed before the request was written: it can go elsewhere."""


def _nfc(name: str) -> str:
    """Names compare as the service stores them (NFC), not as they were typed."""
    return unicodedata.normalize("NFC", name)


def split_address(address: str) -> Tuple[str, int]:
    """host:port (IPv6 in brackets) -> (host, port); ValueError for anything else."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad server address {address!r}: expected host:port")
    return host, int(port)


class _Link:
    """One wire connection and what the listener at its other end believes about it."""

    def __init__(self, address: str, client: WireClient) -> None:
        self.address = address
        self.client = client
        # The listener's sender for `send`: whom this connection last created or connected as.
        self.identity = ""
        # The sender of the connection this one replaced, when this one could not take it over.
        self.lost_identity = ""
        # The session whose pushes arrive here (None: pushes are dropped, unacknowledged).
        self.session: Optional["WireSession"] = None
        self.hosted = False  # a session ever started here: its pushes may still be in flight
        self.in_flight = 0
        self.retired = False  # replaced: close once its last request is answered
        self.closing = False
        self.tasks: List["asyncio.Task[None]"] = []

    @property
    def usable(self) -> bool:
        return not self.closing and not self.retired and not self.client.closed


class WireSession(ResumableSession):
    """A logged-in user over the wire: yields Connected, Delivery and SessionEnded objects.

    The same contract as the gRPC Session: the first event is the Connected of `connect`;
    a lost connection is resumed on another replica without the reader noticing (deliveries
    already yielded are dropped); iteration stops after a final SessionEnded (TAKEN_OVER,
    USER_DELETED), or raises ChatError(UNAVAILABLE) when no replica took the session back
    within the client's deadline.
    """

    QUEUE_SIZE = 256  # read ahead this far; beyond it the connection stops being read

    def __init__(self, api: "WireChatApi", name: str) -> None:
        # session_id only for the ChatSession protocol: the listener gives each connection its own.
        super().__init__(name, uuid.uuid4().hex)
        self.canonical = name  # as the service stores it, from the `connected` answer
        self._api = api
        self._loop = asyncio.get_running_loop()
        self._link: Optional[_Link] = None
        self._first: Optional[chat_pb2.Connected] = None
        self._room = asyncio.Semaphore(self.QUEUE_SIZE)
        self._over = False  # nothing more will come (ended, failed or closed): no resume

    @property
    def over(self) -> bool:
        return self._over

    def _take_first(self) -> Optional[Event]:
        first, self._first = self._first, None
        return first

    def _taken(self, item: Event) -> None:
        if isinstance(item, chat_pb2.Delivery):
            self._room.release()

    # -- acknowledgements ----------------------------------------------------------
    # Sent over the session's connection. One lost with its connection is sent again once
    # the session has resumed (`_resumed`): an ack is idempotent.

    async def _send_ack(self, target: int) -> bool:
        while True:
            link = self._link
            if link is None or not link.usable:
                return False  # the resume sends it again
            name = self.canonical
            try:
                await self._api._attempt(
                    link, lambda conn: self._api._as_user(conn, name, lambda: conn.client.ack(name, target)),
                    self._api.attempt_timeout,
                )
                return True
            except ChatError as error:
                return self._ack_failed(target, error)
            except (_NotSent, asyncio.TimeoutError) + _LINK_ERRORS:
                if self._link is not link:
                    continue  # already resumed elsewhere: send it there
                return False  # the resume sends it again

    # -- lifetime ------------------------------------------------------------------

    async def close(self) -> None:
        """Stops yielding and flushes acks. The server ends the session when this connection
        hosts another one or closes; until then its pushes are dropped unacknowledged, so
        they stay queued for the user's next session."""
        self._stop_receiving()
        if not self._finished:
            self._finished = True
            self._events.put_nowait(Stop(None))  # wakes a reader blocked on an empty queue
        await self.flush_acks()
        self._api._forget(self)

    def _stop_receiving(self) -> None:
        self._over = True
        link = self._link
        if link is not None and link.session is self:
            link.session = None
        self._room.release()  # a pump waiting for room sees the session is over

    def _opened(self, link: _Link, connected: codec.Connected) -> None:
        self.canonical = connected.name or self.name
        self._first = chat_pb2.Connected(name=self.canonical, queued=connected.queued)
        self._attach(link)

    def _attach(self, link: _Link) -> None:
        old = self._link
        if old is not None and old is not link and old.session is self:
            # A push still arriving there (its `ended taken_over`, caused by this very
            # resume) is not about the session any more.
            old.session = None
        self._link = link
        link.session = self
        link.hosted = True
        link.identity = self.canonical
        link.lost_identity = ""

    def _resumed(self, link: _Link) -> None:
        self._attach(link)
        self._acks.kick()

    def _end(self, ended: chat_pb2.SessionEnded) -> None:
        """Over for good: the reader gets `ended`, then the end of iteration."""
        if self._over:
            return
        self._stop_receiving()
        self._events.put_nowait(ended)
        self._events.put_nowait(Stop(None))

    def _fail(self, error: ChatError) -> None:
        if self._over:
            return
        self._stop_receiving()
        self._events.put_nowait(Stop(error))

    async def _push(self, link: _Link, push: codec.Push) -> None:
        """One pushed frame of `link`, from its pump."""
        if self._over or link is not self._link:
            return  # e.g. the `ended taken_over` our own resume caused on the old connection
        if isinstance(push, codec.Delivery):
            if push.seq <= self._last_seq or _nfc(push.recipient) != _nfc(self.canonical):
                return  # already yielded (a resume redelivers what was not acknowledged)
            await self._room.acquire()  # backpressure: the pump stops reading the socket
            if self._over or link is not self._link:
                self._room.release()
                return
            if not self._is_new(push.seq):  # yielded while we waited for room
                self._room.release()
                return
            self._events.put_nowait(
                chat_pb2.Delivery(
                    recipient=push.recipient,
                    seq=push.seq,
                    sender=push.sender,
                    sent_at_ms=push.sent_at_ms,
                    text=push.text,
                )
            )
            return
        reason = _FINAL_REASONS.get(push.reason)
        if reason is None:
            log.debug("wire: session of %s ended on %s (%s: %s); resuming elsewhere",
                      self.canonical, link.address, push.reason, push.detail)
            self._api._abandon(link)
            return
        self._end(chat_pb2.SessionEnded(reason=reason, detail=push.detail))


class WireChatApi:
    """Talks to a replichat cluster over the seed's wire protocol (the ChatApi the CLI uses).

    `servers` are wire addresses (host:port), tried in order from the first. `deadline`
    bounds each operation (and each session resume); `attempt_timeout` bounds one try of a
    retryable request on one replica. Writes wait up to `deadline` for their one attempt.
    """

    # The wire protocol has no status request.
    capabilities: FrozenSet[Capability] = frozenset()

    def __init__(
        self,
        servers: Sequence[str],
        *,
        deadline: float = DEFAULT_DEADLINE,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        credentials: Optional[CredentialStore] = None,
        ca_file: Optional[str] = None,
    ) -> None:
        """ca_file: connect with TLS, verifying replicas against this CA (None: plain TCP)."""
        self.ring = ReplicaRing(servers, deadline, attempt_timeout)
        self.credentials: CredentialStore = credentials if credentials is not None else PROCESS_CREDENTIALS
        for address in self.ring.servers:
            split_address(address)
        self._ssl = client_context(ca_file) if ca_file else None
        self._link: Optional[_Link] = None
        self._links: Set[_Link] = set()
        # Made on first use: on Python 3.8 a Lock binds to the loop current at its creation,
        # and this object may be built before asyncio.run() starts the loop it will run on.
        self._lock: Optional[asyncio.Lock] = None
        self._session: Optional[WireSession] = None
        self._resume: Optional["asyncio.Task[None]"] = None
        self._closers: Set["asyncio.Task[None]"] = set()
        self._closed = False
        # Membership: asked after a connection opens, after a failover, and every refresh.
        self._members = MembersRefresh()

    # -- connections ---------------------------------------------------------------

    @property
    def servers(self) -> List[str]:
        return self.ring.servers

    @property
    def deadline(self) -> float:
        return self.ring.deadline

    @property
    def attempt_timeout(self) -> float:
        return self.ring.attempt_timeout

    async def _open(self, address: str, timeout: float) -> _Link:
        host, port = split_address(address)
        # Our own keepalive (below) also notices a replica that stopped answering.
        client = await asyncio.wait_for(WireClient.open(host, port, keepalive=None, ssl_context=self._ssl), timeout)
        link = _Link(address, client)
        loop = asyncio.get_running_loop()
        link.tasks = [loop.create_task(self._pump(link)), loop.create_task(self._keep_alive(link))]
        self._links.add(link)
        self._check_members(link)
        return link

    def _check_members(self, link: _Link) -> None:
        """Ask `link`'s replica for the members in the background, when due."""
        if not self._closed and link.usable:
            self._members.ask_if_due(lambda: self._learn_members(link))

    async def _learn_members(self, link: _Link) -> None:
        try:
            cluster = await asyncio.wait_for(link.client.members(), MEMBERS_TIMEOUT_S)
        except ChatError as error:
            if error.code is Code.INVALID_ARGUMENT:  # "unknown command": a replica older than `members`
                log.debug("wire: %s does not know the members request: %s", link.address, error.message)
                self._members.mark_unsupported()
            return  # e.g. the replica is starting: asked again at the next refresh
        except (asyncio.TimeoutError,) + _LINK_ERRORS:
            return  # the connection's own requests notice; the failover asks the next replica
        addresses = [address for _, address in cluster.members]
        # Only a replica that knows a leader, and every member's wire address, gives a list
        # complete enough to forget replicas by (one that is behind may not know of a new member).
        complete = bool(cluster.leader) and all(addresses)
        if self.ring.learn(addresses, complete):
            log.info("wire replicas now: %s (from the cluster's membership)", ", ".join(self.ring.servers))

    async def _open_any(self, failover: Failover) -> _Link:
        """A new connection to the current replica or, failing that, the next ones."""
        while True:
            address = self.ring.current
            try:
                return await self._open(address, failover.attempt_timeout())
            except asyncio.TimeoutError:
                problem = f"{address}: no connection within {failover.attempt_timeout():g}s"
            except OSError as error:
                problem = f"{address}: {error.strerror or error}"
            await failover.retry_after(address, problem)

    async def _usable_link(self) -> _Link:
        """The current connection, or a new one (with the live session resumed on it)."""
        link = self._link
        if link is not None and link.usable:
            return link
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one replacement at a time: the session resumes once
            link = self._link
            if link is not None and link.usable:
                return link
            return await self._replace(link)

    async def _replace(self, old: Optional[_Link]) -> _Link:
        if self._closed:
            raise ChatError(Code.UNAVAILABLE, "the client is closed")
        session = self._session if self._session is not None and not self._session.over else None
        lost = ""
        if old is not None:
            lost = old.identity or old.lost_identity
            self.ring.rotate_from(old.address)  # its replica failed us: start with the next one
            self._members.mark_stale()  # and ask the next one for the members at once
        failover = Failover(self.ring, "answered over the wire protocol")
        while True:
            try:
                link = await self._open_any(failover)
            except ChatError as error:
                if session is not None:
                    session._fail(error)
                raise
            if session is None:
                link.lost_identity = lost
                break
            # Attached before the request: the first redelivered push may beat our wake-up.
            # Pushes still arriving on the old connection are ignored from here on.
            link.session = session
            session._link = link
            try:
                connected = await self._attempt(
                    link,
                    lambda conn: self._as_user(conn, session.canonical, lambda: conn.client.connect(session.canonical)),
                    failover.attempt_timeout(),
                )
            except ChatError as error:
                link.session = None
                if error.code is Code.NOT_FOUND:
                    # Deleted while we were away; say so the way a live session would.
                    link.lost_identity = lost
                    session._end(deleted_on_resume(error.message))
                    break
                if error.code is not Code.UNAVAILABLE:
                    session._fail(error)
                    link.lost_identity = lost
                    break
                problem = f"{link.address}: {error.message}"
            except (_NotSent, asyncio.TimeoutError) + _LINK_ERRORS as error:
                link.session = None
                problem = f"{link.address}: {_describe(error)}"
            else:
                log.debug("wire: session of %s resumed on %s", session.canonical, link.address)
                session._resumed(link)
                if lost and _nfc(lost) != _nfc(connected.name):
                    link.lost_identity = lost
                break
            self._abandon(link)
            try:
                await failover.retry_after(link.address, problem)
            except ChatError as error:
                session._fail(error)
                raise
        self._install(link)
        if not link.usable:
            self._lost(link)  # lost while being set up; a running resume task loops instead
        return link

    def _install(self, link: _Link) -> None:
        old, self._link = self._link, link
        if old is not None and old is not link:
            old.retired = True
            if old.in_flight == 0:
                self._close_soon(old)

    def _abandon(self, link: _Link) -> None:
        """Stops using `link` now (its replica failed us): the next request, and the live
        session, go to the next replica."""
        self.ring.rotate_from(link.address)
        self._members.mark_stale()  # the next replica is asked at once
        self._close_soon(link)
        self._lost(link)

    def _close_soon(self, link: _Link) -> None:
        if link.closing:
            return
        link.closing = True
        task = asyncio.get_running_loop().create_task(self._close_link(link))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def _close_link(self, link: _Link) -> None:
        link.closing = True
        try:
            await link.client.close()
        except OSError:  # the peer is gone already: nothing left to flush
            pass
        for task in link.tasks:
            task.cancel()
        await asyncio.wait(link.tasks)
        self._links.discard(link)

    def _lost(self, link: _Link) -> None:
        """`link` is gone or going: if it carried the live session, resume that now rather
        than at the next command, so messages keep arriving."""
        session = self._session
        if self._closed or link is not self._link or session is None or session.over:
            return
        if self._resume is None or self._resume.done():
            self._resume = asyncio.get_running_loop().create_task(self._resume_session())

    async def _resume_session(self) -> None:
        # A loop: the new connection may die too before this task is done with it, and its
        # loss is then reported while this task still runs.
        while True:
            session = self._session
            if self._closed or session is None or session.over:
                return
            try:
                link = await self._usable_link()
            except ChatError:
                return  # _replace handed the error to the session
            if link.usable:
                return

    async def _pump(self, link: _Link) -> None:
        """Reads `link`'s pushes for its session; drops them when it has none."""
        try:
            while True:
                try:
                    push = await link.client.next_event()
                except (ChatError,) + _LINK_ERRORS:
                    return
                session = link.session
                if session is not None:
                    await session._push(link, push)
        finally:
            self._lost(link)

    async def _keep_alive(self, link: _Link) -> None:
        """Pings a quiet connection; one that stays silent is abandoned.

        A ping is answered in order, after any request ahead of it, which the replica answers
        (if only with `unavailable`) within its own request timeout; `deadline` is longer.
        """
        while True:
            try:
                await asyncio.wait_for(link.client.wait_closed(), KEEPALIVE_INTERVAL)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await asyncio.wait_for(link.client.ping(), self.deadline)
            except asyncio.TimeoutError:
                log.debug("wire: %s did not answer a ping within %gs", link.address, self.deadline)
                self._abandon(link)
                return
            except (ChatError,) + _LINK_ERRORS:
                return

    async def _attempt(self, link: _Link, call: Callable[[_Link], Awaitable[_T]], timeout: float) -> _T:
        """One request on `link`; raises _NotSent if the connection was closed before it left.

        The check and the write happen in one step of the event loop (WireClient writes before
        its first await), so _NotSent really means "never sent".
        """

        async def attempt() -> _T:
            if not link.usable:
                raise _NotSent()
            return await call(link)

        link.in_flight += 1
        try:
            result = await asyncio.wait_for(attempt(), timeout)
            self._check_members(link)
            return result
        finally:
            link.in_flight -= 1
            if link.retired and link.in_flight == 0:
                self._close_soon(link)

    async def _as_user(self, link: _Link, name: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """`call()` on `link` logged in as `name`: an `auth` first when the connection is
        someone else and this client holds `name`'s credential (with none, the server says
        what is missing, unless it runs --insecure-no-auth)."""
        token = self.credentials.get(name)
        if token and _nfc(name) != _nfc(link.identity):
            link.identity, link.lost_identity = await link.client.auth(name, token), ""
        return await call()

    async def _write(
        self, call: Callable[[_Link], Awaitable[_T]], check: Callable[[_Link], None] = lambda link: None
    ) -> _T:
        """A request that changes state: sent once; an unknown outcome is reported as such."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.deadline
        while True:
            link = await self._usable_link()
            check(link)
            try:
                return await self._attempt(link, call, max(0.05, give_up_at - loop.time()))
            except _NotSent:
                if loop.time() >= give_up_at:
                    raise ChatError(Code.UNAVAILABLE, f"no usable connection within {self.deadline:g}s") from None
                continue  # never left: the next connection may have it
            except ChatError as error:
                if error.code is not Code.UNAVAILABLE:
                    raise
                # The replica gave up waiting for its quorum, but the write may still commit.
                self._abandon(link)
                raise ChatError(Code.UNAVAILABLE, f"{error.message}; {MAYBE_APPLIED}") from None
            except _LINK_ERRORS:
                self._abandon(link)
                raise ChatError(
                    Code.UNAVAILABLE, f"connection to {link.address} lost before the answer; {MAYBE_APPLIED}"
                ) from None
            except asyncio.TimeoutError:
                self._abandon(link)
                raise ChatError(
                    Code.UNAVAILABLE, f"no answer from {link.address} within {self.deadline:g}s; {MAYBE_APPLIED}"
                ) from None

    async def _retrying(self, call: Callable[[_Link], Awaitable[_T]]) -> _T:
        """A request that may be repeated: tried replica after replica until the deadline."""

        async def attempt(address: str, timeout: float) -> _T:
            link = await self._usable_link()
            try:
                return await self._attempt(link, call, timeout)
            except ChatError as error:
                if error.code is not Code.UNAVAILABLE:
                    raise
                problem = f"{link.address}: {error.message}"
            except (_NotSent, asyncio.TimeoutError) + _LINK_ERRORS as error:
                problem = f"{link.address}: {_describe(error)}"
            self._abandon(link)
            raise Retry(link.address, problem)

        return await call_with_failover(self.ring, "answered over the wire protocol", attempt)

    # -- the API -------------------------------------------------------------------

    async def create(self, name: str) -> str:
        """Creates user `name` with a fresh credential (remembered in `credentials`); the
        user becomes this connection's sender. Returns the stored name."""
        token = new_token()

        async def call(link: _Link) -> str:
            created = await link.client.create(name, token)
            link.identity, link.lost_identity = created, ""
            self.credentials.put(created, token)
            return created

        return await self._write(call)

    async def delete(self, name: str) -> int:
        """Deletes user `name`; returns how many unread messages went with it."""

        async def call(link: _Link) -> int:
            dropped = await self._as_user(link, name, lambda: link.client.delete(name))
            self.credentials.forget(name)
            if name == link.identity:  # the listener's rule, byte for byte
                link.identity = ""
            if _nfc(name) == _nfc(link.lost_identity):
                link.lost_identity = ""
            return dropped

        return await self._write(call)

    async def list(self, pattern: str = "") -> List[str]:
        """Users whose name matches the regular expression `pattern` (search semantics)."""
        return await self._retrying(lambda link: link.client.list_users(pattern))

    async def send(self, recipient: str, text: str, sender: str = "") -> int:
        """Sends `text`; returns its per-recipient sequence number once committed.

        The wire protocol cannot name a sender: the message goes out as the connection's
        user. `sender` says whom the caller expects that to be, and a mismatch is refused
        rather than sent under the wrong name.
        """

        def check(link: _Link) -> None:
            if _nfc(sender) == _nfc(link.identity) or self.credentials.get(sender):
                return
            if sender and _nfc(sender) == _nfc(link.lost_identity):
                raise ChatError(
                    Code.UNAVAILABLE,
                    f"cannot send as {sender} over a new connection: the wire protocol sets the "
                    f"sender only on create or connect; connect {sender} to send as {sender} again",
                )
            raise ChatError(
                Code.INVALID_ARGUMENT,
                f"over the wire protocol a message goes out as {link.identity or 'anonymous'} "
                f"(whom this connection last created or connected as), not as {sender or 'anonymous'}",
            )

        async def call(link: _Link) -> int:
            if sender:
                return await self._as_user(link, sender, lambda: link.client.send(recipient, text))
            return await link.client.send(recipient, text)

        return await self._write(call, check)

    async def ack(self, name: str, up_to_seq: int, session_id: str = "") -> None:
        """Removes `name`'s messages up to `up_to_seq`; `session_id` is not a wire notion."""
        await self._retrying(lambda link: self._as_user(link, name, lambda: link.client.ack(name, up_to_seq)))

    async def connect(self, name: str) -> WireSession:
        """Logs in as `name` (ending this client's previous session); raises ChatError (e.g.
        NOT_FOUND) if that cannot start."""
        if self._session is not None:
            await self._session.close()
        session = WireSession(self, name)
        failover = Failover(self.ring, "answered over the wire protocol")
        while True:
            current = await self._usable_link()
            fresh = current.hosted  # one session per connection, see the module docstring
            if fresh:
                address = self.ring.current
                try:
                    link = await self._open(address, failover.attempt_timeout())
                except (OSError, asyncio.TimeoutError) as error:
                    await failover.retry_after(address, f"{address}: {_describe(error)}")
                    continue
            else:
                link = current
            link.session = session  # before the request: the first push may beat our wake-up
            session._link = link
            try:
                connected = await self._attempt(
                    link, lambda conn: self._as_user(conn, name, lambda: conn.client.connect(name)),
                    failover.attempt_timeout(),
                )
            except ChatError as error:
                link.session = None
                if fresh:
                    self._close_soon(link)
                if error.code is not Code.UNAVAILABLE:
                    raise
                problem = f"{link.address}: {error.message}"
            except (_NotSent, asyncio.TimeoutError) + _LINK_ERRORS as error:
                link.session = None
                problem = f"{link.address}: {_describe(error)}"
            else:
                session._opened(link, connected)
                self._session = session
                if fresh:
                    self._install(link)
                if not link.usable:  # lost while we were not looking (its pump found no session)
                    self._lost(link)
                return session
            self._abandon(link)
            await failover.retry_after(link.address, problem)

    async def status_all(self) -> List[ReplicaStatus]:
        """No status request exists in the wire protocol; every row says so."""
        return [(address, None, STATUS_NOT_OVER_WIRE) for address in self.servers]

    async def close(self) -> None:
        """Ends the session (flushing its acks) and closes every connection."""
        if self._session is not None:
            await self._session.close()
        self._closed = True
        await self._members.close()
        if self._resume is not None:
            self._resume.cancel()
            await asyncio.wait([self._resume])
        for link in list(self._links):
            self._close_soon(link)
        while self._closers:
            await asyncio.wait(set(self._closers))

    async def __aenter__(self) -> "WireChatApi":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _forget(self, session: WireSession) -> None:
        if self._session is session:
            self._session = None


def _describe(error: BaseException) -> str:
    if isinstance(error, _NotSent):
        return "connection closed"
    if isinstance(error, asyncio.TimeoutError):
        return "no answer in time"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
