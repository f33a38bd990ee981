"""Small servers on the stack's blocking socket API: echo (RFC 862), discard (RFC 863), a minimal HTTP/1.1
server, and the control socket through which ``pytcp connections`` and ``pytcp counters`` read a running
``pytcp serve``.

Each accepted connection gets its own thread, at most ``max_connections`` at a time: when all are busy
the acceptor stops accepting, so new connections wait in the listener's backlog (and SYN cookies take
over beyond it) instead of piling up threads. Every blocking call is bounded by the idle timeout.

HTTP: ``GET /bytes/N`` streams N bytes (N <= MAX_HTTP_BYTES) with Content-Length set; byte i of every
such body is ``PATTERN[i % PATTERN_PERIOD]``, ``PATTERN = random.Random(PATTERN_SEED).randbytes(
PATTERN_PERIOD)``, so a client can verify what it got. ``GET /`` is a short HTML page; anything else is
404, methods other than GET and HEAD 405. Connections persist (RFC 9112 9.3) unless the request says
``Connection: close`` or is HTTP/1.0 without keep-alive, so load generators like wrk reuse them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import selectors
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

from . import __version__

if TYPE_CHECKING:
    from .runtime import StackRuntime
    from .socket import Socket

__all__ = [
    "CHUNK",
    "MAX_HTTP_BYTES",
    "PATTERN_PERIOD",
    "PATTERN_SEED",
    "ControlServer",
    "Services",
    "body_chunks",
    "control_request",
]

logger = logging.getLogger(__name__)

#: Connections served at once, across all services. Load generators open tens to a hundred connections
#: (wrk -c, ab -c); each costs one mostly blocked thread (a stack of which a few pages are ever touched).
MAX_CONNECTIONS = 128
#: Seconds a connection may stay silent, or a send make no progress, before it is closed: nginx's
#: keepalive_timeout is 75 s, Apache's Timeout 60 s; this keeps the threads of vanished clients bounded.
IDLE_TIMEOUT = 60.0
#: After a response that ends the connection, how long to keep reading (and discarding) what the client
#: still sends before closing: closing with unread data would reset the connection and could destroy the
#: response in flight (RFC 9112 9.6; nginx lingering_timeout is 5 s).
LINGER_TIMEOUT = 5.0
#: Bytes per recv and per send of a body: 256 KiB, the default socket buffers (TCPConfig.send_buffer and
#: recv_buffer), so one call can fill or drain a whole buffer. Each call runs in sections on the calling
#: thread (pytcp.socket) and sleeps on the connection's Waiter whenever the buffer is full or empty:
#: larger calls mean fewer sections, wake-ups and Python-level loop turns per byte. Measured with
#: sections: /bytes/N ~50% faster than with 64 KiB, discard ~5%; 1 MiB gained nothing.
CHUNK = 262144
#: Request line plus headers: 8 KiB, the per-line limit of Apache (LimitRequestFieldSize 8190) and
#: nginx (large_client_header_buffers 8k); wrk and curl send about a hundred bytes.
MAX_HEAD = 8192
#: Largest /bytes/N: 10 GB, a few seconds to a minute of streaming at the rates this stack reaches.
MAX_HTTP_BYTES = 10 * 10**9
#: The body pattern's period: the largest prime below 64 Ki. A segment misplaced by k segments of s bytes
#: (s < period) reads the same only if the prime divides k * s, i.e. k >= 65521: never in one window.
PATTERN_PERIOD = 65521
PATTERN_SEED = 0x70797463  # "pytc"
#: How often an acceptor that waits for a free connection slot checks for stop().
SLOT_POLL = 0.25
#: A control request is one short line; its answer is written within this many seconds or dropped.
CONTROL_TIMEOUT = 5.0
CONTROL_REQUEST_MAX = 64

_PATTERN = random.Random(PATTERN_SEED).randbytes(PATTERN_PERIOD)
# The pattern repeated to PERIOD + CHUNK bytes: the CHUNK bytes from any offset in the period are one slice.
_PATTERN_RING = memoryview((_PATTERN * (CHUNK // PATTERN_PERIOD + 2))[: PATTERN_PERIOD + CHUNK])
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    505: "HTTP Version Not Supported",
}
_INDEX = (
    "<!DOCTYPE html>\n<html><head><title>pytcp</title></head><body>\n"
    "<h1>pytcp</h1>\n<p>Served by a user-space TCP/IP stack written in Python.</p>\n"
    f'<p><a href="/bytes/1000000">/bytes/N</a> returns N bytes (N &lt;= {MAX_HTTP_BYTES}).</p>\n'
    "</body></html>\n"
).encode()


def body_chunks(length: int) -> Iterator[memoryview]:
    """The body of ``GET /bytes/<length>``, in chunks of at most CHUNK bytes (views of one shared buffer)."""
    sent = 0
    while sent < length:
        offset = sent % PATTERN_PERIOD
        size = min(CHUNK, length - sent)
        yield _PATTERN_RING[offset : offset + size]
        sent += size


class _HttpError(Exception):
    """A request the server answers with an error status and then closes the connection."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class Services:
    """Echo, discard and HTTP servers on one runtime; see the module docstring."""

    def __init__(
        self,
        runtime: StackRuntime,
        *,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self._runtime = runtime
        self._idle_timeout = idle_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._listeners: list[Socket] = []
        self._acceptors: list[threading.Thread] = []
        self._active: dict[Socket, threading.Thread] = {}
        self._stopping = False
        self.ports: dict[str, int] = {}

    def start(self, *, echo: int | None = None, discard: int | None = None, http: int | None = None) -> Self:
        """Listen on each given port and start serving; OSError (EADDRINUSE...) leaves nothing running."""
        handlers: dict[str, tuple[int | None, Callable[[Socket], None]]] = {
            "echo": (echo, self._echo),
            "discard": (discard, self._discard),
            "http": (http, self._http),
        }
        try:
            for name, (port, handler) in handlers.items():
                if port is None:
                    continue
                listener = self._runtime.socket()
                self._listeners.append(listener)
                listener.bind(("", port))
                listener.listen()
                self.ports[name] = port
                thread = threading.Thread(
                    target=self._accept_loop,
                    args=(name, listener, handler),
                    name=f"pytcp-{name}",
                    daemon=True,
                )
                self._acceptors.append(thread)
        except BaseException:
            self.stop()
            raise
        for thread in self._acceptors:
            thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection (handlers blocked on them wake up with EBADF) and wait
        up to ``timeout`` seconds for the threads. Idempotent."""
        self._stopping = True
        with self._lock:
            sockets = [*self._listeners, *self._active]
            threads = [*self._acceptors, *self._active.values()]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = sum(thread.is_alive() for thread in threads)
        if alive:
            logger.warning("%d service threads still running after %.1f s", alive, timeout)

    # -- connections -----------------------------------------------------------------------------------

    def _accept_loop(self, name: str, listener: Socket, handler: Callable[[Socket], None]) -> None:
        while not self._stopping:
            if not self._slots.acquire(timeout=SLOT_POLL):
                continue
            try:
                sock, peer = listener.accept()
            except OSError as exc:
                self._slots.release()
                if self._stopping or exc.errno in (errno.EBADF, errno.ENETDOWN):
                    return  # closed by stop(), or the runtime is gone
                logger.warning("%s: accept failed: %s", name, exc)
                continue
            thread = threading.Thread(
                target=self._serve, args=(name, handler, sock), name=f"pytcp-{name}-{peer[1]}", daemon=True
            )
            with self._lock:
                stopping = self._stopping
                if not stopping:
                    self._active[sock] = thread
            if stopping:  # stop() ran during accept and cannot have seen this socket
                sock.close()
                self._slots.release()
                return
            thread.start()

    def _serve(self, name: str, handler: Callable[[Socket], None], sock: Socket) -> None:
        try:
            sock.settimeout(self._idle_timeout)
            handler(sock)
        except OSError as exc:
            # Resets, timeouts, and EBADF/ENETDOWN from stop(): the normal ends of a connection.
            logger.debug("%s connection ended: %s", name, exc)
        except Exception:
            logger.exception("%s handler failed", name)
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._active.pop(sock, None)
            self._slots.release()

    @staticmethod
    def _echo(sock: Socket) -> None:
        """RFC 862: send back whatever arrives, until the client closes."""
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        while count := sock.recv_into(buffer):
            sock.sendall(view[:count])

    @staticmethod
    def _discard(sock: Socket) -> None:
        """RFC 863: read and throw away whatever arrives, until the client closes."""
        buffer = bytearray(CHUNK)
        while sock.recv_into(buffer):
            pass

    @staticmethod
    def _http(sock: Socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # responses leave whole, as nginx
        pending = bytearray()
        keep_alive = True
        while keep_alive:
            try:
                head = _read_head(sock, pending)
                if head is None:
                    return  # the client closed between requests
                method, path, keep_alive = _parse_request(head)
                _route(sock, method, path, keep_alive)
            except _HttpError as exc:
                keep_alive = False
                _respond(sock, exc.status, b"text/plain", f"{exc}\n".encode(), keep_alive=False)
        _linger_close(sock)


def _read_head(sock: Socket, pending: bytearray) -> bytes | None:
    """The next request's line and headers (without the blank line), consumed from ``pending`` plus what
    arrives; None at a clean end of the stream between requests."""
    while True:
        # RFC 9112 2.2: empty lines before a request line are ignored.
        while pending[:2] == b"\r\n":
            del pending[:2]
        end = pending.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(pending[:end])
            del pending[: end + 4]
            return head
        if len(pending) > MAX_HEAD:
            raise _HttpError(431, f"request head longer than {MAX_HEAD} bytes")
        chunk = sock.recv(MAX_HEAD + 4 - len(pending) + 1)
        if not chunk:
            if pending:
                raise _HttpError(400, "connection closed inside a request head")
            return None
        pending += chunk


def _parse_request(head: bytes) -> tuple[str, str, bool]:
    """(method, path, keep-alive) of one request head (RFC 9112 3 and 5); _HttpError when malformed."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise _HttpError(400, "request head is not ASCII") from None
    request_line, *lines = text.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise _HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _HttpError(505 if version.startswith("HTTP/") else 400, f"unsupported version {version}")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        # RFC 9112 5.1: no whitespace between the field name and the colon (a request smuggling vector).
        if not colon or not name or name != name.strip() or " " in name:
            raise _HttpError(400, "malformed header line")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if version == "HTTP/1.1" and "host" not in headers:
        raise _HttpError(400, "HTTP/1.1 request without Host")  # RFC 9112 3.2: MUST answer 400
    options = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    keep_alive = "close" not in options if version == "HTTP/1.1" else "keep-alive" in options
    # This server reads no request bodies: after a request that has one, the connection cannot find the
    # next request, so it ends (the lingering close reads the body away).
    if "transfer-encoding" in headers or headers.get("content-length", "0").strip() != "0":
        keep_alive = False
    return method, urlsplit(target).path, keep_alive


def _route(sock: Socket, method: str, path: str, keep_alive: bool) -> None:
    if method not in ("GET", "HEAD"):
        body = b"only GET and HEAD are served\n"
        _respond(sock, 405, b"text/plain", body, keep_alive=keep_alive, extra=b"Allow: GET, HEAD\r\n")
    elif path == "/":
        _respond(sock, 200, b"text/html; charset=utf-8", _INDEX, keep_alive=keep_alive, method=method)
    elif (length := _bytes_length(path)) is not None:
        _respond(sock, 200, b"application/octet-stream", length, keep_alive=keep_alive, method=method)
    else:
        _respond(sock, 404, b"text/plain", b"not found\n", keep_alive=keep_alive, method=method)


def _bytes_length(path: str) -> int | None:
    """N of ``/bytes/N``; None for other paths; _HttpError for an N beyond MAX_HTTP_BYTES."""
    prefix, _, digits = path.rpartition("/")
    if prefix != "/bytes" or not digits.isascii() or not digits.isdigit():
        return None
    if len(digits) > len(str(MAX_HTTP_BYTES)) or int(digits) > MAX_HTTP_BYTES:
        raise _HttpError(400, f"at most {MAX_HTTP_BYTES} bytes per request")
    return int(digits)


def _respond(
    sock: Socket,
    status: int,
    content_type: bytes,
    body: bytes | int,
    *,
    keep_alive: bool,
    method: str = "GET",
    extra: bytes = b"",
) -> None:
    """Send a response; ``body`` is the content, or the length of a /bytes body to stream. A HEAD request
    gets the headers alone (RFC 9110 9.3.2)."""
    length = body if isinstance(body, int) else len(body)
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n".encode(),
        f"Date: {formatdate(usegmt=True)}\r\nServer: pytcp/{__version__}\r\n".encode(),
        b"Content-Type: " + content_type + b"\r\n",
        f"Content-Length: {length}\r\n".encode(),
        extra,
        b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n",
    ]
    header = b"".join(lines)
    if method == "HEAD":
        sock.sendall(header)
    elif isinstance(body, bytes):
        sock.sendall(header + body)
    else:
        sock.sendall(header)
        for chunk in body_chunks(body):
            sock.sendall(chunk)


