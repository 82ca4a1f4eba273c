"""The live cluster page in a real browser (headless Chromium): the page of a real local
cluster (`server.py`, whose launcher serves the controls) shows the leader; its kill button
kills the leader; the page shows a new leader within seconds, then the restart button brings
the old one back. REPLICHAT_PAGE_SCREENSHOT=path also saves a screenshot there (the README's)."""
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional

import grpc
import pytest

from replichat.proto import chat_pb2, chat_pb2_grpc
from tests.client_process import REPO

pytestmark = pytest.mark.timeout(240)

REPLICAS = 3
WAIT = 20.0


def _free_port_ranges(width: int) -> List[int]:
    """First ports of three ranges of `width` free consecutive ports on 127.0.0.1 (gRPC, wire,
    metrics) such that the gRPC range + 200 (Raft) is free too, none overlapping: server.py
    takes ranges, not single ports."""
    for _ in range(200):
        grpc_base, wire_base, metrics_base = (random.randrange(20000, 45000, 10) for _ in range(3))
        ranges = [grpc_base, grpc_base + 200, wire_base, metrics_base]
        if len({r // 10 for r in ranges}) != len(ranges):
            continue
        held = []
        try:
            for base in ranges:
                for port in range(base, base + width):
                    s = socket.socket()
                    held.append(s)
                    s.bind(("127.0.0.1", port))
            return [grpc_base, wire_base, metrics_base]
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free port ranges")


async def _statuses(addresses: Dict[int, str], ca_file: str) -> Dict[int, Optional[chat_pb2.StatusResponse]]:
    """server.py serves gRPC with TLS, with the CA it creates in its data folder at its start."""
    out: Dict[int, Optional[chat_pb2.StatusResponse]] = {i: None for i in addresses}
    if not os.path.exists(ca_file):
        return out
    with open(ca_file, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    for node_id, address in addresses.items():
        async with grpc.aio.secure_channel(address, credentials) as channel:
            try:
                out[node_id] = await chat_pb2_grpc.ChatStub(channel).Status(chat_pb2.StatusRequest(), timeout=0.5)
            except grpc.aio.AioRpcError:
                out[node_id] = None
    return out


def agreed_leader(addresses: Dict[int, str], ca_file: str) -> int:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        statuses = asyncio.run(_statuses(addresses, ca_file))
        leaders = {s.leader_id for s in statuses.values() if s is not None}
        if len(leaders) == 1 and all(statuses.values()) and leaders != {0}:
            return leaders.pop()
        time.sleep(0.1)
    raise AssertionError(f"no agreed leader among {sorted(addresses)}")


def test_the_page_shows_a_new_leader_after_its_kill_button_kills_the_leader(tmp_path) -> None:
    from tests.browser import chromium_binary

    if chromium_binary() is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium; .ci/run installs it)")
    pytest.importorskip("websocket", reason="websocket-client is not installed (pip install -r requirements-dev.txt)")
    from tests.browser import Browser

    grpc_port, wire_port, metrics_port = _free_port_ranges(REPLICAS)
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        launcher = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "server.py"), "--replicas", str(REPLICAS), "--port", str(grpc_port),
             "--wire-port", str(wire_port), "--metrics-port", str(metrics_port), "--data-dir", str(tmp_path / "data")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path))
    browser = None
    try:
        addresses = {i: f"127.0.0.1:{grpc_port + i - 1}" for i in range(1, REPLICAS + 1)}
        ca_file = str(tmp_path / "data" / "certs" / "ca.crt")
        leader = agreed_leader(addresses, ca_file)
        asyncio.run(_some_traffic(addresses[leader], ca_file))
        shown_on = min(i for i in addresses if i != leader)
        browser = Browser(f"http://127.0.0.1:{metrics_port + shown_on - 1}/")
        browser.wait_for(f"document.getElementById('leader').dataset.leader === '{leader}'", WAIT, f"leader {leader}")
        browser.wait_for("document.body.classList.contains('controls')", WAIT, "the controls")
        browser.wait_for(f"document.querySelector('tr.leader[data-replica=\"{leader}\"]') !== null", WAIT,
                         "the leader's row highlighted")

        killed_at = time.monotonic()
        browser.evaluate(f"document.querySelector('button[data-action=\"kill\"][data-replica=\"{leader}\"]').click()")
        new_leader = int(browser.wait_for(
            f"(() => {{ const l = document.getElementById('leader').dataset.leader;"
            f" return l !== '0' && l !== '{leader}' ? l : ''; }})()", 15.0, "a new leader"))
        took = time.monotonic() - killed_at
        assert new_leader in addresses and new_leader != leader
        browser.wait_for(f"document.querySelector('tr[data-replica=\"{leader}\"]').classList.contains('down')", WAIT,
                         "the killed replica unreachable")
        survivors = {i: a for i, a in addresses.items() if i != leader}
        assert agreed_leader(survivors, ca_file) == new_leader
        assert f"cluster page: replica {leader} (pid" in log_path.read_text()
        print(f"the page showed leader {new_leader} {took:.1f} s after its kill button killed leader {leader}")
        browser.wait_for("document.getElementById('timeline').children.length >= 2", WAIT, "the leader change")
        screenshot = os.environ.get("REPLICHAT_PAGE_SCREENSHOT") or str(tmp_path / "cluster-page.png")
        browser.screenshot(screenshot)
        assert os.path.getsize(screenshot) > 10_000

        browser.evaluate(f"document.querySelector('button[data-action=\"restart\"][data-replica=\"{leader}\"]').click()")
        browser.wait_for(f"!document.querySelector('tr[data-replica=\"{leader}\"]').classList.contains('down')", WAIT,
                         "the restarted replica back")
    except BaseException:
        print(log_path.read_text()[-6000:])
        raise
    finally:
        if browser is not None:
            browser.close()
        launcher.send_signal(signal.SIGTERM)
        try:
            launcher.wait(30)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()


async def _some_traffic(address: str, ca_file: str) -> None:
    """Writes and deliveries, so the page's rate chart has something to show."""
    from replichat.client.api import ChatClient

    async with ChatClient([address], ca_file=ca_file) as client:
        await client.create("reader")
        for k in range(30):
            await client.send("reader", f"hello {k}")
        session = await client.connect("reader")
        seen = 0
        async for event in session:
            if isinstance(event, chat_pb2.Delivery):
                session.ack(event.seq)
                seen += 1
                if seen == 30:
                    break
        await session.flush_acks()
        await session.close()
