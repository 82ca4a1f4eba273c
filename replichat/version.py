"""What `--version` prints for both commands."""
import platform

from replichat import __version__


def version_text(command: str) -> str:
    """`replichat-server 0.14.0 (Python 3.11.7, grpcio 1.70.0)`: the interpreter and gRPC
    release matter to an operator reading a bug report as much as our own version does."""
    try:
        import grpc

        grpc_version = grpc.__version__
    except ImportError:  # --version must answer even where the dependencies are missing
        grpc_version = "not installed"
    return f"{command} {__version__} (Python {platform.python_version()}, grpcio {grpc_version})"
