"""asyncio over the user-space stack: look-alikes of ``asyncio.open_connection`` / ``start_server`` (and of
the loop's ``create_connection`` / ``create_server``) whose streams are real asyncio.StreamReader and
StreamWriter objects, driven by :class:`StackTransport`, an asyncio.Transport over one engine Connection.

Each connection has two halves:

- a ``_Channel`` lives in the engine's sections (under the runtime's engine lock, on whichever thread
  holds it). It moves bytes between the Connection and the transport: it puts written bytes into the
  send buffer as space frees up (Writable events), pulls received bytes (DataReadable), and reports end
  of file, errors and the end of the connection. It reaches the asyncio loop only by posting callbacks
  (``loop.call_soon_threadsafe``; plain ``call_soon`` when the section runs on the asyncio thread), so no
  protocol code ever runs under the engine lock and a section never waits for the asyncio loop.
- the asyncio loop owns the StackTransport and its protocol. The transport runs its channel's methods
  on the asyncio thread itself, each in one section (``runtime.run``, never across an ``await``): a
  write leaves from the asyncio thread with no hand-off to the loop thread, as a kernel socket's send
  does, and writes, write_eof and close keep their order.

When the runtime ends (stopped, or its loop thread died), its end callback ends every transport still
open with RuntimeNotRunning (ENETDOWN) and closes its Servers, so pending reads and drains fail instead
of hanging.

Flow control is bounded both ways:

- sending: ``write`` counts the bytes the send buffer did not take at once until the channel reports
  them taken; above the
  high-water mark the protocol is paused (``StreamWriter.drain`` blocks) until they fall to the low mark.
  As with asyncio's own transports, ``write`` never refuses data: a writer that ignores ``drain`` keeps
  buffering (its bytes objects are referenced, bytearrays copied), one that drains stays within the marks.
- receiving: the channel keeps at most READ_AHEAD bytes on their way to the protocol and pulls nothing
  while reading is paused (StreamReader pauses above twice its limit), so unread data stays in the
  engine's receive buffer, whose window closes: the back-pressure reaches the peer.

Differences from asyncio's socket transports: there is no kernel socket (``get_extra_info('socket')`` is
None; ``Server.sockets`` holds the listening pytcp.socket.Socket), hosts are dotted quads (no name
resolution), there is no TLS, and only asyncio.Protocol (not BufferedProtocol) is driven.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket as _socket
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from .addresses import dotted, parse_endpoint
from .events import (
    Closed,
    Connected,
    ConnectionFailed,
    ConnectionReset,
    DataReadable,
    Event,
    IncomingConnection,
    PeerClosed,
    Writable,
)
from .runtime import RuntimeNotRunning

if TYPE_CHECKING:
    from .connection import Connection, TCPInfo
    from .runtime import StackRuntime
    from .socket import Socket

__all__ = [
    "READ_AHEAD",
    "READ_CHUNK",
    "Server",
    "StackTransport",
    "create_connection",
    "create_server",
    "open_connection",
    "start_server",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Bytes per Connection.recv: asyncio's selector transports read up to 256 KiB per recv (max_size).
READ_CHUNK: Final = 256 * 1024
#: Received bytes on their way to the protocol (queued in the asyncio loop, not yet handed over). Two
#: chunks keep one in delivery while the next is read, and cap what a busy asyncio loop can pile up.
READ_AHEAD: Final = 2 * READ_CHUNK
#: asyncio's default write-buffer limits (transports._FlowControlMixin): high 64 KiB, low high // 4.
DEFAULT_HIGH_WATER: Final = 64 * 1024
#: asyncio.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES: writes on a lost connection before warning.
LOG_THRESHOLD_FOR_CONNLOST_WRITES: Final = 5

ClientConnectedCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]


def _error(code: int) -> OSError:
    """OSError(code), which Python turns into the matching subclass (ConnectionResetError, ...)."""
    return OSError(code, os.strerror(code))


# -- the engine side (in sections) --------------------------------------------------------------------


class _Dispatcher:
    """Routes a runtime's events to its channels and acceptors (in sections); one per runtime."""

    __slots__ = ("acceptors", "channels")

    def __init__(self) -> None:
        self.channels: dict[Connection, _Channel] = {}
        #: By listening port: the stack has one address, so a port names one listener.
        self.acceptors: dict[int, _Acceptor] = {}

    def on_event(self, event: Event) -> None:
        if isinstance(event, IncomingConnection):
            acceptor = self.acceptors.get(event.listener.port)
            if acceptor is not None:
                acceptor.on_incoming(event.listener)
            return
        channel = self.channels.get(event.conn)
        if channel is not None:
            channel.on_event(event)

    def on_runtime_end(self) -> None:
        """The runtime's end callback (its loop thread, after the loop): no section runs any more, so
        these tables only shrink (on the asyncio threads) and a snapshot holds everything left. A
        graceful stop reported its closes first; _on_lost ignores the rest."""
        for channel in tuple(self.channels.values()):
            channel.post_end()
        for acceptor in tuple(self.acceptors.values()):
            acceptor.post_end()
        # No section will forget them now: they would keep the runtime (a weak key here) alive.
        self.channels.clear()
        self.acceptors.clear()


