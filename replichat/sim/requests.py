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


class Reply(NamedTuple):
    request: Request
    # None: UNAVAILABLE (no quorum in time, no leader): the client retries.
    output: Optional[Output]
    # For a write: the log entry whose application produced the answer.
    entry: Optional[Entry] = None
