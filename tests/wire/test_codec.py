"""The wire codec against the brief's examples, the committed vectors, and random messages."""
import dataclasses
import json
import pathlib
from typing import Any, Dict, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replichat.raft.membership import MAX_ID, MAX_MEMBERS
from replichat.wire import codec
from replichat.wire.codec import (
    COMMAND_SIZE,
    FRAME_SIZE,
    MAX_CLUSTER_PAYLOAD_BYTES,
    MAX_REQUEST_PAYLOAD_BYTES,
    MAX_TEXT_BYTES,
    PAYLOAD_SIZE,
    Direction,
    Reassembler,
    WireError,
)

VECTORS = json.loads(
    (pathlib.Path(__file__).resolve().parents[1] / "data" / "wire_vectors.json").read_text(encoding="utf-8")
)


def _nul(n: int) -> bytes:
    return b"\0" * n


def _padded(significant: bytes) -> bytes:
    return significant + _nul(FRAME_SIZE - len(significant))


def _message(direction: str, obj: Dict[str, Any]) -> object:
    fields = dict(obj)
    cls = codec.message_types(Direction(direction))[fields.pop("type")]
    return cls(**{k: _tuples(v) for k, v in fields.items()})


def _tuples(value: Any) -> Any:
    """JSON arrays back to the tuples a message holds (a `cluster` answer's pairs included)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _decode(direction: str, data: bytes) -> object:
    return codec.decode_request(data) if direction == "request" else codec.decode_response(data)


# --- the brief's examples, written out by hand -------------------------------------------------


@pytest.mark.parametrize(
    "message, significant",
    [
        (codec.Create("user2"), b"create" + _nul(9) + b"user2"),
        (codec.Create("user3"), b"create" + _nul(9) + b"user3"),
        (codec.ListUsers(), b"list" + _nul(11)),
        (codec.Send("user3", "hello"), b"send" + _nul(11) + b"user3,hello"),
        (codec.Connect("user3"), b"connect" + _nul(8) + b"user3"),
        (codec.Send("user3", "helloagain"), b"send" + _nul(11) + b"user3,helloagain"),
        # "If args or data contain multiple space-separated strings, they get replaced by
        # UTF8 encoding of those comma-separated strings."
        (codec.Send("user3", "hello there"), b"send" + _nul(11) + b"user3,hello,there"),
        (codec.ListUsers("user 2"), b"list" + _nul(11) + b"user,2"),
    ],
)
def test_brief_examples_are_byte_identical(message: codec.Request, significant: bytes) -> None:
    assert codec.encode(message) == _padded(significant)
    assert codec.decode_request(_padded(significant)) == message


# --- the committed vectors -----------------------------------------------------------------------


def test_vector_file_matches_frame_geometry() -> None:
    assert (VECTORS["frame_size"], VECTORS["command_size"]) == (FRAME_SIZE, COMMAND_SIZE)


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=[v["name"] for v in VECTORS["valid"]])
def test_valid_vector(vector: Dict[str, Any]) -> None:
    message = _message(vector["direction"], vector["message"])
    frames: List[Dict[str, str]] = vector["frames"]
    expected = b"".join(_padded(bytes.fromhex(f["hex"])) for f in frames)
    assert codec.encode(message) == expected  # type: ignore[arg-type]
    assert _decode(vector["direction"], expected) == message
    for i, frame in enumerate(frames):
        raw = codec.parse_frame(expected[i * FRAME_SIZE : (i + 1) * FRAME_SIZE])
        more = "+" if i + 1 < len(frames) else ""
        assert frame["command"] == raw.command + more
        assert frame["payload"].encode("utf-8") == raw.payload


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=[v["name"] for v in VECTORS["invalid"]])
def test_invalid_vector(vector: Dict[str, Any]) -> None:
    data = b"".join(_padded(bytes.fromhex(h)) for h in vector["frames_hex"])
    with pytest.raises(WireError, match=vector["error"]):
        _decode(vector["direction"], data)


def test_every_message_type_has_a_vector() -> None:
    covered = {(v["direction"], v["message"]["type"]) for v in VECTORS["valid"]}
    for direction in Direction:
        for command in codec.message_types(direction):
            assert (direction.value, command) in covered


# --- limits, truncation, continuation ----------------------------------------------------------


def test_truncated_input_is_refused() -> None:
    frame = codec.encode(codec.Send("user3", "hello"))
    for cut in (0, 1, 14, 15, 500, FRAME_SIZE - 1):
        with pytest.raises(WireError, match="truncated"):
            codec.decode_request(frame[:cut])
    with pytest.raises(WireError, match="1024 bytes"):
        codec.parse_frame(frame[:-1])
    with pytest.raises(WireError, match="after the end"):
        codec.decode_request(frame + frame)


def test_longest_text_fits_even_when_every_byte_is_escaped() -> None:
    for char in (",", "\\", "\0"):
        message = codec.Send("user3", char * MAX_TEXT_BYTES)
        data = codec.encode(message)
        assert codec.decode_request(data) == message
        assert len(data) <= FRAME_SIZE * -(-MAX_REQUEST_PAYLOAD_BYTES // PAYLOAD_SIZE)


def test_over_long_request_is_refused_by_encoder_and_decoder() -> None:
    with pytest.raises(WireError, match="at most"):
        codec.encode(codec.Send("user3", "x" * (MAX_REQUEST_PAYLOAD_BYTES + 1)))
    # A peer that sends it anyway: one error when the run of frames ends, nothing kept.
    chunk = b"x" * PAYLOAD_SIZE
    frames = [b"send+".ljust(COMMAND_SIZE, b"\0") + chunk] * 40 + [_padded(b"send".ljust(COMMAND_SIZE, b"\0") + b"x")]
    reassembler = Reassembler(Direction.REQUEST)
    for frame in frames[:-1]:
        assert reassembler.push(frame) is None
    with pytest.raises(WireError, match="longer than"):
        reassembler.push(frames[-1])
    assert not reassembler.in_message
    # ...and the stream is in step again.
    assert reassembler.push(codec.encode(codec.Ping())) == codec.Ping()


def test_reassembler_reports_one_error_per_spoiled_message_and_recovers() -> None:
    reassembler = Reassembler(Direction.REQUEST)
    bad = _padded(b"shout+".ljust(COMMAND_SIZE, b"\0") + b"a")
    assert reassembler.push(bad) is None
    assert reassembler.in_message
    assert reassembler.push(bad) is None
    with pytest.raises(WireError, match="unknown command"):
        reassembler.push(codec.encode(codec.Ping()))
    assert reassembler.push(codec.encode(codec.Ping())) == codec.Ping()
    with pytest.raises(WireError, match="1024 bytes"):
        reassembler.push(b"short")


def test_continuation_frames_are_full_and_split_on_character_boundaries() -> None:
    text = "😀" * 2000  # 8000 bytes: 4 bytes per character never align with 1009
    data = codec.encode(codec.Send("u", text))
    frames = [data[i : i + FRAME_SIZE] for i in range(0, len(data), FRAME_SIZE)]
    assert len(frames) == 8
    for frame in frames[:-1]:
        raw = codec.parse_frame(frame)
        assert raw.more and raw.command == "send"
        assert len(raw.payload) > PAYLOAD_SIZE - 4
        raw.payload.decode("utf-8")  # each frame readable on its own
    assert not codec.parse_frame(frames[-1]).more


def test_encoder_refuses_what_cannot_round_trip() -> None:
    with pytest.raises(WireError, match="must not be empty"):
        codec.encode(codec.Create(""))
    with pytest.raises(WireError, match="single empty field"):
        codec.encode(codec.Users(("",)))
    with pytest.raises(WireError, match="UTF-8"):
        codec.encode(codec.Send("u", "\ud800"))
    with pytest.raises(WireError, match="integer"):
        codec.encode(codec.Ack("u", -1))
    with pytest.raises(WireError, match="integer"):
        codec.encode(codec.Ack("u", 2**64))
    with pytest.raises(WireError, match="not a wire message"):
        codec.encode("send u hi")  # type: ignore[arg-type]


def test_decoder_is_lenient_where_the_brief_is_vague() -> None:
    pad = _nul(11)
    # A raw space in the data, and no data separator at all, both decode.
    assert codec.decode_request(_padded(b"send" + pad + b"user3,hello there")) == codec.Send("user3", "hello there")
    assert codec.decode_request(_padded(b"send" + pad + b"user3")) == codec.Send("user3", "")


# --- round trips ---------------------------------------------------------------------------------

# Characters the encoding treats specially, mixed with everything else.
_TRICKY = st.sampled_from([",", "\\", "\0", " ", "\\0", "\\,", "+", "😀", "é", "\u0301", "\n", "\t", "\x7f"])
_TEXT = st.lists(st.one_of(_TRICKY, st.characters(codec="utf-8")), max_size=60).map("".join)
_LONG_TEXT = st.lists(st.one_of(_TRICKY, st.characters(codec="utf-8")), max_size=2000).map(
    "".join
).filter(lambda t: len(t.encode("utf-8")) <= MAX_TEXT_BYTES)
_NAME = _TEXT.filter(bool)
_U64 = st.integers(0, 2**64 - 1)
_I64 = st.integers(-(2**63), 2**63 - 1)

_HOST = st.one_of(
    st.from_regex(r"[a-z0-9.-]{1,60}", fullmatch=True),
    st.from_regex(r"\[[0-9a-f:]{2,39}\]", fullmatch=True),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),  # commas, backslashes...
)
_ADDRESS = st.one_of(st.just(""), st.builds(lambda h, p: f"{h}:{p}", _HOST, st.integers(1, 65535)))
_CLUSTERS = st.dictionaries(st.integers(1, MAX_ID), _ADDRESS, max_size=8).flatmap(
    lambda members: st.builds(
        codec.Cluster,
        st.sampled_from([0, *members]) if members else st.just(0),
        st.just(tuple(sorted(members.items()))),
    )
)

_MESSAGES = st.one_of(
    st.builds(codec.Create, _NAME),
    st.builds(codec.Connect, _NAME),
    st.builds(codec.Delete, _NAME),
    st.builds(codec.ListUsers, _TEXT),
    st.builds(codec.Send, _TEXT, st.one_of(_TEXT, _LONG_TEXT)),
    st.builds(codec.Ack, _TEXT, _U64),
    st.just(codec.Ping()),
    st.builds(codec.Created, _NAME),
    st.builds(codec.Deleted, _TEXT, _U64),
    st.builds(codec.Users, st.lists(_TEXT, max_size=20).map(tuple).filter(lambda n: n != ("",))),
    st.builds(codec.Sent, _TEXT, _U64),
    st.builds(codec.Acked, _TEXT, _U64),
    st.just(codec.Pong()),
    st.builds(codec.Connected, _TEXT, _U64),
    st.builds(codec.Delivery, _TEXT, _U64, _TEXT, _I64, st.one_of(_TEXT, _LONG_TEXT)),
    st.builds(codec.Ended, _TEXT, _TEXT),
    st.builds(codec.Error, _TEXT, _TEXT),
    st.just(codec.Members()),
    st.builds(lambda c: c, _CLUSTERS),
)


def _direction(message: object) -> str:
    return "request" if type(message) in codec.message_types(Direction.REQUEST).values() else "response"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_MESSAGES)
def test_round_trip(message: object) -> None:
    data = codec.encode(message)  # type: ignore[arg-type]
    assert data and len(data) % FRAME_SIZE == 0
    assert _decode(_direction(message), data) == message
    for i in range(0, len(data), FRAME_SIZE):
        codec.parse_frame(data[i : i + FRAME_SIZE])


@settings(max_examples=200, deadline=None)
@given(_NAME, _LONG_TEXT)
def test_send_text_round_trips_through_a_stream_of_frames(recipient: str, text: str) -> None:
    """Frames fed one at a time, between other messages, as the listener reads them."""
    stream = codec.encode(codec.Ping()) + codec.encode(codec.Send(recipient, text)) + codec.encode(codec.Ping())
    reassembler = Reassembler(Direction.REQUEST)
    out = [reassembler.push(stream[i : i + FRAME_SIZE]) for i in range(0, len(stream), FRAME_SIZE)]
    assert [m for m in out if m is not None] == [codec.Ping(), codec.Send(recipient, text), codec.Ping()]


@given(_TEXT)
def test_escaped_payload_has_no_nul_and_brief_text_is_unchanged(text: str) -> None:
    payload = codec.encode(codec.Send("u", text))[COMMAND_SIZE:].rstrip(b"\0")
    assert b"\0" not in payload
    if not set(text) & {",", "\\", "\0", " "}:
        assert payload == b"u," + text.encode("utf-8")


def test_messages_are_frozen_values() -> None:
    message = codec.Send("u", "hi")
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.text = "changed"  # type: ignore[misc]
    assert codec.command_of(codec.Delivery) == "message"


def test_spec_examples_match_the_vectors() -> None:
    """docs/wire-protocol.md shows each vector's first frame in xxd layout; keep them equal."""
    spec = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "wire-protocol.md").read_text(encoding="utf-8")
    for vector in VECTORS["valid"]:
        first = bytes.fromhex(vector["frames"][0]["hex"])[:16]
        words = " ".join(first[i : i + 2].hex() for i in range(0, len(first), 2))
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in first)
        assert f"00000000: {words:<39}  {text}" in spec, vector["name"]


