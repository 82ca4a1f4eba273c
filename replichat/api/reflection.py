"""gRPC server reflection under both names tools use: `grpc.reflection.v1alpha` (what
grpcio-reflection ships) and `grpc.reflection.v1` (the stable name; tools that speak only v1,
such as recent grpcurl and Postman, get UNIMPLEMENTED without it).

v1 is v1alpha renamed: the same messages with the same field numbers, so their bytes are
identical. We serve v1 with the library's servicer, decoding and encoding with its v1alpha
classes, and register v1's descriptor (v1alpha's, renamed) so that v1 itself can be described.
"""
from typing import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
_V1ALPHA_PACKAGE = reflection_pb2.DESCRIPTOR.package
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _register_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = _V1_FILE
    proto.package = V1_PACKAGE
    proto.options.Clear()  # v1alpha's options name v1alpha's generated packages
    old, new = f".{_V1ALPHA_PACKAGE}.", f".{V1_PACKAGE}."
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old):]
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old):]
            method.output_type = new + method.output_type[len(old):]
    pool.Add(proto)


def enable_server_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection (v1alpha and v1) for `service_names` plus both reflection services."""
    pool = descriptor_pool.Default()
    _register_v1_descriptor(pool)
    names = list(service_names) + [reflection.SERVICE_NAME, V1_SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    servicer = reflection.ReflectionServicer(names, pool=pool)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": handler}),)
    )
