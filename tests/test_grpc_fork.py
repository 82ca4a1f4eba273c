"""Processes that import replichat start others without gRPC's fork handlers (see
replichat/__init__.py: with them, a Popen on Python 3.8 could wait 60 s for gRPC's threads)."""
import os
import subprocess
import sys

from tests.client_process import REPO

# A process with live gRPC objects forks a child, then reports the variable gRPC saw.
FORKING_PROCESS = """
import os, subprocess, sys
import grpc
import replichat
channel = grpc.insecure_channel("127.0.0.1:1")
grpc.aio.init_grpc_aio()
subprocess.run([sys.executable, "-c", "pass"], check=True)
print(os.environ.get("GRPC_ENABLE_FORK_SUPPORT"))
"""


def _run(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FORKING_PROCESS], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


def test_importing_replichat_turns_grpc_fork_handlers_off() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    done = _run(env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "false"
    # On 3.8 (fork) gRPC logs this when its handler runs; 3.11+ (vfork) never run it.
    assert "fork() handlers" not in done.stderr


def test_an_explicit_setting_is_kept() -> None:
    done = _run(dict(os.environ, GRPC_ENABLE_FORK_SUPPORT="true"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "true"
