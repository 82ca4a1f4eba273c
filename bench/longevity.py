"""What a long-lived cluster costs once snapshots and compaction bound it (issue 10, section 4).

    python3 bench/longevity.py                  # the full run: 10^6 messages (~40 min on 2 busy cores)
    python3 bench/longevity.py --quick          # 10^5 / 10^5 / 10^4: a few minutes
    python3 bench/longevity.py --smoke          # seconds: what tests/ runs to check it works

Four measurements, each on fresh 3-replica clusters (real `server.py` processes, default
`--snapshot-entries`/`--snapshot-keep` unless given):

1. acknowledged: `--messages` messages sent to `--readers` users whose `connect` streams read
   and acknowledge them as they arrive. Each replica's RSS and data directory after the first
   `--small` (all delivered and acknowledged) and after all of them: the ratio must stay within
   1.5x. Then every replica is killed with kill -9 and started: restart -> first write.
2. unread: `--unread` messages stored for one user who never reads them (they must be kept):
   RSS, data directory, restart -> first write (and that every message is still queued).
3. write pause: the latency of every write of the unread load, split by whether it completed
   while some replica was taking a snapshot (intervals from the replicas' "took a snapshot"
   log lines) or not: throughput, p50, p99 and max, during snapshots against steady.
4. catch-up: a follower is down while `--missed` writes are made, then started; the time
   until it has applied the leader's commit index, by InstallSnapshot (snapshots on) and by
   log replay (`--snapshot-entries 0`), one cluster each, in the same run.

The machine may be shared: every figure carries the 1-minute load average (`uptime`) taken
with it; prefer the sizes and ratios to the rates. Results: a table on stdout, progress on
stderr, everything in `--json` (default bench/results/longevity.json). Every process started is
killed at the end, and with the benchmark if it dies (bench/common.py).
"""
import argparse
import asyncio
import datetime
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from array import array
from typing import Any, Dict, List, Optional, Sequence, Tuple

import grpc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.cluster import BENCH_CREDENTIAL, BenchCluster  # noqa: E402
from bench.common import dir_bytes, keep_grpc_aio_initialized, percentile, progress  # noqa: E402
from bench.loadgen import Channels, ReplichatSystem, first_write_after, payload, rss_by_member  # noqa: E402
from replichat.errors import ChatError  # noqa: E402
from replichat.proto import chat_pb2, chat_pb2_grpc  # noqa: E402

BENCH_SERVER_ARGS = ["--max-creates-per-minute", "100000000", "--max-streams-per-address", "100000"]
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
SNAPSHOT_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) replica-\d+ INFO replica (\d+) took a snapshot at index (\d+) "
    r"\(([\d.]+) MiB in ([\d.]+) s\)"
)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


class LongevitySystem(ReplichatSystem):
    """ReplichatSystem with extra server flags (the snapshot settings under test)."""

    def __init__(self, base_dir: str, payload_bytes: int, server_args: Sequence[str]) -> None:
        super().__init__(base_dir, 3, payload_bytes)
        self.cluster = BenchCluster(base_dir, 3, server_args=BENCH_SERVER_ARGS + list(server_args))
        self.addresses = dict(self.cluster.addresses)

    def replica_dir(self, i: int) -> str:
        return self.cluster.replica_dir(i)

    def log(self, i: int) -> str:
        with open(self.cluster.log_path(i), errors="replace") as f:
            return f.read()


class Latencies:
    """Every write's completion time (wall clock, to line up with the replicas' logs) and latency."""

    def __init__(self) -> None:
        self.ends = array("d")
        self.seconds = array("d")


