"""Golden traces: scripted, step-by-step runs of the real RaftCore, compared with a recorded
transcript (the idea of etcd-io/raft's data-driven interaction tests; the format is our own).

A trace file (tests/raft/golden/*.trace) is a script. A line starting with "> " is a command;
the lines after it, up to the next command, are what the command printed when the trace was
recorded and reviewed; lines starting with "#" are comments (the rule the trace pins down).
The runner replays the commands against fresh cores and compares every printed line: a change
in the messages a core sends, in a role, term, commit or applied index, in a read answer,
shows up as a diff. To record on purpose after a deliberate behaviour change, run with
GOLDEN_REWRITE=1 and review the diff of the trace files like code.

Nothing happens unless a command says so — no automatic ticks, deliveries or disk writes — so a
trace can hold a Ready unpersisted while messages are delivered, deliver one message out of
several, or cut a link; exactly the orderings random search rarely produces.

Commands (IDs are replica numbers, 1..N):
  cluster N [election=10] [prevote=on|off] [checkquorum=on|off] [seed=1] [batch=512]
      N fresh replicas (voters 1..N) with empty disks.
  restart ID [log=T,T,...] [term=T] [vote=V] [commit=C]
      crash ID and start it from its disk; the options first overwrite that disk (a log given
      by its entries' terms, data "" for each) — how a trace sets up divergent logs.
  tick ID... [xN]          tick each listed replica (N times).
  campaign ID              start an election now (pre-vote first, if enabled).
  propose ID DATA          a client command at ID.
  read ID CONTEXT          a linearizable read (ReadIndex) at ID.
  transfer ID TARGET       ask leader ID to hand leadership to TARGET.
  ready ID                 take ID's Ready and print it; it stays unpersisted. A leader's
                           messages that may leave before persisting go on the wire now.
  persist ID               make ID's held Ready durable, send its remaining messages, apply
                           its committed entries, hand over its reads, advance. Without a
                           held Ready: take one first (ready + persist in one step).
  deliver [SRC->DST] [TYPE...]   step the in-flight messages that match into their receivers,
                           oldest first (SRC or DST may be *).
  drop [SRC->DST] [TYPE...]      lose the in-flight messages that match.
  duplicate [SRC->DST] [TYPE...] put a copy of the last delivered message that matches back
                           on the wire (the network duplicated it, or the sender retried).
  cut A B / mend A B       cut (restore) both directions of the link A<->B: messages sent
                           across a cut link are lost when sent.
  isolate ID / heal        cut every link of ID / restore every link.
  stabilize [ID...]        persist every Ready and deliver every message among the listed
                           replicas (default: all) until nothing is left to do (each Ready is
                           printed with its messages; their delivery is not printed again).
  rounds N [ID...]         N times: tick the listed replicas (default all), then stabilize;
                           prints only the state changes (time passing in a working cluster).
  elect ID                 campaign ID and stabilize, printing only the state changes (for
                           the set-up part of a trace); fails unless ID ends up leader.
  snapshot ID              ID durably snapshots its applied state (the core is told).
  compact ID INDEX         ID drops its log up to INDEX.
  status [ID...]           print role, term, leader, vote, log, commit, applied.
  log ID                   print ID's entries.
  wire                     print the messages in flight.

After every command the runner prints each replica whose role, term, leader or commit index
changed, as "r1: follower t1 (leader 0) -> leader t1 (leader 1)" — so a step that should not
move a term shows nothing, and one that does is caught.
"""
import difflib
import os
import shlex
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple

from replichat.raft import membership
from replichat.raft.core import Config, RaftCore, Ready
from replichat.raft.log import RaftLog
from replichat.raft.messages import Entry, HardState, Message, MsgType, SnapshotMeta

REWRITE_ENV = "GOLDEN_REWRITE"


class TraceError(Exception):
    """A malformed trace command (a bug in the trace, not in the core)."""


def show_entry(e: Entry) -> str:
    return f"{e.index}@{e.term}" + (f":{e.data.decode('utf-8', 'backslashreplace')}" if e.data else "")


def show_entries(entries: Sequence[Entry]) -> str:
    return "[" + " ".join(show_entry(e) for e in entries) + "]"


