"""Taking, compacting to, shipping and installing a snapshot with the real files, and the
crash between an install's two steps."""
import os

from replichat.chat.snapshot import take_snapshot
from replichat.chat.state import ChatState
from replichat.chat.state_check import LogBounds, SnapshotFile, prepare_state
from replichat.raft.messages import Entry, HardState
from replichat.runtime.snapshot_transfer import IncomingSnapshot, OutgoingSnapshot
from replichat.runtime.snapshotting import compact, install, record
from replichat.runtime.storage import LogBase, RaftStorage
from tests.chat.test_snapshot import commands


def leader_with_history(tmp_path, count: int = 60):
    data_dir = str(tmp_path / "leader")
    os.makedirs(data_dir)
    storage = RaftStorage(os.path.join(data_dir, "raft.db"))
    items = commands(1, count)
    storage.save(HardState(3, 1, count), [Entry(3, index, data) for index, data in items])
    state = ChatState(os.path.join(data_dir, "state.db"))
    state.apply_batch(items)
    return data_dir, storage, state


def ship(leader_dir: str, meta, follower_dir: str) -> str:
    sender = OutgoingSnapshot(1, 2, 3, meta.index, meta.term, os.path.join(leader_dir, meta.file), meta.size, meta.checksum,
                              chunk_bytes=4096)
    receiver = IncomingSnapshot(2, follower_dir)
    name = None
    while name is None:
        for chunk in sender.chunks_to_send():
            ack, name = receiver.accept(chunk)
            sender.on_ack(ack)
    sender.close()
    return name


def test_take_record_compact_then_ship_and_install(tmp_path) -> None:
    leader_dir, storage, state = leader_with_history(tmp_path)
    first = take_snapshot(os.path.join(leader_dir, "state.db"), leader_dir)
    record(storage, first, 3)
    state.apply_batch(commands(61, 20))
    storage.save(None, [Entry(3, index, data) for index, data in commands(61, 20)])
    meta = record(storage, take_snapshot(os.path.join(leader_dir, "state.db"), leader_dir), 3)
    assert meta.index == 80
    assert compact(storage, leader_dir, 70) == 70
    assert storage.log_base() == LogBase(70, 3)
    assert os.listdir(os.path.join(leader_dir, "snapshots")) == [os.path.basename(meta.file)]

    follower_dir = str(tmp_path / "follower")
    os.makedirs(follower_dir)
    follower_storage = RaftStorage(os.path.join(follower_dir, "raft.db"))
    follower_storage.save(HardState(2, 2, 5), [Entry(2, i, b"") for i in range(1, 9)])
    old_state = ChatState(os.path.join(follower_dir, "state.db"))
    old_state.apply_batch(commands(1, 5))
    old_state.close()
    assert ship(leader_dir, meta, follower_dir) == meta.file
    installed = install(follower_storage, follower_dir, os.path.join(follower_dir, "state.db"), meta.index, meta.term,
                        HardState(3, 0, meta.index))
    assert installed._replace(file="") == meta._replace(file="")
    assert follower_storage.load() == (HardState(3, 0, 80), [])
    assert follower_storage.log_base() == LogBase(80, 3)
    restored = ChatState(os.path.join(follower_dir, "state.db"))
    assert restored.digest() == state.digest()
    restored.close()
    state.close()


def test_a_crash_between_the_log_and_the_state_is_finished_at_start(tmp_path) -> None:
    leader_dir, storage, state = leader_with_history(tmp_path)
    meta = record(storage, take_snapshot(os.path.join(leader_dir, "state.db"), leader_dir), 3)
    follower_dir = str(tmp_path / "follower")
    os.makedirs(follower_dir)
    ship(leader_dir, meta, follower_dir)
    follower_storage = RaftStorage(os.path.join(follower_dir, "raft.db"))
    old_state = ChatState(os.path.join(follower_dir, "state.db"))
    old_state.apply_batch(commands(1, 5))
    old_state.close()
    # The install's first step (raft.db) is done; the replica dies before it restores state.db.
    follower_storage.install_snapshot(meta, HardState(3, 0, meta.index))
    recorded = follower_storage.snapshot()
    assert recorded is not None
    snapshot = SnapshotFile(os.path.join(follower_dir, recorded.file), recorded.index, recorded.size, recorded.checksum)
    outcome = prepare_state(os.path.join(follower_dir, "state.db"), LogBounds(meta.index, meta.index), snapshot)
    assert outcome == f"restored from the snapshot at {meta.index}"
    restored = ChatState(os.path.join(follower_dir, "state.db"))
    assert restored.digest() == state.digest()
    restored.close()
    state.close()
