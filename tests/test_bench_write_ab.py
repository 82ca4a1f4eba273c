"""bench/write_ab.py runs: two clusters, alternating slots, a ratio per concurrency; a baseline
git cannot extract is a clear error."""
import os
import re
import subprocess
import sys

import pytest

from tests.client_process import REPO

pytestmark = pytest.mark.timeout(150)
SCRIPT = os.path.join(REPO, "bench", "write_ab.py")


def test_the_paired_benchmark_reports_a_ratio_per_concurrency() -> None:
    done = subprocess.run(
        [sys.executable, SCRIPT, "--baseline", "HEAD", "--slots", "2", "--seconds", "0.5", "--concurrency", "1,4",
         "--seed", "1"],
        capture_output=True, text=True, timeout=140,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for concurrency in (1, 4):
        assert re.search(rf"^\| {concurrency} \| [\d,]+ \| [\d,]+ \| \d+\.\d\dx \(", done.stdout, re.M), done.stdout
        for side in ("baseline HEAD", "this tree"):
            slots = re.findall(rf"slot \d/2 c={concurrency} {side}: [\d,]+ writes/s", done.stderr)
            assert len(slots) == 2, done.stderr[-3000:]


def test_a_baseline_git_cannot_extract_is_a_clear_error() -> None:
    done = subprocess.run([sys.executable, SCRIPT, "--baseline", "no-such-revision"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "cannot extract the baseline 'no-such-revision'" in done.stderr, done.stderr
