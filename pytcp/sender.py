"""Send side of one connection: the send buffer, the retransmission queue with its SACK scoreboard, and the
rules that decide when new data may leave (Nagle, sender silly-window avoidance).

Positions are absolute byte offsets in the send sequence space: 0 is our SYN, data starts at 1, so they
never wrap and the queue needs no modular arithmetic; the connection converts to 32-bit sequence numbers
(ISS + offset) at the wire. The buffer holds every byte from SND.UNA to the end of the data the
application queued; the queue holds one ``Segment`` per transmitted, not yet cumulatively acknowledged
segment, covering [SND.UNA, SND.NXT) without gaps. Both are bounded by the send buffer size.

The scoreboard keeps RFC 6675's per-segment marks plus three byte counters so that ``pipe`` (RFC 6675 2,
SetPipe) costs O(1): pipe = FlightSize - SACKed - lost + retransmitted, as Linux's
tcp_packets_in_flight (left_out = sacked_out + lost_out).
"""

from __future__ import annotations

from bisect import bisect_left
from operator import attrgetter

from .recovery import DUP_THRESH

__all__ = ["Segment", "Sender"]

_start = attrgetter("start")


class Segment:
    """One transmitted segment [start, end) in absolute offsets; a FIN occupies the last position.

    A super-segment (segmentation offload) reached the peer as wire segments of ``piece`` data bytes
    from ``start`` on (Linux tcp_skb_mss); for any other segment ``piece`` is at least its length.
    """

    __slots__ = ("end", "ever_retrans", "fin", "lost", "piece", "retrans", "sacked", "sent_at", "start")

    def __init__(self, start: int, end: int, fin: bool, sent_at: float, piece: int) -> None:
        self.start = start
        self.end = end
        self.fin = fin
        self.sent_at = sent_at
        self.piece = piece
        self.sacked = False
        # RFC 6675 IsLost() held true (or the RTO fired, or NewReno retransmits it).
        self.lost = False
        # Retransmitted since last marked lost: counts towards pipe (RFC 6675 SetPipe).
        self.retrans = False
        # Retransmitted at least once: its ACK gives no RTT sample (Karn, RFC 6298 3).
        self.ever_retrans = False

    @property
    def data_end(self) -> int:
        return self.end - 1 if self.fin else self.end

    def __repr__(self) -> str:
        marks = "".join(m for m, on in (("S", self.sacked), ("L", self.lost), ("R", self.retrans)) if on)
        return f"Segment({self.start}..{self.end}{' FIN' if self.fin else ''} {marks})"


