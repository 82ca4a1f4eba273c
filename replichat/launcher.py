"""Runs a local cluster: one OS process per replica on 127.0.0.1, supervised from one terminal."""
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

from replichat.defaults import local_cluster

STOP_GRACE_S = 5.0


class LocalCluster:
    def __init__(
        self,
        server_script: str,
        replicas: int,
        data_dir: str,
        first_port: int,
        first_wire_port: Optional[int],
        extra_args: List[str],
        host: str = "127.0.0.1",
    ) -> None:
        self.server_script = server_script
        self.replicas = replicas
        self.data_dir = data_dir
        self.cluster = {i: f"{host}:{first_port + i - 1}" for i in range(1, replicas + 1)}
        self.wire = {i: f"{host}:{first_wire_port + i - 1}" for i in self.cluster} if first_wire_port else {}
        self.extra_args = extra_args
        self.processes: Dict[int, subprocess.Popen] = {}

    def replica_dir(self, node_id: int) -> str:
        return os.path.join(self.data_dir, f"replica-{node_id}")

    def command(self, node_id: int) -> List[str]:
        cluster = ",".join(f"{i}={a}" for i, a in sorted(self.cluster.items()))
        args = [sys.executable, self.server_script, "--id", str(node_id), "--cluster", cluster,
                "--data-dir", self.replica_dir(node_id)]
        args += ["--wire", self.wire[node_id]] if self.wire else ["--no-wire"]
        return args + self.extra_args

    def start(self, node_id: int) -> subprocess.Popen:
        process = subprocess.Popen(self.command(node_id), stdin=subprocess.DEVNULL)
        self.processes[node_id] = process
        return process

    def print_table(self) -> None:
        tolerates = (self.replicas - 1) // 2
        print(f"replichat: local cluster of {self.replicas} replicas (tolerates {tolerates} "
              f"failure{'s' if tolerates != 1 else ''})", flush=True)
        print(f"  {'id':>2}  {'gRPC address':<17} {'wire address':<17} {'pid':>7}  data", flush=True)
        for i, address in sorted(self.cluster.items()):
            print(f"  {i:>2}  {address:<17} {self.wire.get(i, '-'):<17} {self.processes[i].pid:>7}  {self.replica_dir(i)}", flush=True)
        servers = ",".join(self.cluster.values())
        hint = "python3 client.py" if self.cluster == local_cluster(self.replicas) and self.replicas == 5 else f"python3 client.py --servers {servers}"
        print(f"Connect with: {hint}    Stop: Ctrl-C", flush=True)

    def supervise(self) -> int:
        """Report replicas that exit; on Ctrl-C/SIGTERM stop them all. Returns an exit code."""
        stopping = []

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
                          f"{len(running)} of {self.replicas} running", flush=True)
            time.sleep(0.2)
        if not running:
            print("replichat: every replica has stopped", flush=True)
            return 1
        self.stop_all()
        return 0

    def stop_all(self) -> None:
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

