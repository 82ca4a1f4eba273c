"""One replica process: the node, its gRPC server (chat API), its Raft listener (peers, plain
TCP, see transport.py) and its wire listener."""
import asyncio
import logging
import signal
from typing import Dict, Optional

from replichat.api.grpc_service import create_grpc_server
from replichat.metrics.monitoring import monitoring_or_none
from replichat.node import Node, NodeOptions
from replichat.transport import split_address, start_peer_listener
from replichat.wire.listener import start_wire_listener

log = logging.getLogger(__name__)


class ListenError(Exception):
    """A port the replica needs is taken or not local; the message says which and why."""


async def serve_replica(
    node_id: int,
    cluster: Dict[int, str],
    data_dir: str,
    *,
    peers: Optional[Dict[int, str]] = None,
    bind_address: Optional[str] = None,
    wire_address: Optional[str] = None,
    options: Optional[NodeOptions] = None,
    metrics_address: Optional[str] = None,
) -> int:
    """Run until SIGTERM/SIGINT (clean stop: exit 0) or an unrecoverable error (exit 1).

    `cluster`: every replica's gRPC address; `peers`: every replica's Raft address (default:
    derived from `cluster`, see defaults.raft_addresses). Raises ListenError before anything
    has started if the gRPC or Raft port cannot be bound."""
    node = Node(node_id, cluster, data_dir, options, peers)
    monitoring = monitoring_or_none(node, cluster, data_dir, metrics_address)
    backend = {t: node if monitoring is None else monitoring.backend_for(node, t) for t in ("grpc", "wire")}
    grpc_address = bind_address or cluster[node_id]
    raft_address = node.peers[node_id]
    # Bind both ports before the node starts: a busy port fails at once, with nothing to undo.
    # Peer messages that arrive before the node's loop runs wait in its inbox.
    try:
        server, _ = create_grpc_server(backend["grpc"], grpc_address)
    except OSError as error:  # its message already says "cannot listen on ADDRESS: ..."
        raise ListenError(str(error)) from error
    try:
        host, port = split_address(raft_address)
        peer_listener = await start_peer_listener(node_id, node.deliver, host, port, senders=node.peers)
    except OSError as error:
        await server.stop(None)
        raise ListenError(f"cannot listen for peers on {raft_address}: {error}") from error
    if monitoring is not None:
        try:
            await monitoring.listen()
        except OSError as error:
            await server.stop(None)
            peer_listener.close()
            raise ListenError(f"cannot listen for metrics on {metrics_address}: {error}") from error
        monitoring.watch_peer_traffic(node.transport, peer_listener)

    await node.start()
    await server.start()
    wire = None
    if wire_address:
        host, _, wire_port = wire_address.rpartition(":")
        wire = await start_wire_listener(backend["wire"], host, int(wire_port))
        node.wire_address = f"{host}:{wire.port}"
    if monitoring is not None:
        monitoring.start()
    log.info(
        "replica %d serving gRPC on %s, Raft (peers) on %s%s, data in %s",
        node_id, grpc_address, raft_address, f", wire protocol on {node.wire_address}" if wire else "", data_dir,
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
    if monitoring is not None:
        await monitoring.close()
    if wire is not None:
        await wire.close()
    await server.stop(grace=0.5)
    if failure is not None:
        await node.stop(transfer_leadership=False)
    # Only once the node has stopped: a leader handing over leadership in node.stop() still
    # needs its peers' answers. Closing drops their connections, so they see this replica go.
    peer_listener.close()
    await peer_listener.wait_closed()
    return 1 if failure else 0
