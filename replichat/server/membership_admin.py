"""The operator's side of membership changes on one replica: the `Members` view every client
may read, and `ChangeMembership`, an admin operation guarded by the cluster's admin token.

Why a token (and not, say, client certificates from the cluster CA): clients already reach
the gRPC port with server-side TLS only, and asking every operator's tool to carry a
certificate and key would add a file pair to every command; a random 256-bit token in a 0600
file, like etcd's root password or a Kubernetes bootstrap token, is one file, is created by
the local cluster by itself (DATA/admin.token), and its check costs a constant-time compare.
A replica started without --admin-token-file answers admin calls PERMISSION_DENIED saying how
to enable them: nobody, not even an operator, can change the membership through it.

What the leader does with a change is raft/membership.py's (single-server changes, the
leader's-term-commit guard); this module validates the request, checks the token, and turns
the node's answer into the RPC's.
"""
import hmac
import logging
import os
import secrets
import stat
from typing import Callable, Dict, Mapping, Optional

from replichat.errors import ChatError, Code
from replichat.proto import chat_pb2
from replichat.raft.core import Role
from replichat.raft.membership import MAX_ADDRESS_CHARS, MAX_ID, Change, MembershipError
from replichat.raft.validate import DropCounter
from replichat.runtime.node import Node

log = logging.getLogger(__name__)

TOKEN_FILE_NAME = "admin.token"
# A token shorter than this is refused at start: it could be guessed.
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 256
DISABLED_HELP = (
    "membership changes are disabled on replica {replica}: it was started without --admin-token-file. "
    "Start every replica with --admin-token-file FILE (the local cluster does this by itself, DATA/admin.token) "
    "and give the same token to `server.py members ... --admin-token-file FILE`"
)
_KINDS = {
    chat_pb2.ChangeMembershipRequest.ADD_LEARNER: Change.add_learner,
    chat_pb2.ChangeMembershipRequest.PROMOTE: Change.promote,
    chat_pb2.ChangeMembershipRequest.REMOVE: Change.remove,
}


class TokenError(Exception):
    """The admin token file cannot be used; the message says why."""


def create_token_file(path: str) -> str:
    """Write a new random admin token to `path` (mode 0600) unless one is there; return it."""
    if os.path.exists(path):
        return read_token_file(path)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    return token


