"""The forwarder (tun2socks style): every TCP flow routed into the TUN device ends in our stack and is
relayed over an ordinary kernel socket to its original destination, directly or through a SOCKS5 proxy.

Python API::

    runtime = StackRuntime.open("pf0", ...).start()
    forwarder = Forwarder(runtime, upstream="direct" or "socks5://198.19.1.1:1080").start()
    forwarder.flows()     # one dict per flow: state, client, target, upstream, age, idle, bytes each way
    forwarder.counters()  # requests, accepted, refused, timeouts, resets, reaped, bytes ...
    forwarder.stop()      # every flow is reset on both sides; then stop the runtime

``topology()`` brings up a complete test or benchmark network in namespaces it creates (see there).

How a flow is opened: the stack runs in promiscuous mode (``Stack.listen_any``); a client's SYN becomes a
ConnectRequest and is not answered. The forwarder connects upstream first (non-blocking, bounded by
``connect_timeout``) and only then accepts the request, so the client's connect() succeeds only if the
far end accepted: a refusal reaches the client as a RST (ECONNREFUSED), unreachable destinations and
timeouts as ICMP unreachable (EHOSTUNREACH / ENETUNREACH), never as accept-then-close. SOCKS5 reply codes
map the same way (Reply.CONNECTION_REFUSED -> RST, the others -> ICMP). Meanwhile the client's SYN
retransmissions are absorbed by the stack.

How bytes move: all I/O runs on the runtime's loop thread, without a thread per flow. Upstream sockets
sit in one edge-triggered epoll set whose fd the runtime polls next to the TUN device (add_reader);
stack events (DataReadable, Writable, PeerClosed, resets) arrive through an event listener. Each direction
reads only while the other side has room: upstream bytes are read no faster than the stack's send buffer
drains, client bytes stay in the stack's receive buffer (closing its window) while the upstream socket's
send buffer is full. Per flow, at most one partial chunk waits in user space per direction.

Closing: a FIN from either side becomes shutdown(SHUT_WR) on the other; when both directions have ended
the upstream socket is closed and the stack connection is closed (it finishes its FIN handshake alone).
The stack connection may end first, in an orderly way, while client bytes still wait for a slow
upstream: they stay readable (as in a kernel socket), and the flow drains them before it half-closes
upstream.
A RST or a failure on one side aborts the other (SO_LINGER 0 on the kernel side, a RST from the stack).
Idle flows (``idle_timeout``) and flows half-closed and idle for ``half_close_timeout`` are reset on
both sides. Beyond ``max_sessions`` flows new SYNs are dropped, and the clients retry.

MSS: the stack announces at most the TUN MTU minus 40 (StackRuntime.open clamps it), the path every
client segment takes; the kernel side finds its own path MTU.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any, Self, TypeVar

from .addresses import dotted
from .config import TCPConfig
from .connection import Connection
from .events import (
    Closed,
    ConnectionFailed,
    ConnectionReset,
    ConnectRequest,
    DataReadable,
    Event,
    IncomingConnection,
    PeerClosed,
    Writable,
)
from .listener import InterceptListener, Refusal
from .netns import NamespaceSwitch, NetNamespace, run_ip, veth_pair
from .runtime import RuntimeNotRunning, StackRuntime
from .socks5 import Reply, Socks5Connect, Socks5Error, Socks5Proxy

__all__ = ["Forwarder", "ForwarderCounters", "Topology", "parse_upstream", "topology"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Flows at once: each pins up to the stack's two buffers (2 x 256 KiB by default), the kernel socket's
#: and two relay chunks, ~0.6 MiB when every buffer is full, so 1024 flows stay under ~640 MiB.
MAX_SESSIONS = 1024
#: Seconds without a byte either way before a flow is reset: 5 minutes, the order of NAT gateways'
#: TCP idle timeouts (AWS NAT gateway: 350 s), long enough for interactive sessions between keystrokes.
IDLE_TIMEOUT = 300.0
#: Seconds a half-closed flow may stay idle: Linux conntrack's nf_conntrack_tcp_timeout_close_wait (60 s).
HALF_CLOSE_TIMEOUT = 60.0
#: Seconds for the upstream connect (and SOCKS5 negotiation): a client's connect() has by then sent its
#: SYN four times (at 0, 1, 3 and 7 s, Linux's RTO doubling), and most clients give up around here.
CONNECT_TIMEOUT = 10.0
#: Extra life of a stack request past the connect timeout, so the forwarder's own timeout always
#: decides (and answers); the stack's expiry only catches a request the forwarder lost.
REQUEST_GRACE = 5.0
#: Bytes per read on either side: one shared buffer, the stack's default send/receive buffer (256 KiB),
#: so one call can move a whole buffer; it also bounds what waits per flow for a full kernel socket.
RELAY_CHUNK = 262144
#: Smallest upstream read when the stack's send buffer is (nearly) full: reading something it cannot
#: take is the only way to be told when it drains (Writable), so this bounds that leftover per flow.
MIN_READ = 16384
#: Upstream sockets handled per wake-up: more stay ready in the epoll set, and the runtime's poll comes
#: straight back, so the TUN device and timers get their turn in between.
MAX_READY = 256
#: How often timeouts are checked: they are enforced within this many seconds of their deadline.
TICK = 1.0
#: SOCKS5 negotiation bytes read per call: the longest reply (262 bytes) fits; more is stream data.
SOCKS_READ = 512
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST (RFC 9293 3.10.5 ABORT)
_EPOLL_MASK = select.EPOLLIN | select.EPOLLPRI | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
_READABLE = select.EPOLLIN | select.EPOLLPRI | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
#: Edges after which a short read does not mean the socket is empty: nothing more will arrive after the
#: data (FIN, error), or urgent data is pending, at whose mark Linux tcp_recvmsg ends a read early.
_READ_ALL = select.EPOLLPRI | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
SO_MARK = getattr(socket, "SO_MARK", 36)  # include/uapi/asm-generic/socket.h

#: A failed upstream connect -> what the client is told. ECONNREFUSED is a RST, as from the target
#: itself; the rest are what a router would send (RFC 1812 4.3.2.3), Linux's icmp_err_convert backwards.
_ERRNO_REFUSALS = {
    errno.ECONNREFUSED: Refusal.RESET,
    errno.ENETUNREACH: Refusal.NET_UNREACHABLE,
    errno.EHOSTUNREACH: Refusal.HOST_UNREACHABLE,
    errno.EHOSTDOWN: Refusal.HOST_UNREACHABLE,
    errno.ETIMEDOUT: Refusal.HOST_UNREACHABLE,
    errno.EACCES: Refusal.PROHIBITED,
    errno.EPERM: Refusal.PROHIBITED,
}
#: SOCKS5 reply codes (RFC 1928 6) -> what the client is told. Failures of the proxy itself (general
#: failure, unsupported command or address type) are the gateway not reaching the host.
_SOCKS_REFUSALS: dict[int, Refusal] = {
    Reply.CONNECTION_REFUSED: Refusal.RESET,
    Reply.NETWORK_UNREACHABLE: Refusal.NET_UNREACHABLE,
    Reply.NOT_ALLOWED: Refusal.PROHIBITED,
}


def parse_upstream(text: str) -> Socks5Proxy | None:
    """``direct`` -> None; ``socks5://[user:password@]address:port`` -> the proxy. ValueError otherwise."""
    if text == "direct":
        return None
    return Socks5Proxy.parse(text)


