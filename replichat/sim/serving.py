"""Which simulated client request waits for which answer of the runtime's driver.

The waiting itself — re-proposal on a new leader and every `server_retry`, giving up after
`server_timeout`, reads answered only once their read index is applied — is the driver's
(replichat.runtime.driver), the same code the asyncio node runs. What is left here is what is
specific to the simulation's client model: turning a model operation into the command bytes,
remembering which Request to answer (a client's newest attempt), and turning results into
model outputs. Everything here dies with the process: a crash leaves clients to time out.
"""
from typing import Any, Callable, Dict, Hashable

from replichat.chat.machine import command_key
from replichat.chat.state import ChatState
from replichat.raft.core import RaftCore
from replichat.raft.messages import Entry
from replichat.runtime.driver import Driver
from replichat.sim.chat_model import OK, Create
from replichat.sim.commands import command_for, output_of, read
from replichat.sim.requests import Reply, Request
from replichat.sim.world import World


class ClientDesk:
    """The driver's Listener for one life of a simulated replica."""

    def __init__(self, world: World, rid: int, life: int, state: ChatState, reply: Callable[[Reply], None]) -> None:
        self.world = world
        self.id = rid
        self.life = life
        self.state = state
        self._reply = reply
        self._writes: Dict[Hashable, Request] = {}
        self._reads: Dict[bytes, Request] = {}
        self._read_numbers = 0

    def write(self, driver: Driver, request: Request) -> None:
        # Like the chat service: the proposer stamps its clock into the command.
        command = command_for(request.input, request.client_id, request.request_seq, self.world.now, request.generation)
        key = command_key(command)
        assert key is not None
        self._writes[key] = request  # answer the newest attempt
        driver.propose(key, command.SerializeToString(), self.world.now)

    def read(self, driver: Driver, request: Request) -> None:
        self._read_numbers += 1
        context = f"{self.id}.{self.life}.{self._read_numbers}".encode()
        self._reads[context] = request
        driver.read(context, self.world.now)

    # ----------------------------------------------------------------- Listener

    def write_applied(self, key: Hashable, entry: Entry, result: Any) -> None:
        request = self._writes.pop(key, None)
        if request is not None and result.result is not None:
            output = output_of(request.input, result.result)
            self._reply(Reply(request, output, entry, self._generation_made(request, output, entry)))

    def _generation_made(self, request: Request, output: tuple, entry: Entry) -> int:
        """The generation of the account a create made (its creator's credential opens it):
        this entry's index if the account there is still the one it created; else 0 (a
        repeated create answered from the exactly-once table, or the account already gone:
        the client then holds no credential for it, which costs only coverage)."""
        if not isinstance(request.input, Create) or output != OK:
            return 0
        account = self.state.account_of(request.input.name)
        return entry.index if account is not None and account[0] == entry.index else 0

    def write_timed_out(self, key: Hashable) -> None:
        request = self._writes.pop(key, None)
        if request is not None:
            self._reply(Reply(request, None))

    def read_ready(self, context: bytes, index: int) -> None:
        request = self._reads.pop(context, None)
        if request is not None:
            self._reply(Reply(request, read(self.state, request.input)))

    def read_timed_out(self, context: bytes) -> None:
        request = self._reads.pop(context, None)
        if request is not None:
            self._reply(Reply(request, None))

    def index_applied(self, token: Hashable) -> None:
        pass

    def leader_changed(self, core: RaftCore) -> None:
        pass

    def membership_result(self, token: Hashable, index: int, error: str) -> None:
        # The nemesis proposes changes and reads the outcome from the replicas' logs.
        self.world.log(f"r{self.id} membership change {token}: " + (f"applied at {index}" if index else error))
