"""The asyncio node changes its cluster's membership (in-process replicas over real sockets):
a replica started outside the configuration is added as a learner, caught up, promoted; the
leader removes itself and steps down; a restarted replica takes its configuration from its own
log, not from the one it was started with. Bounded in time; conditions are awaited, not slept."""
import asyncio
import logging
import os
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import pytest

from replichat.errors import ChatError
from replichat.server.launcher import free_ports
from replichat.raft.core import Role
from replichat.raft.membership import Change
from replichat.runtime.commit_notices import DEFAULT_HOLD_S
from replichat.runtime.node import Node, NodeOptions
from replichat.runtime.transport import PeerListener, start_peer_listener


class Machine:
    """A toy state machine: remembers the commands it applied (kept across restarts in memory)."""

    def __init__(self, applied: List[Tuple[int, bytes]]) -> None:
        self.applied = applied

    @property
    def last_applied(self) -> int:
        return self.applied[-1][0] if self.applied else 0

    def apply_batch(self, items: Sequence[Tuple[int, bytes]]) -> List[Any]:
        self.applied.extend(items)
        return list(items)

    def request_key(self, result: Any) -> Optional[Hashable]:
        return result[1] or None

    def close(self) -> None:
        pass


class InProcessCluster:
    def __init__(self, base: str, ids: Sequence[int], voters: Sequence[int],
                 commit_notice_hold_s: float = DEFAULT_HOLD_S) -> None:
        self.commit_notice_hold_s = commit_notice_hold_s
        ports = free_ports(len(ids))
        self.peers = {i: f"127.0.0.1:{p}" for i, p in zip(ids, ports)}
        self.voters = tuple(voters)
        self.base = base
        self.nodes: Dict[int, Node] = {}
        self.listeners: Dict[int, PeerListener] = {}
        self.applied: Dict[int, List[Tuple[int, bytes]]] = {i: [] for i in ids}
        # Each replica's state survives its restarts (the toy machine is in memory): a restart
        # re-applies nothing it already applied.

    async def start(self, i: int) -> Node:
        applied = self.applied[i]
        options = NodeOptions(tick_s=0.02, election_ticks=10, request_timeout_s=5.0, retry_interval_s=1.0,
                              snapshot_entries=0, commit_notice_hold_s=self.commit_notice_hold_s)
        node = Node(i, self.peers, os.path.join(self.base, str(i)), lambda extent: Machine(applied), options,
                    voters=self.voters)
        host, port = self.peers[i].rsplit(":", 1)
        self.listeners[i] = await start_peer_listener(i, node.deliver, host, int(port), senders=self.peers)
        await node.start()
        self.nodes[i] = node
        return node

    async def stop(self, i: int) -> None:
        await self.nodes.pop(i).stop(transfer_leadership=False)
        listener = self.listeners.pop(i)
        listener.close()
        await listener.wait_closed()

    async def stop_all(self) -> None:
        for i in list(self.nodes):
            await self.stop(i)

    def leader(self) -> Optional[Node]:
        leaders = [n for n in self.nodes.values() if n.core is not None and n.core.role is Role.LEADER]
        return leaders[0] if len(leaders) == 1 else None


async def until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Await a condition the replicas reach on their own (checked every few ms, bounded)."""
    deadline = asyncio.get_event_loop().time() + timeout
    while not condition():
        if asyncio.get_event_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def leader_of(cluster: InProcessCluster) -> Node:
    await until(lambda: cluster.leader() is not None, "a leader")
    leader = cluster.leader()
    assert leader is not None
    return leader


async def warm_leader(cluster: InProcessCluster) -> Node:
    """Start every replica of `cluster`; return its leader once its first write committed."""
    for i in cluster.peers:
        await cluster.start(i)
    leader = await leader_of(cluster)
    await leader.propose(b"warm-up", b"warm-up")
    return leader


async def change(cluster: InProcessCluster, make: Callable[[], Change]) -> int:
    """Propose at the leader; retried while the leader is too new to change anything."""
    for _ in range(100):
        leader = await leader_of(cluster)
        try:
            return await leader.change_membership(make())
        except ChatError as error:
            if "not yet committed an entry of its term" not in error.message and "not the leader" not in error.message:
                raise
            await until(lambda: leader.core is None or leader.core.log.term(leader.core.commit_index) == leader.core.term,
                        "the leader's first commit")
    raise AssertionError("no change accepted")


@pytest.mark.timeout(120)
def test_a_replica_is_added_promoted_and_the_leader_removed_while_writes_commit(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        cluster = InProcessCluster(str(tmp_path), ids=[1, 2, 3, 4], voters=[1, 2, 3])
        try:
            for i in (1, 2, 3, 4):
                await cluster.start(i)
            leader = await leader_of(cluster)
            assert leader.id != 4
            await leader.propose(b"before", b"before")
            new = cluster.nodes[4]
            assert new.core is not None and new.core.role is Role.FOLLOWER and new.core.term <= leader.core.term
            with pytest.raises(ChatError, match="is not a member"):
                await leader.change_membership(Change.promote(4))

            index = await change(cluster, lambda: Change.add_learner(4, {"raft": cluster.peers[4]}))
            await new.wait_applied(index)
            assert new.status().learners == (4,) and new.status().voters == (1, 2, 3)
            assert [d for _, d in cluster.applied[4]].count(b"before") == 1

            await change(cluster, lambda: Change.promote(4))
            leader = await leader_of(cluster)
            assert leader.status().voters == (1, 2, 3, 4)

            old = leader.id
            removal = await change(cluster, lambda: Change.remove(old))
            await until(lambda: cluster.nodes[old].core.role is not Role.LEADER, "the removed leader to step down")
            new_leader = await leader_of(cluster)
            assert new_leader.id != old and new_leader.status().voters == tuple(sorted({1, 2, 3, 4} - {old}))
            index_after, data = await new_leader.propose(b"after", b"after")
            assert data == b"after" and index_after > removal
            await until(lambda: all(n.applied_index >= removal for i, n in cluster.nodes.items() if i != old),
                        "every member to apply the removal")

            # A restart takes the configuration from the log, and says it differs from --cluster.
            survivor = next(i for i in (1, 2, 3) if i != old)
            await cluster.stop(survivor)
            restarted = await cluster.start(survivor)
            assert restarted.status().voters == tuple(sorted({1, 2, 3, 4} - {old}))
            assert "differs from the one it was started with" in caplog.text
            await restarted.wait_applied(index_after)
        finally:
            await cluster.stop_all()

    asyncio.run(scenario())