class FlowState(enum.Enum):
    CONNECTING = "connecting"  # upstream TCP connect in progress; the client's SYN unanswered
    NEGOTIATING = "socks5"  # SOCKS5 CONNECT in progress; the client's SYN unanswered
    OPEN = "open"  # accepted: relaying (the client's handshake may still be completing)


@dataclass(slots=True)
class ForwarderCounters:
    requests: int = 0  # SYNs the stack handed over
    accepted: int = 0  # upstream reached, SYN-ACK sent
    refused: int = 0  # answered RST or ICMP: the upstream refused, was unreachable or timed out
    connect_timeouts: int = 0  # of those, the upstream connect (or SOCKS5 negotiation) timed out
    proxy_failures: int = 0  # of those, the SOCKS5 proxy failed or refused
    session_limit_drops: int = 0  # SYNs dropped at max_sessions
    loops: int = 0  # SYNs from our own upstream sockets (their route leads back into the TUN): reset
    completed: int = 0  # both directions ended with FIN
    client_resets: int = 0  # the client reset or timed out: upstream aborted
    upstream_resets: int = 0  # the upstream reset or failed: client aborted
    idle_reaped: int = 0
    half_close_reaped: int = 0
    bytes_up: int = 0  # client -> upstream
    bytes_down: int = 0  # upstream -> client


@dataclass(slots=True, eq=False)
class _Flow:
    conn: Connection
    sock: socket.socket
    created: float
    deadline: float  # of the upstream connect / negotiation
    state: FlowState = FlowState.CONNECTING
    last_active: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    up_pending: bytes = b""  # client bytes the upstream socket did not take yet
    down_pending: bytes = b""  # upstream bytes the stack's send buffer did not take yet
    up_readable: bool = False  # the upstream socket may hold data (edge-triggered epoll)
    up_read_all: bool = False  # an edge in _READ_ALL came: read on until recv says EAGAIN or EOF
    up_shut: bool = False  # client FIN passed on: shutdown(SHUT_WR) upstream
    down_shut: bool = False  # upstream EOF passed on: our FIN queued to the client
    own: tuple[str, int] | None = None  # our upstream socket's endpoint while it connects
    socks: Socks5Connect | None = None
    closed: bool = False


