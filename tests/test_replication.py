"""The replicated service under real faults: separate replica processes on 127.0.0.1,
kill -9, SIGSTOP/SIGCONT, whole-cluster restarts. Every acknowledged send must be delivered
exactly once, in order per sender; nothing is lost, nothing appears twice."""
import asyncio
import signal
from typing import Dict, List

import grpc
import pytest

from replichat.client.api import ChatClient
from replichat.errors import ChatError, Code, OutcomeUnknown
from replichat.proto import chat_pb2, chat_pb2_grpc

pytestmark = pytest.mark.timeout(180)


async def receive(session, expected: int, timeout: float) -> List[chat_pb2.Delivery]:
    """Read deliveries (acking each) until `expected` arrived or `timeout` passed."""
    got: List[chat_pb2.Delivery] = []

    async def read() -> None:
        async for event in session:
            if isinstance(event, chat_pb2.Delivery):
                got.append(event)
                session.ack(event.seq)
                if len(got) >= expected:
                    return

    try:
        await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        pass
    return got


class Tally:
    """Texts recorded by concurrent tasks, with a way to await a condition on them."""

    def __init__(self) -> None:
        self.items: List = []
        self._changed = asyncio.Condition()

    async def add(self, item: object) -> None:
        async with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    async def until(self, predicate, timeout: float = 30.0) -> None:
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.items))

        await asyncio.wait_for(wait(), timeout)


async def sender_loop(client: ChatClient, sender: str, recipient: str, stop: asyncio.Event,
                      acked: Tally, errors: List[str]) -> None:
    n = 0
    while not stop.is_set():
        text = f"{sender}:{n}"
        try:
            await client.send(recipient, text, sender=sender)
            await acked.add(text)
        except ChatError as error:
            errors.append(f"{text}: {error}")
        n += 1


