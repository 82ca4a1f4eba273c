"""What mutual TLS costs on the Raft peer path, measured against plain TCP in the same run.

    python3 bench/peer_tls.py [--messages 200000] [--batch 32] [--rounds 3] [--uvloop]

One process, one event loop: a sender (transport.PeerTransport) and a receiver
(transport.start_peer_listener) on 127.0.0.1 exchange APPEND messages carrying one 100-byte
entry each (a chat send's size), `--batch` per frame (the leader's pipelining sends that many at
64 writes in flight), with and without TLS, alternating `--rounds` times. Reported per mode:
CPU microseconds per message (sender and receiver together: the process's CPU time) and
messages/s; then the TLS/plain ratio of the medians. The handshake is paid once per peer
connection and left out (connections are long-lived); the figure is the per-message cost.
"""
import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from replichat.server.launcher import free_ports  # noqa: E402
from replichat.raft.messages import Entry, Message, MsgType  # noqa: E402
from replichat.security import certs, tls  # noqa: E402
from replichat.runtime.transport import PeerTransport, start_peer_listener  # noqa: E402


async def one_run(messages: int, batch: int, certs_dir: str, use_tls: bool) -> Dict[str, float]:
    (port,) = free_ports(1)
    addresses = {1: "127.0.0.1:1", 2: f"127.0.0.1:{port}"}
    server_ctx = tls.peer_server_context(certs.replica_paths(certs_dir, 2)) if use_tls else None
    client_ctx = tls.peer_client_context(certs.replica_paths(certs_dir, 1)) if use_tls else None
    received = [0]
    done = asyncio.get_event_loop().create_future()

    def deliver(batch_: List[Message]) -> None:
        received[0] += len(batch_)
        if received[0] >= messages and not done.done():
            done.set_result(None)

    listener = await start_peer_listener(2, deliver, "127.0.0.1", port, senders=[1], ssl_context=server_ctx)
    sender = PeerTransport(1, addresses, client_ctx)
    sender.start()
    payload = b"x" * 100
    frames = [[Message(MsgType.APPEND, 1, 2, 3, log_term=3, index=i + k, entries=(Entry(3, i + k + 1, payload),),
                       commit=i) for k in range(batch)] for i in range(0, messages, batch)]
    # Warm up: the connection and its handshake are made before the clock starts.
    sender.send(frames[0][:1])
    while received[0] < 1:
        await asyncio.sleep(0.001)
    received[0] = 0
    try:
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        for frame in frames:
            sender.send(frame)
            await asyncio.sleep(0)  # one frame per turn, as the node sends one Ready at a time
        await asyncio.wait_for(done, 120)
        wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    finally:
        await sender.close()
        listener.close()
        await listener.wait_closed()
    return {"us_per_message": cpu / messages * 1e6, "messages_per_s": messages / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as the replicas do")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="replichat-peer-tls-")
    certs.init_certs(folder, {1: ["127.0.0.1"], 2: ["127.0.0.1"]})
    results: Dict[str, List[Dict[str, float]]] = {"plain": [], "tls": []}

    async def run_all() -> None:
        for _ in range(args.rounds):
            for mode in ("plain", "tls"):
                results[mode].append(await one_run(args.messages, args.batch, folder, mode == "tls"))

    if args.uvloop:
        import uvloop

        uvloop.run(run_all())
    else:
        asyncio.run(run_all())
    medians = {}
    print(f"peer path, {args.messages} APPEND messages of one 100-byte entry, {args.batch} per frame, "
          f"{'uvloop' if args.uvloop else 'asyncio'}, median of {args.rounds}")
    for mode, runs in results.items():
        us = statistics.median(r["us_per_message"] for r in runs)
        rate = statistics.median(r["messages_per_s"] for r in runs)
        medians[mode] = us
        print(f"  {mode:<6} {us:7.2f} us CPU per message   {rate:10,.0f} messages/s")
    print(f"  TLS / plain CPU per message: {medians['tls'] / medians['plain']:.2f}x "
          f"(+{medians['tls'] - medians['plain']:.2f} us per message)")


if __name__ == "__main__":
    main()
