"""The transmission control block of one connection (RFC 9293 3.3.1): its variables, the state-change hook
every transition goes through, option negotiation and the timer bookkeeping shared by the input half
(pytcp.tcp_input), the output half (pytcp.tcp_output) and the application API (pytcp.connection).
"""

from __future__ import annotations

import errno
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from tcpcore import ACK, RST, build_tcp_ipv4, tcp_options_length

from . import events
from .config import TCPConfig, check_knob
from .congestion import CongestionControl, create, initial_window
from .mib import MIB
from .receiver import MAX_WSCALE, Receiver, choose_wscale
from .recovery import Recovery
from .rtt import RTTEstimator
from .sender import Sender
from .state import (
    APP_CLOSE,
    CLOSE_WAIT,
    CLOSED,
    ESTABLISHED,
    FIN_WAIT_2,
    GIVE_UP,
    LISTEN,
    RCV_ACK_OF_FIN,
    SYN_RECEIVED,
    SYN_SENT,
    TIME_WAIT,
    TIME_WAIT_REUSE,
    TIMEOUT_TIME_WAIT,
    Event,
    State,
    StateMachine,
    TransitionRecord,
)
from .timers import KEEPALIVE, PERSIST, RETRANSMIT, TimerKind, Timers

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["TCB", "ChallengeAckLimiter", "ts_clock"]

MASK = 0xFFFFFFFF
#: RFC 9293 3.7.1: the send MSS when the peer's SYN has no MSS option.
DEFAULT_MSS = 536
#: Smallest peer MSS we accept, Linux tcp_min_snd_mss (a tiny MSS only serves resource exhaustion).
MIN_SND_MSS = 48
#: RFC 7323 5.5: a TS.Recent older than 24 days is no longer valid for PAWS.
PAWS_IDLE = 24 * 86400.0

_ESTABLISHED_LIKE = (ESTABLISHED, CLOSE_WAIT)  # RFC 4022 tcpCurrEstab
# Per-packet state sets are tuples: membership tests identity first and never calls Enum.__hash__ (a
# Python function) as a frozenset would.
_SYN_STATES = (SYN_SENT, SYN_RECEIVED)
#: Ends of a connection that lose nothing: what arrived before the peer's FIN stays readable in CLOSED
#: until the application reads it (Linux tcp_done leaves the receive queue to a socket not yet closed).
_ORDERLY_ENDS = (RCV_ACK_OF_FIN, TIMEOUT_TIME_WAIT, TIME_WAIT_REUSE)
_KEEPALIVE_STATES = (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_2)
_IDLE_STATES = (CLOSED, LISTEN)  # no segments in or out
_STATE_TIMERS = (TimerKind.TIME_WAIT, TimerKind.FIN_WAIT_2)  # owned by their state: never re-armed


def _no_wake(conn: Connection) -> None:
    """The default wake hook: an owner that polls every connection after each call needs none."""


#: Timestamp clock ticks per second: 1 ms ticks (RFC 7323 5.4 allows 1 ms to 1 s per tick), as Linux.
TS_HZ = 1000
#: Linux tcp_invalid_ratelimit (HZ / 2): the fewest seconds between two duplicate ACKs sent in reply to
#: unacceptable segments without text.
OOW_ACK_INTERVAL = 0.5
#: Control packets (RSTs) a connection holds between two polls: each arriving segment queues at most one
#: and the stack polls after every read batch of 64 packets (pytcp.runtime BATCH_SLOTS).
MAX_CTL_PACKETS = 64


def ts_clock(now: float) -> int:
    """Our TSval for ``now``."""
    return int(now * TS_HZ) & MASK


class ChallengeAckLimiter:
    """RFC 5961 7: at most ``limit`` challenge ACKs per second, shared by every connection of a stack.

    With ``rng`` the budget of each second is drawn from [limit/2, limit*3/2) as Linux
    tcp_send_challenge_ack does, so an attacker cannot count the ACKs to infer sequence numbers
    (CVE-2016-5696); without it the budget is exactly ``limit`` (deterministic tests).
    """

    __slots__ = ("_budget", "_rng", "_second", "limit")

    def __init__(self, limit: int, rng: random.Random | None = None) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self._rng = rng
        self._second = -math.inf
        self._budget = 0

    def challenge_ack_allowed(self, now: float) -> bool:
        second = math.floor(now)
        if second != self._second:
            self._second = second
            half = (self.limit + 1) // 2
            rng = self._rng
            self._budget = self.limit if rng is None else half + rng.randrange(self.limit)
        if self._budget <= 0:
            return False
        self._budget -= 1
        return True