def _linger_close(sock: Socket) -> None:
    """Send our FIN, then read until the client's FIN (bounded by LINGER_TIMEOUT) so data it still sends
    cannot reset the connection before it has read the response."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(LINGER_TIMEOUT)
        deadline = time.monotonic() + LINGER_TIMEOUT
        while time.monotonic() < deadline and sock.recv(CHUNK):
            pass


# -- the control socket ---------------------------------------------------------------------------------


class ControlServer:
    """Answers ``connections`` and ``counters`` with JSON on a UNIX stream socket: one request line per
    connection, one JSON document back. Requests are served one at a time on the server's own thread.
    ``commands`` adds (or overrides) commands: name -> a function of no arguments returning the JSON
    value (pytcp forward adds ``flows`` and its own counters this way)."""

    def __init__(
        self, runtime: StackRuntime, path: str, commands: Mapping[str, Callable[[], Any]] | None = None
    ) -> None:
        self.path = path
        self._commands = {
            "connections": lambda: runtime.connections_table(CONTROL_TIMEOUT),
            "counters": lambda: runtime.counters(CONTROL_TIMEOUT),
            **(commands or {}),
        }
        self._sock: socket.socket | None = None
        self._inode = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._loop, name="pytcp-control", daemon=True)

    def start(self) -> Self:
        """Bind the socket (a stale one left by a crashed server is replaced; a live one is EADDRINUSE)."""
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        _remove_stale_socket(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
            os.chmod(self.path, 0o600)  # the table names every peer: root's business only
            self._inode = os.stat(self.path).st_ino
            sock.listen()
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and remove the socket file. Idempotent."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.ident is not None:
            self._thread.join(timeout)
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == self._inode:  # still ours, not a successor's
                    os.unlink(self.path)
        self._wake_r.close()
        self._wake_w.close()

    def _loop(self) -> None:
        assert self._sock is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_r in ready:
                    return
                try:
                    client, _ = self._sock.accept()
                except OSError as exc:
                    logger.warning("control socket accept failed: %s", exc)
                    continue
                with client:
                    self._answer(client)

    def _answer(self, client: socket.socket) -> None:
        client.settimeout(CONTROL_TIMEOUT)
        try:
            request = _read_line(client)
            command = request.decode("ascii", "replace").strip()
            handler = self._commands.get(command)
            reply: Any
            if handler is not None:
                reply = handler()
            else:
                reply = {"error": f"unknown command {command!r}; try one of {', '.join(self._commands)}"}
            client.sendall(json.dumps(reply, default=str).encode() + b"\n")
        except (OSError, TimeoutError) as exc:
            logger.debug("control request failed: %s", exc)


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < CONTROL_REQUEST_MAX:
        chunk = sock.recv(CONTROL_REQUEST_MAX - len(data))
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def _remove_stale_socket(path: str) -> None:
    """Unlink a socket nobody listens on; refuse to touch a live one or a file that is not a socket."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(CONTROL_TIMEOUT)
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # left behind by a server that died
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path} is in use by a running pytcp serve")


def control_request(path: str, command: str, timeout: float = CONTROL_TIMEOUT) -> Any:
    """Send one command to a ControlServer at ``path`` and return its decoded JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode("ascii") + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(CHUNK):
            chunks.append(chunk)
    reply = json.loads(b"".join(chunks))
    if isinstance(reply, dict) and set(reply) == {"error"}:
        raise ValueError(reply["error"])
    return reply
