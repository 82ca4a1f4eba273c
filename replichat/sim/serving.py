"""How a simulated replica answers clients — the part of node.py above the core.

A write is proposed, re-proposed every `server_retry` and whenever a new leader appears (the
request id makes repeats harmless), answered once this replica applies it, and given up with
UNAVAILABLE after `server_timeout`. A read asks the core for a ReadIndex (again on retry and on
a new leader) and is answered from the chat state once this replica has applied that index.
Everything here dies with the process: a crash leaves clients to time out.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from replichat.chat.state import Applied, ChatState
from replichat.raft.messages import Entry, ReadState
from replichat.sim.commands import command_for, output_of, read, request_key
from replichat.sim.requests import Reply, Request
from replichat.sim.world import World


class _WriteWaiter:
    __slots__ = ("request", "data", "deadline", "retry_at")

    def __init__(self, request: Request, data: bytes, deadline: int, retry_at: int) -> None:
        self.request = request
        self.data = data
        self.deadline = deadline
        self.retry_at = retry_at


class _ReadWaiter:
    __slots__ = ("request", "deadline", "retry_at", "index")

    def __init__(self, request: Request, deadline: int, retry_at: int) -> None:
        self.request = request
        self.deadline = deadline
        self.retry_at = retry_at
        self.index: Optional[int] = None


class RequestServer:
    def __init__(
        self,
        world: World,
        rid: int,
        propose: Callable[[bytes], None],
        read_index: Callable[[bytes], None],
        reply: Callable[[Reply], None],
    ) -> None:
        self.world = world
        self.id = rid
        self._propose = propose
        self._read_index = read_index
        self._reply = reply
        self._writes: Dict[Tuple[str, int], _WriteWaiter] = {}
        self._reads: Dict[bytes, _ReadWaiter] = {}
        self._read_numbers = 0

    def forget(self) -> None:
        """The process died: nobody will answer these."""
        self._writes.clear()
        self._reads.clear()

    def write(self, request: Request) -> None:
        now = self.world.now
        timing = self.world.timing
        key = (request.client_id, request.request_seq)
        # Like node.py: the proposer stamps its clock into the command.
        data = command_for(request.input, request.client_id, request.request_seq, now).SerializeToString()
        waiter = self._writes.get(key)
        if waiter is None:
            self._writes[key] = _WriteWaiter(request, data, now + timing.server_timeout, now + timing.server_retry)
        else:
            waiter.request = request  # answer the newest attempt
        self._propose(data)

    def read(self, request: Request, life: int) -> None:
        self._read_numbers += 1
        ctx = f"{self.id}.{life}.{self._read_numbers}".encode()
        now = self.world.now
        timing = self.world.timing
        self._reads[ctx] = _ReadWaiter(request, now + timing.server_timeout, now + timing.server_retry)
        self._read_index(ctx)

    def new_leader(self) -> None:
        """node.py re-proposes every pending write (and re-asks pending reads) on a new leader."""
        for waiter in self._writes.values():
            self._propose(waiter.data)
        for ctx, read_waiter in self._reads.items():
            if read_waiter.index is None:
                self._read_index(ctx)

    def applied(self, entries: Sequence[Entry], applied: Sequence[Applied]) -> None:
        for entry, item in zip(entries, applied):
            key = request_key(item.command)
            waiter = self._writes.pop(key, None) if key is not None else None
            if waiter is not None and item.result is not None:
                self._reply(Reply(waiter.request, output_of(waiter.request.input, item.result), entry))

    def read_states(self, states: List[ReadState]) -> None:
        for state in states:
            waiter = self._reads.get(state.context)
            if waiter is not None and waiter.index is None:
                waiter.index = state.index

    def serve_reads(self, state: ChatState) -> None:
        if not self._reads:
            return
        applied = state.last_applied
        for ctx in [c for c, w in self._reads.items() if w.index is not None and w.index <= applied]:
            waiter = self._reads.pop(ctx)
            self._reply(Reply(waiter.request, read(state, waiter.request.input)))

    def timers(self) -> None:
        now = self.world.now
        timing = self.world.timing
        for key in list(self._writes):
            waiter = self._writes[key]
            if now >= waiter.deadline:
                del self._writes[key]
                self._reply(Reply(waiter.request, None))
            elif now >= waiter.retry_at:
                waiter.retry_at = now + timing.server_retry
                self._propose(waiter.data)
        for ctx in list(self._reads):
            read_waiter = self._reads[ctx]
            if now >= read_waiter.deadline:
                del self._reads[ctx]
                self._reply(Reply(read_waiter.request, None))
            elif read_waiter.index is None and now >= read_waiter.retry_at:
                read_waiter.retry_at = now + timing.server_retry
                self._read_index(ctx)
