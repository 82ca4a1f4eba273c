"""Checks on stored bytes: the checksum every Raft log entry carries, and the error a replica
raises when something it stored fails a check.

The entry checksum is CRC-32 (zlib's, in the standard library, computed in C) over the entry's
index, term and data. For detecting corruption it is as good as CRC-32C: both catch every burst
of up to 32 flipped bits and miss a random corruption with probability 2**-32; CRC-32C only
computes faster where the CPU has an instruction for it, which matters little next to an fsync.
Covering index and term, not only the data, also catches an entry stored in the wrong row.
"""
import struct
import zlib

INDEX_TERM = struct.Struct(">QQ")


class CorruptDataError(RuntimeError):
    """Stored data failed a check (a checksum, SQLite's quick_check, an index that does not
    fit). The replica must not serve or ship it: it stops, and the message says what failed
    and where, for the operator."""


def entry_checksum(index: int, term: int, data: bytes) -> int:
    return zlib.crc32(data, zlib.crc32(INDEX_TERM.pack(index, term)))


def verify_entry(index: int, term: int, data: bytes, checksum: int) -> None:
    if entry_checksum(index, term, data) != checksum:
        raise CorruptDataError(
            f"raft log entry {index} (term {term}) fails its checksum: the stored bytes changed "
            f"after they were written; this replica must not serve or ship them"
        )
