"""Streaming a snapshot file from the leader to a follower: in chunks, in order, flow-controlled.

The leader's core decides *that* a follower needs a snapshot (a SNAPSHOT message); this module
moves the file. The sender keeps at most `window` chunks unacknowledged (go-back-N: an
acknowledgement below what was sent rewinds it, so a chunk lost with a broken connection is sent
again); the receiver accepts chunks only in order and writes them to a temporary file. Every
chunk carries a CRC-32 of its bytes and the whole file's size and SHA-256; the sender verifies
the file against its recorded checksum before it sends a byte, the receiver checks each chunk
and, at the end, the whole file, then fsyncs and renames it into place. Only then does the
follower's runtime step the SNAPSHOT message into its core, which decides whether to install it.

Everything a peer sends is bounded before it costs anything: chunk size, file size, and one
transfer in progress per receiver (a newer one replaces it).
"""
import hashlib
import os
import zlib
from typing import BinaryIO, List, NamedTuple, Optional, Tuple

from replichat.chat.snapshot import SNAPSHOT_DIR, verify_snapshot
from replichat.crashpoints import crash_point
from replichat.proto import raft_pb2

CHUNK_BYTES = 1 << 20
WINDOW_CHUNKS = 4
# Largest chunk a receiver accepts, and largest snapshot file.
MAX_CHUNK_BYTES = 4 << 20
MAX_SNAPSHOT_BYTES = 1 << 40


class SnapshotChunk(NamedTuple):
    src: int
    dst: int
    term: int
    index: int
    snapshot_term: int
    offset: int
    data: bytes
    crc: int
    total_size: int
    checksum: str
    last: bool
    # The configuration in effect at the snapshot's index (raft/membership.py's encoding;
    # empty from a leader whose cluster never changed its membership): the follower's
    # configuration once it installs the snapshot. Validated by the core before use.
    membership: bytes = b""


class SnapshotAck(NamedTuple):
    src: int
    dst: int
    term: int
    index: int
    offset: int
    refused: bool = False
    reason: str = ""
    resend: bool = False


# ------------------------------------------------------------------ wire form (raft.proto)


def chunk_to_proto(c: SnapshotChunk) -> raft_pb2.SnapshotChunk:
    p = raft_pb2.SnapshotChunk(
        to=c.dst, term=c.term, index=c.index, snapshot_term=c.snapshot_term, offset=c.offset,
        data=c.data, crc=c.crc, total_size=c.total_size, checksum=c.checksum, last=c.last, membership=c.membership,
    )
    setattr(p, "from", c.src)
    return p


def chunk_from_proto(p: raft_pb2.SnapshotChunk) -> SnapshotChunk:
    return SnapshotChunk(
        getattr(p, "from"), p.to, p.term, p.index, p.snapshot_term, p.offset, p.data, p.crc,
        p.total_size, p.checksum, p.last, p.membership,
    )


def ack_to_proto(a: SnapshotAck) -> raft_pb2.SnapshotAck:
    p = raft_pb2.SnapshotAck(
        to=a.dst, term=a.term, index=a.index, offset=a.offset, refused=a.refused, reason=a.reason, resend=a.resend
    )
    setattr(p, "from", a.src)
    return p


def ack_from_proto(p: raft_pb2.SnapshotAck) -> SnapshotAck:
    return SnapshotAck(getattr(p, "from"), p.to, p.term, p.index, p.offset, p.refused, p.reason[:200], p.resend)


# ------------------------------------------------------------------ the leader's side


class OutgoingSnapshot:
    """One transfer of one snapshot file to one follower."""

    def __init__(
        self, src: int, dst: int, term: int, index: int, snapshot_term: int, path: str, size: int, checksum: str,
        chunk_bytes: int = CHUNK_BYTES, window: int = WINDOW_CHUNKS, membership: bytes = b"",
    ) -> None:
        verify_snapshot(path, size, checksum)  # never ship bytes that changed on disk
        self.src, self.dst, self.term, self.index, self.snapshot_term = src, dst, term, index, snapshot_term
        self.path, self.size, self.checksum = path, size, checksum
        self.membership = membership
        self._chunk_bytes = chunk_bytes
        self._window = window
        self.acked = 0
        self.sent_to = 0
        self._file: Optional[BinaryIO] = open(path, "rb")

    def chunks_to_send(self) -> List[SnapshotChunk]:
        """The chunks the window allows now (none once everything sent is unacknowledged)."""
        chunks = []
        assert self._file is not None
        while self.sent_to < self.size and self.sent_to - self.acked < self._window * self._chunk_bytes:
            self._file.seek(self.sent_to)
            data = self._file.read(min(self._chunk_bytes, self.size - self.sent_to))
            if not data:
                raise OSError(f"snapshot {self.path} ended at {self.sent_to}, expected {self.size} bytes")
            chunks.append(
                SnapshotChunk(
                    self.src, self.dst, self.term, self.index, self.snapshot_term, self.sent_to, data,
                    zlib.crc32(data), self.size, self.checksum, self.sent_to + len(data) == self.size,
                    self.membership,
                )
            )
            self.sent_to += len(data)
        return chunks

    def on_ack(self, ack: SnapshotAck) -> Optional[bool]:
        """True: the follower holds the whole file. False: it refused. None: keep going."""
        if ack.index != self.index or ack.src != self.dst:
            return None
        if ack.refused:
            return False
        if ack.offset > self.sent_to:
            return None  # claims what was never sent: ignore
        if ack.resend:
            # The follower holds exactly `offset` bytes of this transfer: go back to there. A
            # chunk was lost (offset at or above what it acknowledged) or it restarted and lost
            # its partial file (below). A stale resend request only costs chunks sent twice.
            self.sent_to = ack.offset
            self.acked = ack.offset
        else:
            self.acked = max(self.acked, ack.offset)
        if self.acked == self.size:
            return True
        crash_point("snapshot-send:acked")
        return None

    def rewind(self) -> List[SnapshotChunk]:
        """Send again from the last acknowledged byte (no acknowledgement came for a while:
        the chunks or their acknowledgements were lost, say with a broken connection)."""
        self.sent_to = self.acked
        return self.chunks_to_send()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# ------------------------------------------------------------------ the follower's side