def show_message(m: Message) -> str:
    """One message, with the fields its type uses."""
    parts = [f"{m.src}->{m.dst} {m.type.name} t{m.term}"]
    t = m.type
    if t is MsgType.APPEND:
        parts += [f"prev={m.index}@{m.log_term}", show_entries(m.entries), f"commit={m.commit}"]
    elif t in (MsgType.VOTE, MsgType.PRE_VOTE):
        parts.append(f"last={m.index}@{m.log_term}")
    elif t is MsgType.APPEND_RESP:
        parts.append(f"index={m.index}")
        if m.reject:
            parts.append(f"reject hint={m.reject_hint}@{m.hint_term}")
    elif t is MsgType.HEARTBEAT:
        parts.append(f"commit={m.commit}")
    elif t is MsgType.HEARTBEAT_RESP:
        parts.append(f"index={m.index}")
    elif t is MsgType.PROPOSE:
        parts.append(show_entries(m.entries))
    elif t is MsgType.READ_INDEX_RESP:
        parts.append(f"index={m.index}")
    elif t is MsgType.SNAPSHOT:
        parts += [f"snapshot={m.index}@{m.log_term}", f"commit={m.commit}"]
    if m.reject and t is not MsgType.APPEND_RESP:
        parts.append("reject")
    if m.context:
        if membership.is_configuration(m.context):  # starts with a zero byte: shown decoded
            parts.append(f"ctx=configuration({membership.decode(m.context).describe()})")
        else:
            parts.append(f"ctx={m.context.decode('utf-8', 'backslashreplace')}")
    return " ".join(parts)


class _Watch(NamedTuple):
    role: str
    term: int
    leader: int
    commit: int

    def show(self) -> str:
        return f"{self.role} t{self.term} (leader {self.leader}, commit {self.commit})"


CoreClass = Callable[..., RaftCore]


class _Replica:
    """One replica: its core, an instant but explicit disk, its applied entries."""

    def __init__(self, config: Config, core_class: CoreClass = RaftCore) -> None:
        self.config = config
        self.core_class = core_class
        self.disk_log: List[Entry] = []  # entries after disk_base
        self.disk_base = SnapshotMeta()
        self.disk_state = HardState()
        self.applied: List[Entry] = []  # the "state machine": applied entries (data only matters)
        self.applied_index = 0
        self.snapshot = SnapshotMeta()
        self.held: Optional[Ready] = None
        self.incoming: Optional[SnapshotMeta] = None
        self.core = core_class(config)

    def restart(self) -> None:
        log = RaftLog(
            self.disk_log, self.disk_state.commit, self.applied_index,
            base_index=self.disk_base.index, base_term=self.disk_base.term,
        )
        self.core = self.core_class(self.config, log, self.disk_state, self.snapshot)
        self.held = None

    def watch(self) -> _Watch:
        c = self.core
        return _Watch(c.role.value, c.term, c.leader, c.log.committed)


