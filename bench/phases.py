"""The phases of bench/compare.py: for one system at a time, start a fresh cluster, measure,
stop it. Imported by compare.py after it has put its snapshot of the code first on sys.path, so
that the replicas, the client library and the protos all come from that snapshot."""
import asyncio
import os
import shutil
import statistics
from typing import Any, Callable, Dict, List

from bench.capacity import connect_streams, e2e_delivery, restart_with_stored
from bench.common import mibs as _mibs, progress
from bench.etcd.cluster import INSTALL_HINT, etcd_version, find_etcd
from bench.loadgen import EtcdSystem, ReplichatSystem, System, failover_pause, run_load

CELL_METRICS = ("writes_per_s", "p50_ms", "p99_ms", "server_cpu_cores", "leader_cpu_cores", "client_cpu_cores",
                "other_cpu_cores", "server_cpu_us_per_write")

# Every system started, so that the outermost `finally` can kill what an interrupted phase left.
STARTED: List[System] = []


def median(values: List[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


async def measure_writes(system: System, args: Any) -> Dict[str, Any]:
    """Throughput and latency per concurrency, (replichat) end-to-end delivery, failover pauses."""
    STARTED.append(system)
    out: Dict[str, Any] = {"leader_changes": 0}
    system.start_all()
    try:
        leader = await system.wait_for_leader()
        await system.prepare()

        def targets_for(leader: int) -> List[str]:
            if args.target == "spread":
                return [system.addresses[i] for i in sorted(system.addresses)]
            return [system.addresses[leader]]

        progress(f"{system.name} x{system.replicas}: warm-up (16 in flight, 1 s)")
        await run_load(system, 16, 1.0, targets_for(leader))
        per_run: Dict[int, List[Dict[str, Any]]] = {c: [] for c in args.concurrency}
        for run in range(args.runs):
            for c in args.concurrency:
                now = await system.wait_for_leader()
                if now != leader:
                    out["leader_changes"] += 1
                    leader = now
                for attempt in range(1, args.noise_retries + 2):
                    await args.quiet.wait(system.pids().values(), f"c={c}")
                    r = await run_load(system, c, args.seconds, targets_for(leader), leader=leader)
                    r["attempt"] = attempt
                    if r["other_cpu_cores"] <= args.max_other or args.quiet.exhausted or attempt > args.noise_retries:
                        break
                    progress(f"{system.name} x{system.replicas} c={c}: {r['writes_per_s']:,.0f} writes/s but other processes "
                             f"used {r['other_cpu_cores']:.2f} cores: measuring again")
                per_run[c].append(r)
                errors = f", errors {r['errors']}" if r["errors"] else ""
                progress(f"{system.name} x{system.replicas} run {run + 1}/{args.runs} c={c}: {r['writes_per_s']:,.0f} writes/s, "
                         f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, CPU servers {r['server_cpu_cores']:.2f} "
                         f"(leader {r['leader_cpu_cores']:.2f}) client {r['client_cpu_cores']:.2f} other {r['other_cpu_cores']:.2f} cores{errors}")
        out["cells"] = {
            str(c): {"median": {m: median([r[m] for r in runs]) for m in CELL_METRICS},
                     "errors": sum(sum(r["errors"].values()) for r in runs), "runs": runs}
            for c, runs in per_run.items()
        }
        if isinstance(system, ReplichatSystem) and args.e2e_seconds > 0:
            e2e_runs = []
            for run in range(args.runs):
                progress(f"{system.name} x{system.replicas}: end-to-end delivery, run {run + 1}/{args.runs} ({args.e2e_seconds:g} s)")
                await args.quiet.wait(system.pids().values(), "the delivery run")
                e2e_runs.append(await asyncio.wait_for(e2e_delivery(system, args.e2e_seconds, args.payload), args.e2e_seconds + 60))
            out["e2e"] = {
                "median": {f"{where}_{m}": median([r[where][m] for r in e2e_runs])
                           for where in ("leader", "follower") for m in ("p50_ms", "p99_ms")},
                "runs": e2e_runs,
            }
        pauses = []
        for k in range(args.kills):
            progress(f"{system.name} x{system.replicas}: kill -9 of the leader {k + 1}/{args.kills}")
            await args.quiet.wait(system.pids().values(), "the kill")
            p = await asyncio.wait_for(failover_pause(system, args.attempt_timeout), 180)
            progress(f"  write pause {p['pause_s']:.3f} s (errors seen by the writer: {p['errors'] or 'none'})")
            pauses.append(p)
        if pauses:
            out["failover"] = {"median_pause_s": median([p["pause_s"] for p in pauses]), "kills": pauses}
    finally:
        await system.aclose()
        system.close()
    return out


async def measure_capacity(make: Callable[[str], System], name: str, replicas: int, args: Any,
                           folder: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for stored in args.stored:
        system = make(os.path.join(folder, f"{name}-{replicas}-stored-{stored}"))
        STARTED.append(system)
        try:
            progress(f"{name} x{replicas}: restart with {stored:,} stored")
            r = await asyncio.wait_for(restart_with_stored(system, stored, args.store_concurrency, args.restart_budget, args.quiet),
                                       args.restart_budget * 3 + stored / 100)
            progress(f"  first write {r['restart_to_first_write_s']:.2f} s after the restart, all caught up after "
                     f"{r['restart_to_all_caught_up_s']:.2f} s; RSS {_mibs(r['rss_mib_with_stored'])}")
            out[f"stored_{stored}"] = r
            if isinstance(system, ReplichatSystem) and stored == args.stored[0] and args.max_streams > 0:
                progress(f"{name} x{replicas}: concurrent connect streams on one replica (cap {args.max_streams:,})")
                out["streams"] = await asyncio.wait_for(connect_streams(system, args.max_streams), 600)
        finally:
            await system.aclose()
            system.close()
            if not args.keep_data:
                shutil.rmtree(system.base_dir, ignore_errors=True)
    return out


def ratios(replichat: Dict[str, Any], etcd: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for c, cell in replichat.get("cells", {}).items():
        other = etcd.get("cells", {}).get(c)
        if other is None:
            continue
        a, b = cell["median"], other["median"]
        out[c] = {m: (a[m] / b[m] if b[m] else float("nan")) for m in ("writes_per_s", "p50_ms", "p99_ms")}
    if "failover" in replichat and "failover" in etcd and etcd["failover"]["median_pause_s"]:
        out["failover_pause"] = replichat["failover"]["median_pause_s"] / etcd["failover"]["median_pause_s"]
    return out


async def main_async(args: Any, results: Dict[str, Any], save: Callable[[], None]) -> None:
    folder = args.folder
    etcd_binary = None if args.no_etcd else find_etcd()
    if etcd_binary is None:
        reason = "--no-etcd" if args.no_etcd else f"no etcd binary found (install it: {INSTALL_HINT})"
        progress(f"etcd side SKIPPED: {reason}")
        results["meta"]["etcd_skipped"] = reason
    else:
        results["meta"]["etcd_version"] = etcd_version(etcd_binary)
    for replicas in args.replicas:
        rf: Dict[str, Any] = results["replicas"].setdefault(str(replicas), {})
        progress(f"=== {replicas} replicas ===")

        def make_replichat(base: str) -> System:
            return ReplichatSystem(base, replicas, args.payload, library_client=args.replichat_client == "library",
                                   metrics=args.replichat_metrics,
                                   peer_tls=not getattr(args, "insecure_peers", False))

        def make_etcd(base: str) -> System:
            assert etcd_binary is not None
            return EtcdSystem(base, replicas, args.payload, etcd_binary)

        rf["replichat"] = await measure_writes(make_replichat(os.path.join(folder, f"replichat-{replicas}")), args)
        save()
        if etcd_binary is not None:
            rf["etcd"] = await measure_writes(make_etcd(os.path.join(folder, f"etcd-{replicas}")), args)
            rf["ratio"] = ratios(rf["replichat"], rf["etcd"])
            save()
        if args.stored and replicas in args.capacity_replicas:
            rf["capacity"] = {"replichat": await measure_capacity(make_replichat, "replichat", replicas, args, folder)}
            save()
            if etcd_binary is not None:
                rf["capacity"]["etcd"] = await measure_capacity(make_etcd, "etcd", replicas, args, folder)
                save()
