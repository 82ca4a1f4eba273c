"""Issue 13's grow-then-kill scenario (bench/growkill.py) at CI size, and its delivery check.

* The check (bench/exactly_once.py) on hand-made histories: each way a run can go wrong (an
  acknowledged message lost, one shown twice, shown under two seqs, out of a sender's order,
  under another seq than acknowledged, never sent) is named; a clean history passes, and an
  unacknowledged message may be shown once or not at all.
* The scenario on real processes: 3 replicas holding 1,000 messages (snapshots every 300
  entries, 50 kept, so the new replicas are caught up by snapshot) grow to 5 with the real
  `server.py members add`, then the leader and another original die by kill -9 while
  clients, started with the original three addresses and never restarted, send: every
  acknowledged message is shown exactly once, in order. The full size (10^5 messages) is
  `python3 bench/growkill.py` (README).
"""
import asyncio
from typing import List

import pytest

from bench.cluster import BenchCluster
from bench.exactly_once import Delivered, Sent, check_deliveries
from bench.growkill import scenario

ACKED = {"a": [Sent("a0", 1), Sent("a1", 3)], "b": [Sent("b0", 2), Sent("b1", None), Sent("b2", 4)]}
CLEAN = [Delivered(1, "a", "a0"), Delivered(2, "b", "b0"), Delivered(3, "a", "a1"), Delivered(4, "b", "b2")]


def test_a_clean_history_passes_and_an_unacknowledged_message_may_be_shown_once() -> None:
    verdict = check_deliveries(ACKED, CLEAN)
    assert verdict.ok and verdict.problems == []
    assert (verdict.acknowledged, verdict.unacknowledged, verdict.shown) == (4, 1, 4)
    # b1's outcome was unknown: applied after all (between b0 and b2) is fine, once.
    with_b1 = CLEAN[:3] + [Delivered(4, "b", "b1"), Delivered(5, "b", "b2")]
    sent = {"a": ACKED["a"], "b": [Sent("b0", 2), Sent("b1", None), Sent("b2", 5)]}
    assert check_deliveries(sent, with_b1).ok


def test_an_acknowledged_message_never_shown_is_lost() -> None:
    verdict = check_deliveries(ACKED, [d for d in CLEAN if d.text != "a1"])
    assert not verdict.ok and verdict.lost == ["a: 'a1' (acknowledged as seq 3)"]
    assert verdict.problems == ["1 lost: a: 'a1' (acknowledged as seq 3)"]


def test_a_message_shown_under_two_seqs_is_duplicated_acknowledged_or_not() -> None:
    twice = CLEAN + [Delivered(5, "a", "a1")]
    assert check_deliveries(ACKED, twice).duplicated == ["a: 'a1' at seqs [3, 5]"]
    unacknowledged_twice = CLEAN + [Delivered(5, "b", "b1"), Delivered(6, "b", "b1")]
    verdict = check_deliveries(ACKED, unacknowledged_twice)
    assert verdict.duplicated == ["b: 'b1' at seqs [5, 6]"] and not verdict.lost


def test_one_seq_shown_twice_is_reported() -> None:
    verdict = check_deliveries(ACKED, CLEAN + [Delivered(4, "b", "b2")])
    assert not verdict.ok and len(verdict.shown_twice) == 1 and "seq 4" in verdict.shown_twice[0]


def test_a_message_never_sent_is_a_phantom() -> None:
    verdict = check_deliveries(ACKED, CLEAN + [Delivered(5, "a", "a9")])
    assert verdict.phantom == ["a: 'a9' (seq 5)"]
    # Sent by another sender than the one shown: a phantom too.
    assert check_deliveries(ACKED, CLEAN + [Delivered(5, "b", "a0")]).phantom == ["b: 'a0' (seq 5)"]


def test_a_sender_s_messages_out_of_its_order_are_reported() -> None:
    swapped = [Delivered(1, "a", "a1"), Delivered(2, "b", "b0"), Delivered(3, "a", "a0"), Delivered(4, "b", "b2")]
    sent = {"a": [Sent("a0", 3), Sent("a1", 1)], "b": ACKED["b"]}
    verdict = check_deliveries(sent, swapped)
    assert len(verdict.out_of_order) == 1 and verdict.out_of_order[0].startswith("a: 'a0' (seq 3) after 'a1'")


def test_a_message_shown_under_another_seq_than_acknowledged_is_reported() -> None:
    sent = {"a": [Sent("a0", 1), Sent("a1", 7)], "b": ACKED["b"]}
    assert check_deliveries(sent, CLEAN).wrong_seq == ["a: 'a1' acknowledged as seq 7, shown as [3]"]


@pytest.mark.timeout(240)
def test_grow_a_loaded_cluster_then_kill_9_two_originals_while_clients_send(tmp_path) -> None:
    cluster = BenchCluster(str(tmp_path / "cluster"), 3, admin_token=True, server_args=[
        "--max-creates-per-minute", "100000000", "--snapshot-entries", "300", "--snapshot-keep", "50"])
    said: List[str] = []
    try:
        cluster.start_all()
        outcome = asyncio.run(scenario(cluster, stored=1_000, senders=2, after_kill=20, catch_up_timeout=120,
                                       say=lambda text: (said.append(text), print(text, flush=True)), loaders=8))
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.close()
    assert outcome.archive.ok, outcome.archive.problems
    assert outcome.inbox.ok, outcome.inbox.problems
    assert outcome.archive.acknowledged + outcome.archive.unacknowledged == 1_000
    assert outcome.inbox.acknowledged >= 2 * (10 + 5 + 5 + 20)  # every phase's progress, from each sender
    assert outcome.voters == [1, 2, 3, 4, 5] and len(outcome.killed) == 2 and set(outcome.killed) <= {1, 2, 3}
    # Both new replicas were caught up by a snapshot (the leader's log starts past what they lack).
    assert all(outcome.installed[new] for new in (4, 5)), outcome.installed
    assert any(line.strip().startswith("| promoted replica 5 to voter") for line in said), said
    # The same real observations with one delivery hidden, or one shown twice: the check says so.
    hidden = outcome.archive_shown[len(outcome.archive_shown) // 2]
    lost = check_deliveries(outcome.archive_sent, [d for d in outcome.archive_shown if d is not hidden])
    assert lost.lost == [f"{hidden.sender}: {hidden.text!r} (acknowledged as seq {hidden.seq})"]
    again = outcome.archive_shown + [hidden._replace(seq=10**9)]
    assert len(check_deliveries(outcome.archive_sent, again).duplicated) == 1