class GoldenRunner:
    def __init__(self, core_class: CoreClass = RaftCore) -> None:
        # A subclass of the core replays a trace with one rule broken (the tests' planted bugs).
        self.core_class = core_class
        self.replicas: Dict[int, _Replica] = {}
        self.wire: List[Message] = []
        self.delivered: List[Message] = []
        self.cut: Set[Tuple[int, int]] = set()
        self._out: List[str] = []

    # ----------------------------------------------------------------- driving

    def run(self, command: str) -> List[str]:
        self._out = []
        words = shlex.split(command)
        if not words:
            raise TraceError("empty command")
        name, args = words[0], words[1:]
        handler = getattr(self, "_cmd_" + name.replace("-", "_"), None)
        if handler is None:
            raise TraceError(f"unknown command {name!r}")
        before = {i: r.watch() for i, r in self.replicas.items()}
        handler(args)
        for i, r in sorted(self.replicas.items()):
            now = r.watch()
            if i in before and before[i] != now:
                self._print(f"r{i}: {before[i].show()} -> {now.show()}")
        return self._out

    def _print(self, line: str) -> None:
        self._out.append(line)

    def _replica(self, word: str) -> _Replica:
        try:
            return self.replicas[int(word)]
        except (ValueError, KeyError):
            raise TraceError(f"no replica {word!r}") from None

    def _ids(self, words: Sequence[str]) -> List[int]:
        if not words or words == ["all"]:
            return sorted(self.replicas)
        for w in words:
            self._replica(w)
        return [int(w) for w in words]

    # ----------------------------------------------------------------- commands

    def _cmd_cluster(self, args: List[str]) -> None:
        size = int(args[0])
        options = dict(a.split("=", 1) for a in args[1:])
        known = {"election", "prevote", "checkquorum", "seed", "batch"}
        if set(options) - known:
            raise TraceError(f"unknown cluster options {sorted(set(options) - known)}")
        voters = tuple(range(1, size + 1))
        self.replicas = {
            i: _Replica(
                Config(
                    i, voters,
                    election_ticks=int(options.get("election", "10")),
                    pre_vote=options.get("prevote", "on") == "on",
                    check_quorum=options.get("checkquorum", "on") == "on",
                    seed=int(options.get("seed", "1")),
                    max_entries_per_append=int(options.get("batch", "512")),
                ),
                self.core_class,
            )
            for i in voters
        }
        self.wire, self.cut = [], set()
        self._cmd_status([])

    def _cmd_restart(self, args: List[str]) -> None:
        r = self._replica(args[0])
        options = dict(a.split("=", 1) for a in args[1:])
        if "log" in options:
            terms = [int(t) for t in options["log"].split(",") if t]
            r.disk_log = [Entry(t, r.disk_base.index + n + 1) for n, t in enumerate(terms)]
        state = r.disk_state
        r.disk_state = HardState(
            int(options.get("term", state.term)), int(options.get("vote", state.vote)), int(options.get("commit", state.commit))
        )
        r.applied_index = min(r.applied_index, r.disk_base.index + len(r.disk_log))
        del r.applied[r.applied_index:]
        r.restart()
        self._cmd_status([args[0]])

    def _cmd_tick(self, args: List[str]) -> None:
        times = 1
        if args and args[-1].startswith("x"):
            times = int(args[-1][1:])
            args = args[:-1]
        for _ in range(times):
            for i in self._ids(args):
                self.replicas[i].core.tick()

    def _cmd_campaign(self, args: List[str]) -> None:
        self._replica(args[0]).core.campaign()

    def _cmd_propose(self, args: List[str]) -> None:
        r = self._replica(args[0])
        try:
            index = r.core.propose([a.encode() for a in args[1:]])
        except Exception as error:  # NotLeader: part of what the trace shows
            self._print(f"r{args[0]} refused: {error}")
            return
        if index:
            self._print(f"r{args[0]} appended up to {index}")

    def _cmd_read(self, args: List[str]) -> None:
        try:
            self._replica(args[0]).core.read_index(args[1].encode())
        except Exception as error:
            self._print(f"r{args[0]} refused: {error}")

    def _cmd_transfer(self, args: List[str]) -> None:
        self._replica(args[0]).core.transfer_leadership(int(args[1]))

    def _cmd_ready(self, args: List[str]) -> None:
        i = int(args[0])
        r = self._replica(args[0])
        if r.held is not None:
            raise TraceError(f"r{i} already holds an unpersisted Ready")
        if not r.core.has_ready():
            self._print(f"r{i}: nothing ready")
            return
        ready = r.held = r.core.ready()
        self._show_ready(i, ready)
        if ready.send_before_persist:
            self._send(ready.messages)

    def _show_ready(self, i: int, ready: Ready) -> None:
        parts = []
        if ready.hard_state is not None:
            hs = ready.hard_state
            parts.append(f"hard state t{hs.term} vote {hs.vote} commit {hs.commit}")
        if ready.snapshot is not None:
            parts.append(f"install snapshot {ready.snapshot.index}@{ready.snapshot.term}")
        if ready.entries:
            parts.append("entries " + show_entries(ready.entries))
        if ready.committed:
            parts.append("apply " + show_entries(ready.committed))
        for rs in ready.read_states:
            parts.append(f"read {rs.context.decode()} at {rs.index}")
        if ready.messages:
            parts.append(f"{len(ready.messages)} messages" + (" (sent before persisting)" if ready.send_before_persist else ""))
        self._print(f"r{i} ready: " + ("; ".join(parts) if parts else "empty"))
        for m in ready.messages:
            self._print("  " + show_message(m))

    def _cmd_persist(self, args: List[str]) -> None:
        i = int(args[0])
        r = self._replica(args[0])
        if r.held is None:
            if not r.core.has_ready():
                self._print(f"r{i}: nothing ready")
                return
            self._cmd_ready(args)
        self._finish(i, r)

    def _finish(self, i: int, r: _Replica) -> None:
        ready = r.held
        assert ready is not None
        r.held = None
        if ready.snapshot is not None:
            if r.incoming != ready.snapshot:
                raise AssertionError(f"r{i} installs snapshot {ready.snapshot} it never received ({r.incoming})")
            r.snapshot = r.disk_base = ready.snapshot
            r.disk_log = []
            r.applied_index = ready.snapshot.index
            r.incoming = None
            self._print(f"r{i} installed snapshot {ready.snapshot.index}@{ready.snapshot.term}")
        if ready.entries:
            first = ready.entries[0].index
            del r.disk_log[first - r.disk_base.index - 1:]
            r.disk_log.extend(ready.entries)
        if ready.hard_state is not None:
            r.disk_state = ready.hard_state
        if not ready.send_before_persist:
            self._send(ready.messages)
        for e in ready.committed:
            if e.index > r.applied_index:
                r.applied.append(e)
                r.applied_index = e.index
        for rs in ready.read_states:
            self._print(f"r{i} serves read {rs.context.decode()} at index {rs.index} (applied {r.applied_index})")
        r.core.advance(ready)

    def _send(self, messages: Sequence[Message]) -> None:
        for m in messages:
            if (m.src, m.dst) in self.cut:
                continue
            self.wire.append(m)

    def _matches(self, m: Message, args: List[str]) -> bool:
        kinds = [a for a in args if "->" not in a]
        link = next((a for a in args if "->" in a), "*->*")
        src, dst = link.split("->")
        if src != "*" and m.src != int(src):
            return False
        if dst != "*" and m.dst != int(dst):
            return False
        for kind in kinds:
            if kind not in MsgType.__members__:
                raise TraceError(f"unknown message type {kind!r}")
        return not kinds or m.type.name in kinds

    def _cmd_deliver(self, args: List[str]) -> None:
        chosen = [m for m in self.wire if self._matches(m, args)]
        if not chosen:
            raise TraceError(f"nothing in flight matches {args}")
        self.wire = [m for m in self.wire if not self._matches(m, args)]
        for m in chosen:
            self._print("  " + show_message(m))
            self._step(m)

    def _step(self, m: Message) -> None:
        self.delivered.append(m)
        receiver = self.replicas[m.dst]
        if m.type is MsgType.SNAPSHOT:
            # The runtimes streamed the file: the receiver holds it, the sender hears it went.
            sender = self.replicas[m.src]
            receiver.incoming = SnapshotMeta(m.index, m.log_term)
            receiver.core.snapshot_received(m)
            sender.core.report_snapshot(m.dst, True)
        else:
            receiver.core.step(m)

    def _cmd_drop(self, args: List[str]) -> None:
        chosen = [m for m in self.wire if self._matches(m, args)]
        if not chosen:
            raise TraceError(f"nothing in flight matches {args}")
        self.wire = [m for m in self.wire if not self._matches(m, args)]
        for m in chosen:
            self._print("  dropped " + show_message(m))

    def _cmd_duplicate(self, args: List[str]) -> None:
        chosen = [m for m in self.delivered if self._matches(m, args)]
        if not chosen:
            raise TraceError(f"nothing delivered matches {args}")
        self.wire.append(chosen[-1])
        self._print("  again " + show_message(chosen[-1]))

    def _cmd_cut(self, args: List[str]) -> None:
        a, b = int(args[0]), int(args[1])
        self.cut |= {(a, b), (b, a)}

    def _cmd_mend(self, args: List[str]) -> None:
        a, b = int(args[0]), int(args[1])
        self.cut -= {(a, b), (b, a)}

    def _cmd_isolate(self, args: List[str]) -> None:
        i = int(args[0])
        for j in self.replicas:
            if j != i:
                self.cut |= {(i, j), (j, i)}

    def _cmd_heal(self, args: List[str]) -> None:
        self.cut = set()

    def _cmd_stabilize(self, args: List[str]) -> None:
        ids = set(self._ids(args))
        for _ in range(200):
            progressed = False
            for i in sorted(ids):
                r = self.replicas[i]
                if r.held is not None or r.core.has_ready():
                    self._cmd_persist([str(i)])
                    progressed = True
            deliverable = [m for m in self.wire if m.src in ids and m.dst in ids]
            if deliverable:
                self.wire = [m for m in self.wire if not (m.src in ids and m.dst in ids)]
                for m in deliverable:
                    self._step(m)
                progressed = True
            if not progressed:
                return
        raise TraceError("stabilize did not settle in 200 rounds")

    def _quietly(self, action) -> None:  # type: ignore[no-untyped-def]
        out = self._out
        self._out = []
        try:
            action()
        finally:
            self._out = out

    def _cmd_rounds(self, args: List[str]) -> None:
        ids = self._ids(args[1:])
        for _ in range(int(args[0])):
            for i in ids:
                self.replicas[i].core.tick()
            self._quietly(lambda: self._cmd_stabilize([]))

    def _cmd_elect(self, args: List[str]) -> None:
        r = self._replica(args[0])
        r.core.campaign()
        self._quietly(lambda: self._cmd_stabilize([]))
        if r.core.role.value != "leader":
            raise TraceError(f"r{args[0]} did not win its election")

    def _cmd_snapshot(self, args: List[str]) -> None:
        r = self._replica(args[0])
        index = r.applied_index
        meta = SnapshotMeta(index, r.core.log.term(index))
        r.snapshot = meta
        r.core.snapshot_taken(meta)
        self._print(f"r{args[0]} snapshot {index}@{meta.term}")

    def _cmd_compact(self, args: List[str]) -> None:
        r = self._replica(args[0])
        index = int(args[1])
        term = r.core.log.term(index)
        r.core.compact(index)
        del r.disk_log[: index - r.disk_base.index]
        r.disk_base = SnapshotMeta(index, term)
        self._print(f"r{args[0]} log starts after {index}@{term}")

    def _cmd_status(self, args: List[str]) -> None:
        for i in self._ids(args):
            c = self.replicas[i].core
            terms = ",".join(str(e.term) for e in c.log.slice(c.log.first_index, c.log.last_index + 1))
            base = f" after {c.log.base_index}@{c.log.base_term}" if c.log.base_index else ""
            self._print(
                f"r{i} {c.role.value} t{c.term} vote {c.vote} leader {c.leader} log [{terms}]{base} "
                f"commit {c.log.committed} applied {self.replicas[i].applied_index}"
            )

    def _cmd_log(self, args: List[str]) -> None:
        c = self._replica(args[0]).core
        self._print(f"r{args[0]} log " + show_entries(c.log.slice(c.log.first_index, c.log.last_index + 1)))

    def _cmd_wire(self, args: List[str]) -> None:
        for m in self.wire:
            self._print("  " + show_message(m))
        if not self.wire:
            self._print("  (nothing in flight)")


