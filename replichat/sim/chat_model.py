"""A sequential specification of the chat service, for checking client-visible histories.

The linearizability checker asks one question again and again: "had this operation run alone
in this state, what would it have answered, and what state would it leave?" This module is the
answer, written independently of `replichat.chat.state` (a model that imports the thing it
checks would share its bugs). It covers exactly what a client can observe: users exist or not,
each mailbox holds (seq, sender, text) in order, the next seq a send gets, ack and delete counts.
Session ids and timestamps are left out: no operation's answer depends on them, and leaving
them out keeps states few, which is what makes the checker's memoization pay.

State is immutable (tuples), so the checker can memoize (linearized set, state) pairs.
"""
import re
from typing import Dict, NamedTuple, Optional, Sequence, Tuple, Union


# Authentication. A write may act as an authenticated user: `principal` is who the client
# proved to be, `credential` which account of that name it holds the credential of (the tag
# of the create that made the account: a user deleted and created again is another account,
# and the old credential no longer works). "" for both: not stamped (the open service).
# A stamped write is refused, changing nothing, when the principal is not the user it acts
# as (the sender, for a send) or its account is gone or not the one the credential is for.


class Create(NamedTuple):
    name: str
    # The new account's credential tag (unique per create); "" when not stamped.
    tag: str = ""


class Delete(NamedTuple):
    name: str
    principal: str = ""
    credential: str = ""


class Send(NamedTuple):
    recipient: str
    sender: str
    text: str
    # The sender's credential tag ("" for an anonymous or unstamped send). AUTHORIZED: the
    # sender's check already passed (a projection onto the recipient's part; see linearizability).
    credential: str = ""


class Ack(NamedTuple):
    name: str
    up_to: int
    principal: str = ""
    credential: str = ""


class Connect(NamedTuple):
    name: str
    session: str
    principal: str = ""
    credential: str = ""


class Fetch(NamedTuple):
    """Read a mailbox (what a connect stream shows first): every unacknowledged message."""

    name: str


class ListUsers(NamedTuple):
    """Read the user names a pattern finds (regular-expression search; "" finds all)."""

    pattern: str = ""


Input = Union[Create, Delete, Send, Ack, Connect, Fetch, ListUsers]
SINGLE_KEY_OPS = (Create, Delete, Send, Ack, Connect, Fetch)
READ_OPS = (Fetch, ListUsers)

# Outputs are small tuples, compared for equality with what the client saw:
#   ("ok",)                 create
#   ("ok", n)               delete (messages dropped), send (seq), ack (removed), connect (queued)
#   ("ok", mailbox)         fetch: tuple of (seq, sender, text)
#   ("ok", names)           list: sorted tuple of names
#   ("exists",)             create of an existing user
#   ("not_found",)          anything but create/list on a missing user
#   ("unauthenticated",)    a stamped write whose principal may not act as the user (changes nothing)
#   ("error", detail)       anything else a real system might answer; the model never does
Output = Tuple[object, ...]

OK: Output = ("ok",)
EXISTS: Output = ("exists",)
NOT_FOUND: Output = ("not_found",)
UNAUTHENTICATED: Output = ("unauthenticated",)
AUTHORIZED = "\x00authorized"

Message = Tuple[int, str, str]


class User(NamedTuple):
    next_seq: int
    mailbox: Tuple[Message, ...]
    # The tag of the create that made this account: whose credential acts as it.
    owner: str = ""


# One user's state: None while the user does not exist.
KeyState = Optional[User]


def key_of(op: Input) -> Optional[str]:
    """The one user an operation reads or writes; None for `list`, which reads them all."""
    if isinstance(op, Send):
        return op.recipient
    if isinstance(op, ListUsers):
        return None
    return op.name


def may_act(account: KeyState, name: str, principal: str, credential: str) -> bool:
    """Whether a write stamped with (principal, credential) may act as `name`, whose account
    is `account`; an unstamped write may (the open service)."""
    if not principal or credential == AUTHORIZED:
        return True
    return principal == name and account is not None and account.owner == credential


def is_cross_user_send(op: Input) -> bool:
    """A stamped send whose sender is not its recipient: its answer depends on two users."""
    return isinstance(op, Send) and bool(op.sender) and op.sender != op.recipient and op.credential != AUTHORIZED


