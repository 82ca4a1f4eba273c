"""The interactive client for a person at a terminal: line editing and history (the standard
library's readline), tab completion of commands and user names, messages that arrive while a
line is being typed printed above it (the line is redrawn, not garbled), and color when the
output is a terminal and NO_COLOR is not set.

Only when both stdin and stdout are terminals (and readline exists): a script that pipes
commands in gets the plain reader of cli.py and exactly one answer line per command.
"""
import asyncio
import os
import re
import sys
import threading
from typing import Callable, List, Mapping, Optional, Set, TextIO

try:
    import readline
except ImportError:  # pragma: no cover - Windows, or a Python built without it
    readline = None  # type: ignore[assignment]

try:
    import termios
except ImportError:  # pragma: no cover
    termios = None  # type: ignore[assignment]

COMMANDS = ("create", "connect", "delete", "list", "send", "status", "help", "quit")
# Commands whose first argument is a user name.
NAME_COMMANDS = frozenset({"create", "connect", "delete", "send"})
HISTORY_PATH = os.path.join(os.path.expanduser("~"), ".replichat_history")
HISTORY_LENGTH = 1000
MAX_NAMES = 10_000  # completion candidates kept (names seen in answers and messages)

_SGR = {"ok": "32", "error": "31", "notice": "33"}  # green, red, yellow
_RESET = "\x1b[0m"
_DELIVERY = re.compile(r"^(\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]) ([^:]+)(: .*)$")
_LISTED = re.compile(r"^ok: \d+ user\(s\): (.*)$")
_NAME_IN_ANSWER = re.compile(r"^ok: (?:created|connected as|sent to|deleted) ([^\s;()]+)")
_YOU_ARE = re.compile(r"^ok: (?:created ([^\s;]+); you are now|connected as ([^\s;]+);)")


