"""Where a replica's certificate files are and how a certificate names its replica: what a
running replica needs, without the `cryptography` package (only creating certificates needs it,
see certs.py)."""
import os
from typing import Iterable, NamedTuple, Optional

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
REPLICA_URI_PREFIX = "urn:replichat:replica:"


class CertificatePaths(NamedTuple):
    cert: str
    key: str
    ca: str


def replica_paths(directory: str, replica_id: int) -> CertificatePaths:
    return CertificatePaths(
        os.path.join(directory, f"replica-{replica_id}.crt"),
        os.path.join(directory, f"replica-{replica_id}.key"),
        os.path.join(directory, CA_CERT),
    )


def replica_uri(replica_id: int) -> str:
    return f"{REPLICA_URI_PREFIX}{replica_id}"


def replica_id_from_uris(uris: Iterable[str]) -> Optional[int]:
    """The replica id named by a certificate's URI subject alternative names, if exactly one."""
    ids = {uri[len(REPLICA_URI_PREFIX):] for uri in uris if uri.startswith(REPLICA_URI_PREFIX)}
    if len(ids) != 1:
        return None
    (text,) = ids
    return int(text) if text.isdigit() and 0 < int(text) < 1 << 63 else None
