"""Regenerate checked-in protobuf/gRPC modules from .proto files (replichat/proto/ by default).

The generated code is committed, made by grpcio-tools 1.70 (protobuf 5.29), whose runtime
supports both Python 3.8 and current CPython, so installing the service needs no code
generation step. tests/test_proto_current.py fails when a .proto changed without this.

    python3 scripts/gen_proto.py [--out DIR]               # replichat/proto/
    python3 scripts/gen_proto.py --protos bench/etcd        # the benchmark's etcd stubs
"""
import argparse
import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "replichat" / "proto"


def generate(out: pathlib.Path, proto_dir: pathlib.Path = PROTO_DIR) -> None:
    protos = sorted(str(p.resolve().relative_to(ROOT)) for p in proto_dir.glob("*.proto"))
    if not protos:
        sys.exit(f"no .proto files in {proto_dir}")
    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{ROOT}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + protos) != 0:
        sys.exit("protoc failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT, help="output root (default: the repo)")
    parser.add_argument("--protos", type=pathlib.Path, default=PROTO_DIR, help="folder of .proto files (default: replichat/proto)")
    args = parser.parse_args()
    generate(args.out, args.protos)


if __name__ == "__main__":
    main()
