"""The Raft peer transport: the frame decoder on its own (sans-IO), then real TCP on 127.0.0.1.

Socket tests run their own event loop (asyncio.run) under a time bound and await what they
expect (a delivery, EOF) with a timeout instead of sleeping; everything is closed before they
return.
"""
import asyncio
import struct
from typing import Awaitable, List, TypeVar

import pytest

from replichat.runtime import transport
from replichat.server.launcher import free_ports
from replichat.proto import raft_pb2
from replichat.raft.messages import Entry, Message, MsgType
from replichat.runtime.transport import (
    MAGIC, MAX_FRAME, FrameDecoder, FrameError, PeerTransport, encode_frame, encode_frames, from_proto, start_peer_listener, to_proto,
)

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # bound on any single awaited event; the tests finish far sooner
PEERS = range(1, 6)  # the decoder's replica is 2
T = TypeVar("T")


def append(src: int, dst: int, index: int) -> Message:
    return Message(MsgType.APPEND, src, dst, term=3, log_term=2, index=index - 1,
                   entries=(Entry(3, index, f"command {index}".encode()),), commit=index - 1)


def run(scenario: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario, 30)

    return asyncio.run(bounded())


# --- FrameDecoder -----------------------------------------------------------------------------


def test_every_field_survives_the_round_trip() -> None:
    full = Message(MsgType.APPEND_RESP, src=4, dst=2, term=7, log_term=6, index=41,
                   entries=(Entry(6, 40, b"a"), Entry(7, 41, b"")), commit=39, reject=True,
                   reject_hint=12, hint_term=5, context=b"ctx")
    assert from_proto(to_proto(full)) == full
    # The decoder delivers only what a replica could send (no entries or context on a response).
    valid = [full._replace(entries=(), context=b""), Message(MsgType.READ_INDEX, 4, 2, term=7, context=b"ctx")]
    assert FrameDecoder(2, PEERS).feed(MAGIC + encode_frame(valid)) == [valid]


def test_a_frame_split_byte_by_byte_comes_out_whole_once() -> None:
    messages = [append(1, 2, 10), Message(MsgType.HEARTBEAT, 1, 2, term=3, commit=9)]
    data = MAGIC + encode_frame(messages)
    decoder = FrameDecoder(2, PEERS)
    outputs = [decoder.feed(data[i:i + 1]) for i in range(len(data))]
    assert outputs[:-1] == [[]] * (len(data) - 1)
    assert outputs[-1] == [messages]


def test_several_frames_in_one_chunk_come_out_in_order() -> None:
    batches = [[append(1, 2, i)] for i in range(1, 6)] + [[append(1, 2, 6), append(1, 2, 7)]]
    data = MAGIC + b"".join(encode_frame(batch) for batch in batches)
    decoder = FrameDecoder(2, PEERS)
    # Everything but the last frame's final byte, then that byte: a chunk may end mid-frame.
    assert decoder.feed(data[:-1]) == batches[:-1]
    assert decoder.feed(data[-1:]) == batches[-1:]
    assert decoder.feed(encode_frame([])) == [[]]


