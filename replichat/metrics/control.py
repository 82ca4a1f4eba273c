"""The cluster page's kill / pause / resume / restart buttons, for the local cluster only.

The launcher (`python3 server.py`) owns the replica processes, so it serves the controls: an
HTTP endpoint on 127.0.0.1, on a port the OS picks, that acts only with a random token. It
hands the address and token to the replicas it starts through their environment (never on
their command line, which any local user can read). A replica offers the buttons only when it
got them from a launcher and its metrics port is on loopback; its page sends the button's
request to its own origin, and the replica forwards it to the launcher.

Against cross-site requests (any web page the operator opens may send requests to
127.0.0.1), a control request must carry all of: a Host that is a loopback name and this
port (a DNS-rebinding page has its own name there), an Origin that is this page's, and the
token in a custom header (which a cross-origin page can neither read nor send without a
preflight the replica never grants).
"""
import asyncio
import hmac
import http.server
import json
import logging
import os
import secrets
import threading
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from replichat.addresses import is_loopback

log = logging.getLogger(__name__)

ENV_URL = "REPLICHAT_CONTROL_URL"
ENV_TOKEN = "REPLICHAT_CONTROL_TOKEN"
ENV_PAGES = "REPLICHAT_CLUSTER_PAGES"
TOKEN_HEADER = "X-Replichat-Control"
ACTIONS = ("kill", "pause", "resume", "restart")
FORWARD_TIMEOUT_S = 15.0
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def refusal(headers: Mapping[str, str], port: int, token: str) -> Optional[str]:
    """Why a control request (headers in lower case) must be refused; None: allowed."""
    host = headers.get("host", "")
    if host not in {f"{name}:{port}" for name in LOOPBACK_NAMES}:
        return f"Host {host!r} is not this replica's loopback address"
    if headers.get("origin") != f"http://{host}":
        return "the request does not come from this page (Origin)"
    if not hmac.compare_digest(headers.get(TOKEN_HEADER.lower(), "").encode(), token.encode()):
        return "wrong or missing control token"
    return None


def parse_pages(text: str) -> Dict[int, str]:
    """`1=127.0.0.1:50351,2=...` -> {1: "127.0.0.1:50351", ...}; bad parts are left out."""
    pages: Dict[int, str] = {}
    for part in text.split(","):
        node_id, sep, address = part.partition("=")
        if sep and node_id.strip().isdigit() and address:
            pages[int(node_id)] = address.strip()
    return pages


class LauncherControl:
    """A replica's way to the launcher's controls."""

    def __init__(self, url: str, token: str, pages: Dict[int, str]) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.pages = pages

    @classmethod
    def from_environment(cls, metrics_host: str, environ: Mapping[str, str] = os.environ) -> Optional["LauncherControl"]:
        """The controls, when a launcher gave them and the metrics port is on loopback."""
        url, token = environ.get(ENV_URL, ""), environ.get(ENV_TOKEN, "")
        if not url or not token:
            return None
        if not is_loopback(metrics_host):
            log.warning("cluster controls disabled: the metrics port is not on loopback (%s)", metrics_host)
            return None
        return cls(url, token, parse_pages(environ.get(ENV_PAGES, "")))

    async def forward(self, action: str, node_id: int) -> Tuple[int, Dict[str, Any]]:
        """(HTTP status, JSON answer) from the launcher."""
        return await asyncio.get_event_loop().run_in_executor(None, self._post, action, node_id)

    def _post(self, action: str, node_id: int) -> Tuple[int, Dict[str, Any]]:
        request = urllib.request.Request(f"{self.url}/control/{action}/{node_id}", data=b"", method="POST",
                                         headers={TOKEN_HEADER: self.token})
        try:
            with urllib.request.urlopen(request, timeout=FORWARD_TIMEOUT_S) as answer:
                return answer.status, json.loads(answer.read(64 * 1024))
        except urllib.error.HTTPError as error:
            try:
                return error.code, json.loads(error.read(64 * 1024))
            except ValueError:
                return error.code, {"ok": False, "message": f"the launcher answered {error.code}"}
        except (OSError, ValueError) as error:
            return 502, {"ok": False, "message": f"the launcher cannot be reached: {error}"}


class ControlServer:
    """The launcher's side: runs `act(action, node_id) -> message` for requests with its token."""

    def __init__(self, act: Callable[[str, int], str], replicas: Tuple[int, ...]) -> None:
        self.token = secrets.token_urlsafe(32)
        self._act = act
        self._replicas = replicas
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                status, answer = server.handle(self.path, self.headers.get(TOKEN_HEADER, ""))
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the launcher prints what it does; no access log in the cluster's terminal

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="cluster-control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def environment(self, pages: Dict[int, str]) -> Dict[str, str]:
        return {ENV_URL: self.url, ENV_TOKEN: self.token,
                ENV_PAGES: ",".join(f"{i}={a}" for i, a in sorted(pages.items()))}

    def handle(self, path: str, token: str) -> Tuple[int, Dict[str, Any]]:
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return 403, {"ok": False, "message": "wrong or missing control token"}
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "control" or parts[1] not in ACTIONS or not parts[2].isdigit():
            return 404, {"ok": False, "message": f"unknown control {path!r}"}
        node_id = int(parts[2])
        if node_id not in self._replicas:
            return 404, {"ok": False, "message": f"no replica {node_id}"}
        try:
            return 200, {"ok": True, "message": self._act(parts[1], node_id)}
        except (OSError, ValueError) as error:
            return 409, {"ok": False, "message": str(error)}
