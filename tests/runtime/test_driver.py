"""Directed tests of the runtime driver's rules (the simulator searches; these pin each rule).

The driver is sans-IO, so each test plays the shell by hand: feed, next_step, persist (a list),
persisted, apply (a toy state machine), applied, advance.
"""
from typing import Any, Hashable, List, Optional, Tuple

import pytest

from replichat.raft.core import Config, RaftCore, Role
from replichat.raft.messages import Entry, HardState, Message, MsgType
from replichat.runtime.driver import Driver, RecoveryError, Step, recover_core


class Answers:
    """The Listener: records what the driver answered."""

    def __init__(self) -> None:
        self.writes: List[Tuple[Hashable, Any]] = []
        self.write_timeouts: List[Hashable] = []
        self.reads: List[Tuple[bytes, int]] = []
        self.read_timeouts: List[bytes] = []
        self.indexes: List[Hashable] = []
        self.leaders: List[int] = []

    def write_applied(self, key: Hashable, entry: Entry, result: Any) -> None:
        self.writes.append((key, result))

    def write_timed_out(self, key: Hashable) -> None:
        self.write_timeouts.append(key)

    def read_ready(self, context: bytes, index: int) -> None:
        self.reads.append((context, index))

    def read_timed_out(self, context: bytes) -> None:
        self.read_timeouts.append(context)

    def index_applied(self, token: Hashable) -> None:
        self.indexes.append(token)

    def leader_changed(self, core: RaftCore) -> None:
        self.leaders.append(core.leader)


def key_of(result: Tuple[int, bytes]) -> Optional[Hashable]:
    """Toy state machine: the result is (index, data); the key is the data itself."""
    return result[1] or None


def make(voters: Tuple[int, ...] = (1,), me: int = 1) -> Tuple[Driver, Answers]:
    answers = Answers()
    core = RaftCore(Config(id=me, voters=voters, seed=1))
    return Driver(core, key_of, answers, retry_interval=2.0, request_timeout=8.0), answers


def run_step(driver: Driver, disk: List[Step], apply: bool = True) -> Optional[Step]:
    """One full turn of the cycle; returns the step (None: nothing to do)."""
    driver.feed()
    step = driver.next_step()
    if step is None:
        return None
    disk.append(step)
    driver.persisted(step)
    if step.ready.committed:
        if not apply:
            return step
        driver.applied(step, [(i, d) for i, d in step.committed_items()])
    driver.advance(step)
    return step


def settle(driver: Driver) -> None:
    disk: List[Step] = []
    while run_step(driver, disk) is not None:
        pass


def single_leader() -> Tuple[Driver, Answers]:
    driver, answers = make()
    driver.core.campaign()
    settle(driver)
    assert driver.core.role is Role.LEADER
    return driver, answers


def test_a_follower_acknowledges_only_once_persisted() -> None:
    driver, _ = make(voters=(1, 2, 3))
    append = Message(MsgType.APPEND, 2, 1, 1, log_term=0, index=0, entries=(Entry(1, 1, b"x"),), commit=0)
    driver.step_messages([append])
    driver.feed()
    step = driver.next_step()
    assert step is not None and step.must_persist and step.entries == [Entry(1, 1, b"x")]
    assert step.early == [], "nothing a follower says may leave before its Ready is durable"
    late = driver.persisted(step)
    assert [m.type for m in late] == [MsgType.APPEND_RESP] and late[0].index == 1


def test_a_leader_sends_its_appends_while_it_persists() -> None:
    answers = Answers()
    core = RaftCore(Config(id=1, voters=(1, 2, 3), seed=1, pre_vote=False))
    driver = Driver(core, key_of, answers, retry_interval=2.0, request_timeout=8.0)
    core.campaign()
    settle(driver)
    driver.step_messages([Message(MsgType.VOTE_RESP, 2, 1, core.term)])
    settle(driver)
    assert core.role is Role.LEADER
    noop = core.log.last_index
    driver.step_messages([Message(MsgType.APPEND_RESP, peer, 1, core.term, index=noop) for peer in (2, 3)])
    settle(driver)
    driver.propose(b"k", b"k", now=0.0)
    driver.feed()
    step = driver.next_step()
    assert step is not None and step.entries == [Entry(core.term, noop + 1, b"k")]
    assert sorted(m.dst for m in step.early if m.type is MsgType.APPEND and m.entries) == [2, 3]