def test_a_large_batch_is_split_into_frames_under_the_limit(monkeypatch):
    monkeypatch.setattr(transport, "FRAME_TARGET", 10_000)
    big = [Message(MsgType.APPEND, 1, 2, term=3, log_term=3, index=i - 1,
                   entries=(Entry(3, i, bytes([i % 251]) * 3_000),), commit=0) for i in range(1, 11)]
    data = encode_frames(big)
    sizes = []
    position = 0
    while position < len(data):
        (size,) = struct.unpack_from(">I", data, position)
        sizes.append(size)
        position += 4 + size
    assert len(sizes) > 1 and max(sizes) <= 10_000
    assert [m for batch in FrameDecoder(2, PEERS).feed(MAGIC + data) for m in batch] == big
    assert encode_frames(big[:1]) == encode_frame(big[:1])


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"GET / HTTP/1.1\r\n\r\n", "bad greeting"),
        (b"RCR2" + encode_frame([append(1, 2, 1)]), "bad greeting"),
        # Refused on the length alone: the decoder never buffers an oversized frame.
        (MAGIC + struct.pack(">I", MAX_FRAME + 1), "exceeds the limit"),
        (MAGIC + _frame(b"\x0a\x05ab"), "undecodable"),
        (MAGIC + encode_frame([append(1, 2, 1)]) + _frame(b"\xff\xff\xff"), "undecodable"),
        (MAGIC + encode_frame([append(1, 3, 1)]), "for replica 3"),
        # The core would answer a replica the transport does not know: the node would stop.
        (MAGIC + encode_frame([append(9, 2, 1)]), "from replica 9, not a peer"),
        (MAGIC + encode_frame([append(2, 2, 1)]), "from replica 2, not a peer"),
        (MAGIC + _frame(raft_pb2.MessageBatch(messages=[raft_pb2.Message(type=99, to=2)]).SerializeToString()),
         "unknown type 99"),
        (MAGIC + _frame(raft_pb2.MessageBatch(messages=[raft_pb2.Message(type=0, to=2)]).SerializeToString()),
         "unknown type 0"),
    ],
    ids=["http", "wrong-magic", "oversize", "undecodable", "undecodable-after-good", "other-replica",
         "unknown-sender", "from-itself", "unknown-type", "type-zero"],
)
def test_bad_input_is_a_frame_error(data: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        FrameDecoder(2, PEERS).feed(data)


def test_a_greeting_split_across_reads_is_judged_once_complete() -> None:
    decoder = FrameDecoder(2, PEERS)
    assert decoder.feed(MAGIC[:2]) == []  # not yet four bytes: nothing to judge
    with pytest.raises(FrameError, match="bad greeting"):
        decoder.feed(b"XX")


# --- over TCP -----------------------------------------------------------------------------------


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = WAIT) -> bool:
    """Whether the other end closed the connection (EOF, or the reset of an abort) without
    sending anything; a connection left open fails with a timeout."""
    try:
        return await asyncio.wait_for(reader.read(1), timeout) == b""
    except ConnectionResetError:
        return True


class Inbox:
    """A deliver callback that records batches and resolves a future once `expected`
    messages have arrived."""

    def __init__(self, expected: int) -> None:
        self.messages: List[Message] = []
        self.expected = expected
        self.done: "asyncio.Future[None]" = asyncio.get_event_loop().create_future()

    def deliver(self, messages: List[Message]) -> None:
        self.messages.extend(messages)
        if len(self.messages) >= self.expected and not self.done.done():
            self.done.set_result(None)


def test_two_transports_deliver_each_others_messages_in_order() -> None:
    async def scenario() -> None:
        ports = free_ports(2)
        addresses = {1: f"127.0.0.1:{ports[0]}", 2: f"127.0.0.1:{ports[1]}"}
        count = 500
        inboxes = {1: Inbox(count), 2: Inbox(count)}
        listeners = {
            i: await start_peer_listener(i, inboxes[i].deliver, "127.0.0.1", ports[i - 1], senders=addresses) for i in (1, 2)
        }
        transports = {i: PeerTransport(i, addresses) for i in (1, 2)}
        sent = {1: [append(2, 1, i) for i in range(1, count + 1)], 2: [append(1, 2, i) for i in range(1, count + 1)]}
        try:
            for transport in transports.values():
                transport.start()
            # Several sends per loop turn and some across turns: both one frame carrying many
            # messages and many frames.
            for start in range(0, count, 50):
                transports[1].send(sent[2][start:start + 25])
                transports[1].send(sent[2][start + 25:start + 50])
                transports[2].send(sent[1][start:start + 50])
                await asyncio.sleep(0)
            await asyncio.wait_for(asyncio.gather(inboxes[1].done, inboxes[2].done), WAIT)
            assert inboxes[1].messages == sent[1]
            assert inboxes[2].messages == sent[2]
            assert transports[1].reachable(2) and transports[2].reachable(1)
        finally:
            for i in (1, 2):
                await asyncio.wait_for(transports[i].close(), WAIT)
                listeners[i].close()
                await asyncio.wait_for(listeners[i].wait_closed(), WAIT)

    run(scenario())


