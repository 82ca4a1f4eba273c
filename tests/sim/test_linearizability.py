"""The linearizability checker: it must reject real anomalies and accept valid concurrency.

Hand-written histories pin down the anomalies the service must never show (stale reads, lost
writes, duplicated applies); a brute-force oracle (every order, every subset of unknown
operations) checks the search itself on many small random histories.
"""
import itertools
from typing import List, Optional, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replichat.sim.chat_model import (
    EXISTS,
    NOT_FOUND,
    OK,
    Ack,
    Connect,
    Create,
    Delete,
    Fetch,
    Input,
    ListUsers,
    Model,
    Send,
    key_of,
)
from replichat.sim.linearizability import Operation, check_history


def op(client: int, call: float, ret: Optional[float], input: Input, output: Optional[tuple]) -> Operation:
    return Operation(client, call, ret, input, output)


def unknown(client: int, call: float, input: Input) -> Operation:
    return Operation(client, call, None, input, None)


# ---------------------------------------------------------------------- accepted


def test_sequential_history_is_linearizable() -> None:
    history = [
        op(1, 0, 1, Create("ann"), OK),
        op(1, 2, 3, Send("ann", "bob", "hi"), ("ok", 1)),
        op(1, 4, 5, Send("ann", "", "yo"), ("ok", 2)),
        op(2, 6, 7, Fetch("ann"), ("ok", ((1, "bob", "hi"), (2, "", "yo")))),
        op(2, 8, 9, Ack("ann", 1), ("ok", 1)),
        op(2, 10, 11, Connect("ann", "s1"), ("ok", 1)),
        op(1, 12, 13, ListUsers(""), ("ok", ("ann",))),
        op(1, 14, 15, Delete("ann"), ("ok", 1)),
        op(1, 16, 17, Create("ann"), OK),
        op(1, 18, 19, Send("ann", "", "again"), ("ok", 1)),  # a new user: seqs start over
    ]
    result = check_history(history)
    assert result.ok, result.explanation


def test_concurrent_operations_may_take_effect_in_either_order() -> None:
    # Two overlapping sends: whichever got seq 1 is fine, as long as they differ.
    history = [
        op(1, 0, 1, Create("ann"), OK),
        op(2, 2, 10, Send("ann", "", "a"), ("ok", 2)),
        op(3, 3, 9, Send("ann", "", "b"), ("ok", 1)),
        op(1, 11, 12, Fetch("ann"), ("ok", ((1, "", "b"), (2, "", "a")))),
    ]
    assert check_history(history).ok


def test_a_list_overlapping_a_create_may_or_may_not_see_it() -> None:
    for seen in ((), ("ann",)):
        history = [op(1, 0, 10, Create("ann"), OK), op(2, 5, 15, ListUsers(""), ("ok", seen))]
        assert check_history(history).ok


def test_racing_creates_one_wins() -> None:
    history = [op(1, 0, 10, Create("ann"), EXISTS), op(2, 1, 9, Create("ann"), OK)]
    assert check_history(history).ok


def test_list_pattern_is_a_search() -> None:
    history = [
        op(1, 0, 1, Create("ann"), OK),
        op(1, 2, 3, Create("bob"), OK),
        op(1, 4, 5, ListUsers("n"), ("ok", ("ann",))),
        op(1, 6, 7, ListUsers("^b"), ("ok", ("bob",))),
    ]
    assert check_history(history).ok


# ---------------------------------------------------------------------- unknown outcomes


def test_an_unknown_write_may_have_happened() -> None:
    history = [
        op(1, 0, 1, Create("ann"), OK),
        unknown(2, 2, Send("ann", "", "lost?")),
        op(1, 50, 51, Fetch("ann"), ("ok", ((1, "", "lost?"),))),
    ]
    assert check_history(history).ok


def test_an_unknown_write_may_never_happen() -> None:
    history = [
        op(1, 0, 1, Create("ann"), OK),
        unknown(2, 2, Send("ann", "", "lost?")),
        op(1, 50, 51, Fetch("ann"), ("ok", ())),
        op(1, 52, 53, Send("ann", "", "next"), ("ok", 1)),
    ]
    assert check_history(history).ok


