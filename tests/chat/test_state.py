import sqlite3
from typing import Dict, List, Optional, Sequence, Tuple, Union

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from replichat.chat import state as state_module
from replichat.chat.names import normalize_name, validate_text
from replichat.chat.state import (
    CLIENT_TABLE_WINDOW,
    Applied,
    ChatState,
    ChatStateReader,
    MessageQueued,
    SessionChanged,
    UserDeleted,
)
from replichat.errors import ChatError
from replichat.proto import chat_pb2
from replichat.proto.command_pb2 import Command, CommandResult

OK = CommandResult.OK
INVALID = CommandResult.INVALID_ARGUMENT
EXISTS = CommandResult.ALREADY_EXISTS
NOT_FOUND = CommandResult.NOT_FOUND
STALE = CommandResult.STALE_REQUEST

Entry = Union[Command, bytes]


# ------------------------------------------------------------------ command builders


def create(name: str, **ids) -> Command:
    return Command(create=chat_pb2.CreateUserRequest(name=name, **ids))


def delete(name: str, **ids) -> Command:
    return Command(delete=chat_pb2.DeleteUserRequest(name=name, **ids))


def send(recipient: str, text: str, sender: str = "", ts: int = 0, **ids) -> Command:
    request = chat_pb2.SendMessageRequest(sender=sender, recipient=recipient, text=text, **ids)
    return Command(timestamp_ms=ts, send=request)


def connect(name: str, session_id: str = "s1", **ids) -> Command:
    return Command(connect=chat_pb2.ConnectRequest(name=name, session_id=session_id, **ids))


def ack(name: str, up_to_seq: int, **ids) -> Command:
    return Command(ack=chat_pb2.AckRequest(name=name, up_to_seq=up_to_seq, **ids))


def encode(entry: Entry) -> bytes:
    return entry if isinstance(entry, bytes) else entry.SerializeToString()


def run(chat: ChatState, *entries: Entry) -> List[Applied]:
    """Apply entries as one batch right after what the state has applied."""
    first = chat.last_applied + 1
    return chat.apply_batch([(first + i, encode(e)) for i, e in enumerate(entries)])


def result(chat: ChatState, entry: Entry) -> CommandResult:
    (applied,) = run(chat, entry)
    assert applied.result is not None
    return applied.result


@pytest.fixture
def chat():
    chat = ChatState(":memory:")
    yield chat
    chat.close()


@pytest.fixture
def bob(chat):
    assert result(chat, create("bob")).code == OK
    return chat


# ------------------------------------------------------------------ create


def test_create_returns_the_normalised_name(chat):
    (applied,) = run(chat, create("Zoe\u0308"))
    assert applied.result == CommandResult(name="Zo\u00eb")
    assert applied.events == []
    assert chat.names() == ["Zo\u00eb"]
    assert chat.user_exists("Zo\u00eb") and chat.user_exists("Zoe\u0308")
    assert chat.session_of("Zo\u00eb") == ""


def test_create_existing_user(bob):
    res = result(bob, create("bob"))
    assert res.code == EXISTS and "'bob'" in res.error
    assert bob.names() == ["bob"]


def test_names_differing_only_in_normalisation_are_one_user(chat):
    assert result(chat, create("\u00e9mile")).code == OK
    assert result(chat, create("e\u0301mile")).code == EXISTS
    assert result(chat, send("e\u0301mile", "salut")).seq == 1
    assert chat.queued_count("\u00e9mile") == 1


@pytest.mark.parametrize("name", ["", "a b", "a,b", "x" * 33, "tab\t", "nul\x00"])
def test_create_validates_inside_apply(chat, name):
    res = result(chat, create(name))
    assert res.code == INVALID and res.error
    assert chat.names() == []


def test_names_are_sorted(chat):
    run(chat, create("carol"), create("alice"), create("bob"))
    assert chat.names() == ["alice", "bob", "carol"]


# ------------------------------------------------------------------ send


