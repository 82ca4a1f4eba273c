"""A short seeded fault campaign (replichat.chaos) against 5 real replica processes: kill -9 of
the leader and of other replicas, SIGSTOP/SIGCONT, symmetric / asymmetric / isolate-one
partitions through per-link proxies, a flipped byte in a stopped replica's stored log entry
(it must refuse to start, naming the entry), a replica removed from the membership and added
back (the leader too: it hands leadership over first). Nothing acknowledged is lost or duplicated, the history is
linearizable, and the replicas converge after healing. Longer runs by hand:
`python -m replichat.chaos --seconds 30 --seed N`."""
import pytest

from replichat.chaos import run_campaign

pytestmark = pytest.mark.timeout(180)


def test_short_chaos_campaign(tmp_path) -> None:
    # A seed whose schedule includes a membership change (member_out) among the other faults.
    result = run_campaign(seconds=20.0, seed=7, base_dir=str(tmp_path), log=lambda *a, **k: None)
    print(result.table())
    assert result.faults, "the nemesis injected nothing"
    assert result.faults.get("member_out"), f"no membership change among the faults: {result.faults}"
    # A campaign in which no send succeeds checks nothing: the clients must really have worked.
    assert result.sends_acked > 0 and result.delivered > 0, f"acknowledged {result.sends_acked}, delivered {result.delivered}"
    assert not result.lost, f"acknowledged sends lost: {result.lost[:5]}"
    assert not result.duplicated, f"sends delivered twice: {result.duplicated[:5]}"
    assert not result.phantom, f"delivered but never sent: {result.phantom[:5]}"
    assert not result.order_violations, result.order_violations[:5]
    assert not result.seq_mismatches, result.seq_mismatches[:5]
    assert result.converged, f"replicas did not converge: {result.applied_indexes}"
    assert result.linearizable, result.linearizability
    assert not result.errors, result.errors[:5]
    assert result.ok, result.table()
