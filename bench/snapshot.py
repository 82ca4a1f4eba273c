"""Chat-state snapshots: VACUUM INTO against SQLite's online backup API, and what a snapshot costs
the writes applied meanwhile.

    python3 bench/snapshot.py [--users 100000] [--messages 100000] [--runs 3]

Builds a state database with that many users and unread messages (each with a client id, so the
exactly-once table is full too), then, for each method: median time to take a snapshot, its
size, and the longest apply of a 16-entry batch while snapshots are taken back to back, next to
the longest without (the ratio is the pause a snapshot adds to writes).
"""
import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Callable, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from replichat.chat.snapshot import take_snapshot  # noqa: E402
from replichat.chat.state import ChatState  # noqa: E402
from replichat.proto import chat_pb2  # noqa: E402
from replichat.proto.command_pb2 import Command  # noqa: E402


def build(path: str, users: int, messages: int) -> ChatState:
    state = ChatState(path)
    index = 0
    batch: List[Tuple[int, bytes]] = []

    def add(command: Command) -> None:
        nonlocal index
        index += 1
        batch.append((index, command.SerializeToString()))
        if len(batch) >= 2000:
            state.apply_batch(batch)
            batch.clear()

    for n in range(users):
        add(Command(create=chat_pb2.CreateUserRequest(name=f"user{n:06d}", client_id=f"client{n}", request_seq=1)))
    for n in range(messages):
        add(Command(timestamp_ms=n, send=chat_pb2.SendMessageRequest(
            sender=f"user{(n + 1) % users:06d}", recipient=f"user{n % users:06d}", text="x" * 64,
            client_id=f"client{n % users}", request_seq=2 + n // users)))
    state.apply_batch(batch)
    return state


def backup_api(state_path: str, data_dir: str) -> int:
    target_path = os.path.join(data_dir, "backup.db")
    uri = "file:" + urllib.request.pathname2url(os.path.abspath(state_path)) + "?mode=ro"
    source = sqlite3.connect(uri, uri=True)
    target = sqlite3.connect(target_path)
    source.backup(target)
    target.close()
    source.close()
    fd = os.open(target_path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    return os.path.getsize(target_path)


def vacuum_into(state_path: str, data_dir: str) -> int:
    snap = take_snapshot(state_path, data_dir)
    size = snap.size
    os.unlink(os.path.join(data_dir, snap.file))
    return size


def longest_apply(state: ChatState, first_index: int, batches: int, users: int) -> Tuple[float, int]:
    worst = 0.0
    index = first_index
    for b in range(batches):
        items = []
        for _ in range(16):
            index += 1
            items.append((index, Command(send=chat_pb2.SendMessageRequest(
                recipient=f"user{index % users:06d}", text="y" * 64)).SerializeToString()))
        started = time.perf_counter()
        state.apply_batch(items)
        worst = max(worst, time.perf_counter() - started)
    return worst, index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="snapshot-bench-")
    try:
        state_path = os.path.join(base, "state.db")
        started = time.monotonic()
        state = build(state_path, args.users, args.messages)
        print(f"state: {args.users} users, {args.messages} messages, {os.path.getsize(state_path) / 2**20:.1f} MiB "
              f"(+ WAL), built in {time.monotonic() - started:.1f}s", file=sys.stderr)
        methods: List[Tuple[str, Callable[[str, str], int]]] = [("VACUUM INTO", vacuum_into), ("backup API", backup_api)]
        index = state.last_applied
        baseline, index = longest_apply(state, index, 200, args.users)
        print(f"{'method':<12} {'median s':>9} {'size MiB':>9} {'worst 16-entry apply during / without':>40}")
        for name, method in methods:
            times, sizes = [], []
            for _ in range(args.runs):
                started = time.perf_counter()
                sizes.append(method(state_path, base))
                times.append(time.perf_counter() - started)
            done = threading.Event()

            def loop() -> None:
                while not done.is_set():
                    method(state_path, base)

            thread = threading.Thread(target=loop)
            thread.start()
            worst, index = longest_apply(state, index, 200, args.users)
            done.set()
            thread.join()
            print(f"{name:<12} {statistics.median(times):>9.3f} {statistics.median(sizes) / 2**20:>9.1f} "
                  f"{worst * 1000:>20.1f} ms / {baseline * 1000:.1f} ms ({worst / baseline:.1f}x)")
        state.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
