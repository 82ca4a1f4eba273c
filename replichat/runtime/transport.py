"""Peer-to-peer Raft messages over plain TCP.

Each replica listens on its Raft address; each sender keeps one connection per peer and writes
length-prefixed `raft_pb2.MessageBatch` frames to it, one frame per batch of messages queued
while the previous write was in progress. Messages to a peer arrive in the order the core
produced them. Raft tolerates loss, so a broken connection is replaced and its messages dropped
rather than retried: the core resends what matters on its next heartbeat.

Why not gRPC (which serves the clients): a grpc.aio stream message costs a round of callbacks
through gRPC's Cython layer on each side, about as much as a unary call, and a write at
concurrency 1 crosses a peer link twice. Like etcd, whose peers talk over their own HTTP
streams rather than its client-facing gRPC, we keep peer traffic on a lighter path; a frame
here costs one `write` and one `data_received`.
"""
import asyncio
import logging
import struct
import ssl
from typing import Callable, Collection, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple, Union, cast

from google.protobuf.message import DecodeError

from replichat.proto import raft_pb2
from replichat.identity import ID_BYTES, NO_INCARNATION, IdentityStore
from replichat.raft.messages import Entry, Message, MsgType
from replichat.raft.validate import DropCounter, check_message
from replichat.runtime.snapshot_transfer import (
    SnapshotAck,
    SnapshotChunk,
    ack_from_proto,
    ack_to_proto,
    chunk_from_proto,
    chunk_to_proto,
)
from replichat.security.tls import peer_replica_id

log = logging.getLogger(__name__)

# Sent once at the start of every connection: a stray client on the Raft port is turned away.
MAGIC = b"RCR1"
_LENGTH = struct.Struct(">I")
# Largest frame a receiver accepts: 4x what senders aim for (FRAME_TARGET), so one message
# over the target still fits. It bounds what one connection may make a replica buffer.
MAX_FRAME = 16 << 20
# All half-received frames of one replica's Raft port together: a few real peers sending large
# batches at once stay far below it; beyond it the connection that grew it is closed.
MAX_BUFFERED_TOTAL = 64 << 20
# A frame that started arriving must complete within this: a peer sends a whole frame in one
# write, so only a stalled or hostile sender takes longer, holding the frame's memory.
FRAME_TIMEOUT_S = 10.0
# Senders split batches into frames of about this many bytes (well under MAX_FRAME; the core
# caps one append at 1 MiB of entries). Overheads are upper bounds of the protobuf encoding.
FRAME_TARGET = 4 << 20
_MESSAGE_OVERHEAD = 128
_ENTRY_OVERHEAD = 32
CONNECT_TIMEOUT_S = 1.0
WRITE_TIMEOUT_S = 2.0
RETRY_PAUSE_S = 0.05
# A peer that is down must not make its queue grow without bound.
MAX_QUEUED = 50_000
# A link writes a frame in the sender's turn only while its socket keeps up (less than this
# waiting in the transport's buffer); beyond, frames wait for `drain` in the link's task.
DIRECT_WRITE_MAX_BUFFERED = 256 * 1024
# A connection that has not greeted within this long is not a peer: it is closed, so stray
# clients cannot hold the Raft port's connections open. Peers greet on connect.
GREETING_TIMEOUT_S = 5.0
# A peer's sender connects only when it has messages and writes them right after the greeting:
# a connection that greeted but brought no valid message from a member by then is closed.
FIRST_FRAME_TIMEOUT_S = 5.0
# Connections kept per peer identity (the newest ones: a reconnect replaces a dead one).
MAX_CONNECTIONS_PER_PEER = 2
# Peers need one connection each (a reconnect replaces the old one); anything far beyond that
# is not from peers, and is refused rather than allowed to exhaust the replica's descriptors.
MAX_CONNECTIONS = 64
_MESSAGE_TYPES = frozenset(t.value for t in MsgType)


def to_proto(m: Message) -> raft_pb2.Message:
    return raft_pb2.Message(
        type=int(m.type), to=m.dst, term=m.term, log_term=m.log_term, index=m.index,
        entries=[raft_pb2.Entry(term=e.term, index=e.index, data=e.data) for e in m.entries],
        commit=m.commit, reject=m.reject, reject_hint=m.reject_hint, hint_term=m.hint_term, context=m.context,
        **{"from": m.src},
    )


