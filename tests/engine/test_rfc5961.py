"""RFC 5961: blind reset, SYN and data injection mitigations; challenge ACK rate limit (section 7)."""

from __future__ import annotations

from pytcp import events
from pytcp.state import State
from tcpcore import ACK, RST, SYN


def test_rst_exactly_at_rcv_nxt_resets(tcp):
    p = tcp.established()
    p.deliver(RST, p.irs + 1)
    assert p.state is State.CLOSED


def test_rst_in_window_not_exact_gets_challenge_ack(tcp):
    p = tcp.established()
    p.deliver(RST, p.irs + 1000)
    p.expect(".", seq=p.iss + 1, ack=p.irs + 1)
    assert p.state is State.ESTABLISHED and p.mib.TCPChallengeACK == 1


def test_rst_outside_window_is_dropped_silently(tcp):
    p = tcp.established()
    p.deliver(RST, p.irs + 100000)
    p.deliver(RST, p.irs - 5)
    p.expect_nothing()
    assert p.state is State.ESTABLISHED


def test_syn_in_established_gets_challenge_ack(tcp):
    p = tcp.established()
    p.deliver(SYN, p.irs + 10)
    p.expect(".", seq=p.iss + 1, ack=p.irs + 1)
    p.deliver(SYN, p.irs + 100000)
    p.expect(".", seq=p.iss + 1, ack=p.irs + 1)
    assert p.mib.TCPSYNChallenge == 2 and p.state is State.ESTABLISHED


def test_ack_of_unsent_data_is_dropped_with_challenge(tcp):
    p = tcp.established()
    p.deliver(ACK, p.irs + 1, p.iss + 50, payload=b"inject")
    p.expect(".", seq=p.iss + 1, ack=p.irs + 1)
    assert p.conn.readable == 0 and p.mib.TCPChallengeACK == 1


def test_ack_far_below_snd_una_is_dropped_with_challenge(tcp):
    p = tcp.established()
    p.deliver(ACK, p.irs + 1, p.iss + 1 - 70000, payload=b"inject")  # MAX.SND.WND is 65535
    p.expect(".", ack=p.irs + 1)
    assert p.conn.readable == 0
    p.deliver(ACK, p.irs + 1, p.iss + 1 - 1000, payload=b"ok")  # old but plausible: text accepted
    assert p.conn.readable == 2


def test_challenge_acks_are_rate_limited(tcp):
    p = tcp.established(limit=2)
    for _ in range(3):
        p.deliver(RST, p.irs + 500, t=5.2)
    assert len(p.drain()) == 2
    assert p.mib.TCPChallengeACK == 2 and p.mib.TCPAckSkippedChallenge == 1
    p.deliver(RST, p.irs + 500, t=6.0)  # a new second, a new budget
    assert len(p.drain()) == 1


def test_unacceptable_segment_gets_an_ack(tcp):
    p = tcp.established()
    p.deliver(ACK, p.irs + 200000, p.iss + 1, payload=b"far")
    p.expect(".", seq=p.iss + 1, ack=p.irs + 1)
    assert p.mib.TCPChallengeACK == 0  # a plain RFC 9293 ACK, not a challenge


def test_rst_in_close_wait_resets(tcp):
    p = tcp.close_wait()
    p.deliver(RST, p.irs + 2)
    assert p.state is State.CLOSED
    assert [type(e) for e in p.take_events()] == [events.ConnectionReset, events.Closed]
