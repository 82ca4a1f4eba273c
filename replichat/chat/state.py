"""The chat state machine: what every replica applies, in log order, to reach the same state.

`ChatState.apply_batch` is the only writer. Given the same committed entries, every replica
must end byte-for-byte identical (`digest()` checks it), so apply reads nothing but the entry
and the current state: no clock (timestamps come from the proposer inside the command), no
randomness, no dependence on dict or row iteration order. A bad entry is in the log forever
and every replica meets it, so bad input becomes an error *result*, never an exception;
only a broken log (a gap in indexes) or a failing disk raises.

Exactly-once writes. A request carrying (client_id, request_seq > 0) is remembered with its
result in the `clients` table; the same request seen again (a retry after a failover, or a
duplicate proposal) gets the stored result and changes nothing, and an older one gets
STALE_REQUEST. The table is bounded deterministically, by log position rather than by time:
whenever an applied index is a multiple of CLIENT_EXPIRY_INTERVAL, clients whose latest
applied request is more than CLIENT_TABLE_WINDOW entries old are forgotten. A retry that
arrives after more than CLIENT_TABLE_WINDOW (100,000) log entries is therefore no longer
recognised and is applied again.

Schema (SQLite, all WITHOUT ROWID so rows live in primary-key order):

    users     name PK, next_seq (the seq the next message will get, from 1),
              session_id ('' when none), created_index (log index of the create: the
              account's generation), credential (salted scrypt hash; '' when created
              with authentication off), lookalike (names.lookalike_key(name), indexed: no
              two users may look alike)
    messages  recipient, seq, sender ('' = anonymous), text, sent_at_ms;
              PK (recipient, seq): the mailbox, oldest first; a message is deleted when acked
    clients   client_id PK, request_seq, result (serialized CommandResult),
              last_index (log index of that request). The key is namespaced by the
              user the request acted as ("alice\0" + client id; a bare client id for
              anonymous requests), so one user cannot disturb another's request numbers.

Authorization. The proposing replica verifies credentials (chat/auth.py) and stamps the
command with the user it acts as (principal) and that account's generation. Apply refuses a
command whose principal is not the user it acts as, or whose account was re-created since.
    meta      key PK, value: 'last_applied', written in the same transaction as the effects
"""
import hashlib
import os
import sqlite3
import unicodedata
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from google.protobuf.message import DecodeError

from replichat.chat.credentials import is_stored_form
from replichat.chat.names import lookalike_key, normalize_name, quote, validate_text
from replichat.errors import ChatError, Code
from replichat.proto import chat_pb2, command_pb2
from replichat.sqlite_wal import bound_wal

CLIENT_TABLE_WINDOW = 100_000
CLIENT_EXPIRY_INTERVAL = 1024

# Client ids and session ids are opaque tokens chosen by clients (uuid-sized in practice);
# bounding them keeps one request from bloating every replica's tables.
MAX_TOKEN_CHARS = 128

# SQLite integers are signed 64-bit; protobuf's uint64 fields may exceed that.
_SQL_INT_MAX = 2**63 - 1

_SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    created_index INTEGER NOT NULL,
    credential TEXT NOT NULL DEFAULT '',
    lookalike TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    recipient TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    PRIMARY KEY (recipient, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    request_seq INTEGER NOT NULL,
    result BLOB NOT NULL,
    last_index INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('last_applied', 0);
"""

# What digest() covers, each table in its primary-key order, so the dump does not depend
# on how SQLite happened to lay out pages.
_DUMP_QUERIES = (
    ("meta", "SELECT key, value FROM meta ORDER BY key"),
    ("users", "SELECT name, next_seq, session_id, created_index, credential FROM users ORDER BY name"),
    (
        "messages",
        "SELECT recipient, seq, sender, text, sent_at_ms FROM messages ORDER BY recipient, seq",
    ),
    (
        "clients",
        "SELECT client_id, request_seq, result, last_index FROM clients ORDER BY client_id",
    ),
)

Command = command_pb2.Command
CommandResult = command_pb2.CommandResult


@dataclass(frozen=True)
class MessageQueued:
    """A message entered a mailbox: push it to the recipient's live stream, if any."""

    delivery: chat_pb2.Delivery


@dataclass(frozen=True)
class SessionChanged:
    """A connect was applied: a stream whose session id differs has been taken over."""

    user: str
    session_id: str


@dataclass(frozen=True)
class UserDeleted:
    """The user is gone: end its live stream."""

    user: str


Event = Union[MessageQueued, SessionChanged, UserDeleted]


@dataclass
class Applied:
    """One applied log entry. `command` and `result` are None for a Raft no-op entry;
    `command` is None and `result` an error for bytes that do not decode."""

    index: int
    command: Optional[Command]
    result: Optional[CommandResult]
    events: List[Event] = field(default_factory=list)


class _Client(NamedTuple):
    client_id: str
    request_seq: int


_Outcome = Tuple[CommandResult, List[Event]]
# One of the chat_pb2 request messages; all carry client_id (14) and request_seq (15).
_Request = Any

# errors.Code -> the code stored in the log's results.
_RESULT_CODES = {
    Code.INVALID_ARGUMENT: CommandResult.INVALID_ARGUMENT,
    Code.ALREADY_EXISTS: CommandResult.ALREADY_EXISTS,
    Code.NOT_FOUND: CommandResult.NOT_FOUND,
    Code.STALE_REQUEST: CommandResult.STALE_REQUEST,
    Code.UNAUTHENTICATED: CommandResult.UNAUTHENTICATED,
}


class _StateQueries:
    """Reads of the chat state. Names are NFC-normalised like in apply, so any spelling that
    would address a user finds it; an invalid name simply finds nothing."""

    _db: sqlite3.Connection


    def user_exists(self, name: str) -> bool:
        row = self._db.execute("SELECT 1 FROM users WHERE name = ?", (_nfc(name),)).fetchone()
        return row is not None

    def names(self) -> List[str]:
        # SQLite's default collation compares UTF-8 bytes, which orders like Python's str.
        return [name for (name,) in self._db.execute("SELECT name FROM users ORDER BY name")]

    def account_of(self, name: str) -> Optional[Tuple[int, str]]:
        """(created_index, stored credential hash) of a user; None if there is none."""
        row = self._db.execute(
            "SELECT created_index, credential FROM users WHERE name = ?", (_nfc(name),)
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def session_of(self, name: str) -> Optional[str]:
        """The user's current session id ('' before any connect); None if no such user."""
        row = self._db.execute(
            "SELECT session_id FROM users WHERE name = ?", (_nfc(name),)
        ).fetchone()
        return None if row is None else str(row[0])

    def pending(self, name: str, after_seq: int = 0, limit: int = 1000) -> List[chat_pb2.Delivery]:
        """Unacknowledged messages with seq > after_seq, oldest first, at most `limit`."""
        rows = self._db.execute(
            "SELECT recipient, seq, sender, text, sent_at_ms FROM messages"
            " WHERE recipient = ? AND seq > ? ORDER BY seq LIMIT ?",
            (_nfc(name), min(after_seq, _SQL_INT_MAX), limit),
        )
        return [
            chat_pb2.Delivery(
                recipient=recipient, seq=seq, sender=sender, text=text, sent_at_ms=sent_at_ms
            )
            for recipient, seq, sender, text, sent_at_ms in rows
        ]

    def queued_count(self, name: str) -> int:
        (count,) = self._db.execute(
            "SELECT COUNT(*) FROM messages WHERE recipient = ?", (_nfc(name),)
        ).fetchone()
        return int(count)

    def digest(self) -> str:
        """SHA-256 of a canonical dump of every table, meta included: equal digests mean
        replicas are identical in everything apply can affect."""
        hasher = hashlib.sha256()
        for table, query in _DUMP_QUERIES:
            hasher.update(_canonical(table))
            for row in self._db.execute(query):
                hasher.update(b"(")
                for value in row:
                    hasher.update(_canonical(value))
                hasher.update(b")")
        return hasher.hexdigest()

    def stats(self) -> Dict[str, int]:
        return {table: self._count(table) for table in ("users", "messages", "clients")}

    def _count(self, table: str) -> int:
        (count,) = self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        return int(count)



class ChatState(_StateQueries):
    """Users, mailboxes, sessions and remembered client answers, in one SQLite database.

    Not thread-safe: one thread at a time. Reads may also go through a `ChatStateReader`
    (its own connection, which sees only committed batches) while a batch is being applied.
    """

    def __init__(self, path: str) -> None:
        self._db = _open_database(path)
        self._check_schema_version()
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        self._handlers = self._command_handlers()

    def _command_handlers(self) -> Dict[str, Callable[[int, Command, _Request], _Outcome]]:
        return {
            "create": self._create,
            "delete": self._delete,
            "send": self._send,
            "connect": self._connect,
            "ack": self._ack,
        }

    def close(self) -> None:
        self._db.close()

    def copy_to(self, path: str) -> "ChatState":
        """A consistent copy of the whole state — every table, the exactly-once `clients` table
        and last_applied included — as a new state at `path` (the simulator's snapshots and
        their restores, in memory; the real runtime copies files: chat/snapshot.py)."""
        # The copy starts as a byte copy of this open, current-schema database: the schema
        # work of __init__ (a third of a millisecond, most of a simulated snapshot's cost)
        # would be overwritten at once.
        cls = type(self)
        target = cls.__new__(cls)
        target._db = _open_database(path)
        self._db.backup(target._db)
        target._handlers = target._command_handlers()
        return target

    def _check_schema_version(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version not in (0, 1, 2, _SCHEMA_VERSION):  # 1: before credentials, 2: before lookalikes
            raise RuntimeError(
                f"chat state database has schema version {version}, expected {_SCHEMA_VERSION}"
            )

    def _migrate(self) -> None:
        """Version 1 had no credentials: its users get none (only --insecure-no-auth serves
        them fully; with authentication on they can be listed, sent to and deleted by nobody)."""
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(users)")]
        if "credential" not in columns:
            self._db.execute("ALTER TABLE users ADD COLUMN credential TEXT NOT NULL DEFAULT ''")
        if "lookalike" not in columns:
            # Version 2 had no lookalike keys: computed once for the users it has (existing
            # look-alike pairs stay; new ones cannot be created).
            self._db.execute("ALTER TABLE users ADD COLUMN lookalike TEXT NOT NULL DEFAULT ''")
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "UPDATE users SET lookalike = ? WHERE name = ?",
                    [(lookalike_key(name), name) for (name,) in self._db.execute("SELECT name FROM users")],
                )
        self._db.execute("CREATE INDEX IF NOT EXISTS users_by_lookalike ON users (lookalike)")

    # ---------------------------------------------------------------- applying the log

    @property
    def last_applied(self) -> int:
        (value,) = self._db.execute("SELECT value FROM meta WHERE key = 'last_applied'").fetchone()
        return int(value)

    def apply_batch(self, entries: Sequence[Tuple[int, bytes]]) -> List[Applied]:
        """Apply consecutive committed entries in one transaction (group commit).

        Raises RuntimeError, before changing anything, if the indexes do not continue from
        last_applied: a gap means replication is broken, and guessing would fork replicas.
        """
        if not entries:
            return []
        self._check_consecutive(entries)
        applied: List[Applied] = []
        with self._db:  # commits on success, rolls the whole batch back on an exception
            self._db.execute("BEGIN")
            for index, data in entries:
                applied.append(self._apply_entry(index, data))
                if index % CLIENT_EXPIRY_INTERVAL == 0:
                    self._expire_clients(index)
            self._db.execute(
                "UPDATE meta SET value = ? WHERE key = 'last_applied'", (entries[-1][0],)
            )
        return applied

    def _check_consecutive(self, entries: Sequence[Tuple[int, bytes]]) -> None:
        expected = self.last_applied + 1
        for index, _ in entries:
            if index != expected:
                raise RuntimeError(
                    f"log entry {index} applied out of order: expected index {expected}"
                )
            expected += 1

    def _apply_entry(self, index: int, data: bytes) -> Applied:
        if not data:
            # The no-op a new leader commits so entries of earlier terms commit: no effect.
            return Applied(index, None, None, [])
        try:
            command = Command.FromString(data)
        except DecodeError:
            result = _refusal(Code.INVALID_ARGUMENT, "invalid command: undecodable log entry")
            return Applied(index, None, result, [])
        result, events = self._apply_command(index, command)
        return Applied(index, command, result, events)

    def _apply_command(self, index: int, command: Command) -> _Outcome:
        op = command.WhichOneof("op")
        if op is None:
            return _refusal(Code.INVALID_ARGUMENT, "invalid command: no operation"), []
        request = getattr(command, op)
        try:
            client = _client_of(request, exactly_once_namespace(command))
            if client is not None:
                earlier = self._earlier_answer(client)
                if earlier is not None:
                    return earlier, []
        except ChatError as err:
            # Neither a bad client id nor a stale request is remembered: remembering would
            # overwrite the answer the client may still be waiting for.
            return _refusal(err.code, err.message), []
        try:
            outcome = self._handlers[op](index, command, request)
        except ChatError as err:
            outcome = _refusal(err.code, err.message), []
        if client is not None:
            self._remember(client, outcome[0], index)
        return outcome

    # ---------------------------------------------------------------- exactly-once

    def _earlier_answer(self, client: _Client) -> Optional[CommandResult]:
        """The stored result if this exact request was already applied; raises
        ChatError(STALE_REQUEST) for a request older than the client's latest."""
        row = self._db.execute(
            "SELECT request_seq, result FROM clients WHERE client_id = ?", (client.client_id,)
        ).fetchone()
        if row is None:
            return None
        stored_seq, stored_result = row
        if client.request_seq == stored_seq:
            return CommandResult.FromString(stored_result)
        if client.request_seq < stored_seq:
            raise ChatError(
                Code.STALE_REQUEST,
                f"stale request {client.request_seq}: this client already had request"
                f" {stored_seq} applied",
            )
        return None

    def _remember(self, client: _Client, result: CommandResult, index: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO clients (client_id, request_seq, result, last_index)"
            " VALUES (?, ?, ?, ?)",
            (client.client_id, client.request_seq, _serialize(result), index),
        )

    def _expire_clients(self, index: int) -> None:
        self._db.execute(
            "DELETE FROM clients WHERE last_index < ?", (index - CLIENT_TABLE_WINDOW,)
        )

    # ---------------------------------------------------------------- operations
    # Each handler validates and checks everything before its first write: a ChatError
    # raised after a write would leave half an operation in the batch's transaction.

    def _create(self, index: int, command: Command, request: _Request) -> _Outcome:
        name = normalize_name(request.name)
        credential = command.credential_hash
        if credential and not is_stored_form(credential):
            raise ChatError(Code.INVALID_ARGUMENT, "invalid command: malformed credential hash")
        if self.user_exists(name):
            raise ChatError(Code.ALREADY_EXISTS, f"user {quote(name)} already exists")
        lookalike = lookalike_key(name)
        row = self._db.execute("SELECT name FROM users WHERE lookalike = ? LIMIT 1", (lookalike,)).fetchone()
        if row is not None:
            raise ChatError(
                Code.ALREADY_EXISTS,
                f"user {quote(name)} would look like the existing user {quote(row[0])}; choose another name",
            )
        self._db.execute(
            "INSERT INTO users (name, next_seq, session_id, created_index, credential, lookalike)"
            " VALUES (?, 1, '', ?, ?, ?)",
            (name, index, credential, lookalike),
        )
        return CommandResult(name=name), []

    def _delete(self, index: int, command: Command, request: _Request) -> _Outcome:
        name = self._authorized_user(command, request.name)
        dropped = self._db.execute("DELETE FROM messages WHERE recipient = ?", (name,)).rowcount
        self._db.execute("DELETE FROM users WHERE name = ?", (name,))
        return CommandResult(count=dropped), [UserDeleted(name)]

    def _send(self, index: int, command: Command, request: _Request) -> _Outcome:
        recipient = normalize_name(request.recipient)
        sender = normalize_name(request.sender) if request.sender else ""
        text = validate_text(request.text)
        if sender:
            self._check_principal(command, sender)
        elif command.principal:
            raise ChatError(Code.UNAUTHENTICATED, f"{command.principal} cannot send anonymously")
        seq = self._next_seq(recipient)
        self._db.execute(
            "INSERT INTO messages (recipient, seq, sender, text, sent_at_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            (recipient, seq, sender, text, command.timestamp_ms),
        )
        self._db.execute("UPDATE users SET next_seq = ? WHERE name = ?", (seq + 1, recipient))
        delivery = chat_pb2.Delivery(
            recipient=recipient, seq=seq, sender=sender, text=text, sent_at_ms=command.timestamp_ms
        )
        return CommandResult(seq=seq), [MessageQueued(delivery)]

    def _connect(self, index: int, command: Command, request: _Request) -> _Outcome:
        session_id = _token(request.session_id, "session id")
        name = self._authorized_user(command, request.name)
        self._db.execute("UPDATE users SET session_id = ? WHERE name = ?", (session_id, name))
        return CommandResult(count=self.queued_count(name)), [SessionChanged(name, session_id)]

    def _ack(self, index: int, command: Command, request: _Request) -> _Outcome:
        name = self._authorized_user(command, request.name)
        # Sequence numbers never come near 2**63, so clamping keeps "everything up to here".
        up_to = min(request.up_to_seq, _SQL_INT_MAX)
        removed = self._db.execute(
            "DELETE FROM messages WHERE recipient = ? AND seq <= ?", (name, up_to)
        ).rowcount
        return CommandResult(count=removed), []

    def _existing_user(self, raw: str) -> str:
        name = normalize_name(raw)
        if not self.user_exists(name):
            raise ChatError(Code.NOT_FOUND, f"no such user {quote(name)}")
        return name

    def _authorized_user(self, command: Command, raw: str) -> str:
        """An existing user the command's principal may act as."""
        name = self._existing_user(raw)
        self._check_principal(command, name)
        return name

    def _check_principal(self, command: Command, name: str) -> None:
        """The proposer verified `command.principal`; it must be `name`, and (generation
        given) the same account, not one re-created under that name since."""
        if not command.principal:
            return  # not stamped: the simulator's model, or a log written before credentials
        if _nfc(command.principal) != name:
            raise ChatError(Code.UNAUTHENTICATED, f"{command.principal} cannot act as {name}")
        if command.principal_generation:
            account = self.account_of(name)
            if account is None or account[0] != command.principal_generation:
                raise ChatError(
                    Code.UNAUTHENTICATED, f"the credential for {name} is out of date: {name} was re-created"
                )

    def _next_seq(self, recipient: str) -> int:
        row = self._db.execute(
            "SELECT next_seq FROM users WHERE name = ?", (recipient,)
        ).fetchone()
        if row is None:
            raise ChatError(Code.NOT_FOUND, f"no such user {quote(recipient)}")
        return int(row[0])

class ChatStateReader(_StateQueries):
    """Read-only access to a ChatState database through a second connection. In WAL mode it
    reads the last committed batch and never waits for, or sees half of, a batch being
    applied, so queries can run on the event loop while apply works elsewhere."""

    def __init__(self, path: str) -> None:
        uri = "file:" + urllib.request.pathname2url(os.path.abspath(path)) + "?mode=ro"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)

    def close(self) -> None:
        self._db.close()


# -------------------------------------------------------------------- helpers


def exactly_once_namespace(command: Command) -> str:
    """The user whose exactly-once table a command's (client_id, request_seq) lives in: the
    verified principal; '' (the anonymous table) for a create or an unstamped command."""
    return command.principal


def _client_of(request: _Request, namespace: str = "") -> Optional[_Client]:
    """The request's exactly-once identity, or None if the client asked for none."""
    if not request.client_id or request.request_seq == 0:
        return None
    client_id = _token(request.client_id, "client id")
    if request.request_seq > _SQL_INT_MAX:
        raise ChatError(
            Code.INVALID_ARGUMENT, f"invalid request number {request.request_seq}: too large"
        )
    # NUL separates: neither a name nor a client id can contain one.
    return _Client(f"{namespace}\x00{client_id}" if namespace else client_id, request.request_seq)


def _token(value: str, what: str) -> str:
    if len(value) > MAX_TOKEN_CHARS:
        raise ChatError(
            Code.INVALID_ARGUMENT,
            f"invalid {what} {quote(value)}: {len(value)} characters, at most {MAX_TOKEN_CHARS}",
        )
    if "\x00" in value:
        raise ChatError(Code.INVALID_ARGUMENT, f"invalid {what} {quote(value)}: contains NUL")
    return value


def _refusal(code: Code, message: str) -> CommandResult:
    return CommandResult(code=_RESULT_CODES[code], error=message)


def _serialize(result: CommandResult) -> bytes:
    # Deterministic: the bytes end up in digest(), which must agree across replicas.
    return result.SerializeToString(deterministic=True)


def _open_database(path: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN ourselves, so one batch is exactly one
    # transaction, whatever the statements in it.
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL may lose the last transactions on power loss, but never corrupts, and is an
    # order of magnitude faster than FULL. Losing them is harmless: the Raft log (its own
    # database, synchronous=FULL) is the durable source of truth, and last_applied is
    # committed in the same transaction as the effects it covers, so after a crash the
    # replica simply replays the log from last_applied + 1.
    db.execute("PRAGMA synchronous=NORMAL")
    bound_wal(db)  # the WAL stops growing with history (sqlite_wal.py)
    return db


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _canonical(value: Union[None, int, str, bytes]) -> bytes:
    """Type-tagged, length-prefixed encoding: no two different rows encode the same."""
    if value is None:
        return b"N;"
    if isinstance(value, int):
        return b"I%d;" % value
    if isinstance(value, str):
        value = value.encode("utf-8")
        return b"S%d:%s" % (len(value), value)
    if isinstance(value, bytes):
        return b"B%d:%s" % (len(value), value)
    raise TypeError(f"unexpected column type {type(value).__name__}")
