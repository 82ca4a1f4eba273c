"""A write's proposer is answered before the leader tells the followers the write committed.

At concurrency 1 the last step of a write at the leader holds its commit: the entry to apply
and the appends that carry the new commit index to the followers. Sending those first put a
TLS write per follower (and the event loop's turn) between the commit and the client's answer
(runtime/node.py: _process_steps). In-process replicas over real sockets; bounded in time."""
import asyncio
from typing import List, Tuple

import pytest

from replichat.raft.messages import Message, MsgType
from tests.runtime.test_node_membership import InProcessCluster, until, warm_leader


@pytest.mark.timeout(60)
def test_the_proposer_is_answered_before_the_commit_notice_leaves(tmp_path) -> None:
    async def scenario() -> None:
        # Notices sent as soon as the node sends them (not held for a later append to carry:
        # test_commit_notices.py), so the transport sees the order the node chose.
        cluster = InProcessCluster(str(tmp_path), [1, 2, 3], [1, 2, 3], commit_notice_hold_s=0)
        try:
            leader = await warm_leader(cluster)  # the leader's first commit is behind us
            events: List[Tuple[str, int]] = []
            send = leader.transport.send

            def recording_send(messages: List[Message]) -> None:
                for m in messages:
                    if m.type is MsgType.APPEND:
                        events.append(("commit notice", m.commit))
                send(messages)

            leader.transport.send = recording_send  # type: ignore[assignment]
            for n in range(5):
                key = f"write-{n}".encode()
                await leader.propose(key, key)
                index = leader.applied_index
                events.append(("answered", index))
                followers = [node for node in cluster.nodes.values() if node is not leader]
                await until(lambda: all(node.applied_index >= index for node in followers),
                            f"the followers to apply write {n}")
                notices = [i for i, (kind, commit) in enumerate(events) if kind == "commit notice" and commit >= index]
                answer = events.index(("answered", index))
                assert notices, f"no append told the followers that {index} committed: {events}"
                assert answer < notices[0], f"write {n} (index {index}) was answered after its commit notice left: {events}"
        finally:
            await cluster.stop_all()

    asyncio.run(scenario())
