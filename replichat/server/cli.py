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
from typing import TYPE_CHECKING, Any, Coroutine, Dict, List, Optional, TypeVar

from replichat import defaults
from replichat.version import version_text
from replichat.chat.auth import AuthLimits
from replichat.raft.membership import MAX_ADDRESS_CHARS

T = TypeVar("T")

if TYPE_CHECKING:
    from replichat.security.options import Security


def parse_cluster(text: str) -> Dict[int, str]:
    """ID=HOST:PORT,... (for --cluster, --peers and --wire-cluster) -> {id: "HOST:PORT"}."""
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
        # The limits a membership configuration puts on an address (replichat/raft/membership.py):
        # these addresses are shown to clients and peers, who refuse anything longer or stranger.
        if len(address) > MAX_ADDRESS_CHARS or not address.isascii() or not address.isprintable() or " " in address:
            raise argparse.ArgumentTypeError(
                f"bad address for replica {node_id}: at most {MAX_ADDRESS_CHARS} printable ASCII characters, no spaces"
            )
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
    parser.add_argument("--wire", help="one replica: HOST:PORT for the seed wire protocol (default: its "
                        "--wire-cluster entry, else none)")
    parser.add_argument(
        "--wire-cluster", type=parse_cluster, metavar="ID=HOST:PORT,...",
        help="one replica: the wire-protocol address of each replica in --cluster that serves it, so that "
        "its answer to the wire `members` request names them all (default: only its own); members added "
        "later are known from `members add --wire`",
    )
    parser.add_argument("--no-wire", action="store_true", help="do not serve the seed wire protocol")
    parser.add_argument("--metrics", metavar="HOST:PORT",
                        help="one replica: serve Prometheus metrics (/metrics) and the live cluster page (/) over "
                        "HTTP here (default: none)")
    parser.add_argument("--metrics-port", type=int, default=defaults.FIRST_METRICS_PORT,
                        help="local cluster: first metrics and cluster-page port (default %(default)s)")
    parser.add_argument("--no-metrics", action="store_true", help="local cluster: serve no metrics or cluster page")
    parser.add_argument("--tick-ms", type=int, default=50, help="Raft tick (default %(default)s ms; heartbeat every tick)")
    parser.add_argument("--election-ticks", type=int, default=10, help="election timeout in ticks, randomized up to 2x (default %(default)s)")
    parser.add_argument("--no-election-advance", action="store_true",
                        help="a starting replica waits a whole election timeout before it campaigns (default: it counts "
                        "all but one tick of it as waited, so a restarted cluster elects a leader sooner)")
    parser.add_argument("--snapshot-entries", type=int, default=10_000, metavar="N",
                        help="snapshot the chat state every N applied log entries and compact the log (0: never; default %(default)s)")
    parser.add_argument("--snapshot-keep", type=int, default=5_000, metavar="N",
                        help="log entries kept behind a snapshot, so a follower lagging by fewer catches up from the log (default %(default)s)")
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
    parser.add_argument(
        "--max-streams-per-address",
        type=int,
        default=1000,
        metavar="N",
        help="concurrent gRPC connect streams one client address may hold on a replica (default %(default)s)",
    )
    parser.add_argument("--servers", help="status: replicas to ask (default: the local cluster)")
    parser.add_argument("--ca", metavar="FILE",
                        help=f"status: verify the replicas' TLS certificates against this CA (default with the default "
                        f"--servers: {defaults.LOCAL_CA_FILE} if it exists)")
    security = parser.add_argument_group(
        "security (one replica; the local cluster sets all of this up by itself in DATA/certs)",
        "Replicas authenticate each other with mutual TLS against the cluster CA: give --certs-dir, or the three "
        "--peer-* files. Clients may use TLS too (--cert/--key); a replica serving clients on a non-loopback "
        "address without it warns at start.",
    )
    security.add_argument("--certs-dir", metavar="DIR",
                          help="one replica: DIR/replica-ID.crt, DIR/replica-ID.key and DIR/ca.crt as written by "
                          "`server.py certs init DIR` (peer TLS; for clients give --cert/--key, which may be the "
                          "same replica-ID files)")
    security.add_argument("--peer-cert-file", metavar="FILE", help="this replica's certificate for its peers")
    security.add_argument("--peer-key-file", metavar="FILE", help="its key")
    security.add_argument("--peer-trusted-ca-file", metavar="FILE", help="the cluster CA peers' certificates must be signed by")
    security.add_argument("--insecure-peers", action="store_true",
                          help="plain TCP between replicas, no authentication (warns at start: anyone who reaches "
                          "the Raft port can speak for any replica)")
    security.add_argument("--cert", metavar="FILE", help="TLS certificate for the gRPC and wire listeners (clients)")
    security.add_argument("--key", metavar="FILE", help="its key")
    security.add_argument("--plain-wire", action="store_true",
                          help="serve the wire protocol without TLS even with --cert (for clients written from the "
                          "brief's plain byte protocol; warns unless it listens on loopback only)")
    membership = parser.add_argument_group(
        "membership (add, remove and replace replicas while the cluster runs)",
        "`members` shows the configuration; `members add ID=HOST:PORT [--peer HOST:PORT] [--wire HOST:PORT]` adds a "
        "replica (as a learner, caught up, then promoted to voter); `members remove ID [--force]` removes one (the "
        "leader hands leadership over first); `members promote ID` makes a learner a voter. Changes need the cluster's admin token: replicas take "
        "--admin-token-file, and so does the command (default: the local cluster's DATA/admin.token).",
    )
    membership.add_argument("--admin-token-file", metavar="FILE",
                            help="one replica: accept membership changes carrying the token in FILE (mode 0600; "
                            "without it they are refused); members add/remove: the token to send (default: "
                            "DATA/admin.token, which the local cluster creates)")
    membership.add_argument("--join", action="store_true",
                            help="one replica: a new replica joining a running cluster: it does not campaign, waits "
                            "for the leader to add it (`members add`) and takes the membership from the log. Give "
                            "--cluster with the members you know and itself, and a certificate from the cluster CA "
                            "(`certs add`)")
    membership.add_argument("--peer", metavar="HOST:PORT",
                            help=f"members add, certs add: the new replica's Raft address (default: its gRPC port + "
                            f"{defaults.RAFT_PORT_OFFSET})")
    membership.add_argument("--catch-up-timeout", type=float, default=120.0, metavar="SECONDS",
                            help="members add: how long the new replica may take to catch up before the command gives "
                            "up, leaving it a learner (default %(default)s)")
    parser.add_argument("command", nargs="?", choices=["status", "certs", "members", "add-replica"],
                        help="status: show every replica's role, term and indexes; "
                        "certs init DIR --cluster ... [--peers ...]: create a cluster CA and a certificate per replica; "
                        "certs add DIR ID=HOST:PORT [--peer HOST:PORT]: a certificate for a new replica; "
                        "members [add ID=HOST:PORT | remove ID | promote ID]: see the membership section; "
                        "add-replica: start one more replica of the running local cluster and add it")
    parser.add_argument("command_args", nargs="*", metavar="ARGS", help=argparse.SUPPRESS)
    parser.add_argument("--force", action="store_true",
                        help="certs init: issue new replica certificates even where some exist; members remove: "
                        "remove even if the remaining voters would not have a live quorum")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "status":
        sys.exit(_status(args))
    if args.command == "certs":
        sys.exit(_certs(parser, args))
    if args.command == "members":
        from replichat.server.membership_cli import members_command

        sys.exit(members_command(parser, args))
    if args.command == "add-replica":
        from replichat.server.membership_cli import add_replica_command

        sys.exit(add_replica_command(parser, args))
    if args.command_args:
        parser.error(f"unexpected arguments: {' '.join(args.command_args)}")
    if args.id is not None or args.cluster is not None:
        sys.exit(_one_replica(parser, args))
    sys.exit(_local_cluster(parser, args))


