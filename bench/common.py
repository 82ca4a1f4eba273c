"""Helpers shared by the benchmarks: progress lines, percentiles, what a process costs (RSS, CPU),
and starting child processes so that none outlives the benchmark.

Children are started through `setpriv --pdeathsig KILL` where util-linux has it: the kernel
kills them if the benchmark itself dies without running its clean-up (kill -9, a crash).
Clean-up on a normal end, an error, Ctrl-C or SIGTERM is the benchmark's own `finally`.
"""
import asyncio
import os
import shutil
import sys
import time
from typing import Dict, Iterable, List, Optional, Sequence

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_SETPRIV = shutil.which("setpriv")
_T0 = time.perf_counter()


def progress(message: str) -> None:
    """One line on stderr, with the seconds since the benchmark started."""
    print(f"[bench {time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


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
