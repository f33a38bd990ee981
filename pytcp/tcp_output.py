"""Segment output and the timers that cause it: SYN / SYN-ACK, data and retransmissions under the
receive window, cwnd and pipe, bare and delayed ACKs, probes; retransmission timeout, persist,
keep-alive, FIN-WAIT-2 and TIME-WAIT expiry.

Segmentation offload (``TCPConfig.gso_max_size`` > 0, set by the runtime for a TUN device with
offloads): new data leaves in super-segments of up to 64 KB, whole MSS-sized pieces as far as the
peer's window, cwnd and the send buffer allow, which the link cuts into MSS-sized segments (Linux TSO /
GSO). The peer then sees ordinary segments; one Python pass and one write per super-segment is what
makes bulk output fast. The scoreboard keeps one entry per super-segment until SACK, a partial ACK or a
loss splits it (pytcp.sender), and retransmissions are MSS-sized. Packets for such a link carry only
the pseudo-header sum in their TCP checksum field: the link completes it (Linux CHECKSUM_PARTIAL).
"""

from __future__ import annotations

from errno import ETIMEDOUT

from tcpcore import ACK, FIN, PSH, SYN, build_tcp_ipv4, build_tcp_ipv4_into, tcp_options_length
from tcpcore.constants import IPV4_HEADER_MIN, TCP_HEADER_MIN

from .receiver import choose_wscale
from .recovery import LOSS, RECOVERY
from .sender import Segment
from .state import CLOSED, SYN_RECEIVED, SYN_SENT, TIMEOUT_FIN_WAIT_2, TIMEOUT_TIME_WAIT
from .tcb import _IDLE_STATES, _SYN_STATES, MASK, TCB, ts_clock
from .timers import KEEPALIVE, PERSIST, RETRANSMIT, TimerKind

__all__ = ["OffloadSegment", "OutputMixin", "Packet"]

_HEADERS = IPV4_HEADER_MIN + TCP_HEADER_MIN


class OffloadSegment(bytearray):
    """A TCP/IPv4 packet for a link with offloads: its TCP checksum field holds the pseudo-header sum
    for the link to complete, and with ``gso_size`` > 0 the link cuts its payload into segments of
    ``gso_size`` bytes, each with a copy of the headers (virtio_net_hdr NEEDS_CSUM and GSO_TCPV4)."""

    __slots__ = ("gso_size",)

    gso_size: int


#: What connections and the stack hand out: complete packets, or offload segments (see above).
Packet = bytes | OffloadSegment


