"""Simulated chat clients: many at once, retrying, failing over, recording what they saw.

Each client runs one operation at a time, like a person at a terminal or a well-behaved
library: it sends the request to some replica, and on UNAVAILABLE or silence past its timeout
retries the *same* request (same client id and request number, so a write applies once) —
often at another replica. What it records is what linearizability is about: when it called,
when it got the answer, and the answer; an operation whose answer never came is recorded with
an unknown outcome. "Quitter" clients give up after a few attempts, a few times per run (an
abandoned write may still apply later, which is what unknown outcomes must allow); otherwise
clients never give up, so after the faults stop every operation must complete — the liveness
check.

The client network (requests and answers) has latency and, under the client-loss fault, loss.

Clients act as authenticated users, as the service's clients do: every create brings a new
credential (tagged by the create; the keyring all clients share remembers which account, by
generation, it opens), and a delete, ack, connect or named send presents a credential, which
the replica stamps into the command as the chat service does (chat.auth.stamp_principal). Most
present the current credential of the user they act as; some an older one (the user was
re-created since: apply must refuse the stale generation), and some another user's (apply
must refuse a principal that is not the user acted as). Refusals are UNAUTHENTICATED and
change nothing, which the model knows.
"""
import random
from typing import Callable, Dict, List, Optional, Tuple

from replichat.raft.messages import Entry
from replichat.sim.chat_model import Ack, Connect, Create, Delete, Fetch, Input, ListUsers, Send
from replichat.sim.commands import is_read
from replichat.sim.config import Fault
from replichat.sim.invariants import InvariantViolation
from replichat.sim.linearizability import Operation
from replichat.sim.requests import Reply, Request
from replichat.sim.world import World

NAMES = ("ann", "bob", "cyd", "dee", "eve", "fay")
PATTERNS = ("", "", "", "n", "^b", "d$")
_OPS = (
    (Create, 14),
    (Send, 30),
    (Fetch, 14),
    (ListUsers, 10),
    (Ack, 10),
    (Connect, 7),
    (Delete, 6),
)
GIVE_UP_AFTER = 4
# Abandoned writes per client and run: enough to exercise unknown outcomes, few enough that
# the linearizability search stays tractable (each one doubles its states).
MAX_ABANDONED = 3
# How often a client presents an older credential of the user / another user's credential.
STALE_CREDENTIAL = 0.15
WRONG_PRINCIPAL = 0.1

# name -> (credential tag, account generation) of every account made, oldest first.
Keyring = Dict[str, List[Tuple[str, int]]]


