"""Streaming a snapshot file in chunks: window, loss and resend, checks on every chunk and file."""
import asyncio
import hashlib
import os
import threading
import zlib

import pytest

from replichat.integrity import CorruptDataError
from replichat.proto import raft_pb2
from replichat.runtime import snapshot_runtime
from replichat.raft.messages import Message, MsgType
from replichat.runtime.snapshot_runtime import MAX_QUEUED_CHUNKS, SnapshotRuntime
from replichat.runtime.storage import SnapshotMeta as StoredSnapshot
from replichat.runtime.snapshot_transfer import (
    IncomingSnapshot,
    OutgoingSnapshot,
    SnapshotAck,
    ack_from_proto,
    ack_to_proto,
    chunk_from_proto,
    chunk_to_proto,
)


@pytest.fixture
def snapshot_file(tmp_path):
    data = os.urandom(10_000)
    path = tmp_path / "leader.db"
    path.write_bytes(data)
    return str(path), len(data), hashlib.sha256(data).hexdigest(), data


def outgoing(snapshot_file, **kw) -> OutgoingSnapshot:
    path, size, checksum, _ = snapshot_file
    return OutgoingSnapshot(1, 2, 5, 700, 4, path, size, checksum, **kw)


def test_the_file_arrives_whole_within_the_window(tmp_path, snapshot_file) -> None:
    sender = outgoing(snapshot_file, chunk_bytes=1000, window=3)
    receiver = IncomingSnapshot(2, str(tmp_path / "follower"))
    done = None
    rounds = 0
    while done is None:
        chunks = sender.chunks_to_send()
        assert 0 < len(chunks) <= 3 and sender.sent_to - sender.acked <= 3000
        for chunk in chunks:
            ack, name = receiver.accept(chunk)
            result = sender.on_ack(ack)
            if name is not None:
                assert result is True
                done = name
        rounds += 1
    assert rounds >= 4
    assert (tmp_path / "follower" / done).read_bytes() == snapshot_file[3]
    assert sender.chunks_to_send() == []
    sender.close()


def test_a_lost_chunk_is_sent_again(tmp_path, snapshot_file) -> None:
    sender = outgoing(snapshot_file, chunk_bytes=1000, window=4)
    receiver = IncomingSnapshot(2, str(tmp_path / "follower"))
    first = sender.chunks_to_send()
    lost = first[1]
    for chunk in first:
        if chunk is not lost:
            sender.on_ack(receiver.accept(chunk)[0])
    assert sender.sent_to == lost.offset  # rewound to the gap
    name = None
    while name is None:
        for chunk in sender.chunks_to_send():
            ack, name = receiver.accept(chunk)
            sender.on_ack(ack)
    assert (tmp_path / "follower" / name).read_bytes() == snapshot_file[3]


def test_a_damaged_chunk_makes_the_follower_refuse_and_keep_nothing(tmp_path, snapshot_file) -> None:
    sender = outgoing(snapshot_file, chunk_bytes=1000)
    receiver = IncomingSnapshot(2, str(tmp_path / "follower"))
    chunk = sender.chunks_to_send()[0]
    # Flip the first byte (the file is random: replacing it with a fixed byte left it
    # unchanged once in 256 runs, and the test failed).
    ack, name = receiver.accept(chunk._replace(data=bytes([chunk.data[0] ^ 0xFF]) + chunk.data[1:]))
    assert ack.refused and "fails its CRC" in ack.reason and name is None
    assert sender.on_ack(ack) is False
    assert not os.path.exists(tmp_path / "follower" / "snapshots" / "incoming.tmp")


def test_a_file_whose_chunks_pass_but_whole_differs_is_refused(tmp_path, snapshot_file) -> None:
    path, size, checksum, data = snapshot_file
    wrong = hashlib.sha256(b"other").hexdigest()
    receiver = IncomingSnapshot(2, str(tmp_path / "follower"))
    sender = OutgoingSnapshot(1, 2, 5, 700, 4, path, size, checksum, chunk_bytes=4000, window=10)
    chunks = [c._replace(checksum=wrong) for c in sender.chunks_to_send()]
    results = [receiver.accept(c) for c in chunks]
    assert results[-1][0].refused and "SHA-256" in results[-1][0].reason and results[-1][1] is None
    assert not os.listdir(tmp_path / "follower" / "snapshots")


def test_the_sender_refuses_a_file_that_changed_on_disk(snapshot_file) -> None:
    path, size, checksum, data = snapshot_file
    with open(path, "r+b") as f:
        f.seek(5000)
        f.write(bytes([data[5000] ^ 1]))
    with pytest.raises(CorruptDataError):
        OutgoingSnapshot(1, 2, 5, 700, 4, path, size, checksum)


