"""Everything --metrics adds to a replica, assembled in one place: the observer the runtime
calls, request counting around the client transports, the status prober, and the HTTP site
(/metrics, the cluster page, the local cluster's controls)."""
import logging
from typing import Any, Dict, Optional

from replichat.metrics.cluster_view import ClusterView
from replichat.metrics.control import LauncherControl
from replichat.metrics.counting_backend import CountingBackend
from replichat.metrics.http_server import HttpServer
from replichat.metrics.replica_metrics import ReplicaMetrics
from replichat.metrics.site import MetricsSite

log = logging.getLogger(__name__)


class Monitoring:
    def __init__(self, node: Any, cluster: Dict[int, str], data_dir: str, address: str,
                 credentials: Any = None) -> None:
        """node: the replica's backend (status(), chat calls) with an `observer` attribute."""
        host, _, port = address.rpartition(":")
        self.host = host.strip("[]")
        self.requested_port = int(port)
        self.metrics = ReplicaMetrics(node.id, node.status)
        node.observer = self.metrics
        self.metrics.first_index = lambda: _first_index(node)
        self.view = ClusterView(node.id, cluster, node.status, self.metrics, data_dir, credentials)
        self.control = LauncherControl.from_environment(self.host)
        self.site = MetricsSite(self.metrics, self.view, self.control)
        self._http = HttpServer(self.site.handle)
        self.port = 0

    def backend_for(self, backend: Any, transport: str) -> CountingBackend:
        """`backend` as the `transport` (grpc | wire) listener should call it: counted."""
        return CountingBackend(backend, transport, self.metrics)

    def watch_peer_traffic(self, transport: Any, listener: Any) -> None:
        self.metrics.peer_bytes_sent = transport.bytes_sent
        self.metrics.peer_bytes_received = lambda: listener.bytes_received

    async def listen(self) -> None:
        """Bind the metrics port (raises OSError when it cannot)."""
        self.port = self.site.port = await self._http.start(self.host, self.requested_port)

    def start(self) -> None:
        self.view.start()
        log.info("metrics and cluster page on http://%s:%d/%s", self.host, self.port,
                 " (with the local cluster's controls)" if self.control else "")

    async def close(self) -> None:
        await self._http.close()
        await self.view.close()


def _first_index(node: Any) -> Optional[int]:
    runtime = getattr(node, "node", node)  # a chat service on top of the runtime's node, or the node
    core = getattr(runtime, "core", None)
    return None if core is None else int(core.log.first_index)


def monitoring_or_none(node: Any, cluster: Dict[int, str], data_dir: str, address: Optional[str],
                       credentials: Any = None) -> Optional[Monitoring]:
    """credentials: grpc channel credentials for replicas serving gRPC with TLS."""
    return Monitoring(node, cluster, data_dir, address, credentials) if address else None
