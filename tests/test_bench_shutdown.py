"""bench/compare.py's exit is bounded: grpc.aio is never shut down under a process that leaves
hundreds of streams open (what hung it in asyncio.run's clean-up), and a teardown that is stuck
anyway ends after its budget with the results saved."""
import subprocess
import sys
import textwrap

import pytest

from tests.client_process import REPO

pytestmark = pytest.mark.timeout(120)

# A process that opens STREAMS server-streaming calls to its own grpc.aio server and returns
# from asyncio.run without closing any of them. With grpcio 1.70 and without
# keep_grpc_aio_initialized() this never exits (checked by hand: 300 streams suffice).
LEAVES_STREAMS_OPEN = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {repo!r})
    import grpc
    from bench.common import keep_grpc_aio_initialized
    from replichat.proto import chat_pb2, chat_pb2_grpc

    keep_grpc_aio_initialized()
    STREAMS = 600

    class Streams(chat_pb2_grpc.ChatServicer):
        async def Connect(self, request, context):
            yield chat_pb2.ServerEvent(connected=chat_pb2.Connected(name=request.name))
            await asyncio.sleep(3600)

    async def main():
        server = grpc.aio.server()
        chat_pb2_grpc.add_ChatServicer_to_server(Streams(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{{port}}", options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(STREAMS // 100)]
        calls = [chat_pb2_grpc.ChatStub(channels[k // 100]).Connect(chat_pb2.ConnectRequest(name=f"u{{k}}"))
                 for k in range(STREAMS)]
        for call in calls:
            await call.read()
        print("open", len(calls), flush=True)

    asyncio.run(main())
    print("returned", flush=True)
""")


def test_a_process_leaving_hundreds_of_streams_open_exits() -> None:
    done = subprocess.run([sys.executable, "-c", LEAVES_STREAMS_OPEN.format(repo=REPO)], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["open", "600", "returned"]


STUCK_TEARDOWN = textwrap.dedent("""
    import sys, threading
    sys.path.insert(0, {repo!r})
    from bench.common import TeardownWatchdog

    watchdog = TeardownWatchdog(1.0, lambda: print("saved", flush=True))
    watchdog.finished.set()
    threading.Event().wait()  # a teardown that never ends
""")


def test_a_stuck_teardown_saves_and_exits_after_its_budget() -> None:
    done = subprocess.run([sys.executable, "-c", STUCK_TEARDOWN.format(repo=REPO)], capture_output=True,
                          text=True, timeout=30, cwd=REPO)
    assert done.returncode == 3
    assert done.stdout.strip() == "saved"
    assert "did not finish within 1 s" in done.stderr and "Thread" in done.stderr  # every thread's stack


def test_a_teardown_that_finishes_is_left_alone() -> None:
    script = STUCK_TEARDOWN.format(repo=REPO).replace("threading.Event().wait()  # a teardown that never ends",
                                                      "watchdog.done.set(); import time; time.sleep(2); print('exited')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip() == "exited", done.stderr