def test_a_connected_idle_link_writes_in_the_senders_turn_and_never_reorders() -> None:
    """Once connected, `send` writes a frame at once (no turn of the loop in between), which
    keeps a leader's TLS writes from landing while its disk thread saves; a frame sent while
    the link's task is still writing or connecting waits behind it, so nothing overtakes."""

    async def scenario() -> None:
        (port,) = free_ports(1)
        addresses = {1: "127.0.0.1:1", 2: f"127.0.0.1:{port}"}
        first_two, inbox = Inbox(2), Inbox(4)

        def deliver(messages: List[Message]) -> None:
            first_two.deliver(messages)
            inbox.deliver(messages)

        listener = await start_peer_listener(2, deliver, "127.0.0.1", port, senders=addresses)
        sender = PeerTransport(1, addresses)
        try:
            sender.start()
            # Not connected yet: the first send goes through the link's task (it connects), and
            # a second one in the same turn queues behind it rather than overtaking it.
            sender.send([append(1, 2, 1)])
            sender.send([append(1, 2, 2)])
            assert sender.bytes_sent() == {2: 0}
            await asyncio.wait_for(first_two.done, WAIT)
            # Connected and idle: written before send returns.
            before = sender.bytes_sent()[2]
            sender.send([append(1, 2, 3)])
            assert sender.bytes_sent()[2] > before
            sender.send([append(1, 2, 4)])
            await asyncio.wait_for(inbox.done, WAIT)
            assert inbox.messages == [append(1, 2, i) for i in range(1, 5)]
        finally:
            await asyncio.wait_for(sender.close(), WAIT)
            listener.close()
            await asyncio.wait_for(listener.wait_closed(), WAIT)

    run(scenario())


def test_closing_a_listener_drops_its_connections_and_a_sender_reconnects_after_a_restart() -> None:
    async def scenario() -> None:
        (port,) = free_ports(1)
        first = Inbox(1)
        listener = await start_peer_listener(2, first.deliver, "127.0.0.1", port, senders=[1])
        sender = PeerTransport(1, {1: "127.0.0.1:1", 2: f"127.0.0.1:{port}"})
        sender.start()
        # A connection the listener accepted, from a raw socket that sent the greeting only.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(MAGIC)
        try:
            sender.send([append(1, 2, 1)])
            await asyncio.wait_for(first.done, WAIT)

            listener.close()
            # Python 3.12+'s Server.wait_closed() would wait for the accepted connections
            # forever if close() left them open.
            await asyncio.wait_for(listener.wait_closed(), WAIT)
            assert await closed_by_peer(reader)

            # The replica comes back on the same port: Raft resends, the link reconnects.
            again = Inbox(1)
            listener = await start_peer_listener(2, again.deliver, "127.0.0.1", port, senders=[1])
            for index in range(2, 1000):
                sender.send([append(1, 2, index)])
                await asyncio.wait([again.done], timeout=0.05)
                if again.done.done():
                    break
            assert again.done.done(), "the sender never reconnected"
        finally:
            writer.close()
            await asyncio.wait_for(sender.close(), WAIT)
            listener.close()
            await asyncio.wait_for(listener.wait_closed(), WAIT)

    run(scenario())


