"""A generic Raft runtime: one sans-IO driver (driver.py) around the Raft core, shared by the
asyncio node (node.py) and the simulator. It moves opaque bytes; what they mean is the state
machine's business (for chat: replichat.chat.machine and replichat.chat.service)."""