def from_proto(p: raft_pb2.Message) -> Message:
    return Message(
        type=MsgType(p.type), src=getattr(p, "from"), dst=p.to, term=p.term, log_term=p.log_term, index=p.index,
        entries=tuple(Entry(e.term, e.index, e.data) for e in p.entries),
        commit=p.commit, reject=p.reject, reject_hint=p.reject_hint, hint_term=p.hint_term, context=p.context,
    )


# The pieces of a snapshot being streamed and their acknowledgements (snapshot_transfer.py):
# they travel in the same frames as Raft messages but never go through the core.
SnapshotPart = Union[SnapshotChunk, SnapshotAck]
PeerItem = Union[Message, SnapshotChunk, SnapshotAck]


def encode_frame(messages: Sequence[PeerItem]) -> bytes:
    batch = raft_pb2.MessageBatch()
    for m in messages:
        if isinstance(m, Message):
            batch.messages.append(to_proto(m))
        elif isinstance(m, SnapshotChunk):
            batch.chunks.append(chunk_to_proto(m))
        else:
            batch.acks.append(ack_to_proto(m))
    body = batch.SerializeToString()
    return _LENGTH.pack(len(body)) + body


def encode_introduction(own_address: str) -> bytes:
    """The first frame of a connection: no message, only where the sender listens."""
    body = raft_pb2.MessageBatch(sender_address=own_address).SerializeToString()
    return _LENGTH.pack(len(body)) + body


def _weight(m: PeerItem) -> int:
    if isinstance(m, Message):
        return _MESSAGE_OVERHEAD + len(m.context) + sum(len(e.data) + _ENTRY_OVERHEAD for e in m.entries)
    if isinstance(m, SnapshotChunk):
        return _MESSAGE_OVERHEAD + len(m.data) + len(m.checksum)
    return _MESSAGE_OVERHEAD + len(m.reason)


def encode_frames(messages: Sequence[PeerItem]) -> bytes:
    """One frame, or several when the messages are big: a queue that grew while a peer was
    slow must not become a frame its receiver refuses (MAX_FRAME)."""
    frames = []
    start = size = 0
    for i, m in enumerate(messages):
        weight = _weight(m)
        if size and size + weight > FRAME_TARGET:
            frames.append(encode_frame(messages[start:i]))
            start, size = i, 0
        size += weight
    frames.append(encode_frame(messages[start:]))
    return b"".join(frames)


# The identity greeting follows MAGIC when replicas run with a data-directory identity
# (replichat/identity.py): cluster id, the sender's incarnation, and the incarnation the sender
# knows the receiver by (zeros: never heard of it), 16 bytes each.
_IDENTITY_BYTES = 3 * ID_BYTES


class IdentityGuard:
    """The identity rules of replichat/identity.py at the transport's edge: what this replica
    says in its greetings and whom it admits. Made before the ports are bound (the decoder
    needs the cluster id); `open` gives it the data directory's identity once they are."""

    def __init__(self, cluster_id: bytes, on_replaced: Callable[[str], None]) -> None:
        """on_replaced: called (once) with the reason when a peer knew this replica under
        another incarnation, i.e. this replica's data directory was replaced."""
        self.cluster_id = cluster_id
        self._on_replaced = on_replaced
        self._replaced = False
        self._store: Optional[IdentityStore] = None
        self.incarnation = NO_INCARNATION

    def open(self, store: IdentityStore) -> None:
        assert store.identity.cluster_id == self.cluster_id
        self._store = store
        self.incarnation = store.identity.incarnation

    def greeting(self, peer: int) -> bytes:
        known = self._store.known(peer) if self._store is not None else None
        return MAGIC + self.cluster_id + self.incarnation + (known or NO_INCARNATION)

    def admit(self, peer: int, incarnation: bytes, ours_to_peer: bytes) -> Optional[str]:
        """None if messages from `peer` (greeting with `incarnation`, knowing us as
        `ours_to_peer`) may reach the core; else why not."""
        store = self._store
        if store is None:
            return "this replica is still starting (its data directory is not open yet)"
        if ours_to_peer not in (NO_INCARNATION, self.incarnation):
            reason = (f"replica {peer} knew this replica (id {store.replica_id}) with data incarnation "
                      f"{ours_to_peer.hex()}, but this data directory is incarnation {self.incarnation.hex()}: "
                      "it was wiped or replaced since this replica last talked to the cluster")
            if not self._replaced:
                self._replaced = True
                self._on_replaced(reason)
            return reason
        known = store.known(peer)
        if known is None:
            store.record(peer, incarnation)
            return None
        if known != incarnation:
            log.critical("replica %d's data directory was replaced (incarnation %s, now %s): its votes and "
                         "acknowledged entries are gone, so its messages are refused; it stops by itself and says "
                         "how to bring it back", peer, known.hex(), incarnation.hex())
            return f"replica {peer} greets with data incarnation {incarnation.hex()}, not {known.hex()}"
        return None


