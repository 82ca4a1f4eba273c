"""The seed's byte protocol: messages to and from fixed 1024-byte frames, with no IO.

Sans-IO on purpose (the h11 style): the listener and the client own the sockets, this module
only turns bytes into messages and back, so every rule below is testable without a network.
docs/wire-protocol.md is the specification; tests/data/wire_vectors.json pins its bytes.

Frame (1024 bytes, so a TCP stream needs no other framing):

    bytes 0..14    command, UTF-8, NUL-padded (a trailing "+" marks a continuation frame)
    bytes 15..1023 payload, UTF-8, NUL-padded

Payload: fields separated by commas, the seed's "args" first, then its "data". Each message
type has a fixed number of args; every field after them belongs to the data, whose spaces
the seed turns into commas, so the data is those fields joined by spaces. Literal commas,
backslashes and NULs are escaped as "\\,", "\\\\" and "\\0", which the seed's own examples
never contain, so `send user3 hello` is still b"send" + 11 NULs + b"user3,hello".

A message whose payload exceeds one frame is sent as frames whose command ends in "+",
followed by one frame without it; the payloads are concatenated before being decoded.
"""
import dataclasses
import enum
import re
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, Union

from replichat.raft.membership import MAX_ADDRESS_CHARS, MAX_ID, MAX_MEMBERS

try:
    from replichat.chat.names import MAX_TEXT_BYTES
except ImportError:  # pragma: no cover - the names module is written alongside this one
    MAX_TEXT_BYTES = 4096

FRAME_SIZE = 1024
COMMAND_SIZE = 15
PAYLOAD_SIZE = FRAME_SIZE - COMMAND_SIZE
CONTINUATION = "+"

# Worst case for a send: every byte of the text escaped (two bytes each), plus the name and
# separators. Anything longer is refused before it is buffered.
MAX_REQUEST_PAYLOAD_BYTES = 2 * MAX_TEXT_BYTES + 1024
# A `users` answer grows with the number of users; a client still wants a bound.
MAX_RESPONSE_PAYLOAD_BYTES = 16 * 1024 * 1024
# A `cluster` answer: the leader's id, then at most MAX_MEMBERS fields "ID=HOST:PORT" with every
# address byte escaped (two bytes), each with its separator. Far below the general response
# bound: a client that asked for the members keeps no more than this of a hostile answer.
MAX_CLUSTER_PAYLOAD_BYTES = len(str(MAX_ID)) + MAX_MEMBERS * (len(str(MAX_ID)) + 2 * MAX_ADDRESS_CHARS + 3)

_U64_MAX = 2**64 - 1
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_UNSIGNED = re.compile(r"[0-9]{1,20}")
_SIGNED = re.compile(r"-?[0-9]{1,19}")
# One token of a payload: a run of plain characters, an escape, a separator, or a bad escape.
_TOKEN = re.compile(r"[^\\,]+|\\.|,|\\", re.DOTALL)
_UNESCAPE = {"\\": "\\", ",": ",", "0": "\0"}


class WireError(ValueError):
    """Bytes that are not a valid frame or message, or a message that cannot be framed.

    The codec's only exception: a caller that catches it has handled every bad input.
    """


class Direction(enum.Enum):
    """Which side sent a message: a command means different things each way (none is shared)."""

    REQUEST = "request"
    RESPONSE = "response"


# ---------------------------------------------------------------------------------------------
# Requests: client to server.


@dataclasses.dataclass(frozen=True)
class Create:
    """`credential`: the new user's (the server makes one when it is empty)."""

    name: str
    credential: str = ""


@dataclasses.dataclass(frozen=True)
class Auth:
    """Log this connection in as `name`: later requests act as `name` (docs/wire-protocol.md)."""

    name: str
    credential: str


@dataclasses.dataclass(frozen=True)
class Connect:
    name: str


@dataclasses.dataclass(frozen=True)
class Delete:
    name: str


@dataclasses.dataclass(frozen=True)
class ListUsers:
    pattern: str = ""


@dataclasses.dataclass(frozen=True)
class Send:
    recipient: str
    text: str


