"""Write tests/data/wire_vectors.json: the wire protocol's byte-exact examples.

Run by hand after a deliberate change to the protocol, then review the diff of the JSON file
(its bytes are the specification's; tests/wire/test_codec.py checks the codec against the
committed file, and the brief's own examples against literals written out in the test).

    python tests/wire/gen_vectors.py
"""
import dataclasses
import json
import pathlib
import sys
from typing import Dict, List, Tuple

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from replichat.wire import codec  # noqa: E402
from replichat.wire.codec import COMMAND_SIZE, FRAME_SIZE, Direction  # noqa: E402

OUT = ROOT / "tests" / "data" / "wire_vectors.json"

REQUESTS: List[Tuple[str, codec.Message]] = [
    ("brief: create user2", codec.Create("user2")),
    ("brief: create user3", codec.Create("user3")),
    ("create with the credential the client made", codec.Create("user2", "q3Xh7Lr0S2mNwV9cY4tB1eA8uKdPz6Gf5jHoRiE-Tx_")),
    ("auth: log the connection in as a user", codec.Auth("user3", "q3Xh7Lr0S2mNwV9cY4tB1eA8uKdPz6Gf5jHoRiE-Tx_")),
    ("brief: list", codec.ListUsers()),
    ("brief: send user3 hello", codec.Send("user3", "hello")),
    ("brief: connect user3", codec.Connect("user3")),
    ("brief: send user3 helloagain", codec.Send("user3", "helloagain")),
    ("delete", codec.Delete("user2")),
    ("list with a pattern", codec.ListUsers("^user[0-9]+$")),
    ("list: a space in the pattern becomes a comma, a comma is escaped", codec.ListUsers("a b{1,3}")),
    ("send: spaces in the data become commas", codec.Send("user3", "hello there")),
    ("send: leading, trailing and repeated spaces", codec.Send("user3", " two  spaces ")),
    ("send: literal comma, backslash and NUL are escaped", codec.Send("user3", "a,b\\c\0d")),
    ("send: non-ASCII text and control characters are plain UTF-8", codec.Send("user3", "né 😀\tx\ny")),
    ("send: empty text", codec.Send("user3", "")),
    ("ack", codec.Ack("user3", 2)),
    ("ping", codec.Ping()),
    ("members: ask for the cluster's members", codec.Members()),
    ("send: continuation, 1,500-byte text", codec.Send("user3", "x" * 1500)),
    ("send: continuation splits at a character boundary", codec.Send("u", "é" * 600)),
]

RESPONSES: List[Tuple[str, codec.Message]] = [
    ("created", codec.Created("user2")),
    ("created: with the credential the server made", codec.Created("user2", "q3Xh7Lr0S2mNwV9cY4tB1eA8uKdPz6Gf5jHoRiE-Tx_")),
    ("authed", codec.Authed("user3")),
    ("deleted", codec.Deleted("user2", 3)),
    ("users: none", codec.Users(())),
    ("users", codec.Users(("user2", "user3"))),
    ("sent", codec.Sent("user3", 1)),
    ("acked", codec.Acked("user3", 2)),
    ("pong", codec.Pong()),
    ("cluster: the members, replica 4 leads, replica 1's wire address unknown",
     codec.Cluster(4, ((1, ""), (4, "127.0.0.1:50154"), (5, "127.0.0.1:50155")))),
    ("cluster: no leader known", codec.Cluster(0, ((2, "10.0.0.2:50151"),))),
    ("connected", codec.Connected("user3", 1)),
    ("message", codec.Delivery("user3", 1, "user2", 1700000000000, "hello")),
    ("message: anonymous sender, text with spaces and a comma", codec.Delivery("user3", 7, "", 0, "hi, you")),
    ("message: continuation", codec.Delivery("user3", 2, "user2", 1700000000001, "ab " * 400)),
    # What a replica sends (tests/test_wire_examples.py checks these three against a real one).
    ("ended: taken over", codec.Ended("taken_over", "a newer connect for user3 took over this session")),
    ("ended: user deleted", codec.Ended("user_deleted", "user user3 was deleted")),
    ("error: not found", codec.Error("not_found", "no such user 'bob'")),
    ("error: connection limit", codec.Error("unavailable", "too many connections (at most 1000); try again later")),
]


def _frame(command: bytes, payload: bytes) -> str:
    """Hex of a frame's significant bytes; the test pads it with NULs to FRAME_SIZE."""
    return (command.ljust(COMMAND_SIZE, b"\0") + payload).hex()


