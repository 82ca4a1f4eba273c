"""What travels between simulated clients and replicas (the simulation's stand-in for gRPC)."""
from typing import NamedTuple, Optional

from replichat.raft.messages import Entry
from replichat.sim.chat_model import Input, Output


class Request(NamedTuple):
    client: int
    client_id: str
    request_seq: int
    # One client operation may take several attempts; answers to old attempts still count.
    op_id: int
    attempt: int
    input: Input
    # The generation (create index) of the account whose credential the client presents as
    # the input's principal; 0 when it acts as nobody.
    generation: int = 0


class Reply(NamedTuple):
    request: Request
    # None: UNAVAILABLE (no quorum in time, no leader): the client retries.
    output: Optional[Output]
    # For a write: the log entry whose application produced the answer.
    entry: Optional[Entry] = None
    # For a create that made an account: its generation, which the creator's credential is for.
    generation: int = 0
