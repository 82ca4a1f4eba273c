"""The operator's membership commands (`server.py members ...`), over the replicas' gRPC API.

`members` reads the configuration from any replica (the leader's view when one is known: it
alone knows how far each member's log matches). `add` and `remove` are admin operations
(replichat/server/membership_admin.py): they go to the leader with the cluster's admin token, and are
retried on the new leader when leadership moves meanwhile. Each step is reported through
`say`, so the command line prints what happened as it happens.
"""
import asyncio
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import grpc

from replichat.client.api import CHANNEL_OPTIONS, CODE_FOR_STATUS
from replichat.errors import ChatError, Code
from replichat.proto import chat_pb2, chat_pb2_grpc

# One RPC to one replica.
CALL_TIMEOUT_S = 5.0
# A change is retried (leader moving, a previous change still committing) this long.
CHANGE_DEADLINE_S = 30.0
# How often `add` looks at the new replica's progress while it catches up.
POLL_S = 0.2
# A learner is promoted once its log is within this many entries of the leader's.
CATCH_UP_LAG = 64

Kind = chat_pb2.ChangeMembershipRequest


class AdminError(Exception):
    """A membership command that did not do what was asked; the message says what is left."""


class MembershipClient:
    def __init__(self, servers: Sequence[str], *, ca_file: Optional[str] = None, admin_token: str = "",
                 say: Callable[[str], None] = print) -> None:
        self.servers = list(servers)
        self._credentials = None
        if ca_file:
            with open(ca_file, "rb") as f:
                self._credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        self._token = admin_token
        self._say = say
        self._channels: Dict[str, grpc.aio.Channel] = {}

    def _stub(self, address: str) -> chat_pb2_grpc.ChatStub:
        channel = self._channels.get(address)
        if channel is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.secure_channel(address, self._credentials, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
        return chat_pb2_grpc.ChatStub(channel)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()

    # ----------------------------------------------------------------- reading

    async def members(self) -> chat_pb2.MembersResponse:
        """The configuration, from the leader if any replica knows one (else from the first
        replica that answers). Also learns the members' addresses for later calls."""
        problems: List[str] = []
        first: Optional[chat_pb2.MembersResponse] = None
        for address in list(self.servers):
            try:
                view = await self._stub(address).Members(chat_pb2.MembersRequest(), timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                problems.append(f"{address}: {error.details() or error.code().name}")
                continue
            self._learn(view)
            if view.leader_id == view.replica_id:
                return view
            first = first or view
            leader = _member(view, view.leader_id)
            if leader is not None and leader.address:
                try:
                    view = await self._stub(leader.address).Members(chat_pb2.MembersRequest(), timeout=CALL_TIMEOUT_S)
                    self._learn(view)
                    if view.leader_id == view.replica_id:
                        return view
                except grpc.aio.AioRpcError as error:
                    problems.append(f"{leader.address}: {error.details() or error.code().name}")
        if first is not None:
            return first
        raise AdminError(f"no replica answered ({'; '.join(problems)})")

    def _learn(self, view: chat_pb2.MembersResponse) -> None:
        for m in view.members:
            if m.address and m.address not in self.servers:
                self.servers.append(m.address)

    async def live(self, addresses: Sequence[str]) -> Dict[str, bool]:
        """Which of these replicas answer Status now."""
        async def one(address: str) -> Tuple[str, bool]:
            try:
                await self._stub(address).Status(chat_pb2.StatusRequest(), timeout=1.0)
                return address, True
            except grpc.aio.AioRpcError:
                return address, False

        return dict(await asyncio.gather(*(one(a) for a in addresses)))

    # ----------------------------------------------------------------- changing

    async def change(self, request: chat_pb2.ChangeMembershipRequest,
                     deadline_s: float = CHANGE_DEADLINE_S) -> chat_pb2.ChangeMembershipResponse:
        """Send a change to the leader, retrying while leadership moves or the previous change
        commits; ChatError for a final refusal (PERMISSION_DENIED, INVALID_ARGUMENT)."""
        request.admin_token = self._token
        give_up = time.monotonic() + deadline_s
        last = "no leader known"
        while True:
            view = await self.members()
            leader = _member(view, view.leader_id)
            if leader is not None and leader.address:
                try:
                    return await self._stub(leader.address).ChangeMembership(request, timeout=CALL_TIMEOUT_S * 2)
                except grpc.aio.AioRpcError as error:
                    code = CODE_FOR_STATUS.get(error.code())
                    if code is not None and code is not Code.UNAVAILABLE:
                        raise ChatError(code, error.details() or error.code().name) from None
                    last = f"{leader.address}: {error.details() or error.code().name}"
            if time.monotonic() >= give_up:
                raise AdminError(f"the change was not made within {deadline_s:g} s (last: {last})")
            await asyncio.sleep(POLL_S)

    async def add(self, rid: int, address: str, raft_address: str, wire_address: str = "",
                  catch_up_timeout_s: float = 120.0) -> None:
        """Add replica `rid` as a learner, wait until it has caught up, promote it."""
        started = time.monotonic()
        existing = _member(await self.members(), rid)
        if existing is not None and existing.voter:
            raise ChatError(Code.INVALID_ARGUMENT, f"replica {rid} is already a voter")
        if existing is not None:  # a learner left by an earlier attempt: carry on from there
            self._say(f"replica {rid} is a learner already; catching it up")
        else:
            response = await self.change(Kind(kind=Kind.ADD_LEARNER, id=rid, address=address,
                                              raft_address=raft_address, wire_address=wire_address))
            self._say(f"added replica {rid} as a learner (configuration entry {response.index}); catching it up")
        give_up = time.monotonic() + catch_up_timeout_s
        while True:
            view = await self.members()
            me = _member(view, rid)
            if me is None:
                raise AdminError(f"replica {rid} is no longer a member (someone removed it)")
            if view.leader_id == view.replica_id and me.match_index and view.last_index - me.match_index <= CATCH_UP_LAG:
                break
            if time.monotonic() >= give_up:
                raise AdminError(
                    f"replica {rid} did not catch up within {catch_up_timeout_s:g} s (its log matches the leader's up "
                    f"to {me.match_index} of {view.last_index}; is it running, started with --join, and reachable at "
                    f"{raft_address}?). It was LEFT AS A LEARNER (it does not count toward any quorum): run this "
                    f"command again once it runs, or `server.py members remove {rid}`")
            await asyncio.sleep(POLL_S)
        self._say(f"replica {rid} caught up after {time.monotonic() - started:.1f} s (log at {me.match_index} "
                  f"of {view.last_index})")
        response = await self.change(Kind(kind=Kind.PROMOTE, id=rid))
        self._say(f"promoted replica {rid} to voter (configuration entry {response.index}); "
                  f"voters now: {_ids(response.members, True)}")

    async def promote(self, rid: int) -> None:
        response = await self.change(Kind(kind=Kind.PROMOTE, id=rid))
        self._say(f"promoted replica {rid} to voter (configuration entry {response.index})")

    async def remove(self, rid: int, force: bool = False) -> None:
        view = await self.members()
        target = _member(view, rid)
        if target is None:
            raise ChatError(Code.INVALID_ARGUMENT, f"replica {rid} is not a member ({_ids(view, True)} vote, "
                                                   f"{_ids(view, False) or 'no'} learners)")
        if target.voter:
            remaining = [m for m in view.members if m.voter and m.id != rid]
            live = await self.live([m.address for m in remaining if m.address])
            up = [m.id for m in remaining if live.get(m.address)]
            needed = len(remaining) // 2 + 1
            if len(up) < needed and not force:
                raise AdminError(
                    f"refusing to remove replica {rid}: the remaining voters {[m.id for m in remaining]} need "
                    f"{needed} live to decide, and only {up or 'none'} answer. The cluster would stop taking "
                    "writes; bring replicas back first, or add --force")
        response = await self.change(Kind(kind=Kind.REMOVE, id=rid))
        led = " (it led: it handed leadership over first)" if target.leader else ""
        self._say(f"removed replica {rid}{led} (configuration entry {response.index}); voters now: "
                  f"{_ids(response.members, True)}" + (f", learners: {_ids(response.members, False)}"
                                                       if _ids(response.members, False) else ""))


def _member(view: chat_pb2.MembersResponse, rid: int) -> Optional[chat_pb2.MemberInfo]:
    for m in view.members:
        if m.id == rid:
            return m
    return None


def _ids(view: chat_pb2.MembersResponse, voters: bool) -> str:
    return ",".join(str(m.id) for m in view.members if m.voter == voters)


def format_members(view: chat_pb2.MembersResponse) -> List[str]:
    """The `members` table."""
    from_leader = view.leader_id == view.replica_id
    rows = [f"{'id':>3}  {'role':<7} {'gRPC address':<21} {'Raft address':<21} {'wire address':<21} "
            f"{'match':>8} {'lag':>6}  leader"]
    for m in view.members:
        match = str(m.match_index) if from_leader else "?"
        lag = str(max(0, view.last_index - m.match_index)) if from_leader else "?"
        rows.append(f"{m.id:>3}  {'voter' if m.voter else 'learner':<7} {m.address or '?':<21} "
                    f"{m.raft_address or '?':<21} {m.wire_address or '-':<21} {match:>8} {lag:>6}  "
                    f"{'*' if m.leader else ''}")
    source = "the leader" if from_leader else f"replica {view.replica_id} (not the leader: no match indexes)"
    leader = f"replica {view.leader_id}" if view.leader_id else "none known"
    rows.append(f"term {view.term}, leader {leader}, last index {view.last_index}, commit {view.commit_index}; "
                f"as seen by {source}")
    return rows


def describe(error: Any) -> str:
    return error.message if isinstance(error, ChatError) else str(error)