class FrameError(ValueError):
    """The bytes from a peer are not a valid stream of frames for this replica."""


class FrameDecoder:
    """Bytes in, message batches out (sans-IO, so the framing is tested without sockets).

    A frame that cannot be decoded, or that does not come from a member of this cluster, is a
    FrameError (the connection is closed: it is not one of our peers). A well-formed message
    whose values no correct replica could send (raft/validate.py), or whose claimed sender is
    not the peer this connection authenticated as, is dropped and logged, and the rest of its
    frame is delivered."""

    def __init__(self, self_id: int, senders: Collection[int], label: str = "a peer",
                 cluster_id: Optional[bytes] = None, dropped: Optional[DropCounter] = None,
                 introduce: Optional[Callable[[int, str], None]] = None) -> None:
        """senders: the replicas that may send to this one. A message from any other (say, a
        replica of another cluster) would make the core answer a replica the transport does
        not know, which stops the node. label: names the connection in log lines.
        cluster_id: expect the identity greeting (see `greeting`) of this cluster; None: the
        bare MAGIC (tests of the framing alone). introduce(peer, address): called when a
        connection authenticated as a replica not in `senders` gives its Raft address (the
        first frame's sender_address); the callee may add it to `senders` (None: such a
        connection is refused)."""
        self._self_id = self_id
        self._cluster_id = cluster_id
        # From the identity greeting: the sender's incarnation and the one it knows us by.
        self.peer_incarnation = NO_INCARNATION
        self.our_incarnation_to_peer = NO_INCARNATION
        # Kept as given, not copied: a replica's node updates it in place as the configuration
        # changes (runtime/node.py), and a connection accepted before a member was added (say,
        # during the replica's start, before its log was read) must admit that member once it is.
        self._senders_given = senders
        self._introduce = introduce
        self._buffer = bytearray()
        self._greeted = False
        self.label = label
        # Set once the connection proved who it is (its TLS certificate): messages claiming
        # another sender are then forgeries.
        self.authenticated_peer: Optional[int] = None
        # The member the first valid frame came from (the authenticated one when known).
        self.peer: Optional[int] = None
        # Shared by a listener's connections: a peer that reconnects to send more bad messages
        # does not start a new run of logged drops.
        self.dropped = dropped if dropped is not None else DropCounter()
        # Snapshot chunks and acknowledgements decoded by feed(), for take_snapshot_parts().
        self._parts: List[SnapshotPart] = []

    @property
    def greeted(self) -> bool:
        return self._greeted

    @property
    def senders(self) -> FrozenSet[int]:
        return frozenset(self._senders_given) - {self._self_id}

    def admits(self, sender: int) -> bool:
        return sender != self._self_id and sender in self._senders_given

    @property
    def may_introduce(self) -> bool:
        """A connection authenticated as a replica not in `senders` may still introduce itself."""
        return self._introduce is not None

    @property
    def buffered(self) -> int:
        """Bytes held for a frame that has not fully arrived (0 between frames)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> List[List[Message]]:
        buffer = self._buffer
        buffer += data
        batches: List[List[Message]] = []
        if not self._greeted:
            size = len(MAGIC) + (_IDENTITY_BYTES if self._cluster_id is not None else 0)
            if len(buffer) < min(size, len(MAGIC)):
                return batches
            if bytes(buffer[:len(MAGIC)]) != MAGIC:
                raise FrameError("not a replichat peer (bad greeting)")
            if len(buffer) < size:
                return batches
            if self._cluster_id is not None:
                cluster_id, mine, yours = (bytes(buffer[i:i + ID_BYTES]) for i in range(len(MAGIC), size, ID_BYTES))
                if cluster_id != self._cluster_id:
                    raise FrameError(f"a replica of another cluster (cluster id {cluster_id.hex()}, "
                                     f"ours {self._cluster_id.hex()})")
                self.peer_incarnation, self.our_incarnation_to_peer = mine, yours
            del buffer[:size]
            self._greeted = True
        while len(buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer)
            if size > MAX_FRAME:
                raise FrameError(f"frame of {size} bytes exceeds the limit of {MAX_FRAME}")
            end = _LENGTH.size + size
            if len(buffer) < end:
                break
            batch = raft_pb2.MessageBatch()
            try:
                batch.ParseFromString(bytes(buffer[_LENGTH.size:end]))
            except DecodeError as error:
                raise FrameError(f"undecodable frame: {error}") from None
            del buffer[:end]
            peer = self.authenticated_peer  # only a certificate says who a stranger is
            if batch.sender_address and peer is not None and self._introduce is not None and not self.admits(peer):
                self._introduce(peer, batch.sender_address)
            batches.append(self._messages(batch))
        return batches

    def _messages(self, batch: raft_pb2.MessageBatch) -> List[Message]:
        messages = []
        for p in batch.messages:
            if p.to != self._self_id or p.type not in _MESSAGE_TYPES:
                raise FrameError(f"message for replica {p.to} or of unknown type {p.type}")
            sender = getattr(p, "from")
            if not self.admits(sender):
                raise FrameError(f"message from replica {sender}, not a peer of replica {self._self_id}")
            if self.authenticated_peer is not None and sender != self.authenticated_peer:
                self._drop(p.type, sender, f"claims to come from replica {sender}, but the connection "
                                           f"authenticated as replica {self.authenticated_peer}")
                continue
            m = from_proto(p)
            reason = check_message(m)
            if reason is not None:
                self._drop(p.type, sender, reason)
                continue
            if self.peer is None:
                self.peer = sender
            messages.append(m)
        for part in list(batch.chunks) + list(batch.acks):
            sender = getattr(part, "from")
            if part.to != self._self_id or not self.admits(sender):
                raise FrameError(f"snapshot transfer from replica {sender} to {part.to}, not from a peer to replica {self._self_id}")
            if self.authenticated_peer is not None and sender != self.authenticated_peer:
                if self.dropped.record():
                    log.warning("dropped a snapshot transfer claiming to be from replica %d on Raft connection from %s",
                                sender, self.label)
                continue
            self._parts.append(chunk_from_proto(part) if isinstance(part, raft_pb2.SnapshotChunk) else ack_from_proto(part))
        return messages

    def take_snapshot_parts(self) -> List[SnapshotPart]:
        parts, self._parts = self._parts, []
        return parts

    def _drop(self, kind: int, sender: int, reason: str) -> None:
        if self.dropped.record():
            log.warning("dropped a %s claiming to be from replica %d on Raft connection from %s (drop #%d): %s",
                        MsgType(kind).name, sender, self.label, self.dropped.count, reason)


class _Budget:
    """Bytes of half-received frames held by all of a listener's connections together."""

    def __init__(self) -> None:
        self.used = 0


