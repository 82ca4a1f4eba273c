"""A real replica's /metrics (prometheus_client's text format) moves as the cluster works:
Raft state, proposals and commits, fsync/apply/propose->commit histograms, requests by method
and status, sessions and deliveries, peers' reachability and traffic, elections and leader
changes after a kill of the leader. Metrics are another process's: the test polls the scrape
until the expected value shows (bounded), the only way to wait on them."""
import asyncio
import time
import urllib.request
from typing import Callable, Dict, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from replichat.client.api import ChatClient
from replichat.errors import ChatError, Code
from replichat.proto import chat_pb2

pytestmark = pytest.mark.timeout(180)

WAIT = 20.0
Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def scrape(address: str) -> Samples:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def until(address: str, check: Callable[[Samples], bool], what: str) -> Samples:
    deadline = time.monotonic() + WAIT
    while True:
        samples = await asyncio.get_event_loop().run_in_executor(None, scrape, address)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {WAIT}s at {address}")
        await asyncio.sleep(0.1)


def test_metrics_of_a_real_cluster_move_as_it_works(process_cluster) -> None:
    cluster = process_cluster(3, metrics=True)

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        follower = min(i for i in cluster.addresses if i != leader)
        at_leader, at_follower = cluster.metrics_addresses[leader], cluster.metrics_addresses[follower]
        before = await until(at_leader, lambda s: value(s, "replichat_raft_role", role="leader") == 1,
                             "the leader's role gauge")
        assert value(before, "replichat_raft_leader_id") == leader
        assert value(before, "replichat_elections_won_total") >= 1
        assert value(before, "replichat_raft_term") >= 1
        assert value(before, "replichat_raft_first_index") >= 1
        for peer in cluster.addresses:
            if peer != leader:
                await until(at_leader, lambda s, p=str(peer): value(s, "replichat_peer_up", peer=p) == 1, f"peer {peer} up")

        sends = 5
        async with ChatClient([cluster.addresses[leader]]) as client:
            await client.create("alice")
            for k in range(sends):
                await client.send("alice", f"hello {k}")
            with pytest.raises(ChatError) as missing:
                await client.send("nobody", "hi")
            assert missing.value.code is Code.NOT_FOUND
            session = await client.connect("alice")
            delivered = 0
            async for event in session:
                if isinstance(event, chat_pb2.Delivery):
                    delivered += 1
                    session.ack(event.seq)
                    if delivered == sends:
                        break
            await session.flush_acks()
            during = await until(at_leader, lambda s: value(s, "replichat_connect_sessions") == 1, "a live session")
            await session.close()

        after = await until(at_leader, lambda s: value(s, "replichat_messages_acknowledged_total") >= sends,
                            "the acknowledgements")
        assert value(during, "replichat_connect_sessions_opened_total") >= 1
        assert value(after, "replichat_proposals_total") >= value(before, "replichat_proposals_total") + sends + 1
        assert value(after, "replichat_commits_total") >= value(before, "replichat_commits_total") + sends + 1
        # The send to a missing user is a command too: the state machine refuses it when applied.
        assert value(after, "replichat_applied_commands_total", command="send") == sends + 1
        assert value(after, "replichat_messages_delivered_total") >= sends
        assert value(after, "replichat_fsync_seconds_count") > value(before, "replichat_fsync_seconds_count")
        assert value(after, "replichat_apply_seconds_count") > value(before, "replichat_apply_seconds_count")
        assert value(after, "replichat_propose_to_commit_seconds_count") >= sends + 1
        ok = dict(transport="grpc", status="ok")
        assert value(after, "replichat_requests_total", method="send_message", **ok) == sends
        assert value(after, "replichat_requests_total", method="create_user", **ok) == 1
        assert value(after, "replichat_requests_total", method="connect", **ok) == 1
        assert value(after, "replichat_requests_total", transport="grpc", method="send_message", status="not_found") == 1
        for peer in cluster.addresses:
            if peer != leader:
                assert value(after, "replichat_peer_sent_bytes_total", peer=str(peer)) > \
                    value(before, "replichat_peer_sent_bytes_total", peer=str(peer))
                assert value(after, "replichat_peer_rtt_seconds", peer=str(peer)) > 0
        assert value(after, "replichat_peer_received_bytes_total") > value(before, "replichat_peer_received_bytes_total")
        assert value(after, "replichat_users") == 1 or (await until(at_leader, lambda s: value(s, "replichat_users") == 1,
                                                                     "the user count"))
        # A follower applied the same commands and agrees on the indexes.
        seen = await until(at_follower, lambda s: value(s, "replichat_raft_applied_index") >=
                           value(after, "replichat_raft_commit_index"), "the follower catching up")
        assert value(seen, "replichat_applied_commands_total", command="send") == sends + 1
        assert value(seen, "replichat_raft_role", role="follower") == 1

        # The leader dies: a survivor sees the peer go, a new term and a leader change.
        changes = value(seen, "replichat_leader_changes_total")
        cluster.kill(leader)
        new_leader = await cluster.wait_for_leader(among=[i for i in cluster.addresses if i != leader])
        survivor = await until(at_follower, lambda s: value(s, "replichat_leader_changes_total") > changes and
                               value(s, "replichat_peer_up", peer=str(leader)) == 0, "the leader change")
        assert value(survivor, "replichat_raft_leader_id") == new_leader
        assert value(survivor, "replichat_raft_term") > value(seen, "replichat_raft_term")
        winner = await until(cluster.metrics_addresses[new_leader],
                             lambda s: value(s, "replichat_elections_won_total") >= 1, "the winner's election")
        assert value(winner, "replichat_elections_started_total") >= 1

    asyncio.run(scenario())


def test_the_page_and_its_data_are_served(process_cluster) -> None:
    cluster = process_cluster(3, metrics=True)
    asyncio.run(cluster.wait_for_leader())
    address = cluster.metrics_addresses[1]
    with urllib.request.urlopen(f"http://{address}/", timeout=5) as page:
        html = page.read().decode()
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert '<script src="page.js">' in html and "http" not in html.split("<body>")[1]  # nothing from elsewhere
    import json
    deadline = time.monotonic() + WAIT
    while True:
        with urllib.request.urlopen(f"http://{address}/api/cluster", timeout=5) as answer:
            data = json.loads(answer.read())
        if all(r["reachable"] for r in data["replicas"]) and data["leader"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [r["id"] for r in data["replicas"]] == [1, 2, 3] and all(r["reachable"] for r in data["replicas"])
    assert data["leader"] in (1, 2, 3) and "control" not in data  # not started by server.py's launcher
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(f"http://{address}/api/control/kill/2", method="POST"), timeout=5)
    assert refused.value.code == 404
