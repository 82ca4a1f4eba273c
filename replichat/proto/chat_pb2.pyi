from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateUserRequest(_message.Message):
    __slots__ = ("name", "credential", "client_id", "request_seq")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SEQ_FIELD_NUMBER: _ClassVar[int]
    name: str
    credential: str
    client_id: str
    request_seq: int
    def __init__(self, name: _Optional[str] = ..., credential: _Optional[str] = ..., client_id: _Optional[str] = ..., request_seq: _Optional[int] = ...) -> None: ...

class CreateUserResponse(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteUserRequest(_message.Message):
    __slots__ = ("name", "credential", "client_id", "request_seq")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SEQ_FIELD_NUMBER: _ClassVar[int]
    name: str
    credential: str
    client_id: str
    request_seq: int
    def __init__(self, name: _Optional[str] = ..., credential: _Optional[str] = ..., client_id: _Optional[str] = ..., request_seq: _Optional[int] = ...) -> None: ...

class DeleteUserResponse(_message.Message):
    __slots__ = ("dropped_messages",)
    DROPPED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    dropped_messages: int
    def __init__(self, dropped_messages: _Optional[int] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ("pattern",)
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    pattern: str
    def __init__(self, pattern: _Optional[str] = ...) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class SendMessageRequest(_message.Message):
    __slots__ = ("sender", "recipient", "text", "credential", "client_id", "request_seq")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SEQ_FIELD_NUMBER: _ClassVar[int]
    sender: str
    recipient: str
    text: str
    credential: str
    client_id: str
    request_seq: int
    def __init__(self, sender: _Optional[str] = ..., recipient: _Optional[str] = ..., text: _Optional[str] = ..., credential: _Optional[str] = ..., client_id: _Optional[str] = ..., request_seq: _Optional[int] = ...) -> None: ...

class SendMessageResponse(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class ConnectRequest(_message.Message):
    __slots__ = ("name", "session_id", "credential", "client_id", "request_seq")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SEQ_FIELD_NUMBER: _ClassVar[int]
    name: str
    session_id: str
    credential: str
    client_id: str
    request_seq: int
    def __init__(self, name: _Optional[str] = ..., session_id: _Optional[str] = ..., credential: _Optional[str] = ..., client_id: _Optional[str] = ..., request_seq: _Optional[int] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("recipient", "seq", "sender", "text", "sent_at_ms")
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    recipient: str
    seq: int
    sender: str
    text: str
    sent_at_ms: int
    def __init__(self, recipient: _Optional[str] = ..., seq: _Optional[int] = ..., sender: _Optional[str] = ..., text: _Optional[str] = ..., sent_at_ms: _Optional[int] = ...) -> None: ...

class Connected(_message.Message):
    __slots__ = ("name", "queued")
    NAME_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    name: str
    queued: int
    def __init__(self, name: _Optional[str] = ..., queued: _Optional[int] = ...) -> None: ...

class SessionEnded(_message.Message):
    __slots__ = ("reason", "detail")
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        REASON_UNSPECIFIED: _ClassVar[SessionEnded.Reason]
        TAKEN_OVER: _ClassVar[SessionEnded.Reason]
        USER_DELETED: _ClassVar[SessionEnded.Reason]
        SHUTDOWN: _ClassVar[SessionEnded.Reason]
    REASON_UNSPECIFIED: SessionEnded.Reason
    TAKEN_OVER: SessionEnded.Reason
    USER_DELETED: SessionEnded.Reason
    SHUTDOWN: SessionEnded.Reason
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    reason: SessionEnded.Reason
    detail: str
    def __init__(self, reason: _Optional[_Union[SessionEnded.Reason, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class ServerEvent(_message.Message):
    __slots__ = ("connected", "message", "ended")
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    connected: Connected
    message: Delivery
    ended: SessionEnded
    def __init__(self, connected: _Optional[_Union[Connected, _Mapping]] = ..., message: _Optional[_Union[Delivery, _Mapping]] = ..., ended: _Optional[_Union[SessionEnded, _Mapping]] = ...) -> None: ...

class AckRequest(_message.Message):
    __slots__ = ("name", "up_to_seq", "session_id", "credential", "client_id", "request_seq")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UP_TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SEQ_FIELD_NUMBER: _ClassVar[int]
    name: str
    up_to_seq: int
    session_id: str
    credential: str
    client_id: str
    request_seq: int
    def __init__(self, name: _Optional[str] = ..., up_to_seq: _Optional[int] = ..., session_id: _Optional[str] = ..., credential: _Optional[str] = ..., client_id: _Optional[str] = ..., request_seq: _Optional[int] = ...) -> None: ...

class AckResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PeerProgress(_message.Message):
    __slots__ = ("id", "match_index", "next_index")
    ID_FIELD_NUMBER: _ClassVar[int]
    MATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    NEXT_INDEX_FIELD_NUMBER: _ClassVar[int]
    id: int
    match_index: int
    next_index: int
    def __init__(self, id: _Optional[int] = ..., match_index: _Optional[int] = ..., next_index: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("id", "role", "term", "leader_id", "commit_index", "applied_index", "last_index", "peers", "address", "wire_address", "first_index", "snapshot_index")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WIRE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FIRST_INDEX_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_INDEX_FIELD_NUMBER: _ClassVar[int]
    id: int
    role: str
    term: int
    leader_id: int
    commit_index: int
    applied_index: int
    last_index: int
    peers: _containers.RepeatedCompositeFieldContainer[PeerProgress]
    address: str
    wire_address: str
    first_index: int
    snapshot_index: int
    def __init__(self, id: _Optional[int] = ..., role: _Optional[str] = ..., term: _Optional[int] = ..., leader_id: _Optional[int] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., last_index: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[PeerProgress, _Mapping]]] = ..., address: _Optional[str] = ..., wire_address: _Optional[str] = ..., first_index: _Optional[int] = ..., snapshot_index: _Optional[int] = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MemberInfo(_message.Message):
    __slots__ = ("id", "address", "raft_address", "wire_address", "voter", "match_index", "leader")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RAFT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WIRE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VOTER_FIELD_NUMBER: _ClassVar[int]
    MATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    id: int
    address: str
    raft_address: str
    wire_address: str
    voter: bool
    match_index: int
    leader: bool
    def __init__(self, id: _Optional[int] = ..., address: _Optional[str] = ..., raft_address: _Optional[str] = ..., wire_address: _Optional[str] = ..., voter: bool = ..., match_index: _Optional[int] = ..., leader: bool = ...) -> None: ...

class MembersResponse(_message.Message):
    __slots__ = ("replica_id", "leader_id", "term", "last_index", "commit_index", "members")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    replica_id: int
    leader_id: int
    term: int
    last_index: int
    commit_index: int
    members: _containers.RepeatedCompositeFieldContainer[MemberInfo]
    def __init__(self, replica_id: _Optional[int] = ..., leader_id: _Optional[int] = ..., term: _Optional[int] = ..., last_index: _Optional[int] = ..., commit_index: _Optional[int] = ..., members: _Optional[_Iterable[_Union[MemberInfo, _Mapping]]] = ...) -> None: ...

class ChangeMembershipRequest(_message.Message):
    __slots__ = ("kind", "id", "address", "raft_address", "wire_address", "admin_token")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[ChangeMembershipRequest.Kind]
        ADD_LEARNER: _ClassVar[ChangeMembershipRequest.Kind]
        PROMOTE: _ClassVar[ChangeMembershipRequest.Kind]
        REMOVE: _ClassVar[ChangeMembershipRequest.Kind]
    KIND_UNSPECIFIED: ChangeMembershipRequest.Kind
    ADD_LEARNER: ChangeMembershipRequest.Kind
    PROMOTE: ChangeMembershipRequest.Kind
    REMOVE: ChangeMembershipRequest.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RAFT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WIRE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ADMIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    kind: ChangeMembershipRequest.Kind
    id: int
    address: str
    raft_address: str
    wire_address: str
    admin_token: str
    def __init__(self, kind: _Optional[_Union[ChangeMembershipRequest.Kind, str]] = ..., id: _Optional[int] = ..., address: _Optional[str] = ..., raft_address: _Optional[str] = ..., wire_address: _Optional[str] = ..., admin_token: _Optional[str] = ...) -> None: ...

class ChangeMembershipResponse(_message.Message):
    __slots__ = ("index", "members")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    index: int
    members: MembersResponse
    def __init__(self, index: _Optional[int] = ..., members: _Optional[_Union[MembersResponse, _Mapping]] = ...) -> None: ...
