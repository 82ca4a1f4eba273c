"""Forged and malformed peer traffic against real replicas over their real Raft ports (mutual
TLS, as every cluster runs): what issue 11 found a bare TCP socket could do, each probe refused
or dropped. Throughout, a client keeps writing; at the end no replica crashed, no term grew
from a forged message, every acknowledged write is there and the replicas' states are equal."""
import asyncio
import json
import os
import ssl
import struct
from typing import List, Optional

import pytest

from replichat.chat.state import ChatState
from replichat.client.api import ChatClient
from replichat.identity import cluster_id_from_ca
from replichat.proto import chat_pb2, command_pb2
from replichat.raft.messages import Entry, Message, MsgType
from replichat.security import certs, tls
from replichat.runtime.transport import FRAME_TIMEOUT_S, GREETING_TIMEOUT_S, MAGIC, MAX_CONNECTIONS, encode_frame, split_address
from tests.test_transport import closed_by_peer

pytestmark = pytest.mark.timeout(240)

FORGED_COMMAND = command_pb2.Command(
    create=chat_pb2.CreateUserRequest(name="mallory", client_id="forger", request_seq=1)
).SerializeToString()


async def refused_at_handshake(address: str, context: Optional[ssl.SSLContext], data: bytes) -> None:
    """The Raft port turns the connection away before any message is read: the TLS handshake
    fails (on either side), or without TLS the bytes are not a handshake at all."""
    host, port = split_address(address)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context), 10)
    except (ssl.SSLError, ConnectionError, OSError):
        return  # refused during the handshake
    try:
        writer.write(data)
        await writer.drain()
        assert await closed_by_peer(reader, timeout=10)
    except (ssl.SSLError, ConnectionError):
        pass  # the server's refusal of our certificate arrives as an alert (TLS 1.3)
    finally:
        writer.transport.abort()


