"""One replica process: the node, its gRPC server (chat API + Raft peers) and wire listener."""
import asyncio
import logging
import signal
from typing import Dict, Optional

from replichat.api.grpc_service import create_grpc_server
from replichat.node import Node, NodeOptions
from replichat.proto import raft_pb2_grpc
from replichat.transport import PeerServicer
from replichat.wire.listener import start_wire_listener

log = logging.getLogger(__name__)


async def serve_replica(
    node_id: int,
    cluster: Dict[int, str],
    data_dir: str,
    *,
    bind_address: Optional[str] = None,
    wire_address: Optional[str] = None,
    options: Optional[NodeOptions] = None,
) -> int:
    """Run until SIGTERM/SIGINT (clean stop: exit 0) or an unrecoverable error (exit 1)."""
    node = Node(node_id, cluster, data_dir, options)
    await node.start()

    def add_peer_service(server: "object") -> None:
        raft_pb2_grpc.add_RaftPeerServicer_to_server(PeerServicer(node_id, node.deliver), server)

    server, port = create_grpc_server(node, bind_address or cluster[node_id], extra=add_peer_service)
    await server.start()
    wire = None
    if wire_address:
        host, _, wire_port = wire_address.rpartition(":")
        wire = await start_wire_listener(node, host, int(wire_port))
        node.wire_address = f"{host}:{wire.port}"
    log.info(
        "replica %d serving gRPC on %s%s, data in %s",
        node_id, bind_address or cluster[node_id], f", wire protocol on {node.wire_address}" if wire else "", data_dir,
    )

    stop = asyncio.Event()
    loop = asyncio.get_event_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stop_requested = asyncio.ensure_future(stop.wait())
    node_stopped = asyncio.ensure_future(node.stopped.wait())
    await asyncio.wait([stop_requested, node_stopped], return_when=asyncio.FIRST_COMPLETED)
    stop_requested.cancel()
    node_stopped.cancel()

    failure = node.failure
    log.info("replica %d stopping%s", node_id, f" after: {failure!r}" if failure else "")
    if failure is None:
        await node.stop()
    if wire is not None:
        await wire.close()
    await server.stop(grace=0.5)
    if failure is not None:
        await node.stop(transfer_leadership=False)
    return 1 if failure else 0
