"""Runs a cluster of replica processes on one machine: `server.py` with no arguments, and the
tests and benchmarks, which also kill, stop and restart them."""
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, Set

from replichat.defaults import LOCAL_CA_FILE, local_cluster, raft_addresses
from replichat.metrics.control import ControlServer

STOP_GRACE_S = 5.0
# A replica that dies is started again after a back-off that doubles while it keeps dying
# soon after its start (a replica that ran RESTART_STABLE_S is back to the first delay) ...
RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
RESTART_STABLE_S = 60.0
# ... and is left down after this many quick deaths in a row (a broken data folder or a port
# that stays taken cannot be fixed by starting again): the launcher prints its command instead.
RESTART_GIVE_UP_AFTER = 6
# Membership changes (replichat/server/membership_cli.py): the admin token the local cluster creates,
# the replicas added to it, and how `server.py add-replica` asks the running launcher for one.
ADMIN_TOKEN_FILE = "admin.token"
JOINED_FILE = "local-members.json"
ADD_REQUEST_PREFIX = "add-replica-"
# In a checkout, server.py sits beside the replichat package (this file is replichat/server/launcher.py).
SERVER_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "server.py")


def server_command() -> List[str]:
    """How to start `server.py`: the script beside the package in a checkout, the package's
    module where it is installed (site-packages has no server.py)."""
    if os.path.exists(SERVER_SCRIPT):
        return [sys.executable, SERVER_SCRIPT]
    return [sys.executable, "-m", "replichat.server.cli"]


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
        metrics_addresses: Optional[Dict[int, str]] = None,
        extra_args: Sequence[str] = (),
        log_dir: Optional[str] = None,
        client_tls: bool = False,
        peer_tls: bool = True,
        admin_token: bool = False,
    ) -> None:
        """addresses: each replica's gRPC address (clients); peer_addresses: its Raft address
        (default: the gRPC port + defaults.RAFT_PORT_OFFSET); log_dir: write each replica's
        output to log_dir/replica-N.log instead of this process's stdout/stderr."""
        self.addresses = dict(addresses)
        self.peer_addresses = dict(peer_addresses) if peer_addresses is not None else raft_addresses(addresses)
        self.data_dir = data_dir
        self.wire_addresses = dict(wire_addresses or {})
        self.metrics_addresses = dict(metrics_addresses or {})
        self.controls: Optional[ControlServer] = None
        self.extra_args = list(extra_args)
        self.log_dir = log_dir
        # Certificates (security/certs.py) are created in DATA/certs at the first start:
        # peers always use mutual TLS (peer_tls=False: --insecure-peers, for benchmarks of
        # its cost); clients use TLS on gRPC with client_tls (server.py's local cluster).
        self.client_tls = client_tls
        self.peer_tls = peer_tls
        self.processes: Dict[int, subprocess.Popen] = {}
        self.paused: Set[int] = set()
        # Process table changes come from the supervising loop and (server.py) the cluster
        # page's controls, on another thread.
        self.lock = threading.RLock()
        self._started_at: Dict[int, float] = {}
        self._quick_deaths: Dict[int, int] = {}
        self._restart_at: Dict[int, float] = {}
        # Replicas stopped on purpose (the cluster page's kill button): not restarted by the launcher.
        self.held_down: Set[int] = set()
        self._reported: Set[int] = set()
        # Membership changes: with admin_token, the replicas take DATA/admin.token (created at
        # the first start) as their --admin-token-file. Replicas added later (`server.py
        # add-replica`) are `joined`: started with --join, remembered in DATA/local-members.json.
        self.admin_token = admin_token
        self.bootstrap_ids = frozenset(addresses)
        self.joined: Set[int] = set()

    @property
    def admin_token_file(self) -> str:
        return os.path.join(self.data_dir, ADMIN_TOKEN_FILE)

    def _cluster_of(self, node_id: int) -> List[int]:
        """Whom replica node_id is started with: the first replicas, plus itself and those
        added before it for an added one (the log's configuration then takes over)."""
        if node_id in self.joined:
            return sorted(i for i in self.addresses if i in self.bootstrap_ids or i in self.joined and i <= node_id)
        return sorted(self.bootstrap_ids)

    def add_joined(self, node_id: int, address: str, peer_address: str, wire_address: str = "",
                   metrics_address: str = "") -> None:
        """A replica added to the running cluster: supervised like the others from now on."""
        with self.lock:
            self.addresses[node_id] = address
            self.peer_addresses[node_id] = peer_address
            if wire_address:
                self.wire_addresses[node_id] = wire_address
            if metrics_address:
                self.metrics_addresses[node_id] = metrics_address
            self.joined.add(node_id)
            self._save_joined()

    def _save_joined(self) -> None:
        entries = {str(i): {"grpc": self.addresses[i], "raft": self.peer_addresses[i],
                            "wire": self.wire_addresses.get(i, ""), "metrics": self.metrics_addresses.get(i, "")}
                   for i in sorted(self.joined)}
        path = os.path.join(self.data_dir, JOINED_FILE)
        os.makedirs(self.data_dir, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(entries, f, indent=2, sort_keys=True)
        os.replace(path + ".tmp", path)

    def load_joined(self) -> None:
        """Replicas added in an earlier run of this local cluster (DATA/local-members.json)."""
        path = os.path.join(self.data_dir, JOINED_FILE)
        if not os.path.exists(path):
            return
        with open(path) as f:
            entries = json.load(f)
        for key, item in sorted(entries.items(), key=lambda kv: int(kv[0])):
            node_id = int(key)
            if node_id not in self.addresses:
                self.add_joined(node_id, item["grpc"], item["raft"], item.get("wire", ""), item.get("metrics", ""))

    def take_add_requests(self) -> List[int]:
        """Start the replicas `server.py add-replica` asked for (DATA/add-replica-N.json)."""
        started = []
        try:
            names = sorted(os.listdir(self.data_dir))
        except OSError:
            return started
        for name in names:
            if not (name.startswith(ADD_REQUEST_PREFIX) and name.endswith(".json")):
                continue
            path = os.path.join(self.data_dir, name)
            try:
                with open(path) as f:
                    item = json.load(f)
                node_id = int(item["id"])
                if node_id in self.addresses:
                    raise ValueError(f"replica {node_id} exists already")
                self.add_joined(node_id, item["grpc"], item["raft"], item.get("wire", ""), item.get("metrics", ""))
            except (OSError, ValueError, KeyError, TypeError) as error:
                print(f"replichat: ignoring the request {path}: {error}", flush=True)
                os.remove(path)
                continue
            os.remove(path)
            process = self.start(node_id)
            print(f"replichat: started replica {node_id} (pid {process.pid}) to join the cluster: gRPC "
                  f"{self.addresses[node_id]}, Raft {self.peer_addresses[node_id]}, data {self.replica_dir(node_id)}",
                  flush=True)
            started.append(node_id)
        return started

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
        members = self._cluster_of(node_id)
        peers = self.peers_seen_by(node_id)
        args = server_command() + ["--id", str(node_id),
                "--cluster", format_addresses({i: self.addresses[i] for i in members}),
                "--peers", format_addresses({i: peers[i] for i in members}), "--data-dir", self.replica_dir(node_id)]
        if node_id in self.joined:
            args.append("--join")
        if self.admin_token:
            args += ["--admin-token-file", self.admin_token_file]
        if self.wire_addresses:
            args += ["--wire", self.wire_addresses[node_id], "--wire-cluster",
                     format_addresses({i: self.wire_addresses[i] for i in members if i in self.wire_addresses})]
        else:
            args.append("--no-wire")
        if node_id in self.metrics_addresses:
            args += ["--metrics", self.metrics_addresses[node_id]]
        return args + self.security_args(node_id) + self.extra_args

    @property
    def certs_dir(self) -> str:
        return os.path.join(self.data_dir, "certs")

    @property
    def ca_file(self) -> Optional[str]:
        """The CA clients verify replicas with (None: clients connect without TLS)."""
        return os.path.join(self.certs_dir, "ca.crt") if self.client_tls else None

    def security_args(self, node_id: int) -> List[str]:
        if not self.peer_tls and not self.client_tls:
            return ["--insecure-peers"]
        args = ["--certs-dir", self.certs_dir] if self.peer_tls else ["--insecure-peers"]
        if self.client_tls:
            cert = os.path.join(self.certs_dir, f"replica-{node_id}")
            # The wire port stays the brief's plain byte protocol: it listens on this machine only.
            args += ["--cert", cert + ".crt", "--key", cert + ".key", "--plain-wire"]
        return args

    def _ensure_certs(self) -> None:
        """Create the CA and the replicas' certificates in DATA/certs if missing (at a start,
        never when a command line is only printed)."""
        from replichat.security.certs import init_certs

        hosts = {
            i: sorted({a.rpartition(":")[0] for a in (self.addresses[i], self.peer_addresses[i],
                                                       self.wire_addresses.get(i, ""))} - {""} | {"localhost"})
            for i in self.addresses
        }
        init_certs(self.certs_dir, hosts)

    def start(self, node_id: int) -> subprocess.Popen:
        with self.lock:
            return self._start(node_id)

    def _start(self, node_id: int, now: Optional[float] = None) -> subprocess.Popen:
        self._restart_at.pop(node_id, None)
        self._reported.discard(node_id)
        self.paused.discard(node_id)
        self._started_at[node_id] = time.monotonic() if now is None else now
        if self.peer_tls or self.client_tls:
            self._ensure_certs()
        if self.admin_token:
            from replichat.server.membership_admin import create_token_file

            os.makedirs(self.data_dir, exist_ok=True)
            create_token_file(self.admin_token_file)
        env = None
        if self.controls is not None:  # how the replicas' pages reach the controls (see metrics/control.py)
            env = dict(os.environ, **self.controls.environment(self.metrics_addresses))
        if self.log_dir is None:
            process = subprocess.Popen(self.command(node_id), stdin=subprocess.DEVNULL, env=env)
        else:
            with open(self.log_path(node_id), "ab") as log:
                process = subprocess.Popen(self.command(node_id), stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, env=env)
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
        print(f"  {'id':>2}  {'gRPC address':<17} {'Raft address':<17} {'wire address':<17} {'metrics address':<17} "
              f"{'pid':>7}  data", flush=True)
        for i, address in sorted(self.addresses.items()):
            print(f"  {i:>2}  {address:<17} {self.peer_addresses[i]:<17} {self.wire_addresses.get(i, '-'):<17} "
                  f"{self.metrics_addresses.get(i, '-'):<17} {self.processes[i].pid:>7}  {self.replica_dir(i)}", flush=True)
        if self.metrics_addresses:
            first = self.metrics_addresses[min(self.metrics_addresses)]
            print(f"Cluster page: http://{first}/ (any replica's metrics address; Prometheus: /metrics)", flush=True)
        default = self.addresses == local_cluster()
        options = "" if default else f" --servers {','.join(self.servers)}"
        ca = self.ca_file
        if ca is not None and os.path.abspath(ca) != os.path.abspath(LOCAL_CA_FILE) or not default and ca:
            options += f" --ca {ca}"  # the clients' default CA is ./data/certs/ca.crt
        print(f"Connect with: python3 client.py{options}    Status: python3 server.py status{options}"
              f"    Stop: Ctrl-C", flush=True)

    def enable_controls(self) -> None:
        """Serve the cluster page's kill/pause/resume/restart buttons (before start_all)."""
        self.controls = ControlServer(self.control, tuple(sorted(self.addresses)))
        self.controls.start()

    def disable_controls(self) -> None:
        if self.controls is not None:
            self.controls.close()
            self.controls = None

    def control(self, action: str, node_id: int) -> str:
        """One button of the cluster page; returns what was done, for the page to show."""
        with self.lock:
            process = self.processes[node_id]
            running = process.poll() is None
            if action == "kill":
                if not running:
                    raise ValueError(f"replica {node_id} is not running")
                self.held_down.add(node_id)
                self.kill(node_id)
                message = f"replica {node_id} (pid {process.pid}) killed with SIGKILL; restart it with its button"
            elif action == "pause":
                if not running:
                    raise ValueError(f"replica {node_id} is not running")
                self.pause(node_id)
                message = f"replica {node_id} (pid {process.pid}) paused (SIGSTOP)"
            elif action == "resume":
                if not running or node_id not in self.paused:
                    raise ValueError(f"replica {node_id} is not paused")
                self.resume(node_id)
                message = f"replica {node_id} (pid {process.pid}) resumed (SIGCONT)"
            elif action == "restart":
                if running:
                    self.kill(node_id)
                    self._reported.add(node_id)  # a restart, not a death to report and back off from
                self.held_down.discard(node_id)
                process = self._start(node_id)
                message = f"replica {node_id} restarted (pid {process.pid})"
            else:
                raise ValueError(f"unknown action {action!r}")
        print(f"replichat: cluster page: {message}", flush=True)
        return message

    def command_line(self, node_id: int) -> str:
        """The exact shell command that starts replica node_id as this launcher does."""
        return " ".join(shlex.quote(arg) for arg in self.command(node_id))

    def check_processes(self, now: Optional[float] = None) -> None:
        """Report replicas that exited and start them again after their back-off (see
        RESTART_BACKOFF_S); one step of supervise(), `now` from time.monotonic()."""
        now = time.monotonic() if now is None else now
        with self.lock:
            for node_id, process in sorted(self.processes.items()):
                code = process.poll()
                if code is None or node_id in self._reported:
                    continue
                self._reported.add(node_id)
                self.paused.discard(node_id)
                how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                running = len(self.alive())
                print(f"replichat: replica {node_id} (pid {process.pid}) stopped: {how}; "
                      f"{running} of {len(self.addresses)} running", flush=True)
                if node_id in self.held_down:
                    continue
                ran = now - self._started_at.get(node_id, now)
                quick = self._quick_deaths[node_id] = 0 if ran >= RESTART_STABLE_S else self._quick_deaths.get(node_id, 0) + 1
                if quick >= RESTART_GIVE_UP_AFTER:
                    print(f"replichat: replica {node_id} died {quick} times within {RESTART_STABLE_S:g} s of starting; "
                          f"not restarting it. See its log above; start it by hand with:\n  {self.command_line(node_id)}",
                          flush=True)
                    continue
                delay = RESTART_BACKOFF_S[min(max(quick - 1, 0), len(RESTART_BACKOFF_S) - 1)]
                self._restart_at[node_id] = now + delay
                print(f"replichat: restarting replica {node_id} in {delay:g} s (by hand: {self.command_line(node_id)})",
                      flush=True)
            for node_id, when in sorted(self._restart_at.items()):
                if when <= now:
                    process = self._start(node_id, now)
                    print(f"replichat: replica {node_id} restarted (pid {process.pid})", flush=True)

    def restart_pending(self) -> bool:
        return bool(self._restart_at)

    def supervise(self) -> int:
        """Report replicas that exit and restart them (with a back-off); on Ctrl-C/SIGTERM stop
        them all. Returns an exit code: 1 once no replica runs nor is about to."""
        stopping: List[int] = []

        def request_stop(signum: int, frame: object) -> None:
            stopping.append(signum)

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        while not stopping:
            self.check_processes()
            self.take_add_requests()
            with self.lock:
                if not self.alive() and not self.restart_pending() and not self.held_down:
                    print("replichat: every replica has stopped", flush=True)
                    return 1
            time.sleep(0.2)
        self.stop_all()
        return 0

    def stop_all(self) -> None:
        """Clean stop: SIGTERM (a leader hands over leadership first), kill -9 after a grace period."""
        print("replichat: stopping the cluster", flush=True)
        for node_id in list(self.paused):
            self.resume(node_id)  # a stopped process cannot act on SIGTERM
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
