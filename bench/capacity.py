"""Measurements beyond write throughput: end-to-end delivery latency, restart time and memory
with many stored messages, and how many concurrent `connect` streams one replica holds."""
import asyncio
import time
import uuid
from typing import Any, Dict, List, Optional

import grpc

from bench.cluster import BENCH_CREDENTIAL
from bench.common import QuietGuard, dir_bytes, percentile, progress, rss_kib
from bench.loadgen import Channels, EtcdSystem, ReplichatSystem, System, first_write_after, rss_by_member, store, wait_until
from replichat.client.api import CHANNEL_OPTIONS, ChatClient
from replichat.client.credentials import MemoryCredentials
from replichat.proto import chat_pb2, chat_pb2_grpc


async def e2e_delivery(system: ReplichatSystem, seconds: float, payload_bytes: int) -> Dict[str, Any]:
    """One sender, one message at a time, to two receivers connected with the client library
    (which acknowledges what it shows, like client.py): one on the leader, one on a follower.
    The text starts with the sender's perf_counter_ns; latency = receipt - that."""
    leader = await system.wait_for_leader()
    follower = min(i for i in system.addresses if i != leader)
    tag = uuid.uuid4().hex[:6]
    where = {"leader": (f"rxl{tag}", system.addresses[leader]), "follower": (f"rxf{tag}", system.addresses[follower])}
    for name, address in where.values():
        await system.create_user(name)
    received: Dict[str, List[float]] = {key: [] for key in where}
    clients: List[ChatClient] = []
    readers: List["asyncio.Future[None]"] = []

    async def receive(session: Any, key: str) -> None:
        async for event in session:
            if isinstance(event, chat_pb2.Delivery):
                sent_ns = int(event.text.split("-", 1)[0])
                received[key].append((time.perf_counter_ns() - sent_ns) / 1e6)
                session.ack(event.seq)

    sent: Dict[str, int] = {key: 0 for key in where}
    send_latencies: List[float] = []
    try:
        for key, (name, address) in where.items():
            client = ChatClient([address], credentials=MemoryCredentials({name: BENCH_CREDENTIAL}))
            clients.append(client)
            session = await client.connect(name)
            readers.append(asyncio.ensure_future(receive(session, key)))
        stub = system.channels.stub(system.addresses[leader], chat_pb2_grpc.ChatStub)
        client_id = f"e2e{tag}"
        keys = list(where)
        n = 0
        stop_at = time.perf_counter() + seconds
        while time.perf_counter() < stop_at:
            key = keys[n % len(keys)]
            n += 1
            t0 = time.perf_counter()
            text = (f"{time.perf_counter_ns()}-").ljust(payload_bytes, "x")
            request = chat_pb2.SendMessageRequest(recipient=where[key][0], text=text, client_id=client_id, request_seq=n)
            await stub.SendMessage(request, timeout=10)
            send_latencies.append((time.perf_counter() - t0) * 1000)
            sent[key] += 1
        await wait_until(lambda: all(len(received[k]) >= sent[k] for k in where), 15, "every delivery")
    finally:
        for reader in readers:
            reader.cancel()
        for client in clients:
            await client.close()
    result: Dict[str, Any] = {"send_p50_ms": percentile(send_latencies, 0.5), "sent": sent}
    for key in where:
        result[key] = {"p50_ms": percentile(received[key], 0.5), "p99_ms": percentile(received[key], 0.99),
                       "count": len(received[key])}
    return result


