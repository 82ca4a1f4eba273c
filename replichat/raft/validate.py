"""Range checks on a peer message before it reaches the consensus core.

The core trusts its inputs (it is written for messages its own kind produced), so everything
a peer connection decodes passes `check_message` first: a message that no correct replica
could have sent is dropped with a reason, never stepped. What is checked here needs no core
state; the few rules that do (an append response cannot claim more than the leader holds, a
TIMEOUT_NOW only from the current leader) sit at the top of `RaftCore.step`.

Why these bounds:
  * terms and indexes are stored in SQLite INTEGER columns (at most 2^63 - 1, where 2^64 - 1
    made a replica exit with OverflowError), and the core adds to them (term + 1 on a
    campaign, index + 1 on an append). MAX_TERM and MAX_INDEX leave 2^62 of headroom, so no
    accepted value can overflow however it is incremented, while no real cluster comes near
    them (2^62 terms at one election per millisecond is 146 million years).
  * entries are what the leader cut from its own log: contiguous, numbered from the append's
    previous index, with terms that never decrease and never exceed the leader's term. An
    entry with a wrong index used to be stored as given and make the log unloadable.
  * sizes: an entry holds one client command, bounded at the client edge far below
    MAX_ENTRY_BYTES (see replichat/chat/limits.py); the core never puts more than a few
    thousand entries in one message.
  * contexts: a heartbeat's is a decimal read-round number that the leader parses, a vote's is
    empty or the transfer marker, a read request's is an opaque token of bounded size, a
    snapshot's is empty or the configuration the snapshot carries (raft/membership.py).
  * configuration entries (data starting with membership.MARKER) must decode to a valid
    configuration, like every other hostile byte; they travel in appends only, never as a
    forwarded proposal (a change is proposed at the leader, under its rules).

Pure functions: the simulator and the property tests call them as the transport does.
"""
from typing import Optional

from replichat.raft import membership
from replichat.raft.messages import TRANSFER_CONTEXT, Message, MsgType

# Highest term / index a peer may claim (module docstring: headroom below SQLite's 2^63 - 1).
MAX_TERM = 1 << 62
MAX_INDEX = 1 << 62
MAX_ENTRIES_PER_MESSAGE = 65_536
MAX_ENTRY_BYTES = 1 << 20
MAX_CONTEXT_BYTES = 256
# The leader's read rounds count up from 1; int() of this many digits stays cheap.
_MAX_ROUND_DIGITS = 19

_CARRIES_ENTRIES = frozenset({MsgType.APPEND, MsgType.PROPOSE})
_MAY_REJECT = frozenset({MsgType.APPEND_RESP, MsgType.VOTE_RESP, MsgType.PRE_VOTE_RESP})
_NUMERIC_CONTEXT = frozenset({MsgType.HEARTBEAT, MsgType.HEARTBEAT_RESP})
_VOTE_CONTEXTS = (b"", TRANSFER_CONTEXT)


def check_message(m: Message) -> Optional[str]:
    """None if `m` is a message a correct replica could send; otherwise why it is not."""
    if not isinstance(m.type, MsgType):
        return f"unknown message type {m.type!r}"
    for name, value, limit in (
        ("term", m.term, MAX_TERM),
        ("log_term", m.log_term, MAX_TERM),
        ("hint_term", m.hint_term, MAX_TERM),
        ("index", m.index, MAX_INDEX),
        ("commit", m.commit, MAX_INDEX),
        ("reject_hint", m.reject_hint, MAX_INDEX),
    ):
        if not 0 <= value <= limit:
            return f"{name} {value} out of range (0..{limit})"
    if m.log_term > m.term:
        return f"log_term {m.log_term} above the message's term {m.term}"
    if m.hint_term > m.term:
        return f"hint_term {m.hint_term} above the message's term {m.term}"
    if m.reject and m.type not in _MAY_REJECT:
        return f"a {m.type.name} cannot be a rejection"
    reason = _check_context(m)
    if reason is not None:
        return reason
    if m.entries:
        if m.type not in _CARRIES_ENTRIES:
            return f"a {m.type.name} carries no entries, this one has {len(m.entries)}"
        if len(m.entries) > MAX_ENTRIES_PER_MESSAGE:
            return f"{len(m.entries)} entries in one message, at most {MAX_ENTRIES_PER_MESSAGE}"
        for entry in m.entries:
            if len(entry.data) > MAX_ENTRY_BYTES:
                return f"an entry of {len(entry.data)} bytes, at most {MAX_ENTRY_BYTES}"
        if m.type is MsgType.APPEND:
            return _check_append_entries(m)
        return _check_proposals(m)
    return None


def _check_context(m: Message) -> Optional[str]:
    context = m.context
    if not context:
        return None
    if m.type is MsgType.SNAPSHOT:
        if not membership.is_configuration(context):
            return "a SNAPSHOT's context is not a configuration"
        return membership.check_entry(context)
    if len(context) > MAX_CONTEXT_BYTES:
        return f"context of {len(context)} bytes, at most {MAX_CONTEXT_BYTES}"
    if m.type in _NUMERIC_CONTEXT:
        if not (context.isdigit() and len(context) <= _MAX_ROUND_DIGITS):
            return f"{m.type.name} context {context[:20]!r} is not a read round number"
    elif m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
        if context not in _VOTE_CONTEXTS:
            return f"{m.type.name} context {context[:20]!r} is not a known marker"
    elif m.type not in (MsgType.READ_INDEX, MsgType.READ_INDEX_RESP):
        return f"a {m.type.name} carries no context"
    return None


def _check_append_entries(m: Message) -> Optional[str]:
    if m.index + len(m.entries) > MAX_INDEX:
        return f"entries after index {m.index} would pass index {MAX_INDEX}"
    previous_term = m.log_term
    for offset, entry in enumerate(m.entries):
        expected = m.index + 1 + offset
        if entry.index != expected:
            return f"entry {offset} has index {entry.index}, expected {expected} (after index {m.index})"
        if not previous_term <= entry.term <= m.term:
            return (f"entry {entry.index} has term {entry.term}, outside {previous_term}..{m.term} "
                    "(terms never decrease along a log nor pass the leader's)")
        previous_term = entry.term
        data = entry.data
        if data and data[0] == 0:  # a configuration entry's first byte (membership.MARKER)
            reason = membership.check_entry(data)
            if reason is not None:
                return f"entry {entry.index}: {reason}"
    return None


def _check_proposals(m: Message) -> Optional[str]:
    for entry in m.entries:
        if entry.term or entry.index:
            return "a proposal carries a term or an index (the leader assigns them)"
        if not entry.data:
            return "an empty proposal (only a leader writes the no-op that opens its term)"
        if membership.is_configuration(entry.data):
            return "a configuration change as a proposal (changes are proposed at the leader)"
    return None


class DropCounter:
    """How often messages were dropped, and whether this drop should be logged: the first
    few and then one per power of two, so a hostile peer cannot fill the disk with log lines
    yet an operator still sees that drops continue and how many."""

    FIRST_LOGGED = 10

    def __init__(self) -> None:
        self.count = 0

    def record(self) -> bool:
        """Count one drop; True if it should be logged."""
        self.count += 1
        n = self.count
        return n <= self.FIRST_LOGGED or (n & (n - 1)) == 0
