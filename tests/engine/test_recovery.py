"""Fast retransmit and recovery: NewReno (RFC 5681 3.2, RFC 6582, RFC 3042) and SACK (RFC 6675, RFC 2883)."""

from __future__ import annotations

import pytest

from tcpcore import ACK, SYN

SACK = {"sack": True}


def offsets(p):
    return [(s.seg.seq - p.iss - 1, len(s.payload)) for s in p.drain()]


def sack_established(tcp, **changes):
    p = tcp.syn_sent(tcp.PLAIN.replace(sack=True, **changes))
    p.deliver(SYN | ACK, p.irs, p.iss + 1, mss=1000, sack_permitted=True)
    p.expect(".")
    p.take_events()
    return p


def ack(p, n, t, **kw):
    """The peer acknowledges n bytes of our data at time t."""
    p.deliver(ACK, p.irs + 1, p.iss + 1 + n, t=t, **kw)


def sacks(p, *blocks):
    return [(p.iss + 1 + a, p.iss + 1 + b) for a, b in blocks]


def test_newreno_fast_retransmit_and_full_ack(tcp):
    p = tcp.established()
    p.call("send", b"z" * 10000)
    assert len(offsets(p)) == 10
    ack(p, 1000, 0.05)  # segment 2 (offset 1000) was lost; 3..10 arrive
    cwnd_before = p.conn.info().cwnd
    assert cwnd_before == 11000
    ack(p, 1000, 0.051)
    ack(p, 1000, 0.052)
    p.expect_nothing()
    ack(p, 1000, 0.053)  # the third duplicate (RFC 5681 3.2)
    p.expect("P.", seq=p.iss + 1001, length=1000)
    info = p.conn.info()
    assert info.ca_state == "recovery" and info.ssthresh == 4500  # FlightSize 9000 / 2
    assert info.cwnd == 4500  # the algorithm's cwnd; the 3*SMSS inflation lives in recovery
    assert p.mib.TCPRenoRecovery == 1 and p.mib.TCPFastRetrans == 1
    for i in range(5):
        ack(p, 1000, 0.054 + i / 1000)
    p.expect_nothing()  # nothing new to send
    ack(p, 10000, 0.1)  # full ACK
    info = p.conn.info()
    assert info.ca_state == "open" and info.cwnd == 4500  # deflated to ssthresh (RFC 6582 3.2 step 3)


def test_newreno_partial_ack_retransmits_the_next_hole(tcp):
    p = tcp.established()
    p.call("send", b"z" * 10000)
    p.drain()
    ack(p, 1000, 0.05)  # offsets 1000 and 3000 lost
    for i in range(3):
        ack(p, 1000, 0.051 + i / 1000)
    assert offsets(p) == [(1000, 1000)]
    ack(p, 3000, 0.06)  # partial ACK (RFC 6582 3.2 step 5)
    assert offsets(p) == [(3000, 1000)]
    assert p.conn.info().ca_state == "recovery"
    ack(p, 10000, 0.07)
    assert p.conn.info().ca_state == "open"
    assert p.mib.TCPRenoRecovery == 1 and p.mib.TCPFastRetrans == 2


def test_limited_transmit(tcp):
    """RFC 3042: the first two duplicate ACKs each release one new segment."""
    p = tcp.established()
    p.call("send", b"l" * 15000)
    assert len(p.drain()) == 10
    ack(p, 0, 0.05)
    assert offsets(p) == [(10000, 1000)]
    ack(p, 0, 0.051)
    assert offsets(p) == [(11000, 1000)]
    ack(p, 0, 0.052)
    assert offsets(p)[0] == (0, 1000)  # the fast retransmit


def test_dupacks_after_a_timeout_do_not_fast_retransmit(tcp):
    """RFC 6582 3.2 step 1 / 4.1: duplicates of data sent before the RTO start no recovery."""
    p = tcp.established()
    p.call("send", b"r" * 5000)
    p.drain()
    p.advance(0.2)
    assert offsets(p) == [(0, 1000)]
    for i in range(4):
        ack(p, 0, 0.21 + i / 1000)
    assert p.mib.TCPRenoRecovery == 0 and p.conn.info().ca_state == "loss"


def test_window_change_is_not_a_duplicate(tcp):
    p = tcp.established()
    p.call("send", b"w" * 5000)
    p.drain()
    for i, win in enumerate((60000, 50000, 40000, 30000)):
        p.deliver(ACK, p.irs + 1, p.iss + 1, win, t=0.01 + i / 1000)
    p.expect_nothing()
    assert p.mib.TCPRenoRecovery == 0