class Sender:
    """Send buffer plus retransmission queue and scoreboard."""

    __slots__ = (
        "autotune",
        "buf",
        "capacity",
        "end",
        "fin_queued",
        "high_rxt",
        "high_sacked",
        "lost_bytes",
        "nxt",
        "retrans_bytes",
        "sacked_bytes",
        "segs",
        "sml_end",
        "una",
    )

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # The capacity grows with cwnd (expand) until the application fixes it (SO_SNDBUF).
        self.autotune = True
        self.buf = bytearray()  # bytes [una, end); a FIN is not stored
        self.una = 1  # SND.UNA (0 is the SYN, acknowledged by the time data flows)
        self.nxt = 1  # SND.NXT
        self.end = 1  # one past the last byte the application queued
        self.fin_queued = False
        self.segs: list[Segment] = []
        self.sacked_bytes = 0
        self.lost_bytes = 0
        self.retrans_bytes = 0
        self.high_sacked = 1  # one past the highest SACKed position (RFC 6675 "HighACK" of SACKs)
        self.high_rxt = 1  # one past the highest retransmitted position (RFC 6675 HighRxt)
        self.sml_end = 1  # end of the last small segment sent (Minshall's Nagle, Linux snd_sml)

    # -- application side ---------------------------------------------------------------------------
    @property
    def free(self) -> int:
        return max(0, self.capacity - len(self.buf))

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Queue as much of ``data`` as fits; returns the byte count (a memoryview of wider items, say of
        an ``array('I')``, counts its bytes, not its items)."""
        with memoryview(data) as view, view.cast("B") as octets:
            n = min(len(octets), self.capacity - len(self.buf))
            if n <= 0:
                return 0
            self.buf += octets if n == len(octets) else octets[:n]
        self.end += n
        return n

    def expand(self, cwnd: int, limit: int) -> None:
        """Send-buffer autotuning, as Linux tcp_sndbuf_expand: room for two congestion windows (one in
        flight, one queued behind it), up to ``limit`` (Linux tcp_wmem[2]), so a writer that keeps the
        buffer full is never what holds the window back. It never shrinks; SO_SNDBUF turns it off."""
        if self.autotune and 2 * cwnd > self.capacity:
            self.capacity = max(self.capacity, min(2 * cwnd, limit))

    # -- accounting ---------------------------------------------------------------------------------
    @property
    def unsent(self) -> int:
        """Queued data bytes not sent yet."""
        return max(0, self.end - self.nxt)

    @property
    def pending(self) -> bool:
        """Data or a FIN waits to be sent for the first time."""
        return self.nxt < self.end or (self.fin_queued and self.nxt == self.end)

    @property
    def fin_acked(self) -> bool:
        return self.una > self.end

    @property
    def flight(self) -> int:
        """FlightSize (RFC 5681 2): sent and not cumulatively acknowledged, a FIN counting one."""
        return self.nxt - self.una

    @property
    def pipe(self) -> int:
        """RFC 6675 SetPipe(): the sender's estimate of the bytes still in the network."""
        return self.nxt - self.una - self.sacked_bytes - self.lost_bytes + self.retrans_bytes

    def payload(self, start: int, end: int) -> memoryview:
        """A view of the data bytes [start, end); release it before the buffer changes."""
        base = self.una
        return memoryview(self.buf)[start - base : end - base]

    # -- transmission -------------------------------------------------------------------------------
    def next_new(
        self,
        mss: int,
        wnd_end: int,
        cwnd_space: int,
        nodelay: bool,
        max_wnd: int,
        force: bool = False,
        size_goal: int = 0,
    ) -> tuple[int, bool] | None:
        """(length, with FIN) of the next new segment allowed now, or None.

        ``wnd_end`` is the peer's right window edge (SND.UNA + SND.WND), ``cwnd_space`` what cwnd leaves
        beside pipe. ``force`` is the persist timer's override (RFC 1122 4.2.3.4 rule 4): it sends what
        the window allows despite Nagle and silly-window avoidance. ``size_goal`` (a multiple of ``mss``)
        allows a super-segment for a link with segmentation offload, as Linux tcp_write_xmit with TSO:
        whole MSS-sized pieces as far as window and cwnd allow, plus a partial last piece only at the end
        of the queued data and only where Nagle would send it on its own (tcp_mss_split_point).
        """
        nxt = self.nxt
        unsent = self.end - nxt
        usable = wnd_end - nxt
        if unsent <= 0:
            # A lone FIN still needs one position of window (as Linux tcp_snd_wnd_test).
            if self.fin_queued and unsent == 0 and usable >= 1 and (cwnd_space > 0 or force):
                return 0, True
            return None
        n = min(unsent, mss if size_goal < mss else size_goal, usable)
        if n <= 0:
            return None
        if n > cwnd_space and not force:
            if cwnd_space < mss:
                return None
            n = cwnd_space  # only reachable with a size goal: cut to whole pieces below
        if n > mss and not force:
            partial = n % mss
            if partial and (n < unsent or not (nodelay or self.fin_queued or self.sml_end <= self.una)):
                n -= partial
        fin = self.fin_queued and n == unsent
        if n < mss and not force:
            if n < unsent:
                # Limited by the peer's window: sender SWS avoidance, RFC 1122 4.2.3.4 rule 3 (RFC 9293
                # 3.8.6.2.1) sends a runt only if it is at least half the largest window seen.
                if 2 * n < max_wnd:
                    return None
            elif not (nodelay or fin or self.sml_end <= self.una):
                # Nagle (RFC 9293 3.7.4) with Minshall's refinement as Linux tcp_nagle_check: hold a
                # small segment while an earlier small one is unacknowledged. A FIN is never held.
                return None
        return n, fin and n < usable

    def add_segment(self, length: int, fin: bool, now: float, mss: int) -> Segment:
        """Record a new segment of ``length`` data bytes (plus FIN) sent at ``now`` as wire segments of
        ``mss`` bytes (one, unless it is a super-segment)."""
        start = self.nxt
        end = start + length + (1 if fin else 0)
        seg = Segment(start, end, fin, now, mss)
        self.segs.append(seg)
        self.nxt = end
        if length < mss or length % mss:
            self.sml_end = end  # it holds a small piece (Linux tcp_minshall_update)
        return seg

    def mark_retransmitted(self, seg: Segment, now: float) -> None:
        if not seg.retrans:
            seg.retrans = True
            self.retrans_bytes += seg.end - seg.start
        seg.ever_retrans = True
        seg.sent_at = now
        if seg.end > self.high_rxt:
            self.high_rxt = seg.end

    def split(self, seg: Segment, length: int) -> None:
        """Cut ``seg`` after ``length`` data bytes, as Linux tcp_fragment: a retransmission must fit the
        MSS, and SACK and loss marks apply to exact ranges of a super-segment. The byte counters stay
        right: both pieces keep every mark."""
        segs = self.segs
        i = bisect_left(segs, seg.start, key=_start)
        tail = Segment(seg.start + length, seg.end, seg.fin, seg.sent_at, seg.piece)
        tail.sacked = seg.sacked
        tail.lost = seg.lost
        tail.retrans = seg.retrans
        tail.ever_retrans = seg.ever_retrans
        seg.end = tail.start
        seg.fin = False
        segs.insert(i + 1, tail)

    def next_retransmit(self, rule3: bool, mss: int) -> Segment | None:
        """RFC 6675 NextSeg() rule 1: the first lost, unSACKed segment above HighRxt; with ``rule3`` (no
        new data may go) also its rule 3: the first unSACKed one above HighRxt below the highest SACK.
        A segment longer than ``mss`` (a super-segment, or the options grew) is split first: what goes
        again is MSS-sized (Linux tcp_retransmit_skb fragments to the current MSS as well).

        Lost segments form a prefix of the unSACKed ones (every marking below keeps it so), so the scan
        from HighRxt stops at the first unSACKed segment not yet retransmitted.
        """
        if not self.lost_bytes and not rule3:
            return None
        segs = self.segs
        i = bisect_left(segs, self.high_rxt, key=_start)
        n = len(segs)
        while i < n:
            seg = segs[i]
            if seg.sacked or seg.retrans:
                i += 1
                continue
            if seg.lost or (rule3 and seg.end <= self.high_sacked):
                if seg.data_end - seg.start > mss:
                    self.split(seg, mss)
                return seg
            break
        return None

    # -- acknowledgments ----------------------------------------------------------------------------
    def ack(self, ack: int) -> tuple[int, float | None, float | None]:
        """Cumulative ACK up to ``ack`` (una < ack <= nxt).

        Returns (bytes acknowledged, send time of the earliest acknowledged segment never retransmitted,
        latest retransmission time among the acknowledged segments or None). RFC 6298 3 (Karn) lets only
        the second serve as an RTT sample, and only when the third is None, as Linux tcp_clean_rtx_queue;
        the third also bounds which timestamp echoes still identify a transmission.
        """
        segs = self.segs
        first_clean: float | None = None
        rtx_at: float | None = None
        i = 0
        n = len(segs)
        while i < n:
            seg = segs[i]
            if seg.start >= ack:
                break
            if seg.ever_retrans:
                if rtx_at is None or seg.sent_at > rtx_at:
                    rtx_at = seg.sent_at  # mark_retransmitted keeps the latest transmission here
            elif first_clean is None and not seg.sacked:
                first_clean = seg.sent_at
            if seg.end > ack:
                # Part of a segment (typically of a super-segment the peer received as several): its
                # acknowledged head times the path as well (Linux tcp_clean_rtx_queue, tcp_tso_acked).
                self._forget(seg, ack - seg.start)
                seg.start = ack
                break
            self._forget(seg, seg.end - seg.start)
            i += 1
        del segs[:i]
        acked = ack - self.una
        data_acked = min(ack, self.end) - self.una
        if data_acked > 0:
            del self.buf[:data_acked]
        self.una = ack
        if self.high_rxt < ack:
            self.high_rxt = ack
        if self.high_sacked < ack:
            self.high_sacked = ack
        return acked, first_clean, rtx_at

    def _forget(self, seg: Segment, n: int) -> None:
        """Drop n bytes of seg from the counters (acknowledged or trimmed)."""
        if seg.sacked:
            self.sacked_bytes -= n
        elif seg.lost:
            self.lost_bytes -= n
        if seg.retrans:
            self.retrans_bytes -= n

    def sack(self, left: int, right: int, newly: list[Segment]) -> None:
        """Mark the segments inside [left, right) SACKed (RFC 2018, RFC 6675 Update()) and append the newly
        SACKed ones to ``newly``. A super-segment the block covers in part is split at the edges of the
        wire segments it covers whole (Linux tcp_match_skb_to_sack); other partly covered segments
        stay unmarked. Splitting only at ``piece`` boundaries keeps a peer's odd-sized blocks from
        cutting the queue into tiny segments."""
        segs = self.segs
        i = bisect_left(segs, left, key=_start)
        if i and segs[i - 1].end > left:
            seg = segs[i - 1]  # the block starts inside it: its first whole piece from ``left`` on
            cut = -(-(left - seg.start) // seg.piece) * seg.piece
            if not seg.sacked and seg.start + cut < seg.data_end:
                self.split(seg, cut)
        n = len(segs)
        added = 0
        while i < n:
            seg = segs[i]
            if seg.end > right:
                # The whole pieces it covers; all its data when only the FIN lies beyond.
                data = seg.data_end - seg.start
                cut = data if right >= seg.data_end else (right - seg.start) // seg.piece * seg.piece
                if seg.sacked or cut <= 0:
                    break
                self.split(seg, cut)
                n += 1
            if not seg.sacked:
                size = seg.end - seg.start
                if seg.lost:
                    self.lost_bytes -= size
                if seg.retrans:
                    self.retrans_bytes -= size
                    seg.retrans = False
                seg.sacked = True
                seg.lost = False
                added += size
                newly.append(seg)
                if seg.end > self.high_sacked:
                    self.high_sacked = seg.end
            i += 1
        self.sacked_bytes += added

    def mark_lost_retransmits(self, xmit_ts: float, end: int) -> int:
        """RFC 8985 6.2 (RACK) with a zero reordering window, as Linux tcp_rack_detect_loss during recovery
        until reordering is seen: a retransmission still in flight that was sent before the segment
        (``xmit_ts``, ``end``) just delivered is lost as well, and is to be retransmitted again. Returns the
        bytes marked. Retransmitted segments all lie below HighRxt."""
        segs = self.segs
        high_rxt = self.high_rxt
        lowest = high_rxt
        marked = 0
        for seg in segs:
            if seg.start >= high_rxt:
                break
            # RFC 8985 RACK_sent_after(): later send time, or the same time and a higher end.
            if seg.retrans and (seg.sent_at < xmit_ts or (seg.sent_at == xmit_ts and seg.end < end)):
                size = seg.end - seg.start
                seg.retrans = False
                self.retrans_bytes -= size
                self._mark_lost(seg)
                marked += size
                if seg.start < lowest:
                    lowest = seg.start
        self.high_rxt = lowest
        return marked

    # -- loss marking -------------------------------------------------------------------------------
    def _mark_lost(self, seg: Segment) -> None:
        if not seg.lost and not seg.sacked:
            seg.lost = True
            self.lost_bytes += seg.end - seg.start

    def mark_head_lost(self) -> Segment | None:
        """Fast retransmit / NewReno partial ACK: the first unacknowledged segment is lost and is to be
        retransmitted (again, if it was already); of a super-segment only its first wire segment, as
        Linux tcp_mark_head_lost marks whole packets of a TSO skb."""
        if not self.segs:
            return None
        seg = self.segs[0]
        if seg.data_end - seg.start > seg.piece:
            self.split(seg, seg.piece)
        if seg.retrans:
            seg.retrans = False
            self.retrans_bytes -= seg.end - seg.start
        self._mark_lost(seg)
        self.high_rxt = min(self.high_rxt, seg.start)
        return seg

    def update_lost(self, mss: int) -> bool:
        """RFC 6675 IsLost() for every unSACKed segment: lost once DupThresh discontiguous SACKed runs or
        more than (DupThresh - 1) * SMSS SACKed bytes lie above it. The lost ones form a prefix, so walk
        from the tail to the first lost candidate, then mark downwards until a segment already marked.
        Returns whether the first segment is lost."""
        segs = self.segs
        if not self.sacked_bytes or not segs:
            return bool(segs) and segs[0].lost
        sacked_above = 0
        runs = 0
        prev_sacked = False
        limit = (DUP_THRESH - 1) * mss
        i = len(segs) - 1
        while i >= 0:
            seg = segs[i]
            if seg.sacked:
                sacked_above += seg.end - seg.start
                if not prev_sacked:
                    runs += 1
                prev_sacked = True
            else:
                prev_sacked = False
                if runs >= DUP_THRESH or sacked_above > limit:
                    break
            i -= 1
        while i >= 0:
            seg = segs[i]
            if seg.lost:
                break
            self._mark_lost(seg)
            i -= 1
        return segs[0].lost

    def mark_oversized_lost(self, mss: int) -> bool:
        """The path MTU shrank (RFC 1191): every unSACKed segment with more than ``mss`` bytes is lost and
        goes again cut to size, as Linux tcp_simple_retransmit. Returns whether any was marked."""
        marked = False
        for seg in self.segs:
            if seg.sacked or seg.data_end - seg.start <= mss:
                continue
            if seg.retrans:
                seg.retrans = False
                self.retrans_bytes -= seg.end - seg.start
            self._mark_lost(seg)
            self.high_rxt = min(self.high_rxt, seg.start)
            marked = True
        return marked

    def mark_all_lost(self) -> None:
        """Retransmission timeout: every unSACKed segment is lost and no retransmission is in flight
        (Linux tcp_enter_loss). SACK marks are kept unless the receiver reneged: a SACKed segment at
        SND.UNA means it dropped what it had SACKed (RFC 2018 8, Linux tcp_check_sack_reneging)."""
        segs = self.segs
        if segs and segs[0].sacked:
            for seg in segs:
                seg.sacked = False
            self.sacked_bytes = 0
            self.high_sacked = self.una
        for seg in segs:
            seg.retrans = False
            self._mark_lost(seg)
        self.retrans_bytes = 0
        self.high_rxt = self.una

    def reset(self) -> None:
        """Forget everything queued (the connection was reset, aborted or is in TIME-WAIT)."""
        self.buf = bytearray()
        self.segs.clear()
        self.una = self.nxt
        self.end = min(self.end, self.nxt)
        self.sacked_bytes = self.lost_bytes = self.retrans_bytes = 0