# --- the `cluster` answer: what a hostile server may send a client -------------------------------


def test_the_largest_valid_cluster_answer_fits_its_bound() -> None:
    """64 members with the longest ids and 255-character addresses, every byte escaped."""
    address = "," * 249 + ":65535"
    worst = codec.Cluster(MAX_ID, tuple((MAX_ID - i, address) for i in reversed(range(MAX_MEMBERS))))
    data = codec.encode(worst)
    payload = sum(len(codec.parse_frame(data[i : i + FRAME_SIZE]).payload) for i in range(0, len(data), FRAME_SIZE))
    assert MAX_CLUSTER_PAYLOAD_BYTES - 1024 < payload <= MAX_CLUSTER_PAYLOAD_BYTES
    assert codec.decode_response(data) == worst


@pytest.mark.parametrize(
    "cluster, error",
    [
        (codec.Cluster(0, tuple((i, "") for i in range(1, MAX_MEMBERS + 2))), "at most 64"),
        (codec.Cluster(0, ((2, ""), (1, ""))), "increasing order"),
        (codec.Cluster(0, ((1, ""), (1, ""))), "increasing order"),
        (codec.Cluster(0, ((0, ""),)), "not in 1.."),
        (codec.Cluster(0, ((MAX_ID + 1, ""),)), "not in 1.."),
        (codec.Cluster(0, ((True, ""),)), "not in 1.."),
        (codec.Cluster(2, ((1, ""),)), "not one of the members"),
        (codec.Cluster(0, ((1, "nohost"),)), "not HOST:PORT"),
        (codec.Cluster(0, ((1, "h:" + "1" * 300),)), "longer than 255"),
        (codec.Cluster(0, ((1, "é:1"),)), "characters an address cannot have"),
        (codec.Cluster(0, ((1, None),)), "must be a string"),  # type: ignore[arg-type]
        (codec.Cluster(0, [(1, "")]), "tuple"),  # type: ignore[arg-type]
        (codec.Cluster(-1, ()), "neither 0"),
    ],
)
def test_encoder_refuses_an_invalid_cluster_answer(cluster: codec.Cluster, error: str) -> None:
    with pytest.raises(WireError, match=error):
        codec.encode(cluster)


