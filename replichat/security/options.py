"""What a replica is told about TLS on the command line, resolved into files and contexts.

Flags (server.py --help; the names follow etcd's):
  --certs-dir DIR             peer certificate, key and cluster CA from a `certs init` directory
  --peer-cert-file, --peer-key-file, --peer-trusted-ca-file   the same, file by file
  --insecure-peers            plain TCP between replicas (warns: anyone who reaches the Raft port
                              can then speak for any replica)
  --cert, --key               TLS for the client listeners (gRPC and wire)
  --plain-wire                the wire listener without TLS all the same (the brief's protocol)
"""
import logging
import ssl
from typing import Any, NamedTuple, Optional

from replichat.security import tls
from replichat.security.paths import CertificatePaths

log = logging.getLogger(__name__)


class Security(NamedTuple):
    # None: plain TCP between replicas (--insecure-peers).
    peer: Optional[CertificatePaths] = None
    # None: clients connect without TLS.
    client_cert: Optional[str] = None
    client_key: Optional[str] = None
    # Serve the wire protocol without TLS even with a client certificate (--plain-wire).
    plain_wire: bool = False

    @property
    def client_tls(self) -> bool:
        return self.client_cert is not None

    def peer_server_context(self) -> Optional[ssl.SSLContext]:
        return tls.peer_server_context(self.peer) if self.peer is not None else None

    def peer_client_context(self) -> Optional[ssl.SSLContext]:
        return tls.peer_client_context(self.peer) if self.peer is not None else None

    @property
    def wire_tls(self) -> bool:
        return self.client_tls and not self.plain_wire

    def wire_context(self) -> Optional[ssl.SSLContext]:
        if self.client_cert is None or self.client_key is None or self.plain_wire:
            return None
        return tls.server_context(self.client_cert, self.client_key)

    def grpc_channel_credentials(self) -> Optional[Any]:
        """What this replica uses to reach its peers' gRPC (its metrics probe them): TLS when it
        serves TLS itself, trusting the cluster CA (or the system's roots without peer TLS)."""
        if not self.client_tls:
            return None
        import grpc

        root = None
        if self.peer is not None:
            with open(self.peer.ca, "rb") as f:
                root = f.read()
        return grpc.ssl_channel_credentials(root_certificates=root)

    def grpc_key_pair(self) -> Optional[tuple]:
        if self.client_cert is None or self.client_key is None:
            return None
        with open(self.client_key, "rb") as key, open(self.client_cert, "rb") as cert:
            return key.read(), cert.read()


INSECURE_PEERS_WARNING = (
    "INSECURE: replicas talk plain TCP (--insecure-peers). Anyone who can reach this replica's Raft "
    "port can forge messages from any replica: commit commands, depose the leader, make it acknowledge "
    "writes nobody holds. Use --certs-dir (python3 server.py certs init DIR --cluster ...) outside a lab."
)
