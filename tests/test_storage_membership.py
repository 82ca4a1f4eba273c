"""raft.db keeps the configuration at the log's base: written with the compaction or snapshot
install that moves the base, checksummed, refused when it does not name the base; a schema-2
database (before membership changes) gains the table and keeps its data."""
import sqlite3

import pytest

from replichat.integrity import CorruptDataError
from replichat.raft import membership
from replichat.raft.membership import Membership
from replichat.raft.messages import Entry, HardState
from replichat.runtime.snapshotting import compact
from replichat.runtime.storage import SCHEMA_VERSION, RaftStorage, SnapshotMeta

CONF = membership.encode(Membership.of_voters([1, 2, 4]))


def with_snapshot(path: str, count: int = 10, index: int = 6) -> RaftStorage:
    storage = RaftStorage(path)
    storage.save(HardState(2, 1, count), [Entry(1, i + 1, b"x%d" % i) for i in range(count)])
    storage.save_snapshot(SnapshotMeta(index, 1, "snapshots/s.db", 1, "0" * 64))
    return storage


def test_compaction_records_the_configuration_at_the_new_base(tmp_path) -> None:
    path = str(tmp_path / "raft.db")
    storage = with_snapshot(path)
    assert storage.base_membership() is None  # never recorded: the bootstrap one holds
    assert compact(storage, str(tmp_path), 6, CONF) == 6
    storage.close()
    reopened = RaftStorage(path)
    assert reopened.base_membership() == CONF and reopened.log_base().index == 6


def test_an_install_records_the_snapshots_configuration(tmp_path) -> None:
    path = str(tmp_path / "raft.db")
    storage = with_snapshot(path)
    storage.install_snapshot(SnapshotMeta(40, 3, "snapshots/t.db", 1, "0" * 64), HardState(3, 0, 40), CONF)
    assert storage.base_membership() == CONF and storage.log_base().index == 40


def test_a_corrupt_or_stale_record_is_refused_loudly(tmp_path) -> None:
    path = str(tmp_path / "raft.db")
    storage = with_snapshot(path)
    compact(storage, str(tmp_path), 4, CONF)
    storage.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE base_membership SET data = ?", (CONF.replace(b"4", b"5"),))
    db.commit()
    db.close()
    with pytest.raises(CorruptDataError, match="fails its checksum"):
        RaftStorage(path).base_membership()
    storage = RaftStorage(path)
    storage.install_snapshot(SnapshotMeta(40, 3, "snapshots/t.db", 1, "0" * 64), HardState(3, 0, 40), CONF)
    storage.compact(40)  # nothing to delete; the record still names the base
    assert storage.base_membership() == CONF
    # Compacting further without saying what the configuration is there: refused at load.
    storage.save(None, [Entry(3, 41, b"a"), Entry(3, 42, b"b")])
    storage.save_snapshot(SnapshotMeta(42, 3, "snapshots/u.db", 1, "0" * 64))
    storage.compact(42)
    with pytest.raises(CorruptDataError, match="not the log's base"):
        storage.base_membership()


def test_a_schema_2_database_is_upgraded_and_keeps_its_log(tmp_path) -> None:
    path = str(tmp_path / "raft.db")
    storage = with_snapshot(path)
    storage.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE base_membership")
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    storage = RaftStorage(path)
    hard_state, entries = storage.load()
    assert hard_state == HardState(2, 1, 10) and len(entries) == 10 and storage.base_membership() is None
    compact(storage, str(tmp_path), 6, CONF)
    assert storage.base_membership() == CONF
    storage.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (3,)
    db.close()
