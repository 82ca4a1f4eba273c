"""`server.py members [add ID=HOST:PORT | remove ID | promote ID]` and `server.py add-replica`.

The commands talk to the replicas' gRPC API (replichat/client/admin.py); changes carry the
admin token from --admin-token-file, by default the local cluster's DATA/admin.token.
`add-replica` asks the running local cluster's launcher (`server.py`) to start one more
replica on the next free ports (a request file in DATA that the launcher picks up; it then
supervises that replica like the others), then adds it.
"""
import argparse
import asyncio
import json
import os
import time
from typing import List, Optional

from replichat import defaults
from replichat.client.admin import AdminError, MembershipClient, format_members
from replichat.errors import ChatError
from replichat.server.launcher import ADD_REQUEST_PREFIX, ADMIN_TOKEN_FILE, free_ports
from replichat.server.membership_admin import TokenError, address_problem, read_token_file

# How long add-replica waits for the launcher to pick its request up.
LAUNCHER_WAIT_S = 10.0


def _servers_and_ca(args: argparse.Namespace) -> "tuple[List[str], Optional[str]]":
    servers = args.servers.split(",") if args.servers else list(defaults.local_cluster(args.replicas).values())
    ca_file = args.ca
    local_ca = os.path.join(args.data_dir or "data", "certs", "ca.crt")
    if ca_file is None and not args.servers and os.path.isfile(local_ca):
        ca_file = local_ca
    return servers, ca_file or None


def _token(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    path = args.admin_token_file or os.path.join(args.data_dir or "data", ADMIN_TOKEN_FILE)
    if not os.path.exists(path):
        parser.error(f"no admin token at {path}: give --admin-token-file FILE (the token file the replicas were "
                     "started with; the local cluster writes DATA/admin.token)")
    try:
        return read_token_file(path)
    except TokenError as error:
        parser.error(str(error))
        raise  # pragma: no cover - parser.error exits


def _parse_id(parser: argparse.ArgumentParser, text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        parser.error(f"bad replica id {text!r}: expected a number >= 1")
    return int(text)


def members_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    words = args.command_args
    servers, ca_file = _servers_and_ca(args)
    if not words:
        return asyncio.run(_show(servers, ca_file))
    action = words[0]
    if action == "add" and len(words) == 2:
        rid_text, sep, address = words[1].partition("=")
        rid = _parse_id(parser, rid_text)
        if not sep or address_problem(address):
            parser.error(f"members add: expected ID=HOST:PORT (the new replica's gRPC address), not {words[1]!r}")
        peer = args.peer or defaults.raft_addresses({rid: address})[rid]
        for flag, value in (("--peer", peer), ("--wire", args.wire or "")):
            if value and address_problem(value):
                parser.error(f"members add {flag}: {address_problem(value)}")
        token = _token(parser, args)
        return asyncio.run(_change(servers, ca_file, token, lambda c: c.add(
            rid, address, peer, args.wire or "", args.catch_up_timeout)))
    if action in ("remove", "promote") and len(words) == 2:
        rid = _parse_id(parser, words[1])
        token = _token(parser, args)
        if action == "remove":
            return asyncio.run(_change(servers, ca_file, token, lambda c: c.remove(rid, args.force)))
        return asyncio.run(_change(servers, ca_file, token, lambda c: c.promote(rid)))
    parser.error("usage: server.py members [--servers ...]  |  members add ID=HOST:PORT [--peer HOST:PORT] "
                 "[--wire HOST:PORT]  |  members remove ID [--force]  |  members promote ID")
    return 2  # pragma: no cover


async def _show(servers: List[str], ca_file: Optional[str]) -> int:
    client = MembershipClient(servers, ca_file=ca_file)
    try:
        view = await client.members()
    except AdminError as error:
        print(f"error: {error}")
        return 1
    finally:
        await client.close()
    for line in format_members(view):
        print(line)
    return 0


async def _change(servers: List[str], ca_file: Optional[str], token: str, act) -> int:  # type: ignore[no-untyped-def]
    client = MembershipClient(servers, ca_file=ca_file, admin_token=token, say=lambda text: print(text, flush=True))
    try:
        await act(client)
        return 0
    except ChatError as error:
        print(f"error: {error.message}", flush=True)
        return 1
    except AdminError as error:
        print(f"error: {error}", flush=True)
        return 1
    finally:
        await client.close()


def add_replica_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Start one more replica of the running local cluster and add it."""
    if args.command_args:
        parser.error("add-replica takes no arguments (the new replica gets the next id and free ports)")
    data_dir = args.data_dir or "data"
    servers, ca_file = _servers_and_ca(args)
    token = _token(parser, args)
    return asyncio.run(_add_replica(data_dir, servers, ca_file, token, args))


async def _add_replica(data_dir: str, servers: List[str], ca_file: Optional[str], token: str,
                       args: argparse.Namespace) -> int:
    client = MembershipClient(servers, ca_file=ca_file, admin_token=token, say=lambda text: print(text, flush=True))
    try:
        view = await client.members()
        rid = max(m.id for m in view.members) + 1
        host = defaults.DEFAULT_HOST
        wanted = [args.port + rid - 1, args.port + defaults.RAFT_PORT_OFFSET + rid - 1]
        wanted += [] if args.no_wire else [args.wire_port + rid - 1]
        wanted += [] if args.no_metrics else [args.metrics_port + rid - 1]
        ports = wanted if all(_free(p) for p in wanted) else free_ports(len(wanted))
        request = {"id": rid, "grpc": f"{host}:{ports[0]}", "raft": f"{host}:{ports[1]}",
                   "wire": "" if args.no_wire else f"{host}:{ports[2]}",
                   "metrics": "" if args.no_metrics else f"{host}:{ports[-1]}"}
        path = os.path.join(data_dir, f"{ADD_REQUEST_PREFIX}{rid}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(request, f)
        os.replace(path + ".tmp", path)
        print(f"asked the local cluster's launcher to start replica {rid} (gRPC {request['grpc']}, Raft "
              f"{request['raft']}{', wire ' + request['wire'] if request['wire'] else ''})", flush=True)
        give_up = time.monotonic() + LAUNCHER_WAIT_S
        while os.path.exists(path):
            if time.monotonic() >= give_up:
                os.remove(path)
                print(f"error: no launcher picked the request up within {LAUNCHER_WAIT_S:g} s: is `python3 server.py` "
                      f"running with the data folder {data_dir}? Nothing was changed.", flush=True)
                return 1
            await asyncio.sleep(0.1)
        await client.add(rid, request["grpc"], request["raft"], request["wire"], args.catch_up_timeout)
        return 0
    except (ChatError, AdminError) as error:
        print(f"error: {getattr(error, 'message', error)}", flush=True)
        return 1
    finally:
        await client.close()


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((defaults.DEFAULT_HOST, port))
        except OSError:
            return False
    return True
