"""Connection termination (RFC 9293 3.6, 3.10.4-3.10.5, 3.10.7.4 eighth check)."""

from __future__ import annotations

import errno
import socket

import pytest

from pytcp import events
from pytcp.state import Event, State
from tcpcore import ACK, FIN, RST, SYN


def test_active_close_four_way(tcp):
    p = tcp.fin_wait_1()
    p.deliver(ACK, p.irs + 1, p.iss + 2, t=0.01)
    assert p.state is State.FIN_WAIT_2
    p.expect_nothing()
    p.deliver(FIN | ACK, p.irs + 1, p.iss + 2, t=0.5)
    p.expect(".", seq=p.iss + 2, ack=p.irs + 2)
    assert p.state is State.TIME_WAIT
    assert [type(e) for e in p.take_events()] == [events.PeerClosed]
    assert [r.new for r in p.transitions][-3:] == [State.FIN_WAIT_1, State.FIN_WAIT_2, State.TIME_WAIT]
    assert p.mib.CurrEstab == 0 and p.mib.EstabResets == 0


def test_fin_rides_on_the_last_data_segment(tcp):
    p = tcp.established()
    p.call("send", b"x" * 1500, poll=False)
    p.call("close")
    p.expect(".", seq=p.iss + 1, length=1000)
    p.expect("FP.", seq=p.iss + 1001, length=500)
    p.deliver(ACK, p.irs + 1, p.iss + 1502)
    assert p.state is State.FIN_WAIT_2


def test_passive_close(tcp):
    p = tcp.established()
    p.deliver(FIN | ACK, p.irs + 1, p.iss + 1)
    # The FIN's ACK waits for the application's close, which carries it (Linux tcp_fin: "pingpong").
    p.expect_nothing()
    assert p.state is State.CLOSE_WAIT
    assert [type(e) for e in p.take_events()] == [events.PeerClosed]
    assert p.conn.at_eof and p.call("recv", 10) == b""
    p.call("close")
    p.expect("F.", seq=p.iss + 1, ack=p.irs + 2)
    assert p.state is State.LAST_ACK
    p.deliver(ACK, p.irs + 2, p.iss + 2)
    assert p.state is State.CLOSED
    assert [type(e) for e in p.take_events()] == [events.Closed]
    assert p.conn.get_timer() is None


def test_unread_data_stays_readable_after_last_ack(tcp):
    """A half-closing reader behind the peer: data, FIN, our FIN, its ACK, CLOSED -- and the bytes that
    arrived before the FIN are still there to read (Linux tcp_done keeps the receive queue)."""
    p = tcp.established()
    p.deliver(FIN | ACK, p.irs + 1, p.iss + 1, payload=b"q" * 500)
    p.expect_nothing()  # the ACK rides on our FIN
    p.call("shutdown", socket.SHUT_WR)
    p.expect("F.", seq=p.iss + 1, ack=p.irs + 502)
    p.deliver(ACK, p.irs + 502, p.iss + 2)
    assert p.state is State.CLOSED
    assert p.call("recv", 1000) == b"q" * 500
    assert p.call("recv", 1000) == b"" and p.conn.at_eof


def test_unread_data_stays_readable_after_time_wait(tcp):
    p = tcp.fin_wait_2()
    p.deliver(FIN | ACK, p.irs + 1, p.iss + 2, payload=b"w" * 300)
    p.expect(".", ack=p.irs + 302)
    assert p.state is State.TIME_WAIT
    p.advance(p.conn.config.time_wait + 1.0)
    assert p.state is State.CLOSED
    assert p.call("recv", 1000) == b"w" * 300


def test_fin_combined_with_the_ack_of_the_peers_fin(tcp):
    p = tcp.established()
    p.deliver(FIN | ACK, p.irs + 1, p.iss + 1, poll=False)
    p.call("close")
    p.expect("F.", seq=p.iss + 1, ack=p.irs + 2)
    p.expect_nothing()


