"""client.py as a real subprocess against a fake replica served from the test process."""
import asyncio
import re
import sys
from typing import Tuple

import pytest

from replichat import defaults
from replichat.client.cli import default_servers
from replichat.wire.listener import start_wire_listener
from tests.client_process import CLIENT, REPO, STAMP, ClientProcess, brief_walkthrough

from .fake_backend import FakeCluster, FakeReplica, run, serving

pytestmark = pytest.mark.timeout(120)


async def _script(address: str, text: str) -> Tuple[int, str, str]:
    """Pipes a whole script in at once, as `printf ... | python3 client.py` would."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        CLIENT,
        "--servers",
        address,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(text.encode()), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_the_seed_walkthrough_word_for_word() -> None:
    async def scenario() -> None:
        async with serving(FakeReplica(FakeCluster())) as (_, address):
            user2 = await ClientProcess.start("--servers", address)
            user3 = await ClientProcess.start("--servers", address)
            try:
                await brief_walkthrough(user2, user3)
                for client in (user2, user3):
                    code, rest, err = await client.finish()
                    assert (code, rest) == (0, ""), err
                    assert "Traceback" not in err
            finally:
                user2.kill()
                user3.kill()

    run(scenario(), timeout=100)


def test_a_piped_script_gets_every_answer_in_order_and_exits_at_eof() -> None:
    async def scenario() -> Tuple[int, str, str]:
        async with serving(FakeReplica(FakeCluster())) as (_, address):
            return await _script(
                address,
                "create a\n"
                "send a hi  there \n"
                "\n"
                "list\n"
                "list ^z\n"
                "list (\n"
                "send nobody x\n"
                "create a\n"
                "connect a\n"
                "send a live\n"
                "delete a\n",
            )

    code, out, err = run(scenario(), timeout=100)
    assert code == 0, err
    assert err == ""  # not a TTY: no banner
    lines = out.splitlines()
    assert lines[:4] == ["ok: created a; you are now a", "ok: sent to a (#1)", "ok: 1 user(s): a", "ok: no users match"]
    assert lines[4].startswith("error: bad pattern")
    assert lines[5:8] == ["error: no such user: nobody", "error: user a already exists", "ok: connected as a; 1 queued message(s)"]
    assert re.fullmatch(STAMP + " a: hi  there ", lines[8])
    # The live message and the `send` answer race; both must be there, then the deletion.
    assert "ok: sent to a (#2)" in lines[9:11]
    assert any(re.fullmatch(STAMP + " a: live", line) for line in lines[9:11])
    # Deleting the connected user ends its session; the ack of "live" may or may not land first.
    assert len(lines) == 13 and "notice: user a was deleted" in lines[11:]
    assert any(re.fullmatch(r"ok: deleted a; [01] unread message\(s\) dropped", line) for line in lines[11:])


def test_help_unknown_commands_and_usage_errors() -> None:
    async def scenario() -> Tuple[int, str, str]:
        async with serving(FakeReplica(FakeCluster())) as (_, address):
            return await _script(address, "help\nfrobnicate now\nsend\nsend bob\ncreate\nconnect a b\nHELP\nquit\nlist\n")

    code, out, err = run(scenario(), timeout=100)
    assert code == 0, err
    lines = out.splitlines()
    help_lines = [line for line in lines if line.startswith("  ")]
    for command in ("create NAME", "connect NAME", "delete NAME", "list [PATTERN]", "send NAME TEXT", "status", "quit"):
        assert any(line.strip().startswith(command) for line in help_lines), command
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [
        "error: unknown command 'frobnicate' (type help)",
        "error: usage: send NAME TEXT",
        "error: usage: send NAME TEXT",
        "error: usage: create NAME",
        "error: usage: connect NAME",
    ]
    # quit stops before `list`; help was printed twice (case-insensitive commands).
    assert not any(line.startswith("ok:") for line in lines)
    assert lines.count("commands:") == 2


def test_takeover_notice_and_status_table() -> None:
    async def scenario() -> None:
        async with serving(FakeReplica(FakeCluster())) as (_, address):
            first = await ClientProcess.start("--servers", address)
            second = await ClientProcess.start("--servers", address)
            try:
                assert await first.ask("create bob") == ["ok: created bob; you are now bob"]
                assert await first.ask("connect bob") == ["ok: connected as bob; 0 queued message(s)"]
                assert await second.ask("connect bob") == ["ok: connected as bob; 0 queued message(s)"]
                assert await first.line() == "notice: session for bob was taken over by another client"
                header, row = await first.ask("status", answers=2)
                assert header.split() == ["address", "id", "role", "term", "leader", "commit", "applied", "last", "lag", "first", "snapshot"]
                assert row.split()[:5] == [address, "1", "leader", "3", "1"]
                for client in (first, second):
                    code, _, err = await client.finish()
                    assert code == 0, err
            finally:
                first.kill()
                second.kill()

    run(scenario(), timeout=100)


def test_unreachable_cluster_is_a_one_line_error() -> None:
    async def scenario() -> Tuple[int, str, str]:
        async with serving(FakeReplica(FakeCluster())) as (_, address):
            pass
        return await _script(address, "status\n")

    code, out, err = run(scenario(), timeout=100)
    assert code == 0, err
    assert out.splitlines()[1].split() == [out.splitlines()[1].split()[0], "unreachable"]
    assert "Traceback" not in err


def test_the_seed_walkthrough_over_the_wire_transport() -> None:
    """The same commands and answers as over gRPC, through a wire listener in front of the
    same fake replica; `status` is the one command the wire protocol cannot answer."""

    async def scenario() -> None:
        listener = await start_wire_listener(FakeReplica(FakeCluster()), "127.0.0.1", 0)
        address = f"127.0.0.1:{listener.port}"
        user2 = await ClientProcess.start("--transport", "wire", "--servers", address)
        user3 = await ClientProcess.start("--transport", "wire", "--servers", address)
        try:
            await brief_walkthrough(user2, user3)
            assert await user2.ask("status") == [
                "error: status is only available over gRPC; run client.py --transport grpc"
            ]
            for client in (user2, user3):
                code, rest, err = await client.finish()
                assert (code, rest) == (0, ""), err
                assert "Traceback" not in err
        finally:
            user2.kill()
            user3.kill()
            await listener.close()

    run(scenario(), timeout=100)


def test_wire_transport_defaults_to_the_local_wire_ports_and_refuses_bad_addresses() -> None:
    assert default_servers("wire") == defaults.local_wire_addresses()
    assert default_servers("grpc") == list(defaults.local_cluster().values())

    async def scenario() -> Tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            CLIENT,
            "--transport",
            "wire",
            "--servers",
            "127.0.0.1:1,no-port",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, out, err = run(scenario())
    assert (code, out, err.strip()) == (2, "", "error: bad server address 'no-port': expected host:port")
