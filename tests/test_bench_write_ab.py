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
        row = re.search(rf"^\| {concurrency} \| [\d,]+ \| [\d,]+ \| \d+\.\d\dx \(.*$", done.stdout, re.M)
        assert row, done.stdout
        # Servers' CPU per write, then the leader's part of it: a part, not more than the whole.
        (all_base, all_this), (leader_base, leader_this) = (
            (int(a.replace(",", "")), int(b.replace(",", "")))
            for a, b in re.findall(r"([\d,]+) / ([\d,]+) us", row.group(0))
        )
        assert 0 < leader_base < all_base and 0 < leader_this < all_this, row.group(0)
        for side in ("baseline HEAD", "this tree"):
            slots = re.findall(rf"slot \d/2 c={concurrency} {side}: [\d,]+ writes/s", done.stderr)
            assert len(slots) == 2, done.stderr[-3000:]


def test_a_baseline_git_cannot_extract_is_a_clear_error() -> None:
    done = subprocess.run([sys.executable, SCRIPT, "--baseline", "no-such-revision"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "cannot extract the baseline 'no-such-revision'" in done.stderr, done.stderr
