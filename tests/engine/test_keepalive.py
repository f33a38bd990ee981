"""Keep-alives (RFC 1122 4.2.3.6; Linux tcp_keepalive_timer)."""

from __future__ import annotations

import errno

import pytest

from pytcp import events
from pytcp.state import State
from tcpcore import ACK


def ka(tcp, **changes):
    config = tcp.PLAIN.replace(keepalive=True, keepalive_time=100.0, keepalive_intvl=10.0, keepalive_probes=3)
    return tcp.established(config.replace(**changes))


def test_off_by_default(tcp):
    p = tcp.established()
    assert p.conn.get_timer() is None


def test_probe_after_idle_and_answer_resets(tcp):
    p = ka(tcp)
    assert p.conn.get_timer() == 100.0
    p.advance(100.0)
    p.expect(".", seq=p.iss, ack=p.irs + 1, length=0)  # SND.UNA - 1, no data
    assert p.mib.TCPKeepAlive == 1 and p.conn.get_timer() == 110.0
    p.deliver(ACK, p.irs + 1, p.iss + 1, t=105.0)  # the peer is alive
    p.advance(110.0)
    p.expect_nothing()
    assert p.conn.get_timer() == 205.0  # idle counts from the last segment received
    p.advance(205.0)
    p.expect(".", seq=p.iss, length=0)


def test_unanswered_probes_reset_and_time_out(tcp):
    p = ka(tcp)
    for t in (100.0, 110.0, 120.0):
        p.advance(t)
        p.expect(".", seq=p.iss, length=0)
    p.advance(130.0)
    p.expect("R.", seq=p.iss + 1, ack=p.irs + 1)  # Linux: RST, then ETIMEDOUT
    assert p.state is State.CLOSED
    evs = p.take_events()
    assert [type(e) for e in evs] == [events.ConnectionFailed, events.Closed]
    assert evs[0].errno == errno.ETIMEDOUT


def test_any_segment_postpones_the_probe(tcp):
    p = ka(tcp)
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"x", t=50.0)
    p.advance(100.0)
    p.drain()  # the delayed ACK
    assert p.conn.get_timer() == 150.0


def test_no_probes_while_data_is_outstanding(tcp):
    p = ka(tcp, retries2=100, rto_max=60.0)
    p.call("send", b"d")
    p.drain()
    p.advance(100.0)
    assert p.mib.TCPKeepAlive == 0 and p.mib.TCPTimeouts > 0


def test_enabling_on_an_idle_connection_arms_the_timer(tcp):
    p = tcp.established()
    p.advance(10.0)
    p.conn.keepalive_time = 30.0
    assert p.conn.get_timer() is None
    p.conn.keepalive = True
    assert p.conn.get_timer() == 30.0  # from the last segment received (t=0)
    p.conn.keepalive = False
    assert p.conn.get_timer() is None


def test_options_take_the_knob_bounds(tcp):
    """Per-connection options accept exactly what the matching TCPConfig knob accepts (Linux ranges)."""
    p = tcp.established()
    for name, bad in (("keepalive_time", 0), ("keepalive_intvl", 32768), ("keepalive_probes", 128)):
        with pytest.raises(ValueError, match=name):
            setattr(p.conn, name, bad)
    with pytest.raises(ValueError, match="user_timeout"):
        p.conn.user_timeout = -1
    p.conn.keepalive_probes = 127
    p.conn.user_timeout = 30
    assert (p.conn.keepalive_probes, p.conn.user_timeout) == (127, 30.0)
