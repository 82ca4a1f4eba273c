"""Cluster membership as Raft sees it: who votes, who only learns, where each can be reached,
and how the configuration changes — pure values and functions, no IO.

The configuration lives in the replicated log. A configuration entry is an ordinary log entry
whose data starts with `MARKER`, followed by the canonical JSON of the whole new configuration
(every member, voter or learner, with its addresses, so a replica that has never seen a new
member can still reach it). Why a reserved prefix rather than an entry-type field:

  * the runtime must recognise a configuration entry without knowing the service's command
    format, and the service must never see one. The service's commands are serialized
    protobuf messages, and a serialized protobuf message never starts with a zero byte (its
    first byte is a field tag, and field number 0 does not exist); the leader's no-op is
    empty. So a leading zero byte cannot collide with anything the log held before;
  * nothing else changes: the entry keeps its (index, term, data) shape, so the per-entry CRC
    on disk, the peer wire format, the validation of appends and every data directory written
    by an earlier version stay as they are (an old log simply has no configuration entry: its
    configuration is the one given at start, `--cluster`).

Which configuration is in effect (thesis §4.1): the latest configuration entry in the log,
committed or not; if that entry is truncated away, the one before it again; before any, the
configuration a snapshot recorded; before any snapshot, the bootstrap configuration. A replica
switches the moment the entry is appended, not when it commits.

Why single-server changes and not joint consensus: each change adds or removes at most one
voter (adding a learner or removing a learner changes no voter at all), so any majority of
the old voters and any majority of the new voters intersect, and two leaders can never be
elected in one term by disjoint majorities of the two configurations. It needs no intermediate
configuration and no second entry, which keeps the core and the operator's model simple; a
replacement is two changes (add, then remove). Joint consensus would buy arbitrary changes in
one step, which replichat does not need. The price is two rules, enforced at the leader
(`check_proposal`):

  1. at most one configuration change is uncommitted at a time: the next one is proposed
     only once the previous one committed (otherwise two single-server steps add up to a
     two-server change whose majorities need not intersect);
  2. a new leader proposes no change until it has committed an entry of its own term (the
     no-op that opens it) — the 2015 fix to the thesis (raft-dev, "bug in single-server
     membership changes"): without it, a leader can append a change on top of a log whose
     last change, from an earlier term, was never committed and is about to be overwritten,
     and the two changes together again make a two-server step.

Learners receive the log, and neither their acknowledgements nor their votes count toward a
quorum or an election (a learner may still campaign, for votes of voters only, when only it
can settle the logs: core.py, `_may_campaign`); a replica added as a learner is promoted once
it has caught up, so adding a replica never costs availability while it copies the history.
"""
import enum
import json
from typing import Dict, FrozenSet, Iterable, List, Mapping, NamedTuple, Optional, Tuple

# A configuration entry's data starts with this (module docstring: why a zero byte).
MARKER = b"\x00raft-membership\x00"
# Bounds on what a peer or a disk may hand us as a configuration.
MAX_MEMBERS = 64
MAX_ID = (1 << 31) - 1
MAX_ADDRESS_CHARS = 255
MAX_CONFIGURATION_BYTES = 64 * 1024
ADDRESS_KINDS = ("raft", "grpc", "wire")


class MembershipError(ValueError):
    """A configuration (or a change to one) that is not valid: the text says why."""


class Member(NamedTuple):
    id: int
    voter: bool
    # (kind, "host:port") pairs, kinds from ADDRESS_KINDS, sorted by kind.
    addresses: Tuple[Tuple[str, str], ...] = ()

    def address(self, kind: str) -> str:
        return dict(self.addresses).get(kind, "")


