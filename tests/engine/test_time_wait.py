"""TIME-WAIT (RFC 9293 3.6.1, 3.10.7.4; RFC 1337)."""

from __future__ import annotations

import pytest

from pytcp import events
from pytcp.state import Event, State
from tcpcore import ACK, FIN, RST, SYN


def test_time_wait_lasts_two_msl(tcp):
    p = tcp.time_wait(tcp.PLAIN.replace(msl=5.0))
    assert p.conn.get_timer() == pytest.approx(10.0)
    p.advance(9.99)
    assert p.state is State.TIME_WAIT
    p.advance(10.0)
    p.expect_nothing()
    assert p.state is State.CLOSED
    assert [type(e) for e in p.take_events()] == [events.Closed]
    assert p.transitions[-1].event is Event.TIMEOUT_TIME_WAIT
    assert p.mib.TW == 1 and p.conn.get_timer() is None


def test_retransmitted_fin_is_acked_and_restarts_the_timer(tcp):
    p = tcp.time_wait(tcp.PLAIN.replace(msl=5.0))
    p.deliver(FIN | ACK, p.irs + 1, p.iss + 2, t=7.0)
    p.expect(".", seq=p.iss + 2, ack=p.irs + 2)
    assert p.conn.get_timer() == pytest.approx(17.0)
    p.advance(16.0)
    assert p.state is State.TIME_WAIT
    p.advance(17.0)
    assert p.state is State.CLOSED


def test_rst_in_time_wait_is_ignored(tcp):
    """RFC 1337: TIME-WAIT assassination hazards; the RST changes nothing."""
    p = tcp.time_wait()
    p.deliver(RST, p.irs + 2)
    p.deliver(RST | ACK, p.irs + 2, p.iss + 2)
    p.expect_nothing()
    assert p.state is State.TIME_WAIT


def test_other_segments_in_time_wait_are_acked(tcp):
    p = tcp.time_wait()
    p.deliver(ACK, p.irs + 2, p.iss + 2, payload=b"late")
    p.expect(".", seq=p.iss + 2, ack=p.irs + 2)
    assert p.state is State.TIME_WAIT


def test_syn_in_time_wait_gets_challenge_ack(tcp):
    p = tcp.time_wait()
    p.deliver(SYN, p.irs + 100000)
    p.expect(".", seq=p.iss + 2, ack=p.irs + 2)
    assert p.mib.TCPSYNChallenge == 1 and p.state is State.TIME_WAIT


def test_reuse_closes_the_old_incarnation(tcp):
    p = tcp.time_wait(tcp.PLAIN.replace(timestamps=True))
    p.call("reuse_time_wait")
    assert p.state is State.CLOSED
    assert p.transitions[-1].event is Event.TIME_WAIT_REUSE
    assert p.mib.TW == 0


def test_time_wait_exposes_what_the_stack_needs(tcp):
    """RFC 6191 reuse reads RCV.NXT, SND.NXT, TS.Recent and when it was recorded."""
    p = tcp.syn_sent(tcp.PLAIN.replace(timestamps=True))
    p.deliver(SYN | ACK, p.irs, p.iss + 1, ts=(100, 0), t=0.01)
    p.expect(".", ts=(10, 100))
    p.call("close")
    p.expect("F.")
    p.deliver(FIN | ACK, p.irs + 1, p.iss + 2, ts=(105, 10), t=0.1)
    p.expect(".", ts=(100, 105))
    assert p.state is State.TIME_WAIT
    assert p.conn.rcv_nxt == p.irs + 2 and p.conn.snd_nxt == p.iss + 2
    assert (p.conn.ts_recent, p.conn.ts_recent_time) == (105, 0.1)


def test_simultaneous_close_ends_in_time_wait_on_both_sides(tcp):
    pair = tcp.Pair()
    pair.client.connect(0.0)
    for _ in range(100):
        pair.step()
        if pair.server is not None and pair.server.state is State.ESTABLISHED:
            break
    assert pair.server is not None
    pair.client.close(pair.now)
    pair.server.close(pair.now)
    for _ in range(100):
        pair.step()
        if pair.client.state is State.TIME_WAIT and pair.server.state is State.TIME_WAIT:
            break
    assert pair.client.state is State.TIME_WAIT and pair.server.state is State.TIME_WAIT
    while pair.step():
        pass
    assert pair.client.state is State.CLOSED and pair.server.state is State.CLOSED


def test_unread_data_survives_time_wait(tcp):
    """A half-closed reader that lags behind still reads everything after the peer's FIN."""
    p = tcp.fin_wait_2()
    p.deliver(FIN | ACK, p.irs + 1, p.iss + 2, payload=b"tail")
    p.expect(".", ack=p.irs + 6)
    assert p.state is State.TIME_WAIT
    assert p.call("recv", 100) == b"tail" and p.conn.at_eof