class _PeerConnection(asyncio.Protocol):
    """One incoming connection: decodes frames and hands their messages to the node."""

    def __init__(
        self, decoder: FrameDecoder, deliver: Callable[[List[Message]], None], connections: Set["_PeerConnection"],
        received: List[int], budget: _Budget, ssl_context: Optional[ssl.SSLContext] = None,
        refusals: Optional[DropCounter] = None, guard: Optional["IdentityGuard"] = None,
        deliver_parts: Optional[Callable[[List[SnapshotPart]], None]] = None,
    ) -> None:
        self._deliver_parts = deliver_parts
        self._decoder = decoder
        self._guard = guard
        self._admitted = guard is None
        self._ssl = ssl_context
        self._deliver = deliver
        self._connections = connections
        self._received = received  # [bytes], shared by the listener's connections (metrics)
        self._budget = budget
        self._refusals = refusals if refusals is not None else DropCounter()
        self._held = 0  # this connection's share of the budget
        self._transport: Optional[asyncio.Transport] = None
        self._watchdog: Optional[asyncio.TimerHandle] = None
        self.opened_at = 0.0
        # When the frame now being received started (None between frames).
        self._frame_since: Optional[float] = None
        self.peername: object = None
        self._tls: Optional[ssl.SSLObject] = None
        self._tls_in = self._tls_out = ssl.MemoryBIO()
        self._handshaken = False
        self._counted = False  # toward MAX_CONNECTIONS_PER_PEER, once its peer is known

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self.peername = self._transport.get_extra_info("peername")
        self._decoder.label = str(self.peername)
        if len(self._connections) >= MAX_CONNECTIONS:
            self._refuse(f"{len(self._connections)} open already")
            self._transport.abort()
            return
        # Counted and timed from the TCP accept, before any TLS handshake: a flood of
        # connections that never complete one holds no more than MAX_CONNECTIONS slots.
        self._connections.add(self)
        loop = asyncio.get_event_loop()
        self.opened_at = loop.time()
        self._watchdog = loop.call_later(min(GREETING_TIMEOUT_S, FRAME_TIMEOUT_S), self._check_deadlines)
        if self._ssl is not None:
            # TLS runs in memory on this connection (ssl.SSLObject over two MemoryBIOs), not
            # in the event loop's transport: the connection is then counted and timed from the
            # TCP accept, handshake included, and no byte can reach the decoder unencrypted
            # (asyncio's start_tls races the first bytes on uvloop).
            self._tls_in, self._tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self._tls = self._ssl.wrap_bio(self._tls_in, self._tls_out, server_side=True)

    def _decrypt(self, data: bytes) -> Optional[bytes]:
        """Bytes from the socket in, plaintext out (b"" for none yet); None once the
        connection is refused and aborted."""
        tls, transport = self._tls, self._transport
        assert tls is not None and transport is not None
        self._tls_in.write(data)
        plain = []
        try:
            if not self._handshaken:
                try:
                    tls.do_handshake()
                except ssl.SSLWantReadError:
                    return b""
                finally:
                    self._flush_tls()
                self._handshaken = True
                if not self._identify():
                    return None
            # Read only while there is something to read: every SSL call lets go of the GIL,
            # and a read that can only fail hands it to another thread for nothing (measured:
            # a third of the leader's thread switches per write).
            while self._tls_in.pending or tls.pending():
                try:
                    chunk = tls.read(1 << 16)
                except ssl.SSLWantReadError:
                    break
                if not chunk:
                    break
                plain.append(chunk)
            self._flush_tls()
        except ssl.SSLZeroReturnError:  # the peer closed TLS cleanly
            transport.abort()
            return None
        except ssl.SSLError as error:
            self._flush_tls()  # the alert tells the other side why
            self._refuse(f"TLS {'handshake ' if not self._handshaken else ''}failed: {error}")
            transport.abort()
            return None
        return b"".join(plain)

    def _flush_tls(self) -> None:
        if self._tls_out.pending and self._transport is not None:
            self._transport.write(self._tls_out.read())

    def _identify(self) -> bool:
        """After the handshake: the CA vouched for the certificate; the replica it names is
        who this connection speaks for (messages claiming another sender are dropped)."""
        assert self._tls is not None and self._transport is not None
        peer = peer_replica_id(self._tls.getpeercert())
        if peer is None or not (self._decoder.admits(peer) or self._decoder.may_introduce):
            self._refuse(f"its certificate names {f'replica {peer}' if peer is not None else 'no replica'}, "
                         "not a peer of this replica")
            self._transport.abort()
            return False
        self._decoder.authenticated_peer = peer
        self._decoder.label = f"replica {peer} at {self.peername}"
        return True

    def _refuse(self, reason: str, closing: bool = False) -> None:
        """Log a refused or closed connection: the first ones and then one per power of two
        (a flood of them must not flood the log), with the running count."""
        if self._refusals.record():
            log.warning("%s Raft connection from %s (#%d of the connections refused or closed): %s",
                        "closing" if closing else "refusing", self._decoder.label, self._refusals.count, reason)

    def _check_deadlines(self) -> None:
        """Close a connection that is not behaving as a peer: no greeting, no first frame
        (a peer's sender writes one right after its greeting), or a frame that started and
        does not complete (a slow sender holding the frame's memory)."""
        if self._transport is None or self._transport.is_closing():
            return
        loop = asyncio.get_event_loop()
        now = loop.time()
        reason = None
        if not self._decoder.greeted and now - self.opened_at >= GREETING_TIMEOUT_S:
            reason = f"no greeting within {GREETING_TIMEOUT_S:g}s"
        elif self._decoder.peer is None and now - self.opened_at >= FIRST_FRAME_TIMEOUT_S:
            reason = f"no message from a peer within {FIRST_FRAME_TIMEOUT_S:g}s of connecting"
        elif self._frame_since is not None and now - self._frame_since >= FRAME_TIMEOUT_S:
            reason = f"a frame did not complete within {FRAME_TIMEOUT_S:g}s ({self._held} bytes held)"
        if reason is not None:
            self._refuse(reason, closing=True)
            self._transport.abort()
            return
        self._watchdog = loop.call_later(min(GREETING_TIMEOUT_S, FRAME_TIMEOUT_S) / 2, self._check_deadlines)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._connections.discard(self)
        self._release()
        if self._watchdog is not None:
            self._watchdog.cancel()

    def _release(self) -> None:
        self._budget.used -= self._held
        self._held = 0

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._received[0] += len(data)
        if self._transport.is_closing():
            return
        if self._tls is not None:
            decrypted = self._decrypt(data)
            if not decrypted:
                return
            data = decrypted
        try:
            batches = self._decoder.feed(data)
        except FrameError as error:
            self._refuse(str(error), closing=True)
            self._release()
            self._transport.abort()
            return
        held = self._decoder.buffered
        self._budget.used += held - self._held
        self._held = held
        if held == 0:
            self._frame_since = None
        elif self._frame_since is None:
            self._frame_since = asyncio.get_event_loop().time()
        if self._budget.used > MAX_BUFFERED_TOTAL:
            self._refuse(f"half-received frames of all connections hold {self._budget.used} bytes, "
                         f"more than {MAX_BUFFERED_TOTAL}", closing=True)
            self._release()
            self._transport.abort()
            return
        if not self._admitted and self._decoder.peer is not None:
            assert self._guard is not None
            reason = self._guard.admit(self._decoder.peer, self._decoder.peer_incarnation,
                                       self._decoder.our_incarnation_to_peer)
            if reason is not None:
                self._refuse(reason)
                self._release()
                self._transport.abort()
                return
            self._admitted = True
        if self._decoder.peer is not None and not self._counted:
            self._counted = True
            self._limit_per_peer(self._decoder.peer)
        for messages in batches:
            if messages:
                self._deliver(messages)
        parts = self._decoder.take_snapshot_parts()
        if parts and self._deliver_parts is not None:
            self._deliver_parts(parts)

    def _limit_per_peer(self, peer: int) -> None:
        """A peer needs one connection (its sender replaces a broken one): keep at most
        MAX_CONNECTIONS_PER_PEER, closing the oldest, which is the likeliest to be dead."""
        same = sorted((c for c in self._connections if c._decoder.peer == peer), key=lambda c: c.opened_at)
        for old in same[:-MAX_CONNECTIONS_PER_PEER]:
            log.warning("closing an older Raft connection from replica %d (%s): at most %d per peer",
                        peer, old.peername, MAX_CONNECTIONS_PER_PEER)
            old.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class PeerListener:
    """A replica's Raft port. `close()` also drops the connections it accepted: asyncio's
    Server.close() leaves them open, so peers would not notice a stopped replica until its
    process exits, and from Python 3.12 Server.wait_closed() waits for them to end."""

    def __init__(self, server: "asyncio.base_events.Server", connections: Set[_PeerConnection], received: List[int]) -> None:
        self._server = server
        self._connections = connections
        self._received = received

    @property
    def bytes_received(self) -> int:
        return self._received[0]

    @property
    def port(self) -> int:
        """The bound port (the one the OS chose when asked for port 0)."""
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        self._server.close()
        # Abort rather than close: a reset makes the peer's sender drop the connection at
        # once, where after a FIN its next write would still vanish into the dead socket.
        for connection in list(self._connections):
            connection.abort()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()