def test_send_assigns_dense_per_recipient_sequence_numbers(bob):
    run(bob, create("carol"))
    seqs = [result(bob, send("bob", f"m{i}", sender="carol", ts=1000 + i)).seq for i in range(3)]
    assert seqs == [1, 2, 3]
    assert result(bob, send("carol", "hi")).seq == 1
    assert [d.text for d in bob.pending("bob")] == ["m0", "m1", "m2"]
    assert bob.pending("bob")[0] == chat_pb2.Delivery(
        recipient="bob", seq=1, sender="carol", text="m0", sent_at_ms=1000
    )
    assert bob.queued_count("bob") == 3 and bob.queued_count("carol") == 1


def test_send_produces_a_message_event(bob):
    (applied,) = run(bob, send("bob", "hello", sender="Zoe\u0308", ts=42))
    delivery = chat_pb2.Delivery(
        recipient="bob", seq=1, sender="Zo\u00eb", text="hello", sent_at_ms=42
    )
    assert applied.result == CommandResult(seq=1)
    assert applied.events == [MessageQueued(delivery)]


def test_sender_may_be_anonymous_or_unknown(bob):
    assert result(bob, send("bob", "a")).code == OK
    assert result(bob, send("bob", "b", sender="nobody")).code == OK
    assert [(d.sender, d.text) for d in bob.pending("bob")] == [("", "a"), ("nobody", "b")]


def test_send_to_missing_user(bob):
    (applied,) = run(bob, send("alice", "hi"))
    assert applied.result.code == NOT_FOUND and "'alice'" in applied.result.error
    assert applied.events == []
    assert bob.stats()["messages"] == 0


@pytest.mark.parametrize(
    "command",
    [
        send("bob", ""),
        send("bob", "x" * 4097),
        send("bob", "nul\x00"),
        send("bob", "hi", sender="bad sender"),
        send("b o b", "hi"),
    ],
)
def test_send_validates_inside_apply(bob, command):
    (applied,) = run(bob, command)
    assert applied.result.code == INVALID and applied.result.error
    assert applied.events == []
    assert bob.pending("bob") == []
    # A refused send does not use up a sequence number.
    assert result(bob, send("bob", "ok")).seq == 1


def test_pending_pages(bob):
    run(bob, *[send("bob", str(i)) for i in range(1, 8)])
    assert [d.seq for d in bob.pending("bob", after_seq=2, limit=3)] == [3, 4, 5]
    assert [d.seq for d in bob.pending("bob", after_seq=6)] == [7]
    assert bob.pending("bob", after_seq=2**64 - 1) == []
    assert bob.pending("nobody") == [] and bob.pending("not a name") == []


# ------------------------------------------------------------------ connect and ack


def test_connect_sets_the_session_and_counts_the_queue(bob):
    run(bob, send("bob", "one"), send("bob", "two"))
    (applied,) = run(bob, connect("bob", session_id="abc"))
    assert applied.result == CommandResult(count=2)
    assert applied.events == [SessionChanged("bob", "abc")]
    assert bob.session_of("bob") == "abc"
    run(bob, connect("bob", session_id="def"))
    assert bob.session_of("bob") == "def"


def test_connect_missing_user(bob):
    (applied,) = run(bob, connect("alice"))
    assert applied.result.code == NOT_FOUND and applied.events == []
    assert bob.session_of("alice") is None


def test_connect_refuses_oversized_session_ids(bob):
    assert result(bob, connect("bob", session_id="s" * 129)).code == INVALID
    assert bob.session_of("bob") == ""


def test_ack_removes_messages_up_to_the_given_seq(bob):
    run(bob, *[send("bob", str(i)) for i in range(1, 5)])
    (applied,) = run(bob, ack("bob", 2))
    assert applied.result.code == OK and applied.result.count == 2
    assert [d.seq for d in bob.pending("bob")] == [3, 4]
    assert result(bob, ack("bob", 2)).count == 0  # acking again is harmless
    # Sequence numbers keep counting after acks: they identify messages for the client.
    assert result(bob, send("bob", "5")).seq == 5


def test_ack_beyond_the_last_message_and_beyond_sqlite_integers(bob):
    run(bob, send("bob", "a"), send("bob", "b"))
    assert result(bob, ack("bob", 2**64 - 1)).count == 2
    assert bob.queued_count("bob") == 0


