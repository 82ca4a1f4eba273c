"""Issue 13's real-process proof at full size: grow a loaded cluster, then kill -9 two of the
replicas it started with, while clients send throughout.

    python3 bench/growkill.py [--stored 100000] [--senders 4] [--snapshot-entries 10000]

1. 3 replicas (real processes on 127.0.0.1, peer TLS, authentication, an admin token) store
   --stored messages for the user `archive`, sent by --loaders (64) named senders at once (progress lines
   while they load). Nobody reads them yet: they are the state a new replica must receive.
2. The clients that live through the rest are made now, with the original three addresses
   only, and are never restarted: --senders senders sending numbered messages to `inbox` one at
   a time, a receiver connected as `inbox` acknowledging what it is shown, and a reader for
   `archive` (it connects at the end).
3. Replicas 4 and 5 start with --join and are added with the real command line,
   `python3 server.py members add ID=HOST:PORT --peer HOST:PORT --servers ... --admin-token-file
   ...` (learner, caught up by snapshot then log, promoted), while the senders send.
4. kill -9 of two of the original three, the leader among them. The senders must go on
   (--after-kill more acknowledged sends each).
5. The senders stop; the reader connects as `archive`. Every acknowledged message must be
   shown exactly once, in each sender's order, under the seq it was acknowledged with; nothing
   unacknowledged twice; nothing never sent (bench/exactly_once.py). Any miss: the problems
   are printed and the exit status is 1.

--plant lose|duplicate hides one shown archive message from the check, or shows one twice
(under a new seq), to see the check fail (it must exit 1 and name the message).
"""
import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.cluster import BenchCluster  # noqa: E402
from bench.common import guarded, keep_grpc_aio_initialized, progress  # noqa: E402
from bench.exactly_once import Delivered, Sent, Verdict, check_deliveries  # noqa: E402
from replichat.client.admin import MembershipClient  # noqa: E402
from replichat.client.api import ChatClient  # noqa: E402
from replichat.errors import ChatError  # noqa: E402
from replichat.server.membership_admin import read_token_file  # noqa: E402
from replichat.proto import chat_pb2  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHIVE, INBOX = "archive", "inbox"
TEXT_BYTES = 64
Say = Callable[[str], None]


class ScenarioFailed(Exception):
    """The scenario could not go on (no progress, a command failed): the message says where."""


class Outcome(NamedTuple):
    archive: Verdict
    inbox: Verdict
    killed: List[int]
    voters: List[int]
    add_seconds: Dict[int, float]
    installed: Dict[int, str]  # each added replica's "installed snapshot" log line ("": none)
    archive_sent: Dict[str, List[Sent]]  # what the check was given, for a test to plant faults in
    archive_shown: List[Delivered]


def padded(name: str, n: int) -> str:
    text = f"{name}:{n}:"
    return text + "x" * max(0, TEXT_BYTES - len(text))


def load_average() -> str:
    return f"{os.getloadavg()[0]:.1f}"


class Sender:
    """One named user sending numbered messages to `recipient`, one at a time, until stopped;
    remembers each in order with the seq it was acknowledged with (None: outcome unknown)."""

    def __init__(self, client: ChatClient, name: str, recipient: str, say: Say) -> None:
        self.client, self.name, self.recipient, self.say = client, name, recipient, say
        self.sent: List[Sent] = []
        self.acknowledged = 0
        self._stop = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            text = padded(self.name, n)
            n += 1
            try:
                seq: Optional[int] = await self.client.send(self.recipient, text, sender=self.name)
                self.acknowledged += 1
            except ChatError as error:  # outcome unknown: it may or may not be delivered, once
                seq = None
                self.say(f"{self.name}: {text.rstrip('x')} not acknowledged: {error.message[:100]}")
            self.sent.append(Sent(text, seq))

    async def stop(self) -> None:
        self._stop.set()
        await self.task


