"""The replichat cluster of the benchmarks: tests.cluster.ProcessCluster, whose replicas die
with the benchmark even if it is killed (see bench.common.guarded)."""
from typing import Any, Dict, List

from bench.common import guarded
from tests.cluster import ProcessCluster


# The credential every benchmark user is created with and connected by (authentication stays
# on: its cost is part of what is measured).
BENCH_CREDENTIAL = "bench-credential-0123456789abcdef"


class BenchCluster(ProcessCluster):
    """tests.cluster.ProcessCluster whose replicas die with the benchmark (see `guarded`).
    Benchmarks create thousands of users from one address: the per-address create limit is
    lifted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault(
            "server_args", ["--max-creates-per-minute", "100000000", "--max-streams-per-address", "100000"]
        )
        super().__init__(*args, **kwargs)

    def command(self, node_id: int) -> List[str]:
        return guarded(super().command(node_id))

    def pids(self) -> Dict[int, int]:
        return {i: p.pid for i, p in sorted(self.processes.items()) if p.poll() is None}