async def start_peer_listener(
    self_id: int, deliver: Callable[[List[Message]], None], host: str, port: int, *, senders: Collection[int],
    ssl_context: Optional[ssl.SSLContext] = None, guard: Optional["IdentityGuard"] = None,
    deliver_snapshot_parts: Optional[Callable[[List[SnapshotPart]], None]] = None,
    introduce: Optional[Callable[[int, str], None]] = None,
) -> PeerListener:
    """Listen for peers on host:port (port 0: any free port, see PeerListener.port); hand
    `deliver` the messages that replicas in `senders` address to replica `self_id`.
    ssl_context: mutual TLS (security/tls.py peer_server_context); None: plain TCP.
    guard: checks the identity greeting (cluster id, incarnations); None: bare MAGIC.
    deliver_snapshot_parts: gets the snapshot chunks and acknowledgements (dropped without it).
    introduce(peer, address): a connection whose certificate names a replica not in `senders`
    gave its Raft address (FrameDecoder); only with ssl_context, as only a certificate proves it."""
    connections: Set[_PeerConnection] = set()
    received = [0]
    budget = _Budget()
    refusals = DropCounter()
    dropped = DropCounter()
    loop = asyncio.get_event_loop()
    # TLS runs on each accepted connection (_PeerConnection), not in the server: that way
    # connections are counted and timed from the accept, handshake included.
    server = await loop.create_server(
        lambda: _PeerConnection(
            FrameDecoder(self_id, senders, cluster_id=guard.cluster_id if guard else None, dropped=dropped,
                         introduce=introduce if ssl_context is not None else None),
            deliver, connections, received, budget, ssl_context, refusals, guard, deliver_snapshot_parts,
        ),
        host, port,
    )
    return PeerListener(server, connections, received)


