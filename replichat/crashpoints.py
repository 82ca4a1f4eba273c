"""Test-only crash points: a replica that reaches a named step of taking, receiving or installing
a snapshot kills itself there, exactly as `kill -9` would, so a test can crash it between two
particular disk operations instead of racing a sleep against them.

TEST ONLY. Nothing happens unless the environment variable REPLICHAT_TEST_CRASH_AT is set,
which only the real-process crash tests do (tests/test_snapshot_crash.py, through
tests/cluster.py's per-replica environment). Its value is `POINT` or `POINT@N` (die the N-th
time POINT is reached in this process; default the first). Never set it on a real deployment:
the replica would die on purpose.

The points, in the order a crash after each leaves the disk (docs/snapshots.md says why each
state is safe):

  snapshot-take:copied         the new snapshot is a fsynced tmp file, not yet renamed
  snapshot-take:renamed        snapshots/snapshot-<index>.db exists, raft.db does not know it
  snapshot-take:recorded       raft.db records the snapshot; the log is not compacted yet
  snapshot-take:base-moved     raft.db's log base moved; the entries below it not yet deleted
  snapshot-take:compacted      raft.db's log is compacted; older snapshot files not yet deleted
  snapshot-receive:chunk       a follower wrote one chunk (not the last) of a snapshot it receives
  snapshot-receive:complete    the received file is complete, verified and renamed; not installed
  snapshot-restore:start       the install recorded the snapshot in raft.db; state.db is untouched
  snapshot-restore:staged      state.db.restore is written and checked; state.db not yet replaced
  snapshot-send:acked          a leader sending a snapshot got a chunk acknowledged, not the last
"""
import logging
import os
import signal
import sys
from typing import Dict, Optional, Tuple

ENV_VAR = "REPLICHAT_TEST_CRASH_AT"

log = logging.getLogger(__name__)

POINTS = frozenset({
    "snapshot-take:copied", "snapshot-take:renamed", "snapshot-take:recorded", "snapshot-take:base-moved",
    "snapshot-take:compacted",
    "snapshot-receive:chunk", "snapshot-receive:complete", "snapshot-restore:start", "snapshot-restore:staged",
    "snapshot-send:acked",
})

_reached: Dict[str, int] = {}


def _target() -> Optional[Tuple[str, int]]:
    value = os.environ.get(ENV_VAR)
    if not value:
        return None
    name, _, count = value.partition("@")
    # A typo must not make a crash test pass by never crashing: refuse it loudly.
    if name not in POINTS or not (count == "" or (count.isdigit() and int(count) > 0)):
        raise ValueError(f"{ENV_VAR}={value!r}: expected POINT or POINT@N with POINT one of {sorted(POINTS)}")
    return name, int(count) if count else 1


def crash_point(name: str) -> None:
    """Die here (SIGKILL to this process) if the test-only environment names this point."""
    target = _target()
    if target is None or target[0] != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] < target[1]:
        return
    log.critical("test-only crash point %s reached (%s is set): killing this process", name, ENV_VAR)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
