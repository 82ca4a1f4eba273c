"""The replichat cluster of the benchmarks: tests.cluster.ProcessCluster, whose replicas die
with the benchmark even if it is killed (see bench.common.guarded)."""
from typing import Dict, List

from bench.common import guarded
from tests.cluster import ProcessCluster


class BenchCluster(ProcessCluster):
    """tests.cluster.ProcessCluster whose replicas die with the benchmark (see `guarded`)."""

    def command(self, node_id: int) -> List[str]:
        return guarded(super().command(node_id))

    def pids(self) -> Dict[int, int]:
        return {i: p.pid for i, p in sorted(self.processes.items()) if p.poll() is None}