def test_hostile_chunks_are_refused_before_they_cost_anything(tmp_path) -> None:
    receiver = IncomingSnapshot(2, str(tmp_path / "follower"))
    base = chunk_from_proto(raft_pb2.SnapshotChunk(term=1, index=5, total_size=10, checksum="0" * 64))
    huge = b"x" * (5 << 20)
    cases = {
        "at most": base._replace(data=huge, crc=zlib.crc32(huge), total_size=len(huge), last=True),
        "bytes, at most": base._replace(total_size=1 << 50),
        "past the end": base._replace(data=b"abc", crc=zlib.crc32(b"abc"), offset=9),
        "last flag": base._replace(data=b"abc", crc=zlib.crc32(b"abc"), last=True),
        "malformed": base._replace(data=b"abc", crc=zlib.crc32(b"abc"), checksum="x"),
    }
    for expected, chunk in cases.items():
        ack, name = receiver.accept(chunk)
        assert ack.refused and expected in ack.reason and name is None, (expected, ack)
    assert not os.path.exists(tmp_path / "follower" / "snapshots")


def test_a_chunk_of_an_unknown_transfer_not_at_the_start_asks_for_the_start(tmp_path, snapshot_file) -> None:
    sender = outgoing(snapshot_file, chunk_bytes=1000, window=4)
    receiver = IncomingSnapshot(2, str(tmp_path / "follower"))
    chunks = sender.chunks_to_send()
    ack, _ = receiver.accept(chunks[2])
    assert (ack.offset, ack.refused) == (0, False)
    sender.on_ack(ack)
    assert sender.sent_to == 0


def test_a_follower_that_restarted_mid_transfer_gets_the_file_again_from_the_start(tmp_path, snapshot_file) -> None:
    sender = outgoing(snapshot_file, chunk_bytes=1000, window=4)
    receiver = IncomingSnapshot(2, str(tmp_path / "follower"))
    for chunk in sender.chunks_to_send()[:3]:
        sender.on_ack(receiver.accept(chunk)[0])
    assert sender.acked == 3000
    # It restarts (its partial file is gone) and everything in flight was lost with the
    # connection. Nothing arrives, so after a quiet while the sender resends from what was
    # acknowledged; the new receiver asks for the start, below that: the sender goes back.
    receiver = IncomingSnapshot(2, str(tmp_path / "follower"))
    resent = sender.rewind()
    assert resent[0].offset == 3000
    ack, _ = receiver.accept(resent[0])
    assert (ack.offset, ack.resend) == (0, True)
    sender.on_ack(ack)
    assert (sender.acked, sender.sent_to) == (0, 0)
    name = None
    while name is None:
        for chunk in sender.chunks_to_send():
            ack, name = receiver.accept(chunk)
            assert sender.on_ack(ack) is (True if name else None)
    assert (tmp_path / "follower" / name).read_bytes() == snapshot_file[3]


def test_chunks_and_acks_survive_the_wire_form() -> None:
    ack = SnapshotAck(2, 1, 5, 700, 3000, True, "why", True)
    assert ack_from_proto(raft_pb2.SnapshotAck.FromString(ack_to_proto(ack).SerializeToString())) == ack
    chunk = chunk_from_proto(raft_pb2.SnapshotChunk(term=1, index=5, total_size=10, checksum="0" * 64))._replace(src=3, dst=4, data=b"d", last=True)
    wire = chunk_to_proto(chunk).SerializeToString()
    assert chunk_from_proto(raft_pb2.SnapshotChunk.FromString(wire)) == chunk


def test_chunks_and_acks_share_frames_with_messages_and_reach_their_own_handler() -> None:
    from replichat.raft.messages import Message, MsgType
    from replichat.runtime.transport import MAGIC, FrameDecoder, FrameError, encode_frames

    chunk = chunk_from_proto(raft_pb2.SnapshotChunk(term=1, index=5, total_size=3, checksum="0" * 64))._replace(
        src=1, dst=2, data=b"abc", crc=zlib.crc32(b"abc"), last=True)
    ack = SnapshotAck(1, 2, 1, 5, 3)
    heartbeat = Message(MsgType.HEARTBEAT, 1, 2, 1)
    decoder = FrameDecoder(2, {1, 2, 3})
    batches = decoder.feed(MAGIC + encode_frames([heartbeat, chunk, ack]))
    assert batches == [[heartbeat]]  # the core sees only messages
    assert decoder.take_snapshot_parts() == [chunk, ack]
    assert decoder.take_snapshot_parts() == []
    big = [chunk._replace(data=b"x" * (1 << 20), offset=n << 20) for n in range(10)]
    assert len(FrameDecoder(2, {1}).feed(MAGIC + encode_frames(big))) >= 2  # split near the frame target
    with pytest.raises(FrameError, match="not from a peer"):
        FrameDecoder(2, {1, 2}).feed(MAGIC + encode_frames([chunk._replace(src=9)]))