class Membership(NamedTuple):
    """One configuration: its members sorted by id."""

    members: Tuple[Member, ...]

    @classmethod
    def of_voters(cls, voters: Iterable[int], addresses: Optional[Mapping[int, Mapping[str, str]]] = None) -> "Membership":
        addresses = addresses or {}
        return cls.of(Member(v, True, _address_pairs(addresses.get(v, {}))) for v in voters)

    @classmethod
    def of(cls, members: Iterable[Member]) -> "Membership":
        """A valid configuration of these members (MembershipError if it is not)."""
        membership = cls(tuple(sorted(members)))
        reason = membership.problem()
        if reason is not None:
            raise MembershipError(reason)
        return membership

    @property
    def voters(self) -> FrozenSet[int]:
        return frozenset(m.id for m in self.members if m.voter)

    @property
    def learners(self) -> FrozenSet[int]:
        return frozenset(m.id for m in self.members if not m.voter)

    @property
    def ids(self) -> FrozenSet[int]:
        return frozenset(m.id for m in self.members)

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def member(self, rid: int) -> Optional[Member]:
        for m in self.members:
            if m.id == rid:
                return m
        return None

    def is_voter(self, rid: int) -> bool:
        member = self.member(rid)
        return member is not None and member.voter

    def describe(self) -> str:
        voters = ",".join(str(v) for v in sorted(self.voters))
        learners = ",".join(str(v) for v in sorted(self.learners))
        return f"voters {{{voters}}}" + (f" learners {{{learners}}}" if learners else "")

    def problem(self) -> Optional[str]:
        """Why this is not a valid configuration, or None."""
        if not self.members:
            return "a configuration without members"
        if len(self.members) > MAX_MEMBERS:
            return f"{len(self.members)} members, at most {MAX_MEMBERS}"
        previous = 0
        for m in self.members:
            if type(m.id) is not int or not 0 < m.id <= MAX_ID:
                return f"member id {m.id!r} is not in 1..{MAX_ID}"
            if m.id <= previous:
                return f"member {m.id} appears twice or out of order"
            previous = m.id
            if type(m.voter) is not bool:
                return f"member {m.id}: voter must be true or false"
            reason = _address_problem(m.addresses)
            if reason is not None:
                return f"member {m.id}: {reason}"
        if not any(m.voter for m in self.members):
            return "a configuration without voters"
        return None

    # ----------------------------------------------------------------- changes

    def apply(self, change: "Change") -> "Membership":
        """The configuration after `change` (MembershipError if it does not apply here)."""
        current = self.member(change.id)
        others = [m for m in self.members if m.id != change.id]
        if change.kind is ChangeKind.ADD_LEARNER:
            if current is not None:
                role = "a voter" if current.voter else "a learner"
                raise MembershipError(f"replica {change.id} is already a member ({role})")
            return Membership.of(others + [Member(change.id, False, change.addresses)])
        if change.kind is ChangeKind.PROMOTE:
            if current is None:
                raise MembershipError(f"replica {change.id} is not a member: add it as a learner first")
            if current.voter:
                raise MembershipError(f"replica {change.id} is already a voter")
            return Membership.of(others + [current._replace(voter=True)])
        if change.kind is ChangeKind.REMOVE:
            if current is None:
                raise MembershipError(f"replica {change.id} is not a member")
            if current.voter and self.voters == {change.id}:
                raise MembershipError(f"replica {change.id} is the only voter: removing it would leave no one to decide")
            return Membership.of(others)
        raise MembershipError(f"unknown change {change.kind!r}")  # pragma: no cover - enum is closed


class ChangeKind(str, enum.Enum):
    ADD_LEARNER = "add-learner"
    PROMOTE = "promote"
    REMOVE = "remove"


class Change(NamedTuple):
    kind: ChangeKind
    id: int
    # For ADD_LEARNER: where the new replica listens ((kind, "host:port") pairs).
    addresses: Tuple[Tuple[str, str], ...] = ()

    @classmethod
    def add_learner(cls, rid: int, addresses: Optional[Mapping[str, str]] = None) -> "Change":
        return cls(ChangeKind.ADD_LEARNER, rid, _address_pairs(addresses or {}))

    @classmethod
    def promote(cls, rid: int) -> "Change":
        return cls(ChangeKind.PROMOTE, rid)

    @classmethod
    def remove(cls, rid: int) -> "Change":
        return cls(ChangeKind.REMOVE, rid)

    def describe(self) -> str:
        return f"{self.kind.value} {self.id}"


def voter_difference(a: Membership, b: Membership) -> int:
    """How many voters differ between two configurations (a single-server change: <= 1)."""
    return len(a.voters ^ b.voters)


# --------------------------------------------------------------------- log entries


def is_configuration(data: bytes) -> bool:
    """Whether a log entry's data is a configuration entry (cheap: one prefix test)."""
    return data[:1] == b"\x00" and data.startswith(MARKER)


