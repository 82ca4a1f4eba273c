"""The client for a person at a terminal, in a real pseudo-terminal against a real replica:
tab completion of commands and names, history (up arrow), color (and none with NO_COLOR), and a
message arriving while a line is typed: printed above it, the typed line drawn again. Piped
input stays plain: one answer line per command, no prompt, no color."""
import asyncio
import os
import pty
import select
import subprocess
import sys
import time
from typing import List

import pytest

from replichat.client.api import ChatClient
from replichat.client.terminal import NameBook, colorize, completions
from tests.client_process import REPO

pytestmark = pytest.mark.timeout(120)

WAIT = 15.0
GREEN_OK = "\x1b[32mok:\x1b[0m"
RED_ERROR = "\x1b[31merror:\x1b[0m"


class PtyClient:
    def __init__(self, servers: List[str], home: str, no_color: bool = False) -> None:
        master, slave = pty.openpty()
        env = dict(os.environ, TERM="xterm", HOME=home, PYTHONUNBUFFERED="1")
        env.pop("NO_COLOR", None)
        if no_color:
            env["NO_COLOR"] = "1"
        self.process = subprocess.Popen([sys.executable, os.path.join(REPO, "client.py"), "--servers", ",".join(servers)],
                                        stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.master = master
        self.output = ""

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def expect(self, text: str, timeout: float = WAIT) -> str:
        """Reads until `text` has appeared (after what earlier expects consumed); returns what came."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} did not appear; the terminal shows {self.output!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the client exited: nothing more will come
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"{text!r} did not appear before the end; shown: {self.output!r}")
                self.output += chunk.decode(errors="replace")
        seen, _, self.output = self.output.partition(text)
        return seen + text

    def close(self) -> int:
        """Waits for the client to exit, reading what it still prints meanwhile."""
        deadline = time.monotonic() + WAIT
        try:
            while self.process.poll() is None and time.monotonic() < deadline:
                ready, _, _ = select.select([self.master], [], [], 0.1)
                if ready:
                    try:
                        self.output += os.read(self.master, 65536).decode(errors="replace")
                    except OSError:
                        pass
            return self.process.wait(max(0.0, deadline - time.monotonic()))
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            os.close(self.master)


def test_completion_history_color_and_a_message_while_typing(process_cluster, tmp_path) -> None:
    cluster = process_cluster(1)
    asyncio.run(cluster.wait_for_leader())
    client = PtyClient(cluster.servers, str(tmp_path))
    try:
        client.expect("> ")
        client.type("cre\t")
        client.expect("create ")  # the command completed
        client.type("alice\r")
        client.expect(f"{GREEN_OK} created alice")
        client.expect("alice> ")
        client.type("\x1b[A")  # up arrow: the previous line again
        client.expect("create alice")
        client.type("\r")
        client.expect(f"{RED_ERROR} ")
        client.expect("alice> ")
        client.type("list\r")
        client.expect("user(s): alice")
        client.expect("alice> ")
        client.type("connect al\t")
        client.expect("connect alice ")  # the user name completed
        client.type("\r")
        client.expect("connected as alice")
        client.expect("alice> ")
        client.type("send ali")
        client.expect("send ali")

        async def send() -> None:
            async with ChatClient(cluster.servers) as other:
                await other.send("alice", "hello while you type")

        asyncio.run(send())
        shown = client.expect("alice> send ali")  # the typed line, drawn again below the message
        assert "hello while you type" in shown and "\x1b[1m(anonymous)\x1b[0m" in shown
        client.type("ce hi\r")
        client.expect("sent to alice")
        client.expect("alice> ")  # keys typed before readline reads would meet the terminal's own line mode
        client.type("quit\r")
        assert client.close() == 0
    finally:
        if client.process.poll() is None:
            client.process.kill()
    with open(tmp_path / ".replichat_history") as history:
        assert "create alice" in history.read().splitlines()


def test_no_color_with_no_color_set(process_cluster, tmp_path) -> None:
    cluster = process_cluster(1)
    asyncio.run(cluster.wait_for_leader())
    client = PtyClient(cluster.servers, str(tmp_path), no_color=True)
    try:
        client.expect("> ")
        client.type("create bob\r")
        shown = client.expect("created bob")
        client.expect("bob> ")
        client.type("\x04")  # Ctrl-D: end of input
        assert client.close() == 0
    finally:
        if client.process.poll() is None:
            client.process.kill()
    assert "ok: created bob" in shown and "\x1b[32m" not in shown


def test_piped_input_stays_one_plain_line_per_command(process_cluster) -> None:
    cluster = process_cluster(1)
    asyncio.run(cluster.wait_for_leader())
    done = subprocess.run([sys.executable, os.path.join(REPO, "client.py"), "--servers", ",".join(cluster.servers)],
                          input="create carol\nlist\nsend nobody hi\n", capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, TERM="xterm"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["ok: created carol; you are now carol", "ok: 1 user(s): carol",
                                        "error: no such user 'nobody'"]


def test_completions_and_names_learned_from_output() -> None:
    names = NameBook()
    names.learn_from_output("ok: 3 user(s): alice, bob, albert")
    names.learn_from_output("[2026-11-26 16:30:01] zed: hello: there")
    names.learn_from_output("ok: connected as carol; 2 queued message(s)")
    assert names.me == "carol"
    assert completions("", 0, "c", names) == ["create ", "connect "]
    assert completions("send al", 5, "al", names) == ["albert ", "alice "]
    assert completions("connect ", 8, "", names) == ["albert ", "alice ", "bob ", "carol ", "zed "]
    assert completions("list al", 5, "al", names) == []  # list takes a pattern, not a name
    assert completions("send alice hel", 11, "hel", names) == []  # the text is free


def test_colors() -> None:
    assert colorize("ok: created a") == f"{GREEN_OK} created a"
    assert colorize("error: no such user 'b'") == f"{RED_ERROR} no such user 'b'"
    assert colorize("[2026-11-26 16:30:01] bob: hi: there") == \
        "\x1b[2m[2026-11-26 16:30:01]\x1b[0m \x1b[1mbob\x1b[0m: hi: there"
    assert colorize("plain") == "plain"
