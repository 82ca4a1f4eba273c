"""One replica process: the Raft node, the chat service on it, its gRPC server (chat API), its
Raft listener (peers, see transport.py) and its wire listener."""
import asyncio
import logging
import os
import signal
from typing import Dict, List, Optional

from replichat import defaults
from replichat.addresses import is_loopback
from replichat.api.grpc_service import DEFAULT_MAX_STREAMS_PER_ADDRESS, create_grpc_server
from replichat.chat.auth import AuthLimits
from replichat.chat.machine import ChatMachine
from replichat.chat.service import ChatService
from replichat.server.membership_admin import MembershipAdmin
from replichat.metrics.monitoring import monitoring_or_none
from replichat.runtime.node import Node, NodeOptions
from replichat.security.options import INSECURE_PEERS_WARNING, Security
from replichat.identity import (
    FILE_NAME, REPLACED_HELP, IdentityError, IdentityStore, cluster_id_from_ca, cluster_id_from_members,
)
from replichat.runtime.transport import IdentityGuard, PeerTransport, split_address, start_peer_listener
from replichat.wire.listener import start_wire_listener

log = logging.getLogger(__name__)


# The process's exit code when its data directory was replaced (identity.py): the launcher
# and operators can tell it from a crash.
REPLACED_EXIT_CODE = 4


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
    wire_cluster: Optional[Dict[int, str]] = None,
    options: Optional[NodeOptions] = None,
    metrics_address: Optional[str] = None,
    security: Security = Security(),
    max_streams_per_address: int = DEFAULT_MAX_STREAMS_PER_ADDRESS,
    admin_token: Optional[str] = None,
    join: bool = False,
    auth_enabled: bool = True,
    auth_limits: AuthLimits = AuthLimits(),
) -> int:
    """Run until SIGTERM/SIGINT (clean stop: exit 0) or an unrecoverable error (exit 1).

    `cluster`: every replica's gRPC address; `peers`: every replica's Raft address (default:
    derived from `cluster`, see defaults.raft_addresses); `wire_cluster`: the wire addresses of
    those replicas that serve the wire protocol, for the `members` answer. Raises ListenError
    before anything has started if the gRPC or Raft port cannot be bound. `options` configure
    the Raft runtime; `auth_enabled` and `auth_limits` the chat service (chat/auth.py).

    `admin_token`: membership changes need it (None: refused). `join`: a new replica joining
    a running cluster: not a voter of its bootstrap configuration (so it never campaigns), it
    waits for the leader to add it and takes the membership from the log. Once its log or
    snapshot holds a configuration, that configuration is in effect, whatever `cluster` says."""
    peers = dict(peers) if peers is not None else defaults.raft_addresses(cluster)
    state_path = os.path.join(data_dir, "state.db")
    voters = sorted(set(peers) - {node_id}) if join else None
    node = Node(node_id, peers, data_dir, lambda log: ChatMachine.open(state_path, log), options, voters=voters)
    service = ChatService(node, state_path, address=cluster[node_id], auth_enabled=auth_enabled,
                          auth_limits=auth_limits)
    service.admin = MembershipAdmin(node, cluster, lambda: service.wire_address, admin_token, wire_cluster)
    if join:
        log.info("replica %d joins the cluster: it waits for the leader to add it (`server.py members add`)", node_id)
    monitoring = monitoring_or_none(service, cluster, data_dir, metrics_address, security.grpc_channel_credentials())
    backend = {t: service if monitoring is None else monitoring.backend_for(service, t) for t in ("grpc", "wire")}
    replaced: "asyncio.Future[str]" = asyncio.get_event_loop().create_future()
    guard = _identity_guard(cluster, security, replaced)
    # Peers dial each other with the cluster certificate (mutual TLS) unless --insecure-peers.
    node.transport = PeerTransport(node_id, node.peers, security.peer_client_context(), guard)
    _warn_about_plaintext(node_id, security, bind_address or cluster[node_id], wire_address or "")
    grpc_address = bind_address or cluster[node_id]
    raft_address = node.peers[node_id]
    # Bind both ports before the node starts: a busy port fails at once, with nothing to undo.
    # Peer messages that arrive before the node's loop runs wait in its inbox.
    try:
        server, _ = create_grpc_server(backend["grpc"], grpc_address, security.grpc_key_pair(), max_streams_per_address)
    except OSError as error:  # its message already says "cannot listen on ADDRESS: ..."
        raise ListenError(str(error)) from error
    try:
        host, port = split_address(raft_address)
        peer_listener = await start_peer_listener(node_id, node.deliver, host, port, senders=node.peers,
                                                  ssl_context=security.peer_server_context(), guard=guard,
                                                  deliver_snapshot_parts=node.deliver_snapshot_parts,
                                                  introduce=node.introduce)
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
    try:
        # Written at the first start (identity.py); a directory of another cluster is refused.
        store = IdentityStore(data_dir, node_id, guard.cluster_id)
        guard.open(store)
    except IdentityError:
        await server.stop(None)
        peer_listener.close()
        raise
    log.info("replica %d data identity: cluster %s, incarnation %s%s", node_id, guard.cluster_id.hex(),
             guard.incarnation.hex(), " (a new data directory)" if store.identity.fresh else "")

    await service.start()
    await server.start()
    wire = None
    if wire_address:
        host, _, wire_port = wire_address.rpartition(":")
        wire = await start_wire_listener(backend["wire"], host, int(wire_port), ssl_context=security.wire_context())
        service.wire_address = f"{host}:{wire.port}"
    if monitoring is not None:
        monitoring.start()
    log.info(
        "replica %d serving gRPC%s on %s, Raft (peers, %s) on %s%s, data in %s",
        node_id, " (TLS)" if security.client_tls else "", grpc_address,
        "mutual TLS" if security.peer is not None else "PLAIN TCP", raft_address,
        f", wire protocol{' (TLS)' if security.wire_tls else ''} on {service.wire_address}" if wire else "", data_dir,
    )

    stop = asyncio.Event()
    loop = asyncio.get_event_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stop_requested = asyncio.ensure_future(stop.wait())
    node_stopped = asyncio.ensure_future(node.stopped.wait())
    await asyncio.wait([stop_requested, node_stopped, replaced], return_when=asyncio.FIRST_COMPLETED)
    stop_requested.cancel()
    node_stopped.cancel()
    if replaced.done():
        log.critical("replica %d refuses to serve: %s. %s", node_id, replaced.result(),
                     REPLACED_HELP.format(replica=node_id, file=FILE_NAME))
        await service.stop(transfer_leadership=False)
        if wire is not None:
            await wire.close()
        await server.stop(None)
        peer_listener.close()
        await peer_listener.wait_closed()
        return REPLACED_EXIT_CODE
    replaced.cancel()

    failure = node.failure
    log.info("replica %d stopping%s", node_id, f" after: {failure!r}" if failure else "")
    if failure is None:
        await service.stop()
    if monitoring is not None:
        await monitoring.close()
    if wire is not None:
        await wire.close()
    await server.stop(grace=0.5)
    if failure is not None:
        await service.stop(transfer_leadership=False)
    # Only once the node has stopped: a leader handing over leadership in service.stop() still
    # needs its peers' answers. Closing drops their connections, so they see this replica go.
    peer_listener.close()
    await peer_listener.wait_closed()
    return 1 if failure else 0


