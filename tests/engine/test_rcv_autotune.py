"""Receive-buffer autotuning (Linux tcp_rcv_space_adjust, Dynamic Right-Sizing): the buffer and the
advertised window follow what the application reads per RTT, up to max_buffer, unless SO_RCVBUF fixed
the size; the window scale of the SYN allows the largest; the right edge never moves left (RFC 9293
3.8.6.2.2, RFC 7323 2.4)."""

from __future__ import annotations

import pytest

from pytcp.config import TCPConfig
from tcpcore import ACK, SYN

RTT = 0.01
#: Window scaling on, 64000-byte initial buffer that may grow to 1 MB: our shift is 4.
SCALED = TCPConfig(
    mss=1000,
    recv_buffer=64000,
    send_buffer=64000,
    max_buffer=1_000_000,
    sack=False,
    timestamps=False,
    congestion_control="reno",
)


def connected(tcp, config: TCPConfig = SCALED, *, lock: int | None = None):
    """Active open with a 10 ms handshake (the first RTT sample); ``lock`` sets SO_RCVBUF before it."""
    p = tcp.Peer(config)
    if lock is not None:
        p.conn.set_buffer_sizes(recv=lock)
    p.call("connect")
    p.expect("S", seq=p.iss)
    p.deliver(SYN | ACK, p.irs, p.iss + 1, mss=1000, wscale=0, t=RTT)
    p.expect(".", ack=p.irs + 1)
    return p


class Sender:
    """The remote end as a window-limited bulk sender: each round trip it sends what the window we last
    advertised allows (at most ``cap`` bytes), and remembers every right edge we announced."""

    def __init__(self, p) -> None:
        self.p = p
        self.nxt = p.irs + 1
        self.edge = p.irs + 1 + 64000  # the SYN-ACK's window (unscaled)
        self.edges = [self.edge]

    def round(self, cap: int, read: int | None) -> None:
        """One RTT: send, then the application reads ``read`` bytes (all if None, nothing if 0)."""
        p = self.p
        p.advance(p.now + RTT)
        sent = 0
        while sent < cap and self.edge - self.nxt >= 1000:
            p.deliver(ACK, self.nxt, p.iss + 1, payload=b"x" * 1000, poll=False)
            self.nxt += 1000
            sent += 1000
        if read != 0:
            p.call("recv", read if read is not None else 1 << 30, poll=False)
        p.poll()
        p.advance(p.now + 0.05)  # past any delayed ACK
        for out in p.drain():
            edge = out.seg.ack + (out.seg.window << p.conn.rcv_wscale)
            assert edge >= self.edge, f"right edge moved left: {out!r}"  # RFC 9293 3.8.6.2.2
            self.edge = edge
            self.edges.append(edge)


def test_syn_scale_allows_the_largest_buffer(tcp) -> None:
    for max_buffer, shift in ((100_000, 1), (1_000_000, 4), (4_194_304, 7), (65535 << 14, 14)):
        p = tcp.Peer(SCALED.replace(max_buffer=max_buffer))
        p.call("connect")
        syn = p.expect("S", wscale=shift)
        assert 65535 << syn.seg.wscale >= max_buffer  # RFC 7323 2.3, as Linux derives it from tcp_rmem[2]
        child = tcp.Peer(SCALED.replace(max_buffer=max_buffer))
        child.conn.accept_syn(child.segment(SYN, child.irs, mss=1000, wscale=0), child.now)
        child.poll()
        child.expect("S.", wscale=shift)


def test_window_grows_when_the_application_reads_fast(tcp) -> None:
    p = connected(tcp)
    s = Sender(p)
    s.round(10_000, None)  # the peer's initial window: no more than the initial estimate of the rate
    assert p.conn.rcv.capacity == 64000
    s.round(20_000, None)  # twice as much in the next RTT: slow start
    # Linux's formula: 2 * 20000 + 16 * 1000 = 56000, plus twice the 100 % increase.
    assert p.conn.rcv.capacity == 56000 * 3
    for cap in (40_000, 80_000, 160_000, 320_000):
        s.round(cap, None)
    assert p.conn.rcv.capacity == 1_000_000
    assert s.edges[-1] - s.nxt > 64000  # the peer is offered the grown window
    assert p.conn.rcv_wscale == 4