def test_a_connection_that_never_greets_is_closed_and_connections_are_capped(monkeypatch) -> None:
    monkeypatch.setattr(transport, "GREETING_TIMEOUT_S", 0.2)
    monkeypatch.setattr(transport, "MAX_CONNECTIONS", 3)

    async def scenario() -> None:
        (port,) = free_ports(1)
        inbox = Inbox(1)
        listener = await start_peer_listener(2, inbox.deliver, "127.0.0.1", port, senders=[1])
        opened = []
        try:
            silent = await asyncio.open_connection("127.0.0.1", port)
            opened.append(silent)
            silent[1].write(MAGIC[:2])  # half a greeting, then nothing
            greeted = await asyncio.open_connection("127.0.0.1", port)
            opened.append(greeted)
            greeted[1].write(MAGIC)
            assert await closed_by_peer(silent[0])  # after GREETING_TIMEOUT_S

            # The greeted connection is still open and delivers; two more fit under the cap.
            extra = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            opened.extend(extra)
            for _, writer in extra:
                writer.write(MAGIC)
            refused = await asyncio.open_connection("127.0.0.1", port)
            opened.append(refused)
            assert await closed_by_peer(refused[0])
            greeted[1].write(encode_frame([append(1, 2, 1)]))
            await asyncio.wait_for(inbox.done, WAIT)
            assert inbox.messages == [append(1, 2, 1)]
        finally:
            for _, writer in opened:
                writer.close()
            listener.close()
            await asyncio.wait_for(listener.wait_closed(), WAIT)

    run(scenario())


def test_an_invalid_message_is_dropped_and_the_rest_of_its_frame_delivered(caplog) -> None:
    decoder = FrameDecoder(2, PEERS)
    bad = Message(MsgType.HEARTBEAT, 1, 2, term=(1 << 63) - 1)
    wrong_index = append(1, 2, 5)._replace(entries=(Entry(3, 9, b"x"),))
    good = append(1, 2, 5)
    assert decoder.feed(MAGIC + encode_frame([bad, good, wrong_index])) == [[good]]
    assert decoder.dropped.count == 2
    assert "term 9223372036854775807 out of range" in caplog.text and "expected 5" in caplog.text


def test_a_message_claiming_another_sender_than_the_authenticated_peer_is_dropped() -> None:
    decoder = FrameDecoder(2, PEERS)
    decoder.authenticated_peer = 3
    forged = append(1, 2, 1)
    real = append(3, 2, 1)
    assert decoder.feed(MAGIC + encode_frame([forged, real])) == [[real]]
    assert decoder.dropped.count == 1 and decoder.peer == 3


def test_frame_limits_stalled_frames_idle_strangers_and_connections_per_peer(monkeypatch, caplog) -> None:
    monkeypatch.setattr(transport, "FRAME_TIMEOUT_S", 0.3)
    monkeypatch.setattr(transport, "FIRST_FRAME_TIMEOUT_S", 0.3)
    monkeypatch.setattr(transport, "MAX_BUFFERED_TOTAL", 100_000)

    async def scenario() -> None:
        (port,) = free_ports(1)
        listener = await start_peer_listener(2, Inbox(1).deliver, "127.0.0.1", port, senders=[1, 3])
        opened = []

        async def connect(data: bytes) -> asyncio.StreamReader:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            opened.append(writer)
            writer.write(data)
            await writer.drain()
            return reader

        def half_frame(src: int, held: int) -> bytes:
            return MAGIC + encode_frame([append(src, 2, 1)]) + struct.pack(">I", 90_000) + bytes(held)

        try:
            # Greets, then says nothing: not a peer's sender.
            assert await closed_by_peer(await connect(MAGIC))
            assert "no message from a peer within 0.3s" in caplog.text
            # Starts a frame and stalls: its memory is not held beyond FRAME_TIMEOUT_S.
            assert await closed_by_peer(await connect(half_frame(1, 10)))
            assert "a frame did not complete within 0.3s" in caplog.text
            # Two half frames that together pass the listener's total: the second is closed.
            await connect(half_frame(3, 60_000))
            assert await closed_by_peer(await connect(half_frame(3, 60_000)))
            assert "half-received frames of all connections hold" in caplog.text
            # A third connection from replica 1 closes the oldest: at most two per peer.
            oldest = await connect(MAGIC + encode_frame([append(1, 2, 1)]))
            for _ in range(2):
                await connect(MAGIC + encode_frame([append(1, 2, 1)]))
            assert await closed_by_peer(oldest)
            assert "at most 2 per peer" in caplog.text
        finally:
            for writer in opened:
                writer.close()
            listener.close()
            await asyncio.wait_for(listener.wait_closed(), WAIT)

    run(scenario())


