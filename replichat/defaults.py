"""Ports and addresses of the default local cluster, shared by server.py and client.py."""
import os
from typing import Dict, List

DEFAULT_HOST = "127.0.0.1"
# Replica i (1-based) of the default local cluster serves gRPC (clients) on
# FIRST_GRPC_PORT + i - 1, the seed wire protocol on FIRST_WIRE_PORT + i - 1 and Raft (its
# peers) on FIRST_GRPC_PORT + i - 1 + RAFT_PORT_OFFSET.
FIRST_GRPC_PORT = 50051
FIRST_WIRE_PORT = 50151
# ... and its metrics and cluster page (HTTP) on FIRST_METRICS_PORT + i - 1.
FIRST_METRICS_PORT = 50351
DEFAULT_REPLICAS = 5
# Where a replica listens for its peers when `--peers` does not say: its gRPC port + this.
RAFT_PORT_OFFSET = 200


def local_cluster(replicas: int = DEFAULT_REPLICAS, host: str = DEFAULT_HOST) -> Dict[int, str]:
    """Replica id -> gRPC address of the default local cluster."""
    return {i: f"{host}:{FIRST_GRPC_PORT + i - 1}" for i in range(1, replicas + 1)}


def local_wire_addresses(replicas: int = DEFAULT_REPLICAS, host: str = DEFAULT_HOST) -> List[str]:
    return [f"{host}:{FIRST_WIRE_PORT + i - 1}" for i in range(1, replicas + 1)]


def raft_addresses(cluster: Dict[int, str]) -> Dict[int, str]:
    """Replica id -> Raft (peer) address, for a cluster given by gRPC addresses only: the
    same host, the gRPC port + RAFT_PORT_OFFSET."""
    derived = {}
    for node_id, address in cluster.items():
        host, _, port = address.rpartition(":")
        derived[node_id] = f"{host}:{int(port) + RAFT_PORT_OFFSET}"
    return derived

# The CA certificate server.py's local cluster creates in its default data folder (./data):
# the stock client uses it by default to verify the local replicas (TLS on gRPC).
LOCAL_CA_FILE = os.path.join("data", "certs", "ca.crt")
