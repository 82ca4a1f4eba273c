"""`python client.py` as a real subprocess with piped stdin/stdout, read line by line."""
import asyncio
import os
import re
import sys
from typing import List, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT = os.path.join(REPO, "client.py")
LINE_TIMEOUT = 15.0
STAMP = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]"


class ClientProcess:
    """One `python client.py` with piped stdin/stdout, read line by line with a timeout."""

    def __init__(self, proc: "asyncio.subprocess.Process") -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *args: str) -> "ClientProcess":
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            CLIENT,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        return cls(proc)

    async def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def line(self) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), LINE_TIMEOUT)
        assert raw, "client exited early; stderr: " + await self._stderr()
        return raw.decode().rstrip("\n")

    async def ask(self, command: str, answers: int = 1) -> List[str]:
        await self.type(command)
        return [await self.line() for _ in range(answers)]

    async def finish(self) -> Tuple[int, str, str]:
        """Closes stdin (EOF) and returns (exit code, remaining stdout, stderr)."""
        assert self.proc.stdin is not None
        if not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            out, err = await asyncio.wait_for(self.proc.communicate(), LINE_TIMEOUT)
        finally:
            self.kill()
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode(), err.decode()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    async def _stderr(self) -> str:
        assert self.proc.stderr is not None
        try:
            return (await asyncio.wait_for(self.proc.stderr.read(), 2)).decode()
        except asyncio.TimeoutError:
            return "(still running)"


async def brief_walkthrough(terminal2: ClientProcess, terminal3: ClientProcess) -> None:
    """Steps 3-7 of the original brief's walkthrough, word for word, with the answers each
    terminal must print."""
    assert await terminal2.ask("create user2") == ["ok: created user2; you are now user2"]
    assert await terminal3.ask("create user3") == ["ok: created user3; you are now user3"]
    assert await terminal2.ask("list") == ["ok: 2 user(s): user2, user3"]
    assert await terminal2.ask("send user3 hello") == ["ok: sent to user3 (#1)"]
    # Not delivered yet: the very next thing terminal 3 prints is its connect answer.
    connected, hello = await terminal3.ask("connect user3", answers=2)
    assert connected == "ok: connected as user3; 1 queued message(s)"
    assert re.fullmatch(STAMP + r" user2: hello", hello), hello
    assert await terminal2.ask("send user3 helloagain") == ["ok: sent to user3 (#2)"]
    live = await terminal3.line()  # arrives without terminal 3 typing anything
    assert re.fullmatch(STAMP + r" user2: helloagain", live), live
