"""What authentication costs: per `connect` and per `send`, against the same cluster with
`--insecure-no-auth` as the baseline, in the same run.

Two fresh 3-replica clusters (authentication on; `--insecure-no-auth`), one at a time. On
each: --sends sequential sends (one in flight) as a named sender, then as many anonymous
ones; --connects `connect`s of users created through another replica (so the replica that
serves the connect has never seen the credential: one scrypt check) and then again (the
replica remembers it). Latency is per call, client side; figures are medians.

    python3 bench/auth_cost.py [--sends 1000] [--connects 20]
"""
import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.cluster import BenchCluster  # noqa: E402
from bench.common import progress  # noqa: E402
from replichat.client.api import ChatClient  # noqa: E402
from replichat.client.credentials import MemoryCredentials  # noqa: E402


async def timed(calls: int, make) -> List[float]:
    latencies = []
    for n in range(calls):
        started = time.perf_counter()
        await make(n)
        latencies.append(time.perf_counter() - started)
    return latencies


async def connect_once(client: ChatClient, name: str) -> None:
    session = await client.connect(name)
    await session.__anext__()
    await session.close()


async def measure(cluster: BenchCluster, sends: int, connects: int) -> Dict[str, float]:
    leader = await cluster.wait_for_leader()
    others = [cluster.addresses[i] for i in sorted(cluster.addresses) if i != leader]
    store = MemoryCredentials()
    near = ChatClient([cluster.addresses[leader]] + others, credentials=store)
    far = ChatClient(others + [cluster.addresses[leader]], credentials=store)
    try:
        await near.create("sender")
        await near.create("inbox")
        await near.send("inbox", "warm-up", sender="sender")
        named = await timed(sends, lambda n: near.send("inbox", f"m{n}", sender="sender"))
        anonymous = await timed(sends, lambda n: near.send("inbox", f"a{n}"))
        names = [f"reader{n}" for n in range(connects)]
        for name in names:
            await near.create(name)
        cold = await timed(connects, lambda n: connect_once(far, names[n]))
        warm = await timed(connects, lambda n: connect_once(far, names[n]))
    finally:
        await near.close()
        await far.close()
    ms = lambda values: statistics.median(values) * 1000  # noqa: E731
    return {"send as a user": ms(named), "anonymous send": ms(anonymous),
            "first connect on a replica": ms(cold), "later connect": ms(warm)}


async def run(sends: int, connects: int) -> None:
    results: Dict[str, Dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for label, args in (("auth", []), ("no-auth", ["--insecure-no-auth"])):
            progress(f"cluster with {label}")
            cluster = BenchCluster(os.path.join(folder, label), 3, server_args=[
                "--max-creates-per-minute", "100000000", "--max-streams-per-address", "100000", *args])
            cluster.start_all()
            try:
                results[label] = await measure(cluster, sends, connects)
            finally:
                cluster.close()
    print(f"3 replicas, Python {sys.version.split()[0]}, medians in ms ({sends} sends, {connects} connects)")
    print(f"{'':28} {'auth':>8} {'no-auth':>8} {'ratio':>6}")
    for key in results["auth"]:
        a, b = results["auth"][key], results["no-auth"][key]
        print(f"{key:28} {a:8.2f} {b:8.2f} {a / b:6.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=1000)
    parser.add_argument("--connects", type=int, default=20)
    options = parser.parse_args()
    asyncio.run(run(options.sends, options.connects))