async def load(system: LongevitySystem, count: int, concurrency: int, recipients: Sequence[str], tag: str,
               record: Optional[Latencies] = None) -> float:
    """`count` sends from `concurrency` workers, spread over `recipients`, each retried with the
    same request until it succeeds. Workers start on the leader; after an error a worker waits
    a little and moves to the next replica (followers forward writes), rather than asking every
    replica for the leader 256 times at once. Returns writes/s."""
    leader = await system.wait_for_leader()
    addresses = [system.addresses[i] for i in sorted(system.addresses)]
    first = addresses.index(system.addresses[leader])
    next_item = [0]
    done = [0]
    errors = [0]
    step = max(1, count // 10)
    start = time.perf_counter()

    async def worker(k: int) -> None:
        at = first
        stub = system.channels.stub(addresses[at], chat_pb2_grpc.ChatStub)
        n = 0
        while next_item[0] < count:
            item = next_item[0]
            next_item[0] += 1
            n += 1
            request = chat_pb2.SendMessageRequest(
                recipient=recipients[item % len(recipients)], text=payload(f"{tag}{k}-{n}", system.payload_bytes),
                client_id=f"{tag}-{k}", request_seq=n)
            began = time.perf_counter()  # a write's latency includes its retries
            for attempt in range(100):
                try:
                    await stub.SendMessage(request, timeout=30.0)
                    break
                except grpc.aio.AioRpcError as error:
                    if attempt == 99:
                        raise RuntimeError(f"a write failed 100 times: {error}") from error
                    errors[0] += 1
                    await asyncio.sleep(0.2)
                    at = (at + 1) % len(addresses)
                    stub = system.channels.stub(addresses[at], chat_pb2_grpc.ChatStub)
            if record is not None:
                record.ends.append(time.time())
                record.seconds.append(time.perf_counter() - began)
            done[0] += 1
            if done[0] % step == 0:
                rate = done[0] / (time.perf_counter() - start)
                progress(f"  {tag}: {done[0]:,}/{count:,} sent ({rate:,.0f}/s, {errors[0]} failed attempts retried, "
                         f"load {load_average()})")

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return count / (time.perf_counter() - start)


class Reader:
    """A user reading its `connect` stream and acknowledging what arrived every `ack_every_s`."""

    def __init__(self, system: LongevitySystem, name: str, address: str, ack_every_s: float = 0.2) -> None:
        self.system, self.name, self.address = system, name, address
        self.session_id = uuid.uuid4().hex
        self.received = 0
        self.last_seq = 0
        self.acked = 0
        self._ack_every_s = ack_every_s
        self._tasks: List["asyncio.Task[None]"] = []
        self._call: Any = None
        self.failure: Optional[BaseException] = None

    async def start(self) -> None:
        stub = self.system.channels.stub(self.address, chat_pb2_grpc.ChatStub)
        self._call = stub.Connect(chat_pb2.ConnectRequest(
            name=self.name, session_id=self.session_id, credential=BENCH_CREDENTIAL,
            client_id=f"connect-{self.session_id}", request_seq=1))
        first = await asyncio.wait_for(self._call.read(), 30)
        if first is grpc.aio.EOF or first.WhichOneof("event") != "connected":
            raise RuntimeError(f"{self.name}: no Connected event ({first!r})")
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._ack())]

    async def _read(self) -> None:
        try:
            while True:
                event = await self._call.read()
                if event is grpc.aio.EOF:
                    raise RuntimeError(f"{self.name}: the connect stream ended")
                if event.WhichOneof("event") == "message":
                    if event.message.seq != self.last_seq + 1:
                        raise RuntimeError(f"{self.name}: seq {event.message.seq} after {self.last_seq}")
                    self.last_seq = event.message.seq
                    self.received += 1
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            self.failure = error

    async def _ack(self) -> None:
        stub = self.system.channels.stub(self.address, chat_pb2_grpc.ChatStub)
        n = 0
        try:
            while True:
                await asyncio.sleep(self._ack_every_s)
                target = self.last_seq
                if target > self.acked:
                    n += 1
                    request = chat_pb2.AckRequest(
                        name=self.name, up_to_seq=target, session_id=self.session_id, credential=BENCH_CREDENTIAL,
                        client_id=f"ack-{self.session_id}", request_seq=n)
                    for attempt in range(100):  # the same request again: applied once
                        try:
                            await stub.Ack(request, timeout=30)
                            break
                        except grpc.aio.AioRpcError:
                            if attempt == 99:
                                raise
                            await asyncio.sleep(0.2)
                    self.acked = target
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            self.failure = error

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._call is not None:
            self._call.cancel()


