"""Replica processes whose peer links go through one LinkProxy per ordered pair."""
import asyncio
import os
from typing import Dict, List, Optional, Tuple

import grpc

from replichat.chaos.proxy import LinkProxy
from replichat.server.launcher import LocalCluster, free_ports
from replichat.proto import chat_pb2, chat_pb2_grpc


class ChaosCluster(LocalCluster):
    """Replica i gets its own --peers map: entry i its real Raft address, entry j the proxy of
    link i->j, which forwards to j's real Raft address. --cluster (gRPC) has the real
    addresses, which clients use. Call `start_proxies()` (in the running event loop) before
    `start_all()`."""

    def __init__(self, base_dir: str, replicas: int = 5, *, tick_ms: int = 50, election_ticks: int = 10) -> None:
        os.makedirs(base_dir, exist_ok=True)
        ids = range(1, replicas + 1)
        links = [(i, j) for i in ids for j in ids if i != j]
        # Every port in one call, so none is handed out twice: a proxy that asked the OS for
        # any free port once got a replica's gRPC port, which was free until that replica bound it.
        ports = free_ports(replicas * 2 + len(links))
        self._proxy_ports = dict(zip(links, ports[replicas * 2:]))
        super().__init__({i: f"127.0.0.1:{ports[i - 1]}" for i in ids}, base_dir,
                         peer_addresses={i: f"127.0.0.1:{ports[replicas + i - 1]}" for i in ids},
                         extra_args=["--tick-ms", str(tick_ms), "--election-ticks", str(election_ticks)],
                         log_dir=base_dir, admin_token=True)
        self.proxies: Dict[Tuple[int, int], LinkProxy] = {}
        self._channels: Dict[int, grpc.aio.Channel] = {}

    @property
    def ids(self) -> List[int]:
        return sorted(self.addresses)

    async def start_proxies(self) -> None:
        for i in self.ids:
            for j in self.ids:
                if i != j:
                    proxy = LinkProxy(i, j, self.peer_addresses[j])
                    await proxy.start(self._proxy_ports[(i, j)])
                    self.proxies[(i, j)] = proxy

    def peers_seen_by(self, node_id: int) -> Dict[int, str]:
        return {j: (self.peer_addresses[j] if j == node_id else self.proxies[(node_id, j)].address) for j in self.ids}

    def set_cut_links(self, cut: "set") -> None:
        for link, proxy in self.proxies.items():
            if link in cut:
                if not proxy.is_cut:
                    proxy.cut()
            elif proxy.is_cut:
                proxy.forward()

    async def status(self, node_id: int, timeout: float = 0.5) -> Optional[chat_pb2.StatusResponse]:
        channel = self._channels.get(node_id)
        if channel is None:
            channel = self._channels[node_id] = grpc.aio.insecure_channel(self.addresses[node_id])
        try:
            return await chat_pb2_grpc.ChatStub(channel).Status(chat_pb2.StatusRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return None

    async def statuses(self, timeout: float = 0.5) -> Dict[int, Optional[chat_pb2.StatusResponse]]:
        results = await asyncio.gather(*(self.status(i, timeout) for i in self.ids))
        return dict(zip(self.ids, results))

    def logs(self, lines: int = 30) -> str:
        out = []
        for node_id in self.ids:
            path = self.log_path(node_id)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    out.append(f"----- replica {node_id} -----\n" + "".join(f.readlines()[-lines:]))
        return "\n".join(out)

    async def aclose(self) -> None:
        """kill -9 every replica still running, close proxies and status channels."""
        self.close()
        for proxy in self.proxies.values():
            await proxy.close()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