class Forwarder:
    """Relays every TCP flow entering ``runtime``'s TUN device; see the module docstring.

    ``upstream``: "direct", "socks5://...", or a parsed Socks5Proxy. Upstream sockets are created in
    network namespace ``netns`` (default: the caller's), bound to ``interface`` (SO_BINDTODEVICE) and
    marked with ``mark`` (SO_MARK) if given: the ways to keep them from being routed back into the TUN
    (a SYN that comes back anyway is detected and reset). With ``icmp`` False every refusal is a RST.
    """

    def __init__(
        self,
        runtime: StackRuntime,
        upstream: str | Socks5Proxy | None = "direct",
        *,
        max_sessions: int = MAX_SESSIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        half_close_timeout: float = HALF_CLOSE_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        icmp: bool = True,
        netns: NetNamespace | str | None = None,
        interface: str | None = None,
        mark: int | None = None,
    ) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        for name, value in (
            ("idle_timeout", idle_timeout),
            ("half_close_timeout", half_close_timeout),
            ("connect_timeout", connect_timeout),
        ):
            if not 0 < value < float("inf"):
                raise ValueError(f"{name} must be > 0 and finite, got {value}")
        self._runtime = runtime
        self._proxy = parse_upstream(upstream) if isinstance(upstream, str) else upstream
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.half_close_timeout = half_close_timeout
        self.connect_timeout = connect_timeout
        self._icmp = icmp
        self._netns = netns.name if isinstance(netns, NetNamespace) else netns
        self._switch: NamespaceSwitch | None = None  # into _netns, made on the loop thread
        self._interface = interface
        self._mark = mark
        self._counters = ForwarderCounters()
        self._flows: dict[Connection, _Flow] = {}
        self._by_fd: dict[int, _Flow] = {}
        #: Endpoints of our upstream sockets still connecting: a request from one of them is a loop.
        self._own: dict[tuple[str, int], _Flow] = {}
        self._view = memoryview(bytearray(RELAY_CHUNK))  # shared: one flow is relayed at a time
        self._epoll: select.epoll | None = None
        self._listener: InterceptListener | None = None
        self._stopped = threading.Event()
        self._ticker: threading.Thread | None = None
        #: Stack events by type; the others (Connected) need nothing from us.
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            ConnectRequest: self._on_request_event,
            IncomingConnection: self._on_incoming,
            DataReadable: self._on_client_readable,
            PeerClosed: self._on_client_readable,
            Writable: self._on_client_writable,
            ConnectionReset: self._on_client_gone,
            ConnectionFailed: self._on_client_gone,
            Closed: self._on_client_gone,
        }

    def __repr__(self) -> str:
        return f"Forwarder({self.upstream}, {len(self._flows)} flows)"

    @property
    def upstream(self) -> str:
        return str(self._proxy) if self._proxy is not None else "direct"

    # -- lifetime ------------------------------------------------------------------------------------

    def start(self, timeout: float = 5.0) -> Self:
        """Put the stack in promiscuous mode and start relaying; the runtime must be running."""
        if self._epoll is not None:
            raise RuntimeError("a Forwarder starts once")
        self._runtime.call(self._start).result(timeout)
        self._ticker = threading.Thread(target=self._tick_loop, name="pytcp-forwarder-tick", daemon=True)
        self._ticker.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Reset every flow on both sides and leave promiscuous mode. Idempotent. Stop the forwarder
        before the runtime: the runtime's own stop would close the flows' client sides with a FIN, a
        clean end of stream the upstream never sent."""
        self._stopped.set()
        if self._ticker is not None:
            self._ticker.join(timeout)
        try:
            self._runtime.call(self._shutdown).result(timeout)
        except RuntimeNotRunning:
            self._close_sockets()  # the loop is gone, and the stack with it: only our sockets are left

    def __enter__(self) -> Self:
        return self if self._epoll is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading the state (any thread) ------------------------------------------------------------

    def flows(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """One row per flow: state, client and target endpoints, upstream, age and idle seconds, bytes."""
        return self._on_loop(self._flow_rows, timeout)

    def counters(self, timeout: float = 5.0) -> dict[str, int]:
        """ForwarderCounters plus the number of flows now (``active``)."""
        return self._on_loop(self._counter_snapshot, timeout)

    def _on_loop(self, fn: Callable[[], T], timeout: float) -> T:
        if self._runtime.running and not self._runtime.on_loop_thread():
            return self._runtime.call(fn).result(timeout)
        return fn()

    def _flow_rows(self) -> list[dict[str, Any]]:
        now = self._runtime.now
        rows = []
        for flow in self._flows.values():
            conn = flow.conn
            state = flow.state.value
            if flow.up_shut != flow.down_shut:
                state = "client closed" if flow.up_shut else "upstream closed"
            if self._proxy is None:
                host, port = flow.sock.getsockname()[:2]
                via = f"{host}:{port}"
            else:
                via = str(self._proxy)
            rows.append(
                {
                    "state": state,
                    "local": f"{dotted(conn.remote_addr)}:{conn.remote_port}",
                    "remote": f"{dotted(conn.local_addr)}:{conn.local_port}",
                    "upstream": via,
                    "tcp": conn.state.value,
                    "age": round(now - flow.created, 3),
                    "idle": round(now - flow.last_active, 3),
                    "bytes_up": flow.bytes_up,
                    "bytes_down": flow.bytes_down,
                }
            )
        return rows

    def _counter_snapshot(self) -> dict[str, int]:
        return {**asdict(self._counters), "active": len(self._flows)}

    # -- loop thread: setup and teardown -------------------------------------------------------------

    def _start(self) -> None:
        runtime = self._runtime
        self._epoll = select.epoll()
        try:
            if self._netns is not None:
                # Made here: it returns to the loop thread's own namespace.
                self._switch = NamespaceSwitch(self._netns)
            # max_sessions is ours to apply, to every request; the stack's bounds stay as wide as its
            # config allows: max_syn_backlog requests in flight, somaxconn handshakes completed between
            # two event dispatches (one wake-up of the loop may complete many). Its request expiry
            # backs up our connect timeout.
            config = runtime.stack.config
            self._listener = runtime.stack.listen_any(
                config.somaxconn, request_timeout=self.connect_timeout + REQUEST_GRACE
            )
        except BaseException:
            self._close_sockets()
            raise
        runtime.add_reader(self._epoll.fileno(), self._on_ready)
        runtime.add_event_listener(self._on_event)

    def _shutdown(self) -> None:
        for flow in list(self._flows.values()):
            self._abort(flow)
        runtime = self._runtime
        runtime.remove_event_listener(self._on_event)
        if self._epoll is not None and not self._epoll.closed:
            runtime.remove_reader(self._epoll.fileno())
        if self._listener is not None:
            runtime.stack.close_listener(self._listener, runtime.now)
            self._listener = None
        self._close_sockets()

    def _close_sockets(self) -> None:
        for flow in list(self._flows.values()):
            self._release(flow, reset=True)
        if self._epoll is not None:
            self._epoll.close()
        if self._switch is not None:
            self._switch.close()

    def _tick_loop(self) -> None:
        while not self._stopped.wait(TICK):
            if not self._runtime.running:
                return
            self._runtime.call(self._tick).add_done_callback(_log_failure)

    # -- loop thread: stack events -------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _on_request_event(self, event: ConnectRequest) -> None:
        if event.listener is self._listener:
            self._on_request(event.conn)

    def _on_incoming(self, event: IncomingConnection) -> None:
        listener = self._listener
        if listener is not None and event.listener is listener:
            stack = self._runtime.stack
            # The flow holds the connection already; the accept queue only has to stay short.
            while stack.accept(listener) is not None:
                pass

    def _on_client_readable(self, event: DataReadable | PeerClosed) -> None:
        flow = self._flows.get(event.conn)
        if flow is not None:
            self._pump_up(flow)

    def _on_client_writable(self, event: Writable) -> None:
        flow = self._flows.get(event.conn)
        if flow is not None:
            self._pump_down(flow)

    def _on_client_gone(self, event: ConnectionReset | ConnectionFailed | Closed) -> None:
        flow = self._flows.get(event.conn)
        if flow is None:
            return
        if flow.state is FlowState.OPEN:
            if isinstance(event, Closed) and flow.down_shut:
                # An orderly end (a reset or a give-up would have come first and ended the flow): our
                # FIN went out and was acknowledged, and the client's came in, while upstream was
                # still slow to take the client's bytes. The stack keeps unread bytes readable after
                # an orderly end, as Linux does for a socket its application has not closed: the up
                # direction drains on as upstream takes them, then half-closes upstream.
                self._pump_up(flow)
                return
            # A reset or a give-up on the client side, or a Closed before our FIN went out (the runtime
            # stopping): the flow fails.
            self._client_failed(flow)
        else:
            # Only Closed reaches a request: it expired or the listener closed. Nothing to answer.
            self._release(flow, reset=True)

    def _on_request(self, conn: Connection) -> None:
        counters, stack, now = self._counters, self._runtime.stack, self._runtime.now
        counters.requests += 1
        loop = self._own.get((dotted(conn.remote_addr), conn.remote_port))
        if loop is not None:
            # Our own upstream SYN came back through the TUN: refuse it, which fails that upstream
            # connect with ECONNREFUSED and so its flow's client with a RST.
            counters.loops += 1
            stack.refuse_request(conn, now, Refusal.RESET)
            return
        if len(self._flows) >= self.max_sessions:
            counters.session_limit_drops += 1
            stack.refuse_request(conn, now, Refusal.DROP)
            return
        proxy = self._proxy
        target = (proxy.host, proxy.port) if proxy is not None else (dotted(conn.local_addr), conn.local_port)
        try:
            sock = self._upstream_socket()
        except OSError as exc:
            logger.warning("cannot open an upstream socket: %s", exc)
            self._refuse_conn(conn, _ERRNO_REFUSALS.get(exc.errno or 0, Refusal.RESET))
            return
        flow = _Flow(conn, sock, now, now + self.connect_timeout, last_active=now)
        result = sock.connect_ex(target)
        if result not in (0, errno.EINPROGRESS):
            sock.close()
            self._refuse_conn(conn, _ERRNO_REFUSALS.get(result, Refusal.RESET))
            return
        assert self._epoll is not None
        fd = sock.fileno()
        self._epoll.register(fd, _EPOLL_MASK)
        self._flows[conn] = flow
        self._by_fd[fd] = flow
        # On a local path (veth, loopback) the handshake often completes inside connect() itself, its
        # packets handled in softirq on the way out: then answer the client now, in this pass, rather
        # than on the next wake-up. (Whatever the socket has already received, the registration above
        # has reported to the epoll set.)
        try:
            sock.getpeername()
        except OSError:
            # Still connecting: EPOLLOUT (or EPOLLERR) will tell. Until then a SYN from our endpoint,
            # read from the TUN on a later pass, is a loop.
            with contextlib.suppress(OSError):
                flow.own = sock.getsockname()[:2]
                self._own[flow.own] = flow
            return
        self._upstream_connected(flow, 0)

    def _upstream_socket(self) -> socket.socket:
        # SOCK_NONBLOCK: non-blocking from the start (Python sees it and sets timeout 0), no extra ioctl.
        kind = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
        if self._switch is not None:
            with self._switch:
                sock = socket.socket(socket.AF_INET, kind)
        else:
            sock = socket.socket(socket.AF_INET, kind)
        try:
            # A relay adds no delay of its own: the client's Nagle already decided what to send together.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Urgent data stays in the stream (RFC 6093 5: applications should use it inline): the
            # client gets every byte the server sent, and the stack has no urgent pointer to map it to.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
            if self._interface is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self._interface.encode())
            if self._mark is not None:
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK, self._mark)
        except BaseException:
            sock.close()
            raise
        return sock

    # -- loop thread: upstream sockets ---------------------------------------------------------------

    def _on_ready(self) -> None:
        """The runtime's reader callback: the epoll set has ready upstream sockets."""
        assert self._epoll is not None
        for fd, mask in self._epoll.poll(0, MAX_READY):
            flow = self._by_fd.get(fd)
            if flow is None or flow.closed:
                continue
            try:
                self._upstream_event(flow, mask)
            except Exception:
                logger.exception("forwarder flow %s failed; resetting it", flow.conn)
                self._abort(flow)

    def _upstream_event(self, flow: _Flow, mask: int) -> None:
        if flow.state is FlowState.CONNECTING:
            if mask & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP):
                error = flow.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    self._connect_failed(flow, _ERRNO_REFUSALS.get(error, Refusal.RESET))
                else:
                    self._upstream_connected(flow, mask)
            return
        if flow.state is FlowState.NEGOTIATING:
            if mask & _READABLE:
                self._negotiate(flow)
            return
        if mask & select.EPOLLERR:
            error = flow.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self._upstream_failed(flow)
                return
        if mask & _READABLE:
            flow.up_readable = True
            if mask & _READ_ALL:
                flow.up_read_all = True
            self._pump_down(flow)
        if mask & select.EPOLLOUT and flow.up_pending and not flow.closed:
            self._pump_up(flow)

    def _upstream_connected(self, flow: _Flow, mask: int) -> None:
        if flow.own is not None:
            self._own.pop(flow.own, None)
            flow.own = None
        if self._proxy is None:
            # What arrived with the connect (a server that speaks first, like SMTP) is in this mask:
            # anything later raises an edge of its own.
            self._accept(flow, mask)
            return
        conn = flow.conn
        flow.socks = Socks5Connect(self._proxy, conn.local_addr, conn.local_port)
        flow.state = FlowState.NEGOTIATING
        self._negotiate(flow, flow.socks.greeting())

    def _negotiate(self, flow: _Flow, greeting: bytes = b"") -> None:
        """Send ``greeting`` if given, then feed the SOCKS5 exchange what the proxy sent so far."""
        socks = flow.socks
        assert socks is not None
        try:
            if greeting:
                self._send_negotiation(flow, greeting)
            while not socks.done:
                try:
                    data = flow.sock.recv(SOCKS_READ)
                except BlockingIOError:
                    return
                if not data:
                    raise Socks5Error(Reply.GENERAL_FAILURE, "SOCKS5 proxy closed the connection")
                reply = socks.feed(data)
                if reply:
                    self._send_negotiation(flow, reply)
        except Socks5Error as exc:
            logger.debug("SOCKS5 CONNECT for %s failed: %s", flow.conn, exc)
            self._counters.proxy_failures += 1
            self._connect_failed(flow, _SOCKS_REFUSALS.get(exc.reply, Refusal.HOST_UNREACHABLE))
            return
        except OSError as exc:
            logger.debug("SOCKS5 proxy connection for %s failed: %s", flow.conn, exc)
            self._counters.proxy_failures += 1
            self._connect_failed(flow, Refusal.HOST_UNREACHABLE)
            return
        flow.down_pending = socks.rest
        flow.socks = None
        # The proxy's reply may have come with stream data behind it, its edge consumed by our reads.
        self._accept(flow, _READABLE)

    @staticmethod
    def _send_negotiation(flow: _Flow, data: bytes) -> None:
        # A few bytes into a send buffer that held nothing bigger: they fit unless something is wrong.
        if flow.sock.send(data) != len(data):
            raise Socks5Error(Reply.GENERAL_FAILURE, "SOCKS5 request did not fit the socket")

    def _accept(self, flow: _Flow, mask: int) -> None:
        runtime = self._runtime
        runtime.stack.accept_request(flow.conn, runtime.now)
        flow.conn.nodelay = True  # as the upstream socket: the relay adds no delay of its own
        flow.state = FlowState.OPEN
        flow.last_active = runtime.now
        self._counters.accepted += 1
        if mask & _READABLE:
            flow.up_readable = True
            flow.up_read_all = bool(mask & _READ_ALL)
        self._pump_down(flow)

    def _connect_failed(self, flow: _Flow, refusal: Refusal) -> None:
        self._release(flow)
        self._refuse_conn(flow.conn, refusal)

    def _refuse_conn(self, conn: Connection, refusal: Refusal) -> None:
        """Tell the client its upstream could not be reached (RST only, without ``icmp``)."""
        self._counters.refused += 1
        self._runtime.stack.refuse_request(conn, self._runtime.now, refusal if self._icmp else Refusal.RESET)

    # -- loop thread: relaying -----------------------------------------------------------------------

    def _pump_up(self, flow: _Flow) -> None:
        """Client -> upstream, until the stack has nothing more or the upstream socket is full."""
        if flow.state is not FlowState.OPEN or flow.up_shut:
            return
        conn, sock, now = flow.conn, flow.sock, self._runtime.now
        view = self._view
        try:
            if flow.up_pending:
                sent = sock.send(flow.up_pending)
                self._count_up(flow, sent, now)
                if sent < len(flow.up_pending):
                    flow.up_pending = flow.up_pending[sent:]
                    return
                flow.up_pending = b""
            while True:
                try:
                    n = conn.recv_into(view, now)
                except OSError:
                    self._client_failed(flow)
                    return
                if not n:
                    break
                try:
                    sent = sock.send(view[:n])
                except BlockingIOError:
                    sent = 0
                self._count_up(flow, sent, now)
                if sent < n:
                    flow.up_pending = bytes(view[sent:n])
                    return
            if conn.at_eof:
                sock.shutdown(socket.SHUT_WR)
                flow.up_shut = True
                self._maybe_done(flow)
        except BlockingIOError:
            return
        except OSError:
            self._upstream_failed(flow)

    def _pump_down(self, flow: _Flow) -> None:
        """Upstream -> client, while the upstream socket has data and the stack's send buffer has room."""
        if flow.state is not FlowState.OPEN or flow.down_shut:
            return
        conn, sock, now = flow.conn, flow.sock, self._runtime.now
        view = self._view
        try:
            if flow.down_pending:
                sent = conn.send(flow.down_pending, now)
                self._count_down(flow, sent, now)
                if sent < len(flow.down_pending):
                    flow.down_pending = flow.down_pending[sent:]
                    return  # Writable follows once the buffer drains
                flow.down_pending = b""
            while flow.up_readable:
                size = min(RELAY_CHUNK, max(conn.writable, MIN_READ))
                try:
                    n = sock.recv_into(view, size)
                except BlockingIOError:
                    flow.up_readable = False
                    return
                except OSError:
                    self._upstream_failed(flow)
                    return
                if not n:
                    flow.up_readable = False
                    conn.shutdown(socket.SHUT_WR, now)
                    flow.down_shut = True
                    self._maybe_done(flow)
                    return
                if n < size and not flow.up_read_all:
                    # A short read emptied the socket: what arrives next raises a new edge (epoll(7)
                    # on stream sockets), so no read is spent on EAGAIN. After a _READ_ALL edge (a FIN,
                    # urgent data), read on to EAGAIN or EOF.
                    flow.up_readable = False
                sent = conn.send(view[:n], now)
                self._count_down(flow, sent, now)
                if sent < n:
                    flow.down_pending = bytes(view[sent:n])
                    return
        except OSError:
            self._client_failed(flow)

    def _count_up(self, flow: _Flow, n: int, now: float) -> None:
        if n:
            flow.bytes_up += n
            self._counters.bytes_up += n
            flow.last_active = now

    def _count_down(self, flow: _Flow, n: int, now: float) -> None:
        if n:
            flow.bytes_down += n
            self._counters.bytes_down += n
            flow.last_active = now

    # -- loop thread: endings ------------------------------------------------------------------------

    def _maybe_done(self, flow: _Flow) -> None:
        """Both directions ended with FIN: the socket closes gracefully (its FIN went out with
        shutdown), and the stack connection finishes its own close (orphaned, fin_timeout bounded)."""
        if not (flow.up_shut and flow.down_shut):
            return
        self._counters.completed += 1
        self._release(flow)
        flow.conn.close(self._runtime.now)

    def _client_failed(self, flow: _Flow) -> None:
        self._counters.client_resets += 1
        self._abort(flow)

    def _upstream_failed(self, flow: _Flow) -> None:
        self._counters.upstream_resets += 1
        self._abort(flow)

    def _abort(self, flow: _Flow) -> None:
        """Reset both sides; a flow still connecting upstream has its request dropped silently (a flow
        exists only while its request is pending: the request's Closed event releases it)."""
        if flow.closed:
            return
        self._release(flow, reset=True)
        conn, now = flow.conn, self._runtime.now
        if flow.state is FlowState.OPEN:
            conn.abort(now)
        else:
            self._runtime.stack.refuse_request(conn, now, Refusal.DROP)

    def _release(self, flow: _Flow, *, reset: bool = False) -> None:
        """Forget the flow and close its upstream socket (with a RST when ``reset``)."""
        flow.closed = True
        self._flows.pop(flow.conn, None)
        if flow.own is not None:
            self._own.pop(flow.own, None)
        sock = flow.sock
        fd = sock.fileno()
        if fd >= 0:
            # close() takes it out of the epoll set: ours is the only fd of the socket (epoll(7)).
            self._by_fd.pop(fd, None)
            if reset:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        sock.close()

    def _tick(self) -> None:
        """Connect timeouts, then idle and half-closed flows (each reset on both sides)."""
        now, counters = self._runtime.now, self._counters
        for flow in list(self._flows.values()):
            if flow.state is not FlowState.OPEN:
                if now >= flow.deadline:
                    counters.connect_timeouts += 1
                    if flow.state is FlowState.NEGOTIATING:
                        counters.proxy_failures += 1
                    self._connect_failed(flow, Refusal.HOST_UNREACHABLE)
                continue
            half_closed = flow.up_shut != flow.down_shut
            if now - flow.last_active >= (self.half_close_timeout if half_closed else self.idle_timeout):
                if half_closed:
                    counters.half_close_reaped += 1
                else:
                    counters.idle_reaped += 1
                self._abort(flow)