def test_an_unknown_write_may_take_effect_long_after_its_call() -> None:
    history = [
        op(1, 0, 1, Create("ann"), OK),
        unknown(2, 2, Send("ann", "", "late")),
        op(1, 50, 51, Fetch("ann"), ("ok", ())),
        op(1, 60, 61, Fetch("ann"), ("ok", ((1, "", "late"),))),
    ]
    assert check_history(history).ok


def test_an_unknown_write_cannot_take_effect_before_its_call() -> None:
    history = [
        op(1, 0, 1, Create("ann"), OK),
        op(1, 2, 3, Fetch("ann"), ("ok", ((1, "", "early"),))),
        unknown(2, 10, Send("ann", "", "early")),
    ]
    assert not check_history(history).ok


def test_an_unknown_write_applies_at_most_once() -> None:
    history = [
        op(1, 0, 1, Create("ann"), OK),
        unknown(2, 2, Send("ann", "", "once")),
        op(1, 50, 51, Fetch("ann"), ("ok", ((1, "", "once"), (2, "", "once")))),
    ]
    assert not check_history(history).ok


# ---------------------------------------------------------------------- rejected


def test_stale_read_list_misses_a_completed_create() -> None:
    history = [
        op(1, 0, 10, Create("ann"), OK),
        op(2, 20, 30, ListUsers(""), ("ok", ())),
    ]
    result = check_history(history)
    assert not result.ok and not result.inconclusive
    assert "listusers" in result.explanation


def test_stale_read_fetch_misses_a_completed_send() -> None:
    history = [
        op(1, 0, 1, Create("ann"), OK),
        op(1, 2, 3, Send("ann", "", "hi"), ("ok", 1)),
        op(2, 4, 5, Fetch("ann"), ("ok", ())),
    ]
    assert not check_history(history).ok


def test_lost_write_acknowledged_send_vanishes() -> None:
    # Acknowledged with seq 1, never acked by the recipient, yet gone from the mailbox later.
    history = [
        op(1, 0, 1, Create("ann"), OK),
        op(1, 2, 3, Send("ann", "", "hi"), ("ok", 1)),
        op(2, 4, 5, Fetch("ann"), ("ok", ((1, "", "hi"),))),
        op(2, 6, 7, Fetch("ann"), ("ok", ())),
    ]
    result = check_history(history)
    assert not result.ok
    assert "ann" in result.explanation


def test_lost_write_create_forgotten() -> None:
    history = [
        op(1, 0, 1, Create("ann"), OK),
        op(2, 2, 3, Send("ann", "", "hi"), NOT_FOUND),
    ]
    assert not check_history(history).ok


def test_duplicate_apply_seq_repeats() -> None:
    history = [
        op(1, 0, 1, Create("ann"), OK),
        op(1, 2, 3, Send("ann", "", "a"), ("ok", 1)),
        op(1, 4, 5, Send("ann", "", "b"), ("ok", 1)),
    ]
    assert not check_history(history).ok


def test_duplicate_apply_seq_skips() -> None:
    # A retried send applied twice: the next send finds seq 3, not 2.
    history = [
        op(1, 0, 1, Create("ann"), OK),
        op(1, 2, 3, Send("ann", "", "a"), ("ok", 1)),
        op(1, 4, 5, Send("ann", "", "b"), ("ok", 3)),
    ]
    assert not check_history(history).ok


def test_duplicate_apply_message_shown_twice() -> None:
    history = [
        op(1, 0, 1, Create("ann"), OK),
        op(1, 2, 3, Send("ann", "", "a"), ("ok", 1)),
        op(2, 4, 5, Fetch("ann"), ("ok", ((1, "", "a"), (2, "", "a")))),
    ]
    assert not check_history(history).ok


def test_both_racing_creates_cannot_win() -> None:
    history = [op(1, 0, 10, Create("ann"), OK), op(2, 1, 9, Create("ann"), OK)]
    assert not check_history(history).ok


def test_lists_seeing_creates_in_opposite_orders_are_caught_across_users() -> None:
    """Each user's part is fine on its own; only the whole history shows that no single order
    of the two creates explains both lists (why lists forbid partitioning by user)."""
    history = [
        op(1, 0, 10, Create("ann"), OK),
        op(2, 0, 10, Create("bob"), OK),
        op(3, 1, 9, ListUsers(""), ("ok", ("ann",))),
        op(4, 1, 9, ListUsers(""), ("ok", ("bob",))),
    ]
    result = check_history(history)
    assert not result.ok and not result.inconclusive
    assert "whole history" in result.explanation


