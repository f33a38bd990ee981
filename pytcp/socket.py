"""A blocking socket API over the user-space stack, shaped like Python's ``socket`` module for TCP/IPv4.

Any thread may use a ``Socket``; every operation runs on the calling thread under the runtime's engine
lock through ``StackRuntime.run`` (as a Linux system call runs TCP under the socket lock: a send leaves
from the sending thread, with no hand-off to the loop thread) and, when it cannot complete yet, the
calling thread sleeps on the connection's Waiter until an event is dispatched for it (Connected,
DataReadable, Writable, IncomingConnection, PeerClosed, ConnectionReset, ConnectionFailed, Closed), then
tries again. Timeouts behave as Python's: ``settimeout(t)`` bounds each call (TimeoutError),
``setblocking(False)`` makes a call that would wait raise BlockingIOError (EAGAIN; EINPROGRESS for
connect). Errors are the usual OSError subclasses with Linux's errno and Linux's ordering: a reset or
timeout is reported once (ECONNRESET, ECONNREFUSED, ETIMEDOUT), after which send raises EPIPE and recv
returns b"". There is no SIGPIPE. There is no file descriptor either: ``fileno()`` is -1, so these
sockets cannot be passed to select(); use the asyncio layer for multiplexing.

Known differences from a kernel socket: only AF_INET/SOCK_STREAM; bind accepts the stack's own address
or the wildcard; SO_RCVBUF/SO_SNDBUF read back the size in effect (no doubling: the engine's buffers hold
payload only); SO_LINGER with a zero time aborts on close, any other linger closes in the background.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket as _socket
import struct
import time
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

from .addresses import dotted, parse_endpoint
from .config import ConfigError, check_knob
from .connection import Connection
from .state import CLOSED, SYN_RECEIVED, SYN_SENT

if TYPE_CHECKING:
    from .listener import Listener
    from .runtime import StackRuntime, Waiter

__all__ = ["Socket"]

T = TypeVar("T")
A = TypeVar("A")
R = TypeVar("R", bytes, int)

AF_INET: Final = _socket.AF_INET
SOCK_STREAM: Final = _socket.SOCK_STREAM
#: Linux's default net.ipv4.ip_local_port_range, from which bind(port 0) and listen() pick a port.
EPHEMERAL_PORTS: Final = range(32768, 61000)
#: The default listen() backlog of Python's socket.create_server / socketserver.
DEFAULT_BACKLOG: Final = 128
#: Message flags as plain ints: the socket module's are IntFlag members, whose arithmetic costs
#: microseconds per call on the send and recv path.
_MSG_DONTWAIT: Final = int(_socket.MSG_DONTWAIT)
_MSG_NOSIGNAL: Final = int(_socket.MSG_NOSIGNAL)
_LINGER = struct.Struct("ii")
_INT = struct.Struct("i")
_INT_RANGE: Final = (-(2**31), 2**31 - 1)
#: Options that mirror a TCPConfig knob, with the option's units per knob unit: their values must pass
#: the knob's bounds (Linux's MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT), else EINVAL.
_KNOB_OPTIONS: Final = {
    _socket.TCP_KEEPIDLE: ("keepalive_time", 1),
    _socket.TCP_KEEPINTVL: ("keepalive_intvl", 1),
    _socket.TCP_KEEPCNT: ("keepalive_probes", 1),
    _socket.TCP_USER_TIMEOUT: ("user_timeout", 1000),  # milliseconds, as Linux
}
_TCP_OPTIONS: Final = frozenset(
    {
        _socket.TCP_NODELAY,
        _socket.TCP_KEEPIDLE,
        _socket.TCP_KEEPINTVL,
        _socket.TCP_KEEPCNT,
        _socket.TCP_USER_TIMEOUT,
    }
)
_SOCKET_OPTIONS: Final = frozenset(
    {
        _socket.SO_KEEPALIVE,
        _socket.SO_RCVBUF,
        _socket.SO_SNDBUF,
        _socket.SO_REUSEADDR,
        _socket.SO_LINGER,
        _socket.SO_ERROR,
        _socket.SO_TYPE,
        _socket.SO_ACCEPTCONN,
    }
)
_READ_ONLY: Final = frozenset({_socket.SO_ERROR, _socket.SO_TYPE, _socket.SO_ACCEPTCONN})
_CONNECTING: Final = frozenset({SYN_SENT, SYN_RECEIVED})
_WILDCARD: Final = "0.0.0.0"


class _Block:
    """The operation must wait for an event."""

    __slots__ = ()


_BLOCK: Final = _Block()


def _nothing_to_read(conn: Connection) -> bool:
    """Whether a recv would block now: no bytes, no end of file, no error (read as a hint, without the
    engine lock). A DataReadable event follows any later arrival: recv re-arms it, and this is only
    ever asked after an attempt (the connection's waiter exists, see Socket._sleep_while)."""
    return not (conn.readable or conn.at_eof or conn.closed or conn.error is not None)


def _nothing_to_accept(listener: Listener) -> bool:
    """Whether accept would block now: the accept queue is empty (a hint, as _nothing_to_read)."""
    return not listener.accept_queue


def _error(code: int) -> OSError:
    """OSError(code) -- which Python turns into the matching subclass (ConnectionResetError, ...)."""
    return OSError(code, os.strerror(code))


class Socket:
    """A TCP/IPv4 socket on a StackRuntime (see the module docstring)."""

    def __init__(
        self, runtime: StackRuntime, family: int = AF_INET, type: int = SOCK_STREAM, proto: int = 0
    ) -> None:
        if family != AF_INET:
            raise OSError(errno.EAFNOSUPPORT, "pytcp sockets support AF_INET only")
        if type != SOCK_STREAM or proto not in (0, _socket.IPPROTO_TCP):
            raise OSError(errno.EPROTONOSUPPORT, "pytcp sockets support SOCK_STREAM (TCP) only")
        self._runtime = runtime
        self._conn: Connection | None = None
        self._listener: Listener | None = None
        self._port = 0  # bound, not yet listening or connected
        self._wildcard = True  # bound to 0.0.0.0 rather than the stack's address
        self._reported = False  # the connection's error was reported once (Linux clears sk_err)
        self._options: dict[tuple[int, int], int] = {}
        self._linger: tuple[int, int] = (0, 0)
        self._timeout: float | None = _socket.getdefaulttimeout()
        self._closed = False

    @classmethod
    def _accepted(cls, runtime: StackRuntime, conn: Connection, parent: Socket) -> Socket:
        sock = cls(runtime)
        sock._conn = conn
        # Its waiter now, inside accept's section: the first recv that would block can then sleep
        # without a section of its own (_sleep_while).
        runtime.watch(conn)
        # Linux children inherit the listener's options (sk_clone_lock copies the socket).
        sock._options = dict(parent._options)
        sock._linger = parent._linger
        for (level, name), value in sock._options.items():
            _set_option(conn, level, name, value)
        return sock

    def __repr__(self) -> str:
        if self._closed:
            return "<pytcp.Socket [closed]>"
        conn = self._conn
        if conn is not None:
            return f"<pytcp.Socket {conn!r}>"
        return f"<pytcp.Socket {'listening' if self._listener is not None else 'unconnected'} :{self._port}>"

    # -- the machinery -------------------------------------------------------------------------------

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        return self._runtime.run(fn, *args)

    def _check_open(self) -> None:
        if self._closed:
            raise _error(errno.EBADF)

    def _run(
        self,
        attempt: Callable[..., T | _Block],
        *args: object,
        wait: bool = True,
        idle: Callable[[Any], bool] | None = None,
    ) -> T:
        """Run ``attempt(*args)`` in a section until it stops returning _BLOCK, sleeping on the
        connection's (or listener's) Waiter in between, within the socket's timeout; ``wait=False``
        (MSG_DONTWAIT) or a non-blocking socket: EAGAIN instead of sleeping. Attempts are methods
        given their arguments, not closures: a closure costs an allocation per call on the data path.
        ``idle``: see ``_sleep_while``."""
        timeout = self._timeout if wait else 0.0
        deadline = None if timeout is None else time.monotonic() + timeout
        if idle is not None and timeout != 0.0 and not self._sleep_while(idle, deadline):
            raise TimeoutError("timed out")
        run = self._runtime.run
        while True:
            outcome: tuple[T | _Block, Waiter | None, int] = run(self._attempt, attempt, args)
            result, waiter, seen = outcome
            if result is not _BLOCK:
                return result  # type: ignore[return-value]
            if timeout == 0.0:
                raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
            assert waiter is not None
            if not waiter.wait(seen, deadline, self._running):
                raise TimeoutError("timed out")

    def _sleep_while(self, idle: Callable[[Any], bool], deadline: float | None) -> bool:
        """Before the first attempt, outside any section: sleep on the connection's (or listener's)
        Waiter while ``idle(conn or listener)`` says an attempt could only block (a request-response
        server's next recv, issued right after its reply, almost always finds nothing; so does a
        server's next accept), saving the section that would find nothing. The check reads engine
        state without the engine lock, as a hint: the generation is read first, so an event dispatched
        after that ends the sleep at once, and the state a section made ready is in place before its
        events bump the generation (``StackRuntime._leave``), so nothing that arrived earlier is
        missed. A waiter exists once the socket has blocked in a section (``watch``), or from accept
        on; before that, and when not idle, the attempts go ahead as usual. False on timeout."""
        key: object = self._conn if self._conn is not None else self._listener
        waiter = self._runtime.waiter(key) if key is not None else None
        if waiter is None:
            return True
        seen = waiter.generation
        if not idle(key):
            return True
        return waiter.wait(seen, deadline, self._running)

    def _running(self) -> bool:
        return self._runtime.running

    def _attempt(
        self, attempt: Callable[..., T | _Block], args: tuple[object, ...]
    ) -> tuple[T | _Block, Waiter | None, int]:
        """In a section: one try. The waiter's generation is read here, after the try and before any
        event that could unblock it is dispatched, so the caller never misses a wake-up."""
        self._check_open()
        result = attempt(*args)
        if result is not _BLOCK:
            return result, None, 0
        conn = self._conn
        key: object = conn if conn is not None else self._listener
        waiter = self._runtime.watch(key)
        return result, waiter, waiter.generation

    def _report(self, conn: Connection, exc: OSError | None = None) -> OSError | None:
        """The connection's error the first time it is reported, afterwards None (Linux sk_err is read
        once). ``exc``: what the engine raised, passed through unless it is that same error."""
        err = conn.error
        if exc is not None and exc.errno != err:
            return exc
        if err is None or self._reported:
            return None
        self._reported = True
        return _error(err)

    # -- connection setup ----------------------------------------------------------------------------

    def bind(self, address: tuple[str, int]) -> None:
        host, port = parse_endpoint(address)
        stack_address = self._runtime.stack.address
        if host not in (0, stack_address):
            raise _error(errno.EADDRNOTAVAIL)
        self._call(self._bind_now, host == 0, port)

    def _bind_now(self, wildcard: bool, port: int) -> None:
        self._check_open()
        if self._port or self._conn is not None or self._listener is not None:
            raise _error(errno.EINVAL)
        port = port or self._free_port()
        if self._port_in_use(port):
            raise _error(errno.EADDRINUSE)
        self._runtime.bound_ports.add(port)
        self._port, self._wildcard = port, wildcard

    def _port_in_use(self, port: int) -> bool:
        """Linux inet_csk_bind_conflict, simplified: a bound or listening socket always conflicts; other
        connections on the port do unless SO_REUSEADDR is set."""
        runtime = self._runtime
        if port in runtime.bound_ports or any(lst.port == port for lst in runtime.stack.listeners()):
            return True
        if self._options.get((_socket.SOL_SOCKET, _socket.SO_REUSEADDR)):
            return False
        return any(conn.local_port == port for conn in runtime.stack.connections())

    def _free_port(self) -> int:
        """A free port from a random point of the ephemeral range (RFC 6056 3.3.1), scanning once round."""
        span = len(EPHEMERAL_PORTS)
        start = secrets.randbelow(span)
        for offset in range(span):
            port = EPHEMERAL_PORTS[(start + offset) % span]
            if not self._port_in_use(port):
                return port
        raise _error(errno.EADDRINUSE)

    def listen(self, backlog: int = DEFAULT_BACKLOG) -> None:
        self._call(self._listen_now, max(0, backlog))

    def _listen_now(self, backlog: int) -> None:
        self._check_open()
        if self._listener is not None:
            return  # Linux: listen() again only changes the backlog, which this stack fixes at creation
        if self._conn is not None:
            raise _error(errno.EINVAL)
        if not self._port:
            self._bind_now(True, 0)
        self._listener = self._runtime.stack.listen(self._port, backlog)

    def accept(self) -> tuple[Socket, tuple[str, int]]:
        self._check_open()
        sock = self._run(self._accept_now, idle=_nothing_to_accept)
        conn = sock._conn
        assert conn is not None
        return sock, (dotted(conn.remote_addr), conn.remote_port)

    def _accept_now(self) -> Socket | _Block:
        listener = self._listener
        if listener is None:
            raise _error(errno.EINVAL)
        conn = self._runtime.stack.accept(listener)
        if conn is None:
            return _BLOCK
        return Socket._accepted(self._runtime, conn, self)

    def connect(self, address: tuple[str, int]) -> None:
        host, port = parse_endpoint(address)
        if not host:
            raise _error(errno.EADDRNOTAVAIL)  # no loopback through the device: the wildcard leads nowhere
        if not port:
            raise _error(errno.ECONNREFUSED)  # Linux sends the SYN and the peer resets it
        self._check_open()
        first = [True]

        def attempt() -> _Block | None:
            was_first, first[0] = first[0], False
            return self._connect_now(host, port, was_first)

        self._run(attempt)

    def connect_ex(self, address: tuple[str, int]) -> int:
        """connect() returning the errno instead of raising (0 on success; EAGAIN on timeout, as
        CPython's connect_ex)."""
        try:
            self.connect(address)
        except _socket.gaierror:
            raise  # as CPython: resolution errors are raised, not returned
        except TimeoutError as exc:
            return exc.errno or errno.EAGAIN
        except OSError as exc:
            if exc.errno is None:
                raise
            return exc.errno
        return 0

    def _connect_now(self, host: int, port: int, first: bool) -> _Block | None:
        conn = self._conn
        if self._listener is not None:
            raise _error(errno.EISCONN)
        if conn is not None and conn.state is CLOSED:
            error = self._report(conn)
            if error is not None:
                raise error  # the outcome of an earlier non-blocking attempt
            if not first:
                raise _error(errno.ECONNABORTED)
            conn = self._conn = None  # Linux: connect() on a failed socket tries again
        if conn is None:
            runtime = self._runtime
            local_port = self._port
            conn = runtime.stack.connect(host, port, runtime.now, local_port=local_port)
            runtime.bound_ports.discard(local_port)
            self._conn, self._port, self._reported = conn, 0, False
            for (level, name), value in self._options.items():
                _set_option(conn, level, name, value)
            if self._timeout == 0.0:
                raise BlockingIOError(errno.EINPROGRESS, os.strerror(errno.EINPROGRESS))
            return _BLOCK
        if conn.state in _CONNECTING:
            if first and self._timeout is not None:
                raise _error(errno.EALREADY)  # Linux, for a non-blocking socket (CPython's timeouts)
            return _BLOCK
        if first:
            raise _error(errno.EISCONN)
        return None

    # -- data ----------------------------------------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int:
        wait = self._flags(flags, _MSG_NOSIGNAL)
        self._check_open()
        return self._run(self._send_now, memoryview(data).cast("B"), wait=wait)

    def _send_now(self, view: memoryview) -> int | _Block:
        return self._send_some(view) or (_BLOCK if view else 0)

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        """Send everything or raise; the timeout bounds the whole call, as in Python 3.5+."""
        wait = self._flags(flags, _MSG_NOSIGNAL)
        self._check_open()
        self._run(self._send_rest, [memoryview(data).cast("B")], wait=wait)

    def _send_rest(self, rest: list[memoryview]) -> _Block | None:
        """sendall's attempt: ``rest[0]`` is what is left to send."""
        view = rest[0] = rest[0][self._send_some(rest[0]) :]
        return _BLOCK if view else None

    def _send_some(self, view: memoryview) -> int:
        """In a section: what the send buffer takes of ``view`` now (0 when full)."""
        conn = self._conn
        if conn is None:
            raise _error(errno.EPIPE)  # Linux: sending on an unconnected TCP socket
        try:
            return conn.send(view, self._runtime.now)
        except OSError as exc:
            raise self._report(conn, exc) or _error(errno.EPIPE) from None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        wait = self._flags(flags)
        self._check_open()
        if not bufsize:
            return b""
        data: bytes = self._run(self._read, Connection.recv, bufsize, b"", wait=wait, idle=_nothing_to_read)
        return data

    def recv_into(self, buffer: bytearray | memoryview, nbytes: int = 0, flags: int = 0) -> int:
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        view = memoryview(buffer).cast("B")
        if nbytes > len(view):
            raise ValueError("buffer too small for requested bytes")
        if nbytes:
            view = view[:nbytes]
        wait = self._flags(flags)
        self._check_open()
        if not view:
            return 0
        count: int = self._run(self._read, Connection.recv_into, view, 0, wait=wait, idle=_nothing_to_read)
        return count

    def _read(self, read: Callable[[Connection, A, float], R], arg: A, empty: R) -> R | _Block:
        """In a section: ``read(conn, arg, now)``; the connection's error once, then end of file (Linux)."""
        conn = self._conn
        if conn is None:
            raise _error(errno.ENOTCONN)
        try:
            data = read(conn, arg, self._runtime.now)
        except OSError as exc:
            error = self._report(conn, exc)
            if error is not None:
                raise error from None
            return empty
        if data or conn.at_eof or conn.closed:
            return data
        return _BLOCK

    @staticmethod
    def _flags(flags: int, allowed: int = 0) -> bool:
        """Whether the call may wait: MSG_DONTWAIT makes it non-blocking; other flags are unsupported."""
        if flags & ~(allowed | _MSG_DONTWAIT):
            raise OSError(errno.EOPNOTSUPP, f"flags {flags:#x} are not supported by pytcp sockets")
        return not flags & _MSG_DONTWAIT

    # -- closing -------------------------------------------------------------------------------------

    def shutdown(self, how: int) -> None:
        if how not in (_socket.SHUT_RD, _socket.SHUT_WR, _socket.SHUT_RDWR):
            raise _error(errno.EINVAL)
        self._check_open()
        self._call(self._shutdown_now, how)

    def _shutdown_now(self, how: int) -> None:
        self._check_open()
        conn = self._conn
        if conn is None:
            raise _error(errno.ENOTCONN)
        conn.shutdown(how, self._runtime.now)
        # Threads blocked in recv on this socket see the end of file now.
        self._runtime.notify(self._runtime.watch(conn))

    def close(self) -> None:
        """Release the socket: graceful close (FIN), or RST with SO_LINGER 0 or unread data (Linux).
        Idempotent; never blocks on the network."""
        if self._closed:
            return
        try:
            self._call(self._close_now)
        except OSError as exc:
            if exc.errno != errno.ENETDOWN:
                raise
            self._closed = True  # the runtime is gone, and the connections with it

    def _close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        runtime = self._runtime
        stack, now = runtime.stack, runtime.now
        runtime.bound_ports.discard(self._port)
        listener, conn = self._listener, self._conn
        if listener is not None:
            stack.close_listener(listener, now)
            runtime.notify(runtime.watch(listener))
            runtime.unwatch(listener)
        if conn is not None:
            if self._linger == (1, 0):
                conn.abort(now)
            else:
                conn.close(now)
            if conn.state is not CLOSED:
                # Wake threads still blocked on this socket (they get EBADF), then let it go.
                runtime.notify(runtime.watch(conn))
                runtime.unwatch(conn)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # As Python's socket: an unclosed socket warns and is closed (here without waiting for the loop).
        # One whose __init__ failed has no runtime (None in the compiled form, absent in the source's).
        runtime = getattr(self, "_runtime", None)
        if runtime is None or self._closed or not runtime.running:
            return
        warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2)
        runtime.call(self._close_now)

    # -- options and addresses -----------------------------------------------------------------------

    def setsockopt(
        self, level: int, optname: int, value: int | bytes | None, optlen: int | None = None
    ) -> None:
        if value is None or optlen is not None:
            raise _error(errno.EINVAL)  # the 4-argument NULL form sets nothing TCP uses
        if optname == _socket.SO_LINGER and level == _socket.SOL_SOCKET:
            if not isinstance(value, bytes) or len(value) != _LINGER.size:
                raise _error(errno.EINVAL)
            onoff, seconds = _LINGER.unpack(value)
            self._check_open()
            self._linger = (1 if onoff else 0, seconds if onoff else 0)
            return
        number = _INT.unpack(value)[0] if isinstance(value, bytes) and len(value) == _INT.size else value
        if not isinstance(number, int):
            raise _error(errno.EINVAL)
        _check_option(level, optname)
        if level == _socket.SOL_SOCKET and optname in _READ_ONLY:
            raise _error(errno.ENOPROTOOPT)
        low, high = _INT_RANGE
        if not low <= number <= high:
            raise _error(errno.EINVAL)
        if level == _socket.IPPROTO_TCP and optname in _KNOB_OPTIONS:
            try:
                check_knob(*_knob_value(optname, number))
            except ConfigError:
                raise _error(errno.EINVAL) from None
        self._call(self._setsockopt_now, level, optname, number)

    def _setsockopt_now(self, level: int, optname: int, value: int) -> None:
        self._check_open()
        conn = self._conn
        if conn is not None:
            _set_option(conn, level, optname, value)
        self._options[(level, optname)] = value

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> int | bytes:
        if optname == _socket.SO_LINGER and level == _socket.SOL_SOCKET:
            self._check_open()
            return _LINGER.pack(*self._linger)
        _check_option(level, optname)
        self._check_open()
        value = self._call(self._getsockopt_now, level, optname)
        return value if buflen is None else _INT.pack(value)[:buflen]

    def _getsockopt_now(self, level: int, optname: int) -> int:
        self._check_open()
        conn = self._conn
        if level == _socket.SOL_SOCKET:
            if optname == _socket.SO_ERROR:
                error = self._report(conn) if conn is not None else None
                return 0 if error is None else error.errno or 0
            if optname == _socket.SO_TYPE:
                return SOCK_STREAM
            if optname == _socket.SO_ACCEPTCONN:
                return int(self._listener is not None)
        if conn is not None and (level, optname) != (_socket.SOL_SOCKET, _socket.SO_REUSEADDR):
            return _get_option(conn, level, optname)
        stored = self._options.get((level, optname))
        return stored if stored is not None else _default_option(self._runtime, level, optname)

    def getsockname(self) -> tuple[str, int]:
        self._check_open()
        conn = self._conn
        if conn is not None:
            return dotted(conn.local_addr), conn.local_port
        port = self._listener.port if self._listener is not None else self._port
        if not port or self._wildcard:
            return _WILDCARD, port
        return dotted(self._runtime.stack.address), port

    def getpeername(self) -> tuple[str, int]:
        self._check_open()
        conn = self._conn
        if conn is None or conn.state in _CONNECTING or conn.state is CLOSED:
            raise _error(errno.ENOTCONN)
        return dotted(conn.remote_addr), conn.remote_port

    # -- timeouts and identity -----------------------------------------------------------------------

    def settimeout(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    @property
    def timeout(self) -> float | None:
        return self._timeout

    @property
    def family(self) -> int:
        return AF_INET

    @property
    def type(self) -> int:
        return SOCK_STREAM

    @property
    def proto(self) -> int:
        return _socket.IPPROTO_TCP

    def fileno(self) -> int:
        """-1: the connection lives in user space and has no kernel file descriptor."""
        return -1

    @property
    def connection(self) -> Connection | None:
        """The engine's connection (touch it only in a section), for diagnostics such as info()."""
        return self._conn


def _check_option(level: int, optname: int) -> None:
    if level == _socket.IPPROTO_TCP and optname in _TCP_OPTIONS:
        return
    if level == _socket.SOL_SOCKET and optname in _SOCKET_OPTIONS:
        return
    raise _error(errno.ENOPROTOOPT)


def _set_option(conn: Connection, level: int, optname: int, value: int) -> None:
    """Apply one stored option to the engine's connection (in a section)."""
    if level == _socket.SOL_SOCKET:
        if optname == _socket.SO_KEEPALIVE:
            conn.keepalive = bool(value)
        elif optname == _socket.SO_RCVBUF:
            conn.set_buffer_sizes(recv=max(1, value))  # Linux clamps rather than refusing
        elif optname == _socket.SO_SNDBUF:
            conn.set_buffer_sizes(send=max(1, value))
        return  # SO_REUSEADDR only matters to bind
    if optname == _socket.TCP_NODELAY:
        conn.nodelay = bool(value)
    else:
        setattr(conn, *_knob_value(optname, value))


def _knob_value(optname: int, value: int) -> tuple[str, float]:
    """The connection attribute (named as its TCPConfig knob) an option sets, and the value in its units."""
    name, scale = _KNOB_OPTIONS[optname]
    return name, value / scale if scale != 1 else value


def _get_option(conn: Connection, level: int, optname: int) -> int:
    if level == _socket.SOL_SOCKET:
        if optname == _socket.SO_KEEPALIVE:
            return int(conn.keepalive)
        if optname == _socket.SO_RCVBUF:
            rcv = conn.rcv
            return rcv.capacity if rcv is not None else conn.config.recv_buffer
        return conn.snd.capacity
    if optname == _socket.TCP_NODELAY:
        return int(conn.nodelay)
    name, scale = _KNOB_OPTIONS[optname]
    value: float = getattr(conn, name)
    return round(value * scale)


def _default_option(runtime: StackRuntime, level: int, optname: int) -> int:
    """An option's value before a connection exists: the stack's configuration (Linux sysctls)."""
    config = runtime.stack.config
    if level == _socket.SOL_SOCKET:
        defaults = {
            _socket.SO_KEEPALIVE: int(config.keepalive),
            _socket.SO_RCVBUF: config.recv_buffer,
            _socket.SO_SNDBUF: config.send_buffer,
        }
        return defaults.get(optname, 0)
    if optname == _socket.TCP_NODELAY:
        return int(config.nodelay)
    name, scale = _KNOB_OPTIONS[optname]
    value: float = getattr(config, name)
    return round(value * scale)
