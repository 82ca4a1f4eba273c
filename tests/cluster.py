"""Real replica processes for tests and benchmarks: free ports, logs in a folder, and waits on
what the replicas report about themselves (their Status RPC)."""
import asyncio
import os
import time
from typing import Dict, Sequence, List, Optional

import grpc

from replichat.server.launcher import LocalCluster, free_ports
from replichat.proto import chat_pb2, chat_pb2_grpc


class ProcessCluster(LocalCluster):
    def __init__(self, base_dir: str, replicas: int = 5, *, wire: bool = False, tick_ms: int = 50,
                 election_ticks: int = 10, metrics: bool = False, server_args: Sequence[str] = (),
                 peer_tls: bool = True, client_tls: bool = False, admin_token: bool = False) -> None:
        os.makedirs(base_dir, exist_ok=True)
        # gRPC, Raft, wire and metrics ports, all free at once (not gRPC + 200, which may be taken).
        ports = free_ports(replicas * 4)
        ids = range(1, replicas + 1)
        super().__init__(
            {i: f"127.0.0.1:{ports[i - 1]}" for i in ids},
            base_dir,
            peer_addresses={i: f"127.0.0.1:{ports[replicas + i - 1]}" for i in ids},
            wire_addresses={i: f"127.0.0.1:{ports[2 * replicas + i - 1]}" for i in ids} if wire else None,
            metrics_addresses={i: f"127.0.0.1:{ports[3 * replicas + i - 1]}" for i in ids} if metrics else None,
            extra_args=["--tick-ms", str(tick_ms), "--election-ticks", str(election_ticks), *server_args],
            log_dir=base_dir,
            peer_tls=peer_tls,
            client_tls=client_tls,
            admin_token=admin_token,
        )
        # Extra environment for one replica's next starts (set it before start(), pop it to stop):
        # how the crash tests arm replichat/crashpoints.py in one process only.
        self.env_for: Dict[int, Dict[str, str]] = {}

    def command(self, node_id: int) -> List[str]:
        extra = self.env_for.get(node_id)
        if not extra:
            return super().command(node_id)
        # env(1) execs the server: the process (and its pid) is the replica itself.
        return ["env", *(f"{k}={v}" for k, v in sorted(extra.items())), *super().command(node_id)]

    def start_joining(self, node_id: int) -> None:
        """Start a new replica `node_id` on free ports with --join (it waits to be added)."""
        grpc_port, raft_port, wire_port = free_ports(3)
        self.add_joined(node_id, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{raft_port}",
                        f"127.0.0.1:{wire_port}" if self.wire_addresses else "")
        self.start(node_id)

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

    async def wait_for_leader(self, among: Optional[List[int]] = None, timeout: float = 20.0) -> int:
        """The id of a leader that every replica of `among` (default: the running ones) agrees on.
        Polls: the replicas are other processes, there is no event to await."""
        deadline = time.monotonic() + timeout
        among = among or [i for i in self.alive() if i not in self.paused]
        while time.monotonic() < deadline:
            statuses = [await self.status(i) for i in among]
            leaders = {s.leader_id for s in statuses if s is not None}
            if len(leaders) == 1 and all(s is not None for s in statuses):
                leader = leaders.pop()
                if leader in among:
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
