"""Server reflection answers under grpc.reflection.v1 (the stable name) as under v1alpha."""
from typing import List

import pytest
from google.protobuf import descriptor_pb2
import grpc
from grpc_reflection.v1alpha import reflection_pb2

from .fake_backend import FakeCluster, FakeReplica, run, serving

pytestmark = pytest.mark.timeout(60)

V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


async def _ask_v1(address: str, request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
    """A v1 client: v1's messages have v1alpha's bytes, so v1alpha's classes encode them."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(
            V1_METHOD,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )(iter([request]))
        answers = [answer async for answer in call]
    assert len(answers) == 1
    return answers[0]


def test_v1_lists_services_and_describes_the_chat_service_and_itself() -> None:
    async def scenario() -> None:
        async with serving(FakeReplica(FakeCluster())) as (_, address):
            listed = await _ask_v1(address, reflection_pb2.ServerReflectionRequest(list_services=""))
            names: List[str] = [s.name for s in listed.list_services_response.service]
            assert "replichat.v1.Chat" in names and "grpc.reflection.v1.ServerReflection" in names

            for symbol, package in (("replichat.v1.Chat", "replichat.v1"),
                                    ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1")):
                answer = await _ask_v1(address, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
                assert answer.WhichOneof("message_response") == "file_descriptor_response", answer
                files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                         for raw in answer.file_descriptor_response.file_descriptor_proto]
                described = next(f for f in files if f.package == package)
                service = described.service[0]
                assert f"{package}.{service.name}" == symbol
                if package == "grpc.reflection.v1":
                    assert service.method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"

            unknown = await _ask_v1(address, reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.Such"))
            assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]

    run(scenario())
