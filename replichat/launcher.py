"""Runs a cluster of replica processes on one machine: `server.py` with no arguments, and the
tests and benchmarks, which also kill, stop and restart them."""
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Set

from replichat.defaults import local_cluster, raft_addresses

STOP_GRACE_S = 5.0
SERVER_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "server.py")


def server_command() -> List[str]:
    """How to start `server.py`: the script beside the package in a checkout, the package's
    module where it is installed (site-packages has no server.py)."""
    if os.path.exists(SERVER_SCRIPT):
        return [sys.executable, SERVER_SCRIPT]
    return [sys.executable, "-m", "replichat.server_cli"]


def free_ports(count: int) -> List[int]:
    """Ports free on 127.0.0.1 right now (for tests, benchmarks and campaigns)."""
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def format_addresses(addresses: Dict[int, str]) -> str:
    """{id: address} -> ID=HOST:PORT,... as --cluster and --peers take it."""
    return ",".join(f"{i}={a}" for i, a in sorted(addresses.items()))


class LocalCluster:
    def __init__(
        self,
        addresses: Dict[int, str],
        data_dir: str,
        *,
        peer_addresses: Optional[Dict[int, str]] = None,
        wire_addresses: Optional[Dict[int, str]] = None,
        extra_args: Sequence[str] = (),
        log_dir: Optional[str] = None,
    ) -> None:
        """addresses: each replica's gRPC address (clients); peer_addresses: its Raft address
        (default: the gRPC port + defaults.RAFT_PORT_OFFSET); log_dir: write each replica's
        output to log_dir/replica-N.log instead of this process's stdout/stderr."""
        self.addresses = dict(addresses)
        self.peer_addresses = dict(peer_addresses) if peer_addresses is not None else raft_addresses(addresses)
        self.data_dir = data_dir
        self.wire_addresses = dict(wire_addresses or {})
        self.extra_args = list(extra_args)
        self.log_dir = log_dir
        self.processes: Dict[int, subprocess.Popen] = {}
        self.paused: Set[int] = set()

    @property
    def servers(self) -> List[str]:
        return [self.addresses[i] for i in sorted(self.addresses)]

    def replica_dir(self, node_id: int) -> str:
        return os.path.join(self.data_dir, f"replica-{node_id}")

    def log_path(self, node_id: int) -> str:
        assert self.log_dir is not None
        return os.path.join(self.log_dir, f"replica-{node_id}.log")

    def peers_seen_by(self, node_id: int) -> Dict[int, str]:
        """The --peers map replica node_id gets (the chaos campaign puts proxies in it)."""
        return self.peer_addresses

    def command(self, node_id: int) -> List[str]:
        args = server_command() + ["--id", str(node_id), "--cluster", format_addresses(self.addresses),
                "--peers", format_addresses(self.peers_seen_by(node_id)), "--data-dir", self.replica_dir(node_id)]
        args += ["--wire", self.wire_addresses[node_id]] if self.wire_addresses else ["--no-wire"]
        return args + self.extra_args

    def start(self, node_id: int) -> subprocess.Popen:
        if self.log_dir is None:
            process = subprocess.Popen(self.command(node_id), stdin=subprocess.DEVNULL)
        else:
            with open(self.log_path(node_id), "ab") as log:
                process = subprocess.Popen(self.command(node_id), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.processes[node_id] = process
        return process

    def start_all(self) -> None:
        for node_id in sorted(self.addresses):
            self.start(node_id)

    def alive(self) -> List[int]:
        return [i for i, p in sorted(self.processes.items()) if p.poll() is None]

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        """Send sig (default: kill -9) and wait for the process to end."""
        if node_id in self.paused:
            self.resume(node_id)
        process = self.processes[node_id]
        process.send_signal(sig)
        process.wait(10)

    def pause(self, node_id: int) -> None:
        self.processes[node_id].send_signal(signal.SIGSTOP)
        self.paused.add(node_id)

    def resume(self, node_id: int) -> None:
        self.processes[node_id].send_signal(signal.SIGCONT)
        self.paused.discard(node_id)

    def close(self) -> None:
        """kill -9 whatever still runs (tests and benchmarks: nothing outlives them)."""
        for node_id in list(self.processes):
            if self.processes[node_id].poll() is None:
                self.kill(node_id)

    def print_table(self) -> None:
        replicas = len(self.addresses)
        tolerates = (replicas - 1) // 2
        print(f"replichat: local cluster of {replicas} replicas (tolerates {tolerates} "
              f"failure{'s' if tolerates != 1 else ''})", flush=True)
        print(f"  {'id':>2}  {'gRPC address':<17} {'Raft address':<17} {'wire address':<17} {'pid':>7}  data", flush=True)
        for i, address in sorted(self.addresses.items()):
            print(f"  {i:>2}  {address:<17} {self.peer_addresses[i]:<17} {self.wire_addresses.get(i, '-'):<17} "
                  f"{self.processes[i].pid:>7}  {self.replica_dir(i)}", flush=True)
        default = self.addresses == local_cluster()
        hint = "python3 client.py" if default else f"python3 client.py --servers {','.join(self.servers)}"
        print(f"Connect with: {hint}    Status: python3 server.py status{'' if default else ' --servers ' + ','.join(self.servers)}"
              f"    Stop: Ctrl-C", flush=True)

    def supervise(self) -> int:
        """Report replicas that exit; on Ctrl-C/SIGTERM stop them all. Returns an exit code."""
        stopping: List[int] = []

        def request_stop(signum: int, frame: object) -> None:
            stopping.append(signum)

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        running = dict(self.processes)
        while running and not stopping:
            for node_id, process in list(running.items()):
                code = process.poll()
                if code is not None:
                    del running[node_id]
                    how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                    print(f"replichat: replica {node_id} (pid {process.pid}) stopped: {how}; "
                          f"{len(running)} of {len(self.addresses)} running", flush=True)
            time.sleep(0.2)
        if not running:
            print("replichat: every replica has stopped", flush=True)
            return 1
        self.stop_all()
        return 0

    def stop_all(self) -> None:
        """Clean stop: SIGTERM (a leader hands over leadership first), kill -9 after a grace period."""
        print("replichat: stopping the cluster", flush=True)
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
