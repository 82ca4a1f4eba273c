"""replichat: a chat service replicated with Raft (asyncio + gRPC)."""
import os

# The one place the version is written: pyproject.toml reads it (tool.setuptools.dynamic), and
# both commands' --version print it.
__version__ = "0.14.0"

# gRPC's fork support off unless the environment says otherwise. Our processes start others
# only by fork + exec (subprocess), so the support buys nothing, and it can stall: with it on,
# every fork() runs gRPC's pthread_atfork handler, which waits up to 60 s for the threads of
# gRPC's pool to stop. Python 3.8 forks holding the GIL, so a pool thread waiting for the GIL
# never stops: each subprocess.Popen of a process with busy gRPC calls then took 62 s (seen in
# tests/test_bench_longevity.py on 3.8; 3.11+ spawn with vfork, which runs no atfork handlers).
# gRPC reads the variable when it first initialises (the first channel or server), so setting
# it here, before any of ours exists, is in time even if grpc was imported first.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