def test_window_stays_when_the_application_reads_slowly(tcp) -> None:
    p = connected(tcp)
    assert p.conn.rcv._reasm is None  # an idle connection holds no ring (grows lazily)
    s = Sender(p)
    for _ in range(30):
        s.round(8_000, None)  # below the initial ten segments per RTT
    assert p.conn.rcv.capacity == 64000
    for _ in range(30):
        s.round(20_000, 1000)  # plenty arrives, the application reads a little
    assert p.conn.rcv.capacity == 64000
    assert max(s.edges) - s.nxt <= 64000 + 15


def test_growth_keeps_unread_and_out_of_order_data(tcp) -> None:
    p = connected(tcp)
    s = Sender(p)
    s.round(10_000, None)
    p.advance(p.now + RTT)
    p.deliver(ACK, s.nxt, p.iss + 1, payload=b"a" * 30_000, poll=False)
    p.deliver(ACK, s.nxt + 40_000, p.iss + 1, payload=b"c" * 5_000, poll=False)  # a hole before it
    assert p.call("recv", 20_000) == b"a" * 20_000  # fast enough: the buffer grows with 10 KB unread
    assert p.conn.rcv.capacity > 64000
    p.deliver(ACK, s.nxt + 30_000, p.iss + 1, payload=b"b" * 10_000)
    p.deliver(ACK, s.nxt + 45_000, p.iss + 1, payload=b"d" * 30_000)  # beyond the old window's edge
    assert p.call("recv", 1 << 20) == b"a" * 10_000 + b"b" * 10_000 + b"c" * 5_000 + b"d" * 30_000


@pytest.mark.parametrize("before_connect", [True, False])
def test_so_rcvbuf_locks_the_size(tcp, before_connect: bool) -> None:
    p = connected(tcp, lock=64000 if before_connect else None)
    if not before_connect:
        p.conn.set_buffer_sizes(recv=64000)
    s = Sender(p)
    for cap in (10_000, 20_000, 40_000, 80_000):
        s.round(cap, None)
    assert p.conn.rcv.capacity == 64000
    assert max(s.edges) - s.nxt <= 64000 + 15


def test_growth_is_bounded_by_max_buffer(tcp) -> None:
    p = connected(tcp, SCALED.replace(max_buffer=200_000))
    s = Sender(p)
    for cap in (10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 320_000):
        s.round(cap, None)
    assert p.conn.rcv.capacity == 200_000
    # The window offered fits the bound (plus the scale unit's rounding, which the ring reserves).
    assert s.edges[-1] - s.nxt <= 200_000 + (1 << p.conn.rcv_wscale) - 1


def test_receiver_rtt_from_timestamps(tcp) -> None:
    p = tcp.Peer(SCALED.replace(timestamps=True))
    p.call("connect")
    p.expect("S")
    p.deliver(SYN | ACK, p.irs, p.iss + 1, mss=1000, wscale=0, ts=(1, 0), t=RTT)
    p.expect(".")
    nxt = p.irs + 1
    p.advance(0.1)
    p.deliver(ACK, nxt, p.iss + 1, payload=b"x" * 988, ts=(1, int(p.now * 1000)))
    nxt += 988
    assert p.conn.rcv.rtt == 0.0  # under one clock tick: no sample (Linux tcp_rcv_rtt_measure_ts)
    for k in range(1, 40):
        # Each full-sized segment echoes the TSval of an ACK sent 30 ms earlier.
        p.advance(p.now + 0.005)
        p.deliver(ACK, nxt, p.iss + 1, payload=b"x" * 988, ts=(1 + k, int(p.now * 1000) - 30))
        nxt += 988
    assert p.conn.rcv.rtt == pytest.approx(0.030, rel=0.01)