async def restart_with_stored(system: System, count: int, store_concurrency: int, budget: float,
                              quiet: Optional[QuietGuard] = None) -> Dict[str, Any]:
    """A fresh cluster: store `count` items (replichat: messages queued for one user nobody
    reads; etcd: keys), note each member's RSS and data size, kill -9 every member, start them
    all, and time the first successful write and the moment every member has caught up."""
    system.start_all()
    leader = await system.wait_for_leader()
    await system.prepare()
    if isinstance(system, ReplichatSystem):
        recipient = "archive"
        await system.create_user(recipient)

        def write_for(address: str, stream: str, n: int) -> Any:
            return system.new_write(address, stream, n, recipient=recipient)
    else:
        write_for = None  # type: ignore[assignment]
    progress(f"{system.name}: storing {count:,} items")
    rate = await store(system, count, store_concurrency, system.addresses[leader], "stored", write_for)
    await system.wait_caught_up(timeout=budget)
    await asyncio.sleep(1.0)  # let background work (checkpoints, compaction) settle before reading RSS
    result: Dict[str, Any] = {
        "stored": count,
        "store_writes_per_s": rate,
        "rss_mib_with_stored": {str(i): (kib or 0) / 1024 for i, kib in rss_by_member(system).items()},
        "data_mib": {str(i): dir_bytes(system.base_dir + f"/{'replica' if isinstance(system, ReplichatSystem) else 'etcd'}-{i}") / 2**20
                     for i in sorted(system.addresses)},
    }
    if quiet is not None:
        await quiet.wait(system.pids().values(), "the restart")
    progress(f"{system.name}: kill -9 of every member, then restart")
    for i in sorted(system.addresses):
        system.kill(i)
    await system.channels.close()
    system.channels = Channels()
    started = time.perf_counter()
    system.start_all()
    result["restart_to_first_write_s"] = await first_write_after(system, started, budget)
    await system.wait_caught_up(timeout=budget)
    result["restart_to_all_caught_up_s"] = time.perf_counter() - started
    result["rss_mib_after_restart"] = {str(i): (kib or 0) / 1024 for i, kib in rss_by_member(system).items()}
    # Sanity: nothing stored was lost.
    if isinstance(system, ReplichatSystem):
        result["queued_after_restart"] = await _queued(system, "archive")
        ok = result["queued_after_restart"] == count
    else:
        assert isinstance(system, EtcdSystem)
        result["keys_after_restart"] = await system.count_keys(b"bench/stored")
        ok = result["keys_after_restart"] == count
    if not ok:
        raise AssertionError(f"{system.name}: after the restart the stored items are not all there: {result}")
    return result


async def _queued(system: ReplichatSystem, name: str) -> int:
    """How many messages `connect` reports queued for `name` (then the stream is dropped)."""
    leader = await system.wait_for_leader()
    stub = system.channels.stub(system.addresses[leader], chat_pb2_grpc.ChatStub)
    call = stub.Connect(chat_pb2.ConnectRequest(name=name, session_id=uuid.uuid4().hex, credential=BENCH_CREDENTIAL, client_id=uuid.uuid4().hex,
                                                request_seq=1), wait_for_ready=True)
    try:
        # wait_for_ready: the channel may still be backing off from the refused connections of
        # the restart; without it the call fails at once with UNAVAILABLE.
        event = await asyncio.wait_for(call.read(), 60)
    finally:
        call.cancel()
    return int(event.connected.queued)