def test_ack_missing_user(chat):
    assert result(chat, ack("alice", 1)).code == NOT_FOUND


# ------------------------------------------------------------------ delete


def test_delete_drops_user_messages_and_session(bob):
    run(bob, create("carol"), send("bob", "a"), send("bob", "b"), send("carol", "c"))
    run(bob, connect("bob", session_id="live"))
    (applied,) = run(bob, delete("bob"))
    assert applied.result == CommandResult(count=2)
    assert applied.events == [UserDeleted("bob")]
    assert bob.names() == ["carol"]
    assert bob.session_of("bob") is None and bob.pending("bob") == []
    assert bob.stats()["messages"] == 1


def test_delete_missing_user(chat):
    (applied,) = run(chat, delete("alice"))
    assert applied.result.code == NOT_FOUND and applied.events == []


def test_recreated_user_starts_afresh(bob):
    run(bob, send("bob", "old"), send("bob", "old2"), delete("bob"), create("bob"))
    assert bob.pending("bob") == []
    assert result(bob, send("bob", "new")).seq == 1


# ------------------------------------------------------------------ exactly-once


def test_retried_request_returns_the_stored_result_without_effects(bob):
    first, retry = run(
        bob,
        send("bob", "hi", client_id="c1", request_seq=1),
        send("bob", "hi", client_id="c1", request_seq=1),
    )
    assert first.result == retry.result == CommandResult(seq=1)
    assert len(first.events) == 1 and retry.events == []
    assert len(bob.pending("bob")) == 1


def test_retry_returns_the_original_answer_even_if_it_would_differ_now(chat):
    assert result(chat, create("bob", client_id="c1", request_seq=1)).code == OK
    # Applied again, this create would be ALREADY_EXISTS: the client must see its OK.
    assert result(chat, create("bob", client_id="c1", request_seq=1)) == CommandResult(name="bob")
    missing = result(chat, send("alice", "hi", client_id="c1", request_seq=2))
    run(chat, create("alice"))
    assert result(chat, send("alice", "hi", client_id="c1", request_seq=2)) == missing
    assert chat.queued_count("alice") == 0


def test_stale_request_has_no_effect_and_is_not_remembered(bob):
    run(bob, send("bob", "one", client_id="c1", request_seq=5))
    (stale,) = run(bob, send("bob", "old", client_id="c1", request_seq=4))
    assert stale.result.code == STALE and "4" in stale.result.error and stale.events == []
    assert [d.text for d in bob.pending("bob")] == ["one"]
    # The newest answer is still the one on record.
    assert result(bob, send("bob", "one", client_id="c1", request_seq=5)) == CommandResult(seq=1)
    assert result(bob, send("bob", "two", client_id="c1", request_seq=6)).seq == 2


def test_requests_without_identity_are_not_deduplicated(bob):
    run(
        bob,
        send("bob", "a"),
        send("bob", "a"),
        send("bob", "a", client_id="c1"),  # request_seq 0: no identity
        send("bob", "a", client_id="c1"),
        send("bob", "a", request_seq=3),  # no client id
        send("bob", "a", request_seq=3),
    )
    assert bob.queued_count("bob") == 6
    assert bob.stats()["clients"] == 0


def test_clients_are_independent(bob):
    a, b = run(
        bob,
        send("bob", "x", client_id="c1", request_seq=1),
        send("bob", "y", client_id="c2", request_seq=1),
    )
    assert (a.result.seq, b.result.seq) == (1, 2)
    assert bob.stats()["clients"] == 2


def test_invalid_request_identity_is_refused(bob):
    assert result(bob, send("bob", "x", client_id="c" * 129, request_seq=1)).code == INVALID
    assert result(bob, send("bob", "x", client_id="c1", request_seq=2**63)).code == INVALID
    assert bob.queued_count("bob") == 0 and bob.stats()["clients"] == 0


