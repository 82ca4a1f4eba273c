"""How long a hostile `list` stalls a replica's event loop, with 10^5 users.

One replica (a real Node, in this process, no network clients) whose chat state holds
--users users; while `list PATTERN` runs for each hostile pattern, a probe on the replica's
event loop sleeps 1 ms at a time and records how late each wake-up is. The longest lateness
is the loop's longest stall: the budget is 50 ms (heartbeats every 50 ms; an election timeout
is 10 of them). Baselines in the same run: the probe with no `list` running, and one pattern
matched on the loop as the code before this did.

    python3 bench/list_stall.py [--users 100000]
"""
import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from typing import List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from replichat.chat.names import lookalike_key  # noqa: E402
from replichat.chat.search import compile_pattern  # noqa: E402
from replichat.chat.state import ChatState  # noqa: E402
from replichat.errors import ChatError  # noqa: E402
from replichat.chat.machine import ChatMachine  # noqa: E402
from replichat.chat.service import ChatService  # noqa: E402
from replichat.runtime.node import Node  # noqa: E402

PATTERNS = ["(.*){1000}", "(.*){100}", "(.?){100}", r"(\w*){9}", "((((.*)*)*)*){10}", "^user0012"]


def fill(path: str, users: int) -> None:
    ChatState(path).close()  # the schema
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO users (name, next_seq, session_id, created_index, credential, lookalike)"
            " VALUES (?, 1, '', 0, '', ?)",
            ((name, lookalike_key(name)) for name in (f"user{n:07d}-{'x' * (n % 20)}" for n in range(users))),
        )
    db.close()


async def probe(stop: asyncio.Event) -> Tuple[float, int]:
    """Longest lateness of a 1 ms sleep (seconds), and the number of wake-ups."""
    loop = asyncio.get_running_loop()
    worst, count = 0.0, 0
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.001)
        worst = max(worst, loop.time() - before - 0.001)
        count += 1
    return worst, count


async def measure(node: ChatService, pattern: str) -> Tuple[str, float, float, int]:
    stop = asyncio.Event()
    prober = asyncio.ensure_future(probe(stop))
    started = time.perf_counter()
    try:
        outcome = f"{len(await node.list_users(pattern)):,} users"
    except ChatError as error:
        outcome = f"refused: {error.message}"
    elapsed = time.perf_counter() - started
    stop.set()
    worst, count = await prober
    return outcome, elapsed, worst, count


async def main(users: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        state_path = os.path.join(folder, "state.db")
        fill(state_path, users)
        runtime = Node(1, {1: "127.0.0.1:1"}, folder, lambda log: ChatMachine.open(state_path, log))
        node = ChatService(runtime, state_path)
        await node.start()
        try:
            while runtime.core is None or runtime.core.role.value != "leader":
                await asyncio.sleep(0.05)
            stop = asyncio.Event()
            prober = asyncio.ensure_future(probe(stop))
            await asyncio.sleep(2)
            stop.set()
            idle, _ = await prober
            rows: List[str] = [f"baseline (no list): longest stall {idle * 1000:.1f} ms"]
            for pattern in PATTERNS:
                outcome, elapsed, worst, count = await measure(node, pattern)
                rows.append(f"list {pattern!r}: {elapsed:.2f} s, longest stall {worst * 1000:.1f} ms "
                            f"({count} probe wake-ups); {outcome}")
            # What the code before did: match on the loop, no budget (one moderate pattern).
            names = node._reader.names()  # type: ignore[union-attr]
            matcher = compile_pattern("(.*){100}")
            started = time.perf_counter()
            found = [name for name in names if matcher(name)]
            rows.append(f"before (matching on the loop) '(.*){{100}}': loop blocked "
                        f"{(time.perf_counter() - started) * 1000:.0f} ms; {len(found):,} users")
            print(f"{users:,} users, Python {sys.version.split()[0]}")
            for row in rows:
                print(row)
        finally:
            await node.stop(transfer_leadership=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().users))
