"""`server.py`: start a local cluster (default), run one replica, or show the cluster's status.

    python3 server.py                                   # 5 replicas on 127.0.0.1, one terminal
    python3 server.py --replicas 3
    python3 server.py --id 2 --cluster 1=hostA:50051,2=hostB:50051,3=hostC:50051 --data-dir /var/lib/replichat
    python3 server.py --id 2 --cluster 1=hostA:50051,2=hostB:50051,3=hostC:50051 --peers 1=hostA:7000,2=hostB:7000,3=hostC:7000
    python3 server.py status [--servers host:port,...]

A replica serves clients over gRPC on its --cluster address and its peers (Raft, plain TCP) on
its --peers address, by default its --cluster address with port + 200 (defaults.RAFT_PORT_OFFSET).
"""
import argparse
import asyncio
import logging
import os
import sys
from typing import Any, Coroutine, Dict, List, Optional, TypeVar

from replichat import defaults
from replichat.version import version_text
from replichat.chat.auth import AuthLimits

T = TypeVar("T")


def parse_cluster(text: str) -> Dict[int, str]:
    """ID=HOST:PORT,... (for --cluster and --peers) -> {id: "HOST:PORT"}."""
    cluster: Dict[int, str] = {}
    for part in text.split(","):
        node_id, sep, address = part.strip().partition("=")
        port = address.rpartition(":")[2]
        if not sep or not node_id.isdigit() or int(node_id) < 1 or ":" not in address or not _valid_port(port):
            raise argparse.ArgumentTypeError(
                f"bad cluster member {part!r}: expected ID=HOST:PORT with ID >= 1 and PORT 1-65535"
            )
        if int(node_id) in cluster:
            raise argparse.ArgumentTypeError(f"replica {node_id} is listed twice")
        cluster[int(node_id)] = address
    return cluster


def _valid_port(text: str) -> bool:
    return text.isdigit() and 1 <= int(text) <= 65535


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="server.py",
        description="replichat server. With no arguments, starts a local cluster of 5 replicas "
        "(separate processes on 127.0.0.1) that tolerates 2 crashes. `server.py status` shows the cluster.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Ports of the local cluster: replica N serves\n"
        f"  gRPC (clients)         on {defaults.FIRST_GRPC_PORT}+N-1 (--port),\n"
        f"  Raft (its peers)       on {defaults.FIRST_GRPC_PORT + defaults.RAFT_PORT_OFFSET}+N-1 "
        f"(--port + {defaults.RAFT_PORT_OFFSET}),\n"
        f"  the seed wire protocol on {defaults.FIRST_WIRE_PORT}+N-1 (--wire-port),\n"
        f"  metrics and the cluster page on {defaults.FIRST_METRICS_PORT}+N-1 (--metrics-port): "
        f"http://127.0.0.1:{defaults.FIRST_METRICS_PORT}/\n"
        f"One replica (--id) serves Raft on its --peers address, by default its --cluster port + "
        f"{defaults.RAFT_PORT_OFFSET}.",
    )
    parser.add_argument("--version", action="version", version=version_text("replichat-server"))
    parser.add_argument("--replicas", type=int, default=defaults.DEFAULT_REPLICAS, help="local cluster size (default 5; 3 tolerates 1 crash)")
    parser.add_argument("--data-dir", help="data folder (local cluster: one replica-N folder each inside it; default ./data)")
    parser.add_argument("--port", type=int, default=defaults.FIRST_GRPC_PORT, help="local cluster: first gRPC port (default %(default)s)")
    parser.add_argument("--wire-port", type=int, default=defaults.FIRST_WIRE_PORT, help="local cluster: first wire-protocol port (default %(default)s)")
    parser.add_argument("--id", type=int, help="run one replica: its id in --cluster")
    parser.add_argument("--cluster", type=parse_cluster, help="every replica as ID=HOST:PORT,... (gRPC addresses)")
    parser.add_argument(
        "--peers", type=parse_cluster, metavar="ID=HOST:PORT,...",
        help=f"one replica: every replica's Raft (peer) address; default: each --cluster address with port + "
        f"{defaults.RAFT_PORT_OFFSET}",
    )
    parser.add_argument("--bind", help="one replica: address to serve gRPC on (default: its --cluster address)")
    parser.add_argument("--wire", help="one replica: HOST:PORT for the seed wire protocol (default: none)")
    parser.add_argument("--no-wire", action="store_true", help="do not serve the seed wire protocol")
    parser.add_argument("--metrics", metavar="HOST:PORT",
                        help="one replica: serve Prometheus metrics (/metrics) and the live cluster page (/) over "
                        "HTTP here (default: none)")
    parser.add_argument("--metrics-port", type=int, default=defaults.FIRST_METRICS_PORT,
                        help="local cluster: first metrics and cluster-page port (default %(default)s)")
    parser.add_argument("--no-metrics", action="store_true", help="local cluster: serve no metrics or cluster page")
    parser.add_argument("--tick-ms", type=int, default=50, help="Raft tick (default %(default)s ms; heartbeat every tick)")
    parser.add_argument("--election-ticks", type=int, default=10, help="election timeout in ticks, randomized up to 2x (default %(default)s)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve the brief's open service: anyone may connect, send, ack or delete as any user "
        "(for classroom use; every replica warns at start). Give it to every replica alike",
    )
    parser.add_argument(
        "--max-creates-per-minute",
        type=int,
        default=AuthLimits().creates_per_minute,
        metavar="N",
        help="creates accepted per client address and minute by each replica (default %(default)s)",
    )
    parser.add_argument("--servers", help="status: replicas to ask (default: the local cluster)")
    parser.add_argument("command", nargs="?", choices=["status"], help="status: show every replica's role, term and indexes")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "status":
        sys.exit(_status(args))
    if args.id is not None or args.cluster is not None:
        sys.exit(_one_replica(parser, args))
    sys.exit(_local_cluster(parser, args))