class Reader:
    """A session of `name` that records every delivery shown and acknowledges it."""

    def __init__(self, client: ChatClient, name: str) -> None:
        self.client, self.name = client, name
        self.shown: List[Delivered] = []
        self.task: Optional["asyncio.Task[None]"] = None

    async def start(self) -> None:
        session = await self.client.connect(self.name)

        async def run() -> None:
            async for event in session:
                if isinstance(event, chat_pb2.Delivery):
                    self.shown.append(Delivered(int(event.seq), event.sender, event.text))
                    session.ack(event.seq)

        self.task = asyncio.ensure_future(run())

    async def shown_all(self, sent: Dict[str, Sequence[Sent]], timeout: float, say: Say) -> None:
        """Wait until every acknowledged message was shown (bounded: the check reports what is missing)."""
        missing = {(sender, m.text) for sender, messages in sent.items() for m in messages if m.seq is not None}
        looked_at = 0  # deliveries already taken off `missing` (10^5 of them: not rescanned each turn)
        deadline = time.monotonic() + timeout
        last_report = time.monotonic()
        while True:
            for delivery in self.shown[looked_at:]:
                missing.discard((delivery.sender, delivery.text))
            looked_at = len(self.shown)
            if not missing:
                return
            if self.task is not None and self.task.done():
                raise ScenarioFailed(f"{self.name}'s session ended: {self.task.exception()!r}")
            if time.monotonic() > deadline:
                say(f"{self.name}: {len(missing)} acknowledged messages still not shown after {timeout:.0f} s")
                return
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                say(f"{self.name}: shown {len(self.shown):,}, waiting for {len(missing):,} more")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.05)


async def senders_progress(senders: List[Sender], count: int, timeout: float, what: str) -> None:
    """Every sender gets `count` more sends acknowledged (the cluster takes writes for each)."""
    targets = [s.acknowledged + count for s in senders]

    def done() -> bool:
        for sender in senders:
            if sender.task.done():
                raise ScenarioFailed(f"sender {sender.name} stopped {what}: {sender.task.exception()!r}")
        return all(s.acknowledged >= t for s, t in zip(senders, targets))

    await wait_for(done, timeout, f"{count} more acknowledged sends from each sender {what}")


async def load_history(servers: List[str], stored: int, loaders: int, say: Say) -> Dict[str, List[Sent]]:
    """`stored` messages to ARCHIVE from `loaders` named senders at once, with progress lines."""
    sent: Dict[str, List[Sent]] = {}
    async with ChatClient(servers, deadline=60) as client:
        names = [f"h{k}" for k in range(loaders)]
        for name in names:
            await client.create(name)
        per_loader = [stored // loaders + (1 if k < stored % loaders else 0) for k in range(loaders)]
        done = [0]

        async def loader(name: str, count: int) -> None:
            messages = sent.setdefault(name, [])
            for n in range(count):
                text = padded(name, n)
                try:
                    seq: Optional[int] = await client.send(ARCHIVE, text, sender=name)
                except ChatError as error:
                    seq = None
                    say(f"{name}: {text.rstrip('x')} not acknowledged: {error.message[:100]}")
                messages.append(Sent(text, seq))
                done[0] += 1

        async def report() -> None:
            while True:
                await asyncio.sleep(5)
                rate = done[0] / (time.monotonic() - started)
                left = (stored - done[0]) / rate if rate else float("inf")
                say(f"stored {done[0]:,}/{stored:,} messages ({rate:.0f}/s, about {left:.0f} s left; "
                    f"load average {load_average()})")

        started = time.monotonic()
        reporter = asyncio.ensure_future(report())
        try:
            await asyncio.gather(*(loader(name, count) for name, count in zip(names, per_loader)))
        finally:
            reporter.cancel()
        say(f"stored {stored:,} messages in {time.monotonic() - started:.1f} s (load average {load_average()})")
    return sent


async def run_command(args: List[str], say: Say, timeout: float) -> None:
    """`python3 server.py ARGS`, its output shown line by line; a non-zero exit fails the scenario."""
    command = guarded([sys.executable, os.path.join(REPO, "server.py"), *args])
    say("$ server.py " + " ".join(args))
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT, cwd=REPO)
    assert process.stdout is not None

    async def relay() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            say("  | " + line.decode(errors="replace").rstrip())

    try:
        await asyncio.wait_for(asyncio.gather(relay(), process.wait()), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise ScenarioFailed(f"server.py {' '.join(args[:2])} did not finish within {timeout:.0f} s") from None
    if process.returncode != 0:
        raise ScenarioFailed(f"server.py {' '.join(args[:2])} exited with {process.returncode}")


async def replica_up(cluster: BenchCluster, node_id: int) -> None:
    deadline = time.monotonic() + 60
    while await cluster.status(node_id) is None:
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"replica {node_id} did not start: see {cluster.log_path(node_id)}")
        await asyncio.sleep(0.1)


