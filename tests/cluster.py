"""A cluster of real replica processes on 127.0.0.1 for tests: start, kill -9, SIGSTOP, restart.

Each replica is `server.py --id N --cluster ...` exactly as an operator runs it, with its log in
the test's temporary folder (printed when a test fails, see conftest.py).
"""
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional

import grpc

from replichat.proto import chat_pb2, chat_pb2_grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "server.py")


def free_ports(count: int) -> List[int]:
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class ProcessCluster:
    def __init__(self, base_dir: str, replicas: int = 5, *, wire: bool = False, tick_ms: int = 50,
                 election_ticks: int = 10) -> None:
        self.base_dir = base_dir
        ports = free_ports(replicas * 2)
        self.addresses = {i: f"127.0.0.1:{ports[i - 1]}" for i in range(1, replicas + 1)}
        self.wire_addresses = {i: f"127.0.0.1:{ports[replicas + i - 1]}" for i in self.addresses} if wire else {}
        self.tick_ms = tick_ms
        self.election_ticks = election_ticks
        self.processes: Dict[int, subprocess.Popen] = {}
        self.paused: set = set()

    @property
    def servers(self) -> List[str]:
        return [self.addresses[i] for i in sorted(self.addresses)]

    def log_path(self, node_id: int) -> str:
        return os.path.join(self.base_dir, f"replica-{node_id}.log")

    def start(self, node_id: int) -> None:
        cluster = ",".join(f"{i}={a}" for i, a in sorted(self.addresses.items()))
        args = [sys.executable, SERVER, "--id", str(node_id), "--cluster", cluster,
                "--data-dir", os.path.join(self.base_dir, f"replica-{node_id}"),
                "--tick-ms", str(self.tick_ms), "--election-ticks", str(self.election_ticks)]
        args += ["--wire", self.wire_addresses[node_id]] if self.wire_addresses else ["--no-wire"]
        log = open(self.log_path(node_id), "ab")
        self.processes[node_id] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def start_all(self) -> None:
        for node_id in sorted(self.addresses):
            self.start(node_id)

    def alive(self) -> List[int]:
        return [i for i, p in sorted(self.processes.items()) if p.poll() is None]

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        process = self.processes[node_id]
        if node_id in self.paused:
            self.resume(node_id)
        process.send_signal(sig)
        process.wait(10)

    def pause(self, node_id: int) -> None:
        self.processes[node_id].send_signal(signal.SIGSTOP)
        self.paused.add(node_id)

    def resume(self, node_id: int) -> None:
        self.processes[node_id].send_signal(signal.SIGCONT)
        self.paused.discard(node_id)

    def close(self) -> None:
        for node_id, process in self.processes.items():
            if process.poll() is None:
                if node_id in self.paused:
                    process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait(10)

    def logs(self) -> str:
        out = []
        for node_id in sorted(self.addresses):
            path = self.log_path(node_id)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    out.append(f"----- replica {node_id} -----\n" + "".join(f.readlines()[-40:]))
        return "\n".join(out)

    async def status(self, node_id: int, timeout: float = 0.5) -> Optional[chat_pb2.StatusResponse]:
        async with grpc.aio.insecure_channel(self.addresses[node_id]) as channel:
            try:
                return await chat_pb2_grpc.ChatStub(channel).Status(chat_pb2.StatusRequest(), timeout=timeout)
            except grpc.aio.AioRpcError:
                return None

    async def wait_for_leader(self, among: Optional[List[int]] = None, timeout: float = 20.0,
                              not_in_term_of: Optional[int] = None) -> int:
        """The id of a leader that every live replica of `among` agrees on."""
        deadline = time.monotonic() + timeout
        among = among or [i for i in self.alive() if i not in self.paused]
        while time.monotonic() < deadline:
            statuses = [await self.status(i) for i in among]
            leaders = {s.leader_id for s in statuses if s is not None}
            if len(leaders) == 1 and all(s is not None for s in statuses):
                leader = leaders.pop()
                if leader != 0 and leader in among and (not_in_term_of is None or leader != not_in_term_of):
                    return leader
            await asyncio.sleep(0.05)
        raise AssertionError(f"no agreed leader among {among} within {timeout}s")

    async def wait_for_applied(self, index: int, among: List[int], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            statuses = [await self.status(i) for i in among]
            if all(s is not None and s.applied_index >= index for s in statuses):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"replicas {among} did not apply index {index} within {timeout}s")