def test_sack_recovery(tcp):
    p = sack_established(tcp)
    p.call("send", b"s" * 10000)
    p.drain()
    ack(p, 1000, 0.05)
    ack(p, 1000, 0.051, sack=sacks(p, (2000, 3000)))
    ack(p, 1000, 0.052, sack=sacks(p, (2000, 4000)))
    p.expect_nothing()
    ack(p, 1000, 0.053, sack=sacks(p, (2000, 5000)))  # 3 segments SACKed above: offset 1000 is lost
    assert offsets(p) == [(1000, 1000)]
    info = p.conn.info()
    assert info.ca_state == "recovery" and info.cwnd == 4500 and info.sacked == 3000
    assert info.pipe == 9000 - 3000  # RFC 6675 SetPipe: 1000 lost but retransmitted counts once
    assert p.mib.TCPSackRecovery == 1 and p.mib.TCPRenoRecovery == 0
    ack(p, 10000, 0.1)
    assert p.conn.info().ca_state == "open"


def test_sack_recovery_with_two_holes_and_new_data(tcp):
    p = sack_established(tcp)
    p.call("send", b"t" * 16000)
    assert len(p.drain()) == 10
    # Offsets 0 and 2000 lost; the rest arrives and is SACKed.
    blocks = [(1000, 2000)]
    ack(p, 0, 0.05, sack=sacks(p, *blocks))
    for end in (4000, 5000, 6000):
        ack(p, 0, 0.05, sack=sacks(p, (3000, end), (1000, 2000)))
    # The first two SACKs freed pipe for new segments (limited transmit, RFC 6675 5 (3)), the third
    # started recovery with the first hole. The second hole is lost too by now (3 segments SACKed above
    # it) but pipe (12000 - 4000 SACKed - 2000 lost + 1000 retransmitted) exceeds cwnd = 6000.
    assert offsets(p) == [(10000, 1000), (11000, 1000), (0, 1000)]
    assert p.conn.info().lost == 2000
    ack(p, 0, 0.06, sack=sacks(p, (3000, 7000), (1000, 2000)))
    p.expect_nothing()
    ack(p, 0, 0.06, sack=sacks(p, (3000, 8000), (1000, 2000)))
    assert offsets(p) == [(2000, 1000)]  # NextSeg rule 1 before new data
    ack(p, 0, 0.06, sack=sacks(p, (3000, 9000), (1000, 2000)))
    assert offsets(p) == [(12000, 1000)]  # then rule 2: new data
    assert p.mib.TCPSackRecovery == 1 and p.mib.TCPFastRetrans == 2


def test_dsack_is_counted_and_not_a_loss_signal(tcp):
    p = sack_established(tcp)
    p.call("send", b"d" * 5000)
    p.drain()
    for i in range(4):
        # D-SACK: the first block lies below the cumulative ACK (RFC 2883 4).
        ack(p, 2000, 0.05 + i / 1000, sack=sacks(p, (0, 1000)))
    p.expect_nothing()
    assert p.mib.TCPDSACKRecv == 4 and p.conn.info().ca_state == "open"


def test_dsack_inside_second_block(tcp):
    p = sack_established(tcp)
    p.call("send", b"d" * 5000)
    p.drain()
    ack(p, 0, 0.05, sack=sacks(p, (2000, 3000), (1000, 4000)))
    assert p.mib.TCPDSACKRecv == 1


def test_we_send_dsack_for_duplicates(tcp):
    p = sack_established(tcp)
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"a" * 500)
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"a" * 500)
    p.expect(".", ack=p.irs + 501, sack=[(p.irs + 1, p.irs + 501)])
    p.deliver(ACK, p.irs + 1001, p.iss + 1, payload=b"c" * 500)
    p.expect(".", ack=p.irs + 501, sack=[(p.irs + 1001, p.irs + 1501)])
    p.deliver(ACK, p.irs + 1001, p.iss + 1, payload=b"c" * 500)  # an out-of-order duplicate
    p.expect(".", ack=p.irs + 501, sack=[(p.irs + 1001, p.irs + 1501)] * 2)
    p.deliver(ACK, p.irs + 1501, p.iss + 1, payload=b"e" * 500)
    p.expect(".", ack=p.irs + 501, sack=[(p.irs + 1001, p.irs + 2001)])  # reported once only


def test_no_dsack_when_disabled(tcp):
    p = sack_established(tcp, dsack=False)
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"a" * 500)
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"a" * 500)
    p.expect(".", ack=p.irs + 501, sack=[])