async def scenario(cluster: BenchCluster, *, stored: int, senders: int, after_kill: int,
                   catch_up_timeout: float, say: Say, loaders: int = 64, plant: str = "") -> Outcome:
    await cluster.wait_for_leader(timeout=60)
    originals = sorted(cluster.addresses)
    servers = list(cluster.servers)  # all the clients are ever given
    async with ChatClient(servers) as setup:
        for name in [ARCHIVE, INBOX] + [f"s{k}" for k in range(1, senders + 1)]:
            await setup.create(name)
    archive_sent = await load_history(servers, stored, loaders, say)

    # The clients of the rest of the run: made now, with the original addresses, never restarted.
    sender_clients = [ChatClient(servers, deadline=60) for _ in range(senders)]
    inbox_client, archive_client = ChatClient(servers, deadline=60), ChatClient(servers, deadline=120)
    operator = MembershipClient(servers, admin_token=read_token_file(cluster.admin_token_file))
    inbox_reader, archive_reader = Reader(inbox_client, INBOX), Reader(archive_client, ARCHIVE)
    live: List[Sender] = []
    try:
        await archive_client.list("")  # a client in use from the start, like the others
        await inbox_reader.start()
        live = [Sender(client, f"s{k}", INBOX, say) for k, client in enumerate(sender_clients, 1)]
        await senders_progress(live, 10, 60, "before the changes")

        add_seconds: Dict[int, float] = {}
        for new in (4, 5):
            cluster.start_joining(new)
            await replica_up(cluster, new)
            started = time.monotonic()
            await run_command(["members", "add", f"{new}={cluster.addresses[new]}", "--peer", cluster.peer_addresses[new],
                               "--servers", ",".join(servers), "--admin-token-file", cluster.admin_token_file,
                               "--catch-up-timeout", str(catch_up_timeout)], say, catch_up_timeout + 60)
            add_seconds[new] = time.monotonic() - started
            await senders_progress(live, 5, 60, f"after adding replica {new}")
        await run_command(["members", "--servers", ",".join(servers)], say, 30)
        view = await operator.members()
        voters = sorted(int(m.id) for m in view.members if m.voter)
        if voters != [1, 2, 3, 4, 5]:
            raise ScenarioFailed(f"after the adds the voters are {voters}, not 1-5")

        leader = await cluster.wait_for_leader(timeout=30)
        killed = ([leader] if leader in originals else []) + [i for i in originals if i != leader]
        killed = killed[:2]
        for node_id in killed:
            cluster.kill(node_id)
        say(f"kill -9 of replicas {killed} (leader {leader}) at load average {load_average()}; "
            f"{sum(s.acknowledged for s in live):,} live sends acknowledged so far")
        await senders_progress(live, after_kill, 120, "after the kill")
        say(f"the senders went on: {sum(s.acknowledged for s in live):,} live sends acknowledged")
        for sender in live:
            await sender.stop()

        inbox_sent = {s.name: s.sent for s in live}
        await inbox_reader.shown_all(inbox_sent, 60, say)
        say(f"reading {ARCHIVE}'s {stored:,} messages from the replicas left")
        await archive_reader.start()
        await archive_reader.shown_all(archive_sent, 120 + stored / 200, say)
        await asyncio.sleep(1.0)  # a late duplicate would be shown in this second
        archive_shown = planted(archive_reader.shown, plant, say)
        return Outcome(archive=check_deliveries(archive_sent, archive_shown),
                       inbox=check_deliveries(inbox_sent, inbox_reader.shown),
                       killed=killed, voters=voters, add_seconds=add_seconds,
                       installed={new: installed_snapshot(cluster, new) for new in add_seconds},
                       archive_sent=archive_sent, archive_shown=archive_shown)
    finally:
        for sender in live:
            await sender.stop()
        inbox_reader.stop()
        archive_reader.stop()
        for client in sender_clients + [inbox_client, archive_client]:
            await client.close()
        await operator.close()


