"""replichat side by side with etcd: the same load generator, payload and replication factor.

    python3 bench/compare.py [--replicas 3,5] [--concurrency 1,16,64,256] [--seconds 5]
                             [--runs 3] [--kills 5] [--million] [--quick]

For each replication factor, a fresh replichat cluster (tests.cluster.ProcessCluster) and a
fresh etcd cluster (Debian's etcd-server, fsync on, etcd's default timeouts) are started in
turn, never both at once, with their data in the same temporary folder. One Python grpc.aio
load generator drives both: C workers for S seconds, each one write at a time, all to the
leader (--target spread: worker k to member k mod N). replichat: SendMessage of a 64-byte text
to one pre-created user, with raw stubs and the client library's (client_id, request_seq)
(--replichat-client library: through ChatClient). etcd: KV.Put of a 64-byte value under a new
key. Every figure is the median of --runs runs. Also measured:
  * end-to-end delivery latency (replichat): send -> a connected receiver (client library,
    acknowledging) gets it, receivers on the leader and on a follower, one sender;
  * write pause after kill -9 of the leader (median of --kills), both systems: one writer
    starting on a follower, retrying the same request on the next member on an error or after
    --attempt-timeout (0.25 s: an etcd follower keeps a write it forwarded to the dead leader
    until its own request timeout, so with a long client timeout etcd's pause is the client's
    timeout); the killed member is restarted and caught up before the next kill;
  * restart of the whole cluster (kill -9 of every member) with --stored items stored
    (replichat: messages queued for one user; etcd: keys): time to the first write and to
    every member caught up; RSS per member with them stored;
  * how many concurrent `connect` streams one replichat follower holds (up to --max-streams,
    each its own user, each checked alive with one delivery) and its RSS.
Progress on stderr; a table on stdout; JSON in bench/results/compare.json; a plot in
bench/results/compare.png (needs matplotlib: pip install -r bench/requirements.txt).
Without an `etcd` binary the etcd side is skipped (install: apt-get install etcd-server).
"""
import argparse
import asyncio
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.common import QuietGuard, TeardownWatchdog, keep_grpc_aio_initialized, mibs as _mibs, progress  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "bench", "results")
# After the measurements, stopping everything and writing the results takes seconds; past
# this, something is stuck (see keep_grpc_aio_initialized) and the run ends anyway.
TEARDOWN_BUDGET_S = 60.0
# What the replicas and the client need, copied at start: other work on the tree during a long
# run must not change the code under test half-way.
SNAPSHOT = ("server.py", "replichat", "tests/__init__.py", "tests/cluster.py")


def ints(text: str) -> List[int]:
    return [int(x) for x in text.split(",") if x.strip()]


# -- output --------------------------------------------------------------------------------

def _f(value: Optional[float], spec: str = ".2f", width: int = 8) -> str:
    if value is None or value != value:
        return "-".rjust(width)
    return format(value, spec).rjust(width)


