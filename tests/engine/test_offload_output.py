"""Segmentation offload output (TCPConfig.gso_max_size): super-segments bounded by cwnd, the peer's window
and the size goal, MSS-sized retransmissions, SACK and loss marks on the wire segments a super-segment
became, Nagle on its partial tail, and the checksum left for the link to complete."""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import pytest

import tcpcore
from pytcp.config import TCPConfig
from pytcp.tcp_output import OffloadSegment, Packet
from tcpcore import ACK, SYN
from tcpcore.constants import IPPROTO_TCP

WSCALE = 7
BIG_WINDOW = (1 << 20) >> WSCALE  # 1 MiB, scaled
#: What a segment of the size goal carries: whole 1000-byte pieces beside 40 bytes of headers.
GOAL = (0xFFFF - 40) // 1000 * 1000


class OffloadLink:
    """Stands in for a Peer's connection: with offload, what the connection emits after its SYN must be
    offload segments carrying the pseudo-header sum; they are completed as the link would (Linux
    CHECKSUM_PARTIAL) so the harness parses them as wire packets. ``gso`` records each gso_size."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.offload = bool(conn.config.gso_max_size)
        self.gso: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def poll_transmit(self, now: float, out: list[Packet]) -> None:
        got: list[Packet] = []
        self._conn.poll_transmit(now, got)
        for packet in got:
            ip, seg = tcpcore.parse_packet(packet, verify_checksum=False)
            assert seg is not None
            if seg.flags & SYN or not self.offload:
                assert not isinstance(packet, OffloadSegment)
                out.append(packet)
                continue
            assert isinstance(packet, OffloadSegment) and len(packet) <= 0xFFFF
            assert seg.checksum == tcpcore.pseudo_header_sum(ip.src, ip.dst, IPPROTO_TCP, ip.payload_length)
            self.gso.append(packet.gso_size)
            done = bytearray(packet)
            start = ip.header_length
            struct.pack_into("!H", done, start + 16, tcpcore.internet_checksum(done[start:]))
            out.append(bytes(done))


def established(tcp: SimpleNamespace, *, win: int = BIG_WINDOW, **changes: Any) -> Any:
    """An ESTABLISHED Peer with segmentation offload: 1000-byte MSS, window scaling, IW100 and a big
    send buffer, so one write can fill a 64 KB super-segment."""
    config: TCPConfig = tcp.PLAIN.replace(
        gso_max_size=0xFFFF, initial_cwnd_segments=100, send_buffer=262144, window_scaling=True
    )
    p = tcp.Peer(config.replace(**changes))
    link = p.conn = OffloadLink(p.conn)
    p.call("connect")
    p.expect("S", seq=p.iss)
    sack = config.replace(**changes).sack
    p.deliver(SYN | ACK, p.irs, p.iss + 1, win, mss=1000, wscale=WSCALE, sack_permitted=sack)
    p.expect(".", seq=p.iss + 1)
    p.deliver(ACK, p.irs + 1, p.iss + 1, win)  # the first scaled window
    p.take_events()
    link.gso.clear()
    p.gso = link.gso
    return p


def offsets(p: Any) -> list[tuple[int, int]]:
    return [(s.seg.seq - p.iss - 1, len(s.payload)) for s in p.drain()]


def ack(p: Any, n: int, t: float, **kw) -> None:
    p.deliver(ACK, p.irs + 1, p.iss + 1 + n, BIG_WINDOW, t=t, **kw)


def test_one_super_segment_per_size_goal_then_cwnd(tcp) -> None:
    p = established(tcp)
    p.call("send", b"x" * 200_000)
    # IW = 100 segments: one super-segment of the size goal, then the rest of cwnd in whole pieces.
    assert offsets(p) == [(0, GOAL), (GOAL, 100_000 - GOAL)]
    assert p.gso == [1000, 1000]
    assert p.mib.OutSegs == 2 + 2  # SYN and ACK, then the two super-segments


def test_super_segment_bounded_by_half_the_peer_window(tcp) -> None:
    p = established(tcp, win=(40_000 >> WSCALE) + 1)  # 40064 bytes: half of it rounds down to 20 pieces
    p.call("send", b"x" * 100_000)
    assert offsets(p) == [(0, 20_000), (20_000, 20_000)]  # no 64-byte runt: sender SWS avoidance
    p.expect_nothing()


def test_without_offload_segments_stay_mss_sized(tcp) -> None:
    p = established(tcp, gso_max_size=0)
    p.call("send", b"x" * 5000)
    assert offsets(p) == [(i * 1000, 1000) for i in range(5)]


def test_timeout_retransmits_mss_sized_pieces(tcp) -> None:
    p = established(tcp)
    p.call("send", b"y" * 100_000)
    p.drain()
    p.advance(p.conn.get_timer())  # RTO: everything is lost, cwnd is one segment
    assert offsets(p) == [(0, 1000)]
    assert p.mib.RetransSegs == 1 and p.gso[-1] == 0
    ack(p, 1000, p.now + 0.01)  # slow start: two more pieces
    assert offsets(p) == [(1000, 1000), (2000, 1000)]
    info = p.conn.info()
    assert info.lost == 100_000 - 1000 and info.retrans == 2000 and info.pipe == 2000


def test_sack_marks_the_wire_segments_and_fast_retransmit_sends_one(tcp) -> None:
    p = established(tcp, sack=True)
    p.call("send", b"z" * GOAL)
    assert offsets(p) == [(0, GOAL)]
    # The first wire segment was lost; the peer SACKs the next ones as they arrive.
    base = p.iss + 1
    for k in range(2, 5):
        p.deliver(ACK, p.irs + 1, base, BIG_WINDOW, sack=[(base + 1000, base + k * 1000)], t=0.01 * k)
    # RFC 6675: 3000 bytes SACKed above the first piece make it lost; only it goes again.
    assert offsets(p) == [(0, 1000)]
    info = p.conn.info()
    assert info.sacked == 3000 and info.lost == 1000 and info.ca_state == "recovery"
    assert p.mib.TCPFastRetrans == 1


def test_sack_block_not_on_a_piece_boundary_marks_only_whole_pieces(tcp) -> None:
    p = established(tcp, sack=True)
    p.call("send", b"z" * 10_000)
    p.drain()
    base = p.iss + 1
    p.deliver(ACK, p.irs + 1, base, BIG_WINDOW, sack=[(base + 1500, base + 4200)], t=0.01)
    assert p.conn.info().sacked == 2000  # pieces [2000, 3000) and [3000, 4000)
    segs = [(s.start - 1, s.end - 1, s.sacked) for s in p.conn.snd.segs]
    assert segs == [(0, 2000, False), (2000, 4000, True), (4000, 10_000, False)]


def test_newreno_partial_ack_retransmits_one_piece(tcp) -> None:
    p = established(tcp)
    p.call("send", b"z" * 10_000)
    p.drain()
    for i in range(3):
        ack(p, 0, 0.01 + i / 1000)  # three duplicate ACKs
    assert offsets(p) == [(0, 1000)]
    ack(p, 4000, 0.02)  # partial ACK: the next hole is the next piece only
    assert offsets(p)[0] == (4000, 1000)


def test_partial_ack_of_a_super_segment_is_an_rtt_sample(tcp) -> None:
    p = established(tcp)
    p.call("send", b"r" * 50_000)
    p.drain()
    ack(p, 10_000, 0.03)
    # A 0 s handshake sample first, then this 30 ms one: SRTT = 0.03 / 8 (RFC 6298 2.3).
    assert p.conn.info().rtt == pytest.approx(0.03 / 8)


def test_nagle_holds_only_the_partial_tail(tcp) -> None:
    p = established(tcp)
    p.call("send", b"a" * 500)
    assert offsets(p) == [(0, 500)]
    p.call("send", b"b" * 10_500)  # the small segment is unacknowledged: whole pieces only
    assert offsets(p) == [(500, 10_000)]
    ack(p, 500, 0.01)
    assert offsets(p) == [(10_500, 500)]


def test_nodelay_sends_the_partial_tail_with_the_rest(tcp) -> None:
    p = established(tcp, nodelay=True)
    p.call("send", b"a" * 500)
    p.call("send", b"b" * 10_500)
    assert offsets(p) == [(0, 500), (500, 10_500)]


def test_fin_rides_on_the_last_super_segment(tcp) -> None:
    p = established(tcp)
    p.call("send", b"f" * 5500, poll=False)
    p.call("close", poll=False)
    p.poll()
    sent = p.drain()
    assert [(s.flags, len(s.payload)) for s in sent] == [("FP.", 5500)]