def split_address(address: str) -> Tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class _PeerLink:
    """The connection to one peer. Writes wait only for the kernel to take the bytes (TCP flow
    control is the only back-pressure), so a heartbeat is never stuck behind a round trip."""

    def __init__(self, peer: int, address: str, ssl_context: Optional[ssl.SSLContext] = None,
                 guard: Optional["IdentityGuard"] = None, own_address: str = "") -> None:
        self.peer = peer
        self.address = address
        # Told to the peer on each new connection (MessageBatch.sender_address).
        self.own_address = own_address
        self._ssl = ssl_context
        self._guard = guard
        self.queue: List[PeerItem] = []
        self.wake = asyncio.Event()
        self.task: Optional["asyncio.Task[None]"] = None
        self.reachable = True
        self._writer: Optional[asyncio.StreamWriter] = None
        self._busy = False  # `run` is writing or draining: later frames queue behind it
        self.closing = False
        self.bytes_sent = 0

    async def run(self) -> None:
        while not self.closing:
            await self.wake.wait()
            self.wake.clear()
            batch, self.queue = self.queue, []
            if batch:
                self._busy = True
                try:
                    await self._write(encode_frames(batch))
                finally:
                    self._busy = False
            if self.queue:
                self.wake.set()

    def write_now(self) -> bool:
        """Writes the queue to an open, keeping-up connection at once, in the caller's turn of
        the loop; False (nothing written) leaves it to `run`, which connects, waits for a full
        socket to drain and times a stalled peer out. Writing at once matters for TLS: each
        SSL call lets go of the GIL, and made a turn later it lands while the leader's disk
        thread saves the same entries, so the two threads hand the GIL back and forth (measured:
        twice the leader's thread switches per write)."""
        writer = self._writer
        if self._busy or not self.queue or writer is None or writer.is_closing() or not self.reachable:
            return False
        if writer.transport.get_write_buffer_size() > DIRECT_WRITE_MAX_BUFFERED:
            return False
        batch, self.queue = self.queue, []
        frame = encode_frames(batch)
        writer.write(frame)
        self.bytes_sent += len(frame)
        return True

    async def _write(self, frame: bytes) -> None:
        try:
            writer = self._writer
            if writer is None or writer.is_closing():
                writer = self._writer = await self._connect()
            writer.write(frame)
            self.bytes_sent += len(frame)
            # A peer that stopped reading (SIGSTOP, partition) fills the socket buffers: give
            # up on this connection rather than queue behind it forever.
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
            if not self.reachable:
                log.info("replica %d at %s is reachable again", self.peer, self.address)
                self.reachable = True
        except (OSError, asyncio.TimeoutError) as error:  # ssl.SSLError is an OSError
            if self.reachable:
                detail = f": {error}" if isinstance(error, (ssl.SSLError, ssl.CertificateError, WrongPeer)) else ""
                log.warning("replica %d at %s unreachable: %s%s", self.peer, self.address, type(error).__name__, detail)
                self.reachable = False
            self._drop_connection()
            # Raft resends what matters; pause briefly so a dead peer costs no busy loop.
            await asyncio.sleep(RETRY_PAUSE_S)

    async def _connect(self) -> asyncio.StreamWriter:
        host, port = split_address(self.address)
        if self._ssl is None:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
        else:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=self._ssl, ssl_handshake_timeout=CONNECT_TIMEOUT_S),
                CONNECT_TIMEOUT_S)
            reached = peer_replica_id(writer.get_extra_info("peercert"))
            if reached != self.peer:
                writer.transport.abort()
                raise WrongPeer(f"the certificate at {self.address} is replica {reached}'s, not replica {self.peer}'s")
        writer.write(self._guard.greeting(self.peer) if self._guard is not None else MAGIC)
        if self.own_address:
            writer.write(encode_introduction(self.own_address))
        return writer

    def _drop_connection(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()
            self._writer = None

    async def close(self) -> None:
        self.closing = True
        self._drop_connection()
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task], timeout=WRITE_TIMEOUT_S)