async def send_until_answered(
    servers: List[str], request: chat_pb2.SendMessageRequest, deadline: float = 30.0
) -> chat_pb2.SendMessageResponse:
    """Send this exact request (its client_id and request_seq unchanged) to one replica after
    another until one answers it; a refusal other than UNAVAILABLE or a timeout fails."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    attempt = 0
    while True:
        address = servers[attempt % len(servers)]
        attempt += 1
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                return await chat_pb2_grpc.ChatStub(channel).SendMessage(request, timeout=3.0)
            except grpc.aio.AioRpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                if loop.time() > give_up:
                    raise AssertionError(f"no replica answered the retry within {deadline:g}s: {error.details()}")
        await asyncio.sleep(0.1)  # back-off between replicas, not a wait for a condition


def check_exactly_once_in_order(acked: List[str], delivered: List[chat_pb2.Delivery]) -> None:
    texts = [d.text for d in delivered]
    assert len(texts) == len(set(texts)), "a message was delivered twice"
    missing = set(acked) - set(texts)
    assert not missing, f"{len(missing)} acknowledged sends were lost, e.g. {sorted(missing)[:5]}"
    seqs = [d.seq for d in delivered]
    assert seqs == sorted(seqs), "deliveries out of sequence order"
    by_sender: Dict[str, List[int]] = {}
    for text in texts:
        sender, n = text.split(":")
        by_sender.setdefault(sender, []).append(int(n))
    for sender, numbers in by_sender.items():
        assert numbers == sorted(numbers), f"messages of {sender} out of order"


def test_kill_leader_while_clients_send(process_cluster) -> None:
    cluster = process_cluster(5)

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        async with ChatClient(cluster.servers) as setup:
            await setup.create("receiver")
            for s in ("s1", "s2", "s3"):
                await setup.create(s)
        # The receiver talks to the leader first, so the kill forces its stream to fail over.
        receiver_client = ChatClient([cluster.addresses[leader]] + [a for i, a in cluster.addresses.items() if i != leader])
        session = await receiver_client.connect("receiver")
        stop = asyncio.Event()
        acked = Tally()
        errors: List[str] = []
        clients = [ChatClient(cluster.servers[k:] + cluster.servers[:k]) for k in range(3)]
        senders = [asyncio.ensure_future(sender_loop(c, f"s{k + 1}", "receiver", stop, acked, errors))
                   for k, c in enumerate(clients)]
        delivered = Tally()

        async def reader() -> None:
            async for event in session:
                if isinstance(event, chat_pb2.Delivery):
                    await delivered.add(event)
                    session.ack(event.seq)

        reading = asyncio.ensure_future(reader())
        await acked.until(lambda items: len(items) >= 30)
        cluster.kill(leader)
        killed_at = len(acked.items)
        new_leader = await cluster.wait_for_leader(among=[i for i in cluster.alive()])
        assert new_leader != leader
        await acked.until(lambda items: len(items) >= killed_at + 30)
        stop.set()
        await asyncio.gather(*senders)
        sent = set(acked.items)
        try:
            await delivered.until(lambda items: sent <= {d.text for d in items}, timeout=20)
        except asyncio.TimeoutError:
            pass  # the check below says what is missing
        reading.cancel()
        for c in clients + [receiver_client]:
            await c.close()
        assert not errors, errors[:3]
        check_exactly_once_in_order(acked.items, delivered.items)

    asyncio.run(scenario())


def test_two_of_five_down_keeps_serving_three_down_is_a_clear_error_then_recovers(process_cluster) -> None:
    cluster = process_cluster(5)

    async def scenario() -> None:
        await cluster.wait_for_leader()
        async with ChatClient(cluster.servers) as client:
            await client.create("bob")
            assert await client.list() == ["bob"]  # ReadIndex with a quorum of 3
            cluster.kill(1)
            cluster.kill(2)
            assert await client.send("bob", "with three of five") == 1
            assert await client.list("^b") == ["bob"]  # every one of the 3 left must answer
            cluster.kill(3)
        async with ChatClient(cluster.servers, deadline=3.0) as client:
            with pytest.raises(OutcomeUnknown) as refused:
                await client.send("bob", "no quorum")
        unknown = refused.value
        assert unknown.code is Code.UNAVAILABLE
        assert "quorum" in unknown.message and "may or may not have been applied" in unknown.message
        assert unknown.client_id and unknown.request_seq
        cluster.start(3)
        # The answer said the outcome is unknown (a replica still holds the proposal and may
        # commit it once the quorum is back): resolve it by retrying the same request id. It is
        # applied once, now or before, and only then does the next message go out, so the order
        # is fixed.
        retry = chat_pb2.SendMessageRequest(
            recipient="bob", text="no quorum", client_id=unknown.client_id, request_seq=unknown.request_seq
        )
        resolved = await send_until_answered(cluster.servers, retry)
        async with ChatClient(cluster.servers) as client:
            seq = await client.send("bob", "after recovery")
            session = await client.connect("bob")
            got = await receive(session, 3, timeout=10)
            assert [d.text for d in got] == ["with three of five", "no quorum", "after recovery"]
            assert [d.seq for d in got[1:]] == [resolved.seq, seq]

    asyncio.run(scenario())


def test_sigstop_leader_is_replaced_and_steps_down_after_sigcont(process_cluster) -> None:
    cluster = process_cluster(3)

    async def scenario() -> None:
        old = await cluster.wait_for_leader()
        old_term = (await cluster.status(old)).term
        async with ChatClient(cluster.servers) as client:
            await client.create("carol")
            await client.send("carol", "before stop")
            cluster.pause(old)
            others = [i for i in cluster.addresses if i != old]
            new = await cluster.wait_for_leader(among=others)
            assert new != old
            await client.send("carol", "during stop")
            cluster.resume(old)
            agreed = await cluster.wait_for_leader(among=list(cluster.addresses))
            assert agreed == new, "the resumed old leader must not take over again"
            statuses = [await cluster.status(i) for i in cluster.addresses]
            assert sum(1 for s in statuses if s.role == "leader") == 1
            assert statuses[old - 1].term > old_term
            session = await client.connect("carol")
            got = await receive(session, 2, timeout=10)
            assert [d.text for d in got] == ["before stop", "during stop"]

    asyncio.run(scenario())


def test_whole_cluster_kill_and_restart_keeps_users_and_unread_messages(process_cluster) -> None:
    cluster = process_cluster(3)

    async def scenario() -> None:
        await cluster.wait_for_leader()
        async with ChatClient(cluster.servers) as client:
            for name in ("dave", "erin"):
                await client.create(name)
            for n in range(20):
                await client.send("erin", f"m{n}", sender="dave")
        for node_id in list(cluster.addresses):
            cluster.kill(node_id)
        cluster.start_all()
        await cluster.wait_for_leader()
        async with ChatClient(cluster.servers) as client:
            assert await client.list() == ["dave", "erin"]
            session = await client.connect("erin")
            got = await receive(session, 20, timeout=10)
            assert [d.text for d in got] == [f"m{n}" for n in range(20)]
            assert all(d.sender == "dave" for d in got)

    asyncio.run(scenario())


def test_a_replica_that_missed_many_writes_catches_up(process_cluster) -> None:
    cluster = process_cluster(3)

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        lagging = next(i for i in cluster.addresses if i != leader)
        cluster.kill(lagging)
        async with ChatClient([cluster.addresses[leader]]) as client:
            await client.create("frank")
            for n in range(300):
                await client.send("frank", f"m{n}")
        status = await cluster.status(leader)
        cluster.start(lagging)
        await cluster.wait_for_applied(status.commit_index, [lagging])
        # Reads on the caught-up replica alone see every message.
        async with ChatClient([cluster.addresses[lagging]]) as client:
            session = await client.connect("frank")
            got = await receive(session, 300, timeout=15)
            assert [d.text for d in got] == [f"m{n}" for n in range(300)]

    asyncio.run(scenario())


def test_sigterm_of_the_leader_hands_over_leadership(process_cluster) -> None:
    cluster = process_cluster(3)

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        term = (await cluster.status(leader)).term
        async with ChatClient(cluster.servers) as client:
            await client.create("gina")
            cluster.kill(leader, signal.SIGTERM)
            assert cluster.processes[leader].returncode == 0
            others = [i for i in cluster.addresses if i != leader]
            new = await cluster.wait_for_leader(among=others)
            # A transfer is one election at the next term, not a timeout-driven scramble.
            assert (await cluster.status(new)).term == term + 1
            assert await client.send("gina", "after handover") == 1

    asyncio.run(scenario())
