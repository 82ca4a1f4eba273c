"""A cluster's certificate authority and its replicas' certificates (with `cryptography`).

Layout of a certificate directory (what `server.py certs init DIR` writes and `--certs-dir DIR`
reads):

    ca.crt            the cluster CA: every replica trusts it, clients verify replicas with it
    ca.key            its key (mode 0600): needed only to issue certificates, keep it offline
    replica-N.crt     replica N's certificate, signed by the CA, for both TLS client and server
    replica-N.key     its key (mode 0600)

A replica's identity is in its certificate as the URI `urn:replichat:replica:N` (and the
common name `replica-N`): peers learn who is on the other end of a Raft connection from the
certificate the CA signed, never from what the messages claim. The certificate also names the
replica's host names and IP addresses (subject alternative names), so gRPC and wire clients can
verify the replica they dialled; it can serve the client listeners too (`--cert/--key`, which
the local cluster sets to it).

Keys are ECDSA P-256: small, and a TLS handshake with them is cheap for the peer connections
and for each client.
"""
import datetime
import ipaddress
import os
import warnings
from typing import Dict, Iterable, List, Tuple

with warnings.catch_warnings():
    # cryptography 47 is pinned as the last release for Python 3.8, which it says on import
    # there; that is known and not for the operator's screen.
    warnings.filterwarnings("ignore", message="Python 3.8 is no longer supported")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from replichat.security.paths import CA_CERT, CA_KEY, CertificatePaths, replica_paths, replica_uri

__all__ = ["CA_CERT", "CA_KEY", "CertificatePaths", "replica_paths", "init_certs", "create_ca", "issue_replica_cert"]

CA_VALIDITY = datetime.timedelta(days=3650)
CERT_VALIDITY = datetime.timedelta(days=825)
# Clock skew between the machine that issued a certificate and those that check it.
_BACKDATE = datetime.timedelta(hours=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def create_ca(name: str) -> Tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def issue_replica_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, replica_id: int, hosts: Iterable[str]
) -> Tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A certificate for replica `replica_id` reachable at `hosts` (names or IP addresses),
    valid for TLS server and client authentication (peers dial each other both ways)."""
    key = _new_key()
    names: List[x509.GeneralName] = [x509.UniformResourceIdentifier(replica_uri(replica_id))]
    for host in sorted(set(hosts)):
        name = _alt_name(host)
        if name not in names:
            names.append(name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"replica-{replica_id}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write(path: str, data: bytes, private: bool) -> None:
    """Write atomically; a key is created 0600 from the start (never readable by others)."""
    tmp = path + ".tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(tmp, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_bytes(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_ca(directory: str) -> Tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    with open(os.path.join(directory, CA_KEY), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    with open(os.path.join(directory, CA_CERT), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{os.path.join(directory, CA_KEY)} is not an ECDSA key")
    return key, cert


def init_certs(directory: str, replicas: Dict[int, Iterable[str]], *, name: str = "replichat cluster CA",
               force: bool = False) -> List[str]:
    """Create (or reuse) the CA in `directory` and a certificate for each replica id (with the
    hosts it is reached at) that has none yet (all of them with `force`). Returns the paths
    written."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    written = []
    if os.path.exists(os.path.join(directory, CA_KEY)) and os.path.exists(os.path.join(directory, CA_CERT)):
        ca_key, ca_cert = load_ca(directory)
    else:
        ca_key, ca_cert = create_ca(name)
        _write(os.path.join(directory, CA_KEY), _key_bytes(ca_key), private=True)
        _write(os.path.join(directory, CA_CERT), _cert_bytes(ca_cert), private=False)
        written += [os.path.join(directory, CA_CERT), os.path.join(directory, CA_KEY)]
    for replica_id, hosts in sorted(replicas.items()):
        paths = replica_paths(directory, replica_id)
        if not force and os.path.exists(paths.cert) and os.path.exists(paths.key):
            continue
        key, cert = issue_replica_cert(ca_key, ca_cert, replica_id, hosts)
        _write(paths.key, _key_bytes(key), private=True)
        _write(paths.cert, _cert_bytes(cert), private=False)
        written += [paths.cert, paths.key]
    return written