def _tuning_args(args: argparse.Namespace) -> List[str]:
    return (
        ["--tick-ms", str(args.tick_ms), "--election-ticks", str(args.election_ticks), "--log-level", args.log_level]
        + ["--max-creates-per-minute", str(args.max_creates_per_minute)]
        + ["--max-streams-per-address", str(args.max_streams_per_address)]
        + ["--snapshot-entries", str(args.snapshot_entries), "--snapshot-keep", str(args.snapshot_keep)]
        + (["--insecure-no-auth"] if args.insecure_no_auth else [])
        + (["--no-election-advance"] if args.no_election_advance else [])
    )


def _local_cluster(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from replichat.server.launcher import LocalCluster

    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    for option, value in (("--peers", args.peers), ("--wire-cluster", args.wire_cluster)):
        if value is not None:
            parser.error(f"{option} is for running one replica (with --id and --cluster)")
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
        client_tls=True,
        admin_token=True,
    )
    cluster.load_joined()  # replicas added by `server.py add-replica` in an earlier run
    if not args.no_metrics:
        cluster.enable_controls()
    cluster.start_all()
    cluster.print_table()
    try:
        return cluster.supervise()
    finally:
        cluster.disable_controls()


def _one_replica(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from replichat.runtime.node import NodeOptions
    from replichat.integrity import CorruptDataError
    from replichat.identity import IdentityError
    from replichat.server.replica import ListenError, serve_replica

    if args.id is None or args.cluster is None:
        parser.error("running one replica needs both --id and --cluster")
    if args.id not in args.cluster:
        parser.error(f"--id {args.id} is not in --cluster ({', '.join(map(str, sorted(args.cluster)))})")
    if args.join and args.insecure_peers:
        parser.error("--join needs peer TLS (--certs-dir or --peer-*-file): with --insecure-peers the cluster's "
                     "identity comes from its --cluster list, which a joining replica's differs from")
    if args.peers is not None and set(args.peers) != set(args.cluster):
        parser.error(
            f"--peers must list the same replicas as --cluster ({', '.join(map(str, sorted(args.cluster)))}), "
            f"not {', '.join(map(str, sorted(args.peers)))}"
        )
    wire_cluster = args.wire_cluster or {}
    if set(wire_cluster) - set(args.cluster):
        parser.error(f"--wire-cluster names replicas that are not in --cluster: "
                     f"{', '.join(map(str, sorted(set(wire_cluster) - set(args.cluster))))}")
    own_wire = args.wire or wire_cluster.get(args.id)
    if args.wire and wire_cluster.get(args.id, args.wire) != args.wire:
        parser.error(f"--wire {args.wire} differs from replica {args.id}'s --wire-cluster entry {wire_cluster[args.id]}")
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
    if args.max_creates_per_minute < 1 or args.max_streams_per_address < 1:
        parser.error("--max-creates-per-minute and --max-streams-per-address must be at least 1")
    security = _security(parser, args)
    if args.insecure_no_auth:
        logging.warning(
            "replica %d runs with --insecure-no-auth: anyone can read, acknowledge, delete and send as "
            "any user; do not use it where people other than a class share the service", args.id,
        )
    options = NodeOptions(
        tick_s=args.tick_ms / 1000.0,
        election_ticks=args.election_ticks,
        advance_first_timeout=not args.no_election_advance,
        snapshot_entries=max(0, args.snapshot_entries),
        snapshot_keep=max(0, args.snapshot_keep),
    )
    data_dir = args.data_dir or os.path.join("data", f"replica-{args.id}")
    admin_token = None
    if args.admin_token_file:
        from replichat.server.membership_admin import TokenError, read_token_file

        try:
            admin_token = read_token_file(args.admin_token_file)
        except TokenError as error:
            parser.error(str(error))
    try:
        return _run(
            serve_replica(args.id, args.cluster, data_dir, peers=peers, bind_address=args.bind,
                          wire_address=None if args.no_wire else own_wire, wire_cluster=wire_cluster, options=options,
                          metrics_address=args.metrics, security=security,
                          max_streams_per_address=args.max_streams_per_address, admin_token=admin_token,
                          join=args.join, auth_enabled=not args.insecure_no_auth,
                          auth_limits=AuthLimits(creates_per_minute=args.max_creates_per_minute))
        )
    except ListenError as error:  # a busy gRPC or Raft port: say which, no traceback
        print(f"replica {args.id}: {error}", file=sys.stderr)
        return 2
    except IdentityError as error:  # a data directory of another cluster
        print(f"replica {args.id} refuses to start: {error}", file=sys.stderr)
        return 3
    except CorruptDataError as error:  # stored data failed a check: say what and where
        print(f"replica {args.id} refuses to start: {error}", file=sys.stderr)
        return 3


def _security(parser: argparse.ArgumentParser, args: argparse.Namespace) -> "Security":
    """The TLS files of one replica, checked to exist before anything starts."""
    from replichat.security.paths import CertificatePaths, replica_paths
    from replichat.security.options import Security

    peer_files = [args.peer_cert_file, args.peer_key_file, args.peer_trusted_ca_file]
    peer = None
    if args.insecure_peers:
        if args.certs_dir or any(peer_files):
            parser.error("--insecure-peers contradicts --certs-dir and --peer-*-file")
    elif args.certs_dir:
        defaults_ = replica_paths(args.certs_dir, args.id)
        peer = CertificatePaths(args.peer_cert_file or defaults_.cert, args.peer_key_file or defaults_.key,
                                args.peer_trusted_ca_file or defaults_.ca)
    elif all(peer_files):
        peer = CertificatePaths(*peer_files)
    else:
        parser.error(
            "replicas authenticate each other with TLS: give --certs-dir DIR (create it with `server.py certs init "
            "DIR --cluster ...`) or all of --peer-cert-file, --peer-key-file and --peer-trusted-ca-file; "
            "--insecure-peers runs plain TCP instead"
        )
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    client_cert, client_key = args.cert, args.key
    for path in [*(peer or ()), client_cert, client_key]:
        if path is not None and not os.path.isfile(path):
            parser.error(f"cannot read {path}: no such file (see `server.py certs init --help`)")
    return Security(peer, client_cert, client_key, plain_wire=args.plain_wire)


def _certs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """`server.py certs init DIR --cluster ... [--peers ...] [--wire ...]`."""
    from replichat.security.certs import init_certs

    if len(args.command_args) == 3 and args.command_args[0] == "add":
        return _certs_add(parser, args.command_args[1], args.command_args[2], args.peer)
    if len(args.command_args) != 2 or args.command_args[0] != "init":
        parser.error("usage: server.py certs init DIR --cluster ID=HOST:PORT,... [--peers ID=HOST:PORT,...] [--force]"
                     "  |  server.py certs add DIR ID=HOST:PORT [--peer HOST:PORT]")
    directory = args.command_args[1]
    if args.cluster is None:
        parser.error("certs init needs --cluster (every replica's address: its certificate names the host)")
    peers = args.peers if args.peers is not None else defaults.raft_addresses(args.cluster)
    hosts = {i: {address.rpartition(":")[0], (peers.get(i) or "").rpartition(":")[0], "localhost", "127.0.0.1"}
             for i, address in args.cluster.items()}
    written = init_certs(directory, {i: sorted(h - {""}) for i, h in hosts.items()}, force=args.force)
    for path in written:
        print(f"wrote {path}")
    print(f"{directory}/ca.key signs certificates: keep it off the replicas. "
          f"Give each replica --certs-dir with ca.crt and its own replica-N.crt/.key.")
    return 0


def _certs_add(parser: argparse.ArgumentParser, directory: str, member: str, peer: Optional[str]) -> int:
    """`server.py certs add DIR ID=HOST:PORT [--peer HOST:PORT]`: a certificate for a new
    replica, signed by the CA in DIR (which must hold ca.key)."""
    from replichat.security.certs import CA_KEY, init_certs

    try:
        ((rid, address),) = parse_cluster(member).items()
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if not os.path.isfile(os.path.join(directory, CA_KEY)):
        parser.error(f"{directory} has no {CA_KEY}: certs add signs with the cluster CA's key (the local cluster's is "
                     "in DATA/certs)")
    raft = peer or defaults.raft_addresses({rid: address})[rid]
    hosts = sorted({address.rpartition(":")[0], raft.rpartition(":")[0], "localhost", "127.0.0.1"} - {""})
    for path in init_certs(directory, {rid: hosts}):
        print(f"wrote {path}")
    print(f"Give replica {rid} --certs-dir with {directory}/ca.crt and its replica-{rid}.crt/.key.")
    return 0


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
    ca_file = args.ca
    if ca_file is None and not args.servers and os.path.isfile(defaults.LOCAL_CA_FILE):
        ca_file = defaults.LOCAL_CA_FILE

    async def query() -> int:
        client = ChatClient(servers, ca_file=ca_file or None)
        try:
            rows = await client.status_all()
        finally:
            await client.close()
        for line in format_status(rows):
            print(line)
        return 0 if any(status is not None for _, status, _ in rows) else 1

    return asyncio.run(query())


if __name__ == "__main__":  # `python3 -m replichat.server.cli`: how an installed launcher starts replicas
    main()