def test_sack_blocks_most_recent_first_and_bounded(tcp):
    p = sack_established(tcp)
    for k in (1, 3, 5, 7, 9):
        p.deliver(ACK, p.irs + 1 + 100 * k, p.iss + 1, payload=b"h" * 100)
    sent = p.drain()[-1]
    assert list(sent.seg.sack_blocks) == [(p.irs + 1 + 100 * k, p.irs + 101 + 100 * k) for k in (9, 7, 5, 3)]


def test_reneging_receiver_gets_everything_again_after_timeout(tcp):
    """RFC 2018 8: the receiver dropped SACKed data (the cumulative ACK stops at a SACKed segment)."""
    p = sack_established(tcp)
    p.call("send", b"n" * 3000)
    p.drain()
    ack(p, 0, 0.01, sack=sacks(p, (1000, 3000)))
    ack(p, 1000, 0.02, sack=sacks(p, (1000, 3000)))  # the hole is filled, yet the ACK stops at 1000
    assert p.conn.info().sacked == 2000
    p.advance(p.conn.get_timer())
    assert p.conn.info().sacked == 0  # SACKed head at the timeout: forget every SACK mark
    assert offsets(p) == [(1000, 1000)]


def timed_sack_established(tcp):
    """SACK on, and a first RTT sample (and minimum RTT) of 10 ms from the handshake."""
    p = tcp.syn_sent(tcp.PLAIN.replace(sack=True))
    p.deliver(SYN | ACK, p.irs, p.iss + 1, mss=1000, sack_permitted=True, t=0.01)
    p.expect(".")
    assert p.conn.info().rtt == 0.01
    return p


def loss_recovery_with_two_retransmissions(tcp):
    """Four segments lost; the timeout resends the first, its ACK clocks out the next two (Linux Loss)."""
    p = timed_sack_established(tcp)
    p.call("send", b"q" * 4000)
    assert len(offsets(p)) == 4
    p.advance(p.conn.get_timer())  # RTO 0.2 s
    assert offsets(p) == [(0, 1000)]
    ack(p, 1000, p.now + 0.02)
    assert offsets(p) == [(1000, 1000), (2000, 1000)]  # slow start: cwnd 2 segments
    assert p.conn.info().ca_state == "loss"
    return p


def test_lost_retransmission_is_sent_again_on_sack_evidence(tcp):
    """RFC 8985 (RACK), as Linux in the Loss state: the retransmission of offset 1000 is lost again, and
    the SACK of offset 2000, retransmitted after it, shows it. It goes again at once, ACK-clocked, not
    after another (backed-off) timeout (pytcp.scenario seed 269 with 20 % loss hung that way)."""
    p = loss_recovery_with_two_retransmissions(tcp)
    ack(p, 1000, p.now + 0.02, sack=sacks(p, (2000, 3000)))
    assert offsets(p) == [(1000, 1000), (3000, 1000)]
    assert p.mib.TCPLostRetransmit == 1
    ack(p, 4000, p.now + 0.02)
    assert p.conn.info().ca_state == "open" and p.conn.get_timer() is None


def test_sack_too_soon_after_a_retransmission_is_no_evidence(tcp):
    """RFC 8985 6.2 step 2: SACKed sooner than the minimum RTT after its retransmission, offset 2000 must
    have been its original; the retransmission of offset 1000 may still be on its way."""
    p = loss_recovery_with_two_retransmissions(tcp)
    ack(p, 1000, p.now + 0.005, sack=sacks(p, (2000, 3000)))
    assert offsets(p) == [(3000, 1000)]
    assert p.mib.TCPLostRetransmit == 0


def test_sack_of_new_data_is_an_rtt_sample(tcp):
    """As Linux tcp_ack_update_rtt: newly SACKed data never retransmitted is an RTT sample while the
    cumulative ACK is stuck, but only data sent since the last loss event: older SACK news may ride on an
    ACK that a retransmission provoked after the ACKs carrying it were lost."""
    p = timed_sack_established(tcp)
    p.call("send", b"s" * 6000)
    p.drain()
    ack(p, 0, 0.06, sack=sacks(p, (1000, 2000)))
    assert p.conn.info().rtt == pytest.approx(0.875 * 0.01 + 0.125 * 0.05)
    ack(p, 0, 0.07, sack=sacks(p, (1000, 3000)))
    ack(p, 0, 0.08, sack=sacks(p, (1000, 4000)))  # more than 2 SMSS above the hole: recovery
    assert p.conn.info().ca_state == "recovery"
    assert offsets(p) == [(0, 1000)]
    rtt = p.conn.info().rtt
    ack(p, 0, 0.5, sack=sacks(p, (1000, 6000)))  # sent before recovery began: no sample
    assert p.conn.info().rtt == rtt