async def connect_streams(system: ReplichatSystem, cap: int, batch: int = 100, open_timeout: float = 10.0,
                          per_channel: int = 100) -> Dict[str, Any]:
    """Opens `connect` streams on one follower, `batch` at a time, each for its own user, until
    one fails or `cap` are open; then sends every connected user one message and counts the
    deliveries, to check the streams are alive, not merely open. Reports RSS along the way."""
    leader = await system.wait_for_leader()
    target = min(i for i in system.addresses if i != leader)
    address = system.addresses[target]
    pid = system.pids()[target]
    tag = uuid.uuid4().hex[:6]
    names = [f"c{tag}{k:05d}" for k in range(cap)]
    progress(f"{system.name}: creating {cap:,} users for the streams")
    semaphore = asyncio.Semaphore(64)

    async def create(name: str) -> None:
        async with semaphore:
            await system.create_user(name, system.addresses[leader])

    await asyncio.gather(*(create(name) for name in names))
    rss_start = rss_kib(pid)
    channels: List[grpc.aio.Channel] = []
    calls: List[Any] = []
    readers: List["asyncio.Future[None]"] = []
    delivered = [0]
    curve: List[Dict[str, Any]] = [{"streams": 0, "rss_mib": (rss_start or 0) / 1024}]
    failure: Optional[str] = None

    async def read_rest(call: Any) -> None:
        while True:
            event = await call.read()
            if event is grpc.aio.EOF:
                return
            if event.WhichOneof("event") == "message":
                delivered[0] += 1

    opened_names: List[str] = []

    async def open_one(k: int) -> None:
        stub = chat_pb2_grpc.ChatStub(channels[k // per_channel])
        call = stub.Connect(chat_pb2.ConnectRequest(name=names[k], session_id=uuid.uuid4().hex, credential=BENCH_CREDENTIAL,
                                                    client_id=f"{tag}s{k}", request_seq=1))
        calls.append(call)
        event = await asyncio.wait_for(call.read(), open_timeout)
        if event is grpc.aio.EOF or event.WhichOneof("event") != "connected":
            raise RuntimeError(f"stream {k}: no Connected event ({event!r})")
        readers.append(asyncio.ensure_future(read_rest(call)))
        opened_names.append(names[k])

    opened = 0
    try:
        started = time.perf_counter()
        while opened < cap and failure is None:
            size = min(batch, cap - opened)
            first = len(calls)
            while len(channels) * per_channel < first + size:
                # A local subchannel pool each: channels with equal options would share one connection.
                options = CHANNEL_OPTIONS + [("grpc.use_local_subchannel_pool", 1)]
                channels.append(grpc.aio.insecure_channel(address, options=options))
            outcomes = await asyncio.gather(*(open_one(k) for k in range(first, first + size)), return_exceptions=True)
            errors = [o for o in outcomes if isinstance(o, BaseException)]
            opened += size - len(errors)
            if errors:
                failure = f"{len(errors)} of a batch of {size} failed, first: {errors[0]!r}"[:300]
            if pid not in system.pids().values():
                failure = (failure or "") + f" replica {target} died"
            curve.append({"streams": opened, "rss_mib": (rss_kib(pid) or 0) / 1024})
            if opened % 500 == 0 or opened == cap or failure:
                progress(f"  {opened:,} streams open on replica {target}, RSS {curve[-1]['rss_mib']:.0f} MiB")
        open_seconds = time.perf_counter() - started
        # Every open stream gets one message: are they all alive?
        progress(f"{system.name}: one message to each of the {opened:,} connected users")
        connected = list(opened_names)
        sender = f"st{tag}"
        send_stub = system.channels.stub(system.addresses[leader], chat_pb2_grpc.ChatStub)

        async def send(k: int, name: str) -> None:
            async with semaphore:
                await send_stub.SendMessage(chat_pb2.SendMessageRequest(recipient=name, text="ping", client_id=f"{sender}{k}",
                                                                        request_seq=1), timeout=30)

        await asyncio.gather(*(send(k, name) for k, name in enumerate(connected)))
        try:
            await wait_until(lambda: delivered[0] >= len(connected), 30, "a delivery on every stream")
        except AssertionError:
            pass
        rss_end = rss_kib(pid)
    finally:
        for reader in readers:
            reader.cancel()
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close()
    per_stream = ((rss_end or 0) - (rss_start or 0)) / opened if opened else float("nan")
    return {
        "replica": target,
        "cap": cap,
        "opened": opened,
        "failure": failure,
        "delivered": delivered[0],
        "open_seconds": open_seconds,
        "rss_mib_before": (rss_start or 0) / 1024,
        "rss_mib_after": (rss_end or 0) / 1024,
        "kib_per_stream": per_stream,
        "curve": curve,
    }
