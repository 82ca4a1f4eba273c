"""docs/wire-protocol.md's examples of `error` and `ended` frames are the bytes a real replica
sends: the scenario that makes a replica send each of them, against a one-replica cluster,
compared byte for byte with tests/data/wire_vectors.json (whose first lines the doc shows)."""
import asyncio
import json
import pathlib
from typing import Dict, Tuple

import pytest

from replichat.wire import codec
from replichat.wire.codec import COMMAND_SIZE, FRAME_SIZE

pytestmark = pytest.mark.timeout(120)

ROOT = pathlib.Path(__file__).resolve().parent.parent
WAIT = 15.0
CHECKED = ("error: not found", "ended: taken over", "ended: user deleted")


def vector_frames() -> Dict[str, bytes]:
    vectors = json.loads((ROOT / "tests" / "data" / "wire_vectors.json").read_text(encoding="utf-8"))
    return {v["name"]: bytes.fromhex(v["frames"][0]["hex"]).ljust(FRAME_SIZE, b"\0")
            for v in vectors["valid"] if v["name"] in CHECKED}


class RawConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, message: codec.Message) -> None:
        self.writer.write(codec.encode(message))
        await self.writer.drain()

    async def frame_of(self, command: str) -> bytes:
        """The next frame whose command is `command` (skipping others), as sent."""
        while True:
            frame = await asyncio.wait_for(self.reader.readexactly(FRAME_SIZE), WAIT)
            if frame[:COMMAND_SIZE].rstrip(b"\0").decode() == command:
                return frame


async def _open(address: str) -> RawConnection:
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), WAIT)
    return RawConnection(reader, writer)


async def _real_frames(address: str) -> Dict[str, bytes]:
    a, b, c = await _open(address), await _open(address), await _open(address)
    try:
        await a.request(codec.Create("user3"))
        created = codec.decode_response(await a.frame_of("created"))
        assert isinstance(created, codec.Created) and created.credential  # the server made it
        for other in (b, c):  # log them in as user3: connect and delete need its credential
            await other.request(codec.Auth("user3", created.credential))
            await other.frame_of("authed")
        await a.request(codec.Send("bob", "hi"))
        not_found = await a.frame_of("error")
        await a.request(codec.Connect("user3"))
        await a.frame_of("connected")
        await b.request(codec.Connect("user3"))
        await b.frame_of("connected")
        taken_over = await a.frame_of("ended")
        await c.request(codec.Delete("user3"))
        await c.frame_of("deleted")
        deleted = await b.frame_of("ended")
    finally:
        for connection in (a, b, c):
            connection.writer.close()
    return {"error: not found": not_found, "ended: taken over": taken_over, "ended: user deleted": deleted}


def test_error_and_ended_examples_are_what_a_replica_sends(process_cluster) -> None:
    cluster = process_cluster(1, wire=True)
    asyncio.run(cluster.wait_for_leader(timeout=WAIT))
    real = asyncio.run(_real_frames(cluster.wire_addresses[1]))
    documented = vector_frames()
    assert set(documented) == set(CHECKED)
    for name in CHECKED:
        assert real[name] == documented[name], (name, real[name].rstrip(b"\0"), documented[name].rstrip(b"\0"))


def _xxd_lines(data: bytes) -> Tuple[str, ...]:
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset:offset + 16]
        words = " ".join(chunk[i:i + 2].hex() for i in range(0, len(chunk), 2))
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}: {words:<39}  {text}")
    return tuple(lines)


def test_the_doc_shows_these_vectors_lines() -> None:
    """Every line the doc shows of these examples (at most three per frame) is the vector's."""
    spec = (ROOT / "docs" / "wire-protocol.md").read_text(encoding="utf-8")
    for name, frame in vector_frames().items():
        section = spec[spec.index(f"**{name}**"):]
        block = section[section.index("```") + 3:]
        block = block[:block.index("```")]
        for line in _xxd_lines(frame.rstrip(b"\0"))[:3]:
            assert line in block, (name, line)