async def wait_for(predicate: Any, timeout: float, what: str, readers: Sequence[Reader] = ()) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for reader in readers:
            if reader.failure is not None:
                raise RuntimeError(f"reader {reader.name} failed: {reader.failure!r}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def footprint(system: LongevitySystem) -> Dict[str, Any]:
    """Each replica's RSS and data directory, with the load average when they were read."""
    return {
        "rss_mib": {str(i): round((kib or 0) / 1024, 1) for i, kib in rss_by_member(system).items()},
        "data_mib": {str(i): round(dir_bytes(system.replica_dir(i)) / 2**20, 1) for i in sorted(system.addresses)},
        "files_mib": {str(i): files_mib(system.replica_dir(i)) for i in sorted(system.addresses)},
        "load": load_average(),
    }


def files_mib(directory: str) -> Dict[str, float]:
    """What the data directory holds, file by file (raft.db, state.db, their WALs, snapshots)."""
    out = {}
    for folder, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(folder, name)
            try:
                out[os.path.relpath(path, directory)] = round(os.path.getsize(path) / 2**20, 2)
            except OSError:
                pass
    return dict(sorted(out.items()))


def file_kind(name: str) -> str:
    """A data-directory file's kind for the breakdown: snapshot files (named by index, one or
    two at a time, plus one being written) are counted together."""
    return "snapshots/" if name.startswith("snapshots" + os.sep) else name


class PeakSampler:
    """The most each replica's data directory held while a load ran, read every `interval_s`,
    in total and per kind of file. One reading lands anywhere on saw-tooths (each SQLite WAL
    fills up to its checkpoint; the log grows between compactions): the peak is what the disk
    must hold, and what would grow if anything grew with history."""

    def __init__(self, system: LongevitySystem, interval_s: float = 0.25) -> None:
        self.system = system
        self.interval_s = interval_s
        self.samples = 0
        self.total: Dict[str, int] = {}
        self.files: Dict[str, Dict[str, int]] = {}
        self._task: Optional["asyncio.Task[None]"] = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)

    def sample(self) -> None:
        self.samples += 1
        for i in sorted(self.system.addresses):
            directory = self.system.replica_dir(i)
            kinds: Dict[str, int] = {}
            for folder, _, files in os.walk(directory):
                for name in files:
                    path = os.path.join(folder, name)
                    try:
                        size = os.path.getsize(path)
                    except OSError:
                        continue  # removed while walking (a snapshot replaced, a WAL deleted)
                    kind = file_kind(os.path.relpath(path, directory))
                    kinds[kind] = kinds.get(kind, 0) + size
            key = str(i)
            self.total[key] = max(self.total.get(key, 0), sum(kinds.values()))
            peaks = self.files.setdefault(key, {})
            for kind, size in kinds.items():
                peaks[kind] = max(peaks.get(kind, 0), size)

    async def stop(self) -> Dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.sample()
        return {
            "data_mib": {i: round(v / 2**20, 2) for i, v in self.total.items()},
            "files_mib": {i: {k: round(v / 2**20, 2) for k, v in sorted(f.items())} for i, f in self.files.items()},
            "samples": self.samples,
        }


async def settle(system: LongevitySystem, seconds: float) -> None:
    """Let background work (a snapshot being taken, checkpoints) finish before reading sizes:
    until every replica has applied the leader's commit index, then `seconds` more."""
    await system.wait_caught_up(timeout=120)
    await asyncio.sleep(seconds)


async def restart_all(system: LongevitySystem, budget: float) -> Dict[str, Any]:
    """kill -9 of every replica, start them all: time to the first successful write and until
    every replica caught up, RSS after."""
    for i in sorted(system.addresses):
        system.kill(i)
    await system.channels.close()
    system.channels = Channels()
    load_before = load_average()
    wall = time.time()
    started = time.perf_counter()
    system.start_all()
    first_write = await first_write_after(system, started, budget)
    await system.wait_caught_up(timeout=budget)
    caught_up = time.perf_counter() - started
    return {"first_write_s": round(first_write, 3), "all_caught_up_s": round(caught_up, 3), "load": load_before,
            "phases_s": restart_phases(system, wall), "after": footprint(system)}


