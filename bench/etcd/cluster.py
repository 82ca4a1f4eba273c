"""A local etcd cluster for the benchmarks: N members on 127.0.0.1, data and logs in a folder.

etcd comes from Debian's `etcd-server` package (etcd 3.4); `find_etcd()` says whether it is
installed. Members run with etcd's defaults (fsync on, heartbeat 100 ms, election timeout
1000 ms) except for a larger backend quota, so long benchmarks cannot hit the 2 GiB default.
A member killed with `kill` is restarted by `start` on its existing data (etcd then ignores the
--initial-cluster flags and recovers from its WAL and snapshot).
"""
import asyncio
import os
import shutil
import signal
import subprocess
import time
import uuid
from typing import Dict, List, Optional

import grpc

from bench.common import guarded
from bench.etcd import rpc_pb2, rpc_pb2_grpc
from replichat.server.launcher import free_ports

INSTALL_HINT = "apt-get install etcd-server (Debian/Ubuntu: etcd 3.4), or put an `etcd` binary on PATH"
QUOTA_BACKEND_BYTES = 8 * 1024 ** 3  # etcd's documented maximum


def find_etcd() -> Optional[str]:
    """The etcd binary: $ETCD_BIN, else `etcd` on PATH, else Debian's /usr/bin/etcd."""
    candidates = [os.environ.get("ETCD_BIN", ""), shutil.which("etcd") or "", "/usr/bin/etcd"]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def etcd_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in out.splitlines():
        if line.lower().startswith("etcd version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


class EtcdCluster:
    def __init__(self, binary: str, base_dir: str, members: int) -> None:
        self.binary = binary
        self.base_dir = base_dir
        os.makedirs(base_dir, exist_ok=True)
        ports = free_ports(2 * members)
        ids = range(1, members + 1)
        self.addresses: Dict[int, str] = {i: f"127.0.0.1:{ports[i - 1]}" for i in ids}
        self.peer_urls: Dict[int, str] = {i: f"http://127.0.0.1:{ports[members + i - 1]}" for i in ids}
        self.token = f"bench-{uuid.uuid4().hex[:12]}"
        self.processes: Dict[int, subprocess.Popen] = {}
        self.member_ids: Dict[int, int] = {}  # our index -> etcd's member id (learned from Status)

    @property
    def servers(self) -> List[str]:
        return [self.addresses[i] for i in sorted(self.addresses)]

    def data_dir(self, i: int) -> str:
        return os.path.join(self.base_dir, f"etcd-{i}")

    def log_path(self, i: int) -> str:
        return os.path.join(self.base_dir, f"etcd-{i}.log")

    def command(self, i: int) -> List[str]:
        client_url = f"http://{self.addresses[i]}"
        initial = ",".join(f"m{j}={url}" for j, url in sorted(self.peer_urls.items()))
        return [
            self.binary,
            "--name", f"m{i}",
            "--data-dir", self.data_dir(i),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", self.peer_urls[i],
            "--initial-advertise-peer-urls", self.peer_urls[i],
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.token,
            "--quota-backend-bytes", str(QUOTA_BACKEND_BYTES),
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]

    def start(self, i: int) -> subprocess.Popen:
        with open(self.log_path(i), "ab") as log:
            process = subprocess.Popen(guarded(self.command(i)), stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT)
        self.processes[i] = process
        return process

    def start_all(self) -> None:
        for i in sorted(self.addresses):
            self.start(i)

    def alive(self) -> List[int]:
        return [i for i, p in sorted(self.processes.items()) if p.poll() is None]

    def pids(self) -> Dict[int, int]:
        return {i: p.pid for i, p in sorted(self.processes.items()) if p.poll() is None}

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        process = self.processes[i]
        if process.poll() is None:
            process.send_signal(sig)
        process.wait(10)

    def close(self) -> None:
        """kill -9 whatever still runs."""
        for i in list(self.processes):
            process = self.processes[i]
            if process.poll() is None:
                process.kill()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    pass

    def log_tail(self, i: int, lines: int = 20) -> str:
        try:
            with open(self.log_path(i), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    async def status(self, i: int, timeout: float = 0.5) -> Optional[rpc_pb2.StatusResponse]:
        async with grpc.aio.insecure_channel(self.addresses[i]) as channel:
            try:
                response = await rpc_pb2_grpc.MaintenanceStub(channel).Status(rpc_pb2.StatusRequest(), timeout=timeout)
            except grpc.aio.AioRpcError:
                return None
        self.member_ids[i] = response.header.member_id
        return response

    async def wait_for_leader(self, among: Optional[List[int]] = None, timeout: float = 30.0) -> int:
        """Our index of the leader that every member of `among` (default: the running ones) names."""
        deadline = time.monotonic() + timeout
        among = among or self.alive()
        while time.monotonic() < deadline:
            statuses = [await self.status(i) for i in among]
            leaders = {s.leader for s in statuses if s is not None}
            if len(leaders) == 1 and all(s is not None for s in statuses):
                leader_id = leaders.pop()
                for i, member_id in self.member_ids.items():
                    if member_id == leader_id and leader_id != 0 and i in among:
                        return i
            await asyncio.sleep(0.05)
        tails = "\n".join(f"----- etcd {i} -----\n{self.log_tail(i)}" for i in sorted(self.addresses))
        raise AssertionError(f"etcd: no agreed leader among {among} within {timeout}s\n{tails}")

    async def wait_for_applied(self, among: List[int], timeout: float = 30.0) -> None:
        """Until every member of `among` has applied the leader's commit index as it was on entry."""
        deadline = time.monotonic() + timeout
        leader = await self.wait_for_leader(timeout=timeout)
        target = await self.status(leader)
        assert target is not None
        while time.monotonic() < deadline:
            statuses = [await self.status(i) for i in among]
            if all(s is not None and s.raftAppliedIndex >= target.raftIndex for s in statuses):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"etcd members {among} did not catch up within {timeout}s")
