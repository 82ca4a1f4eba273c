"""The original brief's walkthrough, word for word, against the real thing: `server.py` (a local
cluster of replica processes) in one terminal, two `client.py` in two others."""
import asyncio
import os
import re
import signal
import socket
import sys
from typing import List, Sequence

import pytest

from replichat.defaults import RAFT_PORT_OFFSET
from tests.client_process import REPO, ClientProcess, brief_walkthrough

pytestmark = pytest.mark.timeout(120)
SERVER = os.path.join(REPO, "server.py")


def free_port_range(count: int, also_at: int = 0, avoid: Sequence[int] = ()) -> int:
    """A first port such that `count` consecutive ports are free now, and with `also_at` the
    `count` ports from first + also_at too (the local cluster's Raft ports), none in `avoid`."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        ports = list(range(first, first + count))
        if also_at:
            ports += range(first + also_at, first + also_at + count)
        if max(ports) >= 65535 or set(ports) & set(avoid):
            continue
        try:
            held = []
            for port in ports:
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free port range")


async def start_server(data_dir: str, replicas: int = 3) -> "tuple[asyncio.subprocess.Process, List[str]]":
    port = free_port_range(replicas, also_at=RAFT_PORT_OFFSET)
    taken = list(range(port, port + replicas)) + list(range(port + RAFT_PORT_OFFSET, port + RAFT_PORT_OFFSET + replicas))
    wire_port = free_port_range(replicas, avoid=taken)
    server = await asyncio.create_subprocess_exec(
        sys.executable, SERVER, "--replicas", str(replicas), "--port", str(port), "--wire-port", str(wire_port),
        "--data-dir", data_dir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=REPO,
    )
    servers = [f"127.0.0.1:{port + i}" for i in range(replicas)]
    return server, servers


async def read_until(stream: "asyncio.StreamReader", pattern: str, timeout: float = 20.0) -> List[str]:
    lines: List[str] = []
    while True:
        raw = await asyncio.wait_for(stream.readline(), timeout)
        assert raw, f"output ended before {pattern!r}: {lines}"
        lines.append(raw.decode().rstrip("\n"))
        if re.search(pattern, lines[-1]):
            return lines


def test_the_brief_walkthrough_against_a_real_cluster(tmp_path) -> None:
    async def scenario() -> None:
        server, servers = await start_server(str(tmp_path / "data"))
        assert server.stdout is not None
        try:
            table = await read_until(server.stdout, r"^Connect with:")
            assert "local cluster of 3 replicas (tolerates 1 failure)" in table[0]
            assert len([line for line in table if re.match(r"\s+\d\s+127\.0\.0\.1:", line)]) == 3
            await read_until(server.stdout, r"is the leader for term")

            # server.py serves gRPC with TLS, with the certificates it created in its data folder;
            # it prints the client's command line with them (the default needs no --ca).
            ca = str(tmp_path / "data" / "certs" / "ca.crt")
            assert f"--ca {ca}" in table[-1]
            terminal2 = await ClientProcess.start("--servers", ",".join(servers), "--ca", ca)
            terminal3 = await ClientProcess.start("--servers", ",".join(servers), "--ca", ca)
            await brief_walkthrough(terminal2, terminal3)
            for terminal in (terminal2, terminal3):
                code, rest, _ = await terminal.finish()
                assert code == 0 and "error" not in rest
        finally:
            if server.returncode is None:
                server.send_signal(signal.SIGINT)  # Ctrl-C stops every replica
            stopped = await read_until(server.stdout, r"stopping the cluster")
            code = await asyncio.wait_for(server.wait(), 20)
        assert code == 0, stopped

    asyncio.run(scenario())


def test_state_survives_a_restart_of_server_py(tmp_path) -> None:
    async def scenario() -> None:
        data = str(tmp_path / "data")
        for round_ in range(2):
            server, servers = await start_server(data)
            assert server.stdout is not None
            await read_until(server.stdout, r"is the leader for term")
            client = await ClientProcess.start("--servers", ",".join(servers), "--ca", os.path.join(data, "certs", "ca.crt"))
            if round_ == 0:
                assert await client.ask("create keeper") == ["ok: created keeper; you are now keeper"]
                assert await client.ask("send keeper kept across restarts") == ["ok: sent to keeper (#1)"]
            else:
                connected, kept = await client.ask("connect keeper", answers=2)
                assert connected == "ok: connected as keeper; 1 queued message(s)"
                assert kept.endswith("keeper: kept across restarts")
            await client.finish()
            server.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(server.wait(), 20) == 0

    asyncio.run(scenario())