def installed_snapshot(cluster: BenchCluster, node_id: int) -> str:
    """The replica's log line saying it installed a snapshot from the leader ("" if none)."""
    with open(cluster.log_path(node_id), errors="replace") as f:
        return next((line.strip() for line in f if f"replica {node_id} installed snapshot" in line), "")


def planted(shown: List[Delivered], plant: str, say: Say) -> List[Delivered]:
    """What the check is given: what was shown, or with a planted fault the check must catch."""
    if not plant or not shown:
        return shown
    victim = shown[len(shown) // 2]
    if plant == "lose":
        say(f"PLANTED: the check is not told that {victim.sender}: {victim.text.rstrip('x')} was shown")
        return [d for d in shown if d is not victim]
    say(f"PLANTED: {victim.sender}: {victim.text.rstrip('x')} shown a second time")
    return shown + [victim._replace(seq=max(d.seq for d in shown) + 1)]


def report(outcome: Outcome) -> List[str]:
    lines = [f"killed with kill -9: replicas {outcome.killed}; voters before the kill: {outcome.voters}"]
    for new, seconds in outcome.add_seconds.items():
        how = outcome.installed[new].split("installed ", 1)[-1] if outcome.installed[new] else "no snapshot installed"
        lines.append(f"members add {new}: {seconds:.1f} s to a voter (caught up by: {how})")
    for name, verdict in ((ARCHIVE, outcome.archive), (INBOX, outcome.inbox)):
        lines.append(f"{name}: {verdict.acknowledged:,} acknowledged, {verdict.unacknowledged} unacknowledged, "
                     f"{verdict.shown:,} shown: " + ("every acknowledged message exactly once, in order"
                                                    if verdict.ok else "; ".join(verdict.problems)))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stored", type=int, default=100_000, help="messages stored before the changes (default %(default)s)")
    parser.add_argument("--senders", type=int, default=4, help="clients sending throughout (default %(default)s)")
    parser.add_argument("--after-kill", type=int, default=50,
                        help="acknowledged sends each sender must make after the kill (default %(default)s)")
    parser.add_argument("--snapshot-entries", type=int, default=10_000,
                        help="the replicas' --snapshot-entries (default %(default)s)")
    parser.add_argument("--snapshot-keep", type=int, default=5_000,
                        help="the replicas' --snapshot-keep (default %(default)s)")
    parser.add_argument("--loaders", type=int, default=64,
                        help="named senders storing the history at once (default %(default)s)")
    parser.add_argument("--catch-up-timeout", type=float, default=600.0,
                        help="members add --catch-up-timeout (default %(default)s)")
    parser.add_argument("--plant", choices=("lose", "duplicate"),
                        help="hide one shown archive message from the check, or show one twice: the run must fail")
    parser.add_argument("--keep", metavar="DIR", help="run in DIR and keep the replicas' data and logs there")
    args = parser.parse_args()
    keep_grpc_aio_initialized()
    base = args.keep or tempfile.mkdtemp(prefix="bench-growkill-")
    cluster = BenchCluster(base, 3, admin_token=True, server_args=[
        "--max-creates-per-minute", "100000000", "--max-streams-per-address", "100000",
        "--snapshot-entries", str(args.snapshot_entries), "--snapshot-keep", str(args.snapshot_keep)])
    started = time.monotonic()
    try:
        cluster.start_all()
        outcome = asyncio.run(scenario(cluster, stored=args.stored, senders=args.senders, after_kill=args.after_kill,
                                       catch_up_timeout=args.catch_up_timeout, say=progress, loaders=args.loaders,
                                       plant=args.plant or ""))
    except ScenarioFailed as error:
        print(f"FAILED: {error}; replica logs in {base}" if args.keep else f"FAILED: {error}\n{cluster.logs()}")
        return 1
    finally:
        cluster.close()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\n3 replicas holding {args.stored:,} messages -> add 2 -> kill -9 two of the original three, "
          f"{args.senders} senders throughout ({time.monotonic() - started:.0f} s, load average {load_average()})")
    for line in report(outcome):
        print(line)
    ok = outcome.archive.ok and outcome.inbox.ok
    print("OK" if ok else "FAILED: an acknowledged message was lost, or a message shown twice, out of order or never sent")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
