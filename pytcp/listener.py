"""A listening socket: LISTEN-state segment processing (RFC 9293 3.10.7.2), its SYN and accept queues,
and the SYN-cookie decision (RFC 4987), shaped after Linux's tcp_conn_request and cookie_v4_check.

The listener decides and counts; the stack acts on the decision (creates the child TCB, builds the RST
or the cookie SYN-ACK). Children live in the stack's connection table under their own 4-tuple from the
first SYN on, so later segments reach them directly; the listener only keeps them in its queues.

:class:`InterceptListener` is the promiscuous variant behind ``Stack.listen_any`` (gVisor's TCP forwarder
hook): a SYN for any address becomes a pending request that the application accepts or refuses.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import tcpcore
from tcpcore import ACK, FIN, RST, SYN

from .config import TCPConfig
from .mib import MIB
from .state import APP_CLOSE, APP_LISTEN, CLOSED, State, StateMachine, TransitionRecord
from .syncookies import COOKIE_MAX_AGE, COOKIE_PERIOD, CookieOptions, SynCookies

if TYPE_CHECKING:
    from tcpcore import TCPSegment

    from .connection import Connection

__all__ = ["InterceptListener", "ListenAction", "Listener", "PendingRequest", "Refusal"]

Key = tuple[int, int, int, int]


class ListenAction(enum.Enum):
    """What the stack does with a segment that reached a listener."""

    DROP = "drop"
    #: RFC 9293 3.10.7.2 second check: <SEQ=SEG.ACK><CTL=RST>.
    RESET = "reset"
    #: Create a child TCB in the SYN queue (accept_syn).
    NEW_CHILD = "new child"
    #: Answer with a cookie SYN-ACK and keep nothing.
    SEND_COOKIE = "send cookie"
    #: A genuine cookie ACK: create the child straight into ESTABLISHED (establish_from_cookie).
    COOKIE_ACK = "cookie ack"
    #: Hold the SYN as a pending request for the application (InterceptListener only).
    REQUEST = "request"


# The members as module constants, as pytcp.state does for State (Python 3.11's EnumType reads
# ``ListenAction.X`` through its __getattr__ hook): the listener and the stack compare these per SYN.
DROP = ListenAction.DROP
RESET = ListenAction.RESET
NEW_CHILD = ListenAction.NEW_CHILD
SEND_COOKIE = ListenAction.SEND_COOKIE
COOKIE_ACK = ListenAction.COOKIE_ACK
REQUEST = ListenAction.REQUEST


class Refusal(enum.Enum):
    """How ``Stack.refuse_request`` answers a SYN the application will not take. Linux's tcp_v4_err ends a
    SYN-SENT connection on any ICMP destination unreachable but "fragmentation needed", so each ICMP
    choice makes the client's connect() fail at once with the errno in brackets (icmp_err_convert)."""

    #: RST, as a closed port (RFC 9293 3.10.7.1): ECONNREFUSED.
    RESET = "reset"
    #: ICMP destination unreachable (RFC 792) code 0, net unreachable: ENETUNREACH.
    NET_UNREACHABLE = "net unreachable"
    #: Code 1, host unreachable: EHOSTUNREACH.
    HOST_UNREACHABLE = "host unreachable"
    #: Code 3, port unreachable: ECONNREFUSED, as RESET.
    PORT_UNREACHABLE = "port unreachable"
    #: Code 13, communication administratively prohibited (RFC 1812 5.2.7.1): EHOSTUNREACH.
    PROHIBITED = "prohibited"
    #: Nothing at all: the client's next SYN retransmission asks again (as a full SYN queue).
    DROP = "drop"

    @property
    def icmp_code(self) -> int | None:
        """The Destination Unreachable code this refusal sends, or None (RST or nothing)."""
        return _ICMP_CODES.get(self)


_ICMP_CODES = {
    Refusal.NET_UNREACHABLE: 0,
    Refusal.HOST_UNREACHABLE: 1,
    Refusal.PORT_UNREACHABLE: 3,
    Refusal.PROHIBITED: 13,
}