_dispatchers: weakref.WeakKeyDictionary[StackRuntime, _Dispatcher] = weakref.WeakKeyDictionary()
_dispatchers_lock = threading.Lock()  # several runtimes' sections may create theirs at once


def _dispatcher(runtime: StackRuntime) -> _Dispatcher:
    """The runtime's dispatcher (in a section), created and registered on first use."""
    with _dispatchers_lock:
        dispatcher = _dispatchers.get(runtime)
        if dispatcher is None:
            dispatcher = _dispatchers[runtime] = _Dispatcher()
            runtime.add_event_listener(dispatcher.on_event)
            runtime.add_end_callback(dispatcher.on_runtime_end)
    return dispatcher


class _Channel:
    """The engine half of a StackTransport (see the module docstring); every method runs in a section,
    called by the transport (runtime.run on the asyncio thread) or the dispatcher (any thread)."""

    __slots__ = (
        "_closing",
        "_done",
        "_ended",
        "_eof_pending",
        "_eof_reported",
        "_loop",
        "_queue",
        "_reading",
        "_runtime",
        "_transport",
        "_unconsumed",
        "conn",
    )

    def __init__(self, runtime: StackRuntime, transport: StackTransport, loop: asyncio.AbstractEventLoop):
        self._runtime = runtime
        self._transport = transport
        self._loop = loop
        self.conn: Connection | None = None
        self._queue: deque[memoryview] = deque()  # written, not yet taken by the send buffer
        self._reading = True
        self._unconsumed = 0  # pulled bytes the transport has not yet handed to its protocol
        self._eof_pending = False  # write_eof: shut down writing once the queue is empty
        self._eof_reported = False
        self._closing = False
        self._ended = False  # the TCB reached CLOSED
        self._done = False  # the transport was told the connection is over (or aborted it)

    # -- from the transport (runtime.run) ------------------------------------------------------------

    def connect(self, address: int, port: int, local_port: int) -> None:
        runtime = self._runtime
        self.attach(runtime.stack.connect(address, port, runtime.now, local_port=local_port))

    def attach(self, conn: Connection) -> None:
        self.conn = conn
        _dispatcher(self._runtime).channels[conn] = self

    def write(self, data: bytes) -> int:
        """Queue ``data``; the bytes the send buffer took at once (the rest are reported by _on_sent)."""
        if self._done:
            return 0
        queue = self._queue
        queue.append(memoryview(data))
        # Otherwise the send buffer was full: a Writable event resumes the push.
        return self._push() if len(queue) == 1 else 0

    def write_eof(self) -> None:
        self._eof_pending = True
        self._push_and_report()

    def close(self) -> None:
        self._closing = True
        self._reading = False
        self._push_and_report()

    def abort(self) -> None:
        """RST (RFC 9293 3.10.5); the transport reports connection_lost itself."""
        if self._done:
            return
        self._forget()
        if self.conn is not None:
            self.conn.abort(self._runtime.now)

    def set_reading(self, reading: bool) -> None:
        self._reading = reading and not self._closing
        self._pull()

    def consumed(self, count: int) -> None:
        self._unconsumed -= count
        self._pull()

    def info(self) -> TCPInfo | None:
        return self.conn.info() if self.conn is not None else None

    # -- from the engine (dispatcher) ----------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if self._done:
            return
        if isinstance(event, DataReadable | PeerClosed):
            self._pull()
        elif isinstance(event, Writable):
            self._push_and_report()
        elif isinstance(event, Connected):
            conn = event.conn
            self._post(self._transport._on_connected, (dotted(conn.local_addr), conn.local_port))
            self._pull()  # data that came with the handshake's last segment
        elif isinstance(event, ConnectionReset | ConnectionFailed):
            self._finish(_error(event.errno))
        elif isinstance(event, Closed):
            self._ended = True
            self._pull()

    def _pull(self) -> None:
        """Hand received bytes, then end of file, to the transport within READ_AHEAD; once the TCB is
        CLOSED and everything was handed over, the connection is lost (ECONNABORTED without a FIN: the
        runtime shut down and reset it)."""
        conn = self.conn
        if conn is None or self._done or not self._reading:
            return
        now = self._runtime.now
        try:
            while self._unconsumed < READ_AHEAD:
                data = conn.recv(READ_CHUNK, now)
                if not data:
                    break
                self._unconsumed += len(data)
                self._post(self._transport._on_data, data)
            if not self._eof_reported and conn.at_eof:
                self._eof_reported = True
                self._post(self._transport._on_eof)
        except OSError as exc:
            self._finish(exc)
            return
        if self._ended and not conn.readable:
            self._finish(None if self._eof_reported else _error(errno.ECONNABORTED))

    def _push_and_report(self) -> None:
        if sent := self._push():
            self._post(self._transport._on_sent, sent)

    def _push(self) -> int:
        """Move queued bytes into the send buffer; once it took all: write_eof's FIN, close's close.
        Returns the bytes it took, for the caller to report to the transport."""
        conn = self.conn
        if conn is None or self._done:
            return 0
        now = self._runtime.now
        queue = self._queue
        sent = 0
        try:
            while queue:
                chunk = queue[0]
                taken = conn.send(chunk, now)
                sent += taken
                if taken < len(chunk):
                    queue[0] = chunk[taken:]
                    break
                queue.popleft()
            if not queue and self._eof_pending:
                self._eof_pending = False
                conn.shutdown(_socket.SHUT_WR, now)
            if not queue and self._closing:
                conn.close(now)  # FIN after the queued data; RST if received data was left unread
        except OSError as exc:
            self._finish(exc)
            return 0  # the connection is lost: the transport forgets its buffer
        if not queue and self._closing:
            self._finish(None)
        return sent

    def _post(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the asyncio loop, after this section: never under the engine lock."""
        loop = self._loop
        try:
            if asyncio.events._get_running_loop() is loop:
                loop.call_soon(fn, *args)  # the asyncio thread's own section: no self-pipe wake-up
            else:
                loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            # The asyncio loop is closed: nobody is left to serve the connection.
            logger.debug("asyncio loop closed; resetting %r", self.conn)
            self.abort()

    def _finish(self, exc: OSError | None) -> None:
        if self._done:
            return
        self._forget()
        self._post(self._transport._on_lost, exc)

    def _forget(self) -> None:
        self._done = True
        self._queue.clear()
        if self.conn is not None:
            _dispatcher(self._runtime).channels.pop(self.conn, None)

    def post_end(self) -> None:
        """The runtime ended (its end callback): the transport loses the connection."""
        with contextlib.suppress(RuntimeError):  # the asyncio loop is closed: nobody is left to tell
            self._loop.call_soon_threadsafe(self._transport._on_lost, RuntimeNotRunning())


class _Acceptor:
    """The engine half of a Server: owns the listening pytcp Socket and accepts its connections (its
    methods run in sections)."""

    __slots__ = ("_loop", "_port", "_runtime", "_server", "sock")

    def __init__(self, runtime: StackRuntime, server: Server, loop: asyncio.AbstractEventLoop) -> None:
        self._runtime = runtime
        self._server = server
        self._loop = loop
        self._port = 0  # listening port, once open
        self.sock: Socket = runtime.socket()

    def open(self, host: str, port: int, backlog: int) -> tuple[str, int]:
        """Bind and listen (the socket layer's port choice and address checks), then start accepting."""
        sock = self.sock
        try:
            # As asyncio.start_server on Unix (reuse_address): connections left on the port by an
            # earlier server, such as one still in LAST-ACK, do not keep a new one from listening.
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        sockname = sock.getsockname()
        self._port = sockname[1]
        _dispatcher(self._runtime).acceptors[self._port] = self
        return sockname

    def close(self) -> None:
        """Stop accepting; connections still in the accept queue are reset (Linux inet_csk_listen_stop)."""
        acceptors = _dispatcher(self._runtime).acceptors
        if acceptors.get(self._port) is self:
            del acceptors[self._port]
        self.sock.close()

    def on_incoming(self, listener: Any) -> None:
        runtime = self._runtime
        conn = runtime.stack.accept(listener)
        if conn is None:
            return
        transport = StackTransport(
            runtime,
            self._loop,
            (dotted(conn.remote_addr), conn.remote_port),
            (dotted(conn.local_addr), conn.local_port),
        )
        channel = transport._channel
        channel.attach(conn)
        channel._post(self._server._accept, transport)
        channel._pull()  # bytes or a FIN that arrived while it waited in the accept queue

    def post_end(self) -> None:
        """The runtime ended (its end callback): the server closes."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._server.close)


# -- the asyncio side --------------------------------------------------------------------------------


#: The protocol of a transport before it has one (an accepted connection until the factory ran).
_NO_PROTOCOL: Final = asyncio.Protocol()


class StackTransport(asyncio.Transport):
    """An asyncio transport over one engine Connection. Used on its asyncio loop only (it may be
    constructed elsewhere); see the module docstring for the threads and the flow control."""

    __slots__ = (
        "_buffer_size",
        "_channel",
        "_closing",
        "_dropped_writes",
        "_eof",
        "_high_water",
        "_loop",
        "_lost",
        "_low_water",
        "_made",
        "_paused",
        "_protocol",
        "_protocol_paused",
        "_runtime",
        "_server",
        "_waiter",
    )
    _extra: dict[str, Any]  # BaseTransport's slot, which typeshed does not declare

    def __init__(
        self,
        runtime: StackRuntime,
        loop: asyncio.AbstractEventLoop,
        peername: tuple[str, int],
        sockname: tuple[str, int] | None = None,
    ) -> None:
        super().__init__({"peername": peername, "sockname": sockname, "socket": None})
        self._runtime = runtime
        self._loop = loop
        self._channel = _Channel(runtime, self, loop)
        self._protocol: asyncio.Protocol = _NO_PROTOCOL
        self._server: Server | None = None
        self._waiter: asyncio.Future[None] | None = None  # set while an active open is pending
        self._made = False  # connection_made was called
        self._closing = False
        self._lost = False  # connection_lost was called (or the open failed)
        self._eof = False
        self._paused = False
        self._buffer_size = 0  # written, not yet taken by the engine's send buffer
        self._high_water = DEFAULT_HIGH_WATER
        self._low_water = DEFAULT_HIGH_WATER // 4
        self._protocol_paused = False
        self._dropped_writes = 0

    def __repr__(self) -> str:
        state = "closed" if self._lost else "closing" if self._closing else "open"
        return f"<StackTransport {self._extra['sockname']} -> {self._extra['peername']} {state}>"

    # -- BaseTransport --------------------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """'peername' and 'sockname' as (dotted quad, port), 'socket' None, and 'tcp_info': a
        pytcp.connection.TCPInfo snapshot taken in a section (``default`` if it is gone)."""
        if name == "tcp_info":
            try:
                info = self._runtime.run(self._channel.info)
            except OSError:  # RuntimeNotRunning
                return default
            return default if info is None else info
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """FIN once the buffered data is in the send buffer; connection_lost(None) then."""
        if self._closing:
            return
        self._closing = True
        self._call(self._channel.close)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        if not isinstance(protocol, asyncio.Protocol):
            raise TypeError(f"StackTransport drives asyncio.Protocol, not {type(protocol).__name__}")
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # -- ReadTransport --------------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        """Stop pulling from the Connection: its receive buffer fills and its window closes."""
        if self._closing or self._paused:
            return
        self._paused = True
        self._call(self._channel.set_reading, False)

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        self._call(self._channel.set_reading, True)

    # -- WriteTransport -------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self._closing:
            if self._dropped_writes >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("write() on a closed pytcp transport")
            self._dropped_writes += 1
            return
        # A private copy unless immutable: the caller may reuse its buffer as soon as write returns.
        payload = data if isinstance(data, bytes) else bytes(data)
        # Only what the send buffer did not take at once counts against the marks (its own size bounds
        # the rest, as a kernel socket's sndbuf does below asyncio's buffer).
        self._buffer_size += len(payload) - (self._call(self._channel.write, payload) or 0)
        self._maybe_pause_protocol()

    def write_eof(self) -> None:
        """SHUT_WR after the buffered data: our FIN; the other direction keeps flowing."""
        if self._closing or self._eof:
            return
        self._eof = True
        self._call(self._channel.write_eof)

    def can_write_eof(self) -> bool:
        return True

    def abort(self) -> None:
        """RST now, buffered data discarded; connection_lost(None) soon after."""
        self._force_close(None)

    def get_write_buffer_size(self) -> int:
        return self._buffer_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low_water, self._high_water

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """asyncio's rules: high defaults to 64 KiB (4 * low if only low is given), low to high // 4."""
        if high is None:
            high = DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water, self._low_water = high, low
        self._maybe_pause_protocol()

    # -- internals ------------------------------------------------------------------------------------

    def _call(self, fn: Callable[..., T], *args: Any) -> T | None:
        """``fn(*args)`` in a section on this (the asyncio) thread. A failure (the runtime stopped) ends
        the connection from the next loop iteration, as asyncio reports a failed send: None then."""
        try:
            return self._runtime.run(fn, *args)
        except Exception as exc:
            self._loop.call_soon(self._call_failed, exc)
            return None

    def _call_failed(self, exc: BaseException) -> None:
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler(
                {"message": "pytcp engine call failed", "exception": exc, "transport": self}
            )
        self._force_close(None if self._closing or not isinstance(exc, OSError) else exc)

    def _force_close(self, exc: OSError | None) -> None:
        if self._lost:
            return
        self._closing = True
        # Scheduled before the RST is queued, so this is what the protocol hears (as asyncio's).
        self._loop.call_soon(self._connection_lost, exc)
        self._call(self._channel.abort)

    def _maybe_pause_protocol(self) -> None:
        if self._buffer_size <= self._high_water or self._protocol_paused:
            return
        self._protocol_paused = True
        self._protocol_callback("pause_writing")

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self._buffer_size <= self._low_water:
            self._protocol_paused = False
            self._protocol_callback("resume_writing")

    def _protocol_callback(self, name: str) -> None:
        try:
            getattr(self._protocol, name)()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": f"protocol.{name}() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )

    def _start(self, protocol: asyncio.Protocol) -> None:
        self._protocol = protocol
        self._made = True
        protocol.connection_made(self)

    # -- posted by the channel -------------------------------------------------------------------------

    def _on_connected(self, sockname: tuple[str, int]) -> None:
        waiter, self._waiter = self._waiter, None
        if self._closing or waiter is None or waiter.done():
            return  # the open was cancelled; its abort is on its way
        self._extra["sockname"] = sockname
        self._start(self._protocol)
        waiter.set_result(None)

    def _on_data(self, data: bytes) -> None:
        if self._closing:
            return  # as asyncio: nothing is read after close()
        self._call(self._channel.consumed, len(data))
        try:
            self._protocol.data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")

    def _on_eof(self) -> None:
        if self._closing:
            return
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    def _on_sent(self, count: int) -> None:
        if self._lost:
            return
        self._buffer_size -= count
        self._maybe_resume_protocol()

    def _on_lost(self, exc: OSError | None) -> None:
        self._connection_lost(exc)

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        self._loop.call_exception_handler(
            {"message": message, "exception": exc, "transport": self, "protocol": self._protocol}
        )
        self._force_close(None)

    def _connection_lost(self, exc: OSError | None) -> None:
        if self._lost:
            return
        self._lost = self._closing = True
        self._buffer_size = 0
        waiter, self._waiter = self._waiter, None
        if waiter is not None:  # the active open failed
            if not waiter.done():
                waiter.set_exception(exc if exc is not None else _error(errno.ECONNABORTED))
            return
        try:
            if self._made:
                self._protocol.connection_lost(exc)
        finally:
            server, self._server = self._server, None
            if server is not None:
                server._detach(self)


class Server(asyncio.AbstractServer):
    """A listening port on the stack, shaped like asyncio.Server: it serves from creation; ``close`` stops
    accepting (connections already open stay open); ``wait_closed`` returns once it is closed and every
    connection it accepted is lost."""

    def __init__(
        self,
        runtime: StackRuntime,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self._runtime = runtime
        self._loop = loop
        self._factory = protocol_factory
        self._acceptor = _Acceptor(runtime, self, loop)
        self._sockname: tuple[str, int] = ("0.0.0.0", 0)
        self._closed = False
        self._transports: set[StackTransport] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._serving_forever: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return (
            f"<pytcp.aio.Server {self._sockname[0]}:{self._sockname[1]}{' closed' if self._closed else ''}>"
        )

    def _open(self, host: str, port: int, backlog: int) -> None:
        # One section: the acceptor is registered before any connection to the port can arrive.
        self._sockname = self._runtime.run(self._acceptor.open, host, port, backlog)

    @property
    def sockets(self) -> tuple[Socket, ...]:
        """The listening pytcp.socket.Socket while serving (for getsockname()), () once closed."""
        return () if self._closed else (self._acceptor.sock,)

    def get_sockname(self) -> tuple[str, int]:
        return self._sockname

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return not self._closed

    async def start_serving(self) -> None:
        """A no-op: a Server accepts from creation (asyncio's start_serving=True)."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Synchronous, as asyncio closes its listening sockets: no connection is accepted after close().
        # A stopped runtime has closed the listener already (RuntimeNotRunning).
        try:
            self._runtime.run(self._acceptor.close)
        except OSError as exc:
            logger.debug("closing %r: %s", self, exc)
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()
        self._wake_waiters()

    def close_clients(self) -> None:
        for transport in list(self._transports):
            transport.close()

    def abort_clients(self) -> None:
        for transport in list(self._transports):
            transport.abort()

    async def wait_closed(self) -> None:
        if self._closed and not self._transports:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    async def serve_forever(self) -> None:
        """Wait until cancelled or closed; cancellation closes the server (as asyncio's)."""
        if self._serving_forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        self._serving_forever = self._loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    def _accept(self, transport: StackTransport) -> None:
        """Posted by the acceptor for each new connection: build its protocol, like asyncio's."""
        if self._closed:
            transport.abort()
            return
        try:
            protocol = self._factory()
        except Exception as exc:
            self._loop.call_exception_handler(
                {"message": "protocol factory failed", "exception": exc, "transport": transport}
            )
            transport.abort()
            return
        self._transports.add(transport)
        transport._server = self
        transport._start(protocol)

    def _detach(self, transport: StackTransport) -> None:
        self._transports.discard(transport)
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        if not self._closed or self._transports:
            return
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


# -- the asyncio-shaped entry points -----------------------------------------------------------------


async def create_connection(
    runtime: StackRuntime,
    protocol_factory: Callable[[], asyncio.Protocol],
    host: str,
    port: int,
    *,
    local_port: int = 0,
) -> tuple[StackTransport, asyncio.Protocol]:
    """Active open to ``host`` (a dotted quad) : ``port``, like loop.create_connection. Raises what a
    socket connect would: ConnectionRefusedError (RST), TimeoutError (SYN retries), OSError(EADDRNOTAVAIL)."""
    address, port = parse_endpoint((host, port))
    if not address:
        raise _error(errno.EADDRNOTAVAIL)  # as pytcp.socket: the wildcard leads nowhere
    loop = asyncio.get_running_loop()
    protocol = protocol_factory()
    transport = StackTransport(runtime, loop, (dotted(address), port))
    transport._protocol = protocol
    waiter = transport._waiter = loop.create_future()
    try:
        runtime.run(transport._channel.connect, address, port, local_port)
        await waiter
    except BaseException:
        waiter.cancel()  # nobody will read its outcome now
        transport.abort()  # a no-op when the open already failed
        raise
    return transport, protocol


async def create_server(
    runtime: StackRuntime,
    protocol_factory: Callable[[], asyncio.Protocol],
    host: str | None = None,
    port: int = 0,
    *,
    backlog: int = 128,
) -> Server:
    """Listen on ``port`` (0: an ephemeral port) of the stack's address (``host`` None, "", "0.0.0.0"
    or that address), like loop.create_server; ``protocol_factory`` runs for each connection."""
    server = Server(runtime, asyncio.get_running_loop(), protocol_factory)
    server._open(host or "", port, backlog)
    return server


async def open_connection(
    runtime: StackRuntime, host: str, port: int, *, limit: int = 2**16, local_port: int = 0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio.open_connection over the stack."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await create_connection(runtime, lambda: protocol, host, port, local_port=local_port)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def start_server(
    runtime: StackRuntime,
    client_connected_cb: ClientConnectedCallback,
    host: str | None = None,
    port: int = 0,
    *,
    backlog: int = 128,
    limit: int = 2**16,
) -> Server:
    """asyncio.start_server over the stack: ``client_connected_cb(reader, writer)`` for each connection,
    a coroutine function or a plain one (run as asyncio does)."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.Protocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await create_server(runtime, factory, host, port, backlog=backlog)
