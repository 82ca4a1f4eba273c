"""Bounds on every field of a client request, checked at the edge before anything is proposed.

The state machine validates commands again when it applies them (a forwarded command may come
from anywhere), but a request it would refuse must not cost a Raft log entry on every replica
first: a 15 MiB session id used to be written into every replica's log (+150 MiB of disk per
replica for ten requests) before being answered INVALID_ARGUMENT. Both client edges, gRPC and
the seed wire protocol, pass their requests through `check_request` (see
replichat/api/validated.py), so the bounds live here once.

Bounds are on the raw field, in characters, generous enough that the finer rules behind them
(NFC names of at most 32 characters, texts of at most 4096 UTF-8 bytes) still give their own,
more precise errors. A string field this module does not know (say, one a newer client sends)
gets DEFAULT_STRING_CHARS.
"""
from typing import Dict

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from replichat.chat.credentials import MAX_TOKEN_CHARS as MAX_CREDENTIAL_CHARS
from replichat.chat.names import MAX_NAME_CHARS, MAX_PATTERN_CHARS, MAX_TEXT_BYTES, quote
from replichat.chat.state import MAX_TOKEN_CHARS
from replichat.errors import ChatError, Code

# A name may shrink under NFC (a letter plus combining accents becomes one character).
MAX_NAME_INPUT_CHARS = 4 * MAX_NAME_CHARS
DEFAULT_STRING_CHARS = 1024
FIELD_CHARS: Dict[str, int] = {
    "name": MAX_NAME_INPUT_CHARS,
    "sender": MAX_NAME_INPUT_CHARS,
    "recipient": MAX_NAME_INPUT_CHARS,
    # UTF-8 bytes are checked by validate_text; a character is at least one byte.
    "text": MAX_TEXT_BYTES,
    "pattern": MAX_PATTERN_CHARS,
    "client_id": MAX_TOKEN_CHARS,
    "session_id": MAX_TOKEN_CHARS,
    "credential": MAX_CREDENTIAL_CHARS,
}
# Fields whose value an error must never repeat (it would put a secret on a screen or in a log).
SECRET_FIELDS = frozenset({"credential"})
# Request numbers are stored in SQLite INTEGER columns.
MAX_REQUEST_SEQ = (1 << 63) - 1
# The largest request any client needs to send, with room to spare: gRPC refuses anything
# bigger before decoding it (replichat/api/grpc_service.py). A valid request is far smaller:
# a 4 KiB text plus names and ids of at most a few hundred bytes each.
MAX_REQUEST_BYTES = 64 * 1024


def check_request(request: Message) -> None:
    """Raise ChatError(INVALID_ARGUMENT) if a field of `request` is beyond its bound."""
    for field, value in request.ListFields():
        if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            limit = FIELD_CHARS.get(field.name, DEFAULT_STRING_CHARS)
            if len(value) > limit:
                if field.name in SECRET_FIELDS:
                    shown = "(not shown)"
                else:
                    shown = quote(value) if isinstance(value, str) else f"of {len(value)} bytes"
                raise ChatError(
                    Code.INVALID_ARGUMENT,
                    f"invalid {field.name.replace('_', ' ')} {shown}: {len(value)} characters, at most {limit}",
                )
        elif field.name == "request_seq" and value > MAX_REQUEST_SEQ:
            raise ChatError(Code.INVALID_ARGUMENT, f"invalid request number {value}: at most {MAX_REQUEST_SEQ}")
