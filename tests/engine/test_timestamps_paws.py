"""Timestamps (RFC 7323 3-4) and PAWS (RFC 7323 5)."""

from __future__ import annotations

import pytest

from pytcp.state import State
from tcpcore import ACK, RST, SYN


def ts_established(tcp, t=1.0, **changes):
    p = tcp.syn_sent(tcp.PLAIN.replace(timestamps=True, **changes), now=t)
    p.deliver(SYN | ACK, p.irs, p.iss + 1, mss=1000, ts=(500, int(t * 1000)), t=t + 0.01)
    p.expect(".", ts=(int(t * 1000) + 10, 500))
    p.take_events()
    return p


def test_every_segment_carries_tsval_and_ts_recent(tcp):
    p = ts_established(tcp)
    assert p.conn.info().snd_mss == 1000 - 12
    p.call("send", b"x" * 2000)
    p.expect(".", length=988, ts=(1010, 500))
    p.expect(".", length=988, ts=(1010, 500))
    p.expect("P.", length=24, ts=(1010, 500))


def test_ts_recent_follows_last_ack_sent(tcp):
    """RFC 7323 4.3: with delayed ACKs, echo the timestamp of the earliest unacknowledged segment."""
    p = ts_established(tcp)
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"a" * 100, ts=(600, 1010), t=1.1)
    p.deliver(ACK, p.irs + 101, p.iss + 1, payload=b"b" * 100, ts=(700, 1010), t=1.11)
    p.advance(1.2)
    p.expect(".", ack=p.irs + 201, ts=(1140, 600))
    p.deliver(ACK, p.irs + 201, p.iss + 1, payload=b"c" * 100, ts=(800, 1140), t=1.3)
    p.advance(1.4)
    p.expect(".", ack=p.irs + 301, ts=(1340, 800))


def test_paws_drops_old_duplicates(tcp):
    p = ts_established(tcp)
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"new", ts=(600, 1010), t=1.1)
    p.advance(1.2)
    p.drain()
    p.deliver(ACK, p.irs + 4, p.iss + 1, payload=b"old", ts=(550, 1010), t=1.3)
    p.expect(".", ack=p.irs + 4, ts=(1300, 600))  # RFC 7323 5.3 R1: ACK and drop
    assert p.mib.PAWSEstab == 1 and p.conn.readable == 3


def test_paws_does_not_apply_to_rst(tcp):
    p = ts_established(tcp)
    p.deliver(ACK, p.irs + 1, p.iss + 1, ts=(600, 1010), t=1.1)
    p.deliver(RST, p.irs + 1, ts=(1, 0), t=1.2)
    assert p.state is State.CLOSED


def test_ts_recent_expires_after_24_days(tcp):
    """RFC 7323 5.5: an idle connection's TS.Recent is invalid after 24 days; PAWS must not reject."""
    p = ts_established(tcp)
    day = 86400.0
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"x", ts=(100, 1010), t=1.0 + 25 * day)
    assert p.mib.PAWSEstab == 0 and p.conn.readable == 1


def test_timestamp_echo_measures_retransmitted_segments(tcp):
    """RFC 7323 4.1: the echo says which transmission an ACK answers, so Karn's rule is not needed."""
    p = ts_established(tcp)
    assert p.conn.info().rtt == pytest.approx(0.01)
    p.call("send", b"r")
    p.drain()
    p.advance(p.conn.get_timer())
    retransmitted = p.expect("P.", payload=b"r")
    ts_val = retransmitted.seg.ts_val
    p.deliver(ACK, p.irs + 1, p.iss + 2, ts=(700, ts_val), t=p.now + 0.05)
    assert p.conn.info().rtt == pytest.approx(0.875 * 0.01 + 0.125 * 0.05)
    assert p.conn.info().rto == pytest.approx(0.2)  # the sample collapses the backoff (RFC 6298 5.7 note)


def test_stale_echo_after_timeouts_is_no_rtt_sample(tcp):
    """The peer had the data but its ACKs were lost; our retransmission is an out-of-window duplicate for
    it, which leaves TS.Recent alone (RFC 7323 5.3 R2), so its ACK echoes the original's TSval. As a
    sample that would "RTT" every timeout (RFC 7323 4.2 (C)); Karn's rule applies: no sample, the
    backoff stays (pytcp.scenario seed 159 with 20 % loss hung on a 17 s RTO from such an echo)."""
    p = ts_established(tcp)
    p.call("send", b"r")
    original = p.expect("P.", payload=b"r")
    for rto in (0.4, 0.8, 1.6):
        p.advance(p.conn.get_timer())
        p.expect("P.", payload=b"r")
        assert p.conn.info().rto == pytest.approx(rto)
    p.deliver(ACK, p.irs + 1, p.iss + 2, ts=(700, original.seg.ts_val), t=p.now + 0.02)
    info = p.conn.info()
    assert info.unacked == 0 and info.rtt == pytest.approx(0.01) and info.rto == pytest.approx(1.6)


def test_ts_recent_ignores_a_segment_with_an_unacceptable_ack(tcp):
    """A forged in-window segment with a huge TSval but an ACK of unsent data is dropped (RFC 5961 5.2)
    and must not move TS.Recent (Linux tcp_replace_ts_recent runs after tcp_ack), or PAWS would reject
    the genuine peer from then on."""
    p = ts_established(tcp)
    p.deliver(ACK, p.irs + 1, p.iss + 5000, ts=(0x7FFF0000, 1010), t=1.1)  # acknowledges unsent data
    p.drain()
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"real", ts=(600, 1010), t=1.2)
    assert p.conn.readable == 4 and p.mib.PAWSEstab == 0


def test_reordered_duplicate_ack_passes_paws(tcp):
    """Linux tcp_disordered_ack: a pure duplicate ACK overtaken by a newer segment is not an old
    duplicate; PAWS lets it through so fast retransmit still counts it."""
    p = ts_established(tcp)
    p.call("send", b"x" * 3000)
    p.drain()
    p.deliver(ACK, p.irs + 1, p.iss + 1, ts=(610, 1010), t=1.1)
    p.deliver(ACK, p.irs + 1, p.iss + 1, ts=(605, 1010), t=1.1)  # sent before the one above
    assert p.mib.PAWSEstab == 0
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"d", ts=(605, 1010), t=1.1)  # data: PAWS applies
    assert p.mib.PAWSEstab == 1


def test_replies_to_invalid_segments_are_rate_limited(tcp):
    """RFC 9293 answers an unacceptable segment with an ACK; Linux tcp_oow_rate_limited sends at most
    one per 500 ms for segments without text, so two confused ends cannot ping-pong ACKs forever."""
    p = tcp.established()
    far = p.irs + 1 + 100_000  # beyond the window
    p.deliver(ACK, far, p.iss + 1, t=0.1)
    p.expect(".", seq=p.iss + 1, ack=p.irs + 1)
    p.deliver(ACK, far, p.iss + 1, t=0.2)
    p.expect_nothing()
    p.deliver(ACK, far, p.iss + 1, payload=b"text", t=0.3)  # data is never rate-limited
    p.expect(".", seq=p.iss + 1, ack=p.irs + 1)
    p.deliver(ACK, far, p.iss + 1, t=0.7)
    p.expect(".", seq=p.iss + 1, ack=p.irs + 1)
    assert p.mib.TCPInvalidSequence == 4 and p.mib.TCPACKSkippedSeq == 1
