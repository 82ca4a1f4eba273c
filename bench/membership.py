"""Membership changes on a real cluster: how long a new replica takes to become a voter with a
history behind it, and the write pause each change causes, next to the failover pause.

    python3 bench/membership.py [--stored 100000] [--checkpoints N,N,...] [--snapshot-entries 10000]
                                [--fill-concurrency 64]

A 3-replica cluster (admin token, snapshots every --snapshot-entries) stores --stored messages
(64 bytes, --fill-concurrency sends in flight; a progress line every 10 s). Then one writer sends at concurrency 1 throughout, and in turn:
replica 4 is added (learner -> caught up by snapshot, then log -> promoted), replica 5 too, a
follower is removed, the leader is removed (it hands leadership over first), and finally the
leader is killed with kill -9 (the baseline: the failover pause). For each: the time the
change took, and the pause = the longest gap between two acknowledged writes of the writer
that overlaps the change; an add is also split into its steps (added as a learner, caught up,
promoted) where the operator's client reports them. The steady state's longest gap (before any
change) is printed too, and every row carries the machine's load average when it was measured.

With --checkpoints (e.g. 100000,300000 on the way to --stored 1000000), at each smaller history
one replica is added (its time to a voter and each step's pause) and removed again, and the
leader is killed (the failover baseline at that size) and restarted, so a long run reports the
smaller sizes as it reaches them (a "measured:" line each, on stderr).
"""
import argparse
import asyncio
import os
import sys
import tempfile
import time
from typing import List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.cluster import BenchCluster  # noqa: E402
from bench.common import keep_grpc_aio_initialized, progress  # noqa: E402
from replichat.client.admin import AdminError, MembershipClient  # noqa: E402
from replichat.client.api import ChatClient  # noqa: E402
from replichat.errors import ChatError  # noqa: E402
from replichat.server.membership_admin import read_token_file  # noqa: E402


Row = Tuple[int, str, float, float, str]  # messages stored, change, took (s), write pause (s), load average


def row(stored: int, label: str, took: float, pause: float) -> Row:
    return stored, label, took, pause, load_average()


def format_row(r: Row) -> str:
    stored, label, took, pause, load = r
    return f"{stored:>10,} {label:<52} {took:>9.2f} {pause:>16.3f} {load:>13}"