def restart_phases(system: LongevitySystem, since: float) -> Dict[str, Dict[str, float]]:
    """Where a restart's time goes, per replica, from its log: seconds from the start until it
    had loaded its state ("starting:"), served gRPC, and until the first leader was elected."""
    marks = {"state_loaded": " starting: term ", "serving": " serving gRPC on ", "leader_elected": " is the leader for term "}
    out: Dict[str, Dict[str, float]] = {}
    for i in sorted(system.addresses):
        seen: Dict[str, float] = {}
        for line in system.log(i).splitlines():
            m = LOG_TIME.match(line)
            if m is None:
                continue
            at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if at < since - 0.001:
                continue
            for key, text in marks.items():
                if key not in seen and text in line:
                    seen[key] = round(at - since, 3)
        out[str(i)] = seen
    elected = [v["leader_elected"] for v in out.values() if "leader_elected" in v]
    out["leader_elected"] = {"s": min(elected)} if elected else {}
    return out


def snapshot_intervals(system: LongevitySystem) -> List[Tuple[float, float, int, int, float]]:
    """(start, end, replica, index, MiB) of every snapshot the replicas logged (wall clock)."""
    out = []
    for i in sorted(system.addresses):
        for line in system.log(i).splitlines():
            m = SNAPSHOT_LINE.match(line)
            if m is not None:
                end = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                out.append((end - float(m.group(5)), end, int(m.group(2)), int(m.group(3)), float(m.group(4))))
    return out