class Listener:
    """One passive open on (local_addr, port)."""

    __slots__ = (
        "_config",
        "_cookie_sent_at",
        "_machine",
        "_mib",
        "accept_limit",
        "accept_queue",
        "backlog",
        "cookies",
        "local_addr",
        "port",
        "syn_limit",
        "syn_queue",
    )

    def __init__(
        self,
        local_addr: int,
        port: int,
        backlog: int,
        config: TCPConfig,
        mib: MIB,
        cookies: SynCookies,
        now: float,
        *,
        tracer: Callable[[TransitionRecord], None] | None = None,
    ) -> None:
        if backlog < 0:
            raise ValueError(f"backlog must be >= 0, got {backlog}")
        self.local_addr = local_addr
        self.port = port
        self.backlog = backlog
        # Linux listen(): the backlog is silently capped at somaxconn; at least 1 so a listener with
        # backlog 0 can still complete one connection (Linux admits one more than the backlog).
        self.accept_limit = max(1, min(backlog, config.somaxconn))
        # The brief's bound on half-open children: min(backlog, tcp_max_syn_backlog).
        self.syn_limit = max(1, min(backlog, config.max_syn_backlog))
        self.syn_queue: dict[Key, Connection] = {}
        self.accept_queue: deque[Connection] = deque()
        self.cookies = cookies
        self._mib = mib
        self._config = config
        # When we last answered with a cookie: in "auto" mode only then can an ACK be a cookie ACK
        # (Linux tcp_synq_no_recent_overflow).
        self._cookie_sent_at: float | None = None
        self._machine = StateMachine(name=f"listen :{port}", tracer=tracer)
        self._machine.apply(APP_LISTEN, now)

    def __repr__(self) -> str:
        return (
            f"Listener(:{self.port}, {self.state.value}, syn {len(self.syn_queue)}/{self.syn_limit}, "
            f"accept {len(self.accept_queue)}/{self.accept_limit})"
        )

    @property
    def state(self) -> State:
        return self._machine.state

    @property
    def closed(self) -> bool:
        return self._machine.state is CLOSED

    def accept_queue_full(self) -> bool:
        return len(self.accept_queue) >= self.accept_limit

    def _drop_overflow(self) -> ListenAction:
        # Linux: LINUX_MIB_LISTENOVERFLOWS and then tcp_listendrop (LINUX_MIB_LISTENDROPS).
        self._mib.ListenOverflows += 1
        self._mib.ListenDrops += 1
        return DROP

    def classify(
        self, seg: TCPSegment, key: Key, now: float, *, table_full: bool
    ) -> tuple[ListenAction, CookieOptions | None]:
        """RFC 9293 3.10.7.2 for a segment with no connection of its own. ``table_full``: the stack is at
        max_connections, so nothing that would create a TCB may proceed."""
        flags = seg.flags
        # First: "An incoming RST segment could not be valid ... it should be ignored."
        if flags & RST:
            return DROP, None
        # Second: "Any acknowledgment is bad if it arrives on a connection still in the LISTEN state"
        # -- unless it completes a cookie handshake (RFC 4987 3.6).
        if flags & ACK:
            if flags & SYN or not self._cookies_in_use(now):
                return RESET, None
            config = self._config
            options = self.cookies.validate(
                key,
                seg.seq,
                seg.ack,
                seg.ts_ecr if seg.has_timestamps else None,
                now,
                timestamps_enabled=config.timestamps,
                sack_enabled=config.sack,
                wscale_enabled=config.window_scaling,
            )
            if options is None:
                # Linux counts SyncookiesFailed and lets LISTEN processing answer with a RST.
                self._mib.SyncookiesFailed += 1
                return RESET, None
            self._mib.SyncookiesRecv += 1
            if self.accept_queue_full():
                return self._drop_overflow(), None
            if table_full:
                self._mib.ListenDrops += 1
                return DROP, None
            return COOKIE_ACK, options
        # Fourth: "Any other control or text-bearing segment (not containing SYN) ... drop it". Linux also
        # discards SYN+FIN here (tcp_rcv_state_process), a combination no real stack sends.
        if not flags & SYN or flags & FIN:
            return DROP, None
        return self._classify_syn(now, table_full), None

    def _classify_syn(self, now: float, table_full: bool) -> ListenAction:
        """RFC 9293 3.10.7.2 third check, a SYN. Linux tcp_conn_request: decide on cookies first, then
        refuse when the accept queue is full (a completed connection would have nowhere to go)."""
        want_cookie = self._config.syncookies == "on"
        if not want_cookie and len(self.syn_queue) >= self.syn_limit:
            if self._config.syncookies == "off":
                return self._drop_queue_full()
            want_cookie = True
        if self.accept_queue_full():
            return self._drop_overflow()
        if want_cookie:
            self._mib.SyncookiesSent += 1
            self._cookie_sent_at = now
            return SEND_COOKIE
        if table_full:
            self._mib.ListenDrops += 1
            return DROP
        return NEW_CHILD

    def _drop_queue_full(self) -> ListenAction:
        self._mib.TCPReqQFullDrop += 1
        self._mib.ListenDrops += 1
        return DROP

    def _cookies_in_use(self, now: float) -> bool:
        if self._config.syncookies == "on":
            return True
        sent = self._cookie_sent_at
        return sent is not None and now - sent < COOKIE_MAX_AGE * COOKIE_PERIOD

    # -- queues --------------------------------------------------------------------------------------

    def add_child(self, key: Key, conn: Connection) -> None:
        """A child TCB created for a SYN (in SYN-RECEIVED)."""
        self.syn_queue[key] = conn

    def admits_final_ack(self) -> bool:
        """Whether a child may complete its handshake now. When the accept queue is full Linux drops the
        final ACK (tcp_check_req -> syn_recv_sock fails, tcp_abort_on_overflow=0): the child stays in
        SYN-RECEIVED and the peer's retransmissions retry later."""
        if self.accept_queue_full():
            self._drop_overflow()
            return False
        return True

    def child_established(self, key: Key, conn: Connection) -> None:
        """A child reached ESTABLISHED: from the SYN queue (if it came from there) to the accept queue."""
        self.syn_queue.pop(key, None)
        self.accept_queue.append(conn)

    def child_gone(self, key: Key, conn: Connection) -> None:
        """A child closed (reset, timed out) before the application accepted it."""
        if self.syn_queue.get(key) is conn:
            del self.syn_queue[key]
        elif conn in self.accept_queue:
            self.accept_queue.remove(conn)

    def pop(self) -> Connection | None:
        """The oldest established child, or None."""
        return self.accept_queue.popleft() if self.accept_queue else None

    def close(self, now: float) -> list[Connection]:
        """LISTEN -> CLOSED; returns the queued children, which the stack resets (Linux
        inet_csk_listen_stop aborts both queues)."""
        self._machine.apply(APP_CLOSE, now)
        children = [*self.syn_queue.values(), *self.accept_queue]
        self.syn_queue.clear()
        self.accept_queue.clear()
        return children