# --------------------------------------------------------------------- trace files


class Block(NamedTuple):
    comments: List[str]  # comment and blank lines before the command
    command: str
    expected: List[str]


def parse(text: str) -> Tuple[List[Block], List[str]]:
    """Blocks, and the comment lines after the last command."""
    blocks: List[Block] = []
    pending: List[str] = []
    for line in text.splitlines():
        if line.startswith("> "):
            blocks.append(Block(pending, line[2:].strip(), []))
            pending = []
        elif line.startswith("#") or not line.strip():
            pending.append(line)
        elif blocks and not pending:
            blocks[-1].expected.append(line)
        else:
            raise TraceError(f"output line outside a command's block: {line!r}")
    return blocks, pending


def render(blocks: Sequence[Block], trailer: Sequence[str]) -> str:
    lines: List[str] = []
    for block in blocks:
        lines.extend(block.comments)
        lines.append("> " + block.command)
        lines.extend(block.expected)
    lines.extend(trailer)
    return "\n".join(lines) + "\n"


def replay(text: str, core_class: CoreClass = RaftCore) -> str:
    """The trace with every command's output as the core produces it now."""
    blocks, trailer = parse(text)
    runner = GoldenRunner(core_class)
    actual = []
    for block in blocks:
        try:
            out = runner.run(block.command)
        except TraceError as error:
            raise TraceError(f"command {block.command!r}: {error}") from None
        actual.append(block._replace(expected=out))
    return render(actual, trailer)


def check_file(path: str) -> Optional[str]:
    """None when the trace replays exactly; else a unified diff. GOLDEN_REWRITE=1 records."""
    with open(path, encoding="utf-8") as f:
        recorded = f.read()
    now = replay(recorded)
    if now == recorded:
        return None
    if os.environ.get(REWRITE_ENV) == "1":
        with open(path, "w", encoding="utf-8") as f:
            f.write(now)
        return None
    diff = difflib.unified_diff(
        recorded.splitlines(), now.splitlines(), f"{os.path.basename(path)} (recorded)", "(replayed now)", lineterm="", n=4
    )
    return "\n".join(diff)


def trace_files(directory: str) -> Iterator[str]:
    for name in sorted(os.listdir(directory)):
        if name.endswith(".trace"):
            yield os.path.join(directory, name)
