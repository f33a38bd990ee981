"""Segment arrival (RFC 9293 3.10.7.3 for SYN-SENT, 3.10.7.4 for every later state), with the RFC 5961
hardening, RFC 7323 PAWS and timestamps, and the ACK processing that feeds the sender, the RTT estimator,
loss recovery and congestion control.

URG (3.10.7.4 sixth check) is ignored: the urgent pointer is not reported and urgent bytes are delivered
inline like any others, which is what RFC 6093 recommends applications assume.
"""

from __future__ import annotations

from errno import ECONNREFUSED, ECONNRESET

from tcpcore import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    TCPSegment,
    seq_add,
    seq_diff,
    seq_in_window,
    seq_le,
    seq_lt,
    tcp_options_length,
)
from tcpcore.constants import IPV4_HEADER_MIN, TCP_HEADER_MIN

from . import events
from .icmp import IcmpError, IcmpErrorKind
from .receiver import DROPPED, FIN_NOW, NEW_DATA, OUT_OF_ORDER, Receiver
from .recovery import RECOVERY
from .sender import Segment
from .state import (
    APP_ABORT,
    APP_CLOSE,
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    ICMP_ERROR,
    LAST_ACK,
    LISTEN,
    PASSIVE_RESET,
    RCV_ACK_OF_FIN,
    RCV_ACK_OF_SYN,
    RCV_FIN,
    RCV_FIN_ACK_OF_FIN,
    RCV_RST,
    RCV_SYN,
    RCV_SYN_ACK,
    SYN_RECEIVED,
    SYN_SENT,
    TIME_WAIT,
    State,
)
from .tcb import (
    _IDLE_STATES,
    MASK,
    OOW_ACK_INTERVAL,
    PAWS_IDLE,
    TS_HZ,
    ts_clock,
)
from .tcp_output import OutputMixin
from .timers import RETRANSMIT, TimerKind

__all__ = ["InputMixin"]

_TEXT_STATES = (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2)
_HANDSHAKE_STATES = (SYN_SENT, SYN_RECEIVED)
# Header prediction's states (_predicted), the common one first: tuple membership tests identity in order.
_PREDICTABLE = (
    ESTABLISHED,
    CLOSE_WAIT,
    FIN_WAIT_1,
    FIN_WAIT_2,
    CLOSING,
    LAST_ACK,
)
# Half of the 32-bit timestamp space: a TSecr "older" than this is from another epoch, not an RTT.
_TS_HALF = 1 << 31


def acceptable(seq: int, seglen: int, rcv_nxt: int, wnd: int) -> bool:
    """RFC 9293 3.10.7.4 first check: the four cases of segment length and receive window."""
    if seglen == 0:
        # A segment without text may also sit exactly at the right edge, as Linux tcp_sequence accepts
        # (``!after(seq, rcv_nxt + window)``): a peer that filled our window and lost that data sends
        # its ACKs with SEG.SEQ = RCV.NXT + RCV.WND, and rejecting them would freeze our send side.
        return seq == rcv_nxt if wnd == 0 else seq_in_window(seq, rcv_nxt, wnd + 1)
    if wnd == 0:
        return False
    return seq_in_window(seq, rcv_nxt, wnd) or seq_in_window(seq_add(seq, seglen - 1), rcv_nxt, wnd)


