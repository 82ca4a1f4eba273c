"""Hostile bytes into the decoder: WireError is the only exception that may come out.

A listener catches WireError and nothing broader, so any other exception escaping the codec
on some input would end a connection with a traceback instead of an error frame. Valid
decodes must also be stable: encoding what was decoded and decoding again gives the same.
"""
from typing import List

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replichat.wire import codec
from replichat.wire.codec import COMMAND_SIZE, FRAME_SIZE, PAYLOAD_SIZE, Direction, Reassembler, WireError

_COMMANDS = sorted(set(codec.message_types(Direction.REQUEST)) | set(codec.message_types(Direction.RESPONSE)))
# Bytes that mean something to the codec, mixed into random ones so that random inputs
# often get past the first check.
_SPECIAL = st.sampled_from(
    [b",", b"\\", b"\\,", b"\\\\", b"\\0", b"\0", b" ", b"+", b"-", b"0", b"9", b"\xc3", b"\xa9"]
)
_PAYLOAD = st.lists(st.one_of(_SPECIAL, st.binary(max_size=8)), max_size=40).map(b"".join)
_COMMAND = st.one_of(
    st.sampled_from(_COMMANDS).map(str.encode),
    st.sampled_from(_COMMANDS).map(lambda c: (c + "+").encode()),
    st.binary(max_size=COMMAND_SIZE),
)


@st.composite
def _frame(draw: st.DrawFn) -> bytes:
    command = draw(_COMMAND)[:COMMAND_SIZE].ljust(COMMAND_SIZE, b"\0")
    payload = draw(_PAYLOAD)[:PAYLOAD_SIZE].ljust(PAYLOAD_SIZE, b"\0")
    return command + payload


def _check(data: bytes, direction: Direction) -> None:
    decode = codec.decode_request if direction is Direction.REQUEST else codec.decode_response
    try:
        message = decode(data)
    except WireError:
        return
    try:
        again = codec.encode(message)
    except WireError:
        return  # e.g. a decoded string whose canonical form is too long for one direction
    assert decode(again) == message


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=3 * FRAME_SIZE))
def test_arbitrary_bytes(data: bytes) -> None:
    for direction in Direction:
        _check(data, direction)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_frame(), min_size=1, max_size=4))
def test_structured_frames(frames: List[bytes]) -> None:
    for direction in Direction:
        _check(b"".join(frames), direction)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_frame(), min_size=1, max_size=12), st.sampled_from(list(Direction)))
def test_reassembler_stream_stays_in_step(frames: List[bytes], direction: Direction) -> None:
    """After any sequence of frames, a valid message is still read correctly once the
    current run of continuation frames has ended."""
    reassembler = Reassembler(direction)
    for frame in frames:
        try:
            reassembler.push(frame)
        except WireError:
            pass
    probe = codec.Ping() if direction is Direction.REQUEST else codec.Pong()
    if reassembler.in_message:
        try:  # any final frame ends the spoiled or unfinished run
            reassembler.push(b"x".ljust(FRAME_SIZE, b"\0"))
        except WireError:
            pass
    assert reassembler.push(codec.encode(probe)) == probe


@given(st.binary(min_size=FRAME_SIZE, max_size=FRAME_SIZE))
def test_parse_frame_on_random_frames(frame: bytes) -> None:
    try:
        raw = codec.parse_frame(frame)
    except WireError:
        return
    assert raw.command and b"\0" not in raw.payload