def report(results: Dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"replichat vs etcd {meta.get('etcd_version', '(skipped)')} on {meta['cores']} cores, Python {meta['python']}, "
        f"grpcio {meta['grpcio']}, {meta['date']}; replichat {meta['commit']} ({meta.get('code', 'the working tree')})",
        f"  {meta['payload']}-byte payloads; medians of {meta['runs']} runs x {meta['seconds']:g} s; writes to "
        f"{'the leader' if meta['target'] == 'leader' else 'every member in turn'}; replichat via "
        f"{'raw stubs' if meta['replichat_client'] == 'raw' else 'ChatClient'}",
        f"  command: {meta['command']}",
    ]
    if meta.get("waited_for_quiet_s"):
        lines.append(f"  waited {meta['waited_for_quiet_s']:.0f} s in all for other processes to leave the cores")
    if not meta.get("complete", True):
        lines.append("  INCOMPLETE: the benchmark was interrupted or failed; what follows is what it measured before")
    if meta.get("etcd_skipped"):
        lines.append(f"  etcd SKIPPED: {meta['etcd_skipped']}")
    for replicas, rf in results["replicas"].items():
        rc, ec, ratio = rf.get("replichat", {}), rf.get("etcd", {}), rf.get("ratio", {})
        lines.append("")
        lines.append(f"{replicas} replicas")
        lines.append("  conc |        replichat             |           etcd               |  replichat/etcd        | "
                     "server CPU us/write")
        lines.append("       | writes/s   p50 ms   p99 ms   | writes/s   p50 ms   p99 ms   |  thr    p50    p99     |"
                     "  replichat   etcd")
        for c, cell in rc.get("cells", {}).items():
            a = cell["median"]
            b = ec.get("cells", {}).get(c, {}).get("median", {})
            r = ratio.get(c, {})
            lines.append(
                f"  {c:>4} | {_f(a['writes_per_s'], ',.0f')} {_f(a['p50_ms'])} {_f(a['p99_ms'])}   | "
                f"{_f(b.get('writes_per_s'), ',.0f')} {_f(b.get('p50_ms'))} {_f(b.get('p99_ms'))}   | "
                f"{_f(r.get('writes_per_s'), '.2f', 5)}x {_f(r.get('p50_ms'), '.2f', 5)}x {_f(r.get('p99_ms'), '.2f', 5)}x | "
                f"{_f(a['server_cpu_us_per_write'], ',.0f', 9)} {_f(b.get('server_cpu_us_per_write'), ',.0f', 6)}")
        lines.append("  ratios: replichat/etcd; throughput below 1x and latency above 1x are where replichat is behind")
        lines.append("  CPU, cores (medians)   |  replichat: servers (leader)  client  other  |  etcd: servers (leader)  client  other")
        for c, cell in rc.get("cells", {}).items():
            a = cell["median"]
            b = ec.get("cells", {}).get(c, {}).get("median", {})
            lines.append(
                f"    c={c:<4}               |  {_f(a['server_cpu_cores'], '.2f', 16)} ({_f(a['leader_cpu_cores'], '.2f', 4)}) "
                f"{_f(a['client_cpu_cores'], '.2f', 6)} {_f(a['other_cpu_cores'], '.2f', 6)}  |  "
                f"{_f(b.get('server_cpu_cores'), '.2f', 11)} ({_f(b.get('leader_cpu_cores'), '.2f', 4)}) "
                f"{_f(b.get('client_cpu_cores'), '.2f', 6)} {_f(b.get('other_cpu_cores'), '.2f', 6)}")
        noise = [r.get("other_cpu_cores", 0.0) for system in (rc, ec) for cell in system.get("cells", {}).values()
                 for r in cell["runs"]]
        if noise and max(noise) > 0.15:
            lines.append(f"  WARNING: other processes used up to {max(noise):.2f} cores during some runs (median "
                         f"{statistics.median(noise):.2f}): those figures are skewed; see 'other' in the JSON")
        errors = {name: sum(cell["errors"] for cell in system.get("cells", {}).values())
                  for name, system in (("replichat", rc), ("etcd", ec)) if system}
        if any(errors.values()):
            lines.append(f"  failed writes during the runs: {errors}")
        if rc.get("leader_changes") or ec.get("leader_changes"):
            lines.append(f"  leader changes during the runs: replichat {rc.get('leader_changes', 0)}, etcd {ec.get('leader_changes', 0)}")
        if "e2e" in rc:
            m = rc["e2e"]["median"]
            lines.append(f"  end-to-end delivery (send -> connected receiver), 1 sender: receiver on the leader p50 "
                         f"{m['leader_p50_ms']:.2f} ms p99 {m['leader_p99_ms']:.2f} ms; on a follower p50 "
                         f"{m['follower_p50_ms']:.2f} ms p99 {m['follower_p99_ms']:.2f} ms")
        pauses = []
        for name, system in (("replichat", rc), ("etcd", ec)):
            if "failover" in system:
                f = system["failover"]
                every = ", ".join(format(k["pause_s"], ".2f") for k in f["kills"])
                pauses.append(f"{name} {f['median_pause_s']:.3f} s (all: {every})")
        if pauses:
            extra = f"; ratio {ratio['failover_pause']:.2f}x" if "failover_pause" in ratio else ""
            lines.append(f"  write pause after kill -9 of the leader, median: {'; '.join(pauses)}{extra}")
        for name, capacity in sorted(rf.get("capacity", {}).items(), reverse=True):
            for key, r in capacity.items():
                if not key.startswith("stored_"):
                    continue
                what = "messages queued" if name == "replichat" else "keys"
                lines.append(f"  {name}, {r['stored']:,} {what}: restart (kill -9 of all) -> first write "
                             f"{r['restart_to_first_write_s']:.2f} s, all caught up {r['restart_to_all_caught_up_s']:.2f} s; "
                             f"RSS per member {_mibs(r['rss_mib_with_stored'])} (after restart "
                             f"{_mibs(r['rss_mib_after_restart'])}); data {_mibs(r['data_mib'])}; stored at "
                             f"{r['store_writes_per_s']:,.0f}/s")
            s = capacity.get("streams")
            if s:
                held = f"{s['opened']:,} (the cap)" if s["opened"] >= s["cap"] and not s["failure"] else f"{s['opened']:,}"
                why = f", stopped: {s['failure']}" if s["failure"] else ""
                lines.append(f"  replichat connect streams held by one replica: {held}{why}; {s['delivered']:,} got their "
                             f"message; RSS {s['rss_mib_before']:.0f} -> {s['rss_mib_after']:.0f} MiB "
                             f"({s['kib_per_stream']:.0f} KiB per stream)")
    return "\n".join(lines)


