"""Is a client-visible history linearizable? Wing & Gong's search with Lowe's memoization.

A history is a set of operations, each with the time a client called it, the time it returned
and what it answered. It is linearizable if the operations can be put in one order that
(1) respects real time: an operation that returned before another was called comes first, and
(2) replays on the sequential model (`chat_model`) with every answer matching. This is the
contract of the service: a `list` reflects every write acknowledged before it began; a `send`
answered with seq 3 was the third message into that mailbox, exactly once.

The search (as in Porcupine, re-derived here): keep the history as a linked list of call and
return events in time order. Walk it; at a call, try to linearize that operation now (the model
must give the answer the client saw); on success remove its call and return from the list,
push, and restart from the head. Reaching a return event means that operation should have been
linearized already: backtrack. Memoizing (set of linearized operations, model state) prunes
orders that reach a state already shown to lead nowhere, which turns the search from factorial
into roughly (positions x states) for histories with bounded concurrency.

Unknown outcomes: an operation whose client never heard back (timeout, lost connection, a
replica crash) may have taken effect at any moment after its call, or never. It gets no
return event (it is concurrent with everything after its call), any answer is accepted, and
the search succeeds once every operation with a *known* answer is linearized, whether or not
the unknown ones were. A read (or connect) with an unknown answer changes nothing the model
holds and is dropped; an unknown write is only tried where it changes the state, and after the
known candidates (most unknown writes in practice never happened, so that order finds a
linearization fast). Unknown writes are still what makes the search expensive: each may or may
not have happened at every later point, and every subset of them is a different state.

Partitioning (what makes long histories cheap). Every operation but `list` reads or writes a
single user (`send` belongs to its recipient: the sender is only a label, the state machine
never checks it). The model is the product of independent per-user models, so for a history
without `list`, the locality theorem of linearizability (Herlihy & Wing) makes the whole
history linearizable exactly when every per-user sub-history is: that check is sound and
complete. `list` reads every user at once, so with lists present that argument fails (two
lists can each be consistent per user yet see two creates in opposite orders). Then the
per-user checks, with each list projected to "is this user listed?", are only *necessary*
conditions: they run first (cheap, and their failures name the user), and the whole history
is then checked unpartitioned.

Budget. Unknown writes are what makes the whole-history search expensive: each one may or may
not have happened at every later point, doubling the states to explore. When the search runs
out of budget the answer is "inconclusive" — never "ok" — after one more necessary condition:
the history projected onto which users exist (creates, deletes, lists and the found/not-found
part of every answer; `chat_model.ExistenceModel`), which drops mailboxes and with them most
unknown writes. A failure there is a real violation; a pass leaves the result inconclusive.
"""
from typing import Any, Dict, Hashable, List, NamedTuple, Optional, Protocol, Sequence, Set, Tuple

from replichat.sim.chat_model import (
    AUTHORIZED,
    OK,
    READ_OPS,
    UNAUTHENTICATED,
    Connect,
    Create,
    Delete,
    ExistenceModel,
    Fetch,
    Input,
    ListUsers,
    Model,
    Output,
    Send,
    existence_output,
    is_cross_user_send,
    key_of,
    matches,
)


class SequentialModel(Protocol):
    """What the search needs of a model: an initial state, a step, and words for a state."""

    def initial(self) -> Any: ...

    def step(self, state: Any, op: Input) -> Tuple[Any, Output]: ...

    def describe(self, state: Any) -> str: ...

DEFAULT_BUDGET = 2_000_000


class Operation(NamedTuple):
    client: Hashable
    call: float
    # None, or output None: the client never learned the outcome.
    ret: Optional[float]
    input: Input
    output: Optional[Output]

    @property
    def known(self) -> bool:
        return self.ret is not None and self.output is not None


class Result(NamedTuple):
    # True only when a linearization was found for every checked part.
    ok: bool
    explanation: str
    # The search ran out of budget: neither a linearization nor a proof of none.
    inconclusive: bool = False


def describe(op: Operation) -> str:
    name = type(op.input).__name__.lower()
    values = list(op.input)
    defaults = getattr(type(op.input), "_field_defaults", {})
    fields = list(type(op.input)._fields)
    while values and fields[len(values) - 1] in defaults and values[-1] == defaults[fields[len(values) - 1]]:
        values.pop()  # unstamped: show it as the open service's operation
    args = ", ".join(repr(a) for a in values)
    answer = repr(op.output) if op.known else "unknown"
    ret = f"{op.ret:g}" if op.known and op.ret is not None else "never"
    return f"client {op.client}: {name}({args}) called {op.call:g} returned {ret} -> {answer}"


