"""Data transfer in ESTABLISHED: segmentation, cumulative ACKs, reassembly, events."""

from __future__ import annotations

import pytest

from pytcp import events
from tcpcore import ACK


def test_send_segments_to_the_mss_with_psh_on_the_last(tcp):
    p = tcp.established()
    assert p.call("send", b"a" * 2500) == 2500
    p.expect(".", seq=p.iss + 1, ack=p.irs + 1, length=1000, win=64000)
    p.expect(".", seq=p.iss + 1001, length=1000)
    p.expect("P.", seq=p.iss + 2001, length=500)
    p.expect_nothing()
    info = p.conn.info()
    assert (info.unacked, info.bytes_sent) == (2500, 2500)
    p.deliver(ACK, p.irs + 1, p.iss + 2501, t=0.01)
    info = p.conn.info()
    assert (info.unacked, info.bytes_acked) == (0, 2500)
    assert p.conn.get_timer() is None  # RFC 6298 5.2: nothing outstanding, no timer


def test_initial_window_and_slow_start(tcp):
    p = tcp.established()
    p.call("send", b"b" * 30000)
    assert len(p.drain()) == 10  # IW10 (RFC 6928)
    p.deliver(ACK, p.irs + 1, p.iss + 2001, t=0.05)  # two segments acknowledged
    # cwnd 12000 (slow start adds the 2000 bytes acknowledged), 8000 in flight: 4 more go.
    assert [s.seg.seq for s in p.drain()] == [p.iss + 1 + 10000 + 1000 * i for i in range(4)]
    assert p.conn.info().cwnd == 12000


def test_retransmission_timer_restarts_on_new_ack(tcp):
    p = tcp.established()
    p.call("send", b"c" * 3000)
    p.drain()
    assert p.conn.get_timer() == pytest.approx(0.2)
    p.deliver(ACK, p.irs + 1, p.iss + 1001, t=0.15)
    assert p.conn.get_timer() == pytest.approx(0.15 + p.conn.info().rto)  # RFC 6298 5.3


def test_receive_in_order_data(tcp):
    p = tcp.established()
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"hello ")
    p.deliver(ACK, p.irs + 7, p.iss + 1, payload=b"world")
    assert [type(e) for e in p.take_events()] == [events.DataReadable]  # once until the app reads
    assert p.conn.readable == 11
    assert p.call("recv", 6) == b"hello "
    buf = bytearray(10)
    assert p.call("recv_into", buf) == 5 and buf[:5] == b"world"
    assert p.call("recv", 10) == b""
    p.deliver(ACK, p.irs + 12, p.iss + 1, payload=b"!")
    assert [type(e) for e in p.take_events()] == [events.DataReadable]
    assert p.conn.info().bytes_received == 12


def test_out_of_order_data_and_hole_fill(tcp):
    p = tcp.established()
    p.deliver(ACK, p.irs + 1001, p.iss + 1, payload=b"B" * 1000)
    p.expect(".", ack=p.irs + 1)  # RFC 5681 4.2: out of order, ACK at once
    p.deliver(ACK, p.irs + 2001, p.iss + 1, payload=b"C" * 1000)
    p.expect(".", ack=p.irs + 1)
    assert p.conn.readable == 0 and p.mib.TCPOFOQueue == 2
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"A" * 1000)
    p.expect(".", ack=p.irs + 3001, win=64000 - 3000)  # the hole is filled: ACK at once
    assert p.call("recv", 5000) == b"A" * 1000 + b"B" * 1000 + b"C" * 1000


def test_duplicate_segment_is_acked_at_once(tcp):
    p = tcp.established()
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"x" * 100)
    p.advance(1.0)
    p.expect(".", ack=p.irs + 101)
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"x" * 100)
    p.expect(".", ack=p.irs + 101, sack=[])
    p.deliver(ACK, p.irs + 51, p.iss + 1, payload=b"x" * 50 + b"y" * 50)  # half old, half new
    p.expect(".", ack=p.irs + 151)
    assert p.call("recv", 1000) == b"x" * 100 + b"y" * 50


def test_text_beyond_the_window_is_trimmed(tcp):
    p = tcp.established(tcp.PLAIN.replace(recv_buffer=2000))
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"q" * 1000)
    p.deliver(ACK, p.irs + 1001, p.iss + 1, payload=b"r" * 1500)
    p.expect(".", ack=p.irs + 2001, win=0)
    assert p.conn.readable == 2000


def test_send_buffer_bound_and_writable(tcp):
    p = tcp.established()
    p.conn.set_buffer_sizes(send=4000)  # SO_SNDBUF: a fixed size, no autotuning
    assert p.call("send", b"w" * 10000) == 4000
    assert p.conn.writable == 0
    assert p.call("send", b"more") == 0
    p.drain()
    p.deliver(ACK, p.irs + 1, p.iss + 1001, t=0.01)
    assert p.take_events() == []  # 1000 free, 3000 queued: not yet half of it (Linux)
    p.deliver(ACK, p.irs + 1, p.iss + 3001, t=0.02)
    assert [type(e) for e in p.take_events()] == [events.Writable]
    assert p.conn.writable == 3000


def test_send_accepts_any_buffer(tcp):
    p = tcp.established()
    assert p.call("send", memoryview(bytearray(b"abc"))) == 3
    assert p.call("send", b"") == 0
    p.expect("P.", payload=b"abc")


def test_old_duplicate_ack_is_ignored(tcp):
    p = tcp.established()
    p.call("send", b"d" * 2000)
    p.drain()
    p.deliver(ACK, p.irs + 1, p.iss + 2001)
    p.deliver(ACK, p.irs + 1, p.iss + 1001)  # reordered, older than SND.UNA
    p.expect_nothing()
    assert p.conn.info().unacked == 0


def test_bidirectional_piggybacked_ack(tcp):
    p = tcp.established()
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"request", poll=False)
    p.call("send", b"response")
    p.expect("P.", seq=p.iss + 1, ack=p.irs + 8, payload=b"response")  # the ACK rides along
    p.advance(p.conn.get_timer())
    p.expect("P.", seq=p.iss + 1, payload=b"response")  # the RTO; no separate delayed ACK
    p.expect_nothing()
