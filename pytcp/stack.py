"""The TCP stack of one IPv4 address: demultiplexing, listeners, timers and output across connections.

``Stack`` is sans-I/O and implements the simulator's ``Endpoint`` protocol (pytcp.sim): packets come
in through ``receive(packet, now)``, go out through ``datagrams_to_send(now)``, and ``get_timer`` /
``handle_timer`` drive every connection's timers from one heap. Time is always an argument; the stack
reads no clock and, given ``seed`` or ``secret``, no randomness either, so simulations replay exactly.

Work is proportional to activity, not to the number of connections: a connection is polled for output
only after something touched it (a segment, a timer, an application call), and timers sit in a heap of
(deadline, sequence, connection) entries invalidated lazily when a connection's deadline moves.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import os
import random
from collections import deque
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from typing import Any

import tcpcore
from tcpcore import ACK, FIN, RST, SYN, IPv4Header, MalformedPacket, TCPSegment
from tcpcore._types import Buffer
from tcpcore.constants import IPPROTO_ICMP

from .addresses import dotted
from .config import TCPConfig
from .connection import ChallengeAckLimiter, Connection
from .events import Closed, Connected, ConnectRequest, Event, IncomingConnection
from .icmp import DEST_UNREACHABLE, IcmpReply, build_icmp, handle_icmp
from .isn import IsnGenerator, PortAllocator
from .listener import (
    DROP,
    NEW_CHILD,
    REQUEST,
    RESET,
    SEND_COOKIE,
    InterceptListener,
    Listener,
    PendingRequest,
    Refusal,
)
from .mib import MIB
from .state import CLOSED, SYN_RECEIVED, TIME_WAIT, TransitionRecord
from .syncookies import SynCookies, encode_timestamp
from .tcb import DEFAULT_MSS
from .tcp_output import Packet

__all__ = ["Stack"]

logger = logging.getLogger(__name__)

Key = tuple[int, int, int, int]
Tracer = Callable[[TransitionRecord], None]

_MASK32 = 0xFFFFFFFF
#: Packets the stack itself queues (RSTs, cookie SYN-ACKs) between two datagrams_to_send calls. Callers
#: drain after every receive batch, and a batch is at most a few hundred packets (the runtime's
#: recvmmsg batch); 1024 leaves room for that and caps what a flood of stray segments can pin.
MAX_PENDING_PACKETS = 1024
#: Undelivered events kept before the oldest are dropped: eight per connection at max_connections is
#: far more than an application that drains next_event() between I/O calls ever leaves behind.
EVENTS_PER_CONNECTION = 8
#: Stale timer-heap entries tolerated per live one before the heap is rebuilt (keeps it O(connections)).
HEAP_SLACK = 2
#: RFC 6191 / Linux tcp_timewait_state_process and tcp_twsk_unique: a new incarnation of a TIME-WAIT
#: 4-tuple starts at the old SND.NXT plus a maximal unscaled window plus 2, beyond anything old.
TW_ISN_GAP = 65535 + 2
#: Linux tcp_twsk_unique: connect() may reuse a TIME-WAIT 4-tuple when the last timestamp from the peer
#: was recorded at least one second ago (so the peer's PAWS will accept the new incarnation).
TW_REUSE_AGE = 1.0
#: How long a promiscuous listener's request may wait for the application: 75 s, the connection-
#: establishment timer of 4.4BSD (TCPTV_KEEP_INIT), well past any sane upstream connect timeout.
REQUEST_TIMEOUT = 75.0
#: An ICMP error quotes the offending datagram's IP header and its first 64 bits of data (RFC 792): for
#: the SYN a refusal answers, the 20-byte header we rebuilt plus ports and sequence number.
ICMP_QUOTE = 20 + 8


class Stack:
    """TCP over IPv4 for one local address."""

    def __init__(
        self,
        address: int,
        config: TCPConfig | None = None,
        *,
        seed: int | None = None,
        secret: bytes | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        if not 0 <= address <= _MASK32:
            raise ValueError(f"address must be a 32-bit int, got {address!r}")
        self._address = address
        self.config = config or TCPConfig()
        self.mib = MIB()
        if secret is None:
            # One draw at construction; with a seed, a fixed derivation so simulations replay.
            secret = os.urandom(32) if seed is None else hashlib.blake2s(b"pytcp stack %d" % seed).digest()
        self._isn = IsnGenerator(secret)
        self._ports = PortAllocator(secret)
        self._cookies = SynCookies(secret)
        self._tracer = tracer
        # The per-second budget is randomised (CVE-2016-5696), from the secret so a seeded run replays.
        self._limiter = ChallengeAckLimiter(self.config.challenge_ack_limit, random.Random(secret))
        self._conns: dict[Key, Connection] = {}
        self._listeners: dict[tuple[int, int], Listener] = {}
        #: Passive children not yet accepted (and pending requests) -> their listener.
        self._parents: dict[Key, Listener] = {}
        self._intercept: InterceptListener | None = None
        self._events: deque[Event] = deque(maxlen=EVENTS_PER_CONNECTION * self.config.max_connections)
        self._pending: deque[bytes] = deque()
        # Insertion-ordered (dicts, not sets) so output order never depends on object addresses.
        self._dirty: dict[Connection, None] = {}
        # A timer heap with lazy deletion: ``_armed`` maps each connection to its live entry, the very
        # tuple in the heap, so a heap entry is live exactly when it is its connection's (``is``).
        self._heap: list[tuple[float, int, Connection]] = []
        self._armed: dict[Connection, tuple[float, int, Connection]] = {}
        self._heap_seq = itertools.count()
        self._now = 0.0

    def __repr__(self) -> str:
        counts = f"{len(self._conns)} connections, {len(self._listeners)} listeners"
        return f"Stack({dotted(self._address)}, {counts})"

    @property
    def address(self) -> int:
        return self._address

    # -- Endpoint protocol ---------------------------------------------------------------------------

    def receive(self, packet: Buffer, now: float, *, checksum_verified: bool = False) -> None:
        """Take one IPv4 packet. Malformed input is counted and dropped; this never raises for it.

        ``checksum_verified``: the device already checked the checksums (virtio-net DATA_VALID, Linux
        CHECKSUM_UNNECESSARY), so parsing skips them. No view of ``packet`` outlives the call.
        """
        self._input_packet(packet, now, checksum_verified)

    def _input_packet(self, packet: Buffer, now: float, checksum_verified: bool) -> None:
        # receive's body, in a method of plain positional arguments: what the compiled stack types
        # (stack.pxd), while receive stays overridable with its keyword-only argument.
        self._now = now
        mib = self.mib
        mib.InReceives += 1
        try:
            ip, seg = tcpcore.parse_packet(packet, not checksum_verified)
        except MalformedPacket:
            self._count_malformed(packet)
            return
        if ip.dst != self._address and (seg is None or self._intercept is None):
            mib.InAddrErrors += 1
            return
        if seg is None:
            if ip.is_fragment:
                # No reassembly: TCP here always sends with DF and MSS-sized segments.
                mib.FragDropped += 1
            elif ip.protocol == IPPROTO_ICMP:
                mib.InDelivers += 1
                self._icmp_input(ip, packet, now, checksum_verified)
            else:
                mib.InUnknownProtos += 1
            return
        mib.InDelivers += 1
        mib.InSegs += 1
        key = (ip.dst, seg.dst_port, ip.src, seg.src_port)
        conn = self._conns.get(key)
        if conn is not None:
            if seg.flags & (SYN | ACK | RST) != SYN or not self._time_wait_takeover(conn, key, seg, now):
                self._deliver(conn, key, seg, now)
            return
        listener = self._listeners.get((ip.dst, seg.dst_port)) or self._interceptor(ip.dst)
        if listener is not None:
            self._listen_input(listener, key, seg, now, iss=None)
            return
        self._reset_closed(key, seg)

    def datagrams_to_send(self, now: float) -> list[Packet]:
        """Every packet due now: the stack's own (RSTs, cookie SYN-ACKs), then each touched connection's."""
        self._now = now
        out: list[Packet] = list(self._pending)
        self._pending.clear()
        dirty = self._dirty
        while dirty:
            conn = next(iter(dirty))
            del dirty[conn]
            if conn.wants_transmit:
                conn.poll_transmit(now, out)
            self._sync_timer(conn)
        self.mib.OutRequests += len(out)
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline of any connection, or None."""
        for conn in self._dirty:
            self._sync_timer(conn)
        heap, armed = self._heap, self._armed
        due = None
        while heap:
            entry = heap[0]
            if armed.get(entry[2]) is entry:
                due = entry[0]
                break
            heappop(heap)
        intercept = self._intercept
        if intercept is not None and (expiry := intercept.next_expiry()) is not None:
            due = expiry if due is None else min(due, expiry)
        return due

    def handle_timer(self, now: float) -> None:
        """Fire every connection timer due at ``now``. A connection that re-arms for ``now`` or earlier
        fires on the next call, not in this loop, so the loop is bounded by the heap's size."""
        self._now = now
        for conn in self._dirty:
            self._sync_timer(conn)
        heap, armed = self._heap, self._armed
        while heap and heap[0][0] <= now:
            entry = heappop(heap)
            conn = entry[2]
            if armed.get(conn) is not entry:
                continue
            del armed[conn]
            self._dirty[conn] = None
            conn.handle_timer(now)
        if self._intercept is not None:
            for conn in self._intercept.expired(now):
                self._emit(Closed(conn))

    # -- application API -----------------------------------------------------------------------------

    def listen(self, port: int, backlog: int = 128) -> Listener:
        """Passive open on ``port`` (RFC 9293 3.10.1). ``backlog`` bounds the accept queue (capped at
        somaxconn) and the SYN queue (capped at max_syn_backlog)."""
        if not 0 < port <= 0xFFFF:
            raise ValueError(f"port must be in 1..65535, got {port}")
        where = (self._address, port)
        if where in self._listeners:
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        listener = Listener(
            self._address, port, backlog, self.config, self.mib, self._cookies, self._now, tracer=self._tracer
        )
        self._listeners[where] = listener
        return listener

    def listen_any(
        self, backlog: int = 128, *, request_timeout: float = REQUEST_TIMEOUT
    ) -> InterceptListener:
        """Promiscuous mode, a forwarder's hook (gVisor's TCP forwarder): from now on segments for ANY
        destination address are taken, keyed by their full 4-tuple as usual. A SYN that no connection
        and no ordinary listener claims (and not for the stack's own address, which keeps closed-port
        semantics) is not answered: its connection waits in CLOSED and a ConnectRequest event names it,
        for ``accept_request`` or ``refuse_request``. See InterceptListener for the bounds; one such
        listener per stack (OSError EADDRINUSE for a second)."""
        if self._intercept is not None:
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        self._intercept = InterceptListener(
            backlog,
            self.config,
            self.mib,
            self._cookies,
            self._now,
            request_timeout=request_timeout,
            tracer=self._tracer,
        )
        return self._intercept

    def accept_request(self, conn: Connection, now: float) -> None:
        """Answer a pending request with a SYN-ACK: ``conn`` becomes an ordinary passive child in
        SYN-RECEIVED (Connected, then IncomingConnection once the handshake completes). ValueError if
        ``conn`` is no pending request (answered already, or expired: a Closed event said so)."""
        self._now = now
        listener, request = self._pending_request(conn)
        del listener.requests[conn.key]
        listener.add_child(conn.key, conn)
        _, syn = tcpcore.parse_packet(request.syn, False)
        assert syn is not None
        self.mib.InterceptAccepted += 1
        conn.accept_syn(syn, now)

    def refuse_request(self, conn: Connection, now: float, refusal: Refusal = Refusal.RESET) -> None:
        """Answer a pending request with ``refusal`` (a RST, an ICMP unreachable, or nothing) and forget
        it; a Closed event for ``conn`` follows. ValueError if ``conn`` is no pending request."""
        self._now = now
        _, request = self._pending_request(conn)
        self.mib.InterceptRefused += 1
        self._emit(Closed(conn))
        if refusal is Refusal.RESET:
            _, syn = tcpcore.parse_packet(request.syn, False)
            assert syn is not None
            self._reset_closed(conn.key, syn)
        elif (code := refusal.icmp_code) is not None:
            # Port unreachable comes from the destination itself, the others from us as the gateway
            # that could not reach it (RFC 1812 4.3.2.3: a router reports with its own address).
            source = conn.local_addr if refusal is Refusal.PORT_UNREACHABLE else self._address
            message = build_icmp(DEST_UNREACHABLE, code, 0, request.syn[:ICMP_QUOTE])
            if self._enqueue(
                tcpcore.build_ipv4(source, conn.remote_addr, IPPROTO_ICMP, message, ttl=self.config.ttl)
            ):
                self.mib.OutDestUnreachs += 1

    def accept(self, listener: Listener) -> Connection | None:
        """The oldest established connection of ``listener``, or None when its accept queue is empty."""
        conn = listener.pop()
        if conn is not None:
            self._parents.pop(conn.key, None)
        return conn

    def close_listener(self, listener: Listener, now: float) -> None:
        """Stop listening; children not yet accepted are reset (Linux inet_csk_listen_stop)."""
        self._now = now
        if listener is self._intercept:
            self._intercept = None
            for request in list(listener.requests.values()):
                self._emit(Closed(request.conn))
        elif self._listeners.get((listener.local_addr, listener.port)) is listener:
            del self._listeners[(listener.local_addr, listener.port)]
        else:
            return
        for child in listener.close(now):
            self._parents.pop(child.key, None)
            child.abort(now)

    def connect(self, remote_addr: int, remote_port: int, now: float, *, local_port: int = 0) -> Connection:
        """Active open (RFC 9293 3.10.1): a new connection in SYN-SENT with its SYN queued.

        OSError(EAGAIN) at max_connections; OSError(EADDRNOTAVAIL) when no port is free or the chosen
        4-tuple is in use (as Linux connect()). A TIME-WAIT 4-tuple is taken over when tw_reuse allows.
        """
        self._now = now
        if not 0 < remote_port <= 0xFFFF or not 0 <= remote_addr <= _MASK32:
            raise ValueError(f"bad remote endpoint {remote_addr!r}:{remote_port!r}")
        address = self._address

        def in_use(port: int) -> bool:
            old = self._conns.get((address, port, remote_addr, remote_port))
            if old is None:
                # Linux __inet_hash_connect skips ports bound by a listener as well.
                return (address, port) in self._listeners
            return not self._tw_reusable(old, now)

        if local_port:
            if not 0 < local_port <= 0xFFFF:
                raise ValueError(f"local_port must be in 0..65535, got {local_port}")
            if in_use(local_port):
                raise OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))
            port = local_port
        else:
            port = self._ports.allocate(address, remote_addr, remote_port, in_use)
        key = (address, port, remote_addr, remote_port)
        iss = self._isn.isn(*key, now)
        old = self._conns.get(key)
        if old is not None:
            iss = (old.snd_nxt + TW_ISN_GAP) & _MASK32
            self._retire_time_wait(old, key, now)
            self.mib.TWRecycled += 1
        if len(self._conns) >= self.config.max_connections:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        conn = self._new_connection(key, iss, now)
        conn.connect(now)
        return conn

    def next_event(self) -> Event | None:
        """The oldest undelivered event, or None. Whatever the application calls on a connection in
        response reaches the stack through the connection's wake hook."""
        return self._events.popleft() if self._events else None

    def connections(self) -> list[Connection]:
        """Every connection in the table (children not yet accepted and TIME-WAIT included)."""
        return list(self._conns.values())

    def listeners(self) -> list[Listener]:
        """Every open listener, the promiscuous one (listen_any) included."""
        return [*self._listeners.values(), *((self._intercept,) if self._intercept is not None else ())]

    def info(self) -> dict[str, Any]:
        """Stack-wide figures: address, table sizes and every counter."""
        return {
            "address": dotted(self._address),
            "connections": len(self._conns),
            "listeners": len(self._listeners),
            "mib": self.mib.snapshot(),
        }

    def table(self) -> list[dict[str, Any]]:
        """One row per listener and connection, like ``ss -tanoi``: state, endpoints and tcp_info."""
        rows: list[dict[str, Any]] = []
        for listener in self.listeners():
            rows.append(
                {
                    "state": listener.state.value,
                    "local": f"{dotted(listener.local_addr)}:{listener.port}" if listener.port else "*:*",
                    "remote": "*:*",
                    # As ss: for a listener Recv-Q is the accept queue and Send-Q its limit.
                    "recv_q": len(listener.accept_queue),
                    "send_q": listener.accept_limit,
                    "syn_queue": len(listener.syn_queue),
                }
            )
        for (laddr, lport, raddr, rport), conn in self._conns.items():
            if conn.state is CLOSED:
                continue  # a promiscuous listener's pending request: no TCB has opened yet
            info = conn.info()
            rows.append(
                {
                    "state": conn.state.value,
                    "local": f"{dotted(laddr)}:{lport}",
                    "remote": f"{dotted(raddr)}:{rport}",
                    "recv_q": conn.readable,
                    "send_q": info.unacked + info.notsent,
                    "rtt": info.rtt,
                    "rto": info.rto,
                    "cwnd": info.cwnd,
                    "ssthresh": info.ssthresh,
                    "mss": info.snd_mss,
                    "retrans": info.total_retrans,
                    "bytes_acked": info.bytes_acked,
                    "bytes_received": info.bytes_received,
                }
            )
        return rows

    # -- internals -----------------------------------------------------------------------------------

    def _new_connection(self, key: Key, iss: int, now: float) -> Connection:
        conn = Connection(
            self.config,
            self.mib,
            local_addr=key[0],
            local_port=key[1],
            remote_addr=key[2],
            remote_port=key[3],
            iss=iss,
            now=now,
            emit=self._emit,
            tracer=self._tracer,
            limiter=self._limiter,
            wake=self._wake,
        )
        self._conns[key] = conn
        return conn

    def _wake(self, conn: Connection) -> None:
        """Every connection's wake hook: an application call (or the stack's own connect / accept_syn /
        abort) queued output or moved its deadline; poll it next. Its timer is re-pushed with the other
        dirty connections' before the heap is next read (datagrams_to_send, get_timer, handle_timer)."""
        self._dirty[conn] = None

    def _emit(self, event: Event) -> None:
        """The connections' event callback: table upkeep, then the event goes to the application."""
        self._push_event(event)
        conn = event.conn
        if isinstance(event, Connected):
            listener = self._parents.get(conn.key)
            if listener is not None and not listener.closed:
                listener.child_established(conn.key, conn)
                self._push_event(IncomingConnection(conn, listener))
        elif isinstance(event, Closed):
            key = conn.key
            if self._conns.get(key) is conn:
                del self._conns[key]
            self._armed.pop(conn, None)
            listener = self._parents.pop(key, None)
            if listener is not None:
                listener.child_gone(key, conn)

    def _push_event(self, event: Event) -> None:
        events = self._events
        if len(events) == events.maxlen:
            logger.warning("event queue full (%d): dropping the oldest undelivered event", events.maxlen)
        events.append(event)

    def _sync_timer(self, conn: Connection) -> None:
        """Push a heap entry when the connection's deadline moved; the old entry goes stale."""
        due = conn.get_timer()
        armed = self._armed.get(conn)
        if due is None or conn.state is CLOSED:
            if armed is not None:
                del self._armed[conn]
            return
        if armed is not None and armed[0] == due:
            return
        entry = (due, next(self._heap_seq), conn)
        self._armed[conn] = entry
        heappush(self._heap, entry)
        if len(self._heap) > HEAP_SLACK * len(self._armed) + 64:
            self._heap = list(self._armed.values())
            heapify(self._heap)

    def _count_malformed(self, packet: Buffer) -> None:
        """Which MIB counter a packet parse_packet refused belongs to: IP header errors, or TCP errors with
        checksum failures told apart by parsing once more without verification (Linux counts both
        TCP_MIB_CSUMERRORS and TCP_MIB_INERRS for those)."""
        mib = self.mib
        try:
            ip = tcpcore.parse_ipv4(packet)
        except MalformedPacket:
            mib.InHdrErrors += 1
            return
        if ip.dst != self._address and self._intercept is None:
            mib.InAddrErrors += 1
            return
        mib.InSegs += 1
        mib.InErrs += 1
        try:
            tcpcore.parse_tcp(packet, ip.payload_offset, ip.payload_length, ip.src, ip.dst, False)
        except MalformedPacket:
            return
        mib.InCsumErrors += 1

    def _deliver(self, conn: Connection, key: Key, seg: TCPSegment, now: float) -> None:
        listener = self._parents.get(key)
        if listener is not None and conn.state is CLOSED:
            assert isinstance(listener, InterceptListener)
            listener.pending_input(seg)
            return
        if (
            listener is not None
            and conn.state is SYN_RECEIVED
            and seg.flags & (ACK | RST | SYN) == ACK
            and not listener.admits_final_ack()
        ):
            return
        self._dirty[conn] = None
        conn.handle_segment(seg, now)

    def _time_wait_takeover(self, conn: Connection, key: Key, seg: TCPSegment, now: float) -> bool:
        """RFC 9293 3.10.7.4 / RFC 6191, as Linux tcp_timewait_state_process: a SYN for a 4-tuple in
        TIME-WAIT opens a new incarnation when a listener exists and the SYN is newer than anything of
        the old one (sequence number beyond RCV.NXT, or a newer timestamp). The old TCB goes; the SYN is
        then processed by the listener. Returns True when the SYN was taken over."""
        if conn.state is not TIME_WAIT:  # the caller checked the flags
            return False
        listener = self._listeners.get((key[0], key[1])) or self._interceptor(key[0])
        if listener is None:
            return False
        newer = tcpcore.seq_gt(seg.seq, conn.rcv_nxt)
        ts_recent = conn.ts_recent
        if seg.has_timestamps and ts_recent is not None:
            age = tcpcore.seq_diff(ts_recent, seg.ts_val)
            # PAWS first (Linux tcp_paws_reject, TCP_PAWS_WINDOW = 1): a timestamp older than TS.Recent
            # marks an old duplicate whatever its sequence number.
            if age > 1:
                return False
            newer = newer or age < 0
        if not newer:
            return False
        iss = (conn.snd_nxt + TW_ISN_GAP) & _MASK32
        self._retire_time_wait(conn, key, now)
        self._listen_input(listener, key, seg, now, iss=iss)
        return True

    def _tw_reusable(self, conn: Connection, now: float) -> bool:
        """Linux tcp_twsk_unique with tcp_tw_reuse: only TIME-WAIT, only with timestamps, and only when
        the peer's last timestamp is at least a second old."""
        stamp = conn.ts_recent_time
        return (
            self.config.tw_reuse
            and conn.state is TIME_WAIT
            and conn.ts_recent is not None
            and stamp is not None
            and now - stamp >= TW_REUSE_AGE
        )

    def _retire_time_wait(self, conn: Connection, key: Key, now: float) -> None:
        conn.reuse_time_wait(now)
        if self._conns.get(key) is conn:
            del self._conns[key]
        self._armed.pop(conn, None)

    def _listen_input(
        self, listener: Listener, key: Key, seg: TCPSegment, now: float, *, iss: int | None
    ) -> None:
        action, options = listener.classify(
            seg, key, now, table_full=len(self._conns) >= self.config.max_connections
        )
        if action is DROP:
            return
        if action is RESET:
            self._reset_closed(key, seg)
        elif action is NEW_CHILD:
            conn = self._new_connection(key, self._isn.isn(*key, now) if iss is None else iss, now)
            self._parents[key] = listener
            listener.add_child(key, conn)
            conn.accept_syn(seg, now)
        elif action is REQUEST:
            assert isinstance(listener, InterceptListener)
            conn = self._new_connection(key, self._isn.isn(*key, now) if iss is None else iss, now)
            self._parents[key] = listener
            listener.add_request(key, conn, seg, now)
            self._push_event(ConnectRequest(conn, listener))
        elif action is SEND_COOKIE:
            self._send_cookie(key, seg, now)
        else:
            assert options is not None
            conn = self._new_connection(key, (seg.ack - 1) & _MASK32, now)
            self._parents[key] = listener
            conn.establish_from_cookie(
                seg,
                irs=(seg.seq - 1) & _MASK32,
                mss=options.mss,
                wscale=options.wscale,
                sack=options.sack,
                timestamps=options.timestamps,
                now=now,
            )

    def _icmp_input(self, ip: IPv4Header, packet: Buffer, now: float, checksum_verified: bool) -> None:
        """Echo requests are answered; an error quoting one of our segments goes to its connection."""
        try:
            action = handle_icmp(
                ip, packet, self.mib, ttl=self.config.ttl, verify_checksum=not checksum_verified
            )
        except MalformedPacket:
            self.mib.IcmpInErrors += 1
            return
        if isinstance(action, IcmpReply):
            self._enqueue(action.packet)
        elif action is not None:
            conn = self._conns.get(action.key)
            if conn is not None:
                self._dirty[conn] = None
                conn.icmp_error(action, now)

    def _enqueue(self, packet: bytes) -> bool:
        """Queue a packet of the stack's own; False (and dropped) when the bounded queue is full."""
        if len(self._pending) >= MAX_PENDING_PACKETS:
            logger.debug("stack output queue full; dropping a %d-byte packet", len(packet))
            return False
        self._pending.append(packet)
        return True

    def _queue(self, packet: bytes) -> None:
        """Queue a TCP segment of the stack's own (RSTs, cookie SYN-ACKs)."""
        if self._enqueue(packet):
            self.mib.OutSegs += 1

    def _interceptor(self, dst: int) -> InterceptListener | None:
        """The promiscuous listener, for a segment to a foreign address no ordinary listener claims."""
        return self._intercept if dst != self._address else None

    def _pending_request(self, conn: Connection) -> tuple[InterceptListener, PendingRequest]:
        listener = self._parents.get(conn.key)
        if isinstance(listener, InterceptListener):
            request = listener.requests.get(conn.key)
            if request is not None and request.conn is conn:
                return listener, request
        raise ValueError(f"{conn!r} is not a pending request")

    def _reset_closed(self, key: Key, seg: TCPSegment) -> None:
        """RFC 9293 3.10.7.1 (CLOSED), also used for 3.10.7.2's bad ACK in LISTEN."""
        flags = seg.flags
        if flags & RST:
            return  # "An incoming segment containing a RST is discarded."
        if flags & ACK:
            seq, ack, reply = seg.ack, 0, RST  # <SEQ=SEG.ACK><CTL=RST>
        else:
            # <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; SYN and FIN each occupy one sequence number.
            length = seg.payload_length + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
            seq, ack, reply = 0, (seg.seq + length) & _MASK32, RST | ACK
        local_addr, local_port, remote_addr, remote_port = key
        self._queue(
            tcpcore.build_tcp_ipv4(
                local_addr, remote_addr, local_port, remote_port, seq, ack, reply, 0, ttl=self.config.ttl
            )
        )
        self.mib.OutRsts += 1

    def _send_cookie(self, key: Key, syn: TCPSegment, now: float) -> None:
        """A SYN-ACK whose ISS is a cookie (RFC 4987 3.6), offering what a child TCB would offer
        (Connection.initial_window / initial_wscale / ts_clock are the TCB's own choices)."""
        config = self.config
        iss = self._cookies.make(key, syn.seq, syn.mss or DEFAULT_MSS, now)
        wscale, sack, timestamps = -1, False, None
        # Without timestamps there is nowhere to keep the peer's shift or SACK-permitted, so the SYN-ACK
        # offers neither (Linux tcp_conn_request clears the options of a cookie SYN without them).
        if syn.has_timestamps and config.timestamps:
            peer_wscale = syn.wscale if config.window_scaling else -1
            sack = syn.sack_permitted and config.sack
            tsval = encode_timestamp(Connection.ts_clock(now), peer_wscale, sack, False)
            timestamps = (tsval, syn.ts_val)
            if peer_wscale >= 0:
                wscale = Connection.initial_wscale(config)
        local_addr, local_port, remote_addr, remote_port = key
        self._queue(
            tcpcore.build_tcp_ipv4(
                local_addr,
                remote_addr,
                local_port,
                remote_port,
                iss,
                (syn.seq + 1) & _MASK32,
                SYN | ACK,
                Connection.initial_window(config),
                mss=config.mss,
                wscale=wscale,
                sack_permitted=sack,
                timestamps=timestamps,
                ttl=config.ttl,
            )
        )