def test_an_endless_cluster_answer_is_not_kept() -> None:
    """A server streaming `cluster+` frames costs the client at most the answer's bound, and the
    stream is in step again after the run's last frame."""
    reassembler = Reassembler(Direction.RESPONSE)
    frame = _padded(b"cluster+".ljust(COMMAND_SIZE, b"\0") + b"1=" * (PAYLOAD_SIZE // 2))
    for _ in range(1000):  # 1 MB of frames
        assert reassembler.push(frame) is None
        assert sum(len(p) for p in reassembler._parts) <= MAX_CLUSTER_PAYLOAD_BYTES
    with pytest.raises(WireError, match=f"longer than {MAX_CLUSTER_PAYLOAD_BYTES}"):
        reassembler.push(_padded(b"cluster".ljust(COMMAND_SIZE, b"\0") + b"0"))
    assert reassembler.push(codec.encode(codec.Pong())) == codec.Pong()


def test_members_is_a_request_and_cluster_an_answer() -> None:
    """Neither travels the other way: an old server that does not know `members` answers the
    same clear error as for any unknown command."""
    with pytest.raises(WireError, match="unknown command 'cluster'"):
        codec.decode_request(codec.encode(codec.Cluster(0, ())))
    with pytest.raises(WireError, match="unknown command 'members'"):
        codec.decode_response(codec.encode(codec.Members()))
