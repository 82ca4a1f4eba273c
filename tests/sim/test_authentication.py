"""The simulator's clients act as authenticated users: the model, the checker and the stamped
commands agree with the state machine on who may act as whom.

The model (chat_model) says a stamped write whose principal is not the user it acts as, or
whose credential is for an account re-created since, is refused (UNAUTHENTICATED) and changes
nothing; the checker must reject a history where such a write took effect. The commands the
simulated replicas propose are stamped by the service's own function, and the real state
machine answers them as the model does.
"""
from typing import Optional

from replichat.chat.auth import stamp_principal
from replichat.chat.state import ChatState
from replichat.proto import command_pb2
from replichat.sim.chat_model import NOT_FOUND, OK, UNAUTHENTICATED, Ack, Connect, Create, Delete, Fetch, Input, Send
from replichat.sim.commands import command_for, output_of
from replichat.sim.linearizability import Operation, check_history


def op(client: int, call: float, ret: Optional[float], input: Input, output: Optional[tuple]) -> Operation:
    return Operation(client, call, ret, input, output)


# ---------------------------------------------------------------------- the model and checker


def test_the_owner_acts_and_a_wrong_principal_is_refused_changing_nothing() -> None:
    history = [
        op(1, 0, 1, Create("ann", "k1"), OK),
        op(1, 2, 3, Create("bob", "k2"), OK),
        op(1, 4, 5, Send("ann", "bob", "hi", "k2"), ("ok", 1)),
        op(2, 6, 7, Ack("ann", 9, "bob", "k2"), UNAUTHENTICATED),
        op(2, 8, 9, Delete("ann", "bob", "k2"), UNAUTHENTICATED),
        op(2, 10, 11, Fetch("ann"), ("ok", ((1, "bob", "hi"),))),
        op(1, 12, 13, Ack("ann", 1, "ann", "k1"), ("ok", 1)),
        op(1, 14, 15, Delete("ann", "ann", "k1"), ("ok", 0)),
    ]
    assert check_history(history).ok


def test_a_wrong_principal_that_took_effect_is_caught() -> None:
    history = [
        op(1, 0, 1, Create("ann", "k1"), OK),
        op(1, 2, 3, Create("bob", "k2"), OK),
        op(2, 4, 5, Delete("ann", "bob", "k2"), ("ok", 0)),
    ]
    assert not check_history(history).ok


def test_a_credential_of_a_re_created_account_is_refused() -> None:
    history = [
        op(1, 0, 1, Create("ann", "k1"), OK),
        op(2, 2, 3, Delete("ann", "ann", "k1"), ("ok", 0)),
        op(2, 4, 5, Create("ann", "k2"), OK),
        op(1, 6, 7, Connect("ann", "s", "ann", "k1"), UNAUTHENTICATED),
        op(1, 8, 9, Send("bob", "ann", "x", "k1"), UNAUTHENTICATED),
    ]
    assert check_history(history).ok
    stale_accepted = history[:3] + [op(1, 6, 7, Connect("ann", "s", "ann", "k1"), ("ok", 0))]
    assert not check_history(stale_accepted).ok


def test_a_send_from_another_user_checks_the_sender_then_the_recipient() -> None:
    history = [
        op(1, 0, 1, Create("bob", "k2"), OK),
        op(1, 2, 3, Send("ann", "bob", "x", "k2"), NOT_FOUND),  # sender fine, no recipient
        op(1, 4, 5, Send("ann", "cyd", "x", "k3"), UNAUTHENTICATED),  # no such sender
    ]
    assert check_history(history).ok
    # The sender's account is gone: a send from it cannot have been delivered.
    gone = [
        op(1, 0, 1, Create("bob", "k2"), OK),
        op(1, 2, 3, Create("ann", "k1"), OK),
        op(1, 4, 5, Delete("bob", "bob", "k2"), ("ok", 0)),
        op(1, 6, 7, Send("ann", "bob", "x", "k2"), ("ok", 1)),
    ]
    assert not check_history(gone).ok


# ---------------------------------------------------------------------- stamped commands vs the state machine


def _apply(state: ChatState, index: int, op: Input, client_id: str, request_seq: int, generation: int = 0) -> tuple:
    command = command_for(op, client_id, request_seq, 0, generation)
    applied = state.apply_batch([(index, command.SerializeToString())])[0]
    assert applied.result is not None
    return output_of(op, applied.result)


def test_commands_are_stamped_like_the_service_and_the_state_machine_agrees_with_the_model() -> None:
    expected = command_pb2.Command(ack=command_pb2.Command().ack)
    stamp_principal(expected, "ann", 1)
    stamped = command_for(Ack("ann", 5, "ann", "k1"), "c", 1, 0, generation=1)
    assert (stamped.principal, stamped.principal_generation) == (expected.principal, expected.principal_generation)
    assert command_for(Create("ann", "k1"), "c", 1, 0).credential_hash
    assert not command_for(Send("ann", "", "x"), "c", 1, 0).principal  # anonymous: no principal

    state = ChatState(":memory:")
    assert _apply(state, 1, Create("ann", "k1"), "c1", 1) == OK
    assert _apply(state, 2, Create("bob", "k2"), "c2", 1) == OK
    assert _apply(state, 3, Send("ann", "bob", "hi", "k2"), "c2", 2, 2) == ("ok", 1)
    # bob (a valid principal) may not ack or delete ann's mailbox: refused, nothing changed.
    assert _apply(state, 4, Ack("ann", 9, "bob", "k2"), "c2", 3, 2) == UNAUTHENTICATED
    assert _apply(state, 5, Delete("ann", "bob", "k2"), "c2", 4, 2) == UNAUTHENTICATED
    assert state.queued_count("ann") == 1
    # ann re-created: the old account's credential (generation 1) no longer acts as ann.
    assert _apply(state, 6, Delete("ann", "ann", "k1"), "c1", 2, 1) == ("ok", 1)
    assert _apply(state, 7, Create("ann", "k3"), "c3", 1) == OK
    assert _apply(state, 8, Connect("ann", "s1", "ann", "k1"), "c1", 3, 1) == UNAUTHENTICATED
    assert _apply(state, 9, Connect("ann", "s1", "ann", "k3"), "c3", 2, 7) == ("ok", 0)
    state.close()