def check_history(ops: Sequence[Operation], budget: int = DEFAULT_BUDGET) -> Result:
    """Check a history of chat operations against the chat model.

    The history must start from an empty service (or include the operations that filled it),
    with user names as the service stores them (normalized). Times are any comparable numbers
    (simulated ticks, time.monotonic()). `budget` bounds the search steps of each part;
    exceeding it gives an inconclusive result (ok=False, inconclusive=True)."""
    for op in ops:
        if op.known and op.ret is not None and op.ret < op.call:
            raise ValueError(f"operation returns before it is called: {describe(op)}")
    # Operations with an unknown answer that change nothing the model holds say nothing:
    # reads, and connects (the session id is not part of any answer).
    kept = [op for op in ops if op.known or not isinstance(op.input, READ_OPS + (Connect,))]
    has_lists = any(isinstance(op.input, ListUsers) for op in kept)
    # A send from another authenticated user depends on two users' accounts: each per-user
    # part checks only its recipient's side, so the whole history must be checked too.
    spans_users = has_lists or any(is_cross_user_send(op.input) for op in kept)
    names = _names(kept)
    checked = 0
    for name in sorted(names):
        part = _project(kept, name)
        if not part:
            continue
        outcome = _linearize(part, Model([name]), budget)
        checked += 1
        if outcome is not None:
            return outcome._replace(explanation=f"user {name!r}: {outcome.explanation}")
    if spans_users:
        outcome = _linearize(kept, Model(sorted(names)), budget)
        if outcome is not None and not outcome.inconclusive:
            return outcome._replace(explanation=f"whole history (lists or sends span users): {outcome.explanation}")
        if outcome is not None:
            existence = _existence_view(kept)
            fallback = _linearize(existence, ExistenceModel(sorted(names)), budget)
            if fallback is not None and not fallback.inconclusive:
                return fallback._replace(explanation=f"which users exist (lists span users): {fallback.explanation}")
            return Result(
                False,
                "inconclusive: every per-user part linearizes, "
                + ("and so does the view of which users exist, " if fallback is None else "")
                + f"but the whole-history search ran out of budget ({len(kept)} operations, "
                f"{sum(1 for op in kept if not op.known)} with unknown outcomes)",
                True,
            )
        how = "per-user parts and the whole history"
    else:
        how = "per-user parts (no list: by locality that covers the whole history)"
    return Result(True, f"linearizable: {len(kept)} operations, {checked} {how}")


def _names(ops: Sequence[Operation]) -> Set[str]:
    names: Set[str] = set()
    for op in ops:
        key = key_of(op.input)
        if is_cross_user_send(op.input):
            assert isinstance(op.input, Send)
            names.add(op.input.sender)
        if key is not None:
            names.add(key)
        elif op.known and op.output is not None and len(op.output) > 1:
            found = op.output[1]
            if isinstance(found, tuple):
                names.update(n for n in found if isinstance(n, str))
    return names


def _existence_view(ops: Sequence[Operation]) -> List[Operation]:
    """The history as ExistenceModel sees it; unknown operations that cannot change which
    users exist are dropped (they change nothing there and answered nothing)."""
    view: List[Operation] = []
    for op in ops:
        if not op.known and not isinstance(op.input, (Create, Delete)):
            continue
        if op.output == UNAUTHENTICATED:
            # Refused, changing nothing: a send's refusal says nothing of its recipient (the
            # sender is checked first); any other refusal found its user first.
            if not isinstance(op.input, Send):
                view.append(op._replace(input=Fetch(op.input.name), output=OK))
            continue
        view.append(op._replace(output=existence_output(op.input, op.output)))
    return view


def _project(ops: Sequence[Operation], name: str) -> List[Operation]:
    """The operations on one user; a list becomes "is `name` listed?" where its pattern could
    find the name at all."""
    part: List[Operation] = []
    for op in ops:
        if isinstance(op.input, ListUsers):
            if not matches(op.input.pattern, name) or op.output is None:
                continue
            listed = op.output[1] if len(op.output) > 1 and isinstance(op.output[1], tuple) else ()
            projected: Output = (op.output[0], tuple(n for n in listed if n == name))
            part.append(op._replace(output=projected))
        elif key_of(op.input) == name:
            if is_cross_user_send(op.input):
                # The recipient's side of a send from another user: a refused one changed
                # nothing here; any other passed the sender's check (the whole-history check
                # covers the sender's side).
                if op.output == UNAUTHENTICATED:
                    continue
                assert isinstance(op.input, Send)
                op = op._replace(input=op.input._replace(credential=AUTHORIZED))
            part.append(op)
    return part


class _Deepest(NamedTuple):
    depth: int
    state: Any
    recent: Tuple[int, ...]
    blocked: int