def test_forged_and_malformed_peer_traffic_is_refused_or_dropped(process_cluster, tmp_path) -> None:
    cluster = process_cluster(3)
    log_text = lambda: "".join(open(cluster.log_path(i), errors="replace").read() for i in sorted(cluster.addresses))

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        insider, other = [i for i in sorted(cluster.addresses) if i != leader]
        async with ChatClient(cluster.servers, deadline=20) as client:
            await client.create("bob")
            acknowledged = [await client.send("bob", "before the attacks")]
            start = {i: await cluster.status(i) for i in cluster.addresses}
            term = start[leader].term
            to_leader = cluster.peer_addresses[leader]

            def forgeries(src: int, dst: int) -> List[bytes]:
                return [MAGIC + encode_frame([m]) for m in (
                    Message(MsgType.PROPOSE, src, dst, term, entries=(Entry(0, 0, FORGED_COMMAND),)),
                    Message(MsgType.APPEND, src, dst, term + 5, log_term=term, index=start[dst].last_index,
                            entries=(Entry(term + 5, start[dst].last_index + 1, FORGED_COMMAND),),
                            commit=start[dst].last_index + 1),
                    Message(MsgType.APPEND_RESP, src, dst, term, index=start[dst].last_index + 5),
                    Message(MsgType.TIMEOUT_NOW, src, dst, term),
                )]

            # 1. No certificate, another cluster's certificate, plain TCP: nobody gets a
            #    message in, whatever it claims (the forged propose / append /
            #    append-resp / timeout-now all went through a bare socket before).
            foreign = str(tmp_path / "foreign")
            certs.init_certs(foreign, {insider: ["127.0.0.1"]})
            no_cert = tls.client_context(os.path.join(cluster.certs_dir, "ca.crt"))
            no_cert.check_hostname = False
            contexts = {
                "plain TCP": None,
                "another cluster's CA": tls.peer_client_context(certs.replica_paths(foreign, insider)),
                "no client certificate": no_cert,
            }
            for name, context in contexts.items():
                for data in forgeries(insider, leader):
                    await refused_at_handshake(to_leader, context, data)

            def hello(src: int, dst: int) -> bytes:
                """The identity greeting replica src sends replica dst (identity.py)."""
                def incarnation(i: int) -> bytes:
                    with open(os.path.join(cluster.replica_dir(i), "identity.json")) as f:
                        return bytes.fromhex(json.load(f)["incarnation"])
                return MAGIC + cluster_id_from_ca(os.path.join(cluster.certs_dir, "ca.crt")) + incarnation(src) + incarnation(dst)

            # 2. A real replica's certificate (an insider) claiming to be another replica:
            #    each message is dropped, the connection stays.
            insider_tls = tls.peer_client_context(certs.replica_paths(cluster.certs_dir, insider))
            host, port = split_address(to_leader)
            reader, writer = await asyncio.open_connection(host, port, ssl=insider_tls)
            writer.write(hello(insider, leader))
            for frame in forgeries(other, leader):
                writer.write(frame[len(MAGIC):])
            # 3. ... and speaking as itself, with values no replica sends: terms 2^64-1 and
            #    2^63-1, entries with a wrong index, an append response past the leader's log
            #    (it crashed the leader with IndexError), a timeout-now from a non-leader.
            last = start[leader].last_index
            absurd = [
                Message(MsgType.HEARTBEAT_RESP, insider, leader, (1 << 64) - 1),
                Message(MsgType.VOTE, insider, leader, (1 << 63) - 1, log_term=term, index=10 ** 12),
                Message(MsgType.APPEND, insider, leader, term, log_term=term, index=last,
                        entries=(Entry(term, last + 7, FORGED_COMMAND),)),
                Message(MsgType.APPEND_RESP, insider, leader, term, index=10 ** 12),
                Message(MsgType.APPEND_RESP, insider, leader, term, index=last + 1000),
                Message(MsgType.HEARTBEAT_RESP, insider, leader, term, context=b"not a number"),
            ]
            writer.write(b"".join(encode_frame([m]) for m in absurd))
            await writer.drain()
            acknowledged.append(await client.send("bob", "during the forgeries"))
            writer.close()
            # The follower is told to campaign by someone who is not its leader.
            other_tls = tls.peer_client_context(certs.replica_paths(cluster.certs_dir, insider))
            host, port = split_address(cluster.peer_addresses[other])
            _, writer = await asyncio.open_connection(host, port, ssl=other_tls)
            writer.write(hello(insider, other) + encode_frame([Message(MsgType.TIMEOUT_NOW, insider, other, term)]))
            await writer.drain()
            acknowledged.append(await client.send("bob", "after the timeout-now"))
            writer.close()

            # 4. A half frame held open: closed after FRAME_TIMEOUT_S, its memory freed.
            reader, writer = await asyncio.open_connection(host, port, ssl=insider_tls)
            writer.write(hello(insider, other) + encode_frame([Message(MsgType.HEARTBEAT_RESP, insider, other, term)])
                         + struct.pack(">I", 1 << 20) + bytes(1000))
            await writer.drain()
            assert await closed_by_peer(reader, timeout=FRAME_TIMEOUT_S + 10)
            writer.transport.abort()

            # 5. A flood of connections that never finish a handshake: at most MAX_CONNECTIONS
            #    are held, each for GREETING_TIMEOUT_S, and the real peers keep replicating.
            flood = []
            host, port = split_address(to_leader)
            for _ in range(MAX_CONNECTIONS + 16):
                flood.append(await asyncio.open_connection(host, port))
            acknowledged.append(await client.send("bob", "during the flood"))
            closed = await asyncio.gather(*(closed_by_peer(r, timeout=GREETING_TIMEOUT_S + 15) for r, _ in flood))
            assert all(closed)
            for _, w in flood:
                w.transport.abort()
            acknowledged.append(await client.send("bob", "after the flood"))

            # Nothing forged took effect: no crash, no term inflation, no leader change, no
            # forged user; every acknowledged send is in bob's mailbox, in order.
            assert cluster.alive() == [1, 2, 3]
            assert await cluster.wait_for_leader() == leader
            end = {i: await cluster.status(i) for i in cluster.addresses}
            assert {s.term for s in end.values()} == {term}, end
            assert "mallory" not in await client.list()
            assert acknowledged == list(range(1, len(acknowledged) + 1))
            await cluster.wait_for_applied(end[leader].commit_index, sorted(cluster.addresses))

        logs = log_text()
        for reason in (
            "authenticated as replica",              # claimed another sender
            "term 18446744073709551615 out of range",
            "term 9223372036854775807 out of range",
            "expected",                               # wrong entry index
            "past this leader's last index",          # append response beyond the log
            "TIMEOUT_NOW at term",                    # from a replica that is not the leader
            "is not a read round number",
            "a frame did not complete",
            "open already",                           # the flood beyond MAX_CONNECTIONS
        ):
            assert reason in logs, reason
        assert "Traceback" not in logs

    asyncio.run(scenario())
    cluster.stop_all()
    digests = set()
    for i in sorted(cluster.addresses):
        state = ChatState(os.path.join(cluster.replica_dir(i), "state.db"))
        try:
            digests.add(state.digest())
        finally:
            state.close()
    assert len(digests) == 1, "replicas' states differ"
