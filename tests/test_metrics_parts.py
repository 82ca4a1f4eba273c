"""The metrics' parts in isolation: how Raft state changes are counted, request outcomes,
the HTTP server's limits, and who may use the cluster controls."""
import asyncio
import json
import urllib.error
import urllib.request
from typing import AsyncIterator, List

import pytest

from replichat.errors import ChatError, Code
from replichat.metrics import control, http_server
from replichat.metrics.control import ControlServer, LauncherControl, refusal
from replichat.metrics.counting_backend import CountingBackend
from replichat.metrics.replica_metrics import ReplicaMetrics
from replichat.proto import chat_pb2

pytestmark = pytest.mark.timeout(60)


def metrics() -> ReplicaMetrics:
    return ReplicaMetrics(1, lambda: chat_pb2.StatusResponse(id=1, role="follower"))


def test_elections_and_leader_changes_are_counted_from_state_changes() -> None:
    m = metrics()
    m.raft_state("follower", 0, 0)
    m.raft_state("follower", 1, 2)          # replica 2 won term 1
    m.raft_state("follower", 1, 2)          # nothing new
    m.raft_state("pre-candidate", 1, 0)     # a pre-vote is not an election
    assert (m.elections_started, m.elections_won, m.leader_changes) == (0, 0, 1)
    m.raft_state("candidate", 2, 0)
    m.raft_state("candidate", 3, 0)         # a second election, same role
    m.raft_state("leader", 3, 1)
    assert (m.elections_started, m.elections_won, m.leader_changes) == (2, 1, 2)
    m.raft_state("follower", 4, 3)
    m.raft_state("leader", 5, 1)            # candidate and winner within one step
    assert (m.elections_started, m.elections_won, m.leader_changes) == (3, 2, 4)
    assert [e["what"] for e in m.timeline][-2:] == ["replica 3 is the leader", "replica 1 became the leader"]


class Backend:
    async def send_message(self, request: chat_pb2.SendMessageRequest) -> chat_pb2.SendMessageResponse:
        if request.recipient == "missing":
            raise ChatError(Code.NOT_FOUND, "no such user")
        if request.recipient == "bug":
            raise RuntimeError("a bug")
        return chat_pb2.SendMessageResponse(seq=1)

    async def connect(self, request: chat_pb2.ConnectRequest) -> AsyncIterator[chat_pb2.ServerEvent]:
        if request.name == "missing":
            raise ChatError(Code.NOT_FOUND, "no such user")
        yield chat_pb2.ServerEvent(connected=chat_pb2.Connected(name=request.name))
        yield chat_pb2.ServerEvent(message=chat_pb2.Delivery(seq=1))

    def status(self) -> str:
        return "the backend's own"


def test_requests_are_counted_by_method_and_outcome() -> None:
    m = metrics()
    backend = CountingBackend(Backend(), "wire", m)

    async def scenario() -> None:
        await backend.send_message(chat_pb2.SendMessageRequest(recipient="a"))
        for recipient, error in (("missing", ChatError), ("bug", RuntimeError)):
            with pytest.raises(error):
                await backend.send_message(chat_pb2.SendMessageRequest(recipient=recipient))
        events = [e async for e in backend.connect(chat_pb2.ConnectRequest(name="a"))]
        assert len(events) == 2
        with pytest.raises(ChatError):
            async for _ in backend.connect(chat_pb2.ConnectRequest(name="missing")):
                pass

    asyncio.run(scenario())
    assert dict(m.requests) == {
        ("wire", "send_message", "ok"): 1, ("wire", "send_message", "not_found"): 1,
        ("wire", "send_message", "internal"): 1, ("wire", "connect", "ok"): 1, ("wire", "connect", "not_found"): 1,
    }
    assert backend.status() == "the backend's own"


def test_snapshots_are_counted_and_sized() -> None:
    from prometheus_client import generate_latest

    m = metrics()
    assert "replichat_snapshot_bytes" not in generate_latest(m.registry).decode()  # none yet: no size
    m.snapshot_taken(0.3, 4096)
    m.snapshot_installed(1.2, 8192)
    text = generate_latest(m.registry).decode()
    assert 'replichat_snapshots_total{kind="taken"} 1.0' in text
    assert 'replichat_snapshots_total{kind="installed"} 1.0' in text
    assert "replichat_snapshot_bytes 8192.0" in text
    assert 'replichat_snapshot_seconds_bucket{le="0.5"} 1.0' in text and "replichat_snapshot_seconds_count 1.0" in text


