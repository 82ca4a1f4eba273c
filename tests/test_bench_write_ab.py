"""bench/write_ab.py runs: a baseline cluster and this tree's (with peer TLS and, with `--peers
both`, without), alternating slots, a ratio per side and concurrency; a baseline git cannot
extract is a clear error."""
import os
import re
import subprocess
import sys

import pytest

from tests.client_process import REPO

pytestmark = pytest.mark.timeout(150)
SCRIPT = os.path.join(REPO, "bench", "write_ab.py")


def test_the_paired_benchmark_reports_a_ratio_per_side_and_concurrency() -> None:
    done = subprocess.run(
        [sys.executable, SCRIPT, "--baseline", "HEAD", "--slots", "2", "--seconds", "0.5", "--concurrency", "1,4",
         "--peers", "both", "--seed", "1"],
        capture_output=True, text=True, timeout=140,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    tables = done.stdout.split("\nthis tree")
    assert [t.split(":", 1)[0] for t in tables[1:]] == ["", ", plain peers"], done.stdout
    for table in tables[1:]:
        for concurrency in (1, 4):
            _check_row(table, concurrency)
    for side in ("baseline HEAD", "this tree", "this tree, plain peers"):
        for concurrency in (1, 4):
            slots = re.findall(rf"slot \d/2 c={concurrency} {side}: [\d,]+ writes/s", done.stderr)
            assert len(slots) == 2, done.stderr[-3000:]


def _check_row(table: str, concurrency: int) -> None:
    row = re.search(rf"^\| {concurrency} \| [\d,]+ \| [\d,]+ \| \d+\.\d\dx \(.*$", table, re.M)
    assert row, table
    # Servers' CPU per write, then the leader's part of it: a part, not more than the whole.
    (all_base, all_this), (leader_base, leader_this) = (
        (int(a.replace(",", "")), int(b.replace(",", "")))
        for a, b in re.findall(r"([\d,]+) / ([\d,]+) us", row.group(0))
    )
    assert 0 < leader_base < all_base and 0 < leader_this < all_this, row.group(0)


def test_a_baseline_git_cannot_extract_is_a_clear_error() -> None:
    done = subprocess.run([sys.executable, SCRIPT, "--baseline", "no-such-revision"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "cannot extract the baseline 'no-such-revision'" in done.stderr, done.stderr
