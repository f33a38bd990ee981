"""Flow control: the advertised window (RFC 9293 3.8.6.2, RFC 7323 2), zero windows and the persist timer
(RFC 9293 3.8.6.1, RFC 1122 4.2.2.17), sender silly-window avoidance (RFC 1122 4.2.3.4)."""

from __future__ import annotations

import pytest

from pytcp.state import State
from tcpcore import ACK, SYN


def test_window_is_the_free_buffer(tcp):
    p = tcp.established()
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"a" * 1000)
    p.advance(0.04)
    p.expect(".", ack=p.irs + 1001, win=63000)
    p.call("recv", 500)
    p.expect_nothing()  # a 500-byte increase is below min(buffer/2, MSS): no update (receiver SWS)
    p.deliver(ACK, p.irs + 1001, p.iss + 1, payload=b"b" * 1000, t=0.1)
    p.deliver(ACK, p.irs + 2001, p.iss + 1, payload=b"c" * 1000, t=0.1)
    # 61500 is free, but that is only 500 beyond the edge already offered: still too little to move it.
    p.expect(".", ack=p.irs + 3001, win=61000)
    p.call("recv", 1000)
    p.expect_nothing()  # plenty of window left: no unsolicited update (Linux tcp_cleanup_rbuf)
    p.deliver(ACK, p.irs + 3001, p.iss + 1, payload=b"d" * 10, t=0.2)
    p.advance(0.25)
    p.expect(".", ack=p.irs + 3011, win=62490)  # the next ACK moves the edge by 1490


def test_zero_window_and_update_after_reads(tcp):
    p = tcp.established(tcp.PLAIN.replace(recv_buffer=2000))
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"a" * 1000)
    p.deliver(ACK, p.irs + 1001, p.iss + 1, payload=b"b" * 1000)
    p.expect(".", ack=p.irs + 2001, win=0)
    p.call("recv", 500)
    p.expect_nothing()  # 500 free is a silly window: keep it closed
    p.call("recv", 500)
    p.expect(".", ack=p.irs + 2001, win=1000)  # the window reopened: tell the peer unasked


def test_zero_window_drops_text_but_takes_the_ack(tcp):
    p = tcp.established(tcp.PLAIN.replace(recv_buffer=2000))
    p.call("send", b"out")
    p.drain()
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"a" * 2000)
    p.expect(".", ack=p.irs + 2001, win=0)
    p.deliver(ACK, p.irs + 2001, p.iss + 4, payload=b"z")  # RFC 9293: ACK accepted, text not
    p.expect(".", ack=p.irs + 2001, win=0)
    assert p.conn.info().unacked == 0 and p.mib.TCPZeroWindowDrop == 1


def test_zero_window_probe_with_backoff(tcp):
    p = tcp.established()
    p.call("send", b"a" * 1000)
    p.drain()
    p.deliver(ACK, p.irs + 1, p.iss + 1001, 0, t=0.01)  # all acknowledged, window closed
    p.call("send", b"b" * 500)
    p.expect_nothing()
    first = p.conn.get_timer()
    p.advance(first)
    # Linux tcp_xmit_probe_skb: SND.UNA - 1 and no data; the peer must answer with its window.
    p.expect(".", seq=p.iss + 1000, ack=p.irs + 1, length=0)
    second = p.conn.get_timer()
    assert second - first == pytest.approx(2 * (first - 0.01))
    p.advance(second)
    p.expect(".", seq=p.iss + 1000, length=0)
    assert p.mib.TCPWinProbe == 2
    p.deliver(ACK, p.irs + 1, p.iss + 1001, 0, t=second + 0.01)  # the answer: still closed
    assert p.conn.info().probes == 0  # answered probes never count towards giving up
    p.deliver(ACK, p.irs + 1, p.iss + 1001, 4000, t=second + 0.02)  # window update
    p.expect("P.", seq=p.iss + 1001, payload=b"b" * 500)


