"""One TCP connection, sans-I/O: the application's calls (RFC 9293 3.9 user interface, socket-shaped),
on top of the input (pytcp.tcp_input) and output (pytcp.tcp_output) halves of the engine.

The owner feeds segments with ``handle_segment``, collects packets with ``poll_transmit``, drives
``get_timer`` / ``handle_timer`` and receives events through the ``emit`` callback. Application calls
(send, recv, shutdown, close, abort, option changes) call the ``wake`` callback whenever they queue output
or move the timer deadline, so an owner that polls only busy connections never misses one. Time is always
an argument; nothing here reads a clock.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from dataclasses import dataclass
from errno import ECONNREFUSED, ECONNRESET, EISCONN, ENOTCONN, EPIPE, ETIMEDOUT
from os import strerror
from typing import Concatenate, ParamSpec, TypeVar

from tcpcore import TCPSegment

from .config import TCPConfig, check_knob
from .receiver import Receiver, choose_wscale
from .state import (
    APP_ABORT,
    APP_CLOSE,
    APP_CONNECT,
    APP_LISTEN,
    CLOSE_WAIT,
    CLOSED,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LISTEN,
    RCV_SYN,
    SYN_RECEIVED,
    SYN_SENT,
    TIME_WAIT,
    TIME_WAIT_REUSE,
    State,
)
from .tcb import ChallengeAckLimiter, ts_clock
from .tcp_input import InputMixin
from .timers import KEEPALIVE, RETRANSMIT, TimerKind

__all__ = ["ChallengeAckLimiter", "Connection", "TCPInfo"]

_SEND_STATES = (SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT)
_READ_STATES = (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2)
# RFC 9293 3.10.5 ABORT: these states tell the peer with a RST; the others just delete the TCB.
_ABORT_RST_STATES = (SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT)
_ERRORS: dict[int, type[OSError]] = {
    ECONNRESET: ConnectionResetError,
    ECONNREFUSED: ConnectionRefusedError,
    ETIMEDOUT: TimeoutError,
    EPIPE: BrokenPipeError,
}


def _os_error(err: int) -> OSError:
    return _ERRORS.get(err, OSError)(err, strerror(err))


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _app_call(method: Callable[Concatenate[Connection, _P], _R]) -> Callable[Concatenate[Connection, _P], _R]:
    """An application entry point: afterwards, if it queued output or moved the timer deadline, tell the
    owner through the wake hook (which the stack turns into a poll and a timer-heap update), so no
    caller has to remember to."""

    def call(self: Connection, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        deadline = self.timers.deadline()
        try:
            return method(self, *args, **kwargs)
        finally:
            if self.wants_transmit or self.timers.deadline() != deadline:
                self._wake(self)

    functools.update_wrapper(call, method)
    return call


@dataclass(frozen=True, slots=True)
class TCPInfo:
    """A snapshot like Linux struct tcp_info. Sizes are in bytes, times in seconds."""

    state: State
    rtt: float  # smoothed RTT (0 before the first sample)
    rttvar: float
    rto: float
    cwnd: int
    ssthresh: int
    snd_mss: int  # payload bytes per segment without SACK blocks
    rcv_mss: int
    snd_wnd: int
    rcv_wnd: int
    snd_wscale: int
    rcv_wscale: int
    sack: bool
    timestamps: bool
    ca_state: str  # open / recovery / loss
    retransmits: int  # consecutive retransmission timeouts now
    probes: int  # unanswered zero-window or keep-alive probes
    total_retrans: int
    bytes_sent: int
    bytes_acked: int
    bytes_received: int
    unacked: int  # in flight (FlightSize)
    notsent: int  # queued, not sent yet
    sacked: int
    lost: int
    retrans: int  # retransmitted and still in flight
    pipe: int
    readable: int


class Connection(InputMixin):
    """One TCB. See the module docstring and docs of each method."""

    __slots__ = ()

    # -- for the stack (SYN cookies and the first SYN-ACK must offer what a TCB offers) --------------
    @staticmethod
    def initial_wscale(config: TCPConfig) -> int:
        """Our window shift when the peer offers window scaling (RFC 7323 2.3)."""
        return choose_wscale(config.max_buffer)

    @staticmethod
    def initial_window(config: TCPConfig) -> int:
        """The window of our SYN / SYN-ACK: unscaled (RFC 7323 2.2)."""
        return min(config.recv_buffer, 0xFFFF)

    @staticmethod
    def ts_clock(now: float) -> int:
        """The TSval clock every connection uses (milliseconds, RFC 7323 5.4)."""
        return ts_clock(now)

    # -- opening ------------------------------------------------------------------------------------
    @_app_call
    def connect(self, now: float) -> None:
        """Active OPEN (RFC 9293 3.10.1): CLOSED -> SYN-SENT with our SYN queued."""
        if self._sm.state is not CLOSED or self._syn_sent_at is not None:
            raise _os_error(EISCONN)
        self._apply(APP_CONNECT, now)
        self._syn_pending = 1
        self._tx_dirty = True
        self.timers.arm(RETRANSMIT, now + self.rtt.rto)

    @_app_call
    def accept_syn(self, syn: TCPSegment, now: float) -> None:
        """Become the child TCB of a listener for ``syn`` (RFC 9293 3.10.7.2 third check): LISTEN ->
        SYN-RECEIVED with our SYN-ACK queued. Text on the SYN is not accepted (the peer resends it)."""
        self._passive = True
        self._apply(APP_LISTEN, now, "child of a listener")
        self._negotiate(syn.mss, syn.wscale, syn.sack_permitted, syn.has_timestamps)
        self._new_receiver(syn.seq)
        if self.ts_ok:
            self._set_ts_recent(syn.ts_val, now)
        self.snd_wnd = self.max_snd_wnd = syn.window  # unscaled in a SYN (RFC 7323 2.2)
        self.snd_wl1 = syn.seq
        self._syn_pending = 1
        self._tx_dirty = True
        self._apply(RCV_SYN, now)
        self.timers.arm(RETRANSMIT, now + self.rtt.rto)

    @_app_call
    def establish_from_cookie(
        self, ack: TCPSegment, *, irs: int, mss: int, wscale: int, sack: bool, timestamps: bool, now: float
    ) -> None:
        """A valid SYN-cookie ACK (RFC 4987 3.6): LISTEN -> SYN-RECEIVED from the cookie's options, then
        the ACK itself completes the handshake and its text and FIN are processed as usual."""
        self._passive = True
        self._apply(APP_LISTEN, now, "child of a listener")
        self._negotiate(mss, wscale, sack, timestamps)
        self._new_receiver(irs)
        if self.ts_ok and ack.has_timestamps:
            self._set_ts_recent(ack.ts_val, now)
        self._apply(RCV_SYN, now, "SYN cookie")
        # Should the ACK not complete the handshake, the SYN-ACK is retransmitted as for any child.
        self.timers.arm(RETRANSMIT, now + self.rtt.rto)
        self.handle_segment(ack, now)

    # -- data ---------------------------------------------------------------------------------------
    @_app_call
    def send(self, data: bytes | bytearray | memoryview, now: float) -> int:
        """Queue bytes (RFC 9293 3.10.2 SEND); returns how many fitted in the send buffer (0 when full).
        Raises BrokenPipeError after shutdown(SHUT_WR) or close(), the connection's error after a reset
        or a timeout, and OSError(ENOTCONN) before connect."""
        if self._error is not None:
            raise _os_error(self._error)
        state = self._sm.state
        if self._wr_shut or state not in _SEND_STATES:
            raise _os_error(ENOTCONN if state is CLOSED and not self._wr_shut else EPIPE)
        n = self.snd.write(data)
        if n < (data.nbytes if isinstance(data, memoryview) else len(data)):  # bytes, not items
            self._want_writable = True
        if n:
            self._tx_dirty = True
        return n

    @_app_call
    def recv(self, max_bytes: int, now: float) -> bytes:
        """Up to ``max_bytes`` received bytes (RFC 9293 3.10.3); b"" means none now (see ``at_eof``)."""
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        rcv = self._readable_receiver()
        if rcv is None or not max_bytes:
            return b""
        data = rcv.read(max_bytes)
        if data:
            self._after_read(now)
        return data

    @_app_call
    def recv_into(self, buffer: bytearray | memoryview, now: float) -> int:
        """Like recv, into a writable buffer; returns the byte count."""
        rcv = self._readable_receiver()
        if rcv is None:
            return 0
        n = rcv.read_into(buffer)
        if n:
            self._after_read(now)
        return n

    def _readable_receiver(self) -> Receiver | None:
        """The receiver if reading makes sense; raises the connection's error once nothing is left."""
        self._readable_notified = False
        rcv = self.rcv
        if self._error is not None and (rcv is None or not rcv.readable):
            raise _os_error(self._error)
        if rcv is None or self._rd_shut:
            return None
        return rcv

    def _after_read(self, now: float) -> None:
        rcv = self.rcv
        assert rcv is not None
        if self._rcvbuf_lock:
            if rcv.capacity != self._recv_cap:
                rcv.resize(self._recv_cap)  # SO_RCVBUF waits for an empty buffer
        elif rcv.space_adjust(now, rcv.rtt or self.rtt.srtt or 0.0, self.config.max_buffer):
            # Autotuning grew the buffer. Without the receiver's RTT estimate from timestamps, the
            # sender side's (at least the handshake's sample) stands in for it.
            self._recv_cap = rcv.capacity
        if self._sm.state in _READ_STATES and rcv.window_update_due():
            # The window reopened (from zero or from a small value): tell the peer (RFC 9293 3.8.6.2.2).
            self._ack_now = True
            self._tx_dirty = True

    # -- closing ------------------------------------------------------------------------------------
    @_app_call
    def shutdown(self, how: int, now: float) -> None:
        """socket.SHUT_RD, SHUT_WR or SHUT_RDWR. SHUT_WR sends our FIN after the queued data (half-close;
        the other direction keeps flowing); SHUT_RD discards what arrives from now on."""
        if how not in (socket.SHUT_RD, socket.SHUT_WR, socket.SHUT_RDWR):
            raise ValueError(f"bad shutdown mode {how!r}")
        state = self._sm.state
        if state is CLOSED or state is LISTEN:
            raise _os_error(ENOTCONN)
        if how != socket.SHUT_WR:
            self._rd_shut = True
            if self.rcv is not None:
                self.rcv.read(-1)
        if how != socket.SHUT_RD:
            self._shut_write(now)

    def _shut_write(self, now: float) -> None:
        if self._wr_shut:
            return
        self._wr_shut = True
        if self._sm.state in _SEND_STATES and self._sm.state not in (ESTABLISHED, CLOSE_WAIT):
            # RFC 9293 3.10.4: queued until ESTABLISHED (in SYN-RECEIVED too, see pytcp.state).
            self._fin_deferred = True
        else:
            self._queue_fin(now)

    @_app_call
    def close(self, now: float) -> None:
        """Full close (RFC 9293 3.10.4). Unread received data resets the connection instead (RFC 2525
        2.17, Linux TCPAbortOnClose); so does data arriving later (TCPAbortOnData)."""
        if self._orphan:
            return
        self._orphan = True
        self._tx_dirty = True
        state = self._sm.state
        if state is CLOSED or state is TIME_WAIT:
            return
        if state is SYN_SENT or state is LISTEN:
            self._apply(APP_CLOSE, now)
            return
        rcv = self.rcv
        if rcv is not None and rcv.readable and not self._rd_shut:
            self.mib.TCPAbortOnClose += 1
            self._abort(now)
            return
        self._shut_write(now)
        if self._sm.state is FIN_WAIT_2:
            self.timers.arm(TimerKind.FIN_WAIT_2, now + self.config.fin_timeout)
        self._rearm(now)

    @_app_call
    def abort(self, now: float) -> None:
        """ABORT (RFC 9293 3.10.5, SO_LINGER 0): RST now if the peer is synchronized, then CLOSED."""
        if self._sm.state is CLOSED:
            return
        self._orphan = True
        if self._sm.state in _ABORT_RST_STATES:
            self.mib.TCPAbortOnData += 1  # as Linux tcp_close with a zero linger time
        self._abort(now)

    def _abort(self, now: float) -> None:
        if self._sm.state in _ABORT_RST_STATES:
            self._reset_peer()
        self._apply(APP_ABORT, now)

    # -- status -------------------------------------------------------------------------------------
    @property
    def readable(self) -> int:
        """Bytes ready for recv."""
        rcv = self.rcv
        return rcv.readable if rcv is not None and not self._rd_shut else 0

    @property
    def writable(self) -> int:
        """Free send-buffer space (0 once sending is no longer possible)."""
        if self._wr_shut or self._error is not None or self._sm.state not in _SEND_STATES:
            return 0
        return self.snd.free

    @property
    def at_eof(self) -> bool:
        """The peer's FIN arrived and every byte before it was read (or the connection is gone)."""
        rcv = self.rcv
        if rcv is None:
            return self._sm.state is CLOSED and self._error is None and self._wr_shut
        return (rcv.fin_done or self._rd_shut) and not self.readable

    @property
    def closed(self) -> bool:
        return self._sm.state is CLOSED

    @property
    def error(self) -> int | None:
        """The errno that ended the connection (reset, timeout), if any."""
        return self._error

    # -- socket options -----------------------------------------------------------------------------
    @property
    def nodelay(self) -> bool:
        return self._nodelay

    # Each option setter hands over to an _app_call method: Cython compiles no property setter that
    # carries another decorator.
    @nodelay.setter
    def nodelay(self, value: bool) -> None:
        self._set_nodelay(value)

    @_app_call
    def _set_nodelay(self, value: bool) -> None:
        self._nodelay = bool(value)
        self._tx_dirty = True  # as Linux TCP_NODELAY: push what Nagle was holding

    @property
    def keepalive(self) -> bool:
        return self._keepalive

    @keepalive.setter
    def keepalive(self, value: bool) -> None:
        self._set_keepalive(value)

    @_app_call
    def _set_keepalive(self, value: bool) -> None:
        self._keepalive = bool(value)
        self._arm_keepalive()

    @property
    def keepalive_time(self) -> float:
        return self._keepalive_time

    @keepalive_time.setter
    def keepalive_time(self, value: float) -> None:
        self._set_keepalive_time(value)

    @_app_call
    def _set_keepalive_time(self, value: float) -> None:
        self._keepalive_time = check_knob("keepalive_time", value)  # TCP_KEEPIDLE, the knob's bounds
        self._arm_keepalive()

    def _arm_keepalive(self) -> None:
        """(Re)arm or stop the keep-alive timer after SO_KEEPALIVE / TCP_KEEPIDLE changed; it counts idle
        time from the last segment received, as Linux keepalive_time_elapsed."""
        timers = self.timers
        kind = timers.kind
        if not self._keepalive:
            if kind is KEEPALIVE:
                timers.stop()
            return
        snd = self.snd
        idle = snd.nxt == snd.una == snd.end and not self._probes
        if (kind is None or kind is KEEPALIVE) and idle and self._keepalive_active():
            timers.arm(KEEPALIVE, self._last_rcv + self._keepalive_time)

    @_app_call
    def set_buffer_sizes(self, recv: int | None = None, send: int | None = None) -> None:
        """SO_RCVBUF / SO_SNDBUF, clamped to [2*mss, max_buffer]; each fixes its buffer's size, which
        autotuning no longer changes (Linux SOCK_RCVBUF_LOCK / SOCK_SNDBUF_LOCK). A new receive size
        applies once the receive buffer is empty; the window scale stays what the handshake chose (it
        was derived from max_buffer, so any size can be advertised)."""
        cfg = self.config

        def clamp(value: int) -> int:
            if value <= 0:
                raise ValueError(f"buffer size must be > 0, got {value}")
            return min(max(value, 2 * cfg.mss), cfg.max_buffer)

        if send is not None:
            self.snd.capacity = clamp(send)
            self.snd.autotune = False  # Linux SOCK_SNDBUF_LOCK
        if recv is not None:
            self._recv_cap = clamp(recv)
            self._rcvbuf_lock = True
            if self.rcv is not None:
                self.rcv.resize(self._recv_cap)

    @_app_call
    def reuse_time_wait(self, now: float) -> None:
        """The stack hands this TIME-WAIT 4-tuple to a new incarnation (RFC 6191, Linux tcp_tw_reuse)."""
        if self._sm.state is TIME_WAIT:
            self._apply(TIME_WAIT_REUSE, now)

    def info(self) -> TCPInfo:
        snd = self.snd
        rcv = self.rcv
        cc = self.cc
        rec = self.rec
        rtt = self.rtt
        return TCPInfo(
            state=self._sm.state,
            rtt=rtt.srtt or 0.0,
            rttvar=rtt.rttvar,
            rto=rtt.rto,
            cwnd=cc.cwnd if cc is not None else 0,
            ssthresh=cc.ssthresh if cc is not None else 0,
            snd_mss=self.snd_mss,
            rcv_mss=rcv.rcv_mss if rcv is not None else 0,
            snd_wnd=self.snd_wnd,
            rcv_wnd=rcv.wnd if rcv is not None else 0,
            snd_wscale=self.snd_wscale,
            rcv_wscale=self.rcv_wscale,
            sack=self.sack_ok,
            timestamps=self.ts_ok,
            ca_state=rec.phase.value if rec is not None else "open",
            retransmits=self._retransmits,
            probes=self._probes,
            total_retrans=self.total_retrans,
            bytes_sent=self.bytes_sent,
            bytes_acked=self.bytes_acked,
            bytes_received=self.bytes_received,
            unacked=snd.flight,
            notsent=snd.unsent,
            sacked=snd.sacked_bytes,
            lost=snd.lost_bytes,
            retrans=snd.retrans_bytes,
            pipe=snd.pipe,
            readable=self.readable,
        )