def test_a_write_is_answered_once_applied_with_the_state_machine_result() -> None:
    driver, answers = single_leader()
    driver.propose(b"k", b"k", now=0.0)
    disk: List[Step] = []
    step = run_step(driver, disk, apply=False)  # persisted: the entry commits (one replica)
    while step is not None and not step.ready.committed:
        step = run_step(driver, disk, apply=False)
    assert step is not None and answers.writes == []
    driver.applied(step, [(i, d) for i, d in step.committed_items()])
    assert answers.writes == [(b"k", (step.ready.committed[-1].index, b"k"))]


def test_a_read_waits_until_its_read_index_is_applied_here() -> None:
    driver, answers = make(voters=(1, 2, 3))
    driver.step_messages([Message(MsgType.HEARTBEAT, 2, 1, 1)])
    settle(driver)
    driver.read(b"r", now=0.0)
    settle(driver)
    # The leader says: serve once index 1 is applied. This replica has not even received it.
    driver.step_messages([Message(MsgType.READ_INDEX_RESP, 2, 1, 1, index=1, context=b"r")])
    settle(driver)
    assert answers.reads == [] and driver.applied_index == 0
    driver.step_messages([Message(MsgType.APPEND, 2, 1, 1, entries=(Entry(1, 1, b"x"),), commit=1)])
    driver.feed()
    step = driver.next_step()
    assert step is not None and step.ready.committed == [Entry(1, 1, b"x")]
    driver.persisted(step)
    driver.applied(step, [(i, d) for i, d in step.committed_items()])
    assert answers.reads == [], "answered only once the step that applied it advanced"
    driver.advance(step)
    assert answers.reads == [(b"r", 1)]


def test_pending_writes_and_reads_go_to_a_new_leader() -> None:
    driver, answers = make(voters=(1, 2, 3))
    driver.propose("k", b"k", now=0.0)
    driver.read(b"r", now=0.0)
    settle(driver)  # no leader known: nothing could be sent
    driver.step_messages([Message(MsgType.HEARTBEAT, 2, 1, 1)])
    driver.feed()
    step = driver.next_step()
    assert step is not None
    sent = step.early + driver.persisted(step)
    assert answers.leaders == [2]
    assert [m.entries for m in sent if m.type is MsgType.PROPOSE] == [(Entry(0, 0, b"k"),)]
    assert [m.context for m in sent if m.type is MsgType.READ_INDEX] == [b"r"]


def test_requests_are_retried_then_given_up_at_their_deadline() -> None:
    driver, answers = make(voters=(1, 2, 3))
    driver.step_messages([Message(MsgType.HEARTBEAT, 2, 1, 1)])
    settle(driver)
    driver.propose("k", b"k", now=0.0)
    driver.read(b"r", now=0.0)
    settle(driver)
    driver.expire(1.0)
    assert not driver.has_input(), "nothing is due before the retry interval"
    driver.expire(2.5)
    driver.feed()
    step = driver.next_step()
    assert step is not None
    sent = driver.persisted(step)
    assert {m.type for m in sent} == {MsgType.PROPOSE, MsgType.READ_INDEX}
    driver.advance(step)
    driver.expire(8.0)
    assert answers.write_timeouts == ["k"] and answers.read_timeouts == [b"r"]
    assert driver.pending_writes == 0 and driver.pending_reads == 0


def test_watch_applied_fires_once_the_index_is_applied() -> None:
    driver, answers = single_leader()
    driver.watch_applied(driver.applied_index, "now")
    assert answers.indexes == ["now"]
    driver.watch_applied(driver.applied_index + 1, "later")
    assert answers.indexes == ["now"]
    driver.propose("k", b"k", now=0.0)
    settle(driver)
    assert answers.indexes == ["now", "later"]


def test_recovery_refuses_a_state_machine_ahead_of_the_log() -> None:
    with pytest.raises(RecoveryError):
        recover_core(Config(id=1, voters=(1,)), HardState(1, 1, 0), [Entry(1, 1, b"")], applied=2)
    core = recover_core(Config(id=1, voters=(1,)), HardState(1, 1, 0), [Entry(1, 1, b""), Entry(1, 2, b"x")], applied=2)
    assert core.log.committed == 2 and core.log.applied == 2