class Writer:
    """Concurrency-1 writes; the completion time of each acknowledged one."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.done: List[float] = []
        self._stop = False
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        n = 0
        while not self._stop:
            n += 1
            try:
                await self.client.send("sink", f"w{n}")
                self.done.append(time.monotonic())
            except Exception as error:  # an unknown outcome is a gap like any other
                progress(f"writer: {error}")

    def longest_gap(self, start: float, end: float) -> float:
        """The longest gap between acknowledged writes overlapping [start, end]."""
        times = self.done
        gaps = [b - a for a, b in zip(times, times[1:]) if b >= start and a <= end]
        return max(gaps, default=end - start)

    async def stop(self) -> None:
        self._stop = True
        await self.task


async def fill(cluster: BenchCluster, start: int, end: int, concurrency: int) -> None:
    """Messages start..end-1 for "sink" (64 bytes each, `concurrency` in flight)."""
    async with ChatClient(cluster.servers, deadline=60) as client:
        queue = iter(range(start, end))
        acknowledged = [0]  # for the progress lines

        async def worker() -> None:
            for n in queue:
                await client.send("sink", f"{n:064d}")
                acknowledged[0] += 1

        async def report() -> None:
            while True:
                await asyncio.sleep(10)
                done = acknowledged[0]
                progress(f"stored {start + done}/{end} messages ({done / (time.monotonic() - started):.0f}/s, "
                         f"load average {load_average()})")

        started = time.monotonic()
        reporter = asyncio.ensure_future(report())
        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            reporter.cancel()
        progress(f"stored {end} messages ({end - start} in {time.monotonic() - started:.1f} s, "
                 f"load average {load_average()})")


class Bench:
    """The cluster, the operator's client (each step it reports is timed) and the writer."""

    def __init__(self, cluster: BenchCluster) -> None:
        self.cluster = cluster
        self.said: List[Tuple[float, str]] = []
        self.rows: List[Row] = []
        self.stored = 0
        self.operator = MembershipClient(cluster.servers, admin_token=read_token_file(cluster.admin_token_file),
                                         say=self.say)
        self.writer_client = ChatClient(cluster.servers, deadline=60)
        self.writer = Writer(self.writer_client)

    def say(self, text: str) -> None:
        self.said.append((time.monotonic(), text))
        progress(text)

    def add_row(self, label: str, took: float, pause: float) -> None:
        self.rows.append(row(self.stored, label, took, pause))
        progress("measured: " + format_row(self.rows[-1]))

    async def steady(self) -> None:
        await asyncio.sleep(3.0)  # the steady state the pauses compare to (a measurement window)
        now = time.monotonic()
        self.add_row("steady state (3 s, no change)", 0.0, self.writer.longest_gap(now - 3.0, now))

    async def add(self, new: int) -> None:
        """Start replica `new` with --join and add it: time to a voter, each step's write pause."""
        cluster, writer = self.cluster, self.writer
        cluster.start_joining(new)
        await cluster_ready(cluster, new)
        started = time.monotonic()
        await self.operator.add(new, cluster.addresses[new], cluster.peer_addresses[new], catch_up_timeout_s=1800)
        ended = time.monotonic()
        self.add_row(f"add replica {new} (learner, catch up, promote)", ended - started,
                     writer.longest_gap(started, ended))
        # Its steps, split where the operator's client reported them.
        learner = step_time(self.said, f"added replica {new} as a learner", started)
        caught_up = step_time(self.said, f"replica {new} caught up", started)
        for label, a, b in (("  add it as a learner", started, learner),
                            ("  catch it up (snapshot, then log)", learner, caught_up),
                            ("  promote it to voter", caught_up, ended)):
            self.add_row(label, b - a, writer.longest_gap(a, b))

    async def remove(self, target: int, label: str) -> None:
        started = time.monotonic()
        await self.operator.remove(target)
        ended = time.monotonic()
        await asyncio.sleep(0.5)  # let writes after the change land before measuring
        self.add_row(label, ended - started, self.writer.longest_gap(started, ended + 0.5))
        self.cluster.kill(target)

    async def failover(self) -> int:
        """kill -9 of the leader (the baseline): the writer's pause until it has 20 more writes."""
        cluster = self.cluster
        leader = await cluster.wait_for_leader(among=[i for i in cluster.alive()])
        started = time.monotonic()
        cluster.kill(leader)
        count = len(self.writer.done)
        give_up = time.monotonic() + 60
        while len(self.writer.done) < count + 20:
            if time.monotonic() > give_up:
                raise RuntimeError(f"no writes for 60 s after killing leader {leader}; logs in {cluster.data_dir}")
            await asyncio.sleep(0.05)
        self.add_row(f"failover: kill -9 leader {leader} (baseline)", 0.0,
                     self.writer.longest_gap(started, time.monotonic()))
        return leader

    async def close(self) -> None:
        await self.writer.stop()
        await self.writer_client.close()
        await self.operator.close()


