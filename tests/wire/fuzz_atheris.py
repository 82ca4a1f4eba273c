"""Coverage-guided fuzzing of the wire decoder with atheris; run by hand, not by pytest.

Hypothesis (tests/wire/test_fuzz.py) explores what its strategies describe; atheris follows
the decoder's branches from random bytes, which finds inputs no strategy thought of.

    pip install atheris      # wheels exist for CPython 3.11 on x86_64 Linux
    python tests/wire/fuzz_atheris.py -runs=200000
    python tests/wire/fuzz_atheris.py -max_total_time=60

A crash is an exception other than WireError, or a decoded message that does not survive
encode and decode again; libFuzzer writes the input to crash-<hash> for a regression test.
"""
import pathlib
import sys

import atheris

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["replichat.wire"]):
    from replichat.wire import codec
    from replichat.wire.codec import COMMAND_SIZE, FRAME_SIZE, PAYLOAD_SIZE, Direction, Reassembler, WireError


_COMMANDS = sorted(set(codec.message_types(Direction.REQUEST)) | set(codec.message_types(Direction.RESPONSE)))


def _frames(fdp: "atheris.FuzzedDataProvider") -> bytes:
    """Up to four frames whose command is usually a real one (a dict lookup gives libFuzzer
    nothing to follow, so random bytes alone rarely get past it), payload from the input."""
    out = b""
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        choice = fdp.ConsumeIntInRange(0, 2 * len(_COMMANDS))
        if choice < len(_COMMANDS):
            command = _COMMANDS[choice].encode()
        elif choice < 2 * len(_COMMANDS):
            command = _COMMANDS[choice - len(_COMMANDS)].encode() + b"+"
        else:
            command = fdp.ConsumeBytes(COMMAND_SIZE)
        payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, PAYLOAD_SIZE))
        out += command.ljust(COMMAND_SIZE, b"\0") + payload.ljust(PAYLOAD_SIZE, b"\0")
    return out


def _check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    direction = Direction.REQUEST if fdp.ConsumeBool() else Direction.RESPONSE
    stream = _frames(fdp)
    reassembler = Reassembler(direction)
    for i in range(0, len(stream), FRAME_SIZE):
        try:
            message = reassembler.push(stream[i : i + FRAME_SIZE])
        except WireError:
            continue
        if message is None:
            continue
        try:
            again = codec.encode(message)
        except WireError:
            continue
        decode = codec.decode_request if direction is Direction.REQUEST else codec.decode_response
        if decode(again) != message:
            raise AssertionError(f"unstable round trip: {message!r}")


def main() -> None:
    atheris.Setup(sys.argv, _check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
