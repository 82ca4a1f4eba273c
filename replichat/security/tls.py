"""TLS contexts for the Raft port (mutual TLS against the cluster CA) and the client listeners.

Peers verify each other by the cluster CA and by the replica id in the certificate
(certs.REPLICA_URI_PREFIX), not by host name: a replica's --peers address may be a proxy, a
load balancer's name or an IP the certificate does not list, but only the CA can say "this is
replica 3". The dialling side checks that the replica it reached is the one it meant; the
accepting side takes the id from the certificate and drops messages claiming any other sender
(transport.py).
"""
import ssl
from typing import Any, Dict, Optional

from replichat.security.paths import CertificatePaths, replica_id_from_uris


def _base(purpose_server: bool, paths: CertificatePaths) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose_server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(paths.cert, paths.key)
    context.load_verify_locations(cafile=paths.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def peer_server_context(paths: CertificatePaths) -> ssl.SSLContext:
    """For the Raft listener: a peer must present a certificate signed by the cluster CA."""
    return _base(True, paths)


def peer_client_context(paths: CertificatePaths) -> ssl.SSLContext:
    """For dialling peers: present our certificate, require theirs (checked by replica id)."""
    context = _base(False, paths)
    context.check_hostname = False  # identity is the replica id, checked after the handshake
    return context


def peer_replica_id(peercert: Optional[Dict[str, Any]]) -> Optional[int]:
    """The replica id in a verified peer certificate (`SSLObject.getpeercert()`), if any."""
    if not peercert:
        return None
    uris = [value for kind, value in peercert.get("subjectAltName", ()) if kind == "URI"]
    return replica_id_from_uris(uris)


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """For the wire listener (clients are not asked for a certificate)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def client_context(ca_file: str) -> ssl.SSLContext:
    """For wire clients: verify the replica's certificate against `ca_file` and its address."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
