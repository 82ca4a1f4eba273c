"""A small HTTP/1.1 server on the replica's event loop, for /metrics and the cluster page.

Why not prometheus_client's own server: it runs on a thread, and the gauges read the
replica's state, which only the event loop may touch. Why not a web framework: four routes,
one request per connection. Requests are bounded (head size, time to send it, open
connections); bodies are not read (no route needs one)."""
import asyncio
import logging
from typing import Awaitable, Callable, Dict, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 64
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 502: "Bad Gateway", 503: "Service Unavailable"}
# The page and its data are same-origin only: no frames, no scripts or styles from elsewhere.
_SECURITY_HEADERS: Tuple[Tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


class Request(NamedTuple):
    method: str
    path: str
    headers: Dict[str, str]  # names in lower case


class Response(NamedTuple):
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: Sequence[Tuple[str, str]] = ()


Handler = Callable[[Request], Awaitable[Response]]


def text(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode())


def parse_head(head: bytes) -> Optional[Request]:
    """The request line and headers; None if they are not HTTP/1.x."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        return None
    if not version.startswith("HTTP/1.") or not method.isalpha():
        return None
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return None
        headers[name.lower()] = value.strip()
    return Request(method.upper(), unquote(urlsplit(target).path), headers)


class HttpServer:
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: Optional[asyncio.AbstractServer] = None
        self._open = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD_BYTES)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._open += 1
        try:
            response = await self._answer(reader)
            writer.write(_encode(response))
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
        except (ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open -= 1
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> Response:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            return text(413, "request head too large")
        except ValueError:  # the limit, as some Python versions report it
            return text(413, "request head too large")
        request = parse_head(head[:-4])
        if request is None:
            return text(400, "not an HTTP/1.x request")
        try:
            return await self._handler(request)
        except Exception:  # a bug in a page handler must not end the replica
            log.exception("HTTP %s %s failed", request.method, request.path)
            return text(503, "internal error; see the replica's log")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _encode(response: Response) -> bytes:
    head = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
            f"Content-Type: {response.content_type}", f"Content-Length: {len(response.body)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in tuple(_SECURITY_HEADERS) + tuple(response.headers)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body
