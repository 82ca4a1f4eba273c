"""The local cluster's launcher starts a replica that died again, after a back-off that grows
while it keeps dying, gives up (printing the exact command) when it never stays up, and leaves
alone a replica stopped on purpose. Its processes here are stand-ins that exit at once, and the
clock is passed in, so the back-off is checked without waiting for it."""
import shlex
import sys
from typing import List

import pytest

from replichat.server import launcher
from replichat.server.launcher import LocalCluster

pytestmark = pytest.mark.timeout(60)


class DyingCluster(LocalCluster):
    """Every 'replica' is a process that exits with code 3 at once."""

    def command(self, node_id: int) -> List[str]:
        return [sys.executable, "-c", "import sys; sys.exit(3)"]


def _wait_all(cluster: LocalCluster) -> None:
    for process in cluster.processes.values():
        process.wait(10)


def test_a_dead_replica_is_restarted_with_a_growing_back_off_then_given_up(tmp_path, capsys) -> None:
    cluster = DyingCluster({1: "127.0.0.1:1"}, str(tmp_path), log_dir=str(tmp_path))
    now = 1000.0
    cluster._start(1, now)
    pids = [cluster.processes[1].pid]
    delays = []
    try:
        for _ in range(launcher.RESTART_GIVE_UP_AFTER - 1):
            _wait_all(cluster)
            cluster.check_processes(now)
            out = capsys.readouterr().out
            assert "replica 1 (pid" in out and "stopped: exit code 3" in out
            delay = float(out.split("restarting replica 1 in ")[1].split(" s")[0])
            delays.append(delay)
            cluster.check_processes(now + delay - 0.01)
            assert cluster.processes[1].pid == pids[-1], "restarted before its back-off"
            now += delay
            cluster.check_processes(now)
            assert cluster.processes[1].pid != pids[-1]
            pids.append(cluster.processes[1].pid)
            assert f"replica 1 restarted (pid {pids[-1]})" in capsys.readouterr().out
        assert delays == list(launcher.RESTART_BACKOFF_S[: len(delays)])
        _wait_all(cluster)
        cluster.check_processes(now)
        out = capsys.readouterr().out
        assert "not restarting it" in out and cluster.command_line(1) in out
        cluster.check_processes(now + 3600)
        assert cluster.processes[1].pid == pids[-1] and not cluster.restart_pending()
    finally:
        cluster.close()


def test_a_replica_that_ran_a_while_starts_over_at_the_first_delay(tmp_path, capsys) -> None:
    cluster = DyingCluster({1: "127.0.0.1:1"}, str(tmp_path), log_dir=str(tmp_path))
    try:
        cluster._start(1, 0.0)
        _wait_all(cluster)
        cluster.check_processes(0.5)
        cluster.check_processes(0.5 + launcher.RESTART_BACKOFF_S[0])  # restarted at 1.5, dies at once
        _wait_all(cluster)
        cluster.check_processes(1.5 + launcher.RESTART_STABLE_S)  # ... but "ran" a minute
        assert f"restarting replica 1 in {launcher.RESTART_BACKOFF_S[0]:g} s" in capsys.readouterr().out.splitlines()[-1]
    finally:
        cluster.close()


def test_a_replica_held_down_on_purpose_is_not_restarted(tmp_path, capsys) -> None:
    cluster = LocalCluster({1: "127.0.0.1:1"}, str(tmp_path), log_dir=str(tmp_path))
    cluster.command = lambda node_id: [sys.executable, "-c", "import time; time.sleep(60)"]  # type: ignore[assignment]
    try:
        cluster.start(1)
        cluster.held_down.add(1)
        cluster.kill(1)
        cluster.check_processes()
        out = capsys.readouterr().out
        assert "killed by signal 9" in out and "restarting" not in out and not cluster.restart_pending()
    finally:
        cluster.close()


def test_the_printed_command_is_the_one_the_launcher_runs(tmp_path) -> None:
    cluster = LocalCluster({1: "127.0.0.1:1", 2: "127.0.0.1:2"}, str(tmp_path / "data dir"))
    assert shlex.split(cluster.command_line(2)) == cluster.command(2)
