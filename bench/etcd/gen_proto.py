"""Regenerate the checked-in etcd stubs (bench/etcd/*_pb2*.py) from bench/etcd/*.proto.

Made with grpcio-tools 1.70 (protobuf 5.29), like replichat/proto/, so they import on Python 3.8
and current CPython without a generation step:

    python3 bench/etcd/gen_proto.py [--out DIR]
"""
import argparse
import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
PROTO_DIR = ROOT / "bench" / "etcd"


def generate(out: pathlib.Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in PROTO_DIR.glob("*.proto"))
    args = ["protoc", f"-I{ROOT}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + protos) != 0:
        sys.exit("protoc failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT, help="output root (default: the repo)")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