def plot(results: Dict[str, Any], path: str) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -r bench/requirements.txt): no plot"
    meta = results["meta"]
    fig, (ax_thr, ax_lat) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = {"replichat": "tab:blue", "etcd": "tab:orange"}
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D"]
    for k, (replicas, rf) in enumerate(results["replicas"].items()):
        for name in ("replichat", "etcd"):
            cells = rf.get(name, {}).get("cells")
            if not cells:
                continue
            xs = [int(c) for c in cells]
            label = f"{name}, {replicas} replicas"
            style = dict(color=colors[name], linestyle=styles[k % len(styles)], marker=markers[k % len(markers)])
            ax_thr.plot(xs, [cells[c]["median"]["writes_per_s"] for c in cells], label=label, **style)
            ax_lat.plot(xs, [cells[c]["median"]["p99_ms"] for c in cells], label=label, **style)
    from matplotlib.ticker import FuncFormatter, NullFormatter
    concurrency = sorted({int(c) for rf in results["replicas"].values() for name in ("replichat", "etcd")
                          for c in rf.get(name, {}).get("cells", {})})
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for ax in (ax_thr, ax_lat):
        ax.set_xscale("log", base=2)
        ax.set_xticks(concurrency)
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("concurrent writers (one write in flight each)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax_thr.set_ylabel("writes/s (replicated, fsynced)")
    ax_thr.set_title("Throughput")
    ax_thr.set_ylim(bottom=0)
    ax_lat.set_yscale("log")
    ax_lat.yaxis.set_major_formatter(plain)
    ax_lat.set_ylabel("p99 latency, ms (log)")
    ax_lat.set_title("p99 write latency")
    fig.suptitle(f"replichat vs etcd {meta.get('etcd_version', '')}: {meta['payload']}-byte writes, {meta['cores']} cores, "
                 f"median of {meta['runs']} x {meta['seconds']:g} s, {meta['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# -- command line --------------------------------------------------------------------------

QUICK = {"replicas": [3], "concurrency": [1, 64], "seconds": 1.5, "runs": 1, "kills": 1, "stored": [5000],
         "max_streams": 200, "e2e_seconds": 1.5}
FULL = {"replicas": [3, 5], "concurrency": [1, 16, 64, 256], "seconds": 5.0, "runs": 3, "kills": 5, "stored": [100_000],
        "max_streams": 2000, "e2e_seconds": None}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--replicas", type=ints, help="replication factors (default 3,5)")
    parser.add_argument("--concurrency", type=ints, help="writers in flight (default 1,16,64,256)")
    parser.add_argument("--seconds", type=float, help="duration of each throughput run (default 5)")
    parser.add_argument("--runs", type=int, help="runs per figure; the median is reported (default 3)")
    parser.add_argument("--kills", type=int, help="kill -9 of the leader, per system and replication factor (default 5)")
    parser.add_argument("--stored", type=ints, help="items stored before the full restart (default 100000; 0: skip)")
    parser.add_argument("--million", action="store_true", help="also restart with 1,000,000 stored (takes long)")
    parser.add_argument("--max-streams", type=int, help="cap on concurrent connect streams (default 2000; 0: skip)")
    parser.add_argument("--e2e-seconds", type=float, help="duration of each delivery-latency run (default --seconds; 0: skip)")
    parser.add_argument("--capacity-replicas", type=ints, help="replication factors for the restart/memory/streams "
                        "measurements (default: all of --replicas)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (3 replicas, c=1,64, 1 run, 1 kill, "
                        "5,000 stored, 200 streams): about 2 minutes")
    parser.add_argument("--payload", type=int, default=64, help="bytes of message text / etcd value (default 64)")
    parser.add_argument("--target", choices=("leader", "spread"), default="leader",
                        help="where writers send: the leader, or member k mod N for writer k (followers forward)")
    parser.add_argument("--replichat-client", choices=("raw", "library"), default="raw",
                        help="replichat writes through raw gRPC stubs (like etcd's) or through ChatClient")
    parser.add_argument("--replichat-metrics", action="store_true",
                        help="replicas serve --metrics (Prometheus and the cluster page): to measure what it costs")
    parser.add_argument("--attempt-timeout", type=float, default=0.25,
                        help="failover writer: move to the next member after this long without an answer (default 0.25 s)")
    parser.add_argument("--store-concurrency", type=int, default=128, help="writers while storing items (default 128)")
    parser.add_argument("--restart-budget", type=float, default=600.0, help="give up on a restart after this long")
    parser.add_argument("--max-other", type=float, default=0.2,
                        help="cores other processes may use during a run; above it the benchmark waits for quiet "
                             "and measures again (default 0.2; 0: never wait)")
    parser.add_argument("--noise-retries", type=int, default=3, help="re-measurements of a noisy run (default 3)")
    parser.add_argument("--quiet-budget", type=float, default=300.0,
                        help="total seconds spent waiting for other processes to leave the cores (default 300)")
    parser.add_argument("--no-etcd", action="store_true", help="measure replichat only")
    parser.add_argument("--insecure-peers", action="store_true",
                        help="replichat peers on plain TCP instead of mutual TLS (to measure what TLS costs)")
    parser.add_argument("--out-dir", default=DEFAULT_OUT, help="where compare.json and compare.png go")
    parser.add_argument("--no-snapshot", action="store_true",
                        help="run the replicas from the working tree instead of a copy made at start")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data folder (logs too)")
    parser.add_argument("--max-minutes", type=float, default=120.0, help="stop everything after this long")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.e2e_seconds is None:
        args.e2e_seconds = args.seconds
    if args.million and 1_000_000 not in args.stored:
        args.stored = list(args.stored) + [1_000_000]
    args.stored = [n for n in args.stored if n > 0]
    if args.capacity_replicas is None:
        args.capacity_replicas = list(args.replicas)
    return args


def _no_nan(value: Any) -> Any:
    """JSON has no NaN: a figure that could not be measured is null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return head + ("+uncommitted changes" if dirty else "") if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def snapshot_code(dest: str) -> str:
    """Copies SNAPSHOT to `dest`; returns a short digest of what was copied."""
    digest = hashlib.sha256()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for item in SNAPSHOT:
        source, target = os.path.join(ROOT, item), os.path.join(dest, item)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.isdir(source):
            shutil.copytree(source, target, ignore=ignore)
        else:
            shutil.copy2(source, target)
    for folder, dirs, files in sorted(os.walk(dest)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, dest).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:12]


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    args.quiet = QuietGuard(args.max_other, args.quiet_budget)
    os.makedirs(args.out_dir, exist_ok=True)
    args.folder = tempfile.mkdtemp(prefix="replichat-compare-")
    progress(f"data and logs in {args.folder}")
    commit, code = _commit(), "the working tree"
    if not args.no_snapshot:
        snapshot = os.path.join(args.folder, "code")
        code = f"a snapshot (sha256 {snapshot_code(snapshot)}) of the working tree"
        sys.path.insert(0, snapshot)  # before anything imports replichat or tests
        progress(f"replichat code: {commit}, run from {snapshot}")
    import grpc

    keep_grpc_aio_initialized()
    from bench import phases

    results: Dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(), "python": platform.python_version(),
            "grpcio": grpc.__version__, "commit": commit, "code": code,
            "command": " ".join(["python3", "bench/compare.py"] + sys.argv[1:]),
            "payload": args.payload, "seconds": args.seconds, "runs": args.runs, "kills": args.kills,
            "concurrency": args.concurrency, "target": args.target, "replichat_client": args.replichat_client,
            "attempt_timeout_s": args.attempt_timeout, "complete": False,
            "replichat_metrics": args.replichat_metrics,
        },
        "replicas": {},
    }
    json_path = os.path.join(args.out_dir, "compare.json")

    def save() -> None:
        with open(json_path + ".tmp", "w") as f:
            json.dump(_no_nan(results), f, indent=2)
        os.replace(json_path + ".tmp", json_path)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds like Ctrl-C: every `finally` stops what it started

    signal.signal(signal.SIGTERM, on_sigterm)

    def stop_and_save() -> None:
        for system in phases.STARTED:
            system.close()
        results["meta"]["waited_for_quiet_s"] = args.quiet.waited
        save()
        progress(f"JSON (incomplete): {json_path}; data and logs kept in {args.folder}")

    watchdog = TeardownWatchdog(TEARDOWN_BUDGET_S, stop_and_save)

    async def measure() -> None:
        try:
            await asyncio.wait_for(phases.main_async(args, results, save), args.max_minutes * 60)
        finally:
            watchdog.finished.set()

    ok = False
    try:
        asyncio.run(measure())
        ok = True
    except KeyboardInterrupt:
        progress("interrupted: stopping every process started")
    except asyncio.TimeoutError:
        progress(f"gave up after --max-minutes {args.max_minutes:g}: stopping every process started")
    except Exception:  # report what was measured before the failure, then fail
        traceback.print_exc()
        progress("failed: stopping every process started")
    finally:
        for system in phases.STARTED:
            system.close()
        results["meta"]["complete"] = ok
        results["meta"]["waited_for_quiet_s"] = args.quiet.waited
        save()
        if ok and not args.keep_data:
            shutil.rmtree(args.folder, ignore_errors=True)
        else:
            progress(f"data and logs kept in {args.folder}")
    progress(f"JSON: {json_path}")
    if any(rf.get(name, {}).get("cells") for rf in results["replicas"].values() for name in ("replichat", "etcd")):
        png = os.path.join(args.out_dir, "compare.png")
        problem = plot(results, png)
        progress(problem or f"plot: {png}")
        print(report(results))
    watchdog.done.set()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
