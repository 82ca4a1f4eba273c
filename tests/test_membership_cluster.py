"""Membership changes on real replica processes, driven as an operator would (the Members and
ChangeMembership RPCs through replichat/client/admin.py, the same code as `server.py members`):

* 3 replicas holding messages -> add 2 (each joins as a learner, catches up, is promoted) ->
  kill -9 two of the original three -> remove them -> remove the leader while clients send ->
  the third original dies too: every acknowledged message is delivered exactly once, and the
  clients, started with the original three addresses only, are never restarted;
* a wiped replica is replaced (removed, then a new replica with an empty directory added);
* membership changes without the admin token, or with a wrong one, are refused and change nothing.
"""
import asyncio
import time
from typing import List, Set

import pytest

from replichat.client.admin import MembershipClient
from replichat.client.api import ChatClient
from replichat.errors import ChatError, Code
from replichat.server.membership_admin import read_token_file
from replichat.proto import chat_pb2

pytestmark = pytest.mark.timeout(150)

HISTORY = 150


def admin(cluster, token: str = "") -> MembershipClient:
    return MembershipClient(cluster.servers, admin_token=token or read_token_file(cluster.admin_token_file),
                            say=lambda text: print(text, flush=True))


async def voters_and_learners(client: MembershipClient):
    view = await client.members()
    return (sorted(m.id for m in view.members if m.voter), sorted(m.id for m in view.members if not m.voter))


class Sender:
    """Sends numbered messages until stopped; remembers which were acknowledged."""

    def __init__(self, client: ChatClient, recipient: str, prefix: str) -> None:
        self.client, self.recipient, self.prefix = client, recipient, prefix
        self.acknowledged: List[str] = []
        self.attempted: Set[str] = set()
        self.failures: List[str] = []
        self._stop = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            text = f"{self.prefix}{n}"
            n += 1
            self.attempted.add(text)
            try:
                await self.client.send(self.recipient, text)
                self.acknowledged.append(text)
            except ChatError as error:  # outcome unknown: it may or may not be delivered
                self.failures.append(f"{text}: {error.message}")

    async def sent_more(self, count: int, timeout: float = 30.0) -> None:
        """Wait until `count` more sends were acknowledged (the cluster takes writes)."""
        target = len(self.acknowledged) + count
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < target:
            assert time.monotonic() < deadline, f"no progress: {self.failures[-3:]}"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._stop.set()
        await self.task