def test_http_heads_are_parsed_strictly() -> None:
    request = http_server.parse_head(b"GET /api/cluster?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nOrigin: http://a")
    assert request == http_server.Request("GET", "/api/cluster", {"host": "127.0.0.1:9", "origin": "http://a"})
    for bad in (b"GET /", b"GET / SPDY/3", b"G3T / HTTP/1.1", b"GET / HTTP/1.1\r\nno colon", b"\xff\xfe"):
        assert http_server.parse_head(bad) is None, bad


def test_http_server_bounds_a_request_head_and_survives_a_handler_bug() -> None:
    async def handler(request: http_server.Request) -> http_server.Response:
        if request.path == "/bug":
            raise RuntimeError("a bug")
        return http_server.text(200, "fine")

    async def scenario() -> List[bytes]:
        server = http_server.HttpServer(handler)
        port = await server.start("127.0.0.1", 0)
        answers = []
        for head in (b"GET / HTTP/1.1\r\n\r\n", b"GET /bug HTTP/1.1\r\n\r\n",
                     b"GET / HTTP/1.1\r\nX: " + b"a" * (http_server.MAX_HEAD_BYTES + 10) + b"\r\n\r\n", b"nonsense\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head)
            answers.append((await asyncio.wait_for(reader.read(), 10)).split(b"\r\n")[0])
            writer.close()
        await server.close()
        return answers

    assert asyncio.run(scenario()) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 503 Service Unavailable",
                                       b"HTTP/1.1 413 Payload Too Large", b"HTTP/1.1 400 Bad Request"]


def test_a_control_request_needs_loopback_host_same_origin_and_the_token() -> None:
    good = {"host": "127.0.0.1:8080", "origin": "http://127.0.0.1:8080", "x-replichat-control": "t0k"}
    assert refusal(good, 8080, "t0k") is None
    assert refusal(dict(good, host="localhost:8080", origin="http://localhost:8080"), 8080, "t0k") is None
    assert "Host" in refusal(dict(good, host="evil.example:8080", origin="http://evil.example:8080"), 8080, "t0k")
    assert "Host" in refusal(dict(good, host="127.0.0.1:8081"), 8080, "t0k")
    assert "Origin" in refusal(dict(good, origin="http://evil.example"), 8080, "t0k")
    assert "Origin" in refusal({k: v for k, v in good.items() if k != "origin"}, 8080, "t0k")
    assert "token" in refusal(dict(good, **{"x-replichat-control": "guess"}), 8080, "t0k")


def test_controls_come_only_from_a_launcher_and_only_on_loopback() -> None:
    env = {control.ENV_URL: "http://127.0.0.1:1", control.ENV_TOKEN: "t", control.ENV_PAGES: "1=127.0.0.1:5,x=y,2=127.0.0.1:6"}
    assert LauncherControl.from_environment("127.0.0.1", {}) is None
    assert LauncherControl.from_environment("0.0.0.0", env) is None
    assert LauncherControl.from_environment("10.1.2.3", env) is None
    assert LauncherControl.from_environment("::1", env) is not None
    found = LauncherControl.from_environment("127.0.0.1", env)
    assert found is not None and found.pages == {1: "127.0.0.1:5", 2: "127.0.0.1:6"}


def test_the_launcher_side_acts_only_with_its_token() -> None:
    done: List[str] = []
    server = ControlServer(lambda action, node: done.append(f"{action} {node}") or f"did {action}", (1, 2))
    server.start()
    try:
        forwarder = LauncherControl(server.url, server.token, {})

        async def scenario() -> None:
            assert await forwarder.forward("pause", 2) == (200, {"ok": True, "message": "did pause"})
            assert (await forwarder.forward("pause", 7))[0] == 404
            assert (await LauncherControl(server.url, "wrong", {}).forward("kill", 1))[0] == 403

        asyncio.run(scenario())
        with pytest.raises(urllib.error.HTTPError) as no_token:
            urllib.request.urlopen(urllib.request.Request(f"{server.url}/control/kill/1", data=b"", method="POST"), timeout=5)
        assert no_token.value.code == 403 and json.loads(no_token.value.read())["ok"] is False
    finally:
        server.close()
    assert done == ["pause 2"]