def _linearize(ops: Sequence[Operation], model: SequentialModel, budget: int) -> Optional[Result]:
    """None if `ops` linearize; otherwise a failing (or inconclusive) Result."""
    # Event nodes 1..n; node 0 is the list head. Calls sort before returns at equal times, so
    # an operation returning at t and one called at t count as concurrent (never a false alarm).
    events: List[Tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        if op.known:
            assert op.ret is not None
            events.append((op.ret, 1, i))
    events.sort()
    size = len(events) + 1
    nxt = list(range(1, size + 1))
    nxt[-1] = -1
    prv = list(range(-1, size - 1))
    node_op = [-1] * size
    is_call = [False] * size
    return_of: Dict[int, int] = {}
    call_node = [0] * len(ops)
    for position, (_, kind, i) in enumerate(events, start=1):
        node_op[position] = i
        is_call[position] = kind == 0
        if kind == 0:
            call_node[i] = position
        else:
            return_of[call_node[i]] = position

    def unlink(node: int) -> None:
        nxt[prv[node]] = nxt[node]
        if nxt[node] != -1:
            prv[nxt[node]] = prv[node]

    def relink(node: int) -> None:
        nxt[prv[node]] = node
        if nxt[node] != -1:
            prv[nxt[node]] = node

    def lift(call: int) -> None:
        unlink(call)
        ret = return_of.get(call)
        if ret is not None:
            unlink(ret)

    def unlift(call: int) -> None:
        ret = return_of.get(call)
        if ret is not None:
            relink(ret)
        relink(call)

    known = [op.known for op in ops]

    def candidates() -> List[int]:
        """Call events before the first return event: the operations that may take effect
        next. Known ones first: most histories are linearizable with most unknown writes
        never applied, and trying those last finds that order quickly."""
        found: List[int] = []
        unknown: List[int] = []
        node = nxt[0]
        while node != -1 and is_call[node]:
            (found if known[node_op[node]] else unknown).append(node)
            node = nxt[node]
        return found + unknown

    remaining = sum(known)
    state = model.initial()
    linearized = 0
    # One frame per linearized operation: (its call node, the state before it, the
    # candidates of the configuration it was chosen in, which of them to try next).
    frames: List[Tuple[int, Any, List[int], int]] = []
    seen: Set[Tuple[int, Any]] = set()
    deepest = _Deepest(0, state, (), -1)
    options, position = candidates(), 0
    steps = 0
    while remaining:
        if position < len(options):
            steps += 1
            if steps > budget:
                return Result(False, f"inconclusive: search budget of {budget} steps exhausted ({len(ops)} operations)", True)
            entry = options[position]
            position += 1
            i = node_op[entry]
            op = ops[i]
            new_state, output = model.step(state, op.input)
            # An unknown operation that would change nothing here is better left pending: the
            # configuration with it still available can do everything this one can, and more.
            if output == op.output if op.output is not None else new_state != state:
                key = (linearized | (1 << i), new_state)
                if key not in seen:
                    seen.add(key)
                    frames.append((entry, state, options, position))
                    state, linearized = new_state, key[0]
                    lift(entry)
                    if known[i]:
                        remaining -= 1
                    if len(frames) > deepest.depth:
                        recent = tuple(node_op[f[0]] for f in frames[-4:])
                        deepest = _Deepest(len(frames), state, recent, -1)
                    options, position = candidates(), 0
            continue
        # Every candidate here failed: the operation whose return event ends the window (if
        # any) cannot be linearized in this configuration. Backtrack.
        if len(frames) == deepest.depth and deepest.blocked < 0:
            blocker = _first_return(nxt, is_call)
            if blocker != -1:
                deepest = deepest._replace(blocked=node_op[blocker])
        if not frames:
            return Result(False, _explain(ops, model, deepest))
        entry, state, options, position = frames.pop()
        i = node_op[entry]
        linearized &= ~(1 << i)
        unlift(entry)
        if known[i]:
            remaining += 1
    return None


def _first_return(nxt: List[int], is_call: List[bool]) -> int:
    node = nxt[0]
    while node != -1 and is_call[node]:
        node = nxt[node]
    return node


def _explain(ops: Sequence[Operation], model: SequentialModel, deepest: _Deepest) -> str:
    known = sum(1 for op in ops if op.known)
    lines = [f"not linearizable: no order of {len(ops)} operations ({known} with known answers) fits the model;"]
    lines.append(f"  the longest consistent prefix has {deepest.depth} operations, ending with:")
    for i in deepest.recent:
        lines.append(f"    {describe(ops[i])}")
    lines.append(f"  state then: {model.describe(deepest.state)}")
    if deepest.blocked >= 0:
        op = ops[deepest.blocked]
        _, answer = model.step(deepest.state, op.input)
        lines.append("  and this operation, which had returned by then, cannot come next:")
        lines.append(f"    {describe(op)}")
        lines.append(f"    (the model would answer {answer!r} here)")
    return "\n".join(lines)


def operations_by_client(ops: Sequence[Operation]) -> Dict[Hashable, List[Operation]]:
    """Group a history per client (handy when printing a failing history)."""
    grouped: Dict[Hashable, List[Operation]] = {}
    for op in sorted(ops, key=lambda o: o.call):
        grouped.setdefault(op.client, []).append(op)
    return grouped