@dataclass(slots=True)
class PendingRequest:
    """A SYN the promiscuous listener holds unanswered. ``syn`` is that SYN rebuilt with its options (the
    received packet is not ours to keep): accept_request hands its parsed form to ``accept_syn``, and an
    ICMP refusal quotes its headers."""

    conn: Connection
    syn: bytes
    deadline: float


class InterceptListener(Listener):
    """The listener of ``Stack.listen_any``: every SYN for an address and port that no connection or
    ordinary listener claims becomes a :class:`PendingRequest`, answered by the application.

    The request table is bounded like a SYN queue: pending requests plus SYN-RECEIVED children never
    exceed ``syn_limit`` (min(backlog, max_syn_backlog)); beyond it SYNs are dropped (TCPReqQFullDrop)
    and the clients' retransmissions retry. SYN cookies are never used here: a cookie SYN-ACK answers
    before the application has decided, the accept-then-reset this mode exists to avoid. A request not
    answered within ``request_timeout`` expires (InterceptExpired) without a word to the peer.
    """

    __slots__ = ("request_timeout", "requests")

    def __init__(
        self,
        backlog: int,
        config: TCPConfig,
        mib: MIB,
        cookies: SynCookies,
        now: float,
        *,
        request_timeout: float,
        tracer: Callable[[TransitionRecord], None] | None = None,
    ) -> None:
        if not request_timeout > 0:
            raise ValueError(f"request_timeout must be > 0, got {request_timeout}")
        # Address and port 0: the wildcard, as ss shows an unbound listener.
        super().__init__(0, 0, backlog, config, mib, cookies, now, tracer=tracer)
        #: Pending requests in arrival order, which is deadline order (one timeout for all).
        self.requests: dict[Key, PendingRequest] = {}
        self.request_timeout = request_timeout

    def __repr__(self) -> str:
        return (
            f"InterceptListener({self.state.value}, requests {len(self.requests)}, syn "
            f"{len(self.syn_queue)}/{self.syn_limit}, accept {len(self.accept_queue)}/{self.accept_limit})"
        )

    def _cookies_in_use(self, now: float) -> bool:
        return False  # see the class docstring: an ACK here is never a cookie ACK, so it is answered RST

    def _classify_syn(self, now: float, table_full: bool) -> ListenAction:
        if len(self.requests) + len(self.syn_queue) >= self.syn_limit:
            return self._drop_queue_full()
        if self.accept_queue_full():
            return self._drop_overflow()
        if table_full:
            self._mib.ListenDrops += 1
            return DROP
        return REQUEST

    def add_request(self, key: Key, conn: Connection, syn: TCPSegment, now: float) -> None:
        local_addr, local_port, remote_addr, remote_port = key
        packet = tcpcore.build_tcp_ipv4(
            remote_addr,
            local_addr,
            remote_port,
            local_port,
            syn.seq,
            0,
            SYN,
            syn.window,
            mss=syn.mss,
            wscale=syn.wscale,
            sack_permitted=syn.sack_permitted,
            timestamps=(syn.ts_val, syn.ts_ecr) if syn.has_timestamps else None,
        )
        self.requests[key] = PendingRequest(conn, packet, now + self.request_timeout)
        self._mib.InterceptRequests += 1

    def pending_input(self, seg: TCPSegment) -> None:
        """A segment for a pending request's 4-tuple. Nothing was sent to the peer yet, so only its SYN
        retransmissions are expected: absorbed, like Linux's request socket without its SYN-ACK resend.
        Anything else is dropped (an RST or ACK cannot refer to anything we sent)."""
        if seg.flags & SYN:
            self._mib.InterceptSynAbsorbed += 1

    def next_expiry(self) -> float | None:
        oldest = next(iter(self.requests.values()), None)
        return oldest.deadline if oldest is not None else None

    def expired(self, now: float) -> list[Connection]:
        """The connections of requests past their deadline, oldest first (the stack ends each)."""
        out = []
        for request in self.requests.values():
            if request.deadline > now:
                break
            out.append(request.conn)
        self._mib.InterceptExpired += len(out)
        return out

    def child_gone(self, key: Key, conn: Connection) -> None:
        request = self.requests.get(key)
        if request is not None and request.conn is conn:
            del self.requests[key]
        else:
            super().child_gone(key, conn)