def _tuning_args(args: argparse.Namespace) -> List[str]:
    return (
        ["--tick-ms", str(args.tick_ms), "--election-ticks", str(args.election_ticks), "--log-level", args.log_level]
        + ["--max-creates-per-minute", str(args.max_creates_per_minute)]
        + (["--insecure-no-auth"] if args.insecure_no_auth else [])
    )


def _local_cluster(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from replichat.launcher import LocalCluster

    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    if args.peers is not None:
        parser.error("--peers is for running one replica (with --id and --cluster)")
    ids = range(1, args.replicas + 1)
    raft_port = args.port + defaults.RAFT_PORT_OFFSET
    # Raft takes the ports RAFT_PORT_OFFSET above gRPC's: a --wire-port or --replicas that
    # collides with them is refused here rather than as some replica's bind error.
    firsts = [args.port, raft_port] + ([] if args.no_wire else [args.wire_port]) + (
        [] if args.no_metrics else [args.metrics_port])
    used = [port for first in firsts for port in range(first, first + args.replicas)]
    if len(set(used)) != len(used) or not all(_valid_port(str(port)) for port in used):
        parser.error(
            f"the local cluster needs {args.replicas} ports each from --port ({args.port}), --port + "
            f"{defaults.RAFT_PORT_OFFSET} (Raft), --wire-port ({args.wire_port}) and --metrics-port "
            f"({args.metrics_port}), within 1-65535 and not overlapping"
        )
    cluster = LocalCluster(
        {i: f"{defaults.DEFAULT_HOST}:{args.port + i - 1}" for i in ids},
        args.data_dir or "data",
        peer_addresses={i: f"{defaults.DEFAULT_HOST}:{raft_port + i - 1}" for i in ids},
        wire_addresses=None if args.no_wire else {i: f"{defaults.DEFAULT_HOST}:{args.wire_port + i - 1}" for i in ids},
        metrics_addresses=None if args.no_metrics else {
            i: f"{defaults.DEFAULT_HOST}:{args.metrics_port + i - 1}" for i in ids},
        extra_args=_tuning_args(args),
    )
    if not args.no_metrics:
        cluster.enable_controls()
    cluster.start_all()
    cluster.print_table()
    try:
        return cluster.supervise()
    finally:
        cluster.disable_controls()


def _one_replica(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from replichat.node import NodeOptions
    from replichat.integrity import CorruptDataError
    from replichat.replica import ListenError, serve_replica

    if args.id is None or args.cluster is None:
        parser.error("running one replica needs both --id and --cluster")
    if args.id not in args.cluster:
        parser.error(f"--id {args.id} is not in --cluster ({', '.join(map(str, sorted(args.cluster)))})")
    if args.peers is not None and set(args.peers) != set(args.cluster):
        parser.error(
            f"--peers must list the same replicas as --cluster ({', '.join(map(str, sorted(args.cluster)))}), "
            f"not {', '.join(map(str, sorted(args.peers)))}"
        )
    peers = args.peers if args.peers is not None else defaults.raft_addresses(args.cluster)
    for node_id, address in sorted(peers.items()):
        if not _valid_port(address.rpartition(":")[2]):
            parser.error(f"replica {node_id}'s Raft port ({address}: its --cluster port + "
                         f"{defaults.RAFT_PORT_OFFSET}) is above 65535: give --peers")
    if args.tick_ms < 1 or args.election_ticks < 2:
        parser.error("--tick-ms must be >= 1 and --election-ticks >= 2")
    logging.basicConfig(
        level=args.log_level,
        format=f"%(asctime)s replica-{args.id} %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if args.max_creates_per_minute < 1:
        parser.error("--max-creates-per-minute must be at least 1")
    if args.insecure_no_auth:
        logging.warning(
            "replica %d runs with --insecure-no-auth: anyone can read, acknowledge, delete and send as "
            "any user; do not use it where people other than a class share the service", args.id,
        )
    options = NodeOptions(
        tick_s=args.tick_ms / 1000.0,
        election_ticks=args.election_ticks,
        auth_enabled=not args.insecure_no_auth,
        auth_limits=AuthLimits(creates_per_minute=args.max_creates_per_minute),
    )
    data_dir = args.data_dir or os.path.join("data", f"replica-{args.id}")
    try:
        return _run(
            serve_replica(args.id, args.cluster, data_dir, peers=peers, bind_address=args.bind,
                          wire_address=None if args.no_wire else args.wire, options=options,
                          metrics_address=args.metrics)
        )
    except ListenError as error:  # a busy gRPC or Raft port: say which, no traceback
        print(f"replica {args.id}: {error}", file=sys.stderr)
        return 2
    except CorruptDataError as error:  # stored data failed a check: say what and where
        print(f"replica {args.id} refuses to start: {error}", file=sys.stderr)
        return 3


def _run(main: Coroutine[Any, Any, T]) -> T:
    """Run a replica on uvloop, whose event loop makes the replica's own asyncio work about
    10% cheaper per message (3 replicas, 64 senders); asyncio's loop where it is missing
    (it is a pinned dependency, but has no Windows build)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _status(args: argparse.Namespace) -> int:
    from replichat.client.api import ChatClient
    from replichat.client.cli import format_status

    servers = args.servers.split(",") if args.servers else list(defaults.local_cluster(args.replicas).values())

    async def query() -> int:
        client = ChatClient(servers)
        try:
            rows = await client.status_all()
        finally:
            await client.close()
        for line in format_status(rows):
            print(line)
        return 0 if any(status is not None for _, status, _ in rows) else 1

    return asyncio.run(query())


if __name__ == "__main__":  # `python3 -m replichat.server_cli`: how an installed launcher starts replicas
    main()
