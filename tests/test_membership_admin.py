"""The operator's side of membership changes, without processes: the admin token (file, check),
validation of change requests, the client ring following the members, the peer transport
following the configuration, and the launcher's command line for an added replica."""
import asyncio
import os
import stat
import types

import pytest

from replichat.client.core import ReplicaRing
from replichat.errors import ChatError, Code
from replichat.server.launcher import LocalCluster
from replichat.server.membership_admin import (
    MembershipAdmin, TokenError, address_problem, create_token_file, read_token_file,
)
from replichat.proto import chat_pb2
from replichat.raft.membership import ChangeKind
from replichat.server.cli import main as server_main
from replichat.runtime.transport import PeerTransport

Request = chat_pb2.ChangeMembershipRequest


def test_the_token_file_is_created_private_and_read_back(tmp_path) -> None:
    path = str(tmp_path / "admin.token")
    token = create_token_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(token) >= 32 and read_token_file(path) == token
    assert create_token_file(path) == token  # kept, not replaced, at the next start


def test_a_token_file_others_can_read_or_a_short_token_is_refused(tmp_path) -> None:
    path = tmp_path / "t"
    path.write_text("a-long-enough-admin-token\n")
    os.chmod(path, 0o644)
    with pytest.raises(TokenError, match="chmod 600"):
        read_token_file(str(path))
    os.chmod(path, 0o600)
    assert read_token_file(str(path)) == "a-long-enough-admin-token"
    path.write_text("short\n")
    with pytest.raises(TokenError, match="16-256"):
        read_token_file(str(path))


def _admin(token):
    return MembershipAdmin(types.SimpleNamespace(id=7, core=None), {}, lambda: "", token)


def test_changes_need_the_token_and_say_how_to_enable_them() -> None:
    with pytest.raises(ChatError) as disabled:
        _admin(None)._check_token("anything")
    assert disabled.value.code is Code.PERMISSION_DENIED and "--admin-token-file" in disabled.value.message
    admin = _admin("the-right-token-0123")
    for wrong in ("", "the-right-token-012", "the-right-token-01234", "x" * 20):
        with pytest.raises(ChatError) as refused:
            admin._check_token(wrong)
        assert refused.value.code is Code.PERMISSION_DENIED and "wrong admin token" in refused.value.message
    admin._check_token("the-right-token-0123")


async def _change_refused(request: Request) -> ChatError:
    admin = _admin("the-right-token-0123")
    request.admin_token = "the-right-token-0123"
    with pytest.raises(ChatError) as refused:
        await admin.change_membership(request)
    return refused.value


@pytest.mark.parametrize("request_, why", [
    (Request(kind=Request.KIND_UNSPECIFIED, id=2), "unknown membership change kind"),
    (Request(kind=Request.REMOVE, id=0), "not in 1.."),
    (Request(kind=Request.ADD_LEARNER, id=4, address="h:1"), "needs its gRPC and Raft addresses"),
    (Request(kind=Request.ADD_LEARNER, id=4, address="h:1", raft_address="h:99999"), "not HOST:PORT"),
    (Request(kind=Request.ADD_LEARNER, id=4, address="h 1:1", raft_address="h:2"), "characters"),
    (Request(kind=Request.PROMOTE, id=4, address="h:1"), "addresses go only with adding"),
])
def test_malformed_change_requests_are_refused_before_anything_happens(request_, why) -> None:
    error = asyncio.run(_change_refused(request_))
    assert error.code is Code.INVALID_ARGUMENT and why in error.message


def test_a_well_formed_change_on_a_replica_that_does_not_lead_says_to_ask_the_leader() -> None:
    error = asyncio.run(_change_refused(Request(kind=Request.ADD_LEARNER, id=4, address="h:1", raft_address="h:2")))
    assert error.code is Code.UNAVAILABLE and "does not lead" in error.message


def test_change_of_builds_the_raft_change() -> None:
    change = MembershipAdmin._change_of(Request(kind=Request.ADD_LEARNER, id=4, address="h:1", raft_address="h:2",
                                                wire_address="h:3"))
    assert change.kind is ChangeKind.ADD_LEARNER and change.id == 4
    assert dict(change.addresses) == {"grpc": "h:1", "raft": "h:2", "wire": "h:3"}
    assert MembershipAdmin._change_of(Request(kind=Request.REMOVE, id=2)).kind is ChangeKind.REMOVE


