"""A leader's empty appends (commit notices) wait briefly for a later message to carry their
commit index (runtime/commit_notices.py): the pure rules, then the node that applies them."""
import asyncio
from typing import List

import pytest

from replichat.raft.messages import Entry, Message, MsgType
from replichat.runtime.commit_notices import CommitNotices
from replichat.runtime.node import Node, NodeOptions
from tests.runtime.test_node_membership import InProcessCluster, until, warm_leader

LEADER, TERM = 1, 3


def notice(dst: int, commit: int, term: int = TERM) -> Message:
    return Message(MsgType.APPEND, LEADER, dst, term, log_term=term, index=commit, commit=commit)


def append(dst: int, commit: int, term: int = TERM) -> Message:
    return Message(MsgType.APPEND, LEADER, dst, term, log_term=term, index=commit,
                   entries=(Entry(term, commit + 1, b"x"),), commit=commit)


def heartbeat(dst: int, commit: int) -> Message:
    return Message(MsgType.HEARTBEAT, LEADER, dst, TERM, commit=commit)


def test_a_notice_is_held_until_its_time_then_handed_out_once() -> None:
    notices = CommitNotices(0.010)
    vote = Message(MsgType.VOTE_RESP, LEADER, 2, TERM)
    assert notices.outgoing([notice(2, 5), vote], now=1.0) == [vote]
    assert notices.held == 1 and notices.next_deadline() == pytest.approx(1.010)
    assert notices.due(1.009) == []
    assert notices.due(1.010) == [notice(2, 5)]
    assert notices.due(2.0) == [] and notices.held == 0 and notices.next_deadline() is None


def test_a_later_message_that_carries_the_commit_makes_the_notice_redundant() -> None:
    notices = CommitNotices(0.010)
    notices.outgoing([notice(2, 5), notice(3, 5)], now=1.0)
    # The next write's append to 2 says commit 5 too: 2's notice is dropped, 3's stays.
    assert notices.outgoing([append(2, 5)], now=1.001) == [append(2, 5)]
    # A heartbeat with the commit index does it as well.
    assert notices.outgoing([heartbeat(3, 6)], now=1.002) == [heartbeat(3, 6)]
    assert notices.held == 0 and notices.due(5.0) == []


def test_a_message_that_does_not_carry_the_commit_leaves_the_notice_held() -> None:
    notices = CommitNotices(0.010)
    notices.outgoing([notice(2, 5)], now=1.0)
    older_term = append(2, 5, term=TERM - 1)
    lower = heartbeat(2, 4)  # a heartbeat says min(match, commit): maybe less than the notice
    to_other = append(3, 9)
    assert notices.outgoing([older_term, lower, to_other], now=1.001) == [older_term, lower, to_other]
    assert notices.due(1.010) == [notice(2, 5)]


def test_a_newer_notice_replaces_the_held_one_without_waiting_longer() -> None:
    notices = CommitNotices(0.010)
    notices.outgoing([notice(2, 5)], now=1.0)
    notices.outgoing([notice(2, 6)], now=1.008)
    assert notices.held == 1
    assert notices.due(1.010) == [notice(2, 6)]  # due when the first one was


def test_hold_zero_holds_nothing() -> None:
    notices = CommitNotices(0)
    assert notices.outgoing([notice(2, 5), append(3, 5)], now=1.0) == [notice(2, 5), append(3, 5)]
    assert notices.held == 0


def _record_sends(node: Node) -> List[Message]:
    sent: List[Message] = []
    send = node.transport.send

    def recording_send(messages: List[Message]) -> None:
        sent.extend(messages)
        send(messages)

    node.transport.send = recording_send  # type: ignore[assignment]
    return sent


@pytest.mark.timeout(60)
def test_back_to_back_writes_carry_the_commit_in_their_appends_and_heartbeats(tmp_path) -> None:
    """Held for longer than the test runs: no empty append leaves the leader, and the
    followers still apply every write (the next append or a heartbeat tells them)."""
    async def scenario() -> None:
        cluster = InProcessCluster(str(tmp_path), [1, 2, 3], [1, 2, 3], commit_notice_hold_s=600.0)
        try:
            leader = await warm_leader(cluster)
            sent = _record_sends(leader)
            for n in range(20):
                key = f"write-{n}".encode()
                await leader.propose(key, key)
            index = leader.applied_index
            followers = [node for node in cluster.nodes.values() if node is not leader]
            await until(lambda: all(node.applied_index >= index for node in followers), "the followers to apply")
            empty = [m for m in sent if m.type is MsgType.APPEND and not m.entries]
            assert not empty, f"{len(empty)} empty appends left the leader: {empty[:3]}"
            assert sum(1 for m in sent if m.type is MsgType.APPEND and m.entries) >= 20 * len(followers)
        finally:
            await cluster.stop_all()

    asyncio.run(scenario())


@pytest.mark.timeout(30)
def test_the_node_sends_a_held_notice_when_its_time_is_up(tmp_path) -> None:
    async def scenario() -> None:
        hold = 0.05
        node = Node(1, {1: "127.0.0.1:1", 2: "127.0.0.1:2"}, str(tmp_path), lambda extent: None,
                    NodeOptions(commit_notice_hold_s=hold))
        left = asyncio.Event()
        sent: List[Message] = []

        def recording_send(messages: List[Message]) -> None:
            sent.extend(messages)
            left.set()

        node.transport.send = recording_send  # type: ignore[assignment]
        loop = asyncio.get_event_loop()
        started = loop.time()
        node._send([notice(2, 5)])
        assert sent == []
        await asyncio.wait_for(left.wait(), 10)
        assert sent == [notice(2, 5)]
        # Timers fire to the millisecond: at most that early.
        assert loop.time() - started >= hold - 0.002

    asyncio.run(scenario())