class IncomingSnapshot:
    """Receives one snapshot at a time into the data directory's snapshot folder."""

    def __init__(self, self_id: int, data_dir: str) -> None:
        self.id = self_id
        self._dir = os.path.join(data_dir, SNAPSHOT_DIR)
        self._current: Optional[Tuple[int, int, int, str, int]] = None  # leader, term, index, checksum, size
        self._received = 0
        self._file: Optional[BinaryIO] = None
        self._hash = hashlib.sha256()

    def accept(self, chunk: SnapshotChunk) -> Tuple[SnapshotAck, Optional[str]]:
        """Take one chunk. Returns the acknowledgement to send and, when the file is complete
        and verified, its path relative to the data directory."""
        problem = self._problem(chunk)
        if problem is not None:
            self._abandon()
            return self._ack(chunk, 0, problem), None
        key = (chunk.src, chunk.term, chunk.index, chunk.checksum, chunk.total_size)
        if key != self._current:
            if chunk.offset != 0:
                return self._ack(chunk, 0, resend=True), None  # a transfer we do not know: from the start
            self._abandon()
            os.makedirs(self._dir, exist_ok=True)
            self._current = key
            self._received = 0
            self._hash = hashlib.sha256()
            self._file = open(self._temp_path(), "wb")
        if chunk.offset != self._received:
            return self._ack(chunk, self._received, resend=True), None  # out of order: ask from here
        assert self._file is not None
        self._file.write(chunk.data)
        self._hash.update(chunk.data)
        self._received += len(chunk.data)
        if not chunk.last:
            crash_point("snapshot-receive:chunk")
            return self._ack(chunk, self._received), None
        return self._finish(chunk)

    def _problem(self, chunk: SnapshotChunk) -> Optional[str]:
        if len(chunk.data) > MAX_CHUNK_BYTES:
            return f"a chunk of {len(chunk.data)} bytes, at most {MAX_CHUNK_BYTES}"
        if not 0 < chunk.total_size <= MAX_SNAPSHOT_BYTES:
            return f"a snapshot of {chunk.total_size} bytes, at most {MAX_SNAPSHOT_BYTES}"
        if chunk.offset + len(chunk.data) > chunk.total_size:
            return f"a chunk past the end ({chunk.offset} + {len(chunk.data)} > {chunk.total_size})"
        if chunk.last != (chunk.offset + len(chunk.data) == chunk.total_size):
            return "a chunk whose end does not match its last flag"
        if zlib.crc32(chunk.data) != chunk.crc:
            return f"the chunk at offset {chunk.offset} fails its CRC"
        if len(chunk.checksum) != 64:
            return "a malformed file checksum"
        return None

    def _finish(self, chunk: SnapshotChunk) -> Tuple[SnapshotAck, Optional[str]]:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        if self._hash.hexdigest() != chunk.checksum:
            self._abandon()
            return self._ack(chunk, 0, "the received file fails its SHA-256"), None
        name = os.path.join(SNAPSHOT_DIR, f"snapshot-{chunk.index:020d}.db")
        final = os.path.join(os.path.dirname(self._dir), name)
        os.replace(self._temp_path(), final)
        fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._current = None
        crash_point("snapshot-receive:complete")
        return self._ack(chunk, self._received), name

    def _ack(self, chunk: SnapshotChunk, offset: int, refusal: str = "", resend: bool = False) -> SnapshotAck:
        return SnapshotAck(self.id, chunk.src, chunk.term, chunk.index, offset, bool(refusal), refusal, resend)

    def _temp_path(self) -> str:
        return os.path.join(self._dir, "incoming.tmp")

    def _abandon(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._current is not None and os.path.exists(self._temp_path()):
            os.unlink(self._temp_path())
        self._current = None
        self._received = 0

    def close(self) -> None:
        self._abandon()