def _log_failure(future: Future[None]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        logger.warning("forwarder timer pass failed: %s", exc)


# -- a whole network for tests and benchmarks ----------------------------------------------------------


@dataclass
class Topology:
    """What ``topology()`` built. Run clients in ``client`` and servers in ``server``:

    - ``forwarded_address``: the server's address through the forwarder (client -> TUN -> pytcp -> kernel
      socket in ``upstream`` -> veth -> server);
    - ``routed_address``: the same server through plain kernel forwarding over the same hops (client ->
      veth -> ``upstream``, IP forwarding on -> veth -> server), the baseline to compare against; None
      when ``kernel_path`` was False.
    """

    client: NetNamespace
    upstream: NetNamespace
    server: NetNamespace
    runtime: StackRuntime
    forwarder: Forwarder
    forwarded_address: str
    routed_address: str | None
    tun: str
    namespaces: list[NetNamespace] = field(default_factory=list)


# Addresses (RFC 2544's 198.18.0.0/15 only): the TUN link, the path to the server through the forwarder,
# and the kernel-routed baseline path.
TOPOLOGY_TUN_KERNEL = "198.18.0.1"
TOPOLOGY_TUN_STACK = "198.18.0.2"
TOPOLOGY_UPSTREAM = "198.19.1.1"  # the upstream namespace on the server link
TOPOLOGY_SERVER = "198.19.1.2"  # forwarded_address
TOPOLOGY_ROUTER_SERVER_SIDE = "198.19.2.1"
TOPOLOGY_SERVER_ROUTED = "198.19.2.2"  # routed_address
TOPOLOGY_CLIENT_ROUTED = "198.18.1.1"
TOPOLOGY_ROUTER_CLIENT_SIDE = "198.18.1.2"
#: Routed into the TUN device in the client namespace (the kernel path's 198.19.2.0/24 is more specific).
FORWARDED_PREFIX = "198.19.0.0/16"


@contextlib.contextmanager
def topology(
    *,
    upstream: str | Socks5Proxy | None = "direct",
    mtu: int = 1500,
    offload: bool = True,
    config: TCPConfig | None = None,
    kernel_path: bool = True,
    pcap: str | None = None,
    **forwarder_options: Any,
) -> Iterator[Topology]:
    """Three namespaces it creates (client, upstream, server) and a running forwarder between them; on
    exit everything is stopped and deleted. Root only. The TUN device (MTU ``mtu``) lives in the client
    namespace with a route for 198.19.0.0/16 into it; the forwarder's upstream sockets live in the
    upstream namespace, linked to the server by a veth pair. ``forwarder_options`` go to Forwarder
    (max_sessions, idle_timeout, ...). With a SOCKS5 ``upstream`` the proxy must be reachable from the
    upstream namespace (the server namespace's addresses are)."""
    namespaces: list[NetNamespace] = []
    runtime: StackRuntime | None = None
    forwarder: Forwarder | None = None
    try:
        client, router, server = (NetNamespace.create(prefix) for prefix in ("fwdc", "fwdu", "fwds"))
        namespaces += [client, router, server]
        veth_pair(
            router,
            server,
            name_a="up0",
            name_b="srv0",
            address_a=TOPOLOGY_UPSTREAM,
            address_b=TOPOLOGY_SERVER,
            mtu=mtu,
        )
        runtime = StackRuntime.open(
            "pf0",
            stack_address=TOPOLOGY_TUN_STACK,
            kernel_address=TOPOLOGY_TUN_KERNEL,
            prefix_len=24,
            mtu=mtu,
            offload=offload,
            config=config,
            netns=client,
            pcap=pcap,
        )
        run_ip("route", "add", FORWARDED_PREFIX, "dev", "pf0", netns=client.name)
        routed = None
        if kernel_path:
            veth_pair(
                client,
                router,
                name_a="rt0",
                name_b="rt1",
                address_a=TOPOLOGY_CLIENT_ROUTED,
                address_b=TOPOLOGY_ROUTER_CLIENT_SIDE,
                mtu=mtu,
            )
            run_ip("addr", "add", f"{TOPOLOGY_ROUTER_SERVER_SIDE}/24", "dev", "up0", netns=router.name)
            run_ip("addr", "add", f"{TOPOLOGY_SERVER_ROUTED}/24", "dev", "srv0", netns=server.name)
            run_ip("route", "add", "198.19.2.0/24", "via", TOPOLOGY_ROUTER_CLIENT_SIDE, netns=client.name)
            run_ip("route", "add", "198.18.1.0/24", "via", TOPOLOGY_ROUTER_SERVER_SIDE, netns=server.name)
            router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            routed = TOPOLOGY_SERVER_ROUTED
        runtime.start()
        forwarder = Forwarder(runtime, upstream, netns=router, **forwarder_options).start()
        yield Topology(
            client, router, server, runtime, forwarder, TOPOLOGY_SERVER, routed, "pf0", list(namespaces)
        )
    finally:
        try:
            if forwarder is not None:
                forwarder.stop()
            if runtime is not None:
                runtime.stop()
        finally:
            for ns in reversed(namespaces):
                ns.close()