# --- mutual TLS ---------------------------------------------------------------------------------


def test_peers_with_cluster_certificates_talk_and_everyone_else_is_refused(tmp_path, caplog) -> None:
    from replichat.security import certs, tls

    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    certs.init_certs(ours, {1: ["127.0.0.1"], 2: ["127.0.0.1"], 3: ["127.0.0.1"], 9: ["127.0.0.1"]})
    certs.init_certs(theirs, {1: ["127.0.0.1"]})  # another cluster's CA, same replica id

    def contexts(directory: str, replica: int):
        paths = certs.replica_paths(directory, replica)
        return tls.peer_server_context(paths), tls.peer_client_context(paths)

    async def scenario() -> None:
        ports = free_ports(2)
        addresses = {1: f"127.0.0.1:{ports[0]}", 2: f"127.0.0.1:{ports[1]}", 3: "127.0.0.1:1"}
        inbox = Inbox(2)
        server_2, _ = contexts(ours, 2)
        listener = await start_peer_listener(2, inbox.deliver, "127.0.0.1", ports[1], senders=addresses,
                                             ssl_context=server_2)
        _, client_1 = contexts(ours, 1)
        _, client_3 = contexts(ours, 3)
        _, client_9 = contexts(ours, 9)
        _, stranger = contexts(theirs, 1)
        senders = {
            "replica 1": PeerTransport(1, addresses, client_1),
            "another CA": PeerTransport(1, addresses, stranger),
            "not a member": PeerTransport(9, {9: "x:1", 2: addresses[2]}, client_9),
        }
        # Replica 3's certificate, pretending replica 1 is dialling replica 2 at 1's address:
        # the dialler notices that the certificate there is not the peer it meant.
        misdirected = PeerTransport(1, {1: addresses[1], 2: addresses[2], 3: addresses[2]}, client_1)
        try:
            for transport in [*senders.values(), misdirected]:
                transport.start()
            senders["another CA"].send([append(1, 2, 1)])
            senders["not a member"].send([Message(MsgType.HEARTBEAT, 9, 2, term=1)])
            misdirected.send([Message(MsgType.HEARTBEAT, 1, 3, term=1)])
            # Replica 3 (authenticated) claims to be replica 1: dropped; its own message passes.
            forger = PeerTransport(3, addresses, client_3)
            senders["forger"] = forger
            forger.start()
            forger.send([append(1, 2, 1), append(3, 2, 1)])
            senders["replica 1"].send([append(1, 2, 7)])
            await asyncio.wait_for(inbox.done, WAIT)
            assert sorted(inbox.messages) == sorted([append(3, 2, 1), append(1, 2, 7)])
            assert "authenticated as replica 3" in caplog.text
            assert "its certificate names replica 9, not a peer" in caplog.text
            assert "is replica 2's, not replica 3's" in caplog.text
            assert not senders["another CA"].reachable(2)
            # A plain TCP client cannot even start: the port speaks TLS.
            reader, writer = await asyncio.open_connection("127.0.0.1", ports[1])
            writer.write(MAGIC + encode_frame([append(1, 2, 8)]))
            assert await closed_by_peer(reader)
            writer.close()
            assert len(inbox.messages) == 2
        finally:
            for transport in [*senders.values(), misdirected]:
                await asyncio.wait_for(transport.close(), WAIT)
            listener.close()
            await asyncio.wait_for(listener.wait_closed(), WAIT)

    run(scenario())
