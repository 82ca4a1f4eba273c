"""The interactive client: commands on stdin, answers and live messages on stdout.

Commands run one at a time, in input order, so a script piped in gets its answers in order;
live messages of a connected user print from a background task as they arrive, without
waiting for input. The shell only talks to a ChatApi, so both transports (gRPC, and the seed's
wire protocol with `--transport wire`) give the same commands the same answers.
"""
import argparse
import asyncio
import codecs
import datetime
import os
import sys
import threading
from typing import Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

from replichat import defaults
from replichat.client.api import ChatClient
from replichat.client.credentials import CredentialsFileError, FileCredentials, default_path
from replichat.client.types import DEFAULT_DEADLINE, Capability, ChatApi, ChatSession
from replichat.client.wire_api import STATUS_NOT_OVER_WIRE, WireChatApi
from replichat.errors import ChatError, Code
from replichat.proto import chat_pb2
from replichat.client import terminal
from replichat.version import version_text

USAGE: Dict[str, str] = {
    "create": "create NAME",
    "connect": "connect NAME",
    "delete": "delete NAME",
    "list": "list [PATTERN]",
    "send": "send NAME TEXT",
    "status": "status",
    "help": "help",
    "quit": "quit",
}

HELP = """commands:
  create NAME      create user NAME; you are now NAME
  connect NAME     log in as NAME: queued messages first, then new ones live
  delete NAME      delete user NAME and its unread messages
  list [PATTERN]   users matching a regular expression (all if none)
  send NAME TEXT   send TEXT to NAME (from the user you are now, if any)
  status           every replica's role, term, leader and log indexes (gRPC only)
  help             this list
  quit             leave (so does end of input)"""


# How long `delete` of the connected user waits for that session's end notice. The notice
# normally follows within a round trip; the bound only keeps a lost one from stalling input.
SESSION_END_WAIT = 5.0


class UsageError(Exception):
    """A command line the shell cannot parse; the message is the usage to show."""


def _printable(text: str) -> str:
    """Keeps one message on one line and keeps a sender's escape codes off our terminal."""
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)


def format_delivery(delivery: chat_pb2.Delivery) -> str:
    when = datetime.datetime.fromtimestamp(delivery.sent_at_ms / 1000.0).strftime("%Y-%m-%d %H:%M:%S")
    sender = _printable(delivery.sender) if delivery.sender else "(anonymous)"
    return f"[{when}] {sender}: {_printable(delivery.text)}"


def format_status(rows: Sequence[Tuple[str, Optional[chat_pb2.StatusResponse], Optional[str]]]) -> List[str]:
    """A table with one line per replica; a replica that did not answer is `unreachable`.
    `lag` is how many entries a replica has yet to apply compared with the most advanced
    commit index among the replicas that answered."""
    header = ["address", "id", "role", "term", "leader", "commit", "applied", "last", "lag", "first", "snapshot"]
    table: List[List[str]] = [header]
    newest_commit = max((status.commit_index for _, status, _ in rows if status is not None), default=0)
    for address, status, _error in rows:
        if status is None:
            table.append([address, "unreachable"])
            continue
        table.append(
            [
                address,
                str(status.id),
                status.role or "?",
                str(status.term),
                str(status.leader_id) if status.leader_id else "-",
                str(status.commit_index),
                str(status.applied_index),
                str(status.last_index),
                str(max(0, newest_commit - status.applied_index)),
                str(status.first_index or 1),
                str(status.snapshot_index),
            ]
        )
    # An unreachable row only lines up its address; its note may overhang the id column.
    widths = [max(len(row[i]) for row in table if len(row) == len(header)) for i in range(len(header))]
    widths[0] = max(len(row[0]) for row in table)
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in table]


def _split(rest: str) -> Tuple[str, str]:
    """First word and the remainder (leading separator removed, inner spacing kept)."""
    parts = rest.lstrip().split(None, 1)
    if not parts:
        return "", ""
    if len(parts) == 1:
        return parts[0], ""
    return parts[0], parts[1]


