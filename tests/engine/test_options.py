"""Option bytes and segment sizes (RFC 9293 3.7.1, RFC 6691, RFC 2018, RFC 7323), bounded reassembly,
idle restart (RFC 5681 4.1), the challenge-ACK limiter."""

from __future__ import annotations

import random

from pytcp.config import TCPConfig
from pytcp.connection import ChallengeAckLimiter
from pytcp.stack import Stack
from tcpcore import ACK, SYN


def full_options(tcp, **changes):
    p = tcp.syn_sent(tcp.PLAIN.replace(sack=True, timestamps=True, **changes))
    p.deliver(SYN | ACK, p.irs, p.iss + 1, mss=1000, sack_permitted=True, ts=(1, 0))
    p.expect(".")
    return p


def test_payload_shrinks_with_the_sack_blocks_each_segment_carries(tcp):
    p = full_options(tcp)
    p.deliver(ACK, p.irs + 101, p.iss + 1, payload=b"o" * 100, ts=(2, 0))  # a hole: one SACK block
    p.expect(".", sack=[(p.irs + 101, p.irs + 201)])
    p.call("send", b"d" * 2000)
    # 1000 - 12 (timestamps) - 12 (SACK header and one block, aligned) = 976 bytes of data.
    first = p.expect(".", length=976, sack=[(p.irs + 101, p.irs + 201)])
    assert len(first.packet) == 20 + 20 + 12 + 12 + 976


def test_at_most_three_sack_blocks_beside_timestamps(tcp):
    p = full_options(tcp)
    for k in (1, 3, 5, 7):
        p.deliver(ACK, p.irs + 1 + 100 * k, p.iss + 1, payload=b"h" * 100, ts=(2, 0))
    assert len(p.drain()[-1].seg.sack_blocks) == 3  # 40 - 12 bytes hold 3 blocks (RFC 2018 3)


def test_no_sack_blocks_unless_negotiated(tcp):
    p = tcp.established(tcp.PLAIN.replace(sack=True))  # the peer did not offer SACK
    p.deliver(ACK, p.irs + 101, p.iss + 1, payload=b"o" * 100)
    p.expect(".", ack=p.irs + 1, sack=[])


def test_too_many_holes_drops_the_segment(tcp):
    p = tcp.established(tcp.PLAIN.replace(max_reassembly_ranges=1))
    p.deliver(ACK, p.irs + 101, p.iss + 1, payload=b"a" * 100)
    p.deliver(ACK, p.irs + 301, p.iss + 1, payload=b"b" * 100)  # would need a second range
    assert len(p.drain()) == 2  # both answered at once (duplicate ACKs)
    assert p.mib.TCPOFOQueue == 1 and p.mib.TCPOFODrop == 1
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"c" * 100)  # in-order data is never refused
    p.expect(".", ack=p.irs + 201)


def test_idle_restart_limits_cwnd(tcp):
    p = tcp.established()
    p.call("send", b"g" * 40000)
    for k in range(1, 6):
        p.deliver(ACK, p.irs + 1, p.iss + 1 + 2000 * k, t=0.05)
    assert p.conn.info().cwnd == 20000  # slow start, 2 SMSS per ACK at most (RFC 3465)
    p.drain()
    p.deliver(ACK, p.irs + 1, p.iss + 1 + p.conn.info().bytes_sent, t=0.06)
    p.drain()
    p.deliver(ACK, p.irs + 1, p.iss + 40001, t=0.07)
    p.advance(5.0)  # idle far longer than the RTO
    p.call("send", b"h" * 30000)
    assert len(p.drain()) == 10  # back to the initial window (RFC 5681 4.1)


def test_challenge_ack_limiter_budget():
    fixed = ChallengeAckLimiter(3)
    assert [fixed.challenge_ack_allowed(10.5) for _ in range(4)] == [True, True, True, False]
    assert fixed.challenge_ack_allowed(11.0)
    # With randomness (Linux, against CVE-2016-5696) the budget lies in [limit/2, limit*3/2).
    for seed in range(20):
        jittered = ChallengeAckLimiter(10, random.Random(seed))
        budget = sum(jittered.challenge_ack_allowed(1.0) for _ in range(100))
        assert 5 <= budget < 15


def test_stack_randomises_the_challenge_ack_budget():
    """The stack's shared limiter draws each second's budget (Linux, CVE-2016-5696), from its seed."""
    config = TCPConfig(challenge_ack_limit=10)

    def budget(seed: int) -> int:
        limiter = Stack(0xC6120002, config, seed=seed)._limiter
        return sum(limiter.challenge_ack_allowed(1.0) for _ in range(100))

    budgets = [budget(seed) for seed in range(10)]
    assert len(set(budgets)) > 1 and all(5 <= b < 15 for b in budgets)
    assert budgets == [budget(seed) for seed in range(10)]  # a seeded stack replays
