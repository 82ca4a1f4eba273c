"""A TCP proxy for one directed replica link i->j, controlled by the campaign."""
import asyncio
from typing import Optional, Set

BUFFER = 65536


class LinkProxy:
    """Listens on 127.0.0.1 (a free port) and forwards every connection to `target`.

    `cut()` closes the connections it carries and closes new ones at once (the peer sees a
    reset/EOF right away, as with a refused connection); `forward()` lets traffic through again.
    """

    def __init__(self, source: int, dest: int, target: str) -> None:
        self.source = source
        self.dest = dest
        self.target = target
        self.is_cut = False
        self._server: Optional[asyncio.AbstractServer] = None
        self._writers: Set[asyncio.StreamWriter] = set()
        self._tasks: Set["asyncio.Task[None]"] = set()
        self.address = ""

    async def start(self, port: int = 0) -> str:
        """Listen on `port` (0: any free port); returns the address."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self.address

    def cut(self) -> None:
        self.is_cut = True
        for writer in list(self._writers):
            _abort(writer)
        self._writers.clear()

    def forward(self) -> None:
        self.is_cut = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            _abort(writer)
            return
        host, port = self.target.rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2.0)
        except (OSError, asyncio.TimeoutError):
            _abort(writer)
            return
        if self.is_cut:  # cut while connecting
            _abort(writer)
            _abort(up_writer)
            return
        self._writers.add(writer)
        self._writers.add(up_writer)
        loop = asyncio.get_running_loop()
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = loop.create_task(self._pipe(src, dst, writer, up_writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    a: asyncio.StreamWriter, b: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await src.read(BUFFER)
                if not data or self.is_cut:
                    break
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for w in (a, b):
                self._writers.discard(w)
                _abort(w)


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if transport is not None and not transport.is_closing():
        transport.abort()
