"""Helpers shared by the benchmarks: progress lines, percentiles, what a process costs (RSS, CPU),
and starting child processes so that none outlives the benchmark.

Children are started through `setpriv --pdeathsig KILL` where util-linux has it: the kernel
kills them if the benchmark itself dies without running its clean-up (kill -9, a crash).
Clean-up on a normal end, an error, Ctrl-C or SIGTERM is the benchmark's own `finally`.
"""
import asyncio
import faulthandler
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_SETPRIV = shutil.which("setpriv")
_T0 = time.perf_counter()


def progress(message: str) -> None:
    """One line on stderr, with the seconds since the benchmark started."""
    print(f"[bench {time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def keep_grpc_aio_initialized() -> None:
    """Call once, before any grpc.aio object exists: the process then never shuts grpc.aio
    down before it exits.

    Why: grpcio (1.70 here) shuts grpc.aio down when its last object goes away. The shutdown
    stops the event loop reading the socket through which grpc's poller thread signals
    completions, then joins that thread. When hundreds of calls end at that moment (a
    benchmark leaving with its `connect` streams open: asyncio.run cancels them), the poller
    blocks writing its wake-up bytes into the full, unread socket, and the join waits for it
    forever: bench/compare.py hung in asyncio.run's clean-up this way. Holding one reference
    of our own keeps that shutdown from ever starting; the poller is a daemon thread, so the
    process still exits at once. (Fixed in later grpcio releases; 1.70 is the last for 3.8.)
    """
    import grpc

    grpc.aio.init_grpc_aio()


class TeardownWatchdog:
    """Bounds what happens after the measurements: once `finished` is set (the benchmark's
    coroutine has ended), the teardown (asyncio.run's clean-up, killing the systems, writing
    the results) has `budget_s`; past it, `on_stuck` runs (it should save what was measured),
    every thread's stack goes to stderr, and the process exits with code 3."""

    def __init__(self, budget_s: float, on_stuck: Callable[[], None]) -> None:
        self.finished = threading.Event()
        self.done = threading.Event()
        self._budget_s = budget_s
        self._on_stuck = on_stuck
        threading.Thread(target=self._watch, name="teardown-watchdog", daemon=True).start()

    def _watch(self) -> None:
        self.finished.wait()
        if self.done.wait(self._budget_s):
            return
        progress(f"the teardown did not finish within {self._budget_s:g} s: saving what was measured and exiting")
        try:
            self._on_stuck()
        finally:
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(3)


def save_json(path: str, results: object) -> None:
    """Write a benchmark's results to `path` (its folder made if missing)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile by the nearest-rank rule (no interpolation); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def mibs(by_member: Dict[str, float]) -> str:
    """'75/75/76 MiB': one figure per member, in member order."""
    return "/".join(f"{v:.0f}" for _, v in sorted(by_member.items(), key=lambda kv: int(kv[0]))) + " MiB"


def guarded(command: List[str]) -> List[str]:
    """`command`, started so that the kernel kills it when the benchmark process dies."""
    if _SETPRIV is None:
        return list(command)
    return [_SETPRIV, "--pdeathsig", "KILL", "--"] + list(command)


def rss_kib(pid: int) -> Optional[int]:
    """Resident set size of a running process in KiB (VmRSS in /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of these processes so far (all their threads)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        except (OSError, IndexError, ValueError):
            pass
    return total / _CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent not idle so far, summed over cores (/proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is in user)
    return busy / _CLK_TCK


async def other_cpu_cores(our_pids: Iterable[int], seconds: float) -> float:
    """Cores used over `seconds` by everything but this process and `our_pids`."""
    pids = list(our_pids) + [os.getpid()]
    ours0, machine0 = cpu_seconds(pids), machine_busy_seconds()
    await asyncio.sleep(seconds)
    return max(0.0, (machine_busy_seconds() - machine0) - (cpu_seconds(pids) - ours0)) / seconds


class QuietGuard:
    """The machine is shared: before a measurement, wait until other processes leave the cores
    (at most `threshold` cores busy besides ours), spending at most `budget` seconds waiting over
    the whole benchmark; after that, measurements go ahead and carry their noise figure."""

    def __init__(self, threshold: float, budget: float) -> None:
        self.threshold = threshold
        self.budget = budget
        self.waited = 0.0

    @property
    def exhausted(self) -> bool:
        return self.threshold <= 0 or self.waited >= self.budget

    async def wait(self, our_pids: Iterable[int], what: str) -> float:
        pids = list(our_pids)
        other = await other_cpu_cores(pids, 0.5)
        if other <= self.threshold or self.exhausted:
            return other
        progress(f"  other processes are using {other:.2f} cores: waiting for quiet before {what}")
        start = time.perf_counter()
        while other > self.threshold and self.waited + (time.perf_counter() - start) < self.budget:
            other = await other_cpu_cores(pids, 1.0)
        self.waited += time.perf_counter() - start
        progress(f"  {'quiet' if other <= self.threshold else 'still busy'} ({other:.2f} cores) after "
                 f"{time.perf_counter() - start:.0f} s; {max(0.0, self.budget - self.waited):.0f} s of waiting left")
        return other


def dir_bytes(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                pass
    return total


def extract_tree(rev: str, repository: str, into: str) -> str:
    """The files of commit `rev` of the git repository at `repository` (`git archive`),
    unpacked into `into`/tree; returns that folder."""
    archive = subprocess.run(["git", "-C", repository, "archive", rev], check=True, capture_output=True).stdout
    archive_path = os.path.join(into, "tree.tar")
    with open(archive_path, "wb") as f:
        f.write(archive)
    tree = os.path.join(into, "tree")
    with tarfile.open(archive_path) as tar:
        if hasattr(tarfile, "data_filter"):  # 3.12, and 3.8.17+ / 3.11.4+: refuse links out of `tree`
            tar.extractall(tree, filter="data")
        else:
            tar.extractall(tree)
    os.unlink(archive_path)
    return tree
