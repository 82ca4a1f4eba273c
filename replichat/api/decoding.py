"""Registers the Chat servicer with request decoding that answers malformed bytes clearly.

The generated `add_ChatServicer_to_server` decodes requests with `FromString`, and grpc
answers a DecodeError (say, invalid UTF-8 inside a string field) with UNKNOWN and a Python
class name in the detail. Here a request that does not decode becomes a `Malformed` value
instead, which the servicer method never sees: the call ends INVALID_ARGUMENT with a
sentence a person can act on.
"""
import functools
from typing import Any, AsyncIterator, Callable, Dict

import grpc
from google.protobuf.message import DecodeError, Message

from replichat.proto import chat_pb2

_SERVICE = chat_pb2.DESCRIPTOR.services_by_name["Chat"]


class Malformed:
    """Bytes that were meant to be a `type_name` and are not."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def message(self) -> str:
        return (
            f"malformed request: the bytes are not a valid {self.type_name} "
            "(a string field that is not UTF-8, or a field of the wrong type)"
        )


def _tolerant(message_class: Any) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError:
            return Malformed(message_class.DESCRIPTOR.name)

    return decode


def _unary(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message())
        return await method(request, context)

    return call


def _stream(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    @functools.wraps(method)
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message())
        async for response in method(request, context):
            yield response

    return call


def add_chat_servicer(servicer: Any, server: grpc.aio.Server) -> None:
    """What `chat_pb2_grpc.add_ChatServicer_to_server` does, with tolerant decoding."""
    handlers: Dict[str, grpc.RpcMethodHandler] = {}
    for method in _SERVICE.methods:
        request_class = getattr(chat_pb2, method.input_type.name)
        response_class = getattr(chat_pb2, method.output_type.name)
        implementation = getattr(servicer, method.name)
        serialize: Callable[[Message], bytes] = response_class.SerializeToString
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _stream(implementation), request_deserializer=_tolerant(request_class), response_serializer=serialize
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(implementation), request_deserializer=_tolerant(request_class), response_serializer=serialize
            )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE.full_name, handlers),))