def test_unanswered_probes_give_up(tcp):
    p = tcp.established(tcp.PLAIN.replace(retries2=3))
    p.call("send", b"a")
    p.deliver(ACK, p.irs + 1, p.iss + 2, 0)
    p.call("send", b"b")
    p.drain()
    for _ in range(3):
        p.advance(p.conn.get_timer())
        p.expect(".", length=0)
    p.advance(p.conn.get_timer())
    assert p.state is State.CLOSED and p.mib.TCPAbortOnTimeout == 1


def test_fin_waits_for_the_window(tcp):
    p = tcp.established()
    p.deliver(ACK, p.irs + 1, p.iss + 1, 0)
    p.call("close")
    p.expect_nothing()  # a FIN needs one position of window (Linux tcp_snd_wnd_test)
    p.deliver(ACK, p.irs + 1, p.iss + 1, 100)
    p.expect("F.", seq=p.iss + 1)


def test_sender_sws_avoidance_and_override(tcp):
    p = tcp.established(win=8000)
    p.call("send", b"x" * 3000)
    p.drain()
    p.deliver(ACK, p.irs + 1, p.iss + 3001, 8000, t=0.01)
    p.call("send", b"y" * 3000)
    p.drain()
    p.deliver(ACK, p.irs + 1, p.iss + 6001, 1500, t=0.02)  # the peer's buffer nearly full
    p.call("send", b"z" * 3000)
    p.expect("P.", seq=p.iss + 6001, length=1000)
    p.expect_nothing()  # 500 more would fit, but a 500-byte runt is below half the max window (8000)
    p.deliver(ACK, p.irs + 1, p.iss + 7001, 500, t=0.03)
    p.expect_nothing()
    p.advance(p.conn.get_timer())  # the persist timer overrides (RFC 1122 4.2.3.4 rule 4)
    p.expect("P.", seq=p.iss + 7001, length=500)


def test_scaled_window_never_shrinks(tcp):
    p = tcp.syn_sent(tcp.PLAIN.replace(window_scaling=True, max_buffer=1 << 20))
    p.deliver(SYN | ACK, p.irs, p.iss + 1, mss=1000, wscale=2)
    p.expect(".", win=64000 >> 5)
    p.deliver(ACK, p.irs + 1, p.iss + 1, 2500, payload=b"q" * 100)
    p.advance(0.04)
    # 63900 free is 1996.875 units of 32: rounding down would pull the right edge back (RFC 7323 2.4).
    p.expect(".", ack=p.irs + 101, win=1997)
    assert p.conn.info().rcv_wnd == 1997 * 32
    p.call("send", b"s" * 9000)
    assert sum(len(s.payload) for s in p.drain()) == 9000  # the peer's window was 2500 << 2
    # The rounded-up edge is a promise: all 63904 bytes fit (the ring keeps a scale unit of slack).
    for off in range(0, 63904, 1000):
        size = min(1000, 63904 - off)
        p.deliver(ACK, p.irs + 101 + off, p.iss + 1, 2500, payload=b"f" * size, t=0.05, poll=False)
    p.poll()
    assert p.drain()[-1].seg.ack == p.irs + 101 + 63904
    assert p.conn.readable == 100 + 63904


def test_pure_ack_at_the_right_edge_is_accepted(tcp):
    """Linux tcp_sequence: SEG.SEQ = RCV.NXT + RCV.WND without text is acceptable. A peer whose data
    filling our window was lost sends its ACKs there; dropping them would freeze our sender."""
    p = tcp.established()
    p.call("send", b"a" * 1000)
    p.expect("P.", seq=p.iss + 1, length=1000)
    edge = p.irs + 1 + 64000  # the peer sent a full window that never arrived
    p.deliver(ACK, edge, p.iss + 1001, t=0.01)
    assert p.conn.info().unacked == 0
    p.expect_nothing()