def _warn_about_plaintext(node_id: int, security: Security, grpc_address: str, wire_address: str) -> None:
    """Say loudly at start what an attacker on the network could do to this replica."""
    if security.peer is None:
        log.warning("replica %d: %s", node_id, INSECURE_PEERS_WARNING)
    plain = ([grpc_address] if not security.client_tls else []) + ([wire_address] if not security.wire_tls else [])
    if plain:
        exposed = [a for a in plain if a and not is_loopback(split_address(a)[0])]
        if exposed:
            log.warning(
                "replica %d: INSECURE: clients connect to %s without TLS: anyone on the network can read "
                "and alter their traffic. Give --cert and --key (the certificates of `server.py certs init`).",
                node_id, ", ".join(exposed),
            )


def _identity_guard(cluster: Dict[int, str], security: Security, replaced: "asyncio.Future[str]") -> IdentityGuard:
    """The identity rules at the Raft port (identity.py); the data directory's identity is
    opened once the ports are bound (a busy port must leave no trace in the data folder)."""
    if security.peer is not None:
        cluster_id = cluster_id_from_ca(security.peer.ca)
    else:
        cluster_id = cluster_id_from_members(cluster)  # --cluster: the same on every replica

    def on_replaced(reason: str) -> None:
        if not replaced.done():
            replaced.set_result(reason)

    return IdentityGuard(cluster_id, on_replaced)
