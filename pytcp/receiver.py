"""Receive side of one connection: the receive buffer (tcpcore.Reassembler), the FIN, the advertised window,
the delayed-ACK decision and the SACK / D-SACK blocks our ACKs carry.

The reassembly ring is allocated when the first byte of data arrives, so an idle or a pure-sender
connection costs no receive buffer. It grows with the application's reading rate (receive-buffer
autotuning, Linux tcp_rcv_space_adjust, from Dynamic Right-Sizing): a connection whose reader keeps up
gets a window of about two RTTs of what it reads, one whose reader lags keeps its initial size.
"""

from __future__ import annotations

import math

from tcpcore import Reassembler, TooManyHoles, seq_add, seq_diff, seq_lt

__all__ = ["MAX_WSCALE", "Receiver", "choose_wscale"]

#: RFC 7323 2.3: shifts above 14 are clamped (the window must stay below 2**30).
MAX_WSCALE = 14

# Outcome bits of Receiver.on_segment.
NEW_DATA = 1  # RCV.NXT advanced over data
OUT_OF_ORDER = 2  # data above RCV.NXT was queued, or it filled a hole: ACK at once (RFC 5681 4.2)
DUPLICATE = 4  # data we already had arrived again: ACK at once, with D-SACK if enabled
DROPPED = 8  # the reassembly buffer would need too many holes (TooManyHoles)
FIN_NOW = 16  # the peer's FIN was consumed by this segment

#: Linux TCP_INIT_CWND: the reading rate autotuning starts from is ten segments per RTT, the peer's
#: initial window (RFC 6928), as Linux tcp_init_buffer_space.
INIT_SPACE_SEGMENTS = 10
#: Linux tcp_rcv_space_adjust's cushion above twice the bytes read per RTT, in segments.
SPACE_CUSHION_SEGMENTS = 16
#: When the first autotuning measurement began: at the SYN, at least one RTT before anything can be read
#: (one shared float, so an idle connection does not hold its own).
_AT_SYN = -math.inf


def choose_wscale(max_buffer: int) -> int:
    """Our window shift: the smallest that lets ``max_buffer`` be advertised, as Linux
    tcp_select_initial_window does from the largest buffer the socket may grow to (RFC 7323 2.3)."""
    shift = 0
    while (max_buffer >> shift) > 0xFFFF and shift < MAX_WSCALE:
        shift += 1
    return shift