@dataclasses.dataclass(frozen=True)
class Ack:
    """Messages to `name` up to and including `up_to_seq` were shown; drop them."""

    name: str
    up_to_seq: int


@dataclasses.dataclass(frozen=True)
class Ping:
    """Keeps an otherwise quiet connection (one waiting for messages) past the idle timeout."""


@dataclasses.dataclass(frozen=True)
class Members:
    """Which replicas form the cluster now, and where their wire ports are (answer: `cluster`)."""


# ---------------------------------------------------------------------------------------------
# Responses: one per request, in request order; Delivery and Ended are pushed at any time.


@dataclasses.dataclass(frozen=True)
class Created:
    """`credential`: set only when the server made the new user's credential itself."""

    name: str
    credential: str = ""


@dataclasses.dataclass(frozen=True)
class Authed:
    name: str


@dataclasses.dataclass(frozen=True)
class Deleted:
    name: str
    dropped_messages: int


@dataclasses.dataclass(frozen=True)
class Users:
    names: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Sent:
    recipient: str
    seq: int


@dataclasses.dataclass(frozen=True)
class Acked:
    name: str
    up_to_seq: int


@dataclasses.dataclass(frozen=True)
class Pong:
    pass


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The answer to `members`: the configuration in effect on the replica that answered.

    `leader`: the leader's id as that replica knows it, 0 when it knows none. `members`:
    (id, wire address) pairs in increasing id order; the address is "" for a member whose
    wire address that replica does not know (a client skips such a member).
    """

    leader: int
    members: Tuple[Tuple[int, str], ...]


@dataclasses.dataclass(frozen=True)
class Connected:
    """The answer to `connect`: `queued` unacknowledged messages follow as pushes."""

    name: str
    queued: int


@dataclasses.dataclass(frozen=True)
class Delivery:
    """A pushed message (command `message`)."""

    recipient: str
    seq: int
    sender: str
    sent_at_ms: int
    text: str


@dataclasses.dataclass(frozen=True)
class Ended:
    """A pushed notice that the connection's session is over (reason: taken_over,
    user_deleted, shutdown or unspecified)."""

    reason: str
    detail: str


@dataclasses.dataclass(frozen=True)
class Error:
    """The answer to a refused request; `code` is a replichat.errors.Code name in lower case."""

    code: str
    message: str


Request = Union[Create, Auth, Connect, Delete, ListUsers, Send, Ack, Ping, Members]
Response = Union[Created, Authed, Deleted, Users, Sent, Acked, Pong, Cluster, Connected, Delivery, Ended, Error]
Message = Union[Request, Response]
# Sent by the server whenever a session has news, not in answer to a request.
Push = Union[Delivery, Ended]
PUSHES = (Delivery, Ended)


# ---------------------------------------------------------------------------------------------
# Schemas: which fields of a message are args (and of what kind) and which one is the data.


class _Kind(enum.Enum):
    TEXT = "text"
    U64 = "u64"
    I64 = "i64"
    # "ID=HOST:PORT" (or "ID=": no address known), one member of a `cluster` answer.
    MEMBER = "member"


@dataclasses.dataclass(frozen=True)
class _Schema:
    command: str
    cls: type
    args: Tuple[Tuple[str, _Kind], ...] = ()
    data: Optional[str] = None
    # The fields after the args are one tuple (the `users` answer, the members of `cluster`).
    variadic: Optional[str] = None
    variadic_kind: _Kind = _Kind.TEXT
    # An empty data field is left out (no trailing comma): `create user2` stays the seed's.
    optional_data: bool = False
    # A tighter bound than the direction's on this message's reassembled payload.
    max_payload: Optional[int] = None
    # Why a decoded (or to be encoded) message is not valid, or None: rules across fields.
    check: Optional[Callable[[Any], Optional[str]]] = None


def _address_problem(address: str) -> Optional[str]:
    """Why `address` is not a HOST:PORT a client could dial (IPv6 hosts in brackets), or None."""
    if len(address) > MAX_ADDRESS_CHARS:
        return f"an address longer than {MAX_ADDRESS_CHARS} characters"
    if not address.isascii() or not address.isprintable() or " " in address:
        return f"address {address[:40]!r} has characters an address cannot have"
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or len(port) > 5 or not 0 < int(port) <= 65535:
        return f"address {address[:40]!r} is not HOST:PORT with PORT 1-65535"
    return None


def _cluster_problem(cluster: "Cluster") -> Optional[str]:
    """The rules across a `cluster` answer's fields (each field's own are checked on its own)."""
    members = cluster.members
    if not isinstance(members, tuple):
        return "members must be a tuple of (id, address) pairs"
    if len(members) > MAX_MEMBERS:
        return f"{len(members)} members, at most {MAX_MEMBERS}"
    previous = 0
    for member in members:
        if not (isinstance(member, tuple) and len(member) == 2):
            return "members must be (id, address) pairs"
        rid, address = member
        if type(rid) is not int or not 0 < rid <= MAX_ID:
            return f"member id {rid!r} is not in 1..{MAX_ID}"
        if rid <= previous:
            return f"member ids not in increasing order at {rid}"
        previous = rid
        if not isinstance(address, str):
            return f"member {rid}'s address must be a string"
        problem = _address_problem(address) if address else None
        if problem is not None:
            return f"member {rid}: {problem}"
    leader = cluster.leader
    if type(leader) is not int or not 0 <= leader <= MAX_ID:
        return f"leader {leader!r} is neither 0 (none known) nor a member id"
    if leader and leader not in {rid for rid, _ in members}:
        return f"leader {leader} is not one of the members"
    return None


_S = _Kind.TEXT
_REQUEST_SCHEMAS = (
    _Schema("create", Create, (("name", _S),), data="credential", optional_data=True),
    _Schema("auth", Auth, (("name", _S),), data="credential"),
    _Schema("connect", Connect, (("name", _S),)),
    _Schema("delete", Delete, (("name", _S),)),
    _Schema("list", ListUsers, data="pattern"),
    _Schema("send", Send, (("recipient", _S),), data="text"),
    _Schema("ack", Ack, (("name", _S), ("up_to_seq", _Kind.U64))),
    _Schema("ping", Ping),
    _Schema("members", Members),
)
_RESPONSE_SCHEMAS = (
    _Schema("created", Created, (("name", _S),), data="credential", optional_data=True),
    _Schema("authed", Authed, (("name", _S),)),
    _Schema("deleted", Deleted, (("name", _S), ("dropped_messages", _Kind.U64))),
    _Schema("users", Users, variadic="names"),
    _Schema("sent", Sent, (("recipient", _S), ("seq", _Kind.U64))),
    _Schema("acked", Acked, (("name", _S), ("up_to_seq", _Kind.U64))),
    _Schema("pong", Pong),
    _Schema("cluster", Cluster, (("leader", _Kind.U64),), variadic="members", variadic_kind=_Kind.MEMBER,
            max_payload=MAX_CLUSTER_PAYLOAD_BYTES, check=_cluster_problem),
    _Schema("connected", Connected, (("name", _S), ("queued", _Kind.U64))),
    _Schema(
        "message",
        Delivery,
        (("recipient", _S), ("seq", _Kind.U64), ("sender", _S), ("sent_at_ms", _Kind.I64)),
        data="text",
    ),
    _Schema("ended", Ended, (("reason", _S),), data="detail"),
    _Schema("error", Error, (("code", _S),), data="message"),
)
_BY_COMMAND: Dict[Direction, Dict[str, _Schema]] = {
    Direction.REQUEST: {s.command: s for s in _REQUEST_SCHEMAS},
    Direction.RESPONSE: {s.command: s for s in _RESPONSE_SCHEMAS},
}
_BY_TYPE: Dict[type, Tuple[Direction, _Schema]] = {
    **{s.cls: (Direction.REQUEST, s) for s in _REQUEST_SCHEMAS},
    **{s.cls: (Direction.RESPONSE, s) for s in _RESPONSE_SCHEMAS},
}
_MAX_PAYLOAD = {
    Direction.REQUEST: MAX_REQUEST_PAYLOAD_BYTES,
    Direction.RESPONSE: MAX_RESPONSE_PAYLOAD_BYTES,
}


def message_types(direction: Direction) -> Dict[str, type]:
    """Command word -> message type, for one direction (a spec or test can enumerate them)."""
    return {command: schema.cls for command, schema in _BY_COMMAND[direction].items()}


def command_of(message_type: Type[object]) -> str:
    """The command word a message type travels under (e.g. Delivery -> "message")."""
    try:
        return _BY_TYPE[message_type][1].command
    except KeyError:
        raise WireError(f"not a wire message type: {message_type.__name__}") from None


# ---------------------------------------------------------------------------------------------
# Fields: escaping and splitting.


def _escape(value: str) -> str:
    # Backslash first, or the escapes added for commas and NULs would be escaped again.
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("\0", "\\0")


def _escape_data(value: str) -> str:
    """The seed's rule for data: spaces become (unescaped) commas."""
    return _escape(value).replace(" ", ",")


