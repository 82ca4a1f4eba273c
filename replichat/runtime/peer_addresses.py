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
    must still answer a leader its log does not know yet.
"""
from typing import Dict, List, Mapping

from replichat.raft.membership import Membership


def raft_addresses(given: Mapping[int, str], membership: Membership) -> Dict[int, str]:
    """Every replica this one keeps a Raft link to (itself included), by the rules above."""
    wanted: Dict[int, str] = dict(given)
    for member in membership.members:
        address = given.get(member.id) or member.address("raft")
        if address:
            wanted[member.id] = address
    return wanted


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