def test_refused_requests_are_remembered_too(bob):
    first = result(bob, send("bob", "", client_id="c1", request_seq=1))
    assert first.code == INVALID
    assert result(bob, send("bob", "now valid", client_id="c1", request_seq=1)) == first


def noops(chat: ChatState, up_to: int) -> None:
    run(chat, *([b""] * (up_to - chat.last_applied)))


def test_client_table_forgets_clients_after_the_window(bob):
    run(bob, send("bob", "early", client_id="old", request_seq=1))  # index 2
    # Expiry runs at multiples of 1024 and forgets clients older than the window.
    first_expiry = (2 + CLIENT_TABLE_WINDOW) // 1024 * 1024 + 1024
    noops(bob, first_expiry - 2)
    run(bob, send("bob", "recent", client_id="new", request_seq=1))  # first_expiry - 1
    assert bob.stats()["clients"] == 2
    run(bob, b"")  # index first_expiry
    assert bob.last_applied == first_expiry
    assert bob.stats()["clients"] == 1
    # Forgotten: the documented cost is that such a late retry is applied again.
    assert result(bob, send("bob", "early", client_id="old", request_seq=1)).seq == 3
    # Still remembered: the recent one.
    assert result(bob, send("bob", "recent", client_id="new", request_seq=1)).seq == 2


