"""The campaign: a 5-replica ChaosCluster, clients recording a history, a seeded nemesis,
then heal, convergence and the checks."""
import asyncio
import random
import shutil
import signal
import tempfile
import time
from typing import Dict, List, NamedTuple, Optional, Set, Tuple

from replichat.chaos.cluster import ChaosCluster
from replichat.chaos.disk_faults import flip_log_entry, undo_flip
from replichat.client.admin import AdminError, MembershipClient
from replichat.client.api import ChatClient
from replichat.client.credentials import MemoryCredentials
from replichat.errors import ChatError
from replichat.server.membership_admin import read_token_file
from replichat.proto import chat_pb2
from replichat.sim.chat_model import OK, Create, ListUsers, Send
from replichat.sim.linearizability import Operation, check_history

MAX_FAULTY = 2
RECEIVER = "inbox"
SENDERS = ("s1", "s2", "s3")
Link = Tuple[int, int]


class Fault(NamedTuple):
    kind: str
    nodes: Tuple[int, ...]
    links: frozenset  # links this fault cuts (partitions only)
    until: float


class CampaignResult(NamedTuple):
    seed: int
    operations: int
    sends_acked: int
    sends_unknown: int
    lists: int
    delivered: int
    lost: List[str]
    duplicated: List[str]
    phantom: List[str]
    order_violations: List[str]
    seq_mismatches: List[str]
    faults: Dict[str, int]
    leader_changes: int
    longest_write_pause: float
    converged: bool
    applied_indexes: Dict[int, int]
    linearizable: bool
    linearizability: str
    errors: List[str]
    corruptions_detected: int = 0

    @property
    def ok(self) -> bool:
        return (not self.lost and not self.duplicated and not self.phantom and not self.order_violations
                and not self.seq_mismatches and self.converged and self.linearizable and not self.errors)

    def table(self) -> str:
        rows = [
            ("seed", self.seed),
            ("operations recorded", self.operations),
            ("sends acknowledged", self.sends_acked),
            ("sends unknown (error/timeout)", self.sends_unknown),
            ("lists", self.lists),
            ("messages delivered (distinct)", self.delivered),
            ("lost (acked, never delivered)", len(self.lost)),
            ("duplicated (one text, 2+ seqs)", len(self.duplicated)),
            ("phantom (delivered, never sent)", len(self.phantom)),
            ("per-sender order violations", len(self.order_violations)),
            ("ack seq != delivered seq", len(self.seq_mismatches)),
        ]
        rows += [(f"faults: {kind}", n) for kind, n in sorted(self.faults.items())]
        rows += [
            ("leader changes seen", self.leader_changes),
            ("longest write pause (s)", f"{self.longest_write_pause:.2f}"),
            ("converged after heal", f"{self.converged} {self.applied_indexes}"),
            ("linearizability", self.linearizability),
            ("corrupted entries refused at start", self.corruptions_detected),
            ("result", "OK" if self.ok else "FAILED"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        if self.errors:
            lines += ["errors:"] + [f"  {e}" for e in self.errors[:10]]
        for name, items in (("lost", self.lost), ("duplicated", self.duplicated), ("phantom", self.phantom),
                            ("order", self.order_violations), ("seq", self.seq_mismatches)):
            if items:
                lines.append(f"{name}: {items[:10]}")
        return "\n".join(lines)


class Campaign:
    def __init__(self, cluster: ChaosCluster, seed: int, seconds: float, log=print) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)  # the fault schedule only
        self.client_rng = random.Random(seed + 1)  # client pacing, so it does not shift the schedule
        self.seed = seed
        self.seconds = seconds
        self.log = log
        self.t0 = time.monotonic()
        self.history: List[Operation] = []
        self.faults: List[Fault] = []
        self.fault_counts: Dict[str, int] = {}
        self.killed: Set[int] = set()
        self.leaders: Set[Tuple[int, int]] = set()  # (term, leader id)
        self.deliveries: Dict[int, Tuple[str, str]] = {}  # seq -> (sender, text)
        self.texts_seen: Dict[str, Set[int]] = {}
        self.conflicts: List[str] = []
        self.errors: List[str] = []
        self.corruptions_detected = 0
        self.stop = asyncio.Event()
        self.credentials = MemoryCredentials()
        # Membership changes among the faults: `member_out` removes a replica from the
        # configuration (the leader too: it hands over first) and its heal adds it back (as a
        # learner, caught up, promoted), with the operator's own client.
        self.operator: Optional[MembershipClient] = None  # once the cluster made its admin token

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- clients -------------------------------------------------------------------

    def client(self, k: int, deadline: float = 8.0) -> ChatClient:
        servers = self.cluster.servers
        k %= len(servers)
        # One credential store for the campaign's clients: the users are the campaign's, made
        # by one client and used by others (authentication stays on in the cluster).
        return ChatClient(
            servers[k:] + servers[:k], deadline=deadline, attempt_timeout=2.0, credentials=self.credentials
        )

    async def sender(self, k: int, name: str) -> None:
        client = self.client(k)
        n = 0
        try:
            while not self.stop.is_set():
                text = f"{name}:{n}"
                n += 1
                op = Send(RECEIVER, name, text)
                call = self.now()
                try:
                    seq = await client.send(RECEIVER, text, sender=name)
                    self.history.append(Operation(name, call, self.now(), op, ("ok", seq)))
                except (ChatError, asyncio.TimeoutError, OSError) as error:
                    self.history.append(Operation(name, call, None, op, None))
                    self.log(f"[{self.now():6.2f}] {name}: {text} unknown: {str(error)[:80]}")
                await asyncio.sleep(self.client_rng.uniform(0.0, 0.03))
        finally:
            await client.close()

    async def lister(self) -> None:
        client = self.client(3)
        n = 0
        try:
            while not self.stop.is_set():
                await asyncio.sleep(0.4)
                call = self.now()
                if n % 4 == 3:  # now and then a new user, so lists have something to see change
                    name = f"u{n}"
                    try:
                        out = await client.create(name)
                        self.history.append(Operation("lister", call, self.now(), Create(name), OK if out == name else ("error", out)))
                    except (ChatError, asyncio.TimeoutError, OSError):
                        self.history.append(Operation("lister", call, None, Create(name), None))
                else:
                    try:
                        names = await client.list("")
                        self.history.append(Operation("lister", call, self.now(), ListUsers(""), ("ok", tuple(sorted(names)))))
                    except (ChatError, asyncio.TimeoutError, OSError):
                        self.history.append(Operation("lister", call, None, ListUsers(""), None))
                n += 1
        finally:
            await client.close()

    async def receiver(self, done: asyncio.Event) -> None:
        """A connected session that acks; reconnects with a new session if it gives up."""
        k = 4
        while not done.is_set():
            client = self.client(k, deadline=15.0)
            k += 1
            try:
                session = await client.connect(RECEIVER)
                async for event in session:
                    if isinstance(event, chat_pb2.Delivery):
                        self.record_delivery(event)
                        session.ack(event.seq)
                    if done.is_set():
                        break
            except ChatError as error:
                self.log(f"[{self.now():6.2f}] receiver session ended: {error}; reconnecting")
            finally:
                await client.close()

    def record_delivery(self, d: chat_pb2.Delivery) -> None:
        seq = int(d.seq)
        previous = self.deliveries.get(seq)
        if previous is not None:
            if previous != (d.sender, d.text):
                self.conflicts.append(f"seq {seq} delivered as {previous} and as {(d.sender, d.text)}")
            return  # a redelivery of the same message (e.g. after a reconnect): not a duplicate
        self.deliveries[seq] = (d.sender, d.text)
        self.texts_seen.setdefault(d.text, set()).add(seq)

    # -- observation ---------------------------------------------------------------

    async def monitor(self) -> None:
        while not self.stop.is_set():
            for s in (await self.cluster.statuses(0.3)).values():
                if s is not None and s.leader_id:
                    self.leaders.add((int(s.term), int(s.leader_id)))
            await asyncio.sleep(0.2)

    async def current_leader(self) -> Optional[int]:
        votes: Dict[int, int] = {}
        for s in (await self.cluster.statuses(0.3)).values():
            if s is not None and s.role == "leader":
                votes[int(s.id)] = max(votes.get(int(s.id), 0), int(s.term))
        if not votes:
            return None
        return max(votes, key=lambda i: votes[i])

    # -- the nemesis ---------------------------------------------------------------

    def faulty(self) -> Set[int]:
        return {n for f in self.faults for n in f.nodes}

    def apply_links(self) -> None:
        cut: Set[Link] = set()
        for f in self.faults:
            cut |= f.links
        self.cluster.set_cut_links(cut)

    def heal(self, fault: Fault) -> None:
        self.faults.remove(fault)
        for node in fault.nodes:
            if fault.kind.startswith("kill") or fault.kind == "corrupt_entry":
                self.cluster.start(node)
                self.killed.discard(node)
            elif fault.kind == "pause":
                self.cluster.resume(node)
        self.apply_links()
        self.log(f"[{self.now():6.2f}] heal {fault.kind} {fault.nodes}")

    async def inject(self) -> None:
        ids = self.cluster.ids
        healthy = [i for i in ids if i not in self.faulty()]
        room = MAX_FAULTY - len(self.faulty())
        kinds = ["kill_leader", "kill_random", "pause", "isolate", "asym_out", "asym_in", "one_way", "corrupt_entry",
                 "member_out"]
        if room >= 2:
            kinds.append("split")
        kind = self.rng.choice(kinds)
        duration = self.rng.uniform(1.0, 4.0)
        links: Set[Link] = set()
        if kind == "kill_leader":
            leader = await self.current_leader()
            if leader is None or leader not in healthy:
                return
            nodes: Tuple[int, ...] = (leader,)
        elif kind == "split":
            nodes = tuple(sorted(self.rng.sample(healthy, 2)))
            rest = [i for i in ids if i not in nodes]
            links = {(a, b) for a in nodes for b in rest} | {(b, a) for a in nodes for b in rest}
        elif kind == "one_way":
            if room < 2:
                return
            a, b = self.rng.sample(healthy, 2)
            nodes, links = (a, b), {(a, b)}
        else:
            node = self.rng.choice(healthy)
            nodes = (node,)
            others = [j for j in ids if j != node]
            if kind == "isolate":
                links = {(node, j) for j in others} | {(j, node) for j in others}
            elif kind == "asym_out":
                links = {(node, j) for j in others}
            elif kind == "asym_in":
                links = {(j, node) for j in others}
        if kind == "member_out":
            if any(f.kind == "member_out" for f in self.faults):
                return  # one replica out of the configuration at a time
            assert self.operator is not None
            try:
                await self.operator.remove(nodes[0])
            except (ChatError, AdminError) as error:  # e.g. a live quorum would be missing: not a fault
                self.log(f"[{self.now():6.2f}] member_out {nodes} not done: {error}")
                return
        if kind.startswith("kill") or kind == "corrupt_entry":
            self.cluster.kill(nodes[0], signal.SIGKILL)
            self.killed.add(nodes[0])
        if kind == "corrupt_entry":
            await self.corrupt_and_expect_refusal(nodes[0])
        elif kind == "pause":
            self.cluster.pause(nodes[0])
        fault = Fault(kind, nodes, frozenset(links), time.monotonic() + duration)
        self.faults.append(fault)
        self.apply_links()
        self.fault_counts[kind] = self.fault_counts.get(kind, 0) + 1
        self.log(f"[{self.now():6.2f}] inject {kind} {nodes} for {duration:.1f}s")

    async def corrupt_and_expect_refusal(self, node: int) -> None:
        """Flip a byte in a stored entry of the (killed) replica, start it: it must exit at
        once naming the entry. Then put the byte back (the operator restores the file); the
        fault's heal starts it again."""
        flip = flip_log_entry(self.cluster.replica_dir(node), self.rng)
        if flip is None:
            return
        process = self.cluster.start(node)
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if process.poll() is None:
            self.cluster.kill(node, signal.SIGKILL)
        with open(self.cluster.log_path(node), errors="replace") as f:
            named = f"raft log entry {flip.index} " in f.read()[-20000:]
        if process.returncode == 3 and named:
            self.corruptions_detected += 1
            self.log(f"[{self.now():6.2f}] replica {node} refused to start: entry {flip.index} corrupt")
        else:
            self.errors.append(
                f"replica {node} started with a corrupted entry {flip.index} (exit {process.returncode}, named: {named})"
            )
        undo_flip(flip)

    async def add_back(self, fault: Fault) -> None:
        """Heal a member_out: the replica, still running, is added again with its own data
        (a learner first; promoted once caught up). Retried while other faults make it fail."""
        node = fault.nodes[0]
        assert self.operator is not None
        deadline = time.monotonic() + 60
        while True:
            try:
                await self.operator.add(node, self.cluster.addresses[node], self.cluster.peer_addresses[node],
                                        catch_up_timeout_s=20)
                break
            except (ChatError, AdminError) as error:
                if time.monotonic() > deadline:
                    self.errors.append(f"replica {node} could not be added back: {error}")
                    break
                self.log(f"[{self.now():6.2f}] adding replica {node} back failed, retrying: {error}")
                await asyncio.sleep(0.5)
        self.heal(fault)

    async def nemesis(self, until: float) -> None:
        while time.monotonic() < until:
            for fault in [f for f in self.faults if f.until <= time.monotonic()]:
                if fault.kind == "member_out":
                    await self.add_back(fault)
                else:
                    self.heal(fault)
            if len(self.faulty()) < MAX_FAULTY and self.rng.random() < 0.5:
                await self.inject()
            await asyncio.sleep(self.rng.uniform(0.3, 1.0))
        for fault in [f for f in self.faults if f.kind != "member_out"]:
            self.heal(fault)
        for fault in list(self.faults):
            await self.add_back(fault)

    # -- the run -------------------------------------------------------------------

    async def wait_converged(self, timeout: float) -> Tuple[bool, Dict[int, int]]:
        deadline = time.monotonic() + timeout
        applied: Dict[int, int] = {}
        while time.monotonic() < deadline:
            statuses = await self.cluster.statuses(0.5)
            applied = {i: int(s.applied_index) if s else -1 for i, s in statuses.items()}
            commits = {int(s.commit_index) for s in statuses.values() if s}
            if all(s is not None for s in statuses.values()) and len(set(applied.values())) == 1 \
                    and commits == set(applied.values()) and len({s.leader_id for s in statuses.values()}) == 1:
                return True, applied
            await asyncio.sleep(0.2)
        return False, applied

    async def run(self) -> CampaignResult:
        cluster = self.cluster
        await cluster.start_proxies()
        cluster.start_all()
        self.operator = MembershipClient(cluster.servers, admin_token=read_token_file(cluster.admin_token_file),
                                         say=lambda text: self.log(f"[{self.now():6.2f}] {text}"))
        deadline = time.monotonic() + 20
        while await self.current_leader() is None:
            if time.monotonic() > deadline:
                raise RuntimeError("no leader elected at start\n" + cluster.logs())
            await asyncio.sleep(0.1)
        async with self.client(0, deadline=15.0) as setup:
            call = self.now()
            await setup.create(RECEIVER)
            self.history.append(Operation("setup", call, self.now(), Create(RECEIVER), OK))
            # Senders send as themselves: with authentication a sender must be an existing user
            # whose credential the campaign's shared store holds.
            for name in SENDERS:
                call = self.now()
                await setup.create(name)
                self.history.append(Operation("setup", call, self.now(), Create(name), OK))
        self.t_start = self.now()
        done_receiving = asyncio.Event()
        receiving = asyncio.ensure_future(self.receiver(done_receiving))
        workers = [asyncio.ensure_future(self.sender(k, name)) for k, name in enumerate(SENDERS)]
        workers.append(asyncio.ensure_future(self.lister()))
        monitoring = asyncio.ensure_future(self.monitor())
        try:
            await self.nemesis(time.monotonic() + self.seconds)
            self.log(f"[{self.now():6.2f}] healed everything; stopping clients")
            self.stop.set()
            results = await asyncio.wait_for(asyncio.gather(*workers, return_exceptions=True), 30)
            for r in results:
                if isinstance(r, BaseException):
                    self.errors.append(f"client task failed: {r!r}")
            converged, applied = await self.wait_converged(30)
            acked = {op.input.text: op.output[1] for op in self.history
                     if isinstance(op.input, Send) and op.known and op.output is not None}
            wait_until = time.monotonic() + 20
            while not set(acked) <= set(self.texts_seen) and time.monotonic() < wait_until:
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # late duplicates would show up here
        finally:
            self.stop.set()
            done_receiving.set()
            for task in [receiving, monitoring] + workers:
                task.cancel()
            await asyncio.wait([receiving, monitoring] + workers, timeout=10)
        return self.result(acked, converged, applied)

    def result(self, acked: Dict[str, int], converged: bool, applied: Dict[int, int]) -> CampaignResult:
        sends = [op for op in self.history if isinstance(op.input, Send)]
        sent_texts = {op.input.text for op in sends}
        lost = sorted(t for t in acked if t not in self.texts_seen)
        duplicated = sorted(f"{t} at seqs {sorted(s)}" for t, s in self.texts_seen.items() if len(s) > 1)
        phantom = sorted(t for t in self.texts_seen if t not in sent_texts)
        mismatches = sorted(f"{t}: acked seq {acked[t]}, delivered {sorted(self.texts_seen[t])}"
                            for t in acked if t in self.texts_seen and acked[t] not in self.texts_seen[t])
        order: List[str] = []
        last: Dict[str, Tuple[int, int]] = {}
        for seq in sorted(self.deliveries):
            sender, text = self.deliveries[seq]
            try:
                n = int(text.split(":")[1])
            except (IndexError, ValueError):
                continue
            if sender in last and last[sender][1] >= n:
                order.append(f"{text} (seq {seq}) after {sender}:{last[sender][1]} (seq {last[sender][0]})")
            last[sender] = (seq, n)
        ack_times = sorted(op.ret for op in sends if op.known and op.ret is not None)
        points = [self.t_start] + ack_times
        pause = max((b - a for a, b in zip(points, points[1:])), default=0.0)
        terms = sorted(self.leaders)
        changes = sum(1 for a, b in zip(terms, terms[1:]) if a[1] != b[1] or a[0] != b[0])
        check = check_history(self.history)
        return CampaignResult(
            seed=self.seed, operations=len(self.history), sends_acked=len(acked),
            sends_unknown=sum(1 for op in sends if not op.known),
            lists=sum(1 for op in self.history if isinstance(op.input, ListUsers)),
            delivered=len(self.deliveries), lost=lost, duplicated=duplicated, phantom=phantom,
            order_violations=order, seq_mismatches=mismatches + self.conflicts, faults=dict(self.fault_counts),
            leader_changes=changes, longest_write_pause=pause, converged=converged, applied_indexes=applied,
            linearizable=check.ok, linearizability=check.explanation[:300], errors=self.errors,
            corruptions_detected=self.corruptions_detected)


async def run_campaign_async(seconds: float, seed: int, base_dir: Optional[str] = None, log=print) -> CampaignResult:
    own_dir = base_dir is None
    directory = base_dir or tempfile.mkdtemp(prefix="replichat-chaos-")
    cluster = ChaosCluster(directory)
    campaign = Campaign(cluster, seed, seconds, log)
    try:
        result = await campaign.run()
        if not result.ok:
            log(cluster.logs())
        return result
    finally:
        if campaign.operator is not None:
            await campaign.operator.close()
        await cluster.aclose()
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)


def run_campaign(seconds: float = 30.0, seed: int = 1, base_dir: Optional[str] = None, log=print) -> CampaignResult:
    return asyncio.run(run_campaign_async(seconds, seed, base_dir, log))