class ClientNetwork:
    """Requests to replicas and answers back, with latency and (as a fault) loss."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.loss = 0.0
        self.replicas: Dict[int, Callable[[Request], None]] = {}
        self.clients: Dict[int, "SimClient"] = {}

    def request(self, replica: int, request: Request, handler: Callable[[Request], None]) -> None:
        if self._lost("request", request):
            return
        self.world.queue.after(self.world.rng.randint(1, self.world.timing.latency), lambda: handler(request))

    def reply(self, reply: Reply) -> None:
        if self._lost("reply", reply.request):
            return
        client = self.clients[reply.request.client]
        self.world.queue.after(self.world.rng.randint(1, self.world.timing.latency), lambda: client.on_reply(reply))

    def _lost(self, what: str, request: Request) -> bool:
        if self.loss and self.world.rng.random() < self.loss:
            self.world.faults[Fault.CLIENT_LOSS.value] += 1
            self.world.log(f"client {what} lost: c{request.client} op {request.op_id}")
            return True
        return False


class _Pending:
    __slots__ = ("op_id", "input", "generation", "request_seq", "call", "attempts", "replica", "retrying")

    def __init__(self, op_id: int, op: Input, generation: int, request_seq: int, call: int) -> None:
        self.op_id = op_id
        self.input = op
        self.generation = generation
        self.request_seq = request_seq
        self.call = call
        self.attempts = 0
        self.replica = 0
        # A retry is scheduled: a timeout and an UNAVAILABLE for one attempt make one retry.
        self.retrying = False


class SimClient:
    def __init__(
        self,
        number: int,
        world: World,
        net: ClientNetwork,
        replicas: List[int],
        names: List[str],
        history: List[Operation],
        next_op_id: Callable[[], int],
        on_acknowledged: Callable[[Entry], None],
        quitter: bool,
        keyring: Optional[Keyring] = None,
    ) -> None:
        self.number = number
        self.keyring: Keyring = {} if keyring is None else keyring
        self.client_id = f"client-{number}"
        self.world = world
        self.net = net
        self.replicas = replicas
        self.names = names
        self.history = history
        self._next_op_id = next_op_id
        self._on_acknowledged = on_acknowledged
        self.quitter = quitter
        self.request_seq = 0
        self.current: Optional[_Pending] = None
        self.preferred = world.rng.choice(replicas)
        self.completed = 0
        self.abandoned = 0
        self._texts = 0
        self._tags = 0
        # Highest seq this client has seen per mailbox: acks aim near it.
        self._seen_seq: Dict[str, int] = {}
        net.clients[number] = self

    def start(self) -> None:
        self.world.queue.after(self.world.rng.randint(0, self.world.timing.client_think), self._begin)

    @property
    def idle(self) -> bool:
        return self.current is None

    # ----------------------------------------------------------------- choosing work

    def _credential(self, name: str) -> Optional[Tuple[str, int]]:
        """A credential for `name` from the keyring: mostly the newest, sometimes an older one."""
        known = self.keyring.get(name)
        if not known:
            return None
        if len(known) > 1 and self.world.rng.random() < STALE_CREDENTIAL:
            return self.world.rng.choice(known[:-1])
        return known[-1]

    def _principal(self, name: str) -> Optional[Tuple[str, str, int]]:
        """(principal, credential tag, generation) to act as `name`: the user's own credential,
        or now and then another user's; None when the keyring holds none."""
        rng = self.world.rng
        principal = name
        if rng.random() < WRONG_PRINCIPAL or name not in self.keyring:
            others = sorted(n for n in self.keyring if n != name)
            if others:
                principal = rng.choice(others)
        credential = self._credential(principal)
        return None if credential is None else (principal,) + credential

    def _choose(self) -> Tuple[Input, int]:
        """The next operation and the generation of the credential it presents (0: none)."""
        rng = self.world.rng
        kind = rng.choices([k for k, _ in _OPS], weights=[w for _, w in _OPS])[0]
        name = rng.choice(self.names)
        if kind is Create:
            self._tags += 1
            return Create(name, f"k{self.number}.{self._tags}"), 0
        if kind is Send:
            self._texts += 1
            text = f"m{self.number}.{self._texts}"
            sender = rng.choice(("",) + tuple(self.names))
            credential = self._credential(sender) if sender else None
            if credential is None:
                return Send(name, "", text), 0  # anonymous: nobody to prove
            return Send(name, sender, text, credential[0]), credential[1]
        if kind is Fetch:
            return Fetch(name), 0
        if kind is ListUsers:
            return ListUsers(rng.choice(PATTERNS)), 0
        acting = self._principal(name)
        if acting is None:
            return Fetch(name), 0  # no credential to act with yet
        principal, tag, generation = acting
        if kind is Ack:
            return Ack(name, max(0, self._seen_seq.get(name, 0) + rng.randint(-2, 1)), principal, tag), generation
        if kind is Connect:
            return Connect(name, f"s{self.number}.{rng.randrange(1000)}", principal, tag), generation
        return Delete(name, principal, tag), generation

    def _begin(self) -> None:
        if self.world.draining or self.current is not None:
            return
        op, generation = self._choose()
        if not is_read(op):
            self.request_seq += 1
        self.current = _Pending(self._next_op_id(), op, generation, self.request_seq, self.world.now)
        self._attempt()

    # ----------------------------------------------------------------- one attempt

    def _attempt(self) -> None:
        pending = self.current
        assert pending is not None
        rng = self.world.rng
        pending.attempts += 1
        pending.retrying = False
        pending.replica = self._choose_replica(pending)
        request = Request(
            self.number, self.client_id, pending.request_seq, pending.op_id, pending.attempts, pending.input, pending.generation
        )
        self.world.log(f"c{self.number} -> r{pending.replica} op {pending.op_id} try {pending.attempts}: {_show(pending.input)}")
        self.net.request(pending.replica, request, self.net.replicas[pending.replica])
        attempt = pending.attempts
        self.world.queue.after(self.world.timing.client_timeout, lambda: self._timed_out(pending.op_id, attempt))

    def _choose_replica(self, pending: _Pending) -> int:
        """Stay with the replica that answered last, or fail over to another."""
        if pending.attempts > 1 or self.world.rng.random() < 0.3:
            self.preferred = self.world.rng.choice(self.replicas)
        return self.preferred

    def _timed_out(self, op_id: int, attempt: int) -> None:
        pending = self.current
        if pending is None or pending.op_id != op_id or pending.attempts != attempt:
            return
        self.world.log(f"c{self.number} op {op_id} try {attempt} timed out")
        self._retry()

    def _retry(self) -> None:
        pending = self.current
        assert pending is not None
        if pending.retrying:
            return
        if (
            self.quitter
            and not self.world.draining
            and pending.attempts >= GIVE_UP_AFTER
            and self.abandoned < MAX_ABANDONED
        ):
            self.world.log(f"c{self.number} gives up op {pending.op_id}")
            self.abandoned += 1
            self._finish(None, None)
            return
        pending.retrying = True
        self.world.queue.after(self.world.rng.randint(1, self.world.timing.client_backoff), self._attempt_if(pending.op_id))

    def _attempt_if(self, op_id: int) -> Callable[[], None]:
        def attempt() -> None:
            if self.current is not None and self.current.op_id == op_id:
                self._attempt()

        return attempt

    def on_reply(self, reply: Reply) -> None:
        pending = self.current
        request = reply.request
        if pending is None or request.op_id != pending.op_id:
            return  # an answer to an operation already finished or abandoned
        if reply.output is None:
            if request.attempt == pending.attempts:
                self.world.log(f"c{self.number} op {pending.op_id} try {request.attempt}: unavailable")
                self._retry()
            return
        if reply.output[0] == "error":
            raise InvariantViolation(
                "client-error", f"client {self.number} got {reply.output!r} for its current request {_show(pending.input)}"
            )
        if reply.entry is not None:
            self._on_acknowledged(reply.entry)
        if reply.generation and isinstance(pending.input, Create):
            self.keyring.setdefault(pending.input.name, []).append((pending.input.tag, reply.generation))
        self.preferred = pending.replica
        self._finish(self.world.now, reply.output)

    def _finish(self, ret: Optional[int], output: Optional[tuple]) -> None:
        pending = self.current
        assert pending is not None
        self.history.append(Operation(self.number, pending.call, ret, pending.input, output))
        self._learn(pending.input, output)
        self.world.log(f"c{self.number} op {pending.op_id} done: {_show(pending.input)} -> {output}")
        self.current = None
        if output is not None:
            self.completed += 1
        self.world.counts["client ops"] += 1
        self.world.queue.after(self.world.rng.randint(0, self.world.timing.client_think), self._begin)

    def _learn(self, op: Input, output: Optional[tuple]) -> None:
        if output is None or output[0] != "ok":
            return
        if isinstance(op, Send):
            self._seen_seq[op.recipient] = max(self._seen_seq.get(op.recipient, 0), int(output[1]))
        elif isinstance(op, Fetch) and output[1]:
            self._seen_seq[op.name] = max(self._seen_seq.get(op.name, 0), output[1][-1][0])


def _show(op: Input) -> str:
    return f"{type(op).__name__.lower()}{tuple(op)!r}"


def make_clients(
    world: World,
    net: ClientNetwork,
    replicas: List[int],
    count: int,
    names: List[str],
    history: List[Operation],
    on_acknowledged: Callable[[Entry], None],
) -> List[SimClient]:
    counter = [0]

    def next_op_id() -> int:
        counter[0] += 1
        return counter[0]

    rng: random.Random = world.rng
    keyring: Keyring = {}
    return [
        SimClient(n, world, net, replicas, names, history, next_op_id, on_acknowledged, rng.random() < 0.15, keyring)
        for n in range(1, count + 1)
    ]
