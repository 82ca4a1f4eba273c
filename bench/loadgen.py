"""One load generator for both systems: Python grpc.aio, C workers, each one write at a time.

A *system* (ReplichatSystem, EtcdSystem) knows how to start a fresh cluster, find its leader,
kill and restart members, and build one write: replichat `SendMessage` of a 64-byte text to a
pre-created recipient (a replicated, fsynced write answered once committed and applied), etcd
`KV.Put` of a 64-byte value under a fresh key (the same: answered once committed and applied).
Everything else — workers, timing, channels (one per member, the same options), error
handling, the failover writer — is shared, so both are measured the same way.
"""
import asyncio
import time
import uuid
from typing import Any, Awaitable, Callable, Dict, List, Optional

import grpc

from bench.cluster import BENCH_CREDENTIAL, BenchCluster
from bench.common import cpu_seconds, machine_busy_seconds, percentile, progress, rss_kib
from bench.etcd import rpc_pb2, rpc_pb2_grpc
from bench.etcd.cluster import EtcdCluster
from replichat.client.api import CHANNEL_OPTIONS, ChatClient
from replichat.errors import ChatError
from replichat.proto import chat_pb2, chat_pb2_grpc

# A write: (timeout) -> awaitable completing when the system acknowledged it.
Write = Callable[[float], Awaitable[Any]]


def payload(tag: str, size: int) -> str:
    """`size` ASCII bytes that start with `tag` (unique per write, so nothing is deduplicated)."""
    return (tag + "-").ljust(size, "x")[:size] if len(tag) < size else tag[:size]


