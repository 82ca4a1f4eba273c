"""The runtime driver's membership API: a change proposed at the leader is answered once
applied here, refused changes are answered at once with the reason, and configuration entries
reach the state machine as no-ops."""
from typing import Any, Hashable, List, Tuple

from replichat.raft import membership as conf
from replichat.raft.core import Config, RaftCore
from replichat.raft.membership import Change
from replichat.raft.messages import Entry
from replichat.runtime.driver import Driver, Step


class Answers:
    def __init__(self) -> None:
        self.changes: List[Tuple[Hashable, int, str]] = []

    def write_applied(self, key: Hashable, entry: Entry, result: Any) -> None:
        pass

    def write_timed_out(self, key: Hashable) -> None:
        pass

    def read_ready(self, context: bytes, index: int) -> None:
        pass

    def read_timed_out(self, context: bytes) -> None:
        pass

    def index_applied(self, token: Hashable) -> None:
        pass

    def leader_changed(self, core: RaftCore) -> None:
        pass

    def membership_result(self, token: Hashable, index: int, error: str) -> None:
        self.changes.append((token, index, error))


def cycle(driver: Driver, applied: List[Tuple[int, bytes]]) -> None:
    """Run the driver's cycle until it is idle, as a single replica's shell would."""
    for _ in range(20):
        driver.feed()
        step = driver.next_step()
        if step is None:
            return
        driver.persisted(step)
        items = step.committed_items()
        if items:
            applied.extend(items)
            driver.applied(step, [(i, d) for i, d in items])
        driver.advance(step)


def single_leader() -> Tuple[Driver, Answers, List[Tuple[int, bytes]]]:
    answers = Answers()
    core = RaftCore(Config(id=1, voters=(1,), seed=1))
    driver = Driver(core, lambda result: None, answers, retry_interval=2.0, request_timeout=8.0)
    applied: List[Tuple[int, bytes]] = []
    core.campaign()
    cycle(driver, applied)
    return driver, answers, applied


def test_a_change_is_answered_once_applied_and_reaches_the_state_machine_as_a_no_op() -> None:
    driver, answers, applied = single_leader()
    driver.change_membership("t1", Change.add_learner(2, {"raft": "h:2"}), now=0.0)
    cycle(driver, applied)
    ((token, index, error),) = answers.changes
    assert (token, error) == ("t1", "") and index == driver.core.latest_change_index
    assert driver.membership.learners == {2}
    assert conf.is_configuration(driver.core.log.slice(index, index + 1)[0].data)
    assert (index, b"") in applied and all(not conf.is_configuration(d) for _, d in applied)


def test_a_refused_change_is_answered_at_once_with_the_reason() -> None:
    driver, answers, applied = single_leader()
    driver.change_membership("t1", Change.promote(7), now=0.0)
    cycle(driver, applied)
    assert answers.changes == [("t1", 0, "replica 7 is not a member: add it as a learner first")]


def test_a_change_that_cannot_commit_times_out() -> None:
    answers = Answers()
    core = RaftCore(Config(id=1, voters=(1, 2, 3), seed=1))
    driver = Driver(core, lambda result: None, answers, retry_interval=2.0, request_timeout=8.0)
    driver.change_membership("t1", Change.remove(3), now=0.0)
    cycle(driver, [])
    assert answers.changes == [("t1", 0, "not the leader (leader: unknown)")]
    driver.change_membership("t2", Change.remove(3), now=0.0)
    driver.expire(9.0)
    assert answers.changes[-1] == ("t2", 0, "the change remove 3 could not be proposed in time")


def test_committed_items_hide_configuration_entries_from_the_state_machine() -> None:
    from replichat.raft.core import Ready

    data = conf.encode(conf.Membership.of_voters([1]))
    ready = Ready(None, [], [], [Entry(1, 1, b""), Entry(1, 2, data), Entry(1, 3, b"cmd")], [])
    assert Step(ready, [], []).committed_items() == [(1, b""), (2, b""), (3, b"cmd")]