class WrongPeer(OSError):
    """The replica at a peer's address is not that peer (its certificate names another)."""


class PeerTransport:
    def __init__(self, self_id: int, addresses: Dict[int, str], ssl_context: Optional[ssl.SSLContext] = None,
                 guard: Optional["IdentityGuard"] = None) -> None:
        """ssl_context: mutual TLS (security/tls.py peer_client_context); None: plain TCP.
        guard: greet with the identity greeting (cluster id, incarnations); None: bare MAGIC."""
        self._self_id = self_id
        self._ssl = ssl_context
        self._guard = guard
        self._started = False
        self._own_address = addresses.get(self_id, "")
        self._links = {
            peer: _PeerLink(peer, address, ssl_context, guard, self._own_address)
            for peer, address in addresses.items() if peer != self_id
        }

    def start(self) -> None:
        self._started = True
        for link in self._links.values():
            link.task = asyncio.ensure_future(link.run())

    def set_peers(self, addresses: Dict[int, str]) -> None:
        """Follow a membership change: a link to each replica in `addresses` (new ones are
        dialled when they have messages), none to a replica no longer in it (its queue is
        dropped: Raft resends what matters to members)."""
        wanted = {peer: address for peer, address in addresses.items() if peer != self._self_id}
        self._own_address = addresses.get(self._self_id, self._own_address)
        for peer, link in list(self._links.items()):
            if wanted.get(peer) != link.address:
                del self._links[peer]
                asyncio.ensure_future(link.close())
        for peer, address in wanted.items():
            if peer not in self._links:
                link = self._links[peer] = _PeerLink(peer, address, self._ssl, self._guard, self._own_address)
                if self._started:
                    link.task = asyncio.ensure_future(link.run())

    def send(self, messages: Sequence[PeerItem]) -> None:
        touched: Dict[int, _PeerLink] = {}
        for m in messages:
            link = self._links.get(m.dst)
            if link is None:
                # A member removed a moment ago (say, a snapshot still streaming to it): its
                # link is gone, and so is the need to reach it.
                continue
            if len(link.queue) < MAX_QUEUED:
                link.queue.append(m)
            touched[m.dst] = link
        for link in touched.values():
            if not link.write_now():
                link.wake.set()

    def reachable(self, peer: int) -> bool:
        link = self._links.get(peer)
        return link is not None and link.reachable

    def bytes_sent(self) -> Dict[int, int]:
        """Bytes written to each peer's connection so far (metrics)."""
        return {peer: link.bytes_sent for peer, link in self._links.items()}

    async def close(self) -> None:
        for link in self._links.values():
            await link.close()