class Channels:
    """One grpc.aio channel per address, all with the replichat client's options, and one stub
    of each kind per channel."""

    def __init__(self) -> None:
        self._channels: Dict[str, grpc.aio.Channel] = {}
        self._stubs: Dict[Any, Any] = {}

    def stub(self, address: str, kind: Callable[[grpc.aio.Channel], Any]) -> Any:
        stub = self._stubs.get((address, kind))
        if stub is None:
            stub = self._stubs[(address, kind)] = kind(self.get(address))
        return stub

    def get(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        return channel

    async def close(self) -> None:
        channels, self._channels, self._stubs = list(self._channels.values()), {}, {}
        for channel in channels:
            await channel.close()


class System:
    """What the shared measurements need from a system under test."""

    name = ""
    addresses: Dict[int, str]

    def __init__(self, base_dir: str, replicas: int, payload_bytes: int) -> None:
        self.base_dir = base_dir
        self.replicas = replicas
        self.payload_bytes = payload_bytes
        self.channels = Channels()

    # -- lifetime -------------------------------------------------------------------------
    def start_all(self) -> None:
        raise NotImplementedError

    def start(self, i: int) -> None:
        raise NotImplementedError

    def kill(self, i: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def pids(self) -> Dict[int, int]:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Closes the benchmark's connections (not the members: that is close())."""
        await self.channels.close()

    async def wait_for_leader(self, timeout: float = 30.0) -> int:
        raise NotImplementedError

    async def wait_caught_up(self, timeout: float = 60.0) -> None:
        """Until every running member has applied what the leader had committed."""
        raise NotImplementedError

    async def prepare(self) -> None:
        """After the first leader: what the writes need (replichat: the recipient)."""

    # -- writes ---------------------------------------------------------------------------
    def new_write(self, address: str, stream: str, n: int) -> Write:
        """Write number n of `stream` (a worker's unique name), sent to `address`. Calling the
        result twice sends the same request twice (a retry: replichat deduplicates it)."""
        raise NotImplementedError

    def make_worker(self, address: str, stream: str) -> Callable[[float], Awaitable[Any]]:
        counter = [0]

        def one(timeout: float) -> Awaitable[Any]:
            counter[0] += 1
            return self.new_write(address, stream, counter[0])(timeout)

        return one


class ReplichatSystem(System):
    name = "replichat"
    RECIPIENT = "sink"

    def __init__(self, base_dir: str, replicas: int, payload_bytes: int, library_client: bool = False,
                 metrics: bool = False, peer_tls: bool = True) -> None:
        super().__init__(base_dir, replicas, payload_bytes)
        self.cluster = BenchCluster(base_dir, replicas, metrics=metrics, peer_tls=peer_tls)
        self.addresses = dict(self.cluster.addresses)
        self.library_client = library_client
        self._clients: Dict[str, ChatClient] = {}

    def start_all(self) -> None:
        self.cluster.start_all()

    def start(self, i: int) -> None:
        self.cluster.start(i)

    def kill(self, i: int) -> None:
        self.cluster.kill(i)

    def close(self) -> None:
        self.cluster.close()

    def pids(self) -> Dict[int, int]:
        return self.cluster.pids()

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        await self.channels.close()

    async def wait_for_leader(self, timeout: float = 30.0) -> int:
        return await self.cluster.wait_for_leader(among=self.cluster.alive(), timeout=timeout)

    async def wait_caught_up(self, timeout: float = 60.0) -> None:
        leader = await self.wait_for_leader(timeout)
        status = await self.cluster.status(leader)
        assert status is not None
        await self.cluster.wait_for_applied(status.commit_index, self.cluster.alive(), timeout)

    async def create_user(self, name: str, address: Optional[str] = None) -> None:
        stub = self.channels.stub(address or self.addresses[await self.wait_for_leader()], chat_pb2_grpc.ChatStub)
        request = chat_pb2.CreateUserRequest(
            name=name, credential=BENCH_CREDENTIAL, client_id=uuid.uuid4().hex, request_seq=1
        )
        try:
            await stub.CreateUser(request, timeout=10)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise

    async def prepare(self) -> None:
        await self.create_user(self.RECIPIENT)

    def new_write(self, address: str, stream: str, n: int, recipient: str = RECIPIENT) -> Write:
        text = payload(f"{stream}-{n}", self.payload_bytes)
        if self.library_client:
            client = self._clients.get(address)
            if client is None:  # prefers `address`, fails over to the others like any client
                others = [a for a in self.addresses.values() if a != address]
                client = self._clients[address] = ChatClient([address] + others)
            return lambda timeout: client.send(recipient, text)
        stub = self.channels.stub(address, chat_pb2_grpc.ChatStub)
        # The client library's protocol: one client id per concurrent writer, request_seq 1, 2, ...
        request = chat_pb2.SendMessageRequest(recipient=recipient, text=text, client_id=stream, request_seq=n)
        return lambda timeout: stub.SendMessage(request, timeout=timeout)


class EtcdSystem(System):
    name = "etcd"

    def __init__(self, base_dir: str, replicas: int, payload_bytes: int, binary: str) -> None:
        super().__init__(base_dir, replicas, payload_bytes)
        self.cluster = EtcdCluster(binary, base_dir, replicas)
        self.addresses = dict(self.cluster.addresses)

    def start_all(self) -> None:
        self.cluster.start_all()

    def start(self, i: int) -> None:
        self.cluster.start(i)

    def kill(self, i: int) -> None:
        self.cluster.kill(i)

    def close(self) -> None:
        self.cluster.close()

    def pids(self) -> Dict[int, int]:
        return self.cluster.pids()

    async def wait_for_leader(self, timeout: float = 30.0) -> int:
        return await self.cluster.wait_for_leader(among=self.cluster.alive(), timeout=timeout)

    async def wait_caught_up(self, timeout: float = 60.0) -> None:
        await self.cluster.wait_for_applied(self.cluster.alive(), timeout)

    def new_write(self, address: str, stream: str, n: int) -> Write:
        stub = self.channels.stub(address, rpc_pb2_grpc.KVStub)
        key = f"bench/{stream}/{n}".encode()
        request = rpc_pb2.PutRequest(key=key, value=payload(f"{stream}-{n}", self.payload_bytes).encode())
        return lambda timeout: stub.Put(request, timeout=timeout)

    async def count_keys(self, prefix: bytes) -> int:
        leader = await self.wait_for_leader()
        stub = self.channels.stub(self.addresses[leader], rpc_pb2_grpc.KVStub)
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        response = await stub.Range(rpc_pb2.RangeRequest(key=prefix, range_end=end, count_only=True), timeout=30)
        return int(response.count)


def _error_name(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code().name
    if isinstance(error, ChatError):
        return error.code.name
    if isinstance(error, asyncio.TimeoutError):
        return "TIMEOUT"
    return type(error).__name__


async def run_load(system: System, concurrency: int, seconds: float, targets: List[str],
                   attempt_timeout: float = 10.0, leader: Optional[int] = None) -> Dict[str, Any]:
    """C workers, each one write at a time, for `seconds`; worker k writes to targets[k % len].

    Writes/s counts writes completed from the start until the last worker's last write ends
    (workers start no write after `seconds`). Latency is per successful write. A failed write
    is counted and followed by a 50 ms pause (none is expected in a healthy cluster)."""
    tag = uuid.uuid4().hex[:8]
    latencies: List[float] = []
    errors: Dict[str, int] = {}
    stop_at = 0.0

    async def worker(k: int) -> None:
        write = system.make_worker(targets[k % len(targets)], f"{tag}w{k}")
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                await write(attempt_timeout)
            except (grpc.aio.AioRpcError, ChatError) as error:
                name = _error_name(error)
                errors[name] = errors.get(name, 0) + 1
                await asyncio.sleep(0.05)
                continue
            latencies.append(time.perf_counter() - t0)

    pids = system.pids()
    member_cpu0 = {i: cpu_seconds([pid]) for i, pid in pids.items()}
    client_cpu0 = time.process_time()
    machine0 = machine_busy_seconds()
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - start
    client_cpu = time.process_time() - client_cpu0
    machine = machine_busy_seconds() - machine0
    member_cpu = {i: cpu_seconds([pid]) - member_cpu0[i] for i, pid in pids.items()}
    server_cpu = sum(member_cpu.values())
    writes = len(latencies)
    return {
        "writes_per_s": writes / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "writes": writes,
        "errors": errors,
        "elapsed_s": elapsed,
        # CPU use over the run, in cores (2.0 = both cores of a 2-core machine busy).
        "server_cpu_cores": server_cpu / elapsed,
        "client_cpu_cores": client_cpu / elapsed,
        # Everything else on the machine (other processes, the kernel outside our processes):
        # noise that skews the figures if it is not near 0.
        "other_cpu_cores": max(0.0, machine - server_cpu - client_cpu) / elapsed,
        "server_cpu_us_per_write": server_cpu / writes * 1e6 if writes else float("nan"),
        "member_cpu_cores": {str(i): cpu / elapsed for i, cpu in member_cpu.items()},
        "leader_cpu_cores": member_cpu[leader] / elapsed if leader in member_cpu else float("nan"),
    }


async def store(system: System, count: int, concurrency: int, address: str, stream_prefix: str,
                write_for: Optional[Callable[[str, str, int], Write]] = None) -> float:
    """Writes `count` items as fast as `concurrency` workers go (each retried until it
    succeeds, with the same request); returns writes/s."""
    make = write_for or system.new_write
    next_item = [0]
    done = [0]
    step = max(1, count // 10)
    start = time.perf_counter()

    async def worker(k: int) -> None:
        n = 0
        while next_item[0] < count:
            next_item[0] += 1
            n += 1
            write = make(address, f"{stream_prefix}w{k}", n)
            for attempt in range(100):
                try:
                    await write(30.0)
                    break
                except (grpc.aio.AioRpcError, ChatError) as error:
                    if attempt == 99:
                        raise RuntimeError(f"{system.name}: a write failed 100 times: {error}") from error
                    await asyncio.sleep(0.1)
            done[0] += 1
            if done[0] % step == 0:
                rate = done[0] / (time.perf_counter() - start)
                progress(f"  {system.name}: stored {done[0]:,}/{count:,} ({rate:,.0f}/s)")

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return count / (time.perf_counter() - start)


async def first_write_after(system: System, started: float, budget: float, attempt_timeout: float = 1.0) -> float:
    """Seconds from `started` until a write succeeds, trying every member in turn."""
    addresses = [system.addresses[i] for i in sorted(system.addresses)]
    deadline = started + budget
    k = 0
    while time.perf_counter() < deadline:
        write = system.new_write(addresses[k % len(addresses)], f"restart{uuid.uuid4().hex[:8]}", 1)
        try:
            await write(attempt_timeout)
            return time.perf_counter() - started
        except (grpc.aio.AioRpcError, ChatError):
            k += 1
            await asyncio.sleep(0.02)
    raise AssertionError(f"{system.name}: no successful write within {budget}s of the restart")


async def failover_pause(system: System, attempt_timeout: float, budget: float = 60.0) -> Dict[str, Any]:
    """kill -9 of the leader while one writer writes; the longest gap between consecutive
    successful writes, from the last one before the kill on.

    The writer starts on a follower (a system forwards to its leader) and, on any error or after
    `attempt_timeout` without an answer, retries the same request on the next member.
    The killed member is restarted afterwards and the cluster let catch up."""
    leader = await system.wait_for_leader()
    order = [system.addresses[i] for i in sorted(system.addresses) if i != leader] + [system.addresses[leader]]
    channels_before = system.channels
    system.channels = Channels()  # fresh connections: no reconnect back-off left from a previous round
    done_times: List[float] = []
    errors: Dict[str, int] = {}
    stop = asyncio.Event()
    stream = f"failover{uuid.uuid4().hex[:8]}"

    async def writer() -> None:
        position, n = 0, 0
        while not stop.is_set():
            n += 1
            while not stop.is_set():
                try:
                    await system.new_write(order[position % len(order)], stream, n)(attempt_timeout)
                    done_times.append(time.perf_counter())
                    break
                except (grpc.aio.AioRpcError, ChatError) as error:
                    name = _error_name(error)
                    errors[name] = errors.get(name, 0) + 1
                    position += 1
                    await asyncio.sleep(0.01)

    task = asyncio.ensure_future(writer())
    try:
        deadline = time.perf_counter() + budget
        while len(done_times) < 20:
            if time.perf_counter() > deadline or task.done():
                raise AssertionError(f"{system.name}: the writer made no progress before the kill")
            await asyncio.sleep(0.01)
        killed_at = time.perf_counter()
        system.kill(leader)
        while not done_times or done_times[-1] < killed_at + 0.2 or sum(t > killed_at for t in done_times) < 20:
            if time.perf_counter() > killed_at + budget or task.done():
                raise AssertionError(f"{system.name}: no writes for {budget}s after the leader's kill")
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.shield(task), attempt_timeout + 5)
        await system.channels.close()
        system.channels = channels_before
    system.start(leader)
    await system.wait_caught_up()
    before = [t for t in done_times if t <= killed_at]
    window = before[-1:] + [t for t in done_times if t > killed_at]
    gaps = [b - a for a, b in zip(window, window[1:])]
    return {"pause_s": max(gaps), "killed": leader, "errors": errors}


def rss_by_member(system: System) -> Dict[int, Optional[int]]:
    return {i: rss_kib(pid) for i, pid in system.pids().items()}


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def kib_to_mib(kib: Optional[int]) -> Optional[float]:
    return None if kib is None else kib / 1024

