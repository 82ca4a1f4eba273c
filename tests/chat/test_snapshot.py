"""Chat-state snapshots (take, verify, restore) and the state database's check at start."""
import os
import sqlite3
import threading

import pytest

from replichat.chat.snapshot import (
    database_problem,
    remove_snapshots_before,
    remove_snapshots_except,
    restore_state,
    take_snapshot,
    verify_snapshot,
)
from replichat.chat.state import ChatState
from replichat.chat.state_check import LogBounds, SnapshotFile, prepare_state
from replichat.integrity import CorruptDataError
from replichat.proto import chat_pb2
from replichat.proto.command_pb2 import Command


def commands(first: int, count: int):
    """Users, messages, a connect (session), an ack, each with a client id (exactly-once table)."""
    out = []
    for n in range(count):
        index = first + n
        ids = dict(client_id=f"c{index % 7}", request_seq=index)
        if n % 4 == 0:
            cmd = Command(create=chat_pb2.CreateUserRequest(name=f"u{index}", **ids))
        elif n % 4 == 1:
            cmd = Command(timestamp_ms=index, send=chat_pb2.SendMessageRequest(recipient=f"u{index - 1}", text=f"t{index}", **ids))
        elif n % 4 == 2:
            cmd = Command(connect=chat_pb2.ConnectRequest(name=f"u{index - 2}", session_id=f"s{index}", **ids))
        else:
            cmd = Command(ack=chat_pb2.AckRequest(name=f"u{index - 3}", up_to_seq=0, **ids))
        out.append((index, cmd.SerializeToString()))
    return out


@pytest.fixture
def state(tmp_path):
    state = ChatState(str(tmp_path / "state.db"))
    state.apply_batch(commands(1, 40))
    yield state
    state.close()


def test_a_snapshot_holds_every_table_at_its_index(tmp_path, state) -> None:
    snap = take_snapshot(str(tmp_path / "state.db"), str(tmp_path))
    assert snap.index == 40 and snap.file.startswith("snapshots/") and snap.size > 0
    copy = ChatState(str(tmp_path / snap.file))
    try:
        assert copy.digest() == state.digest()
        assert copy.stats()["clients"] == 7  # the exactly-once table is in it
        assert copy.session_of("u1") == "s3"
    finally:
        copy.close()
    assert os.listdir(tmp_path / "snapshots") == [os.path.basename(snap.file)]


def test_a_snapshot_taken_while_batches_apply_is_one_consistent_index(tmp_path, state) -> None:
    path = str(tmp_path / "state.db")
    digests = {40: state.digest()}
    done = threading.Event()
    snaps = []

    def snapshotter() -> None:
        while not done.is_set():
            snaps.append(take_snapshot(path, str(tmp_path)))

    thread = threading.Thread(target=snapshotter)
    thread.start()
    try:
        for first in range(41, 241, 20):
            state.apply_batch(commands(first, 20))
            digests[first + 19] = state.digest()
    finally:
        done.set()
        thread.join()
    assert snaps
    for snap in snaps[-3:]:
        copy = ChatState(str(tmp_path / snap.file))
        try:
            assert copy.digest() == digests[snap.index], f"snapshot at {snap.index} mixes batches"
        finally:
            copy.close()