def encode(membership: Membership) -> bytes:
    """The data of a configuration entry: MARKER + canonical JSON (one encoding per value)."""
    body = {
        "members": [
            {"id": m.id, "voter": m.voter, "addresses": dict(m.addresses)} for m in membership.members
        ]
    }
    return MARKER + json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")


def decode(data: bytes) -> Membership:
    """The configuration in a configuration entry's data. Hostile bytes (from a peer or a
    disk) raise MembershipError: wrong marker, too large, not the canonical JSON of a valid
    configuration."""
    if not data.startswith(MARKER):
        raise MembershipError("not a configuration entry (no marker)")
    if len(data) > MAX_CONFIGURATION_BYTES:
        raise MembershipError(f"a configuration of {len(data)} bytes, at most {MAX_CONFIGURATION_BYTES}")
    try:
        body = json.loads(data[len(MARKER):].decode("ascii"))
    except (UnicodeDecodeError, ValueError) as error:
        raise MembershipError(f"a configuration that is not JSON: {error}") from None
    if not isinstance(body, dict) or set(body) != {"members"} or not isinstance(body["members"], list):
        raise MembershipError("a configuration must be an object with a list of members")
    if len(body["members"]) > MAX_MEMBERS:
        raise MembershipError(f"{len(body['members'])} members, at most {MAX_MEMBERS}")
    members: List[Member] = []
    for item in body["members"]:
        if not isinstance(item, dict) or set(item) != {"id", "voter", "addresses"}:
            raise MembershipError("a member must have exactly id, voter and addresses")
        addresses = item["addresses"]
        if not isinstance(addresses, dict) or not all(isinstance(v, str) for v in addresses.values()):
            raise MembershipError(f"member {item['id']!r}: addresses must map kinds to strings")
        members.append(Member(item["id"], item["voter"], tuple(sorted(addresses.items()))))
    membership = Membership(tuple(members))
    reason = membership.problem()
    if reason is not None:
        raise MembershipError(reason)
    if encode(membership) != data:
        # Sorted, compact, no extra keys: one configuration has one encoding, so replicas
        # comparing entries byte by byte agree on what they hold.
        raise MembershipError("a configuration not in canonical form")
    return membership


def check_entry(data: bytes) -> Optional[str]:
    """None if `data` is not a configuration entry or is a valid one; otherwise why not."""
    if not is_configuration(data):
        return None
    try:
        decode(data)
    except MembershipError as error:
        return str(error)
    return None


# --------------------------------------------------------------------- the leader's rules


def check_proposal(
    latest_change_index: int, committed: int, committed_in_term: bool
) -> Optional[str]:
    """Why a leader must not propose a configuration change now, or None (module docstring:
    the two rules). `latest_change_index`: the index of the last configuration entry in its
    log (0: none); `committed`: its commit index; `committed_in_term`: whether an entry of its
    current term has committed."""
    if not committed_in_term:
        return "this leader has not yet committed an entry of its term: retry in a moment"
    if latest_change_index > committed:
        return f"the configuration change at index {latest_change_index} is not committed yet: one change at a time"
    return None


# --------------------------------------------------------------------- plumbing


def _address_pairs(addresses: Mapping[str, str]) -> Tuple[Tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in addresses.items()))


def _address_problem(addresses: Tuple[Tuple[str, str], ...]) -> Optional[str]:
    if not isinstance(addresses, tuple):
        return "addresses must be pairs"
    kinds: Dict[str, str] = {}
    for pair in addresses:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            return "addresses must be (kind, address) pairs"
        kind, address = pair
        if kind not in ADDRESS_KINDS:
            return f"unknown address kind {kind!r} (known: {', '.join(ADDRESS_KINDS)})"
        if kind in kinds:
            return f"two {kind} addresses"
        if not isinstance(address, str) or not 0 < len(address) <= MAX_ADDRESS_CHARS:
            return f"{kind} address must be 1..{MAX_ADDRESS_CHARS} characters"
        if not address.isascii() or not address.isprintable() or " " in address:
            return f"{kind} address {address[:40]!r} has characters an address cannot have"
        kinds[kind] = address
    if list(kinds) != sorted(kinds):
        return "addresses not sorted by kind"
    return None
