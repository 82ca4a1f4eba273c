"""Certificates (security/certs.py) and the server's TLS flags."""
import os
import stat
import subprocess
import sys

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from replichat.security import certs
from replichat.security.paths import replica_id_from_uris

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(REPO, "server.py")


def test_a_replica_certificate_names_its_replica_and_hosts_and_keys_stay_private(tmp_path) -> None:
    folder = str(tmp_path / "certs")
    written = certs.init_certs(folder, {1: ["10.0.0.1", "node-a"], 2: ["10.0.0.2"]})
    assert len(written) == 6
    paths = certs.replica_paths(folder, 1)
    for key in (paths.key, os.path.join(folder, "ca.key")):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    with open(paths.cert, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert replica_id_from_uris(names.get_values_for_type(x509.UniformResourceIdentifier)) == 1
    assert "node-a" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    # Again: the CA and existing certificates are kept; a new replica gets one from the same CA.
    with open(os.path.join(folder, "ca.crt"), "rb") as f:
        ca = f.read()
    assert certs.init_certs(folder, {1: ["10.0.0.1"], 3: ["10.0.0.3"]}) == list(certs.replica_paths(folder, 3))[:2]
    with open(os.path.join(folder, "ca.crt"), "rb") as f:
        assert f.read() == ca


def test_replica_id_from_uris_wants_exactly_one_replica() -> None:
    assert replica_id_from_uris(["urn:replichat:replica:7"]) == 7
    for uris in ([], ["urn:replichat:replica:1", "urn:replichat:replica:2"], ["urn:replichat:replica:x"],
                 ["urn:replichat:replica:0"], ["https://example.com"]):
        assert replica_id_from_uris(uris) is None


def run_server(*args: str, cwd: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, SERVER, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def test_certs_init_and_a_replica_without_tls_flags(tmp_path) -> None:
    done = run_server("certs", "init", "pki", "--cluster", "1=hostA:50051,2=10.1.1.2:50051", cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path / "pki")) == ["ca.crt", "ca.key", "replica-1.crt", "replica-1.key",
                                                     "replica-2.crt", "replica-2.key"]
    refused = run_server("--id", "1", "--cluster", "1=127.0.0.1:1", cwd=str(tmp_path))
    assert refused.returncode == 2 and "--certs-dir" in refused.stderr and "--insecure-peers" in refused.stderr
    missing = run_server("--id", "1", "--cluster", "1=127.0.0.1:1", "--certs-dir", "nowhere", cwd=str(tmp_path))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert not (tmp_path / "data").exists()


def test_plaintext_is_warned_about_where_it_matters(caplog) -> None:
    from replichat.server.replica import _warn_about_plaintext
    from replichat.security.options import Security
    from replichat.security.paths import CertificatePaths

    tls_peers = CertificatePaths("c", "k", "ca")
    _warn_about_plaintext(1, Security(tls_peers), "127.0.0.1:50051", "127.0.0.1:50151")
    assert caplog.text == ""  # loopback only, peers on TLS: nothing to warn about
    _warn_about_plaintext(1, Security(tls_peers, "c", "k", plain_wire=True), "10.0.0.1:50051", "0.0.0.0:50151")
    assert "INSECURE: clients connect to 0.0.0.0:50151 without TLS" in caplog.text
    assert "10.0.0.1:50051" not in caplog.text  # gRPC has TLS
    caplog.clear()
    _warn_about_plaintext(2, Security(None), "[::1]:50051", "")
    assert "replicas talk plain TCP (--insecure-peers)" in caplog.text and "clients connect" not in caplog.text
