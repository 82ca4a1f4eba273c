"""What --metrics costs a write, measured in one process against a baseline in the same script:
the observer calls the runtime makes for one write at concurrency 1 (propose, fsync, apply of a
one-entry batch, the Raft-state check after each step, propose->commit), with the metrics'
observer and with the default no-op one; and what one scrape of /metrics costs the event loop.

    python3 bench/metrics_cost.py [--writes 200000]

The end-to-end check is bench/compare.py with and without --replichat-metrics (see README)."""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from prometheus_client import generate_latest  # noqa: E402

from replichat.chat.state import Applied  # noqa: E402
from replichat.metrics.observer import NO_OBSERVER, RuntimeObserver  # noqa: E402
from replichat.metrics.replica_metrics import ReplicaMetrics  # noqa: E402
from replichat.proto import chat_pb2, command_pb2  # noqa: E402


def per_write_seconds(observer: RuntimeObserver, writes: int) -> float:
    """The observer calls of `writes` writes (as replichat/runtime/node.py makes them), seconds per write."""
    applied = [Applied(1, command_pb2.Command(send=chat_pb2.SendMessageRequest(recipient="u", text="x")), None)]
    started = time.perf_counter()
    for _ in range(writes):
        observer.proposed(1)
        observer.raft_state("leader", 3, 1)
        observer.persisted(0.0003, 1)
        observer.raft_state("leader", 3, 1)
        observer.applied(0.0001, applied)
        observer.raft_state("leader", 3, 1)
        observer.write_committed(0.002)
    return (time.perf_counter() - started) / writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=200_000)
    args = parser.parse_args()
    status = chat_pb2.StatusResponse(id=1, role="leader", term=3, leader_id=1, commit_index=10, applied_index=10)
    metrics = ReplicaMetrics(1, lambda: status)
    per_write_seconds(metrics, 1000)  # warm up
    base = min(per_write_seconds(NO_OBSERVER, args.writes) for _ in range(3))
    with_metrics = min(per_write_seconds(metrics, args.writes) for _ in range(3))
    for peer in (2, 3):
        metrics.peer_up[peer] = True
        metrics.peer_rtt_seconds[peer] = 0.001
    for method in ("send_message", "create_user", "connect", "ack", "list_users"):
        metrics.request_done("grpc", method, "ok")
    scrapes = 200
    started = time.perf_counter()
    for _ in range(scrapes):
        generate_latest(metrics.registry)
    scrape = (time.perf_counter() - started) / scrapes
    print(f"observer calls per write: no-op {base * 1e6:.2f} us, metrics {with_metrics * 1e6:.2f} us "
          f"(+{(with_metrics - base) * 1e6:.2f} us per write; {with_metrics / base:.1f}x the no-op calls)")
    print(f"one /metrics scrape: {scrape * 1e3:.2f} ms on the event loop")


if __name__ == "__main__":
    main()