class TCB:
    """Connection variables and the helpers both halves of the engine use."""

    __slots__ = (
        "_ack_now",
        "_ctl",
        "_emit",
        "_error",
        "_fin_deferred",
        "_keepalive",
        "_keepalive_intvl",
        "_keepalive_probes",
        "_keepalive_time",
        "_last_ack_sent",
        "_last_oow_ack",
        "_last_rcv",
        "_last_send",
        "_limiter",
        "_max_sack_blocks",
        "_mss_table",
        "_nodelay",
        "_orphan",
        "_passive",
        "_persist_backoff",
        "_persist_force",
        "_probe_due",
        "_probes",
        "_rcvbuf_lock",
        "_rd_shut",
        "_readable_notified",
        "_recv_cap",
        "_retransmits",
        "_sm",
        "_soft_error",
        "_stall_since",
        "_syn_pending",
        "_syn_rtx_at",
        "_syn_sent_at",
        "_tx_dirty",
        "_user_timeout",
        "_wake",
        "_want_writable",
        "_wr_shut",
        "bytes_acked",
        "bytes_received",
        "bytes_sent",
        "cc",
        "config",
        "irs",
        "iss",
        "local_addr",
        "local_port",
        "max_snd_wnd",
        "mib",
        "min_rtt",
        "rcv",
        "rcv_wscale",
        "rec",
        "remote_addr",
        "remote_port",
        "rtt",
        "sack_ok",
        "snd",
        "snd_mss",
        "snd_wl1",
        "snd_wl2",
        "snd_wnd",
        "snd_wscale",
        "timers",
        "total_retrans",
        "ts_ok",
        "ts_recent",
        "ts_recent_time",
        "wscale_ok",
    )

    def __init__(
        self,
        config: TCPConfig,
        mib: MIB,
        *,
        local_addr: int,
        local_port: int,
        remote_addr: int,
        remote_port: int,
        iss: int,
        now: float,
        emit: Callable[[events.Event], None],
        tracer: Callable[[TransitionRecord], None] | None = None,
        limiter: ChallengeAckLimiter | None = None,
        wake: Callable[[Connection], None] = _no_wake,
    ) -> None:
        self.config = config
        self.mib = mib
        self._emit = emit
        self._wake = wake
        self._limiter = limiter if limiter is not None else ChallengeAckLimiter(config.challenge_ack_limit)
        self.local_addr = local_addr
        self.local_port = local_port
        self.remote_addr = remote_addr
        self.remote_port = remote_port
        self._sm = StateMachine(
            CLOSED, name=(local_addr, local_port, remote_addr, remote_port), tracer=tracer
        )
        self.iss = iss & MASK
        self.irs = 0
        self.snd = Sender(config.send_buffer)
        self._recv_cap = config.recv_buffer
        self._rcvbuf_lock = False  # SO_RCVBUF fixed the size: no autotuning (Linux SOCK_RCVBUF_LOCK)
        self.rcv: Receiver | None = None  # from the peer's SYN on
        self.rec: Recovery | None = None  # from ESTABLISHED on
        self.cc: CongestionControl | None = None  # from ESTABLISHED on
        self.rtt = RTTEstimator(config.rto_initial, config.rto_min, config.rto_max)
        # Smallest RTT sample so far (RFC 8985 6.1 RACK.min_RTT, over the connection's life).
        self.min_rtt = math.inf
        self.timers = Timers()
        # Negotiated at the handshake (RFC 9293 3.7.1, RFC 7323, RFC 2018).
        self.snd_mss = DEFAULT_MSS
        self._mss_table = [DEFAULT_MSS] * 5
        self._max_sack_blocks = 0
        self.snd_wscale = 0
        self.rcv_wscale = 0
        self.wscale_ok = False
        self.sack_ok = False
        self.ts_ok = False
        self.ts_recent: int | None = None
        self.ts_recent_time: float | None = None
        self._last_ack_sent = 0  # RCV.NXT in our last ACK (RFC 7323 4.3 Last.ACK.sent)
        # Send window (RFC 9293 3.3.1): SND.WND in bytes, SND.WL1/WL2, and MAX.SND.WND (RFC 5961 5.2).
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0
        self._passive = False
        self._syn_sent_at: float | None = None
        self._syn_rtx_at: float | None = None  # when our SYN / SYN-ACK was last retransmitted
        self._syn_pending = 0  # 1: send our SYN / SYN-ACK, 2: send it again (a retransmission)
        # Timeouts: consecutive retransmission timeouts, unanswered probes (keep-alive or zero-window,
        # Linux icsk_probes_out), when the current stall began (user timeout), persist backoff.
        self._retransmits = 0
        self._probes = 0
        self._stall_since: float | None = None
        self._persist_backoff = 0
        self._persist_force = False
        self._probe_due = False
        self._ack_now = False
        self._last_oow_ack = -math.inf  # when the last rate-limited duplicate ACK went out
        self._ctl: list[bytes] = []  # built control packets (RSTs) awaiting poll_transmit
        self._tx_dirty = False
        # Application side.
        self._wr_shut = False
        self._rd_shut = False
        self._orphan = False  # close() was called: nobody reads any more
        self._fin_deferred = False  # CLOSE before ESTABLISHED, queued (RFC 9293 3.10.4)
        self._error: int | None = None
        # Linux sk_err_soft: the errno of the last ICMP error that did not end the connection, reported
        # instead of ETIMEDOUT if the connection later gives up (RFC 1122 4.2.3.9).
        self._soft_error: int | None = None
        self._readable_notified = False
        self._want_writable = False
        self._nodelay = config.nodelay
        self._keepalive = config.keepalive
        self._keepalive_time = config.keepalive_time
        self._keepalive_intvl = config.keepalive_intvl
        self._keepalive_probes = config.keepalive_probes
        self._user_timeout = config.user_timeout
        self._last_rcv = now
        self._last_send = now
        self.bytes_sent = 0
        self.bytes_acked = 0
        self.bytes_received = 0
        self.total_retrans = 0

    # -- identity -----------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self._sm.state

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.local_addr, self.local_port, self.remote_addr, self.remote_port)

    @property
    def snd_nxt(self) -> int:
        """SND.NXT as a 32-bit sequence number."""
        return (self.iss + self.snd.nxt) & MASK

    @property
    def rcv_nxt(self) -> int:
        """RCV.NXT as a 32-bit sequence number (0 before the peer's SYN)."""
        rcv = self.rcv
        return rcv.rcv_nxt if rcv is not None else 0

    def __repr__(self) -> str:
        return f"Connection({self._sm.name} {self._sm.state.value})"

    def _notify(self, kind: Callable[..., events.Event], *args: int) -> None:
        """Emit an event about this connection (``self`` is always a Connection at run time)."""
        self._emit(kind(self, *args))

    # -- state changes ------------------------------------------------------------------------------
    def _apply(self, event: Event, now: float, note: str = "") -> State:
        """The state-change hook: every transition goes through here (and StateMachine.apply), so the
        MIB gauges, the timers tied to states and the Connected / Closed events live in one place."""
        old = self._sm.state
        new = self._sm.apply(event, now, note)
        mib = self.mib
        if (old in _ESTABLISHED_LIKE) != (new in _ESTABLISHED_LIKE):
            mib.CurrEstab += 1 if new in _ESTABLISHED_LIKE else -1
        # RFC 4022 counters, all defined as transitions.
        if new is SYN_SENT and old is CLOSED:
            mib.ActiveOpens += 1
        elif new is SYN_RECEIVED and old is LISTEN:
            mib.PassiveOpens += 1
        elif new is LISTEN and old is SYN_RECEIVED:
            mib.AttemptFails += 1
        elif new is CLOSED:
            if old in _SYN_STATES:
                mib.AttemptFails += 1
            elif old in _ESTABLISHED_LIKE:
                mib.EstabResets += 1
            elif old is TIME_WAIT and event is TIMEOUT_TIME_WAIT:
                mib.TW += 1
            self._teardown(keep_unread=event in _ORDERLY_ENDS and not self._orphan)
            self._notify(events.Closed)
        elif new is ESTABLISHED:
            self._on_established(now)
            self._notify(events.Connected)
            if self._fin_deferred:
                self._fin_deferred = False
                self._queue_fin(now)
        elif new is TIME_WAIT:
            # RFC 9293 3.10.7.4: TIME-WAIT lasts 2 MSL; nothing of ours is outstanding any more.
            self.timers.arm(TimerKind.TIME_WAIT, now + self.config.time_wait)
            self.snd.reset()
            if self.rcv is not None and not self.rcv.readable:
                self.rcv.release()  # unread bytes stay readable (a half-closed reader may be behind)
        elif new is FIN_WAIT_2 and self._orphan:
            self.timers.arm(TimerKind.FIN_WAIT_2, now + self.config.fin_timeout)
        return new

    def _teardown(self, *, keep_unread: bool = False) -> None:
        """CLOSED: no timers, no buffers (RFC 9293 "delete the TCB"); queued RSTs still go out.
        ``keep_unread``: after an orderly end, bytes the application has not read yet stay readable."""
        timers = self.timers
        timers.stop()
        timers.delack_at = None
        self._ack_now = False
        self._syn_pending = 0
        self._probe_due = False
        self._wr_shut = True
        self.snd.reset()
        rcv = self.rcv
        if rcv is not None and not (keep_unread and rcv.readable):
            rcv.release()

    def _on_established(self, now: float) -> None:
        """Data transfer begins: congestion control, loss recovery and the RTO restart."""
        mss = self.snd_mss
        # RFC 5681 3.1 / RFC 6928: IW10; one segment if the handshake needed retransmissions. As Linux
        # tcp_init_transfer, a single (likely spurious, with the 1 s initial RTO) retransmission is
        # forgiven: only more than one cuts the window.
        iw = mss if self.total_retrans > 1 else initial_window(mss, self.config.initial_cwnd_segments)
        self.cc = create(self.config.congestion_control, mss, iw, now)
        self.rec = Recovery(self.sack_ok)
        if self._syn_rtx_at is not None:
            self.rtt.restart_after_syn_timeout()  # RFC 6298 5.7
        self._retransmits = 0
        self._last_send = now
        self.timers.stop(RETRANSMIT)

    def _queue_fin(self, now: float) -> None:
        """The user's CLOSE in a synchronized state (RFC 9293 3.10.4): FIN after the queued data."""
        state = self._sm.state
        if state is ESTABLISHED or state is CLOSE_WAIT:
            self.snd.fin_queued = True
            self._tx_dirty = True
            self._apply(APP_CLOSE, now)

    # -- option negotiation -------------------------------------------------------------------------
    def _negotiate(self, mss: int, wscale: int, sack: bool, timestamps: bool) -> None:
        """Options from the peer's SYN (or SYN-ACK, or a SYN cookie): each is on only if both sides sent
        it, except MSS, which each side announces on its own (RFC 9293 3.7.1)."""
        cfg = self.config
        peer_mss = max(mss or DEFAULT_MSS, MIN_SND_MSS)
        # RFC 7323 2.2-2.3: scaling needs the option from both sides; shifts above 14 are clamped.
        self.wscale_ok = cfg.window_scaling and wscale >= 0
        self.snd_wscale = min(wscale, MAX_WSCALE) if self.wscale_ok else 0
        self.rcv_wscale = choose_wscale(cfg.max_buffer) if self.wscale_ok else 0
        self.sack_ok = cfg.sack and sack  # RFC 2018 2
        self.ts_ok = cfg.timestamps and timestamps  # RFC 7323 3.2
        # RFC 9293 3.7.1 / RFC 6691: the MSS counts no options; each segment's payload is what the
        # MSS leaves beside the options that segment carries (Linux tcp_current_mss).
        self._set_mss(min(peer_mss, cfg.mss))

    def _set_mss(self, mss: int) -> None:
        """Segment sizes for an MSS (options not counted): the payload each segment may carry beside its
        timestamp and 0..4 SACK blocks, and how many SACK blocks an ACK may carry at all."""
        ts = self.ts_ok
        self._mss_table = [mss - tcp_options_length(timestamps=ts, sack_blocks=k) for k in range(5)]
        self.snd_mss = self._mss_table[0]
        blocks = 0
        if self.sack_ok:
            while blocks < 4 and self._mss_table[blocks + 1] < self._mss_table[blocks]:
                blocks += 1
        self._max_sack_blocks = blocks

    def _new_receiver(self, irs: int) -> Receiver:
        self.irs = irs
        cfg = self.config
        rcv = self.rcv = Receiver(irs, self._recv_cap, cfg.max_reassembly_ranges, self.rcv_wscale, cfg.mss)
        rcv.rcv_mss = min(self.snd_mss, DEFAULT_MSS)
        self._last_ack_sent = rcv.rcv_nxt
        return rcv

    def _set_ts_recent(self, ts_val: int, now: float) -> None:
        self.ts_recent = ts_val
        self.ts_recent_time = now

    # -- timers -------------------------------------------------------------------------------------
    def _persist_timeout(self) -> float:
        """RFC 9293 3.8.6.1 / RFC 1122 4.2.2.17: probe intervals back off exponentially from the RTO
        (Linux tcp_probe0_when), capped at rto_max."""
        rtt = self.rtt
        return min(rtt.rto * (1 << min(self._persist_backoff, 30)), rtt.rto_max)

    def _rearm(self, now: float) -> None:
        """Choose the main timer from what is outstanding. Idempotent: a running retransmission timer
        is never pushed back here (RFC 6298 5.3 restarts it only on new ACKs)."""
        timers = self.timers
        kind = timers.kind
        state = self._sm.state
        if kind in _STATE_TIMERS or state is CLOSED:
            return
        if state in _SYN_STATES:
            if kind is not RETRANSMIT and (self._syn_sent_at is not None or self._syn_pending):
                timers.arm(RETRANSMIT, now + self.rtt.rto)
            return
        snd = self.snd
        if snd.nxt != snd.una:
            # RFC 6298 5.1: data (or a FIN) is outstanding; a probe got through (Linux tcp_ack_probe).
            self._persist_backoff = 0
            if kind is not RETRANSMIT:
                timers.arm(RETRANSMIT, now + self.rtt.rto)
            return
        if snd.pending:
            # Data waits for the window and nothing is in flight: the persist timer (RFC 9293 3.8.6.1).
            if kind is not PERSIST:
                timers.arm(PERSIST, now + self._persist_timeout())
            return
        self._persist_backoff = 0
        if self._keepalive_active():
            if kind is not KEEPALIVE:
                timers.arm(KEEPALIVE, self._last_rcv + self._keepalive_time)
        elif kind is not None:
            timers.stop()

    def _keepalive_active(self) -> bool:
        """SO_KEEPALIVE applies: on, and in a state Linux probes in (not an orphan's FIN-WAIT-2, which
        has its own timer)."""
        state = self._sm.state
        return self._keepalive and state in _KEEPALIVE_STATES and not (state is FIN_WAIT_2 and self._orphan)

    # -- socket options the timers read (TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT) -----------------
    @property
    def keepalive_intvl(self) -> float:
        return self._keepalive_intvl

    @keepalive_intvl.setter
    def keepalive_intvl(self, value: float) -> None:
        self._keepalive_intvl = check_knob("keepalive_intvl", value)  # TCP_KEEPINTVL

    @property
    def keepalive_probes(self) -> int:
        return self._keepalive_probes

    @keepalive_probes.setter
    def keepalive_probes(self, value: int) -> None:
        self._keepalive_probes = check_knob("keepalive_probes", value)  # TCP_KEEPCNT

    @property
    def user_timeout(self) -> float:
        """TCP_USER_TIMEOUT in seconds (RFC 5482); 0 leaves the give-up to the retry counts."""
        return self._user_timeout

    @user_timeout.setter
    def user_timeout(self, value: float) -> None:
        self._user_timeout = check_knob("user_timeout", value)

    # -- control segments ---------------------------------------------------------------------------
    def _queue_rst(self, seq: int, ack: int, with_ack: bool) -> None:
        """A RST, built now (it names exact numbers) and sent by the next poll_transmit."""
        if len(self._ctl) >= MAX_CTL_PACKETS:
            return
        self._ctl.append(
            build_tcp_ipv4(
                self.local_addr,
                self.remote_addr,
                self.local_port,
                self.remote_port,
                seq & MASK,
                ack & MASK if with_ack else 0,
                RST | ACK if with_ack else RST,
                0,
                ttl=self.config.ttl,
            )
        )
        self.mib.OutRsts += 1
        self.mib.OutSegs += 1
        self._tx_dirty = True

    def _reset_peer(self) -> None:
        """RST as Linux tcp_send_active_reset: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=RST,ACK>."""
        self._queue_rst(self.snd_nxt, self.rcv_nxt, True)

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 3.2 / 4.2 / 5.2: an ACK that lets a genuine peer resynchronise, rate-limited (7)."""
        if self._limiter.challenge_ack_allowed(now):
            self.mib.TCPChallengeACK += 1
            self._ack_now = True
        else:
            self.mib.TCPAckSkippedChallenge += 1

    def _fail(self, err: int, now: float, *, reset_peer: bool) -> None:
        """Give up on the connection (timeouts): tell the application, go to CLOSED. A soft ICMP error
        seen meanwhile is the better explanation and replaces ``err``, as in Linux tcp_write_err."""
        err = self._soft_error or err
        state = self._sm.state
        silent = state is SYN_RECEIVED and self._passive  # never seen by the application
        if not silent:
            self.mib.TCPAbortOnTimeout += 1
        if reset_peer:
            self._reset_peer()
        self._error = err
        if not silent:
            self._notify(events.ConnectionFailed, err)
        self._apply(GIVE_UP, now, errno.errorcode.get(err, str(err)))