class InputMixin(OutputMixin):
    __slots__ = ()

    def handle_segment(self, seg: TCPSegment, now: float) -> None:
        """Process one segment addressed to this connection (the stack demultiplexed it)."""
        state = self._sm.state
        if state in _IDLE_STATES:
            return
        self._tx_dirty = True
        if state is SYN_SENT:
            self._input_syn_sent(seg, now)
        else:
            self._input(seg, now, state)
        if self._sm.state is not CLOSED:
            self._rearm(now)

    # -- SYN-SENT -----------------------------------------------------------------------------------
    def _input_syn_sent(self, seg: TCPSegment, now: float) -> None:
        """RFC 9293 3.10.7.3."""
        flags = seg.flags
        # First check: an ACK must cover our SYN and nothing more (ISS < SEG.ACK =< SND.NXT).
        if flags & ACK and seq_diff(seg.ack, self.iss) != 1:
            if not flags & RST:
                self._queue_rst(seg.ack, 0, False)  # <SEQ=SEG.ACK><CTL=RST>
            return
        if flags & RST:
            # Second check (RFC 5961 3.2 keeps it for SYN-SENT): only with an acceptable ACK.
            if flags & ACK:
                self._on_reset(now)
            return
        if not flags & SYN:
            return  # fifth check: neither SYN nor RST
        self._negotiate(seg.mss, seg.wscale, seg.sack_permitted, seg.has_timestamps)
        self._new_receiver(seg.seq)
        if self.ts_ok:
            self._set_ts_recent(seg.ts_val, now)
        # SYN and SYN-ACK windows are never scaled (RFC 7323 2.2).
        self.snd_wnd = self.max_snd_wnd = seg.window
        self.snd_wl1 = seg.seq
        self.snd_wl2 = seg.ack
        if not flags & ACK:
            # Simultaneous open: SYN-RECEIVED, answer with SYN,ACK (fourth check, "Otherwise"); its ACK
            # will time the SYN-ACK, not our first SYN.
            self._syn_pending = 1
            self._syn_sent_at = None
            self._apply(RCV_SYN, now, "simultaneous open")
            return
        self._handshake_rtt(seg, now)
        self._ack_now = True
        self._apply(RCV_SYN_ACK, now)
        if seg.payload_length or flags & FIN:
            # "continue processing at the sixth step": text and FIN carried by the SYN,ACK.
            self._input_text(seg, seq_add(seg.seq, 1), False, now)

    def _handshake_rtt(self, seg: TCPSegment, now: float) -> None:
        """An RTT sample from the ACK of our SYN or SYN-ACK: Karn's rule unless the timestamp echo tells
        which transmission it answers (RFC 6298 3, RFC 7323 4)."""
        sent = self._syn_sent_at
        if sent is None:
            return  # a SYN cookie: the stack, not this TCB, sent the SYN-ACK
        rtx_at = self._syn_rtx_at
        if rtx_at is None and now >= sent:
            self._rtt_sample(now - sent)
        elif self.ts_ok and seg.has_timestamps and seg.ts_ecr:
            self._ts_sample(seg.ts_ecr, now, rtx_at)

    def _ts_sample(self, ts_ecr: int, now: float, rtx_at: float | None) -> None:
        """An RTT sample from the timestamp echo of an ACK of new data (RFC 7323 4.1). ``rtx_at``: when we
        last retransmitted what it acknowledges. An echo older than that is ambiguous: it may answer the
        original, or come from the duplicate ACK our retransmission drew from a receiver that had the
        original but whose ACKs were lost (an out-of-window duplicate leaves TS.Recent alone, RFC 7323 5.3
        R2 before R3, in Linux and BSD too), and then the "RTT" spans every timeout since, the bias RFC
        7323 4.2 (C) warns of. Karn's rule (RFC 6298 3) applies to it: no sample, the backoff stays."""
        if rtx_at is not None and seq_diff(ts_ecr, ts_clock(rtx_at)) < 0:
            return
        elapsed = (ts_clock(now) - ts_ecr) & MASK
        if elapsed < _TS_HALF:
            self._rtt_sample(elapsed / 1000)

    def _rtt_sample(self, rtt: float) -> None:
        """Every RTT measurement feeds the RFC 6298 estimator and RACK's minimum."""
        self.rtt.sample(rtt)
        if rtt < self.min_rtt:
            self.min_rtt = rtt

    # -- every other state --------------------------------------------------------------------------
    def _input(self, seg: TCPSegment, now: float, state: State) -> None:
        rcv = self.rcv
        assert rcv is not None
        flags = seg.flags
        seq = seg.seq
        n = seg.payload_length
        if self._predicted(seg, state, flags, seq, n, rcv):
            self._last_rcv = now  # as _input_checks does
            self._probes = 0
            drop_text = False
        else:
            verdict = self._input_checks(seg, now, state, flags, seq, n, rcv)
            if verdict is None:
                return
            drop_text = verdict
        if not self._input_ack(seg, now):
            return
        if self.ts_ok and seg.has_timestamps:
            # RFC 7323 4.3 (3) / 5.3 R3: TS.Recent follows segments at or below Last.ACK.sent -- only
            # once the ACK proved acceptable, as Linux tcp_replace_ts_recent: a segment dropped for its
            # ACK must not move TS.Recent, or a forged TSval would make PAWS reject the real peer.
            recent = self.ts_recent
            if recent is None or (seq_le(seq, self._last_ack_sent) and seq_diff(seg.ts_val, recent) >= 0):
                self._set_ts_recent(seg.ts_val, now)
        state = self._sm.state
        snd = self.snd
        fin_acked_now = False
        if snd.fin_queued and snd.fin_acked:
            if state is LAST_ACK:
                self._apply(RCV_ACK_OF_FIN, now)
                return
            if state is CLOSING:
                self._apply(RCV_ACK_OF_FIN, now)
                return
            fin_acked_now = state is FIN_WAIT_1
        if state in _TEXT_STATES:
            if drop_text:
                self.mib.TCPZeroWindowDrop += 1
                self._ack_now = True
            elif n or flags & FIN:
                self._input_text(seg, seq, fin_acked_now, now)
                return
        elif n or flags & FIN:
            self._ack_now = True  # text or FIN after the peer's FIN: a duplicate; ACK it
        if fin_acked_now:
            self._apply(RCV_ACK_OF_FIN, now)

    def _predicted(self, seg: TCPSegment, state: State, flags: int, seq: int, n: int, rcv: Receiver) -> bool:
        """Header prediction (Van Jacobson's, which RFC 9293 3.10.7 mentions; Linux tcp_rcv_established's
        fast path): a segment at RCV.NXT with no flag but ACK (and PSH), room for its text, and with
        timestamps a TSval not older than TS.Recent. In a state without checks of its own before the
        ACK field (_PREDICTABLE: not SYN-RECEIVED or TIME-WAIT), every check of _input_checks passes for
        it by construction, so it goes straight to the ACK field; everything after is the same code."""
        if state not in _PREDICTABLE or flags & ~PSH != ACK or seq != rcv.rcv_nxt:
            return False
        if n and not rcv.wnd:
            return False  # zero window: the text is dropped
        if self.ts_ok and seg.has_timestamps:
            recent = self.ts_recent
            return recent is None or seq_diff(recent, seg.ts_val) <= 0  # PAWS (_paws_reject) passes
        return True

    def _input_checks(
        self, seg: TCPSegment, now: float, state: State, flags: int, seq: int, n: int, rcv: Receiver
    ) -> bool | None:
        """RFC 9293 3.10.7.4 first to fifth checks up to the ACK field, with RFC 7323 PAWS and RFC 5961:
        None drops the segment (after any reply), else whether its text must be dropped (zero window)."""
        if state is SYN_RECEIVED and seq == self.irs:
            syn_flags = flags & (SYN | ACK | RST)
            if syn_flags == SYN:
                # The peer repeated its SYN: our SYN-ACK was lost; answer at once (Linux tcp_check_req).
                self._syn_pending = 2
                return None
            if syn_flags == SYN | ACK and not self._passive and seg.ack == self.snd_nxt:
                # Simultaneous open: the peer's SYN-ACK acknowledges our SYN. RFC 5961 4.2 would
                # challenge it as a SYN; Linux tcp_validate_incoming lets it complete the handshake.
                self._syn_acked(seg, seg.window, now)  # a SYN's window is never scaled (RFC 7323 2.2)
                return None
        seglen = n + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        rcv_nxt = rcv.rcv_nxt
        if self.ts_ok and seg.has_timestamps and not flags & RST and self._paws_reject(seg, now):
            # RFC 7323 5.3 R1: an old duplicate by its timestamp; ACK and drop.
            self.mib.PAWSEstab += 1
            self._reply_to_invalid(seg, now, "TCPACKSkippedPAWS")
            return None
        # Any segment from the peer shows it is alive (RFC 1122 4.2.3.6: keep-alive idle time; the
        # unanswered-probe count of keep-alive and zero-window probing alike).
        self._last_rcv = now
        self._probes = 0
        if state is TIME_WAIT and flags & (FIN | RST | SYN) == FIN and seq_add(seq, seglen) == rcv_nxt:
            # RFC 9293 3.10.7.4 eighth: the peer retransmitted its FIN (our ACK was lost): ACK it again
            # and restart the 2 MSL timeout.
            self._ack_now = True
            self.timers.arm(TimerKind.TIME_WAIT, now + self.config.time_wait)
            return None
        wnd = rcv.wnd
        drop_text = False
        if not acceptable(seq, seglen, rcv_nxt, wnd):
            if wnd == 0 and seq == rcv_nxt and not flags & SYN:
                # RFC 9293 3.10.7.4: with a zero window "special allowance should be made to accept
                # valid ACKs, URGs, and RSTs"; the text is dropped (Linux TCPZeroWindowDrop).
                drop_text = True
            else:
                self.mib.TCPInvalidSequence += 1
                if flags & RST:
                    return None
                if flags & SYN:
                    self._syn_challenge(now)
                    return None
                if n and self.sack_ok and self.config.dsack and seq_le(seq_add(seq, n), rcv_nxt):
                    rcv.dsack = (seq, seq_add(seq, n))  # RFC 2883 4: a duplicate, reported once
                self._reply_to_invalid(seg, now, "TCPACKSkippedSeq")  # "send an acknowledgment in reply"
                return None
        if flags & RST:
            if state is TIME_WAIT:
                return None  # RFC 1337 TIME-WAIT assassination fix: ignore RST in TIME-WAIT
            if seq == rcv_nxt:
                self._on_reset(now)  # RFC 5961 3.2: exactly RCV.NXT
            else:
                self._challenge_ack(now)  # RFC 5961 3.2: in the window, not exact
            return None
        if flags & SYN:
            if state is SYN_RECEIVED and self._passive:
                # RFC 9293 3.10.7.4 fourth check: a passive open returns to LISTEN (the child goes).
                self._passive_reset(now, "rcv SYN")
            else:
                self._syn_challenge(now)  # RFC 5961 4.2: any SYN in a synchronized state
            return None
        if not flags & ACK:
            return None  # fifth check: "if the ACK bit is off, drop the segment and return"
        if state is SYN_RECEIVED:
            if seq_diff(seg.ack, self.iss) != 1:
                self._queue_rst(seg.ack, 0, False)  # unacceptable ACK: <SEQ=SEG.ACK><CTL=RST>
                return None
            self._syn_acked(seg, seg.window << self.snd_wscale, now)
        return drop_text

    def _syn_acked(self, seg: TCPSegment, wnd: int, now: float) -> None:
        """SYN-RECEIVED: ``seg`` acknowledges our SYN (RFC 9293 3.10.7.4 fifth check) with window ``wnd``."""
        self._handshake_rtt(seg, now)
        self.snd_wnd = wnd
        self.max_snd_wnd = max(self.max_snd_wnd, wnd)
        self.snd_wl1 = seg.seq
        self.snd_wl2 = seg.ack
        self._apply(RCV_ACK_OF_SYN, now)

    def _paws_reject(self, seg: TCPSegment, now: float) -> bool:
        """RFC 7323 5.3 R1: SEG.TSval < TS.Recent, with TS.Recent still valid (5.5: < 24 days idle),
        except for a reordered duplicate ACK (Linux tcp_disordered_ack)."""
        recent = self.ts_recent
        if recent is None:
            return False
        behind = seq_diff(recent, seg.ts_val)
        if behind <= 0:
            return False
        stamp = self.ts_recent_time
        if stamp is not None and now - stamp > PAWS_IDLE:
            return False
        return not self._disordered_ack(seg, behind)

    def _disordered_ack(self, seg: TCPSegment, behind: int) -> bool:
        """Linux tcp_disordered_ack: a pure duplicate ACK at RCV.NXT that would not move the window and
        whose TSval trails TS.Recent by at most one RTO only lost a race with a newer segment; dropping it
        would hide a duplicate ACK from fast retransmit."""
        if seg.flags & (SYN | FIN | RST | ACK) != ACK or seg.payload_length:
            return False
        rcv = self.rcv
        seq = seg.seq
        if rcv is None or seq != rcv.rcv_nxt or seg.ack != (self.iss + self.snd.una) & MASK:
            return False
        wl1 = self.snd_wl1
        if seq_lt(wl1, seq) or (seq == wl1 and seg.window << self.snd_wscale > self.snd_wnd):
            return False  # RFC 9293 3.10.7.4: it would update the send window
        return behind <= self.rtt.rto * TS_HZ

    def _reply_to_invalid(self, seg: TCPSegment, now: float, skipped: str) -> None:
        """RFC 9293 3.10.7.4 "send an acknowledgment in reply" to an unacceptable segment, at most once
        per OOW_ACK_INTERVAL for segments without text, as Linux tcp_oow_rate_limited: two ends that
        disagree about the sequence space would otherwise bounce ACKs at each other forever."""
        if not seg.payload_length or seg.flags & SYN:
            if now - self._last_oow_ack < OOW_ACK_INTERVAL:
                setattr(self.mib, skipped, getattr(self.mib, skipped) + 1)
                return
            self._last_oow_ack = now
        self._ack_now = True

    def _syn_challenge(self, now: float) -> None:
        self.mib.TCPSYNChallenge += 1
        self._challenge_ack(now)

    def _on_reset(self, now: float) -> None:
        """An acceptable RST (RFC 9293 3.10.7.3-4 second check): the connection is gone."""
        state = self._sm.state
        if state is SYN_RECEIVED and self._passive:
            self._passive_reset(now, "rcv RST")
            return
        err = ECONNREFUSED if state is SYN_SENT or state is SYN_RECEIVED else ECONNRESET
        self._error = err
        self._notify(events.ConnectionReset, err)
        self._apply(RCV_RST, now)

    def _passive_reset(self, now: float, note: str) -> None:
        """RFC 9293 3.10.7.4: a passively opened SYN-RECEIVED TCB returns to LISTEN; being the listener's
        child, it is then deleted (the listener itself stays)."""
        self._apply(PASSIVE_RESET, now, note)
        self._apply(APP_CLOSE, now, "child of a listener: delete the TCB")

    # -- ICMP -----------------------------------------------------------------------------------------
    def icmp_error(self, error: IcmpError, now: float) -> None:
        """An ICMP error quoting one of our segments (the stack matched ``error.key`` to this TCB), treated
        as Linux tcp_v4_err does."""
        state = self._sm.state
        if state is CLOSED or state is LISTEN or state is TIME_WAIT:
            return
        self._tx_dirty = True
        una = self.iss if state in _HANDSHAKE_STATES else (self.iss + self.snd.una) & MASK
        if not seq_in_window(error.seq, una, seq_diff(self.snd_nxt, una) + 1):
            # RFC 5927 4.1: only a segment still in flight (SND.UNA <= SEG.SEQ <= SND.NXT, Linux
            # between()) can have caused it; anything else is stale or forged.
            self.mib.OutOfWindowIcmps += 1
            return
        if error.kind is IcmpErrorKind.FRAGMENTATION_NEEDED:
            self._path_mtu_dropped(error.mtu)
            return
        if state is SYN_SENT or (state is SYN_RECEIVED and not self._passive):
            # Linux ends a connection attempt on any error about its SYN (soft ones too, unlike RFC 1122
            # 4.2.3.9's SHOULD NOT for established connections): connect() fails with that errno.
            self._error = error.errno
            self._notify(events.ConnectionFailed, error.errno)
            self._apply(ICMP_ERROR, now, error.kind.value)
        elif state is SYN_RECEIVED:
            if not error.kind.soft:
                # Linux tcp_req_err: a hard error drops the half-open child silently (POSIX gives
                # accept() no way to report it).
                self._passive_reset(now, "rcv ICMP error")
        else:
            # RFC 1122 4.2.3.9: an established connection is not aborted (Linux without IP_RECVERR);
            # the error explains a later give-up instead of ETIMEDOUT.
            self._soft_error = error.errno

    def _path_mtu_dropped(self, mtu: int) -> None:
        """RFC 1191 6.4 / Linux tcp_v4_mtu_reduced: shrink the MSS to the reported MTU and resend what no
        longer fits at once (it was dropped, not congested: cwnd keeps its size in segments)."""
        mss = mtu - IPV4_HEADER_MIN - TCP_HEADER_MIN  # RFC 1191 3: headers without options
        current = self.snd_mss + tcp_options_length(timestamps=self.ts_ok)
        if mss >= current:
            return
        self._set_mss(mss)
        if self.cc is not None:
            self.cc.set_mss(self.snd_mss)
        self.snd.mark_oversized_lost(self.snd_mss)

    # -- the ACK field ------------------------------------------------------------------------------
    def _input_ack(self, seg: TCPSegment, now: float) -> bool:
        """RFC 9293 3.10.7.4 fifth check in a synchronized state; False drops the segment."""
        snd = self.snd
        ack = seg.ack
        una = snd.una
        d = seq_diff(ack, (self.iss + una) & MASK)
        if d > snd.nxt - una or d < -self.max_snd_wnd:
            # RFC 5961 5.2: SEG.ACK outside [SND.UNA - MAX.SND.WND, SND.NXT]: challenge ACK and drop
            # (RFC 9293: an ACK of something not yet sent is answered with an ACK and dropped too).
            self._challenge_ack(now)
            return False
        if d < 0:
            return True  # an old duplicate ACK: ignore the field, keep the text
        seq = seg.seq
        wnd_changed = False
        wl1 = self.snd_wl1
        if seq_lt(wl1, seq) or (wl1 == seq and seq_le(self.snd_wl2, ack)):
            # RFC 9293 3.10.7.4: the window comes from the newest segment (SND.WL1, SND.WL2).
            wnd = seg.window << self.snd_wscale
            if wnd != self.snd_wnd:
                wnd_changed = True
                self.snd_wnd = wnd
                if wnd > self.max_snd_wnd:
                    self.max_snd_wnd = wnd
            self.snd_wl1 = seq
            self.snd_wl2 = ack
        flight = snd.nxt - una
        acked = 0
        sent_at: float | None = None  # send time of never-retransmitted data this ACK delivers
        rtx_at: float | None = None
        if d > 0:
            acked, sent_at, rtx_at = snd.ack(una + d)
            if rtx_at is not None:
                sent_at = None  # RFC 6298 3 (Karn): the ACK may answer either transmission
            self.bytes_acked += acked
            self._retransmits = 0
            self._stall_since = None
        newly = 0
        if self.sack_ok and seg.sack_blocks:
            newly, sacked_at = self._input_sack(seg.sack_blocks, ack, now)
            if sent_at is None:
                sent_at = sacked_at
        # One RTT sample per ACK, in Linux tcp_ack_update_rtt's order of preference: cumulatively acked
        # data never retransmitted, else newly SACKed data never retransmitted, else (when it acknowledges
        # new data, RFC 7323 4.1) the timestamp echo.
        if sent_at is not None and now >= sent_at:
            self._rtt_sample(now - sent_at)
        elif acked and self.ts_ok and seg.has_timestamps and seg.ts_ecr:
            self._ts_sample(seg.ts_ecr, now, rtx_at)
        rec = self.rec
        cc = self.cc
        assert rec is not None and cc is not None
        if self.sack_ok:
            # RFC 6675 2: with SACK, a duplicate ACK is one that newly SACKs data (whatever else it does).
            dup = newly > 0
        else:
            # RFC 5681 2: same ACK, no data, no SYN/FIN, same window, data outstanding.
            dup = d == 0 and not seg.payload_length and not seg.flags & (SYN | FIN) and not wnd_changed
            dup = dup and flight > 0
        if acked or dup:
            was_recovering = rec.phase is RECOVERY
            restart = rec.on_ack(
                snd, cc, self.mib, acked=acked, newly_sacked=newly, dup=dup, mss=self.snd_mss, now=now
            )
            if acked and not was_recovering and rec.phase is not RECOVERY:
                cc.on_ack(acked, now, self.rtt.srtt, flight)
            if acked:
                timers = self.timers
                if snd.nxt == snd.una:
                    timers.stop(RETRANSMIT)  # RFC 6298 5.2
                elif restart:
                    timers.arm(RETRANSMIT, now + self.rtt.rto)  # RFC 6298 5.3
                if self._want_writable and 2 * snd.free >= snd.capacity - snd.free:
                    # As Linux sk_stream_write_space: wake the writer once half of what is queued fits.
                    self._want_writable = False
                    self._notify(events.Writable)
        return True

    def _input_sack(
        self, blocks: tuple[tuple[int, int], ...], ack: int, now: float
    ) -> tuple[int, float | None]:
        """Mark SACKed segments (RFC 2018, RFC 6675 Update()); returns the newly SACKed bytes and the
        earliest send time among them never retransmitted (an RTT sample, Linux first_sackt). A first
        block below the cumulative ACK or inside the second is a D-SACK (RFC 2883 4, as Linux
        tcp_check_dsack): counted, never taken as a loss signal. The newest segment delivered tells which
        retransmissions were lost again (RFC 8985 RACK)."""
        snd = self.snd
        una = snd.una
        una32 = (self.iss + una) & MASK
        span = snd.nxt - una
        newly: list[Segment] = []
        for i, (left, right) in enumerate(blocks):
            if i == 0 and (
                seq_lt(left, ack)
                or (len(blocks) > 1 and seq_le(blocks[1][0], left) and seq_le(right, blocks[1][1]))
            ):
                self.mib.TCPDSACKRecv += 1
                continue
            lo = seq_diff(left, una32)
            hi = seq_diff(right, una32)
            if lo < 0 or hi > span or lo >= hi:
                continue  # stale or bogus (Linux tcp_is_sackblock_valid)
            snd.sack(una + lo, una + hi, newly)
        size = 0
        first: float | None = None
        rack: tuple[float, int] | None = None  # RFC 8985 RACK.xmit_ts, RACK.end_seq
        rec = self.rec
        assert rec is not None
        for seg in newly:
            size += seg.end - seg.start
            sent_at = seg.sent_at
            if not seg.ever_retrans:
                # Only data sent since the last loss event times the path (a guard Linux lacks): older
                # SACK news may ride on an ACK our retransmission provoked after the ACKs first carrying
                # it were lost, and the "RTT" would span the timeouts (RFC 7323 4.2 (C)'s bias).
                if seg.start >= rec.recover and (first is None or sent_at < first):
                    first = sent_at
            elif now - sent_at < self.min_rtt:
                # RFC 8985 6.2 step 2: SACKed sooner than any RTT after its retransmission, so maybe the
                # original was: no evidence of when the delivered transmission left.
                continue
            if rack is None or (sent_at, seg.end) > rack:
                rack = (sent_at, seg.end)
        if rack is not None and snd.retrans_bytes and snd.mark_lost_retransmits(*rack):
            self.mib.TCPLostRetransmit += 1
        return size, first

    def _rcv_rtt_ts(self, ts_ecr: int, now: float) -> None:
        """A receiver RTT sample from a full-sized segment's TSecr, the TSval of the ACK that let the peer
        send it (Linux tcp_rcv_rtt_measure_ts, once per TSecr). Less than one clock tick says nothing
        about the RTT and is skipped, as Linux does (tcp_rtt_tsopt_us with no minimum)."""
        rcv = self.rcv
        assert rcv is not None
        rcv.rtt_tsecr = ts_ecr
        ticks = (ts_clock(now) - ts_ecr) & MASK
        if 0 < ticks < _TS_HALF:
            rcv.rtt_sample(ticks / TS_HZ)

    # -- text and FIN -------------------------------------------------------------------------------
    def _input_text(self, seg: TCPSegment, seq: int, fin_acked_now: bool, now: float) -> None:
        """RFC 9293 3.10.7.4 seventh (text) and eighth (FIN) checks, then the ACK decision."""
        rcv = self.rcv
        assert rcv is not None
        n = seg.payload_length
        if self._orphan and n and seq_lt(rcv.rcv_nxt, seq_add(seq, n)):
            # New data for a closed socket: nobody will read it. RFC 9293 3.10.4 / RFC 2525 2.17 and
            # Linux tcp_rcv_state_process: reset (TCPAbortOnData).
            self.mib.TCPAbortOnData += 1
            self._reset_peer()
            self._apply(APP_ABORT, now, "data after close")
            return
        if n >= rcv.rcv_mss and self.ts_ok and seg.has_timestamps and seg.ts_ecr != rcv.rtt_tsecr:
            self._rcv_rtt_ts(seg.ts_ecr, now)
        before = rcv.data_nxt
        result = rcv.on_segment(seq, seg.payload, bool(seg.flags & FIN), self.sack_ok and self.config.dsack)
        mib = self.mib
        if result & NEW_DATA:
            self.bytes_received += (rcv.data_nxt - before) & MASK
        if result & OUT_OF_ORDER:
            mib.TCPOFOQueue += 1
        if result & DROPPED:
            mib.TCPOFODrop += 1
        # A FIN that ends ESTABLISHED (-> CLOSE-WAIT) is acknowledged by the delayed-ACK timer rather than
        # at once, as Linux tcp_fin does (it enters "pingpong" mode there): the application's close,
        # which usually follows within the timeout, sends FIN,ACK in one segment instead of two.
        delay_fin = result & FIN_NOW and self._sm.state is ESTABLISHED
        if rcv.ack_decision(result & ~FIN_NOW if delay_fin else result, self.config.quickack_segments):
            self._ack_now = True
        elif (rcv.unacked or delay_fin) and self.timers.delack_at is None:
            self.timers.delack_at = now + self.config.delayed_ack  # RFC 5681 4.2 / RFC 9293 3.8.6.3
        if result & NEW_DATA:
            if self._rd_shut:
                rcv.read(-1)  # SHUT_RD: the application wants no more; keep the window open
            elif not self._readable_notified:
                self._readable_notified = True
                self._notify(events.DataReadable)
        if result & FIN_NOW:
            self._notify(events.PeerClosed)
            state = self._sm.state
            if state is FIN_WAIT_1 and fin_acked_now:
                self._apply(RCV_FIN_ACK_OF_FIN, now)
            else:
                self._apply(RCV_FIN, now)
        elif fin_acked_now:
            self._apply(RCV_ACK_OF_FIN, now)
