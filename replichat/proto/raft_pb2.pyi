from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Entry(_message.Message):
    __slots__ = ("term", "index", "data")
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    term: int
    index: int
    data: bytes
    def __init__(self, term: _Optional[int] = ..., index: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("type", "to", "term", "log_term", "index", "entries", "commit", "reject", "reject_hint", "context", "hint_term")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    REJECT_HINT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    HINT_TERM_FIELD_NUMBER: _ClassVar[int]
    type: int
    to: int
    term: int
    log_term: int
    index: int
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    commit: int
    reject: bool
    reject_hint: int
    context: bytes
    hint_term: int
    def __init__(self, type: _Optional[int] = ..., to: _Optional[int] = ..., term: _Optional[int] = ..., log_term: _Optional[int] = ..., index: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., commit: _Optional[int] = ..., reject: bool = ..., reject_hint: _Optional[int] = ..., context: _Optional[bytes] = ..., hint_term: _Optional[int] = ..., **kwargs) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("to", "term", "index", "snapshot_term", "offset", "data", "crc", "total_size", "checksum", "last", "membership")
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_TERM_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CRC_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    to: int
    term: int
    index: int
    snapshot_term: int
    offset: int
    data: bytes
    crc: int
    total_size: int
    checksum: str
    last: bool
    membership: bytes
    def __init__(self, to: _Optional[int] = ..., term: _Optional[int] = ..., index: _Optional[int] = ..., snapshot_term: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., crc: _Optional[int] = ..., total_size: _Optional[int] = ..., checksum: _Optional[str] = ..., last: bool = ..., membership: _Optional[bytes] = ..., **kwargs) -> None: ...

class SnapshotAck(_message.Message):
    __slots__ = ("to", "term", "index", "offset", "refused", "reason", "resend")
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RESEND_FIELD_NUMBER: _ClassVar[int]
    to: int
    term: int
    index: int
    offset: int
    refused: bool
    reason: str
    resend: bool
    def __init__(self, to: _Optional[int] = ..., term: _Optional[int] = ..., index: _Optional[int] = ..., offset: _Optional[int] = ..., refused: bool = ..., reason: _Optional[str] = ..., resend: bool = ..., **kwargs) -> None: ...

class MessageBatch(_message.Message):
    __slots__ = ("messages", "chunks", "acks", "sender_address")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    SENDER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    chunks: _containers.RepeatedCompositeFieldContainer[SnapshotChunk]
    acks: _containers.RepeatedCompositeFieldContainer[SnapshotAck]
    sender_address: str
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., chunks: _Optional[_Iterable[_Union[SnapshotChunk, _Mapping]]] = ..., acks: _Optional[_Iterable[_Union[SnapshotAck, _Mapping]]] = ..., sender_address: _Optional[str] = ...) -> None: ...