def is_interactive(stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> bool:
    return readline is not None and stdin.isatty() and stdout.isatty()


def color_wanted(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Color only on a terminal, never with NO_COLOR set (to anything non-empty: no-color.org)."""
    return stream.isatty() and not environ.get("NO_COLOR") and environ.get("TERM", "") != "dumb"


def colorize(line: str) -> str:
    """`ok:`/`error:`/`notice:` in their color; a message's sender in bold, its time dimmed."""
    word = line.split(":", 1)[0]
    if word in _SGR and ":" in line:
        return f"\x1b[{_SGR[word]}m{word}:{_RESET}{line[len(word) + 1:]}"
    match = _DELIVERY.match(line)
    if match:
        when, sender, rest = match.groups()
        return f"\x1b[2m{when}{_RESET} \x1b[1m{sender}{_RESET}{rest}"
    return line


class NameBook:
    """User names seen so far (answers, messages, typed commands): the completion candidates.
    Written on the event loop, read by readline's completer on the input thread."""

    def __init__(self) -> None:
        self._names: Set[str] = set()
        self._lock = threading.Lock()
        self.me = ""

    def add(self, names: List[str]) -> None:
        with self._lock:
            for name in names:
                if name and len(self._names) < MAX_NAMES:
                    self._names.add(name)

    def learn_from_output(self, line: str) -> None:
        listed = _LISTED.match(line)
        if listed:
            self.add([n.strip() for n in listed.group(1).split(",")])
            return
        you = _YOU_ARE.match(line)
        if you:
            self.me = you.group(1) or you.group(2)
        for pattern in (_NAME_IN_ANSWER, _DELIVERY):
            match = pattern.match(line)
            if match:
                self.add([match.group(1) if pattern is _NAME_IN_ANSWER else match.group(2)])

    def learn_from_command(self, line: str) -> None:
        words = line.split()
        if len(words) >= 2 and words[0].lower() in NAME_COMMANDS:
            self.add([words[1]])

    def starting_with(self, prefix: str) -> List[str]:
        with self._lock:
            return sorted(n for n in self._names if n.startswith(prefix))


def completions(line: str, begidx: int, text: str, names: NameBook) -> List[str]:
    """What `text` (the word being typed, starting at `begidx` of `line`) may complete to."""
    before = line[:begidx].split()
    if not before:
        return [c + " " for c in COMMANDS if c.startswith(text.lower())]
    if len(before) == 1 and before[0].lower() in NAME_COMMANDS:
        return [n + " " for n in names.starting_with(text)]
    return []


class Terminal:
    def __init__(self, stdout: TextIO = sys.stdout, environ: Mapping[str, str] = os.environ,
                 history_path: Optional[str] = HISTORY_PATH) -> None:
        assert readline is not None
        self._out = stdout
        self._color = color_wanted(stdout, environ)
        self._history_path = history_path
        self.names = NameBook()
        self._reading = threading.Event()  # the input thread is inside input(): a line is on screen
        self._prompt = "> "
        self._saved_tty = None
        self._matches: List[str] = []
        # The shell asks for the next line only once the previous command was answered: the
        # prompt then comes after the answer (and shows who you are now).
        self._want_line = threading.Event()
        self._lines: "Optional[asyncio.Queue[Optional[str]]]" = None

    def prompt(self) -> str:
        return f"{self.names.me}> " if self.names.me else "> "

    async def get(self) -> Optional[str]:
        """The next line typed (None: end of input); what run_shell reads from."""
        assert self._lines is not None
        self._want_line.set()
        return await self._lines.get()

    def start(self, loop: asyncio.AbstractEventLoop) -> "Terminal":
        """Start reading lines with readline on a thread; `get()` returns them."""
        if termios is not None:
            try:
                self._saved_tty = termios.tcgetattr(sys.stdin.fileno())
            except termios.error:
                self._saved_tty = None
        readline.set_completer(self._complete)
        readline.set_completer_delims(" \t")
        readline.parse_and_bind("tab: complete")
        if self._history_path is not None:
            try:
                readline.read_history_file(self._history_path)
            except OSError:  # none yet, or unreadable: start without
                pass
        readline.set_history_length(HISTORY_LENGTH)
        queue: "asyncio.Queue[Optional[str]]" = asyncio.Queue()
        self._lines = queue
        threading.Thread(target=self._read_lines, args=(loop, queue), name="terminal", daemon=True).start()
        return self

    def _read_lines(self, loop: asyncio.AbstractEventLoop, queue: "asyncio.Queue[Optional[str]]") -> None:
        while True:
            self._want_line.wait()
            self._want_line.clear()
            self._prompt = self.prompt()
            self._reading.set()
            try:
                line: Optional[str] = input(self._prompt)
            except EOFError:
                line = None
                self._out.write("\n")
            finally:
                self._reading.clear()
            if line is not None:
                self.names.learn_from_command(line)
            try:
                loop.call_soon_threadsafe(queue.put_nowait, line)
            except RuntimeError:  # the loop is closed: we are exiting
                return
            if line is None:
                return

    def _complete(self, text: str, state: int) -> Optional[str]:
        if state == 0:
            self._matches = completions(readline.get_line_buffer(), readline.get_begidx(), text, self.names)
        return self._matches[state] if state < len(self._matches) else None

    def emit(self, line: str) -> None:
        """Print an answer or a message. While a line is being typed, it goes above that line,
        which is drawn again below it with what was typed so far."""
        self.names.learn_from_output(line)
        shown = colorize(line) if self._color else line
        if self._reading.is_set():
            typed = readline.get_line_buffer()
            self._out.write(f"\r\x1b[K{shown}\n{self._prompt}{typed}")
        else:
            self._out.write(shown + "\n")
        self._out.flush()

    def close(self) -> None:
        if self._history_path is not None:
            try:
                readline.write_history_file(self._history_path)
            except OSError:
                pass  # a read-only home: history is a convenience, not worth an error
        if self._saved_tty is not None and termios is not None:
            try:  # the input thread may be inside readline, with the terminal in its raw mode
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, self._saved_tty)
            except termios.error:
                pass