def _one_name(command: str, rest: str) -> str:
    name, extra = _split(rest)
    if not name or extra.strip():
        raise UsageError(USAGE[command])
    return name


class Shell:
    """Runs commands against a ChatApi and prints one line per answer."""

    def __init__(self, api: ChatApi, emit: Callable[[str], None] = lambda line: print(line, flush=True)) -> None:
        self._api = api
        self._emit = emit
        self.acting_as = ""  # sender of `send`; empty: anonymous
        self._session: Optional[ChatSession] = None
        self._reader: Optional["asyncio.Task[None]"] = None
        self._handlers: Dict[str, Callable[[str], Awaitable[None]]] = {
            "create": self._create,
            "connect": self._connect,
            "delete": self._delete,
            "list": self._list,
            "send": self._send,
            "status": self._status,
            "help": self._help,
        }

    async def handle(self, line: str) -> bool:
        """Runs one input line; False when the user asked to leave."""
        if not line.strip():
            return True
        word, rest = _split(line)  # the rest keeps its spacing: `send` takes it verbatim
        command = word.lower()
        if command in ("quit", "exit"):
            return False
        handler = self._handlers.get(command)
        if handler is None:
            self._emit(f"error: unknown command '{_printable(word)}' (type help)")
            return True
        try:
            await handler(rest)
        except UsageError as usage:
            self._emit(f"error: usage: {usage}")
        except ChatError as error:
            self._emit(f"error: {_printable(error.message)}")
        except CredentialsFileError as error:
            self._emit(f"error: {_printable(str(error))}")
        return True

    async def close(self) -> None:
        """Ends the session (flushing acks, so shown messages are not redelivered)."""
        await self._end_session()

    # -- commands ------------------------------------------------------------------

    async def _create(self, rest: str) -> None:
        name = await self._api.create(_one_name("create", rest))
        self.acting_as = name
        self._emit(f"ok: created {name}; you are now {name}")

    async def _delete(self, rest: str) -> None:
        name = _one_name("delete", rest)
        dropped = await self._api.delete(name)
        if name == self.acting_as:
            self.acting_as = ""
        self._emit(f"ok: deleted {name}; {dropped} unread message(s) dropped")
        reader, session = self._reader, self._session
        if reader is not None and session is not None and session.name == name:
            # Our own session is ending: show its notice before the next command's answer.
            await asyncio.wait([reader], timeout=SESSION_END_WAIT)

    async def _list(self, rest: str) -> None:
        names = await self._api.list(rest.strip())
        if names:
            self._emit(f"ok: {len(names)} user(s): {', '.join(names)}")
        else:
            self._emit("ok: no users match")

    async def _send(self, rest: str) -> None:
        recipient, text = _split(rest)
        if not recipient or not text:
            raise UsageError(USAGE["send"])
        seq = await self._api.send(recipient, text, sender=self.acting_as)
        self._emit(f"ok: sent to {recipient} (#{seq})")

    async def _status(self, rest: str) -> None:
        if Capability.STATUS not in self._api.capabilities:
            # Not one unreachable replica per row: the transport has no way to ask.
            raise ChatError(Code.INVALID_ARGUMENT, f"{STATUS_NOT_OVER_WIRE}; run client.py --transport grpc")
        rows = await self._api.status_all()
        for line in format_status(rows):
            self._emit(line)

    async def _help(self, rest: str) -> None:
        for line in HELP.splitlines():
            self._emit(line)

    async def _connect(self, rest: str) -> None:
        name = _one_name("connect", rest)
        await self._end_session()
        session = await self._api.connect(name)
        self._session = session
        self.acting_as = name
        backlog_shown = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._show(session, backlog_shown))
        # Wait for the queued messages, so the next command's answer follows them; a
        # session that ends (or a bug that loses a message) must not stall the shell.
        waiter = asyncio.get_running_loop().create_task(backlog_shown.wait())
        await asyncio.wait([waiter, self._reader], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()

    async def _show(self, session: ChatSession, backlog_shown: asyncio.Event) -> None:
        """Prints a session's events as they come, acknowledging each once printed."""
        backlog = 0
        try:
            async for event in session:
                if isinstance(event, chat_pb2.Connected):
                    backlog = event.queued
                    self._emit(f"ok: connected as {event.name or session.name}; {backlog} queued message(s)")
                elif isinstance(event, chat_pb2.Delivery):
                    self._emit(format_delivery(event))
                    session.ack(event.seq)
                    backlog -= 1
                elif isinstance(event, chat_pb2.SessionEnded):
                    self._emit(self._ended_notice(session.name, event))
                if backlog <= 0:
                    backlog_shown.set()
        except ChatError as error:
            self._emit(f"error: lost the session for {session.name}: {_printable(error.message)}")
        finally:
            backlog_shown.set()

    @staticmethod
    def _ended_notice(name: str, ended: chat_pb2.SessionEnded) -> str:
        if ended.reason == chat_pb2.SessionEnded.TAKEN_OVER:
            return f"notice: session for {name} was taken over by another client"
        if ended.reason == chat_pb2.SessionEnded.USER_DELETED:
            return f"notice: user {name} was deleted"
        detail = f": {_printable(ended.detail)}" if ended.detail else ""
        return f"notice: session for {name} ended{detail}"

    async def _end_session(self) -> None:
        reader, session = self._reader, self._session
        self._reader, self._session = None, None
        if reader is not None:
            reader.cancel()
            await asyncio.wait([reader])
        if session is not None:
            await session.close()


def start_stdin_reader(loop: asyncio.AbstractEventLoop) -> "asyncio.Queue[Optional[str]]":
    """Feeds stdin lines (None at EOF) to the event loop from a daemon thread.

    A thread works the same for a TTY, a pipe and a regular file (connect_read_pipe refuses
    files and would put a shared terminal in non-blocking mode). It reads the raw descriptor:
    a daemon thread parked inside sys.stdin's buffered reader holds its lock, which can abort
    the interpreter at exit.
    """
    queue: "asyncio.Queue[Optional[str]]" = asyncio.Queue()

    def deliver(item: Optional[str]) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
            return True
        except RuntimeError:  # the loop is closed: we are exiting
            return False

    def pump() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        fd = sys.stdin.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            pending += decoder.decode(chunk, final=not chunk)
            *lines, pending = pending.split("\n")
            for line in lines:
                if not deliver(line.rstrip("\r")):
                    return
            if not chunk:
                if pending:
                    deliver(pending.rstrip("\r"))
                deliver(None)
                return

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    return queue


async def run_shell(api: ChatApi, lines: "asyncio.Queue[Optional[str]]",
                    emit: Optional[Callable[[str], None]] = None) -> None:
    """Runs commands until EOF or quit, then ends the session cleanly."""
    shell = Shell(api) if emit is None else Shell(api, emit)
    try:
        while True:
            line = await lines.get()
            if line is None or not await shell.handle(line):
                break
    finally:
        await shell.close()
        await api.close()


class TransportUnavailable(Exception):
    pass


TRANSPORTS = ("grpc", "wire")


def make_api(
    transport: str, servers: List[str], deadline: float = DEFAULT_DEADLINE, credentials: Optional[str] = None,
    ca_file: Optional[str] = None,
) -> ChatApi:
    """The client for a transport; each provides the same ChatApi the shell uses.
    ca_file: use TLS, verifying the replicas against this CA.

    Raises ValueError for a server address the transport cannot use.
    """
    store = FileCredentials(credentials)
    if transport == "grpc":
        return ChatClient(servers, deadline=deadline, credentials=store, ca_file=ca_file)
    if transport == "wire":
        return WireChatApi(servers, deadline=deadline, credentials=store, ca_file=ca_file)
    raise TransportUnavailable(f"{transport} transport not available")


def default_servers(transport: str) -> List[str]:
    """The default local cluster (server.py with no arguments), at the transport's ports."""
    if transport == "wire":
        return defaults.local_wire_addresses()
    return list(defaults.local_cluster().values())


def parse_servers(text: str) -> List[str]:
    return [address.strip() for address in text.split(",") if address.strip()]


def _port_range(servers: List[str]) -> str:
    """host:first-last, short enough for --help; the addresses themselves when not a range."""
    first, last = servers[0].rpartition(":"), servers[-1].rpartition(":")
    if len(servers) > 1 and first[0] == last[0] and int(last[2]) - int(first[2]) == len(servers) - 1:
        return f"{servers[0]}-{last[2]}"
    return ",".join(servers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="client.py",
        description="Interactive replichat client: commands on stdin (type help), answers on stdout.",
    )
    parser.add_argument("--version", action="version", version=version_text("replichat"))
    parser.add_argument(
        "--servers",
        default=None,
        help="comma-separated replica addresses for the chosen transport, any order "
        f"(default: the local cluster of server.py, {_port_range(default_servers('grpc'))} for grpc, "
        f"{_port_range(default_servers('wire'))} for wire)",
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="grpc",
        help="grpc: the gRPC API (default); wire: the original brief's byte protocol "
        "(docs/wire-protocol.md) on the replicas' wire ports, with the same commands and "
        "answers except status; a write whose connection is lost before its answer is "
        "reported, not retried",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_DEADLINE,
        metavar="SECONDS",
        help=f"give up on a command when no replica answers within this time (default: {DEFAULT_DEADLINE:g})",
    )
    parser.add_argument(
        "--credentials",
        default=None,
        metavar="FILE",
        help="where the credentials of users this client creates are kept (mode 0600); `connect`, "
        "`delete` and sending as a user need that user's entry "
        f"(default: {default_path()}, under $XDG_CONFIG_HOME or ~/.config)",
    )
    parser.add_argument(
        "--ca",
        metavar="FILE",
        help="connect with TLS, verifying the replicas' certificates against this CA file (default with the "
        f"default --servers over grpc: {defaults.LOCAL_CA_FILE}, which server.py's local cluster creates, "
        "if it exists); --ca '' forces plaintext",
    )
    return parser


def default_ca(transport: str, servers_given: bool) -> Optional[str]:
    """The local cluster's CA, for the stock client of the local cluster: server.py serves gRPC
    with TLS (its wire port stays the brief's plain protocol)."""
    if servers_given or transport != "grpc" or not os.path.isfile(defaults.LOCAL_CA_FILE):
        return None
    return defaults.LOCAL_CA_FILE


async def _main(transport: str, servers: List[str], deadline: float, credentials: Optional[str],
                ca_file: Optional[str] = None) -> int:
    try:
        api = make_api(transport, servers, deadline, credentials, ca_file)
    except (TransportUnavailable, ValueError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    if sys.stdin.isatty():
        print(
            f"replichat client ({transport}; replicas: {', '.join(servers)}). Type help for commands.",
            file=sys.stderr,
            flush=True,
        )
    if not terminal.is_interactive():  # a script: one answer line per command, no prompt, no color
        await run_shell(api, start_stdin_reader(asyncio.get_running_loop()))
        return 0
    person = terminal.Terminal()
    try:
        await run_shell(api, person.start(asyncio.get_running_loop()), person.emit)
    finally:
        person.close()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    servers = default_servers(args.transport) if args.servers is None else parse_servers(args.servers)
    if not servers:
        build_parser().error("--servers needs at least one address")
    if not args.deadline > 0:
        build_parser().error("--deadline must be positive")
    ca_file = default_ca(args.transport, args.servers is not None) if args.ca is None else (args.ca or None)
    if ca_file is not None and not os.path.isfile(ca_file):
        build_parser().error(f"--ca {ca_file}: no such file")
    try:
        code = asyncio.run(_main(args.transport, servers, args.deadline, args.credentials, ca_file))
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # stdout closed (e.g. piped into head): nothing left to say
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        code = 1
    sys.exit(code)
