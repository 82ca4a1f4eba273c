"""bench/restart.py runs: both modes restart the cluster and get a write through."""
import json
import os
import subprocess
import sys

import pytest

from tests.client_process import REPO

pytestmark = pytest.mark.timeout(120)


def test_the_restart_benchmark_measures_both_modes(tmp_path) -> None:
    out = tmp_path / "restart.json"
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "restart.py"), "--rounds", "1", "--stored", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=100,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    times = json.loads(out.read_text())["first_write_s"]
    assert sorted(times) == ["advance", "baseline"]
    assert all(len(t) == 1 and 0 < t[0] < 60 for t in times.values()), times
    assert "advance / baseline medians" in done.stdout