class OutputMixin(TCB):
    __slots__ = ()

    @property
    def wants_transmit(self) -> bool:
        """Whether poll_transmit may have something to send (anything happened since the last poll)."""
        return self._tx_dirty or bool(self._ctl)

    def get_timer(self) -> float | None:
        """The next deadline (main timer or delayed ACK), or None."""
        return self.timers.deadline()

    # -- output -------------------------------------------------------------------------------------
    def poll_transmit(self, now: float, out: list[Packet]) -> None:
        """Append every packet due now to ``out``."""
        ctl = self._ctl
        if ctl:
            out.extend(ctl)
            ctl.clear()
        self._tx_dirty = False
        state = self._sm.state
        if state in _IDLE_STATES:
            return
        if self._syn_pending:
            self._send_syn(now, out)
        if state is SYN_SENT:
            return
        if state is not SYN_RECEIVED:
            self._send_data(now, out)
            if self._probe_due:
                # Zero-window and keep-alive probes alike, as Linux tcp_xmit_probe_skb: an old sequence
                # number (SND.UNA - 1) and no data, which any live peer must ACK (RFC 1122 4.2.3.6).
                self._probe_due = False
                out.append(self._build(ACK, (self.iss + self.snd.una - 1) & MASK, b"", now))
        if self._ack_now:
            out.append(self._build(ACK, self.snd_nxt, b"", now))
        self._rearm(now)

    def _send_syn(self, now: float, out: list[Packet]) -> None:
        """Our SYN (SYN-SENT) or SYN,ACK (SYN-RECEIVED), with the options we offer (RFC 9293 3.7.1,
        RFC 7323 2.2 and 3.2, RFC 2018 2); SYNs carry no data and an unscaled window."""
        cfg = self.config
        if self._sm.state is SYN_SENT:
            flags, ack = SYN, 0
            wscale = choose_wscale(cfg.max_buffer) if cfg.window_scaling else -1
            sack = cfg.sack
            ts = (ts_clock(now), 0) if cfg.timestamps else None
            window = min(self._recv_cap, 0xFFFF)
        else:
            rcv = self.rcv
            assert rcv is not None
            flags, ack = SYN | ACK, rcv.rcv_nxt
            wscale = self.rcv_wscale if self.wscale_ok else -1
            sack = self.sack_ok
            ts = (ts_clock(now), self.ts_recent or 0) if self.ts_ok else None
            window = rcv.syn_window()
            self._last_ack_sent = ack
        out.append(
            build_tcp_ipv4(
                self.local_addr,
                self.remote_addr,
                self.local_port,
                self.remote_port,
                self.iss,
                ack,
                flags,
                window,
                mss=cfg.mss,
                wscale=wscale,
                sack_permitted=sack,
                timestamps=ts,
                ttl=cfg.ttl,
            )
        )
        mib = self.mib
        mib.OutSegs += 1
        if self._syn_pending == 2:
            mib.RetransSegs += 1
            self.total_retrans += 1
            self._syn_rtx_at = now
        elif self._syn_sent_at is None:
            self._syn_sent_at = now
        self._syn_pending = 0
        self._ack_now = False
        if self.timers.kind is not RETRANSMIT:
            self.timers.arm(RETRANSMIT, now + self.rtt.rto)

    def _send_data(self, now: float, out: list[Packet]) -> None:
        """Lost segments first (RFC 6675 NextSeg rule 1, NewReno and RTO retransmissions), then new data
        (rule 2) under the receive window, cwnd (+ NewReno inflation) minus pipe, Nagle and SWS avoidance,
        then RFC 6675 rule 3 during SACK recovery. PSH marks the last segment of the burst. With
        segmentation offload new data goes in super-segments (module docstring)."""
        snd = self.snd
        rec = self.rec
        cc = self.cc
        rcv = self.rcv
        assert rec is not None and cc is not None and rcv is not None
        fin_end = snd.end + 1 if snd.fin_queued else snd.end
        sack_recovery = self.sack_ok and rec.phase is RECOVERY
        force_rtx = rec.force_rtx  # one retransmission regardless of cwnd, in this run only
        rec.force_rtx = False
        if self._want_writable:
            snd.expand(cc.cwnd, self.config.max_buffer)  # the writer waits: Linux tcp_new_space
        if not snd.lost_bytes and snd.nxt == fin_end and not sack_recovery:
            return
        table = self._mss_table
        base = table[0]
        max_blocks = self._max_sack_blocks
        if snd.nxt == snd.una and now - self._last_send > self.rtt.rto:
            cc.on_idle_restart(now, self.rtt.rto)  # RFC 5681 4.1: restart after an idle RTO
        cwnd = max(cc.cwnd + rec.inflation, base)
        wnd_end = snd.una + self.snd_wnd
        force = self._persist_force
        self._persist_force = False
        mib = self.mib
        gso_max = self.config.gso_max_size
        gso_room = 0
        if gso_max:
            # Payload room beside the headers of a segment without SACK blocks, bounded as Linux
            # tcp_xmit_size_goal does by half the largest window the peer offered (tcp_bound_to_half_wnd),
            # so that one super-segment never takes the whole window and ACKs keep flowing.
            gso_room = min(
                gso_max - _HEADERS - tcp_options_length(timestamps=self.ts_ok), self.max_snd_wnd >> 1
            )
        pending: Segment | None = None
        pending_mss = base
        while snd.lost_bytes or snd.nxt != fin_end or sack_recovery:  # as the test above
            limit = table[rcv.sack_count(max_blocks)] if max_blocks else base
            # SACK blocks take room from every piece: whole pieces of ``limit`` bytes (tcp_tso_autosize).
            size_goal = (gso_room - base + limit) // limit * limit
            pipe = snd.pipe
            seg = snd.next_retransmit(False, limit) if snd.lost_bytes else None
            rtx = seg is not None
            if seg is not None:
                if not (force_rtx or pipe + seg.end - seg.start <= cwnd):
                    break  # a lost segment waits for cwnd: nothing new may overtake it
            else:
                nxt = snd.next_new(
                    limit, wnd_end, cwnd - pipe, self._nodelay, self.max_snd_wnd, force, size_goal
                )
                if nxt is not None:
                    length, fin = nxt
                    seg = snd.add_segment(length, fin, now, limit)
                    self.bytes_sent += length
                    force = False
                elif sack_recovery and cwnd - pipe >= base:
                    seg = snd.next_retransmit(True, limit)
                    rtx = seg is not None
            if seg is None:
                break
            if rtx:
                phase = rec.phase
                if phase is RECOVERY:
                    mib.TCPFastRetrans += 1
                elif phase is LOSS and not force_rtx:
                    mib.TCPSlowStartRetrans += 1
                force_rtx = False
                snd.mark_retransmitted(seg, now)
                mib.RetransSegs += 1
                self.total_retrans += 1
            if pending is not None:
                out.append(self._segment_packet(pending, 0, now, pending_mss))
            pending = seg
            pending_mss = limit
        if pending is not None:
            out.append(self._segment_packet(pending, PSH, now, pending_mss))
            self._last_send = now
            if self.timers.kind is not RETRANSMIT:
                self.timers.arm(RETRANSMIT, now + self.rtt.rto)  # RFC 6298 5.1

    def _segment_packet(self, seg: Segment, psh: int, now: float, mss: int) -> Packet:
        """The packet for ``seg``; ``mss``: the payload each wire segment may carry, should it be longer."""
        start = seg.start
        end = seg.data_end
        flags = ACK | FIN if seg.fin else ACK
        seq = (self.iss + start) & MASK
        if end == start:
            return self._build(flags, seq, b"", now)
        view = self.snd.payload(start, end)
        try:
            return self._build(flags | psh, seq, view, now, mss if end - start > mss else 0)
        finally:
            view.release()  # the send buffer may be resized again

    def _build(
        self, flags: int, seq: int, payload: bytes | memoryview, now: float, gso_size: int = 0
    ) -> Packet:
        """One segment carrying ACK = RCV.NXT, our window, timestamps and SACK blocks; sending it
        satisfies any pending or delayed ACK. For a link with offloads it is an OffloadSegment, cut into
        ``gso_size``-byte pieces when that is not 0."""
        rcv = self.rcv
        assert rcv is not None
        blocks = rcv.sack_blocks(self._max_sack_blocks) if self._max_sack_blocks else ()
        ack = rcv.rcv_nxt
        ts = (ts_clock(now), self.ts_recent or 0) if self.ts_ok else None
        window = rcv.advertise()
        packet: Packet
        if self.config.gso_max_size:
            # Built in place: one copy of the payload and no checksum pass over it.
            size = (
                _HEADERS + tcp_options_length(timestamps=self.ts_ok, sack_blocks=len(blocks)) + len(payload)
            )
            packet = OffloadSegment(size)
            packet.gso_size = gso_size
            build_tcp_ipv4_into(
                packet,
                0,
                self.local_addr,
                self.remote_addr,
                self.local_port,
                self.remote_port,
                seq,
                ack,
                flags,
                window,
                payload,
                timestamps=ts,
                sack_blocks=blocks,
                ttl=self.config.ttl,
                offload_checksum=True,
            )
        else:
            packet = build_tcp_ipv4(
                self.local_addr,
                self.remote_addr,
                self.local_port,
                self.remote_port,
                seq,
                ack,
                flags,
                window,
                payload,
                timestamps=ts,
                sack_blocks=blocks,
                ttl=self.config.ttl,
            )
        self.mib.OutSegs += 1
        self._ack_now = False
        self.timers.delack_at = None
        rcv.unacked = 0
        self._last_ack_sent = ack
        return packet

    # -- timers -------------------------------------------------------------------------------------
    def handle_timer(self, now: float) -> None:
        """Run whatever is due at ``now``."""
        self._tx_dirty = True
        timers = self.timers
        if timers.pop_delack_due(now):
            self._ack_now = True  # RFC 5681 4.2: the delayed ACK is due
        kind = timers.pop_due(now)
        if kind is RETRANSMIT:
            self._on_retransmit_timeout(now)
        elif kind is PERSIST:
            self._on_persist_timeout(now)
        elif kind is KEEPALIVE:
            self._on_keepalive_timeout(now)
        elif kind is TimerKind.FIN_WAIT_2:
            self._apply(TIMEOUT_FIN_WAIT_2, now)  # Linux tcp_fin_timeout; no RST by default
        elif kind is TimerKind.TIME_WAIT:
            self._apply(TIMEOUT_TIME_WAIT, now)
        if self._sm.state is not CLOSED:
            self._rearm(now)

    def _on_retransmit_timeout(self, now: float) -> None:
        """RFC 6298 5.4-5.6 (and 5.7 via _on_established); R2 give-up after retries (RFC 9293 3.8.3)."""
        cfg = self.config
        mib = self.mib
        rtt = self.rtt
        state = self._sm.state
        if state in _SYN_STATES:
            limit = cfg.syn_retries if state is SYN_SENT else cfg.synack_retries
            if self._retransmits >= limit:
                self._fail(ETIMEDOUT, now, reset_peer=False)
                return
            self._retransmits += 1
            mib.TCPTimeouts += 1
            rtt.backoff()
            self._syn_pending = 2
            self.timers.arm(RETRANSMIT, now + rtt.rto)
            return
        snd = self.snd
        if snd.nxt == snd.una:
            return
        if self._stall_since is None:
            self._stall_since = snd.segs[0].sent_at if snd.segs else now
        stall = self._stall_since
        user_timeout = self.user_timeout
        limit = cfg.orphan_retries if self._orphan else cfg.retries2
        # With TCP_USER_TIMEOUT set it alone decides (RFC 5482, Linux retransmits_timed_out).
        if (now - stall >= user_timeout) if user_timeout else (self._retransmits >= limit):
            self._fail(ETIMEDOUT, now, reset_peer=False)  # Linux tcp_write_err sends no RST
            return
        self._retransmits += 1
        mib.TCPTimeouts += 1
        rec = self.rec
        assert rec is not None and self.cc is not None
        rec.on_timeout(snd, self.cc, now)
        rtt.backoff()
        deadline = now + rtt.rto
        if user_timeout:
            deadline = min(deadline, max(now, stall + user_timeout))  # Linux tcp_clamp_rto_to_user_timeout
        self.timers.arm(RETRANSMIT, deadline)

    def _on_persist_timeout(self, now: float) -> None:
        """RFC 9293 3.8.6.1 / RFC 1122 4.2.2.17: probe the closed window; give up only on probes that go
        unanswered (retries2, or the user timeout), as Linux tcp_probe_timer."""
        snd = self.snd
        if snd.nxt != snd.una or not snd.pending:
            return
        if self._stall_since is None:
            self._stall_since = now
        cfg = self.config
        user_timeout = self.user_timeout
        limit = cfg.orphan_retries if self._orphan else cfg.retries2
        if (now - self._stall_since >= user_timeout) if user_timeout else (self._probes >= limit):
            self._fail(ETIMEDOUT, now, reset_peer=False)
            return
        self._probes += 1
        if self._persist_backoff < cfg.retries2:
            self._persist_backoff += 1
        if snd.una + self.snd_wnd > snd.nxt:
            # The window is open a little: send what fits despite SWS avoidance (RFC 1122 4.2.3.4
            # rule 4, the override timeout; Linux tcp_write_wakeup).
            self._persist_force = True
        else:
            self._probe_due = True
            self.mib.TCPWinProbe += 1
        self.timers.arm(PERSIST, now + self._persist_timeout())

    def _on_keepalive_timeout(self, now: float) -> None:
        """RFC 1122 4.2.3.6 / Linux tcp_keepalive_timer: after keepalive_time idle, probe every
        keepalive_intvl; after keepalive_probes unanswered, RST and ETIMEDOUT."""
        if not self._keepalive_active():
            return
        snd = self.snd
        if snd.nxt != snd.una or snd.pending:
            return  # data outstanding: the retransmission or persist timer watches the peer
        idle = now - self._last_rcv
        if self._probes == 0 and idle < self._keepalive_time:
            self.timers.arm(KEEPALIVE, self._last_rcv + self._keepalive_time)
            return
        user_timeout = self.user_timeout
        probes = self._probes
        if (idle >= user_timeout and probes > 0) if user_timeout else (probes >= self.keepalive_probes):
            self._fail(ETIMEDOUT, now, reset_peer=True)
            return
        self._probe_due = True
        self.mib.TCPKeepAlive += 1
        self._probes += 1
        self.timers.arm(KEEPALIVE, now + self.keepalive_intvl)
