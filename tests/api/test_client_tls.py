"""TLS for clients: the gRPC server and the wire listener with a certificate, the clients with
`ca_file`; a client that does not trust the CA (or speaks plaintext) gets nothing through."""
import os

import pytest

from replichat.api.grpc_service import create_grpc_server
from replichat.client.api import ChatClient
from replichat.client.wire_api import WireChatApi
from replichat.errors import ChatError
from replichat.security import certs, tls
from replichat.wire.listener import start_wire_listener
from tests.api.fake_backend import FakeCluster, FakeReplica, run

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def pki(tmp_path):
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    certs.init_certs(ours, {1: ["127.0.0.1"]})
    certs.init_certs(theirs, {1: ["127.0.0.1"]})
    return certs.replica_paths(ours, 1), os.path.join(theirs, "ca.crt")


def test_grpc_over_tls_needs_the_clusters_ca(pki) -> None:
    paths, foreign_ca = pki
    with open(paths.key, "rb") as key, open(paths.cert, "rb") as cert:
        key_pair = (key.read(), cert.read())

    async def scenario() -> None:
        server, port = create_grpc_server(FakeReplica(FakeCluster()), "127.0.0.1:0", key_pair)
        await server.start()
        address = f"127.0.0.1:{port}"
        try:
            async with ChatClient([address], ca_file=paths.ca, deadline=5) as client:
                assert await client.create("alice") == "alice"
            for ca_file in (None, foreign_ca):  # plaintext, or a CA that did not sign the server's certificate
                async with ChatClient([address], ca_file=ca_file, deadline=1, attempt_timeout=0.5) as client:
                    with pytest.raises(ChatError):
                        await client.create("mallory")
            async with ChatClient([address], ca_file=paths.ca, deadline=5) as client:
                assert await client.list() == ["alice"]
        finally:
            await server.stop(None)

    run(scenario())


def test_the_wire_protocol_over_tls(pki) -> None:
    paths, foreign_ca = pki

    async def scenario() -> None:
        listener = await start_wire_listener(FakeReplica(FakeCluster()), "127.0.0.1", 0,
                                             ssl_context=tls.server_context(paths.cert, paths.key))
        address = f"127.0.0.1:{listener.port}"
        try:
            api = WireChatApi([address], ca_file=paths.ca, deadline=5)
            try:
                assert await api.create("bob") == "bob"
            finally:
                await api.close()
            for ca_file in (None, foreign_ca):
                api = WireChatApi([address], ca_file=ca_file, deadline=1, attempt_timeout=0.5)
                try:
                    with pytest.raises(ChatError):
                        await api.create("mallory")
                finally:
                    await api.close()
        finally:
            await listener.close()

    run(scenario())


def test_the_stock_client_finds_the_local_clusters_ca_by_itself(tmp_path, monkeypatch) -> None:
    """server.py's local cluster writes ./data/certs/ca.crt; client.py run beside it with the
    default --servers uses it (gRPC only: the local wire port stays plaintext)."""
    from replichat.client.cli import default_ca

    monkeypatch.chdir(tmp_path)
    assert default_ca("grpc", servers_given=False) is None  # no local cluster here yet
    certs.init_certs(str(tmp_path / "data" / "certs"), {1: ["127.0.0.1"]})
    assert default_ca("grpc", servers_given=False) == os.path.join("data", "certs", "ca.crt")
    assert default_ca("grpc", servers_given=True) is None
    assert default_ca("wire", servers_given=False) is None
