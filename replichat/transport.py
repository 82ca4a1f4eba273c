"""Peer-to-peer Raft messages over gRPC.

Each peer gets one sender task writing to one long-lived client stream: messages queued while
a write is in progress go together in the next batch, so under load one write carries many
appends, and messages to a peer arrive in the order the core produced them. Raft tolerates
loss, so a broken stream is replaced and its messages dropped rather than retried: the core
resends what matters on its next heartbeat.
"""
import asyncio
import logging
from typing import AsyncIterator, Callable, Dict, List, Optional

import grpc

from replichat.proto import raft_pb2, raft_pb2_grpc
from replichat.raft.messages import Entry, Message, MsgType

log = logging.getLogger(__name__)

# Reconnect quickly to a replica that comes back: gRPC's default backoff grows to two minutes.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]
WRITE_TIMEOUT_S = 2.0
RETRY_PAUSE_S = 0.05
# A peer that is down must not make its queue grow without bound.
MAX_QUEUED = 50_000
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


class PeerServicer(raft_pb2_grpc.RaftPeerServicer):
    """Receives batches from peers and hands them to the node (which steps them in its loop)."""

    def __init__(self, self_id: int, deliver: Callable[[List[Message]], None]) -> None:
        self._self_id = self_id
        self._deliver = deliver

    async def Stream(
        self, request_iterator: AsyncIterator[raft_pb2.MessageBatch], context: grpc.aio.ServicerContext
    ) -> raft_pb2.DeliverReply:
        async for batch in request_iterator:
            messages = []
            for p in batch.messages:
                if p.to != self._self_id or p.type not in _MESSAGE_TYPES:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"message for replica {p.to} or of unknown type {p.type}")
                messages.append(from_proto(p))
            self._deliver(messages)
        return raft_pb2.DeliverReply()


class _PeerLink:
    """The stream to one peer. Writes do not wait for the peer to answer (HTTP/2 flow control
    is the only back-pressure), so a heartbeat is never stuck behind a round trip."""

    def __init__(self, peer: int, address: str) -> None:
        self.peer = peer
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = raft_pb2_grpc.RaftPeerStub(self.channel)
        self.queue: List[Message] = []
        self.wake = asyncio.Event()
        self.task: Optional["asyncio.Task[None]"] = None
        self.reachable = True
        self._call: Optional[grpc.aio.StreamUnaryCall] = None
        self.closing = False

    async def run(self) -> None:
        while not self.closing:
            await self.wake.wait()
            self.wake.clear()
            batch, self.queue = self.queue, []
            if batch:
                await self._write(raft_pb2.MessageBatch(messages=[to_proto(m) for m in batch]))
            if self.queue:
                self.wake.set()

    async def _write(self, batch: raft_pb2.MessageBatch) -> None:
        try:
            if self._call is None or self._call.done():
                self._call = self.stub.Stream(wait_for_ready=False)
            # A peer that stopped reading (SIGSTOP, partition) fills the flow-control window:
            # give up on this stream rather than queue behind it forever.
            await asyncio.wait_for(self._call.write(batch), WRITE_TIMEOUT_S)
            if not self.reachable:
                log.info("replica %d at %s is reachable again", self.peer, self.address)
                self.reachable = True
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, asyncio.TimeoutError, grpc.aio.UsageError) as error:
            if self.reachable:
                reason = error.code().name if isinstance(error, grpc.aio.AioRpcError) else type(error).__name__
                log.warning("replica %d at %s unreachable: %s", self.peer, self.address, reason)
                self.reachable = False
            if self._call is not None:
                self._call.cancel()
                self._call = None
            # Raft resends what matters; pause briefly so a dead peer costs no busy loop.
            await asyncio.sleep(RETRY_PAUSE_S)

    async def close(self) -> None:
        self.closing = True
        # Cancel the call first: a write blocked inside gRPC may absorb the task's own
        # cancellation, and the loop above then ends on the `closing` flag instead.
        if self._call is not None:
            self._call.cancel()
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task], timeout=WRITE_TIMEOUT_S)
        await self.channel.close()


class PeerTransport:
    def __init__(self, self_id: int, addresses: Dict[int, str]) -> None:
        self._links = {peer: _PeerLink(peer, address) for peer, address in addresses.items() if peer != self_id}

    def start(self) -> None:
        for link in self._links.values():
            link.task = asyncio.ensure_future(link.run())

    def send(self, messages: List[Message]) -> None:
        for m in messages:
            link = self._links.get(m.dst)
            if link is None:
                raise AssertionError(f"message for unknown replica {m.dst}")
            if len(link.queue) < MAX_QUEUED:
                link.queue.append(m)
            link.wake.set()

    def reachable(self, peer: int) -> bool:
        return self._links[peer].reachable

    async def close(self) -> None:
        for link in self._links.values():
            await link.close()
