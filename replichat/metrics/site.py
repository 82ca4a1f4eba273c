"""The routes of a replica's metrics port:

    GET  /metrics                      Prometheus text format (prometheus_client)
    GET  /  /page.js  /page.css        the live cluster page (plain files, no build step)
    GET  /api/cluster                  the page's data (JSON), polled by the page
    POST /api/control/ACTION/ID        kill | pause | resume | restart (local cluster only, see control.py)
"""
import json
import os
from typing import Dict, Optional, Tuple

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from replichat.metrics.cluster_view import ClusterView
from replichat.metrics.control import ACTIONS, LOOPBACK_NAMES, LauncherControl, refusal
from replichat.metrics.http_server import Request, Response, text
from replichat.metrics.replica_metrics import ReplicaMetrics

PAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page")
STATIC: Dict[str, Tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
}


def _load_static() -> Dict[str, Tuple[bytes, str]]:
    files = {}
    for path, (name, content_type) in STATIC.items():
        with open(os.path.join(PAGE_DIR, name), "rb") as f:
            files[path] = (f.read(), content_type)
    return files


class MetricsSite:
    def __init__(self, metrics: ReplicaMetrics, view: ClusterView, control: Optional[LauncherControl]) -> None:
        self._metrics = metrics
        self._view = view
        self._control = control
        self._static = _load_static()  # read once: a broken install fails at start, not on a visit
        self.port = 0  # set once listening

    async def handle(self, request: Request) -> Response:
        if self._control is not None and request.headers.get("host") not in {
                f"{name}:{self.port}" for name in LOOPBACK_NAMES}:
            # With controls on, the page carries their token: only for pages this machine opened by
            # a loopback name, not for a DNS-rebinding page that reaches 127.0.0.1 under its own name.
            return text(403, "with cluster controls on, this page is served at a loopback address only")
        if request.path.startswith("/api/control/"):
            return await self._control_request(request)
        if request.method not in ("GET", "HEAD"):
            return text(405, f"{request.method} is not allowed here")
        if request.path == "/metrics":
            return Response(200, generate_latest(self._metrics.registry), CONTENT_TYPE_LATEST)
        if request.path == "/api/cluster":
            return Response(200, json.dumps(self.cluster_json()).encode(), "application/json")
        if request.path in self._static:
            body, content_type = self._static[request.path]
            return Response(200, body, content_type)
        return text(404, f"nothing at {request.path}; try / or /metrics")

    def cluster_json(self) -> Dict[str, object]:
        data = self._view.snapshot()
        if self._control is not None:
            data["control"] = {"token": self._control.token}
            data["pages"] = {str(i): f"http://{address}/" for i, address in sorted(self._control.pages.items())}
        return data

    async def _control_request(self, request: Request) -> Response:
        if self._control is None:
            return text(404, "cluster controls exist only on a local cluster started by server.py")
        if request.method != "POST":
            return text(405, "controls take POST")
        why = refusal(request.headers, self.port, self._control.token)
        if why is not None:
            return text(403, f"refused: {why}")
        parts = request.path.split("/")  # "", "api", "control", ACTION, ID
        if len(parts) != 5 or parts[3] not in ACTIONS or not parts[4].isdigit():
            return text(404, f"unknown control {request.path!r}")
        status, answer = await self._control.forward(parts[3], int(parts[4]))
        return Response(status, json.dumps(answer).encode(), "application/json")
