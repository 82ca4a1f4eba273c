"""bench/longevity.py works: its smoke mode (tiny counts, a snapshot every 100 entries) runs every
phase on real clusters and reports what the README quotes. Not a measurement: the figures of a
smoke run mean nothing, only that they are there and consistent."""
import json
import subprocess
import sys

import pytest

from tests.client_process import REPO

pytestmark = pytest.mark.timeout(240)


def test_the_longevity_benchmark_runs_every_phase(tmp_path) -> None:
    out = tmp_path / "longevity.json"
    done = subprocess.run([sys.executable, "bench/longevity.py", "--smoke", "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=220)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    acknowledged = results["acknowledged"]
    for label in ("after_small", "after_all"):
        assert set(acknowledged[label]["rss_mib"]) == {"1", "2", "3"}
        assert all(v > 0 for v in acknowledged[label]["data_mib"].values())
    assert all(n > 0 for n in acknowledged["after_all"]["snapshots_taken"].values())
    assert acknowledged["restart"]["first_write_s"] > 0
    unread = results["unread"]
    assert unread["queued_after_restart"] == 1_000
    assert unread["write_pause"]["snapshots"] > 0
    assert unread["write_pause"]["steady"]["writes"] + unread["write_pause"]["during_snapshots"]["writes"] == 1_000
    catch_up = results["catch_up"]
    assert catch_up["InstallSnapshot"]["installed_snapshot"] is True
    assert catch_up["log replay"]["installed_snapshot"] is False
    assert "catch-up of 600 missed writes by InstallSnapshot" in done.stdout