async def run(args: argparse.Namespace, base: str, rows: List[Row]) -> None:
    """Measure into `rows` (the caller's list: what was measured survives a failure later on)."""
    cluster = BenchCluster(base, 3, admin_token=True, server_args=[
        "--max-creates-per-minute", "100000000", "--snapshot-entries", str(args.snapshot_entries)])
    bench: Optional[Bench] = None
    try:
        cluster.start_all()
        await cluster.wait_for_leader()
        async with ChatClient(cluster.servers) as client:
            await client.create("sink")
        bench = Bench(cluster)
        bench.rows = rows
        new = 4
        # At each checkpoint: one replica added (time to a voter), then removed again.
        for size in args.checkpoints:
            await fill(cluster, bench.stored, size, args.fill_concurrency)
            bench.stored = size
            await bench.steady()
            await bench.add(new)
            await bench.remove(new, f"remove replica {new} again (a follower)")
            new += 1
            killed = await bench.failover()
            cluster.start(killed)  # back with its data, caught up before the history grows on
            status = await cluster.status(await cluster.wait_for_leader(among=[i for i in (1, 2, 3) if i != killed]))
            await cluster.wait_for_applied(status.commit_index if status else 0, [killed], timeout=600)
        await fill(cluster, bench.stored, args.stored, args.fill_concurrency)
        bench.stored = args.stored
        await bench.steady()
        added = [new, new + 1]
        for replica in added:
            await bench.add(replica)

        # The writer learns the new members (clients ask every 2 s): the pauses below are the
        # changes', not a client that could only reach replicas that are gone.
        give_up = time.monotonic() + 30
        while not {cluster.addresses[i] for i in added} <= set(bench.writer_client.servers):
            if time.monotonic() > give_up:
                raise RuntimeError(f"the writer did not learn replicas {added}: {bench.writer_client.servers}")
            await asyncio.sleep(0.1)
        leader = await cluster.wait_for_leader()
        follower = next(i for i in (1, 2, 3) if i != leader)
        await bench.remove(follower, f"remove follower {follower}")
        await bench.remove(leader, f"remove leader {leader}")

        await bench.failover()
    finally:
        if bench is not None:
            await bench.close()
        cluster.close()


def step_time(said: List[Tuple[float, str]], prefix: str, after: float) -> float:
    """When the operator's client reported the step starting with `prefix` (after `after`)."""
    for at, text in said:
        if at >= after and text.startswith(prefix):
            return at
    raise RuntimeError(f"the operator's client never reported {prefix!r}")


async def cluster_ready(cluster: BenchCluster, node_id: int) -> None:
    """The new replica's gRPC port answers (it is up and waiting to be added)."""
    deadline = time.monotonic() + 30
    while await cluster.status(node_id) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"replica {node_id} did not start")
        await asyncio.sleep(0.1)


def load_average() -> str:
    """The machine's 1-minute load average (it is shared: every figure is printed with it)."""
    return f"{os.getloadavg()[0]:.1f}"


def checkpoints(text: str) -> List[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if sizes != sorted(set(sizes)) or any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError("expected increasing message counts, e.g. 100000,300000")
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stored", type=int, default=100_000, help="messages stored before the changes (default %(default)s)")
    parser.add_argument("--checkpoints", type=checkpoints, default=[], metavar="N,N,...",
                        help="smaller histories, on the way to --stored, at which one replica is added (time to a "
                             "voter, each step's write pause) and removed again, and the leader is killed and "
                             "restarted (the failover pause at that size) (default: none)")
    parser.add_argument("--snapshot-entries", type=int, default=10_000,
                        help="the replicas' --snapshot-entries (default %(default)s)")
    parser.add_argument("--fill-concurrency", type=int, default=64,
                        help="sends in flight while storing the history (default %(default)s)")
    parser.add_argument("--keep", metavar="DIR", help="run in DIR and keep the replicas' data and logs there")
    args = parser.parse_args()
    if args.checkpoints and args.checkpoints[-1] >= args.stored:
        parser.error("--checkpoints must all be below --stored")
    keep_grpc_aio_initialized()
    rows: List[Row] = []
    failed = ""
    try:
        if args.keep:
            asyncio.run(run(args, args.keep, rows))
        else:
            with tempfile.TemporaryDirectory(prefix="bench-membership-") as base:
                asyncio.run(run(args, base, rows))
    except (RuntimeError, AssertionError, ChatError, AdminError) as error:
        failed = f"{type(error).__name__}: {error}"
    print("\nmembership changes, 3 replicas, one writer at concurrency 1")
    print(f"{'stored':>10} {'change':<52} {'took (s)':>9} {'write pause (s)':>16} {'load average':>13}")
    for r in rows:
        print(format_row(r))
    if failed:
        print(f"FAILED before the end (the rows above were measured): {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