def test_half_close_keeps_receiving(tcp):
    p = tcp.fin_wait_2()
    p.deliver(ACK, p.irs + 1, p.iss + 2, payload=b"a" * 1000)
    p.deliver(ACK, p.irs + 1001, p.iss + 2, payload=b"b" * 1000)
    p.expect(".", seq=p.iss + 2, ack=p.irs + 2001)  # every second full segment
    assert p.call("recv", 5000) == b"a" * 1000 + b"b" * 1000
    p.advance(300.0)
    assert p.state is State.FIN_WAIT_2  # not orphaned: no FIN-WAIT-2 timeout (Linux)
    p.deliver(FIN | ACK, p.irs + 2001, p.iss + 2)
    p.expect(".", ack=p.irs + 2002)
    assert p.state is State.TIME_WAIT


def test_fin_is_acked_by_the_delayed_ack_timer_without_a_close(tcp):
    """A FIN that ends ESTABLISHED is acknowledged when the delayed-ACK timer fires if the application
    has not closed by then (in FIN-WAIT-1 and FIN-WAIT-2 a FIN is acknowledged at once)."""
    p = tcp.established()
    p.deliver(FIN | ACK, p.irs + 1, p.iss + 1, t=1.0)
    p.expect_nothing()
    assert p.conn.get_timer() == 1.0 + 0.04
    p.advance(1.05)
    p.expect(".", seq=p.iss + 1, ack=p.irs + 2)
    assert p.state is State.CLOSE_WAIT and p.conn.get_timer() is None


def test_close_wait_keeps_sending(tcp):
    p = tcp.close_wait()
    p.call("send", b"reply")
    p.expect("P.", seq=p.iss + 1, ack=p.irs + 2, payload=b"reply")
    p.call("close")
    p.expect("F.", seq=p.iss + 6)
    p.deliver(ACK, p.irs + 2, p.iss + 7)
    assert p.state is State.CLOSED


def test_simultaneous_close_through_closing(tcp):
    p = tcp.fin_wait_1()
    p.deliver(FIN | ACK, p.irs + 1, p.iss + 1)  # the peer's FIN, not acknowledging ours
    p.expect(".", seq=p.iss + 2, ack=p.irs + 2)
    assert p.state is State.CLOSING
    p.deliver(ACK, p.irs + 2, p.iss + 2)
    assert p.state is State.TIME_WAIT


def test_fin_and_ack_of_fin_in_one_segment(tcp):
    p = tcp.fin_wait_1()
    p.deliver(FIN | ACK, p.irs + 1, p.iss + 2)
    p.expect(".", ack=p.irs + 2)
    assert p.state is State.TIME_WAIT
    assert p.transitions[-1].event is Event.RCV_FIN_ACK_OF_FIN


def test_fin_wait_2_timeout_for_orphans(tcp):
    p = tcp.fin_wait_1()
    p.deliver(ACK, p.irs + 1, p.iss + 2, t=0.1)
    assert p.conn.get_timer() == pytest.approx(60.1)
    p.advance(60.1)
    p.expect_nothing()  # silent, as Linux with the default tcp_fin_timeout
    assert p.state is State.CLOSED
    assert p.transitions[-1].event is Event.TIMEOUT_FIN_WAIT_2


def test_close_after_shutdown_in_fin_wait_2_starts_the_timer(tcp):
    p = tcp.fin_wait_2()
    assert p.conn.get_timer() is None
    p.call("close")
    p.advance(60.0)
    assert p.state is State.CLOSED


def test_close_with_unread_data_resets(tcp):
    p = tcp.established()
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"unread")
    p.drain()
    p.call("close")
    p.expect("R.", seq=p.iss + 1, ack=p.irs + 7, win=0)
    assert p.state is State.CLOSED
    assert p.mib.TCPAbortOnClose == 1 and p.mib.OutRsts == 1 and p.mib.EstabResets == 1


def test_data_after_close_resets(tcp):
    p = tcp.fin_wait_1()
    p.deliver(ACK, p.irs + 1, p.iss + 2, payload=b"late")
    p.expect("R.", seq=p.iss + 2, ack=p.irs + 1)
    assert p.state is State.CLOSED and p.mib.TCPAbortOnData == 1