def test_error_answers_never_linearize() -> None:
    history = [op(1, 0, 1, Create("ann"), ("error", "STALE_REQUEST", "stale"))]
    assert not check_history(history).ok


def test_explanation_names_the_operation_that_cannot_be_placed() -> None:
    history = [
        op(1, 0, 1, Create("ann"), OK),
        op(1, 2, 3, Send("ann", "", "a"), ("ok", 1)),
        op(1, 4, 5, Send("ann", "", "b"), ("ok", 7)),
    ]
    explanation = check_history(history).explanation
    assert "send('ann', '', 'b')" in explanation and "('ok', 2)" in explanation


def test_budget_exhaustion_is_inconclusive_not_ok() -> None:
    history = [op(1, 0, 1, Create("ann"), OK)] + [
        unknown(c, 2, Send("ann", "", f"m{c}")) for c in range(2, 12)
    ] + [op(1, 50, 51, ListUsers(""), ("ok", ("ann",))), op(1, 52, 53, Send("ann", "", "x"), ("ok", 99))]
    result = check_history(history, budget=50)
    assert not result.ok and result.inconclusive


# ---------------------------------------------------------------------- against brute force


def brute_force(ops: Sequence[Operation]) -> bool:
    """Every subset of unknown operations, every order respecting real time, replayed."""
    names: List[str] = sorted({key_of(o.input) for o in ops if key_of(o.input)} | {"ann", "bob"})  # type: ignore[arg-type]
    model = Model(names)
    known = [o for o in ops if o.known]
    unknowns = [o for o in ops if not o.known]
    for size in range(len(unknowns) + 1):
        for extra in itertools.combinations(unknowns, size):
            chosen = known + list(extra)
            for order in itertools.permutations(chosen):
                if any(
                    b.known and b.ret is not None and b.ret < a.call
                    for i, a in enumerate(order)
                    for b in order[i + 1 :]
                ):
                    continue
                state = model.initial()
                for o in order:
                    state, output = model.step(state, o.input)
                    if o.known and output != o.output:
                        break
                else:
                    return True
    return False


_inputs = st.one_of(
    st.builds(Create, st.sampled_from(["ann", "bob"])),
    st.builds(Delete, st.sampled_from(["ann", "bob"])),
    st.builds(Send, st.sampled_from(["ann", "bob"]), st.just(""), st.sampled_from(["x", "y"])),
    st.builds(Ack, st.sampled_from(["ann", "bob"]), st.integers(0, 2)),
    st.builds(Fetch, st.sampled_from(["ann", "bob"])),
    st.builds(ListUsers, st.sampled_from(["", "^a"])),
)


@st.composite
def histories(draw: st.DrawFn) -> List[Operation]:
    """A history that really happened in some order (so often linearizable), then perhaps
    corrupted: an answer replaced, an operation's outcome hidden."""
    inputs = draw(st.lists(_inputs, min_size=1, max_size=6))
    model = Model(["ann", "bob"])
    state = model.initial()
    ops: List[Operation] = []
    for k, input in enumerate(inputs):
        state, output = model.step(state, input)
        point = 10 * k
        call = point - draw(st.integers(0, 25))
        ret = point + draw(st.integers(0, 25))
        ops.append(Operation(k % 3, call, ret, input, output))
    if draw(st.booleans()):
        victim = draw(st.integers(0, len(ops) - 1))
        wrong = draw(st.sampled_from([OK, EXISTS, NOT_FOUND, ("ok", 0), ("ok", 1), ("ok", 2), ("ok", ()), ("ok", ("ann",))]))
        ops[victim] = ops[victim]._replace(output=wrong)
    for k in draw(st.lists(st.integers(0, len(ops) - 1), max_size=2)):
        ops[k] = ops[k]._replace(ret=None, output=None)
    return ops


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_checker_agrees_with_brute_force(history: List[Operation]) -> None:
    result = check_history(history)
    assert not result.inconclusive
    assert result.ok == brute_force(history), result.explanation


@pytest.mark.parametrize("seed", range(3))
def test_simulated_histories_are_linearizable(seed: int) -> None:
    from replichat.sim.config import SimConfig
    from replichat.sim.simulation import Simulation

    simulation = Simulation(SimConfig(seed=seed, steps=200, check_linearizability=False))
    simulation.run()
    assert simulation.history
    result = check_history(simulation.history)
    assert result.ok, result.explanation
