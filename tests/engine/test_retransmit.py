"""Retransmission timeout (RFC 6298), Karn's rule, the loss window (RFC 5681 3.1), giving up (RFC 9293)."""

from __future__ import annotations

import errno
import itertools

import pytest

from pytcp import events
from pytcp.state import State
from tcpcore import ACK


def sent_seqs(p):
    return [(s.seg.seq - p.iss - 1, len(s.payload)) for s in p.drain()]


def test_timeout_retransmits_the_first_segment_then_slow_starts(tcp):
    p = tcp.established()
    p.call("send", b"a" * 3000)
    assert sent_seqs(p) == [(0, 1000), (1000, 1000), (2000, 1000)]
    p.advance(0.2)
    p.expect("P.", seq=p.iss + 1, length=1000)  # RFC 6298 5.4: the earliest unacknowledged
    p.expect_nothing()  # RFC 5681 3.1: cwnd is one segment
    info = p.conn.info()
    assert (info.cwnd, info.ssthresh, info.rto, info.ca_state) == (1000, 2000, 0.4, "loss")
    assert p.mib.TCPTimeouts == 1 and p.mib.RetransSegs == 1
    p.deliver(ACK, p.irs + 1, p.iss + 1001, t=0.25)
    # Slow start to 2000 and both remaining segments go again (Linux TCP_CA_Loss marks them lost).
    assert sent_seqs(p) == [(1000, 1000), (2000, 1000)]
    assert p.mib.TCPSlowStartRetrans == 2
    assert p.conn.info().rtt == 0.0  # Karn: the ACK of a retransmission is no sample
    assert p.conn.info().rto == 0.4  # and the backed-off RTO stays (RFC 6298 5.7 note)
    p.deliver(ACK, p.irs + 1, p.iss + 3001, t=0.3)
    assert p.conn.info().ca_state == "open" and p.conn.get_timer() is None


def test_backoff_is_capped(tcp):
    p = tcp.established(tcp.PLAIN.replace(rto_max=0.5, rto_initial=0.5, retries2=10))
    p.call("send", b"x")
    p.drain()
    deadlines = []
    for _ in range(4):
        deadlines.append(p.conn.get_timer())
        p.advance(deadlines[-1])
        p.expect("P.")
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(deadlines)]
    assert gaps == [0.4, 0.5, 0.5]


def test_give_up_after_retries2_without_rst(tcp):
    p = tcp.established(tcp.PLAIN.replace(retries2=3))
    p.call("send", b"data")
    p.drain()
    for _ in range(3):
        p.advance(p.conn.get_timer())
        p.expect("P.")
    p.advance(p.conn.get_timer())
    p.expect_nothing()  # Linux tcp_write_err: no RST when the peer is unreachable
    assert p.state is State.CLOSED
    evs = p.take_events()
    assert [type(e) for e in evs] == [events.ConnectionFailed, events.Closed]
    assert evs[0].errno == errno.ETIMEDOUT
    assert p.mib.TCPAbortOnTimeout == 1 and p.mib.EstabResets == 1
    with pytest.raises(TimeoutError):
        p.call("send", b"x")


def test_orphan_uses_orphan_retries(tcp):
    p = tcp.fin_wait_1(tcp.PLAIN.replace(retries2=10, orphan_retries=1))
    p.advance(p.conn.get_timer())
    p.expect("F.")
    p.advance(p.conn.get_timer())
    assert p.state is State.CLOSED


def test_user_timeout_replaces_retries(tcp):
    p = tcp.established(tcp.PLAIN.replace(retries2=100, user_timeout=1.0))
    p.call("send", b"u")
    p.drain()
    for expected in (0.2, 0.6, 1.0):
        assert p.conn.get_timer() == pytest.approx(expected)  # the last one clamped to the user timeout
        p.advance(p.conn.get_timer())
        if p.state is State.CLOSED:
            break
        p.expect("P.")
    assert p.state is State.CLOSED and p.now == pytest.approx(1.0)


def test_user_timeout_settable_per_connection(tcp):
    p = tcp.established()
    p.conn.user_timeout = 0.5
    p.call("send", b"u")
    p.advance(0.5)
    assert p.state is State.CLOSED


def test_ack_resets_the_retry_count(tcp):
    p = tcp.established(tcp.PLAIN.replace(retries2=2))
    p.call("send", b"1" * 2000)
    p.drain()
    p.advance(p.conn.get_timer())
    p.advance(p.conn.get_timer())
    p.drain()
    assert p.conn.info().retransmits == 2
    p.deliver(ACK, p.irs + 1, p.iss + 1001, t=p.now + 0.01)
    assert p.conn.info().retransmits == 0
    p.drain()
    p.advance(p.conn.get_timer())
    assert p.state is State.ESTABLISHED
