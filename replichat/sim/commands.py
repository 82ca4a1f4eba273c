"""Translation between the checker's model operations and what the service really runs.

Writes become `command_pb2.Command`s (the bytes the Raft log carries, exactly as the chat service
builds them: the proposer stamps its clock, so a retry through another replica is different bytes for
the same request); answers (`CommandResult`s, read results) become model outputs. Real-process
tests can use `output_of` to record their histories the same way.
"""
import functools
from typing import Optional, Sequence

from replichat.chat.auth import stamp_principal
from replichat.chat.credentials import hash_token
from replichat.chat.search import compile_pattern
from replichat.chat.state import ChatState
from replichat.proto import chat_pb2, command_pb2
from replichat.sim.chat_model import (
    EXISTS,
    NOT_FOUND,
    OK,
    UNAUTHENTICATED,
    Ack,
    Connect,
    Create,
    Delete,
    Fetch,
    Input,
    ListUsers,
    Output,
    Send,
)

CommandResult = command_pb2.CommandResult


def is_read(op: Input) -> bool:
    return isinstance(op, (Fetch, ListUsers))


@functools.lru_cache(maxsize=None)
def credential_hash() -> str:
    """The stored credential of every simulated account. The simulation does not hash (a
    scrypt costs ~50 ms); which account a credential opens is the generation the client
    presents (see SimClient), as the service's Authenticator finds it after verifying."""
    return hash_token("simulated-credential", salt=bytes(16))


def command_for(op: Input, client_id: str, request_seq: int, timestamp_ms: int, generation: int = 0) -> command_pb2.Command:
    """The log command for a write, stamped like the chat service stamps it once the
    credential checked out: the principal and its account's `generation` (chat.auth); a
    create carries its new credential's hash. Request identity makes a retried write apply once."""
    cid, seq, ts = client_id, request_seq, timestamp_ms
    if isinstance(op, Create):
        create = chat_pb2.CreateUserRequest(name=op.name, client_id=cid, request_seq=seq)
        return command_pb2.Command(timestamp_ms=ts, create=create, credential_hash=credential_hash() if op.tag else "")
    if isinstance(op, Delete):
        command = command_pb2.Command(timestamp_ms=ts, delete=chat_pb2.DeleteUserRequest(name=op.name, client_id=cid, request_seq=seq))
        principal = op.principal
    elif isinstance(op, Send):
        send = chat_pb2.SendMessageRequest(recipient=op.recipient, sender=op.sender, text=op.text, client_id=cid, request_seq=seq)
        command = command_pb2.Command(timestamp_ms=ts, send=send)
        principal = op.sender if op.credential else ""
    elif isinstance(op, Ack):
        ack = chat_pb2.AckRequest(name=op.name, up_to_seq=op.up_to, client_id=cid, request_seq=seq)
        command = command_pb2.Command(timestamp_ms=ts, ack=ack)
        principal = op.principal
    elif isinstance(op, Connect):
        connect = chat_pb2.ConnectRequest(name=op.name, session_id=op.session, client_id=cid, request_seq=seq)
        command = command_pb2.Command(timestamp_ms=ts, connect=connect)
        principal = op.principal
    else:
        raise TypeError(f"not a write: {op!r}")
    if principal:
        stamp_principal(command, principal, generation)
    return command


def output_of(op: Input, result: CommandResult) -> Output:
    """The model output for a write's result; codes the model never produces stay visible."""
    if result.code == CommandResult.ALREADY_EXISTS:
        return EXISTS
    if result.code == CommandResult.NOT_FOUND:
        return NOT_FOUND
    if result.code == CommandResult.UNAUTHENTICATED:
        return UNAUTHENTICATED
    if result.code != CommandResult.OK:
        return ("error", CommandResult.Code.Name(result.code), result.error)
    if isinstance(op, Create):
        return OK
    if isinstance(op, Send):
        return ("ok", int(result.seq))
    if isinstance(op, (Delete, Ack, Connect)):
        return ("ok", int(result.count))
    raise TypeError(f"not a write: {op!r}")


def read(state: ChatState, op: Input) -> Output:
    """Serve a read from a replica's applied state (after its ReadIndex is applied)."""
    if isinstance(op, ListUsers):
        matcher = compile_pattern(op.pattern)
        return ("ok", tuple(name for name in state.names() if matcher(name)))
    if isinstance(op, Fetch):
        if not state.user_exists(op.name):
            return NOT_FOUND
        return ("ok", mailbox_of(state.pending(op.name)))
    raise TypeError(f"not a read: {op!r}")


def mailbox_of(deliveries: Sequence[chat_pb2.Delivery]) -> tuple:
    return tuple((int(d.seq), d.sender, d.text) for d in deliveries)