INVALID_REQUESTS: List[Tuple[str, List[str], str]] = [
    ("unknown command", [_frame(b"shout", b"hello")], "unknown command"),
    ("a response's command sent as a request", [_frame(b"users", b"a")], "unknown command"),
    ("empty frame (all NUL)", [""], "empty command"),
    ("invalid UTF-8 in the command", [_frame(b"cr\xffate", b"a")], "UTF-8"),
    ("invalid UTF-8 in the payload", [_frame(b"create", b"us\xc3er")], "UTF-8"),
    ("missing argument", [_frame(b"send", b"")], "missing argument recipient"),
    ("missing integer argument", [_frame(b"ack", b"user3")], "missing argument up_to_seq"),
    ("too many arguments", [_frame(b"delete", b"a,b")], "takes 1 argument"),
    ("not an integer", [_frame(b"ack", b"user3,two")], "decimal integer"),
    ("negative sequence number", [_frame(b"ack", b"user3,-1")], "decimal integer"),
    ("sequence number past 2**64-1", [_frame(b"ack", b"user3,18446744073709551616")], "out of range"),
    ("unknown escape", [_frame(b"send", b"user3,a\\nb")], "unknown escape"),
    ("lone backslash at the end", [_frame(b"send", b"user3,a\\")], "lone backslash"),
    ("bytes after the payload's NUL padding", [_frame(b"send", b"user3,hi\0junk")], "after the NUL padding"),
    ("bytes after the command's NUL padding", [(b"send\0x".ljust(COMMAND_SIZE, b"\0") + b"user3").hex()],
     "after the NUL padding"),
    ("continuation ended by another command", [_frame(b"send+", b"user3,a"), _frame(b"create", b"b")],
     "continued by"),
    ("continuation never ended", [_frame(b"send+", b"user3,a")], "continuation frame"),
    ("members takes no argument", [_frame(b"members", b"1")], "takes 0 argument"),
]

# Answers a client refuses (a hostile or broken server): the connection is then given up.
INVALID_RESPONSES: List[Tuple[str, List[str], str]] = [
    ("cluster: no leader field", [_frame(b"cluster", b"")], "missing argument leader"),
    ("cluster: a member without =", [_frame(b"cluster", b"0,4")], "not ID=HOST:PORT"),
    ("cluster: member id 0", [_frame(b"cluster", b"0,0=h:1")], "not in 1.."),
    ("cluster: member id past 2**31-1", [_frame(b"cluster", b"0,2147483648=h:1")], "not in 1.."),
    ("cluster: an address without a port", [_frame(b"cluster", b"0,1=host")], "not HOST:PORT"),
    ("cluster: port 0", [_frame(b"cluster", b"0,1=host:0")], "not HOST:PORT"),
    ("cluster: a space in an address", [_frame(b"cluster", b"0,1=a b:1")], "characters an address cannot have"),
    ("cluster: ids out of order", [_frame(b"cluster", b"0,2=a:1,1=b:1")], "increasing order"),
    ("cluster: the same id twice", [_frame(b"cluster", b"0,1=a:1,1=b:1")], "increasing order"),
    ("cluster: a leader that is not a member", [_frame(b"cluster", b"3,1=a:1")], "not one of the members"),
    ("cluster: 65 members", [_frame(b"cluster", ("0," + ",".join(f"{i}=" for i in range(1, 66))).encode())],
     "65 members, at most 64"),
    ("cluster: longer than any valid answer",
     [_frame(b"cluster+", b"0," + b"1=" + b"a" * 1005)] * 40 + [_frame(b"cluster", b":1")],
     "message longer than"),
]


def _message_json(message: codec.Message) -> Dict[str, object]:
    out: Dict[str, object] = {"type": codec.command_of(type(message))}
    for field in dataclasses.fields(message):
        value = getattr(message, field.name)
        out[field.name] = list(value) if isinstance(value, tuple) else value
    return out


def _frames_json(data: bytes) -> List[Dict[str, str]]:
    frames = []
    for i in range(0, len(data), FRAME_SIZE):
        frame = data[i : i + FRAME_SIZE]
        frames.append(
            {
                "command": frame[:COMMAND_SIZE].rstrip(b"\0").decode("ascii"),
                "payload": frame[COMMAND_SIZE:].rstrip(b"\0").decode("utf-8"),
                "hex": frame.rstrip(b"\0").hex(),
            }
        )
    return frames


def build() -> Dict[str, object]:
    valid = []
    for direction, cases in ((Direction.REQUEST, REQUESTS), (Direction.RESPONSE, RESPONSES)):
        for name, message in cases:
            valid.append(
                {
                    "name": name,
                    "direction": direction.value,
                    "message": _message_json(message),
                    "frames": _frames_json(codec.encode(message)),
                }
            )
    invalid = [
        {"name": name, "direction": direction.value, "frames_hex": frames, "error": error}
        for direction, cases in ((Direction.REQUEST, INVALID_REQUESTS), (Direction.RESPONSE, INVALID_RESPONSES))
        for name, frames, error in cases
    ]
    return {
        "about": "Byte-exact examples of docs/wire-protocol.md. Each frame's hex omits the NUL "
        "padding at its end: pad it with NULs to frame_size bytes.",
        "frame_size": FRAME_SIZE,
        "command_size": COMMAND_SIZE,
        "valid": valid,
        "invalid": invalid,
    }


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