def test_client_table_keeps_clients_inside_the_window(bob):
    run(bob, send("bob", "x", client_id="c1", request_seq=1))  # index 2
    noops(bob, (2 + CLIENT_TABLE_WINDOW) // 1024 * 1024)  # the last expiry that keeps it
    assert bob.stats()["clients"] == 1
    assert result(bob, send("bob", "x", client_id="c1", request_seq=1)).seq == 1


# ------------------------------------------------------------------ the log itself


def test_noop_entries_only_advance_last_applied(bob):
    before = bob.stats()
    applied = run(bob, b"", b"")
    assert applied == [Applied(2, None, None, []), Applied(3, None, None, [])]
    assert bob.last_applied == 3 and bob.stats() == before


@pytest.mark.parametrize("data", [b"\xff", b"\x0b" * 50, b"\x62\x05ab"])
def test_undecodable_entries_are_refused_not_raised(chat, data):
    (applied,) = run(chat, data)
    assert applied.command is None and applied.result.code == INVALID
    assert chat.last_applied == 1


def test_command_without_operation_is_refused(chat):
    (applied,) = run(chat, Command(timestamp_ms=5))
    assert applied.command == Command(timestamp_ms=5)
    assert applied.result.code == INVALID and "operation" in applied.result.error


@pytest.mark.parametrize("indexes", [[3], [1], [2, 4], [2, 2], [0]])
def test_index_gaps_raise_and_change_nothing(bob, indexes):
    digest = bob.digest()
    with pytest.raises(RuntimeError):
        bob.apply_batch([(i, encode(create(f"u{i}"))) for i in indexes])
    assert bob.last_applied == 1 and bob.digest() == digest


def test_a_batch_is_one_transaction(bob, monkeypatch):
    def disk_failure(*args):
        raise OSError("disk full")

    digest = bob.digest()
    monkeypatch.setitem(bob._handlers, "ack", disk_failure)
    with pytest.raises(OSError):
        run(bob, create("carol"), send("bob", "hi"), ack("bob", 1))
    assert bob.digest() == digest and bob.last_applied == 1
    monkeypatch.undo()
    assert [a.index for a in run(bob, create("carol"))] == [2]


def test_empty_batch(chat):
    assert chat.apply_batch([]) == [] and chat.last_applied == 0


def test_state_survives_close_and_reopen(tmp_path):
    path = str(tmp_path / "chat.db")
    chat = ChatState(path)
    run(chat, create("bob"), send("bob", "hi", ts=7, client_id="c1", request_seq=1), b"")
    run(chat, connect("bob", session_id="s9"))
    digest = chat.digest()
    chat.close()

    chat = ChatState(path)
    assert chat.last_applied == 4 and chat.digest() == digest
    assert chat.session_of("bob") == "s9"
    assert [(d.seq, d.text, d.sent_at_ms) for d in chat.pending("bob")] == [(1, "hi", 7)]
    # The exactly-once memory is durable too.
    assert result(chat, send("bob", "hi", client_id="c1", request_seq=1)).seq == 1
    assert chat.queued_count("bob") == 1
    chat.close()


def test_database_with_a_newer_schema_is_refused(tmp_path):
    path = str(tmp_path / "chat.db")
    ChatState(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(RuntimeError, match="schema version 99"):
        ChatState(path)


# ------------------------------------------------------------------ determinism

MIXED_LOG: List[Entry] = [
    b"",
    create("alice", client_id="c1", request_seq=1),
    create("bob"),
    create("Zoe\u0308", client_id="c2", request_seq=1),
    create("Zo\u00eb"),
    send("alice", "hi", sender="bob", ts=10, client_id="c1", request_seq=2),
    send("alice", "hi", sender="bob", ts=10, client_id="c1", request_seq=2),  # retry
    send("alice", "old", client_id="c1", request_seq=1),  # stale
    b"\xff\xfe",
    Command(timestamp_ms=1),
    send("nobody", "x"),
    send("alice", "", client_id="c2", request_seq=2),
    connect("alice", session_id="s1"),
    send("Zo\u00eb", "x" * 4096, ts=11),
    ack("alice", 1),
    delete("bob", client_id="c3", request_seq=1),
    delete("bob", client_id="c3", request_seq=1),
    create("bob"),
    send("bob", "again", ts=12),
    b"",
]


def apply_in_batches(chat: ChatState, log: Sequence[Entry], sizes: Sequence[int]) -> List[bytes]:
    """Apply `log` cut into batches of the given sizes (cycled); return the results."""
    results = []
    position, turn = 0, 0
    while position < len(log):
        size = sizes[turn % len(sizes)]
        for applied in run(chat, *log[position : position + size]):
            results.append(b"" if applied.result is None else applied.result.SerializeToString())
        position += size
        turn += 1
    return results


def test_replicas_applying_the_same_log_are_identical(tmp_path):
    one = ChatState(":memory:")
    other = ChatState(str(tmp_path / "other.db"))
    results_one = apply_in_batches(one, MIXED_LOG, [len(MIXED_LOG)])
    results_other = apply_in_batches(other, MIXED_LOG, [1, 3, 2])
    assert results_one == results_other
    assert one.digest() == other.digest()
    # The digest would notice a difference.
    run(other, send("alice", "divergence"))
    run(one, b"")
    assert one.digest() != other.digest()


@pytest.mark.parametrize(
    "same, different",
    [
        (create("bob"), create("carol")),  # users
        (connect("bob", session_id="a"), connect("bob", session_id="b")),  # sessions
        (send("bob", "x"), send("bob", "y")),  # messages
        (send("bob", "x"), send("bob", "x", client_id="c", request_seq=1)),  # clients only
    ],
)
def test_digest_covers_every_table(same, different):
    one, other = ChatState(":memory:"), ChatState(":memory:")
    for chat in (one, other):
        run(chat, create("bob"))
    assert one.digest() == other.digest()
    run(one, same)
    run(other, different)
    assert one.last_applied == other.last_applied and one.digest() != other.digest()


def test_digest_covers_last_applied(bob):
    other = ChatState(":memory:")
    run(other, create("bob"), b"")
    assert other.names() == bob.names() and other.digest() != bob.digest()
    run(bob, b"")
    assert other.digest() == bob.digest()


# A reference model of the contract, much simpler than SQL; hypothesis checks the real state
# machine against it and against itself.


class Model:
    def __init__(self) -> None:
        self.users: Dict[str, Tuple[int, Dict[int, str]]] = {}  # name -> (next_seq, mailbox)
        self.clients: Dict[str, Tuple[int, CommandResult]] = {}

    def apply(self, entry: Entry) -> Optional[CommandResult]:
        if entry == b"":
            return None
        if isinstance(entry, bytes):
            return CommandResult(code=INVALID)
        op = entry.WhichOneof("op")
        request = getattr(entry, op)
        key = (request.client_id, request.request_seq)
        if key[0] and key[1] and key[0] in self.clients:
            seq, stored = self.clients[key[0]]
            if key[1] == seq:
                return stored
            if key[1] < seq:
                return CommandResult(code=STALE)
        try:
            outcome = getattr(self, op)(request)
        except ChatError:
            outcome = CommandResult(code=INVALID)
        if key[0] and key[1]:
            self.clients[key[0]] = (key[1], outcome)
        return outcome

    def create(self, request) -> CommandResult:
        name = normalize_name(request.name)
        if name in self.users:
            return CommandResult(code=EXISTS)
        self.users[name] = (1, {})
        return CommandResult(name=name)

    def delete(self, request) -> CommandResult:
        name = normalize_name(request.name)
        if name not in self.users:
            return CommandResult(code=NOT_FOUND)
        _, mailbox = self.users.pop(name)
        return CommandResult(count=len(mailbox))

    def send(self, request) -> CommandResult:
        name = normalize_name(request.recipient)
        if request.sender:
            normalize_name(request.sender)
        text = validate_text(request.text)
        if name not in self.users:
            return CommandResult(code=NOT_FOUND)
        seq, mailbox = self.users[name]
        mailbox[seq] = text
        self.users[name] = (seq + 1, mailbox)
        return CommandResult(seq=seq)

    def connect(self, request) -> CommandResult:
        name = normalize_name(request.name)
        if name not in self.users:
            return CommandResult(code=NOT_FOUND)
        return CommandResult(count=len(self.users[name][1]))

    def ack(self, request) -> CommandResult:
        name = normalize_name(request.name)
        if name not in self.users:
            return CommandResult(code=NOT_FOUND)
        mailbox = self.users[name][1]
        acked = [seq for seq in mailbox if seq <= request.up_to_seq]
        for seq in acked:
            del mailbox[seq]
        return CommandResult(count=len(acked))


def comparable(result: Optional[CommandResult]) -> Optional[CommandResult]:
    """The result without its human-readable text, which the model does not predict."""
    if result is None:
        return None
    copy = CommandResult()
    copy.CopyFrom(result)
    copy.error = ""
    return copy


names_st = st.sampled_from(["alice", "bob", "Zo\u00eb", "Zoe\u0308", "bad name", ""])
texts_st = st.sampled_from(["hi", "hello, world", "", "x" * 4097, "nul\x00"])
ids_st = st.fixed_dictionaries(
    {"client_id": st.sampled_from(["", "c1", "c2"]), "request_seq": st.integers(0, 4)}
)
entries_st = st.one_of(
    st.tuples(names_st, ids_st).map(lambda a: create(a[0], **a[1])),
    st.tuples(names_st, ids_st).map(lambda a: delete(a[0], **a[1])),
    st.tuples(names_st, texts_st, names_st, st.integers(0, 2**40), ids_st).map(
        lambda a: send(a[0], a[1], sender=a[2], ts=a[3], **a[4])
    ),
    st.tuples(names_st, st.sampled_from(["s1", "s2"]), ids_st).map(
        lambda a: connect(a[0], a[1], **a[2])
    ),
    st.tuples(names_st, st.integers(0, 6), ids_st).map(lambda a: ack(a[0], a[1], **a[2])),
    st.just(b""),
    st.binary(min_size=1, max_size=6).filter(lambda data: not _decodes(data)),
)


def _decodes(data: bytes) -> bool:
    try:
        return Command.FromString(data).WhichOneof("op") is not None
    except DecodeError:
        return False


@settings(deadline=None, max_examples=150)
@given(st.lists(entries_st, max_size=40), st.lists(st.integers(1, 7), min_size=1, max_size=5))
def test_state_machine_is_deterministic_and_matches_the_model(log, sizes):
    model = Model()
    expected = [comparable(model.apply(entry)) for entry in log]

    whole = ChatState(":memory:")
    pieces = ChatState(":memory:")
    applied = run(whole, *log) if log else []
    assert [comparable(a.result) for a in applied] == expected
    assert apply_in_batches(pieces, log, sizes) == [
        b"" if a.result is None else a.result.SerializeToString() for a in applied
    ]
    assert whole.digest() == pieces.digest()
    assert whole.last_applied == pieces.last_applied == len(log)
    for name, (next_seq, mailbox) in model.users.items():
        assert [(d.seq, d.text) for d in whole.pending(name)] == sorted(mailbox.items())
    assert whole.names() == sorted(model.users)
    whole.close()
    pieces.close()


def test_module_constants():
    assert state_module.CLIENT_TABLE_WINDOW == 100_000
    assert state_module.CLIENT_EXPIRY_INTERVAL == 1024


# ------------------------------------------------------------------ the read-only reader


@pytest.mark.parametrize("folder", ["plain", "odd ?#% name"])
def test_reader_sees_each_applied_batch_and_cannot_write(tmp_path, folder):
    path = tmp_path / folder / "state.db"
    path.parent.mkdir()
    chat = ChatState(str(path))
    reader = ChatStateReader(str(path))
    try:
        assert reader.names() == []
        run(chat, create("bob"), send("bob", "hi"), connect("bob", session_id="s9"))
        assert reader.names() == ["bob"]
        assert reader.session_of("bob") == "s9"
        assert [d.text for d in reader.pending("bob")] == ["hi"]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader._db.execute("DELETE FROM users")
        assert chat.names() == ["bob"]
    finally:
        reader.close()
        chat.close()


def test_reader_never_sees_a_batch_while_it_is_being_applied(tmp_path):
    """Reads run on the event loop while a large batch is applied on a worker thread: the
    reader must see the state before the batch until the batch commits, never a part of it."""
    path = str(tmp_path / "state.db")
    chat = ChatState(path)
    reader = ChatStateReader(path)
    seen_inside: List[List[str]] = []
    original = chat._apply_entry

    def apply_and_look(index, data):
        applied = original(index, data)
        seen_inside.append(reader.names())  # mid-batch, from the reader's connection
        return applied

    chat._apply_entry = apply_and_look  # type: ignore[method-assign]
    try:
        run(chat, create("ann"), create("bob"), create("cy"))
        assert seen_inside == [[], [], []]
        assert reader.names() == ["ann", "bob", "cy"]
    finally:
        reader.close()
        chat.close()


# ------------------------------------------------------------------ credentials, lookalikes


def test_names_that_look_alike_cannot_coexist(chat):
    assert result(chat, create("admin")).code == OK
    for lookalike in ("\uff41dmin", "\u0430dmin", "Admin", "ADMIN", "adm\u0131n"):  # fullwidth, Cyrillic, case, dotless i
        res = result(chat, create(lookalike))
        assert res.code == EXISTS and "look like the existing user 'admin'" in res.error, lookalike
    assert result(chat, create("\ufb01le")).code == OK  # the ligature first: "file" is then taken
    assert result(chat, create("file")).code == EXISTS
    assert result(chat, create("user1")).code == OK
    assert result(chat, create("userl")).code == EXISTS
    assert chat.names() == ["admin", "user1", "\ufb01le"]
    assert result(chat, create("user2")).code == OK  # different names stay different


def test_a_command_acting_as_another_user_is_refused(bob):
    assert result(bob, create("eve")).code == OK
    forged = delete("bob")
    forged.principal = "eve"
    res = result(bob, forged)
    assert res.code == CommandResult.UNAUTHENTICATED and bob.user_exists("bob")
    stale = send("eve", "hi", sender="bob")
    stale.principal, stale.principal_generation = "bob", 999  # bob as he was at another create
    assert result(bob, stale).code == CommandResult.UNAUTHENTICATED
    assert bob.queued_count("eve") == 0


def test_exactly_once_answers_are_kept_per_user(bob):
    assert result(bob, create("eve")).code == OK
    mine = send("eve", "from bob", sender="bob", client_id="shared", request_seq=5)
    mine.principal = "bob"
    theirs = send("bob", "from eve", sender="eve", client_id="shared", request_seq=1000)
    theirs.principal = "eve"
    assert result(bob, theirs).seq == 1
    assert result(bob, mine).seq == 1  # not "stale": eve's request numbers are eve's