def test_a_flipped_byte_in_a_snapshot_is_detected_and_not_restored(tmp_path, state) -> None:
    snap = take_snapshot(str(tmp_path / "state.db"), str(tmp_path))
    path = str(tmp_path / snap.file)
    verify_snapshot(path, snap.size, snap.checksum)
    with open(path, "r+b") as f:
        f.seek(snap.size // 2)
        byte = f.read(1)
        f.seek(snap.size // 2)
        f.write(bytes([byte[0] ^ 0x10]))
    with pytest.raises(CorruptDataError, match="fails its checksum"):
        verify_snapshot(path, snap.size, snap.checksum)
    target = str(tmp_path / "other.db")
    with pytest.raises(CorruptDataError):
        restore_state(target, path, snap.size, snap.checksum, snap.index)
    assert not os.path.exists(target) and not os.path.exists(target + ".restore")


def test_restore_replaces_a_state_with_its_wal_atomically(tmp_path, state) -> None:
    snap = take_snapshot(str(tmp_path / "state.db"), str(tmp_path))
    expected = state.digest()
    other_path = str(tmp_path / "other.db")
    other = ChatState(other_path)
    other.apply_batch(commands(1, 8))
    other.close()
    restore_state(other_path, str(tmp_path / snap.file), snap.size, snap.checksum, snap.index)
    restored = ChatState(other_path)
    try:
        assert restored.digest() == expected and restored.last_applied == 40
        restored.apply_batch(commands(41, 4))  # and it goes on from there
    finally:
        restored.close()
    with pytest.raises(CorruptDataError, match="covers index 40, not 41"):
        restore_state(other_path, str(tmp_path / snap.file), snap.size, snap.checksum, 41)


def test_old_snapshots_are_removed(tmp_path, state) -> None:
    first = take_snapshot(str(tmp_path / "state.db"), str(tmp_path))
    state.apply_batch(commands(41, 4))
    second = take_snapshot(str(tmp_path / "state.db"), str(tmp_path))
    assert remove_snapshots_except(str(tmp_path), second.file) == 1
    assert not os.path.exists(tmp_path / first.file) and os.path.exists(tmp_path / second.file)


def test_compaction_keeps_a_newer_snapshot_file_a_follower_is_about_to_install(tmp_path, state) -> None:
    first = take_snapshot(str(tmp_path / "state.db"), str(tmp_path))
    state.apply_batch(commands(41, 4))
    second = take_snapshot(str(tmp_path / "state.db"), str(tmp_path))
    state.apply_batch(commands(45, 4))
    received = take_snapshot(str(tmp_path / "state.db"), str(tmp_path))  # stands for one from the leader
    assert remove_snapshots_before(str(tmp_path), second.index) == 1
    assert not os.path.exists(tmp_path / first.file)
    assert os.path.exists(tmp_path / second.file) and os.path.exists(tmp_path / received.file)


# ------------------------------------------------------------------ the check at start


def corrupt_a_page(path: str) -> None:
    """Overwrite bytes inside a b-tree page (past the header), as a failing disk would."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        for offset in range(4096 + 8, size, 4096):
            f.seek(offset)
            f.write(b"\xff" * 64)


def test_a_healthy_state_passes(tmp_path, state) -> None:
    assert prepare_state(str(tmp_path / "state.db"), LogBounds(0, 40), None) == "ok"
    assert prepare_state(str(tmp_path / "state.db"), LogBounds(30, 45), None) == "ok"


def test_a_corrupt_state_is_rebuilt_from_a_log_that_starts_at_one(tmp_path, state) -> None:
    path = str(tmp_path / "state.db")
    state.close()
    corrupt_a_page(path)
    assert database_problem(path) is not None
    outcome = prepare_state(path, LogBounds(0, 40), None)
    assert outcome.startswith("rebuilt from the log")
    assert not os.path.exists(path) and os.path.exists(path + ".corrupt")
    fresh = ChatState(path)
    assert fresh.last_applied == 0  # the runtime replays the log into it
    fresh.close()


def test_a_corrupt_state_is_restored_from_the_snapshot(tmp_path, state) -> None:
    path = str(tmp_path / "state.db")
    snap = take_snapshot(path, str(tmp_path))
    expected = state.digest()
    state.close()
    corrupt_a_page(path)
    snapshot = SnapshotFile(str(tmp_path / snap.file), snap.index, snap.size, snap.checksum)
    assert prepare_state(path, LogBounds(35, 60), snapshot) == "restored from the snapshot at 40"
    restored = ChatState(path)
    assert restored.digest() == expected
    restored.close()


def test_a_state_behind_the_snapshot_is_restored(tmp_path, state) -> None:
    path = str(tmp_path / "state.db")
    snap = take_snapshot(path, str(tmp_path))
    state.close()
    behind = str(tmp_path / "behind.db")
    old = ChatState(behind)
    old.apply_batch(commands(1, 10))
    old.close()
    snapshot = SnapshotFile(str(tmp_path / snap.file), snap.index, snap.size, snap.checksum)
    assert prepare_state(behind, LogBounds(40, 50), snapshot) == "restored from the snapshot at 40"
    assert not os.path.exists(behind + ".corrupt")  # it was healthy, only old


def test_a_corrupt_state_without_a_way_to_rebuild_is_refused(tmp_path, state) -> None:
    path = str(tmp_path / "state.db")
    state.close()
    corrupt_a_page(path)
    with pytest.raises(CorruptDataError, match="cannot be rebuilt"):
        prepare_state(path, LogBounds(20, 60), None)


def test_a_state_ahead_of_the_log_is_refused(tmp_path, state) -> None:
    with pytest.raises(CorruptDataError, match="raft log ends at 30"):
        prepare_state(str(tmp_path / "state.db"), LogBounds(0, 30), None)


def test_a_missing_state_is_fine_for_a_new_log_and_restored_otherwise(tmp_path, state) -> None:
    assert prepare_state(str(tmp_path / "none.db"), LogBounds(0, 0), None) == "ok"
    with pytest.raises(CorruptDataError, match="it is missing"):
        prepare_state(str(tmp_path / "none.db"), LogBounds(5, 9), None)
