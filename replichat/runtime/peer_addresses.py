"""Where a replica reaches each member's Raft port, and what to tell the operator when the
addresses it was started with and the configuration in its log disagree — pure functions, so
the rule is tested without sockets.

Precedence (README, "Changing the membership"):

  * who is a member: the configuration in effect (the latest in the log, else the one the
    snapshot recorded, else --cluster, which only a brand-new cluster uses);
  * a member's Raft address: the one this replica was given for that id at start (--peers, or
    --cluster + 200) when there is one — a per-replica view, which may go through a proxy or a
    NAT — else the one the configuration recorded (`members add --peer`). So a replica restarted
    with the command line it was first started with still reaches the members added since;
  * replicas given at start that are not members stay reachable: a replica whose log is behind
    must still answer a leader its log does not know yet;
  * a replica neither names (its log is behind: it was down while that replica was added, and
    its --peers predate it) is reached at the address it gave for itself when it connected, its
    identity proven by its certificate (transport.py, MessageBatch.sender_address).
"""
from typing import Dict, List, Mapping, Optional

from replichat.raft.membership import MAX_ADDRESS_CHARS, Membership


def raft_addresses(given: Mapping[int, str], membership: Membership,
                   introduced: Optional[Mapping[int, str]] = None) -> Dict[int, str]:
    """Every replica this one keeps a Raft link to (itself included), by the rules above.
    `introduced`: addresses replicas this one does not know gave for themselves over an
    authenticated connection (a leader added while this replica was down); the last resort."""
    wanted: Dict[int, str] = dict(given)
    for member in membership.members:
        address = given.get(member.id) or member.address("raft")
        if address:
            wanted[member.id] = address
    for rid, address in (introduced or {}).items():
        wanted.setdefault(rid, address)
    return wanted


def address_problem(address: str) -> Optional[str]:
    """Why `address` (from a peer) is not a HOST:PORT to dial, or None."""
    if not 0 < len(address) <= MAX_ADDRESS_CHARS:
        return f"an address of {len(address)} characters (1..{MAX_ADDRESS_CHARS})"
    if not address.isascii() or not address.isprintable() or " " in address:
        return f"{address[:60]!r} has characters an address cannot have"
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or len(port) > 5 or not 0 < int(port) <= 65535:
        return f"{address[:60]!r} is not HOST:PORT with PORT 1-65535"
    return None


def disagreements(self_id: int, given: Mapping[int, str], membership: Membership) -> List[str]:
    """One clause per way --peers and the configuration disagree (empty: they agree), each saying
    what this replica does about it."""
    clauses: List[str] = []
    members = {m.id: m for m in membership.members if m.id != self_id}
    missing = [m for rid, m in sorted(members.items()) if rid not in given]
    located = [f"{m.id}={m.address('raft')}" for m in missing if m.address("raft")]
    if located:
        clauses.append(f"{_some('member', located)} not in --peers: it reaches them at the Raft addresses "
                       "recorded in its log")
    unlocated = [str(m.id) for m in missing if not m.address("raft")]
    if unlocated:
        clauses.append(f"{_some('member', unlocated)} in neither --peers nor the log's addresses: it cannot "
                       "reach them (give their Raft addresses in --peers)")
    former = [str(rid) for rid in sorted(given) if rid != self_id and rid not in members]
    if former:
        clauses.append(f"{_some('replica', former)} in --peers but no longer in the configuration: it keeps "
                       "their links (harmless; drop them from --peers)")
    for rid, member in sorted(members.items()):
        recorded = member.address("raft")
        if rid in given and recorded and given[rid] != recorded:
            clauses.append(f"replica {rid} is at {given[rid]} in --peers but {recorded} in the log: it uses "
                           f"{given[rid]} (correct --peers if replica {rid} moved)")
    return clauses


def _some(noun: str, items: List[str]) -> str:
    """"member 6 is" / "members 4, 5 are"."""
    return f"{noun} {items[0]} is" if len(items) == 1 else f"{noun}s {', '.join(items)} are"