def _split_fields(payload: str) -> List[str]:
    """Split on unescaped commas and undo the escapes; an empty payload has no fields."""
    if not payload:
        return []
    fields: List[str] = []
    current: List[str] = []
    for match in _TOKEN.finditer(payload):
        token = match.group()
        if token == ",":
            fields.append("".join(current))
            current = []
        elif token[0] != "\\":
            current.append(token)
        elif len(token) == 2 and token[1] in _UNESCAPE:
            current.append(_UNESCAPE[token[1]])
        elif len(token) == 1:
            raise WireError("payload ends in a lone backslash")
        else:
            raise WireError(f"unknown escape {token!r} (use \\\\, \\, or \\0)")
    fields.append("".join(current))
    return fields


def _format_int(name: str, kind: _Kind, value: object) -> str:
    low, high = (0, _U64_MAX) if kind is _Kind.U64 else (_I64_MIN, _I64_MAX)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise WireError(f"{name} must be an integer in [{low}, {high}], not {value!r}")
    return str(value)


def _parse_int(name: str, kind: _Kind, text: str) -> int:
    pattern = _UNSIGNED if kind is _Kind.U64 else _SIGNED
    low, high = (0, _U64_MAX) if kind is _Kind.U64 else (_I64_MIN, _I64_MAX)
    if not pattern.fullmatch(text):
        raise WireError(f"{name} must be a decimal integer, not {text[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        raise WireError(f"{name} out of range: {text}")
    return value


def _format_member(member: Tuple[int, str]) -> str:
    rid, address = member
    return f"{rid}={_escape(address)}"


def _parse_member(field: str) -> Tuple[int, str]:
    text, sep, address = field.partition("=")
    if not sep:
        raise WireError(f"member {field[:40]!r} is not ID=HOST:PORT")
    rid = _parse_int("member id", _Kind.U64, text)
    if not 0 < rid <= MAX_ID:
        raise WireError(f"member id {rid} is not in 1..{MAX_ID}")
    problem = _address_problem(address) if address else None
    if problem is not None:
        raise WireError(f"member {rid}: {problem}")
    return rid, address


def _encode_payload(schema: _Schema, message: object) -> str:
    if schema.check is not None:
        problem = schema.check(message)
        if problem is not None:
            raise WireError(f"{schema.command}: {problem}")
    if schema.variadic is not None and not schema.args:
        names: Tuple[str, ...] = getattr(message, schema.variadic)
        if tuple(names) == ("",):
            raise WireError(f"{schema.command}: a single empty field cannot be encoded")
        return ",".join(_escape(_text(schema.variadic, n)) for n in names)
    fields = []
    for name, kind in schema.args:
        value = getattr(message, name)
        fields.append(_escape(_text(name, value)) if kind is _Kind.TEXT else _format_int(name, kind, value))
    if schema.variadic is not None:  # the members of `cluster`, checked above
        assert schema.variadic_kind is _Kind.MEMBER
        fields.extend(_format_member(m) for m in getattr(message, schema.variadic))
    if schema.data is not None:
        data = _text(schema.data, getattr(message, schema.data))
        if data or not schema.optional_data:
            fields.append(_escape_data(data))
    payload = ",".join(fields)
    if not payload and len(schema.args) == 1 and (schema.data is None or schema.optional_data):
        # An empty payload reads as "no fields": the one arg would go missing.
        raise WireError(f"{schema.command}: {schema.args[0][0]} must not be empty")
    return payload


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise WireError(f"{name} must be a string, not {type(value).__name__}")
    return value


def _decode_payload(schema: _Schema, payload: str) -> object:
    fields = _split_fields(payload)
    if schema.variadic is not None and not schema.args:
        return schema.cls(tuple(fields))
    if len(fields) < len(schema.args):
        missing = schema.args[len(fields)][0]
        raise WireError(f"{schema.command}: missing argument {missing}")
    if schema.data is None and schema.variadic is None and len(fields) > len(schema.args):
        raise WireError(f"{schema.command}: takes {len(schema.args)} argument(s), got {len(fields)}")
    values: Dict[str, object] = {}
    for (name, kind), field in zip(schema.args, fields):
        values[name] = field if kind is _Kind.TEXT else _parse_int(name, kind, field)
    if schema.data is not None:
        values[schema.data] = " ".join(fields[len(schema.args) :])
    if schema.variadic is not None:
        assert schema.variadic_kind is _Kind.MEMBER
        items = fields[len(schema.args) :]
        if len(items) > MAX_MEMBERS:  # before parsing any: the count alone refuses it
            raise WireError(f"{schema.command}: {len(items)} members, at most {MAX_MEMBERS}")
        values[schema.variadic] = tuple(_parse_member(f) for f in items)
    message = schema.cls(**values)
    if schema.check is not None:
        problem = schema.check(message)
        if problem is not None:
            raise WireError(f"{schema.command}: {problem}")
    return message


# ---------------------------------------------------------------------------------------------
# Frames.


def _chunks(payload: bytes) -> List[bytes]:
    """Split at UTF-8 character boundaries so each frame can be read on its own."""
    if not payload:
        return [b""]
    chunks = []
    start = 0
    while start < len(payload):
        end = min(start + PAYLOAD_SIZE, len(payload))
        while end < len(payload) and payload[end] & 0xC0 == 0x80:
            end -= 1
        chunks.append(payload[start:end])
        start = end
    return chunks


def encode(message: Message) -> bytes:
    """One message as one or more whole frames (a multiple of FRAME_SIZE bytes).

    Refuses what the other side's decoder would refuse as too long, so a caller learns of it
    before sending rather than from an error frame.
    """
    try:
        direction, schema = _BY_TYPE[type(message)]
    except KeyError:
        raise WireError(f"not a wire message: {type(message).__name__}") from None
    try:
        payload = _encode_payload(schema, message).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise WireError(f"{schema.command}: text is not encodable as UTF-8 ({exc.reason})") from None
    limit = min(_MAX_PAYLOAD[direction], schema.max_payload or _MAX_PAYLOAD[direction])
    if len(payload) > limit:
        raise WireError(f"{schema.command}: {len(payload)} payload bytes, at most {limit}")
    chunks = _chunks(payload)
    out = bytearray()
    for i, chunk in enumerate(chunks):
        command = schema.command + (CONTINUATION if i + 1 < len(chunks) else "")
        out += command.encode("ascii").ljust(COMMAND_SIZE, b"\0")
        out += chunk.ljust(PAYLOAD_SIZE, b"\0")
    return bytes(out)


@dataclasses.dataclass(frozen=True)
class RawFrame:
    """One frame split into its parts, before the payload is interpreted."""

    command: str
    more: bool
    payload: bytes


def _strip_padding(part: bytes, what: str) -> bytes:
    """The content before the first NUL; everything after it must be NUL padding."""
    content, nul, rest = part.partition(b"\0")
    if nul and rest.strip(b"\0"):
        raise WireError(f"{what}: bytes after the NUL padding")
    return content


def _is_continuation(frame: bytes) -> bool:
    """Read straight from the bytes so a stream stays in step even when a frame is invalid."""
    return frame[:COMMAND_SIZE].partition(b"\0")[0].endswith(CONTINUATION.encode())


def parse_frame(frame: bytes) -> RawFrame:
    if len(frame) != FRAME_SIZE:
        raise WireError(f"a frame is {FRAME_SIZE} bytes, got {len(frame)}")
    raw_command = _strip_padding(frame[:COMMAND_SIZE], "command field")
    payload = _strip_padding(frame[COMMAND_SIZE:], "payload")
    try:
        command = raw_command.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(f"command is not valid UTF-8: {raw_command!r}") from None
    more = command.endswith(CONTINUATION)
    if more:
        command = command[: -len(CONTINUATION)]
    if not command:
        raise WireError("empty command")
    return RawFrame(command, more, payload)


class Reassembler:
    """Turns a stream of frames into messages, joining continuation frames.

    A message is a run of "+" frames and the one frame that ends it. Whatever is wrong with
    any frame of the run is reported once, when the run ends, so a server answers each
    attempted request with exactly one response and the stream stays in step. Past the size
    limit the payload is no longer kept: memory stays bounded however long the run.
    """

    def __init__(self, direction: Direction, max_payload_bytes: Optional[int] = None) -> None:
        self._schemas = _BY_COMMAND[direction]
        self._direction = direction
        self._limit = _MAX_PAYLOAD[direction] if max_payload_bytes is None else max_payload_bytes
        self._reset()

    def _reset(self) -> None:
        self._command: Optional[str] = None
        self._parts: List[bytes] = []
        self._size = 0
        self._error: Optional[WireError] = None

    @property
    def in_message(self) -> bool:
        """True between the first "+" frame of a message and its last frame."""
        return self._command is not None or self._error is not None

    def push(self, frame: bytes) -> Optional[Message]:
        """Feed one frame; returns a message when it completes one, None while one continues.

        Raises WireError for a frame of the wrong size at once (the caller framed it wrong),
        and for anything else at the end of the message it spoils.
        """
        if len(frame) != FRAME_SIZE:
            raise WireError(f"a frame is {FRAME_SIZE} bytes, got {len(frame)}")
        more = _is_continuation(frame)
        if self._error is None:
            try:
                self._take(parse_frame(frame))
            except WireError as exc:
                self._error = exc
                self._parts = []
        if more:
            return None
        command, parts, error = self._command, self._parts, self._error
        self._reset()
        if error is not None:
            raise error
        assert command is not None
        try:
            text = b"".join(parts).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(f"{command}: payload is not valid UTF-8 at byte {exc.start}") from None
        return _decode_payload(self._schemas[command], text)  # type: ignore[return-value]

    def _take(self, raw: RawFrame) -> None:
        if raw.command not in self._schemas:
            raise WireError(f"unknown command {raw.command!r}")
        if self._command is None:
            self._command = raw.command
        elif raw.command != self._command:
            raise WireError(f"{self._command}: continued by a {raw.command!r} frame")
        self._size += len(raw.payload)
        limit = min(self._limit, self._schemas[raw.command].max_payload or self._limit)
        if self._size > limit:
            raise WireError(f"{raw.command}: message longer than {limit} payload bytes")
        self._parts.append(raw.payload)


def _decode(data: bytes, direction: Direction, max_payload_bytes: Optional[int]) -> Message:
    if not data or len(data) % FRAME_SIZE:
        raise WireError(f"truncated: {len(data)} bytes is not a whole number of {FRAME_SIZE}-byte frames")
    reassembler = Reassembler(direction, max_payload_bytes)
    count = len(data) // FRAME_SIZE
    for i in range(count):
        message = reassembler.push(data[i * FRAME_SIZE : (i + 1) * FRAME_SIZE])
        if message is not None:
            if i + 1 != count:
                raise WireError(f"{count - i - 1} frame(s) after the end of the message")
            return message
    raise WireError("truncated: the last frame is a continuation frame")


def decode_request(data: bytes, max_payload_bytes: Optional[int] = None) -> Request:
    """Exactly one request from the frames in `data`."""
    return _decode(data, Direction.REQUEST, max_payload_bytes)  # type: ignore[return-value]


def decode_response(data: bytes, max_payload_bytes: Optional[int] = None) -> Response:
    """Exactly one response or push from the frames in `data`."""
    return _decode(data, Direction.RESPONSE, max_payload_bytes)  # type: ignore[return-value]
