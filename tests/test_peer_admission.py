"""Whom a replica's Raft port admits follows its peers as they change, also on connections
accepted before the change: a replica restarted with stale --peers accepts a connection from a
member added since (say, the leader) as soon as its log's configuration names that member,
though the connection arrived while the replica was still reading its log."""
import pytest

from replichat.raft.messages import Message, MsgType
from replichat.runtime.transport import MAGIC, FrameDecoder, FrameError, encode_frame, encode_introduction


def heartbeat(src: int, dst: int) -> Message:
    return Message(MsgType.HEARTBEAT, src, dst, term=3, commit=0)


def test_a_connection_admits_a_member_added_after_it_was_accepted() -> None:
    peers = {1: "h1:1", 2: "h2:2", 3: "h3:3"}  # replica 2's --peers; the node updates it in place
    early = FrameDecoder(2, peers)  # accepted while the replica was starting
    peers[5] = "h5:5"  # the log's configuration: replica 5 was added
    assert early.admits(5) and 5 in early.senders
    assert early.feed(MAGIC + encode_frame([heartbeat(5, 2)])) == [[heartbeat(5, 2)]]


def test_a_connection_refuses_a_replica_removed_from_the_peers() -> None:
    peers = {1: "h1:1", 2: "h2:2", 5: "h5:5"}
    decoder = FrameDecoder(2, peers)
    assert decoder.feed(MAGIC + encode_frame([heartbeat(5, 2)])) == [[heartbeat(5, 2)]]
    del peers[5]
    assert not decoder.admits(5) and not decoder.admits(2)  # never itself
    with pytest.raises(FrameError, match="not a peer of replica 2"):
        decoder.feed(encode_frame([heartbeat(5, 2)]))


def test_a_stranger_proven_by_its_certificate_may_introduce_itself() -> None:
    """The first frame of a connection carries the sender's Raft address; a connection whose
    certificate names a replica the receiver does not know is admitted once the receiver (its
    node) has taken that address."""
    peers = {1: "h1:1", 2: "h2:2"}
    introduced = []

    def introduce(peer: int, address: str) -> None:
        introduced.append((peer, address))
        peers[peer] = address

    decoder = FrameDecoder(2, peers, introduce=introduce)
    assert decoder.may_introduce
    decoder.authenticated_peer = 5  # what _PeerConnection sets from the certificate
    data = MAGIC + encode_introduction("h5:5") + encode_frame([heartbeat(5, 2)])
    assert decoder.feed(data) == [[], [heartbeat(5, 2)]]
    assert introduced == [(5, "h5:5")]
    decoder.feed(encode_introduction("elsewhere:9"))  # a member already: not introduced again
    assert introduced == [(5, "h5:5")]


def test_without_a_certificate_or_a_taker_an_introduction_admits_nobody() -> None:
    peers = {1: "h1:1", 2: "h2:2"}
    calls = []
    unauthenticated = FrameDecoder(2, peers, introduce=lambda peer, address: calls.append(peer))
    with pytest.raises(FrameError, match="not a peer"):  # plain TCP: a claimed id proves nothing
        unauthenticated.feed(MAGIC + encode_introduction("h5:5") + encode_frame([heartbeat(5, 2)]))
    assert calls == []
    refused = FrameDecoder(2, peers, introduce=lambda peer, address: None)  # the node refused it
    refused.authenticated_peer = 5
    with pytest.raises(FrameError, match="not a peer"):
        refused.feed(MAGIC + encode_introduction("h5:5") + encode_frame([heartbeat(5, 2)]))
    assert not FrameDecoder(2, peers).may_introduce