def test_address_problem() -> None:
    assert address_problem("127.0.0.1:50051") is None and address_problem("[::1]:7") is None
    for bad in ("host", "host:", ":80", "host:0", "host:65536", "h\x00:1", "x" * 300 + ":1"):
        assert address_problem(bad) is not None, bad


def test_the_client_ring_learns_new_members_and_drops_removed_ones() -> None:
    ring = ReplicaRing(["a:1", "b:1", "c:1"])
    ring.rotate_from("a:1")
    assert ring.current == "b:1"
    assert ring.learn(["a:1", "b:1", "c:1", "d:1"], complete=False)
    assert ring.servers == ["a:1", "b:1", "c:1", "d:1"] and ring.current == "b:1"
    assert not ring.learn(["d:1", ""], complete=False)  # partial views never drop anything
    assert ring.learn(["b:1", "d:1", "e:1"], complete=True)
    assert ring.servers == ["b:1", "d:1", "e:1"] and ring.current == "b:1"
    assert ring.learn(["d:1", "e:1"], complete=True)
    assert ring.current == "d:1"
    assert not ring.learn([], complete=True)


def test_the_peer_transport_follows_the_configuration() -> None:
    async def scenario() -> None:
        transport = PeerTransport(1, {1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"})
        transport.start()
        assert sorted(transport.bytes_sent()) == [2, 3]
        transport.set_peers({1: "127.0.0.1:1", 3: "127.0.0.1:3", 4: "127.0.0.1:4"})
        assert sorted(transport.bytes_sent()) == [3, 4]
        assert not transport.reachable(2)
        transport.send([types.SimpleNamespace(dst=2)])  # a removed member: dropped, no error
        await transport.close()

    asyncio.run(scenario())


def test_an_added_replica_of_the_local_cluster_joins_and_gets_the_admin_token(tmp_path) -> None:
    cluster = LocalCluster({1: "h:10", 2: "h:11"}, str(tmp_path), peer_addresses={1: "h:20", 2: "h:21"},
                           admin_token=True)
    cluster.add_joined(3, "h:12", "h:22")
    command = cluster.command(3)
    assert "--join" in command and command[command.index("--cluster") + 1] == "1=h:10,2=h:11,3=h:12"
    assert command[command.index("--peers") + 1] == "1=h:20,2=h:21,3=h:22"
    assert command[command.index("--admin-token-file") + 1] == os.path.join(str(tmp_path), "admin.token")
    original = cluster.command(1)
    assert "--join" not in original and original[original.index("--cluster") + 1] == "1=h:10,2=h:11"
    again = LocalCluster({1: "h:10", 2: "h:11"}, str(tmp_path), peer_addresses={1: "h:20", 2: "h:21"})
    again.load_joined()  # the next run of the local cluster starts it too
    assert again.addresses[3] == "h:12" and again.joined == {3}


def test_certs_add_issues_a_certificate_naming_the_new_replica(tmp_path, capsys) -> None:
    from replichat.security.certs import init_certs
    from cryptography import x509

    directory = str(tmp_path / "certs")
    init_certs(directory, {1: ["127.0.0.1"]})
    with pytest.raises(SystemExit) as done:
        server_main(["certs", "add", directory, "6=127.0.0.1:7006"])
    assert done.value.code == 0
    with open(os.path.join(directory, "replica-6.crt"), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "urn:replichat:replica:6" in [u.value for u in uris if isinstance(u, x509.UniformResourceIdentifier)]
    with pytest.raises(SystemExit):
        server_main(["certs", "add", str(tmp_path / "nowhere"), "6=127.0.0.1:7006"])
    assert "ca.key" in capsys.readouterr().err


def test_members_commands_refuse_bad_arguments(tmp_path, capsys) -> None:
    for argv, why in ((["members", "add", "x=h:1"], "bad replica id"),
                      (["members", "add", "4=nohost"], "expected ID=HOST:PORT"),
                      (["members", "remove"], "usage"),
                      (["members", "remove", "2", "--data-dir", str(tmp_path)], "no admin token")):
        with pytest.raises(SystemExit):
            server_main(argv)
        assert why in capsys.readouterr().err, argv
