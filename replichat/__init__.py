"""replichat: a chat service replicated with Raft (asyncio + gRPC)."""

# The one place the version is written: pyproject.toml reads it (tool.setuptools.dynamic), and
# both commands' --version print it.
__version__ = "0.14.0"