def test_abort(tcp):
    p = tcp.established()
    p.call("send", b"pending", poll=False)
    p.call("abort")
    p.expect("R.", seq=p.iss + 1, ack=p.irs + 1)
    p.expect_nothing()
    assert p.state is State.CLOSED
    assert [type(e) for e in p.take_events()] == [events.Closed]
    with pytest.raises(BrokenPipeError):
        p.call("send", b"more")


def test_abort_in_syn_sent_sends_nothing(tcp):
    p = tcp.syn_sent()
    p.call("abort")
    p.expect_nothing()
    assert p.state is State.CLOSED and p.mib.OutRsts == 0


def test_close_in_syn_sent_deletes(tcp):
    p = tcp.syn_sent()
    p.call("close")
    p.expect_nothing()
    assert p.state is State.CLOSED and p.conn.get_timer() is None


def test_send_after_shutdown_is_epipe(tcp):
    p = tcp.fin_wait_2()
    with pytest.raises(BrokenPipeError):
        p.call("send", b"x")
    assert p.conn.writable == 0


def test_reset_in_established(tcp):
    p = tcp.established()
    p.deliver(RST, p.irs + 1)
    assert p.state is State.CLOSED
    evs = p.take_events()
    assert [type(e) for e in evs] == [events.ConnectionReset, events.Closed]
    assert evs[0].errno == errno.ECONNRESET
    assert p.mib.EstabResets == 1 and p.mib.CurrEstab == 0
    with pytest.raises(ConnectionResetError):
        p.call("send", b"x")
    with pytest.raises(ConnectionResetError):
        p.call("recv", 10)


def test_lost_fin_is_retransmitted(tcp):
    p = tcp.fin_wait_1()
    first = p.conn.get_timer()
    assert first == pytest.approx(0.2)  # the handshake measured an RTT of 0: RTO = rto_min
    p.advance(first)
    p.expect("F.", seq=p.iss + 1)
    second = p.conn.get_timer()
    assert second - first == pytest.approx(0.4)  # backed off
    p.advance(second)
    p.expect("F.", seq=p.iss + 1)
    assert p.mib.RetransSegs == 2 and p.mib.TCPTimeouts == 2


def test_last_ack_gives_up_after_retries(tcp):
    p = tcp.last_ack(tcp.PLAIN.replace(orphan_retries=2))
    for _ in range(2):
        p.advance(p.conn.get_timer())
        p.expect("F.")
    p.advance(p.conn.get_timer())
    p.expect_nothing()
    assert p.state is State.CLOSED and p.mib.TCPAbortOnTimeout == 1


def test_out_of_order_fin_waits_for_the_data(tcp):
    p = tcp.established()
    p.deliver(FIN | ACK, p.irs + 101, p.iss + 1)
    p.expect(".", ack=p.irs + 1)  # a hole: immediate duplicate ACK
    assert p.state is State.ESTABLISHED
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"z" * 100)
    p.expect(".", ack=p.irs + 102)
    assert p.state is State.CLOSE_WAIT
    assert [type(e) for e in p.take_events()] == [events.DataReadable, events.PeerClosed]


def test_shutdown_read_discards(tcp):
    p = tcp.established()
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"one")
    p.call("shutdown", socket.SHUT_RD)
    assert p.conn.readable == 0 and p.call("recv", 10) == b"" and p.conn.at_eof
    p.deliver(ACK, p.irs + 4, p.iss + 1, payload=b"two")
    assert p.conn.readable == 0
    p.call("close")  # nothing unread: a FIN, not a RST
    assert p.drain()[-1].flags == "F."


def test_shutdown_write_before_established_waits(tcp):
    p = tcp.syn_sent()
    p.call("send", b"hi", poll=False)
    p.call("shutdown", socket.SHUT_WR)
    p.expect_nothing()
    p.deliver(SYN | ACK, p.irs, p.iss + 1)
    p.expect("FP.", seq=p.iss + 1, payload=b"hi")
    assert p.state is State.FIN_WAIT_1