def read_token_file(path: str) -> str:
    """The token in `path` (surrounding whitespace ignored). Refuses a file others may read
    or write, and a token too short to be secret."""
    try:
        mode = os.stat(path).st_mode
        with open(path) as f:
            token = f.read(MAX_TOKEN_CHARS + 2).strip()
    except (OSError, UnicodeDecodeError) as error:
        raise TokenError(f"cannot read the admin token file {path}: {error}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenError(f"the admin token file {path} may be read by others (mode {oct(mode & 0o777)}): chmod 600 it")
    if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS or not token.isascii() or not token.isprintable():
        raise TokenError(f"the admin token in {path} must be {MIN_TOKEN_CHARS}-{MAX_TOKEN_CHARS} printable ASCII "
                         "characters")
    return token


class MembershipAdmin:
    """`members()` and `change_membership()` of one replica's ChatService."""

    def __init__(self, node: Node, grpc_addresses: Mapping[int, str], own_wire: Callable[[], str],
                 token: Optional[str] = None, wire_addresses: Optional[Mapping[int, str]] = None) -> None:
        """grpc_addresses: the gRPC addresses this replica was started with (--cluster); the
        configuration's own addresses take precedence. own_wire: this replica's wire address.
        token: the admin token (None: admin operations disabled)."""
        self._node = node
        self._grpc = dict(grpc_addresses)
        self._wire = dict(wire_addresses or {})
        self._own_wire = own_wire
        self._token = token.encode("ascii") if token is not None else None
        self._refused = DropCounter()

    # ----------------------------------------------------------------- the view

    def members(self) -> chat_pb2.MembersResponse:
        node = self._node
        core = node.core
        if core is None:
            raise ChatError(Code.UNAVAILABLE, f"replica {node.id} is starting")
        leading = core.role is Role.LEADER
        progress = core.progress if leading else {}
        answer = chat_pb2.MembersResponse(
            replica_id=node.id, leader_id=core.leader, term=core.term, last_index=core.log.last_index,
            commit_index=core.commit_index,
        )
        for member in core.membership.members:
            if member.id == node.id:
                match = core.log.last_index if leading else 0
            else:
                match = progress[member.id].match if member.id in progress else 0
            answer.members.append(chat_pb2.MemberInfo(
                id=member.id, voter=member.voter, leader=member.id == core.leader, match_index=match,
                address=member.address("grpc") or self._grpc.get(member.id, ""),
                raft_address=member.address("raft") or node.raft_address(member.id),
                wire_address=member.address("wire") or (self._own_wire() if member.id == node.id else "")
                or self._wire.get(member.id, ""),
            ))
        return answer

    # ----------------------------------------------------------------- changes

    async def change_membership(self, request: chat_pb2.ChangeMembershipRequest) -> chat_pb2.ChangeMembershipResponse:
        self._check_token(request.admin_token)
        change = self._change_of(request)
        node = self._node
        core = node.core
        if core is None or core.role is not Role.LEADER:
            leader = core.leader if core is not None else 0
            where = f"; the leader is replica {leader} ({self._grpc_of(leader)})" if leader else "; no leader is known"
            raise ChatError(Code.UNAVAILABLE, f"replica {node.id} does not lead{where}: ask the leader")
        try:  # a change that cannot apply is refused here, with the configuration's reason
            core.membership.apply(change)
        except MembershipError as error:
            raise ChatError(Code.INVALID_ARGUMENT, str(error)) from None
        if change.kind.value == "remove" and change.id == node.id and core.membership.is_voter(node.id):
            # Hand over first: the cluster then keeps a leader throughout, rather than waiting an
            # election timeout after this one steps down on committing its own removal.
            await node.hand_over_leadership()
            now = node.core
            if now is not None and now.role is not Role.LEADER:
                raise ChatError(Code.UNAVAILABLE, f"replica {node.id} handed leadership over to replica {now.leader} "
                                                  "before its removal: ask the new leader")
            log.warning("replica %d could not hand leadership over; it removes itself as leader", node.id)
        log.info("replica %d: admin asks %s", node.id, change.describe())
        index = await node.change_membership(change)
        return chat_pb2.ChangeMembershipResponse(index=index, members=self.members())

    def _grpc_of(self, rid: int) -> str:
        core = self._node.core
        member = core.membership.member(rid) if core is not None else None
        return (member.address("grpc") if member is not None else "") or self._grpc.get(rid, "") or "address unknown"

    def _check_token(self, given: str) -> None:
        if self._token is None:
            raise ChatError(Code.PERMISSION_DENIED, DISABLED_HELP.format(replica=self._node.id))
        # Constant time: how much of a guess matched must not show in the answer's timing.
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self._token):
            if self._refused.record():  # the first ones, then one per power of two: no log flood
                log.warning("replica %d refused a membership change: wrong admin token (%d so far)",
                            self._node.id, self._refused.count)
            raise ChatError(Code.PERMISSION_DENIED, "wrong admin token: membership changes need the cluster's "
                                                    "admin token (--admin-token-file)")

    @staticmethod
    def _change_of(request: chat_pb2.ChangeMembershipRequest) -> Change:
        make = _KINDS.get(request.kind)
        if make is None:
            raise ChatError(Code.INVALID_ARGUMENT, f"unknown membership change kind {request.kind}")
        if not 0 < request.id <= MAX_ID:
            raise ChatError(Code.INVALID_ARGUMENT, f"replica id {request.id} is not in 1..{MAX_ID}")
        if request.kind != chat_pb2.ChangeMembershipRequest.ADD_LEARNER:
            if request.address or request.raft_address or request.wire_address:
                raise ChatError(Code.INVALID_ARGUMENT, "addresses go only with adding a replica")
            return make(request.id)  # type: ignore[operator]
        addresses: Dict[str, str] = {}
        for kind, address in (("grpc", request.address), ("raft", request.raft_address), ("wire", request.wire_address)):
            if address:
                problem = address_problem(address)
                if problem is not None:
                    raise ChatError(Code.INVALID_ARGUMENT, f"{kind} address: {problem}")
                addresses[kind] = address
        if "grpc" not in addresses or "raft" not in addresses:
            raise ChatError(Code.INVALID_ARGUMENT, "adding a replica needs its gRPC and Raft addresses")
        return make(request.id, addresses)  # type: ignore[operator]


def address_problem(address: str) -> Optional[str]:
    """Why `address` is not HOST:PORT, or None."""
    if len(address) > MAX_ADDRESS_CHARS:
        return f"longer than {MAX_ADDRESS_CHARS} characters"
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"{address[:60]!r} is not HOST:PORT with PORT 1-65535"
    if not address.isascii() or not address.isprintable() or " " in address:
        return f"{address[:60]!r} has characters an address cannot have"
    return None
