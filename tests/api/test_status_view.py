"""The `status` table of client.py and `server.py status`."""
from replichat.client.cli import format_status
from replichat.proto import chat_pb2


def test_status_table_shows_roles_indexes_lag_and_unreachable_replicas() -> None:
    leader = chat_pb2.StatusResponse(id=1, role="leader", term=3, leader_id=1, commit_index=120, applied_index=120, last_index=121)
    behind = chat_pb2.StatusResponse(id=2, role="follower", term=3, leader_id=1, commit_index=90, applied_index=80, last_index=95,
                                     first_index=41, snapshot_index=45)
    lines = format_status([("a:1", leader, None), ("b:2", behind, None), ("c:3", None, "connection refused")])
    assert lines[0].split() == ["address", "id", "role", "term", "leader", "commit", "applied", "last", "lag", "first", "snapshot"]
    assert lines[1].split() == ["a:1", "1", "leader", "3", "1", "120", "120", "121", "0", "1", "0"]
    assert lines[2].split() == ["b:2", "2", "follower", "3", "1", "90", "80", "95", "40", "41", "45"]
    assert lines[3].split() == ["c:3", "unreachable"]