class Receiver:
    def __init__(self, session) -> None:
        self.texts: List[str] = []
        self.seqs: List[int] = []
        self.session = session
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for event in self.session:
            if isinstance(event, chat_pb2.Delivery):
                self.texts.append(event.text)
                self.seqs.append(event.seq)
                self.session.ack(event.seq)

    async def has(self, texts: List[str], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not set(texts) <= set(self.texts):
            assert time.monotonic() < deadline, f"missing {sorted(set(texts) - set(self.texts))[:5]}"
            await asyncio.sleep(0.05)


def test_grow_lose_the_originals_and_remove_the_leader_while_clients_send(process_cluster) -> None:
    cluster = process_cluster(3, admin_token=True)
    originals = sorted(cluster.addresses)
    servers = list(cluster.servers)  # what the clients are started with, and all they are told

    async def scenario() -> None:
        await cluster.wait_for_leader()
        operator = admin(cluster)
        sending = ChatClient(servers)
        reading = ChatClient(servers)
        try:
            await reading.create("rosa")
            history = [f"h{n}" for n in range(HISTORY)]
            for text in history:
                await sending.send("rosa", text)
            receiver = Receiver(await reading.connect("rosa"))
            sender = Sender(sending, "rosa", "live")

            for new in (4, 5):
                cluster.start_joining(new)
                await operator.add(new, cluster.addresses[new], cluster.peer_addresses[new], catch_up_timeout_s=60)
                await sender.sent_more(5)
            assert await voters_and_learners(operator) == ([1, 2, 3, 4, 5], [])

            leader = await cluster.wait_for_leader()
            killed = [leader] + [i for i in originals if i != leader][:1]  # the leader among them
            for node_id in killed:
                cluster.kill(node_id)
            await sender.sent_more(20)  # 3 of 5 voters left: still a quorum
            for node_id in killed:
                await operator.remove(node_id)
            assert (await voters_and_learners(operator))[0] == sorted(set(range(1, 6)) - set(killed))

            leader = await cluster.wait_for_leader(among=[i for i in cluster.alive() if i not in killed])
            await operator.remove(leader)  # hands leadership over first
            await sender.sent_more(20)
            voters, _ = await voters_and_learners(operator)
            assert leader not in voters and len(voters) == 2

            # The last original goes too: the clients know only the added replicas from the cluster.
            last_original = next(i for i in originals if i not in killed)
            if last_original in voters:
                await operator.remove(last_original)
            cluster.kill(last_original)
            await sender.sent_more(20)
            assert set(sending.servers) & {cluster.addresses[i] for i in (4, 5)}, sending.servers
            await sender.stop()

            await receiver.has(history + sender.acknowledged)
            assert len(receiver.texts) == len(set(receiver.texts)), "a message was shown twice"
            assert receiver.seqs == sorted(receiver.seqs)
            assert set(receiver.texts) <= set(history) | sender.attempted
            receiver.task.cancel()
        finally:
            await operator.close()
            await sending.close()
            await reading.close()

    asyncio.run(scenario())


def test_replace_a_wiped_replica_and_admin_changes_need_the_token(process_cluster) -> None:
    cluster = process_cluster(3, admin_token=True)

    async def scenario() -> None:
        await cluster.wait_for_leader()
        operator = admin(cluster)
        async with ChatClient(cluster.servers) as client:
            await client.create("ines")
            for n in range(50):
                await client.send("ines", f"m{n}")
            before = await voters_and_learners(operator)
            # No token, a wrong one: refused with PERMISSION_DENIED, the membership unchanged.
            for token in ("x" * 20, "wrong-but-long-enough-token"):
                intruder = MembershipClient(cluster.servers, admin_token=token)
                with pytest.raises(ChatError) as refused:
                    await intruder.change(chat_pb2.ChangeMembershipRequest(
                        kind=chat_pb2.ChangeMembershipRequest.ADD_LEARNER, id=9, address="127.0.0.1:1",
                        raft_address="127.0.0.1:2"))
                assert refused.value.code is Code.PERMISSION_DENIED and "wrong admin token" in refused.value.message
                with pytest.raises(ChatError) as refused:
                    await intruder.change(chat_pb2.ChangeMembershipRequest(
                        kind=chat_pb2.ChangeMembershipRequest.REMOVE, id=1))
                assert refused.value.code is Code.PERMISSION_DENIED
                await intruder.close()
            assert await voters_and_learners(operator) == before == ([1, 2, 3], [])

            # Replica 3's disk dies: kill -9, wipe; remove it, add a replacement (new id, empty dir).
            leader = await cluster.wait_for_leader()
            dead = next(i for i in (3, 2, 1) if i != leader)
            cluster.kill(dead)
            import shutil
            shutil.rmtree(cluster.replica_dir(dead))
            await operator.remove(dead)
            cluster.start_joining(4)
            await operator.add(4, cluster.addresses[4], cluster.peer_addresses[4], catch_up_timeout_s=60)
            assert await voters_and_learners(operator) == (sorted({1, 2, 3, 4} - {dead}), [])
            await client.send("ines", "after")
        # The replacement serves everything, from its own state.
        status = await cluster.status(4)
        await cluster.wait_for_applied(status.commit_index, [4])
        async with ChatClient([cluster.addresses[4]]) as client:
            assert await client.list() == ["ines"]
        await operator.close()

    asyncio.run(scenario())


def test_replicas_without_an_admin_token_refuse_changes(process_cluster) -> None:
    cluster = process_cluster(1)

    async def scenario() -> None:
        await cluster.wait_for_leader()
        intruder = MembershipClient(cluster.servers, admin_token="any-token-at-all-here")
        with pytest.raises(ChatError) as refused:
            await intruder.change(chat_pb2.ChangeMembershipRequest(
                kind=chat_pb2.ChangeMembershipRequest.ADD_LEARNER, id=2, address="127.0.0.1:1",
                raft_address="127.0.0.1:2"))
        assert refused.value.code is Code.PERMISSION_DENIED and "--admin-token-file" in refused.value.message
        view = await intruder.members()
        assert [(m.id, m.voter) for m in view.members] == [(1, True)]
        await intruder.close()

    asyncio.run(scenario())