def apply_key(state: KeyState, op: Input, sender: KeyState = None) -> Tuple[KeyState, Output]:
    """Run a single-user operation on that user's state (`sender`: for a cross-user send, the
    sender's account)."""
    if isinstance(op, Create):
        if state is not None:
            return state, EXISTS
        return User(1, (), op.tag), OK
    if isinstance(op, Send) and op.sender and op.credential:
        # Apply checks the sender's principal before it looks at the recipient.
        account = state if op.sender == op.recipient else sender
        if not may_act(account, op.sender, op.sender, op.credential):
            return state, UNAUTHENTICATED
    if state is None:
        return None, NOT_FOUND
    if isinstance(op, (Delete, Ack, Connect)) and not may_act(state, op.name, op.principal, op.credential):
        return state, UNAUTHENTICATED
    if isinstance(op, Send):
        seq = state.next_seq
        return state._replace(next_seq=seq + 1, mailbox=state.mailbox + ((seq, op.sender, op.text),)), ("ok", seq)
    if isinstance(op, Ack):
        kept = tuple(m for m in state.mailbox if m[0] > op.up_to)
        return state._replace(mailbox=kept), ("ok", len(state.mailbox) - len(kept))
    if isinstance(op, Delete):
        # A later create starts the user afresh, seq 1 again: the row is gone.
        return None, ("ok", len(state.mailbox))
    if isinstance(op, Connect):
        return state, ("ok", len(state.mailbox))
    if isinstance(op, Fetch):
        return state, ("ok", state.mailbox)
    raise TypeError(f"not a single-user operation: {op!r}")


def matches(pattern: str, name: str) -> bool:
    """Search semantics, like the service's `list`. The model uses Python's `re`; the checked
    patterns are simple ones on which RE2 and `re` agree."""
    return not pattern or re.search(pattern, name) is not None


class Model:
    """The whole service over a fixed set of user names (every name a history mentions).

    The state is a tuple of KeyState aligned with `names`. Names outside the set never exist.
    """

    def describe(self, state: Tuple[KeyState, ...]) -> str:
        return describe_state(self.names, state)

    def __init__(self, names: Sequence[str]) -> None:
        self.names: Tuple[str, ...] = tuple(sorted(set(names)))
        self._position: Dict[str, int] = {n: i for i, n in enumerate(self.names)}

    def initial(self) -> Tuple[KeyState, ...]:
        return tuple(None for _ in self.names)

    def step(self, state: Tuple[KeyState, ...], op: Input) -> Tuple[Tuple[KeyState, ...], Output]:
        if isinstance(op, ListUsers):
            found = tuple(n for n, s in zip(self.names, state) if s is not None and matches(op.pattern, n))
            return state, ("ok", found)
        key = key_of(op)
        assert key is not None
        position = self._position[key]
        sender = None
        if is_cross_user_send(op):
            assert isinstance(op, Send)
            at = self._position.get(op.sender)
            sender = None if at is None else state[at]
        new_key_state, output = apply_key(state[position], op, sender)
        if new_key_state is state[position]:
            return state, output
        return state[:position] + (new_key_state,) + state[position + 1 :], output


def describe_state(names: Sequence[str], state: Tuple[KeyState, ...]) -> str:
    """A one-line picture of a model state for a failure explanation."""
    parts = []
    for name, user in zip(names, state):
        if user is None:
            continue
        mailbox = ", ".join(f"{seq}:{text}" for seq, _, text in user.mailbox)
        parts.append(f"{name}(next seq {user.next_seq}; mailbox [{mailbox}])")
    return "{" + "; ".join(parts) + "}" if parts else "{no users}"


class ExistenceModel:
    """Only which users exist: the part of the state a `list` observes.

    Checking the history projected onto this model (creates and deletes as writes; lists, and
    every other operation's found/not-found answer, as reads) is a necessary condition for the
    whole history, with a far smaller state: mailbox contents and unknown sends drop out.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names: Tuple[str, ...] = tuple(sorted(set(names)))
        self._position: Dict[str, int] = {n: i for i, n in enumerate(self.names)}

    def initial(self) -> Tuple[bool, ...]:
        return tuple(False for _ in self.names)

    def step(self, state: Tuple[bool, ...], op: Input) -> Tuple[Tuple[bool, ...], Output]:
        if isinstance(op, ListUsers):
            return state, ("ok", tuple(n for n, e in zip(self.names, state) if e and matches(op.pattern, n)))
        key = key_of(op)
        assert key is not None
        position = self._position[key]
        exists = state[position]
        if isinstance(op, Create):
            if exists:
                return state, EXISTS
            return state[:position] + (True,) + state[position + 1 :], OK
        if not exists:
            return state, NOT_FOUND
        if isinstance(op, Delete):
            return state[:position] + (False,) + state[position + 1 :], OK
        return state, OK

    def describe(self, state: Tuple[bool, ...]) -> str:
        users = [n for n, e in zip(self.names, state) if e]
        return "{users: " + ", ".join(users) + "}"


def existence_output(op: Input, output: Optional[Output]) -> Optional[Output]:
    """An answer as the existence view sees it: found or not (and a list's names)."""
    if output is None or isinstance(op, ListUsers):
        return output
    if output and output[0] == "ok":
        return OK
    return output