class Receiver:
    """Receive state from RCV.NXT on. Sequence numbers here are 32-bit wire values."""

    __slots__ = (
        "_capacity",
        "_nxt",
        "_reasm",
        "_space",
        "_space_seq",
        "_space_time",
        "adv_right",
        "dsack",
        "fin_done",
        "fin_seq",
        "max_mss",
        "max_ranges",
        "rcv_mss",
        "rtt",
        "rtt_tsecr",
        "unacked",
        "wscale",
    )

    def __init__(self, irs: int, capacity: int, max_ranges: int, wscale: int, max_mss: int) -> None:
        self._nxt = seq_add(irs, 1)  # data RCV.NXT while no ring exists
        self._capacity = capacity
        self._reasm: Reassembler | None = None
        self.max_ranges = max_ranges
        self.wscale = wscale  # our shift, 0 when window scaling was not negotiated
        self.fin_seq: int | None = None  # where the peer's FIN sits, once a FIN fitted the window
        self.fin_done = False  # RCV.NXT has passed the FIN
        # Right edge of the window last advertised (RCV.NXT + RCV.WND when it was sent).
        self.adv_right = seq_add(self._nxt, min(capacity, 0xFFFF))
        self.dsack: tuple[int, int] | None = None  # RFC 2883 block for the next ACK
        self.max_mss = max_mss
        # Largest segment the peer sends (Linux icsk_ack.rcv_mss): what "full-sized" means below.
        self.rcv_mss = min(536, max_mss)
        self.unacked = 0  # data bytes received since our last ACK
        # Receiver RTT estimate in seconds, 0.0 before the first sample (Linux rcv_rtt_est), and the
        # last TSecr sampled (Linux rcv_rtt_last_tsecr: one sample per echoed TSval).
        self.rtt = 0.0
        self.rtt_tsecr = -1
        # Autotuning (Linux rcvq_space): bytes read in the last measured RTT, and where (the first
        # unread sequence number) and when the current measurement began.
        self._space = min(capacity, INIT_SPACE_SEGMENTS * max_mss)
        self._space_seq = self._nxt
        self._space_time = _AT_SYN

    # -- state --------------------------------------------------------------------------------------
    @property
    def data_nxt(self) -> int:
        reasm = self._reasm
        return reasm.rcv_nxt if reasm is not None else self._nxt

    @property
    def rcv_nxt(self) -> int:
        """RCV.NXT, past the FIN once it was consumed."""
        nxt = self.data_nxt
        return seq_add(nxt, 1) if self.fin_done else nxt

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def readable(self) -> int:
        reasm = self._reasm
        return reasm.readable if reasm is not None else 0

    @property
    def ooo_bytes(self) -> int:
        reasm = self._reasm
        return reasm.ooo_bytes if reasm is not None else 0

    @property
    def wnd(self) -> int:
        """RCV.WND as last advertised, from RCV.NXT (the acceptability test's window)."""
        return max(0, seq_diff(self.adv_right, self.rcv_nxt))

    @property
    def _slack(self) -> int:
        """Ring bytes beyond the buffer size: never shrinking the window rounds the old right edge up to
        the scale unit (below), which may promise up to one unit less a byte more than the buffer holds;
        Linux lets the receive queue overshoot sk_rcvbuf there, our ring reserves the room instead."""
        return (1 << self.wscale) - 1

    def _ring(self) -> Reassembler:
        reasm = self._reasm
        if reasm is None:
            reasm = self._reasm = Reassembler(self._nxt, self._capacity + self._slack, self.max_ranges)
        return reasm

    # -- arriving data ------------------------------------------------------------------------------
    def on_segment(self, seq: int, payload: memoryview, fin: bool, dsack: bool) -> int:
        """Queue an acceptable segment's text (RFC 9293 3.10.7.4 seventh) and FIN (eighth); returns the
        outcome bits. ``dsack`` enables RFC 2883 reporting of duplicates."""
        n = len(payload)
        nxt = self.data_nxt
        off = seq_diff(seq, nxt)
        result = 0
        fin_waiting = self.fin_seq is not None  # a FIN arrived beyond a hole earlier
        if self.fin_done:
            # Everything up to the FIN is in; anything else is a duplicate (RFC 9293 3.10.7.4 seventh).
            return DUPLICATE if n or fin else 0
        if n:
            if n > self.rcv_mss:
                self.rcv_mss = min(n, self.max_mss)
            if off < 0:
                result |= DUPLICATE
                if dsack:
                    # RFC 2883 4 (1): the part below RCV.NXT was received already.
                    self.dsack = (seq, seq_add(seq, min(n, -off)))
            reasm = self._ring()
            room = reasm.window
            holes = reasm.range_count
            if off > 0 and dsack:
                self._dsack_ooo(reasm, seq, n)
            try:
                advanced = reasm.write(seq, payload)
            except TooManyHoles:
                return result | DROPPED
            if advanced:
                result |= NEW_DATA
                self.unacked += advanced
            if off > 0 or holes:
                result |= OUT_OF_ORDER
            fits = off + n <= room
        else:
            fits = off <= self.wnd
            if fin and off > 0:
                result |= OUT_OF_ORDER  # a FIN beyond a hole: duplicate ACK at once (RFC 5681 4.2)
        # The FIN counts only if it lies at or above RCV.NXT and all text before it fitted the window.
        if fin and fits and off + n >= 0 and self.fin_seq is None:
            self.fin_seq = seq_add(seq, n)
        if self.fin_seq is not None and self.fin_seq == self.data_nxt:
            self.fin_done = True
            result |= FIN_NOW
            if fin_waiting:
                result |= OUT_OF_ORDER  # this segment filled the hole before a queued FIN: ACK at once
        return result

    def _dsack_ooo(self, reasm: Reassembler, seq: int, n: int) -> None:
        """RFC 2883 4 (2): report the first part of an out-of-order segment we already hold."""
        end = seq_add(seq, n)
        for left, right in reasm.ranges():
            if seq_lt(left, end) and seq_lt(seq, right):
                lo = seq if seq_lt(left, seq) else left
                hi = end if seq_lt(end, right) else right
                self.dsack = (lo, hi)
                return

    def rtt_sample(self, rtt: float) -> None:
        """A receiver RTT sample (from timestamps) moves the estimate by 1/8 of the difference, as Linux
        tcp_rcv_rtt_update. Linux also takes the time to receive one window as an upper bound
        (tcp_rcv_rtt_measure, from DRS); that grossly overestimates when the sender is not window-limited
        (its own comment), so the sender side's RTT stands in without timestamps (Connection)."""
        cur = self.rtt
        self.rtt = cur + (rtt - cur) / 8 if cur else rtt

    def ack_decision(self, result: int, quickack_segments: int) -> bool:
        """Whether the ACK for this segment must go now rather than after the delayed-ACK timeout:
        RFC 5681 4.2 / RFC 9293 3.8.6.3 for out-of-order, gap-filling and duplicate data and for every
        ``quickack_segments``-th full-sized segment; a FIN is acknowledged at once (3.10.7.4 eighth)."""
        if result & (OUT_OF_ORDER | DUPLICATE | FIN_NOW | DROPPED):
            return True
        return self.unacked >= quickack_segments * self.rcv_mss

    # -- the window we advertise --------------------------------------------------------------------
    def _select(self) -> int:
        """The window field to advertise now (RFC 9293 3.8.6.2.2, RFC 7323 2.3-2.4)."""
        nxt = self.data_nxt
        reasm = self._reasm
        free = max(0, reasm.window - self._slack) if reasm is not None else self._capacity
        cur = seq_diff(self.adv_right, nxt)
        if cur < 0:
            cur = 0
        # Receiver SWS avoidance (RFC 9293 3.8.6.2.2): move the right edge only by at least
        # min(RCV.BUFF / 2, MSS); otherwise keep offering what is left of the old window.
        win = free if free - cur >= min(self._capacity // 2, self.rcv_mss) else cur
        shift = self.wscale
        field = min(win, 0xFFFF << shift) >> shift
        if field << shift < cur:
            # Never shrink the window (RFC 9293 3.8.6.2.2, RFC 7323 2.4): round the old edge up to the
            # scale unit, as Linux tcp_select_window does.
            field = (cur + (1 << shift) - 1) >> shift
        return min(field, 0xFFFF)

    def advertise(self) -> int:
        """The window field for an outgoing segment; remembers the right edge it promises."""
        field = self._select()
        self.adv_right = seq_add(self.data_nxt, field << self.wscale)
        return field

    def syn_window(self) -> int:
        """Window of a SYN or SYN-ACK: never scaled (RFC 7323 2.2)."""
        field = min(self._capacity, 0xFFFF)
        self.adv_right = seq_add(self.data_nxt, field)
        return field

    def window_update_due(self) -> bool:
        """After the application read: whether the window grew enough to announce it unasked, as Linux
        tcp_cleanup_rbuf (the remaining window is at most half the buffer and would at least double)."""
        cur = max(0, seq_diff(self.adv_right, self.data_nxt))
        if 2 * cur > self._capacity:
            return False
        new = self._select() << self.wscale
        return new > 0 and new >= 2 * cur

    # -- SACK blocks --------------------------------------------------------------------------------
    def sack_count(self, max_blocks: int) -> int:
        """How many blocks the next ACK will carry at most (to size its payload)."""
        reasm = self._reasm
        count = reasm.range_count if reasm is not None else 0
        if self.dsack is not None:
            count += 1
        return min(count, max_blocks)

    def sack_blocks(self, max_blocks: int) -> list[tuple[int, int]]:
        """Blocks for the next ACK: a pending D-SACK block first (RFC 2883 4), then the out-of-order
        ranges most recent first (RFC 2018 4). The D-SACK block is reported once."""
        reasm = self._reasm
        dsack = self.dsack
        if dsack is None:
            if reasm is None or not reasm.range_count:
                return []
            return reasm.sack_blocks(max_blocks)
        self.dsack = None
        blocks = [dsack]
        if reasm is not None and reasm.range_count:
            # RFC 2883 4: the block holding an out-of-order duplicate follows it (even when equal).
            blocks += reasm.sack_blocks(max_blocks)
        return blocks[:max_blocks]

    # -- application side ---------------------------------------------------------------------------
    def read(self, max_bytes: int) -> bytes:
        reasm = self._reasm
        return reasm.read(max_bytes) if reasm is not None else b""

    def read_into(self, buffer: bytearray | memoryview) -> int:
        reasm = self._reasm
        return reasm.read_into(buffer) if reasm is not None else 0

    def space_adjust(self, now: float, rtt: float, limit: int) -> bool:
        """After the application read (Linux tcp_rcv_space_adjust): once per RTT, compare the bytes read
        in it with the previous RTT's and, if more, grow the buffer to twice that plus a cushion, plus
        twice the relative increase to follow a sender still in slow start (the ACKs we send now open
        the window for the next RTT, not this one), at most ``limit``. Returns whether it grew."""
        if rtt <= 0.0 or now - self._space_time < rtt:
            return False
        reasm = self._reasm
        unread = reasm.readable if reasm is not None else 0
        copied_seq = seq_add(self.data_nxt, -unread)
        copied = seq_diff(copied_seq, self._space_seq)
        self._space_seq = copied_seq
        self._space_time = now
        space = self._space
        if copied <= space:
            return False
        self._space = copied
        window = 2 * copied + SPACE_CUSHION_SEGMENTS * self.max_mss
        window += 2 * window * (copied - space) // space
        return self.grow(min(window, limit))

    def grow(self, capacity: int) -> bool:
        """Enlarge the buffer (the ring keeps its contents); never shrinks. Returns whether it grew."""
        if capacity <= self._capacity:
            return False
        self._capacity = capacity
        reasm = self._reasm
        if reasm is not None:
            reasm.grow(capacity + self._slack)
        return True

    def resize(self, capacity: int) -> bool:
        """Take a new buffer size if nothing is buffered (the ring is rebuilt lazily); else False."""
        reasm = self._reasm
        if reasm is not None:
            if reasm.readable or reasm.range_count:
                return False
            self._nxt = reasm.rcv_nxt
            self._reasm = None
        self._capacity = capacity
        return True

    def release(self) -> None:
        """Drop the buffer (reset, abort, TIME-WAIT): RFC 9293 3.10.7.4 "flush all queues"."""
        reasm = self._reasm
        if reasm is not None:
            self._nxt = reasm.rcv_nxt
            self._reasm = None
