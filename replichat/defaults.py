"""Ports and addresses of the default local cluster, shared by server.py and client.py."""
from typing import Dict, List

DEFAULT_HOST = "127.0.0.1"
# Replica i (1-based) of the default local cluster serves gRPC (clients and peers) on
# FIRST_GRPC_PORT + i - 1 and the seed wire protocol on FIRST_WIRE_PORT + i - 1.
FIRST_GRPC_PORT = 50051
FIRST_WIRE_PORT = 50151
DEFAULT_REPLICAS = 5


def local_cluster(replicas: int = DEFAULT_REPLICAS, host: str = DEFAULT_HOST) -> Dict[int, str]:
    """Replica id -> gRPC address of the default local cluster."""
    return {i: f"{host}:{FIRST_GRPC_PORT + i - 1}" for i in range(1, replicas + 1)}


def local_wire_addresses(replicas: int = DEFAULT_REPLICAS, host: str = DEFAULT_HOST) -> List[str]:
    return [f"{host}:{FIRST_WIRE_PORT + i - 1}" for i in range(1, replicas + 1)]
