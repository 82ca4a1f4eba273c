"""The checked-in generated protobuf/gRPC code matches the .proto files."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_generated_code_is_current(tmp_path) -> None:
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_proto.py"), "--out", str(tmp_path)], check=True)
    generated = tmp_path / "replichat" / "proto"
    names = sorted(p.name for p in generated.iterdir())
    assert names, "nothing generated"
    for name in names:
        with open(os.path.join(ROOT, "replichat", "proto", name), "rb") as checked_in:
            assert checked_in.read() == (generated / name).read_bytes(), f"{name} is stale: run scripts/gen_proto.py"