# ------------------------------------------------------------------ in the asyncio runtime


def receiving_runtime(tmp_path, sent: list, stepped: list) -> SnapshotRuntime:
    """A runtime with only what receiving needs: sending acks and stepping the SNAPSHOT message."""
    def unused(*args: object, **kwargs: object) -> None:
        raise AssertionError("receiving a snapshot touched something it must not")

    return SnapshotRuntime(
        2, str(tmp_path / "follower"), str(tmp_path / "follower" / "state.db"), unused, unused, unused, unused, unused,
        sent.extend, stepped.extend, lambda: None,
    )


def test_a_slow_fsync_of_a_received_snapshot_does_not_stop_the_event_loop(tmp_path, snapshot_file, monkeypatch) -> None:
    sent: list = []
    stepped: list = []
    fsync_started = threading.Event()
    loop_ran = threading.Event()
    loop_ran_during_fsync: list = []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        # Held until the event loop shows it still runs (at most 5 s: on the loop itself this
        # wait could never end early, and the test fails instead of hanging).
        fsync_started.set()
        loop_ran_during_fsync.append(loop_ran.wait(5))
        real_fsync(fd)

    async def scenario() -> None:
        runtime = receiving_runtime(tmp_path, sent, stepped)
        sender = outgoing(snapshot_file, chunk_bytes=1000, window=10)
        for chunk in sender.chunks_to_send():
            runtime.on_chunk(chunk)
        await asyncio.get_event_loop().run_in_executor(None, fsync_started.wait, 5)
        loop_ran.set()
        while not stepped and runtime.failure is None:
            await asyncio.sleep(0.01)  # bounded by the 5 s above plus one fsync
        await runtime.close()
        assert runtime.failure is None

    monkeypatch.setattr(os, "fsync", slow_fsync)
    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert loop_ran_during_fsync and all(loop_ran_during_fsync), "the event loop stopped during the fsync"
    assert [m.type for m in stepped] == [MsgType.SNAPSHOT] and stepped[0].index == 700
    assert [a.offset for a in sent] == [1000 * i for i in range(1, 11)] and not any(a.refused for a in sent)
    snapshots = tmp_path / "follower" / "snapshots"
    assert [p.read_bytes() for p in snapshots.glob("snapshot-*.db")] == [snapshot_file[3]]


def test_a_flood_of_chunks_is_bounded_and_what_was_kept_is_written_in_order(tmp_path, snapshot_file) -> None:
    sent: list = []
    stepped: list = []

    async def scenario() -> None:
        runtime = receiving_runtime(tmp_path, sent, stepped)
        chunks = outgoing(snapshot_file, chunk_bytes=100, window=100).chunks_to_send()
        assert len(chunks) == 100
        for chunk in chunks:  # all before the loop runs anything: a sender ignoring its window
            runtime.on_chunk(chunk)
        while runtime._receiving is not None:
            await runtime._receiving
        await runtime.close()
        assert runtime.failure is None

    asyncio.run(asyncio.wait_for(scenario(), 30))
    # The first MAX_QUEUED_CHUNKS were written in order; the rest were dropped unread, so the
    # sender is owed a resend from there (it rewinds after its stall timeout) and nothing was stepped.
    assert [a.offset for a in sent] == [100 * i for i in range(1, MAX_QUEUED_CHUNKS + 1)]
    assert stepped == []


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_quiet_transfer_is_resent_once_a_second_and_given_up_after_the_stall_timeout(
    tmp_path, snapshot_file, monkeypatch
) -> None:
    path, size, checksum, _ = snapshot_file
    sent: list = []
    reports: list = []
    clock = ManualClock()
    monkeypatch.setattr(snapshot_runtime.time, "monotonic", clock)

    class Driver:
        def snapshot_sent(self, peer: int, success: bool) -> None:
            reports.append((peer, success))

    async def scenario() -> None:
        runtime = receiving_runtime(tmp_path, sent, [])
        runtime._driver = Driver
        runtime.data_dir = os.path.dirname(path)
        runtime.recorded = StoredSnapshot(700, 4, os.path.basename(path), size, checksum)
        runtime.send_snapshots([Message(MsgType.SNAPSHOT, 1, 2, 5, log_term=4, index=700)])
        await asyncio.gather(*runtime._openers)
        assert [c.offset for c in sent] == [0]  # one chunk: the file is small
        for seconds, resent in ((0.5, False), (0.6, True), (0.5, False), (0.6, True)):
            clock.now += seconds
            sent.clear()
            runtime.check_stalled()
            assert [c.offset for c in sent] == ([0] if resent else []), seconds
        assert reports == []
        clock.now += snapshot_runtime.STALL_TIMEOUT_S
        runtime.check_stalled()
        assert reports == [(2, False)]
        await runtime.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