def pause_report(latencies: Latencies, intervals: List[Tuple[float, float, int, int, float]]) -> Dict[str, Any]:
    """Writes that completed while some replica was taking a snapshot against the others."""
    spans = sorted((s, e) for s, e, *_ in intervals)
    merged: List[List[float]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    during, steady = [], []
    ends = latencies.ends
    k = 0
    for end, seconds in sorted(zip(ends, latencies.seconds)):
        while k < len(merged) and merged[k][1] < end:
            k += 1
        inside = k < len(merged) and merged[k][0] <= end <= merged[k][1]
        (during if inside else steady).append(seconds)
    total = (max(ends) - min(ends)) if len(ends) > 1 else 0.0
    in_snapshots = sum(min(e, max(ends)) - max(s, min(ends)) for s, e in merged if e > min(ends) and s < max(ends)) if ends else 0.0

    def summary(values: List[float], span: float) -> Dict[str, Any]:
        return {"writes": len(values), "seconds": round(span, 2),
                "writes_per_s": round(len(values) / span, 1) if span > 0 else None,
                "p50_ms": round(percentile(values, 0.5) * 1000, 2), "p99_ms": round(percentile(values, 0.99) * 1000, 2),
                "max_ms": round(max(values) * 1000, 2) if values else None}

    largest = max(intervals, key=lambda t: t[4]) if intervals else None
    return {
        "snapshots": len(intervals),
        "largest_snapshot": None if largest is None else {"replica": largest[2], "index": largest[3], "mib": largest[4],
                                                          "seconds": round(largest[1] - largest[0], 2)},
        "during_snapshots": summary(during, in_snapshots),
        "steady": summary(steady, total - in_snapshots),
    }


async def acknowledged_phase(base: str, args: argparse.Namespace) -> Dict[str, Any]:
    system = LongevitySystem(os.path.join(base, "acknowledged"), args.payload_bytes, args.server_args)
    readers: List[Reader] = []
    try:
        system.start_all()
        leader = await system.wait_for_leader()
        await system.prepare()
        names = [f"reader{k}" for k in range(args.readers)]
        for name in names:
            await system.create_user(name)
        ids = sorted(system.addresses)
        for k, name in enumerate(names):  # readers on every replica, leader and followers
            readers.append(Reader(system, name, system.addresses[ids[k % len(ids)]]))
        for reader in readers:
            await reader.start()
        result: Dict[str, Any] = {"messages": args.messages, "small": args.small, "readers": args.readers}
        sent = 0
        for label, upto in (("after_small", args.small), ("after_all", args.messages)):
            progress(f"acknowledged: sending up to {upto:,} messages to {args.readers} connected readers")
            sampler = PeakSampler(system)
            sampler.start()
            rate = await load(system, upto - sent, args.concurrency, names, f"a{len(result)}")
            sent = upto
            await wait_for(lambda: sum(r.acked for r in readers) >= sent, 600, f"{sent:,} acknowledged", readers)
            await settle(system, args.settle)
            peak = await sampler.stop()
            result[label] = footprint(system)
            result[label]["peak"] = peak
            result[label]["writes_per_s"] = round(rate, 1)
            result[label]["snapshots_taken"] = {str(i): system.log(i).count("took a snapshot at index") for i in ids}
            progress(f"acknowledged: {label}: {result[label]}")
        for reader in readers:
            await reader.stop()
        readers.clear()
        result["ratio"] = {
            what: {i: round(result["after_all"][what][i] / result["after_small"][what][i], 2) for i in result["after_all"][what]}
            for what in ("rss_mib", "data_mib")
        }
        result["ratio"]["peak_data_mib"] = {
            i: round(result["after_all"]["peak"]["data_mib"][i] / result["after_small"]["peak"]["data_mib"][i], 2)
            for i in result["after_all"]["peak"]["data_mib"]
        }
        progress("acknowledged: kill -9 of every replica, then restart")
        result["restart"] = await restart_all(system, 120)
        progress(f"acknowledged: restart: {result['restart']}")
        return result
    finally:
        for reader in readers:
            await reader.stop()
        await system.aclose()
        system.close()


async def unread_phase(base: str, args: argparse.Namespace) -> Dict[str, Any]:
    system = LongevitySystem(os.path.join(base, "unread"), args.payload_bytes, args.server_args)
    try:
        system.start_all()
        await system.wait_for_leader()
        await system.create_user("archive")
        await system.prepare()
        # The baseline: the same restart with nothing stored (process start, TLS, election).
        progress("unread: restart with nothing stored (the baseline)")
        restart_empty = await restart_all(system, 60)
        latencies = Latencies()
        progress(f"unread: storing {args.unread:,} messages for a user who never reads them")
        rate = await load(system, args.unread, args.concurrency, ["archive"], "u", latencies)
        await settle(system, args.settle)
        result: Dict[str, Any] = {"unread": args.unread, "writes_per_s": round(rate, 1), "stored": footprint(system),
                                  "restart_empty": restart_empty}
        result["write_pause"] = pause_report(latencies, snapshot_intervals(system))
        progress(f"unread: stored: {result['stored']}; write pause: {result['write_pause']}")
        progress("unread: kill -9 of every replica, then restart")
        result["restart"] = await restart_all(system, 180)
        result["queued_after_restart"] = await queued(system, "archive")
        if result["queued_after_restart"] != args.unread:
            raise AssertionError(f"after the restart {result['queued_after_restart']} messages are queued, not {args.unread}")
        progress(f"unread: restart: {result['restart']}")
        return result
    finally:
        await system.aclose()
        system.close()


async def queued(system: LongevitySystem, name: str) -> int:
    """How many messages `connect` reports queued for `name` (the stream is then dropped)."""
    leader = await system.wait_for_leader()
    stub = system.channels.stub(system.addresses[leader], chat_pb2_grpc.ChatStub)
    call = stub.Connect(chat_pb2.ConnectRequest(name=name, session_id=uuid.uuid4().hex, credential=BENCH_CREDENTIAL,
                                                client_id=uuid.uuid4().hex, request_seq=1), wait_for_ready=True)
    try:
        event = await asyncio.wait_for(call.read(), 60)
    finally:
        call.cancel()
    return int(event.connected.queued)


async def catch_up_phase(base: str, args: argparse.Namespace, label: str, server_args: Sequence[str]) -> Dict[str, Any]:
    system = LongevitySystem(os.path.join(base, f"catch-up-{label}"), args.payload_bytes, server_args)
    try:
        system.start_all()
        leader = await system.wait_for_leader()
        await system.prepare()
        lagging = min(i for i in system.addresses if i != leader)
        system.kill(lagging)
        progress(f"catch-up by {label}: replica {lagging} down while {args.missed:,} writes are made")
        await load(system, args.missed, args.concurrency, [system.RECIPIENT], f"m{label[0]}")
        await settle(system, 0)
        status = await system.cluster.status(await system.wait_for_leader())
        assert status is not None
        load_before = load_average()
        started = time.perf_counter()
        system.start(lagging)
        await system.cluster.wait_for_applied(status.commit_index, [lagging], timeout=600)
        seconds = time.perf_counter() - started
        text = system.log(lagging)
        result = {"missed": args.missed, "seconds": round(seconds, 3), "load": load_before,
                  "installed_snapshot": "installed snapshot" in text, "leader_first_index": status.first_index,
                  "commit_index": status.commit_index, "lagging": footprint(system)["data_mib"][str(lagging)]}
        progress(f"catch-up by {label}: {result}")
        return result
    finally:
        await system.aclose()
        system.close()


def phases_text(restart: Dict[str, Any]) -> str:
    phases = restart.get("phases_s", {})
    loaded = [v["state_loaded"] for k, v in phases.items() if k.isdigit() and "state_loaded" in v]
    elected = phases.get("leader_elected", {}).get("s")
    return f"(replicas loaded their state after {min(loaded, default=float('nan'))}-{max(loaded, default=float('nan'))} s, a leader at {elected} s)"


def table(results: Dict[str, Any]) -> str:
    lines = []
    a = results.get("acknowledged")
    if a:
        lines.append(f"acknowledged ({a['readers']} readers acknowledging): per replica, after {a['small']:,} / after {a['messages']:,}")
        for what in ("rss_mib", "data_mib"):
            small, full, ratio = a["after_small"][what], a["after_all"][what], a["ratio"][what]
            lines.append(f"  {what:<9} " + ", ".join(f"r{i}: {small[i]} -> {full[i]} ({ratio[i]}x)" for i in sorted(full))
                         + f"   [load {a['after_small']['load']} / {a['after_all']['load']}]")
        peak_small, peak_all = a["after_small"]["peak"], a["after_all"]["peak"]
        lines.append(f"  {'peak data':<9} " + ", ".join(
            f"r{i}: {peak_small['data_mib'][i]} -> {peak_all['data_mib'][i]} ({a['ratio']['peak_data_mib'][i]}x)"
            for i in sorted(peak_all["data_mib"]))
            + f"   [the most each held while the first {a['small']:,} / the rest were written;"
            f" {peak_small['samples']} / {peak_all['samples']} readings]")
        first = sorted(peak_all["data_mib"])[0]
        lines.append(f"  r{first}'s files (MiB), after {a['small']:,} / after {a['messages']:,}; peak while written:")
        for moment, label in (("at the end", "files_mib"), ("peak", "peak")):
            small = _by_kind(a["after_small"]["files_mib"][first]) if label == "files_mib" else peak_small["files_mib"][first]
            full = _by_kind(a["after_all"]["files_mib"][first]) if label == "files_mib" else peak_all["files_mib"][first]
            lines.append(f"    {moment:<10} " + ", ".join(
                f"{kind} {small.get(kind, 0)} / {full.get(kind, 0)}" for kind in sorted(set(small) | set(full))))
        r = a["restart"]
        lines.append(f"  restart -> first write {r['first_write_s']} s {phases_text(r)}, all caught up {r['all_caught_up_s']} s, "
                     f"RSS after {r['after']['rss_mib']} [load {r['load']}]")
    u = results.get("unread")
    if u:
        lines.append(f"unread ({u['unread']:,} stored for one user): RSS {u['stored']['rss_mib']} MiB, "
                     f"data {u['stored']['data_mib']} MiB [load {u['stored']['load']}]")
        r, e = u["restart"], u["restart_empty"]
        lines.append(f"  restart -> first write {r['first_write_s']} s {phases_text(r)}, all caught up {r['all_caught_up_s']} s, "
                     f"RSS after {r['after']['rss_mib']} MiB [load {r['load']}]; queued after: {u['queued_after_restart']:,}")
        lines.append(f"  baseline, the same restart with nothing stored: first write {e['first_write_s']} s {phases_text(e)}, "
                     f"RSS after {e['after']['rss_mib']} MiB [load {e['load']}]")
        p = u["write_pause"]
        lines.append(f"  write pause ({p['snapshots']} snapshots, largest {p['largest_snapshot']}):")
        for key in ("steady", "during_snapshots"):
            s = p[key]
            lines.append(f"    {key:<17} {s['writes']:>8,} writes in {s['seconds']:>7} s = {s['writes_per_s']}/s, "
                         f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, max {s['max_ms']} ms")
    c = results.get("catch_up")
    if c:
        for label, r in c.items():
            lines.append(f"catch-up of {r['missed']:,} missed writes by {label}: {r['seconds']} s "
                         f"(installed a snapshot: {r['installed_snapshot']}) [load {r['load']}]")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000, help="acknowledged messages (default 10^6)")
    parser.add_argument("--small", type=int, default=10_000, help="the first measurement point (default 10^4)")
    parser.add_argument("--unread", type=int, default=1_000_000, help="unread messages stored (default 10^6)")
    parser.add_argument("--missed", type=int, default=100_000, help="writes a lagging replica misses (default 10^5)")
    parser.add_argument("--quick", action="store_true", help="10^5 acknowledged and unread, 10^4 missed")
    parser.add_argument("--smoke", action="store_true",
                        help="a few seconds: tiny counts and --snapshot-entries 100 (to check the benchmark works)")
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=256, help="writes in flight while loading")
    parser.add_argument("--payload-bytes", type=int, default=64)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait before reading sizes")
    parser.add_argument("--snapshot-entries", type=int, default=None, help="passed to the replicas (default: theirs)")
    parser.add_argument("--snapshot-keep", type=int, default=None, help="passed to the replicas (default: theirs)")
    parser.add_argument("--phases", default="acknowledged,unread,catch-up")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "longevity.json"))
    args = parser.parse_args()
    if args.quick:
        args.messages, args.unread, args.missed = 100_000, 100_000, 10_000
    if args.smoke:
        args.messages, args.small, args.unread, args.missed = 1_000, 200, 1_000, 600
        args.concurrency, args.readers, args.settle = 32, 3, 0.5
        args.snapshot_entries = args.snapshot_entries or 100
        args.snapshot_keep = args.snapshot_keep if args.snapshot_keep is not None else 20
    args.server_args = []
    if args.snapshot_entries is not None:
        args.server_args += ["--snapshot-entries", str(args.snapshot_entries)]
    if args.snapshot_keep is not None:
        args.server_args += ["--snapshot-keep", str(args.snapshot_keep)]
    phases = set(args.phases.split(","))
    keep_grpc_aio_initialized()
    base = tempfile.mkdtemp(prefix="longevity-bench-")
    results: Dict[str, Any] = {"args": {k: v for k, v in vars(args).items()}, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "load_at_start": load_average()}

    async def run() -> None:
        if "acknowledged" in phases:
            results["acknowledged"] = await acknowledged_phase(base, args)
        if "unread" in phases:
            results["unread"] = await unread_phase(base, args)
        if "catch-up" in phases:
            replay_args = [a for a in args.server_args]
            replay_args = _without(replay_args, "--snapshot-entries") + ["--snapshot-entries", "0"]
            results["catch_up"] = {
                "InstallSnapshot": await catch_up_phase(base, args, "snapshot", args.server_args),
                "log replay": await catch_up_phase(base, args, "replay", replay_args),
            }

    completed = False
    try:
        asyncio.run(run())
        completed = True
    finally:
        if completed:
            shutil.rmtree(base, ignore_errors=True)
        else:
            progress(f"failed: the replicas' data and logs are kept in {base}")
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(table(results))


def _by_kind(files: Dict[str, float]) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for name, mib in files.items():
        kind = file_kind(name)
        out[kind] = round(out.get(kind, 0) + mib, 2)
    return out


def _without(args: List[str], flag: str) -> List[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        else:
            out.append(a)
    return out


if __name__ == "__main__":
    main()
