from replichat.proto import chat_pb2 as _chat_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Command(_message.Message):
    __slots__ = ("timestamp_ms", "principal", "principal_generation", "credential_hash", "create", "delete", "send", "connect", "ack")
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_GENERATION_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    SEND_FIELD_NUMBER: _ClassVar[int]
    CONNECT_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    timestamp_ms: int
    principal: str
    principal_generation: int
    credential_hash: str
    create: _chat_pb2.CreateUserRequest
    delete: _chat_pb2.DeleteUserRequest
    send: _chat_pb2.SendMessageRequest
    connect: _chat_pb2.ConnectRequest
    ack: _chat_pb2.AckRequest
    def __init__(self, timestamp_ms: _Optional[int] = ..., principal: _Optional[str] = ..., principal_generation: _Optional[int] = ..., credential_hash: _Optional[str] = ..., create: _Optional[_Union[_chat_pb2.CreateUserRequest, _Mapping]] = ..., delete: _Optional[_Union[_chat_pb2.DeleteUserRequest, _Mapping]] = ..., send: _Optional[_Union[_chat_pb2.SendMessageRequest, _Mapping]] = ..., connect: _Optional[_Union[_chat_pb2.ConnectRequest, _Mapping]] = ..., ack: _Optional[_Union[_chat_pb2.AckRequest, _Mapping]] = ...) -> None: ...

class CommandResult(_message.Message):
    __slots__ = ("code", "error", "seq", "count", "name")
    class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OK: _ClassVar[CommandResult.Code]
        INVALID_ARGUMENT: _ClassVar[CommandResult.Code]
        ALREADY_EXISTS: _ClassVar[CommandResult.Code]
        NOT_FOUND: _ClassVar[CommandResult.Code]
        STALE_REQUEST: _ClassVar[CommandResult.Code]
        UNAUTHENTICATED: _ClassVar[CommandResult.Code]
    OK: CommandResult.Code
    INVALID_ARGUMENT: CommandResult.Code
    ALREADY_EXISTS: CommandResult.Code
    NOT_FOUND: CommandResult.Code
    STALE_REQUEST: CommandResult.Code
    UNAUTHENTICATED: CommandResult.Code
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    code: CommandResult.Code
    error: str
    seq: int
    count: int
    name: str
    def __init__(self, code: _Optional[_Union[CommandResult.Code, str]] = ..., error: _Optional[str] = ..., seq: _Optional[int] = ..., count: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...
