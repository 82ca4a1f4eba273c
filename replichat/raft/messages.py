"""The values that cross the boundary of the consensus core: entries, messages, hard state.

Immutable named tuples: cheap to build in bulk (the leader creates thousands per second), safe
to share between the core, the simulator and the transport, and trivially comparable in tests.
"""
import enum
from typing import NamedTuple, Tuple


class MsgType(enum.IntEnum):
    APPEND = 1
    APPEND_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    # A follower hands client proposals to the leader.
    PROPOSE = 9
    # A follower asks the leader for a linearizable read index; the leader answers with it.
    READ_INDEX = 10
    READ_INDEX_RESP = 11
    # Leadership transfer: the leader tells a caught-up follower to campaign at once.
    TIMEOUT_NOW = 12
    # The leader's log no longer holds what the follower needs: the follower gets the
    # snapshot at (index, log_term). The runtimes stream the snapshot file itself in chunks;
    # the follower's runtime steps this message into its core once the file is complete and
    # verified. The follower answers with an APPEND_RESP.
    SNAPSHOT = 13


class Entry(NamedTuple):
    term: int
    index: int
    # b"" is the leader's no-op that opens its term; anything else is a state machine command.
    data: bytes = b""


class Message(NamedTuple):
    type: MsgType
    src: int
    dst: int
    term: int
    # APPEND: the index/term of the entry preceding `entries`. VOTE: the candidate's last entry.
    # APPEND_RESP: the highest index now matching (or, on reject, the probed index).
    log_term: int = 0
    index: int = 0
    entries: Tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    # On a rejected append: where the follower's log stops agreeing, to skip a whole term at once.
    reject_hint: int = 0
    hint_term: int = 0
    # HEARTBEAT(_RESP): read round; READ_INDEX(_RESP): the request's context; VOTE: b"transfer".
    context: bytes = b""


class HardState(NamedTuple):
    """What must be on disk before the replica says anything that depends on it."""

    term: int = 0
    vote: int = 0
    commit: int = 0


class SnapshotMeta(NamedTuple):
    """A snapshot of the state machine that covers the log up to `index` (of term `term`)."""

    index: int = 0
    term: int = 0


class LogRegression(NamedTuple):
    """A follower answered a fresh probe saying its log ends (or differs) before an index it
    had acknowledged: its data was lost or rolled back outside Raft's model. The leader
    resumes it from where it really is; the runtime must say so loudly."""

    peer: int
    acknowledged: int
    now_before: int


class ReadState(NamedTuple):
    """A linearizable read may be served once the local state has applied `index`."""

    index: int
    context: bytes


NO_LEADER = 0
TRANSFER_CONTEXT = b"transfer"
