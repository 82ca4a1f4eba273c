"""server.py's command line: the Raft (--peers) addresses are checked before anything starts,
and a busy port is a one-line error (exit 2), not a traceback."""
import os
import socket
import subprocess
import sys
from typing import Iterator, List

import pytest

from replichat.server.launcher import LocalCluster, free_ports, server_command
from replichat.server.cli import main, parse_cluster
from tests.client_process import REPO

pytestmark = pytest.mark.timeout(60)
SERVER = os.path.join(REPO, "server.py")


def parser_error(argv: List[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    return str(capsys.readouterr().err)


@pytest.mark.parametrize("member", ["1=host", "1=host:", "1=host:port", "1=host:0", "1=host:65536", "0=host:1", "x=host:1"])
def test_a_bad_member_is_refused(member: str) -> None:
    with pytest.raises(Exception, match="bad cluster member"):
        parse_cluster(member)


def test_peers_must_name_the_same_replicas_as_cluster(capsys: pytest.CaptureFixture) -> None:
    error = parser_error(["--id", "1", "--cluster", "1=a:1,2=b:1", "--peers", "1=a:2,3=c:2"], capsys)
    assert "--peers must list the same replicas as --cluster (1, 2), not 1, 3" in error


def test_wire_cluster_names_replicas_of_cluster_and_agrees_with_wire(capsys: pytest.CaptureFixture) -> None:
    error = parser_error(["--id", "1", "--cluster", "1=a:1,2=b:1", "--wire-cluster", "1=a:3,3=c:3"], capsys)
    assert "--wire-cluster names replicas that are not in --cluster: 3" in error
    error = parser_error(["--id", "1", "--cluster", "1=a:1", "--wire-cluster", "1=a:3", "--wire", "a:4"], capsys)
    assert "--wire a:4 differs from replica 1's --wire-cluster entry a:3" in error
    assert "--wire-cluster is for running one replica" in parser_error(["--wire-cluster", "1=a:1"], capsys)


@pytest.mark.parametrize("address", ["h" * 251 + ":1234", "h\x01st:1", "hé:1"])
def test_an_address_a_client_would_refuse_is_refused(address: str) -> None:
    with pytest.raises(Exception, match="at most 255 printable ASCII characters"):
        parse_cluster(f"1={address}")


def test_a_derived_raft_port_beyond_65535_asks_for_peers(capsys: pytest.CaptureFixture) -> None:
    error = parser_error(["--id", "1", "--cluster", "1=a:65500"], capsys)
    assert "Raft port (a:65700" in error and "give --peers" in error


def test_local_cluster_refuses_peers_and_overlapping_ports(capsys: pytest.CaptureFixture) -> None:
    assert "--peers is for running one replica" in parser_error(["--peers", "1=a:1"], capsys)
    # Raft takes --port + 200: a wire range there would collide.
    assert "not overlapping" in parser_error(["--port", "40000", "--wire-port", "40202"], capsys)


def test_the_launcher_passes_explicit_peers() -> None:
    cluster = LocalCluster({1: "h:10", 2: "h:11"}, "d", peer_addresses={1: "h:20", 2: "h:21"})
    command = cluster.command(2)
    assert command[command.index("--cluster") + 1] == "1=h:10,2=h:11"
    assert command[command.index("--peers") + 1] == "1=h:20,2=h:21"
    default = LocalCluster({1: "h:10"}, "d").command(1)
    assert default[default.index("--peers") + 1] == "1=h:210"
    assert "--no-wire" in default and "--wire-cluster" not in default


def test_in_a_checkout_the_launcher_starts_the_server_script_beside_the_package() -> None:
    assert server_command() == [sys.executable, SERVER]


def test_the_launcher_tells_each_replica_every_wire_address() -> None:
    cluster = LocalCluster({1: "h:10", 2: "h:11"}, "d", wire_addresses={1: "h:30", 2: "h:31"})
    command = cluster.command(2)
    assert command[command.index("--wire") + 1] == "h:31"
    assert command[command.index("--wire-cluster") + 1] == "1=h:30,2=h:31"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield holder.getsockname()[1]


@pytest.mark.parametrize("busy", ["grpc", "raft"])
def test_a_busy_port_is_a_clear_error(busy: str, busy_port: int, tmp_path) -> None:
    grpc_port, raft_port = free_ports(2)
    if busy == "grpc":
        grpc_port = busy_port
    else:
        raft_port = busy_port
    done = subprocess.run(
        [sys.executable, SERVER, "--id", "1", "--cluster", f"1=127.0.0.1:{grpc_port}",
         "--peers", f"1=127.0.0.1:{raft_port}", "--data-dir", str(tmp_path / "data"), "--no-wire", "--insecure-peers"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, cwd=REPO,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    expected = (f"replica 1: cannot listen on 127.0.0.1:{grpc_port}: " if busy == "grpc"
                else f"replica 1: cannot listen for peers on 127.0.0.1:{raft_port}: ")
    assert lines[-1].startswith(expected), done.stderr
    assert "Traceback" not in done.stderr
    # Nothing started: the node never opened its data folder.
    assert not (tmp_path / "data").exists()
