"""A corrupted disk, for the chaos campaign: one flipped byte in a stored Raft log entry of a
stopped replica, and the way back (the operator restores the file). The replica must notice at
start and refuse, naming the entry, so the bad bytes are never applied, served or shipped."""
import os
import random
import sqlite3
from typing import NamedTuple, Optional


class Flip(NamedTuple):
    db_path: str
    index: int
    original: bytes


def flip_log_entry(replica_dir: str, rng: random.Random) -> Optional[Flip]:
    """Flip one bit of one random non-empty entry in the replica's raft.db (the replica must
    be stopped). None if the log holds no such entry yet."""
    path = os.path.join(replica_dir, "raft.db")
    if not os.path.exists(path):
        return None
    db = sqlite3.connect(path)
    try:
        (count,) = db.execute("SELECT COUNT(*) FROM log WHERE length(data) > 0").fetchone()
        if count == 0:
            return None
        index, data = db.execute(
            "SELECT idx, data FROM log WHERE length(data) > 0 ORDER BY idx LIMIT 1 OFFSET ?", (rng.randrange(count),)
        ).fetchone()
        data = bytes(data)
        position = rng.randrange(len(data))
        changed = data[:position] + bytes([data[position] ^ (1 << rng.randrange(8))]) + data[position + 1 :]
        db.execute("UPDATE log SET data = ? WHERE idx = ?", (changed, index))
        db.commit()
    finally:
        db.close()
    return Flip(path, int(index), data)


def undo_flip(flip: Flip) -> None:
    db = sqlite3.connect(flip.db_path)
    try:
        db.execute("UPDATE log SET data = ? WHERE idx = ?", (flip.original, flip.index))
        db.commit()
    finally:
        db.close()
