"""Who a data directory belongs to: its cluster, and which life of its replica it holds.

Written at the first start as DATA/identity.json:

    cluster_id   16 bytes (hex) naming the cluster: the SHA-256 of the cluster CA certificate
                 when peers use TLS (every replica holding the same CA agrees without being told),
                 else of the membership (ids and --cluster addresses, --insecure-peers). A directory
                 of another cluster is refused at start, and the id is in every peer greeting,
                 so replicas of two clusters never exchange a message.
    incarnation  16 random bytes (hex) created with the directory: a directory that was wiped,
                 or replaced by another one, has a new incarnation.
    peers        {id: incarnation} of every peer this directory has heard from.

Why it matters: Raft's safety rests on each replica remembering its votes and acknowledged
entries. A replica restarted with an empty directory under an id the cluster knows has
forgotten both: it could vote twice in a term, and entries counted as committed because it
held them may now be on a minority. So the greetings carry incarnations both ways (transport.py):
  * a replica greeted by a peer whose incarnation differs from the recorded one refuses that
    connection and says loudly that the peer's data directory was replaced;
  * a replica greeted by a peer that knew it under another incarnation stops serving, with
    the message REPLACED_HELP on how to bring it back.
A replica that never talked to the cluster (a late first start) is simply recorded. Restoring
an older copy of the same directory keeps its incarnation: that case (a log that went back) is
the leader's to notice (raft/core.py LogRegression). Without membership changes there is no
safe automatic way to re-admit a replaced replica; REPLACED_HELP gives the manual one.
"""
import hashlib
import json
import os
import uuid
from typing import Dict, NamedTuple, Optional

FILE_NAME = "identity.json"
ID_BYTES = 16
NO_INCARNATION = bytes(ID_BYTES)

REPLACED_HELP = (
    "Its log, votes and acknowledged entries are gone, so it must not take part in Raft under its old "
    "id: doing so could elect two leaders in one term or lose committed writes. To bring it back: "
    "(1) if its old data directory (or a backup of it) exists, stop this replica and put that directory "
    "back; (2) otherwise, once the other replicas are healthy and have a majority without it, remove the "
    "entry for replica {replica} from \"peers\" in every other replica's {file} while they are stopped, "
    "then start them and this one: it rejoins empty and catches up from the leader. (Membership changes "
    "will replace this manual step.)"
)


class IdentityError(Exception):
    """The data directory belongs to another cluster, or its identity file is unreadable."""


class Identity(NamedTuple):
    cluster_id: bytes
    incarnation: bytes
    # Created by this start: the directory was empty (or new).
    fresh: bool


def cluster_id_from_ca(ca_file: str) -> bytes:
    """The id of a cluster whose replicas trust this CA certificate file."""
    with open(ca_file, "rb") as f:
        return hashlib.sha256(b"replichat cluster CA\0" + f.read()).digest()[:ID_BYTES]


def cluster_id_from_members(cluster: Dict[int, str]) -> bytes:
    """The id of a plain-TCP cluster (--insecure-peers): its members and their --cluster
    (gRPC) addresses, which every replica is given alike (Raft addresses may differ per
    replica, through proxies)."""
    text = ",".join(f"{i}={a}" for i, a in sorted(cluster.items()))
    return hashlib.sha256(b"replichat cluster members\0" + text.encode()).digest()[:ID_BYTES]


class IdentityStore:
    """DATA/identity.json: loaded at start, updated (atomically, fsynced) when a peer is first
    heard of. Small and rare writes: once per peer for the life of the directory."""

    def __init__(self, data_dir: str, replica_id: int, cluster_id: bytes) -> None:
        self.path = os.path.join(data_dir, FILE_NAME)
        self.replica_id = replica_id
        os.makedirs(data_dir, exist_ok=True)
        if os.path.exists(self.path):
            stored = self._read()
            if stored["cluster_id"] != cluster_id.hex():
                raise IdentityError(
                    f"{data_dir} holds the data of another cluster (cluster id {stored['cluster_id']}, this replica "
                    f"is configured for {cluster_id.hex()}: another CA or membership). Point --data-dir at this "
                    "cluster's directory."
                )
            self._data = stored
            fresh = False
        else:
            # No identity: a directory that holds a log already predates identities (it is
            # adopted as is); an empty one is a new life of this replica.
            fresh = not os.path.exists(os.path.join(data_dir, "raft.db"))
            self._data = {"cluster_id": cluster_id.hex(), "replica_id": replica_id,
                          "incarnation": uuid.uuid4().hex, "peers": {}}
            self._write()
        self.identity = Identity(cluster_id, bytes.fromhex(self._data["incarnation"]), fresh)

    def _read(self) -> Dict:
        try:
            with open(self.path) as f:
                data = json.load(f)
            bytes.fromhex(data["cluster_id"])
            bytes.fromhex(data["incarnation"])
            if not isinstance(data.get("peers"), dict):
                raise ValueError("no peers table")
            return data
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise IdentityError(f"cannot read {self.path}: {error}") from None

    def _write(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self._data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        directory = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def known(self, peer: int) -> Optional[bytes]:
        """The incarnation this directory knows `peer` under, if it has heard from it."""
        value = self._data["peers"].get(str(peer))
        return bytes.fromhex(value) if value else None

    def record(self, peer: int, incarnation: bytes) -> None:
        self._data["peers"][str(peer)] = incarnation.hex()
        self._write()
