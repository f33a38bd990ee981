"""Nagle's algorithm (RFC 9293 3.7.4, Minshall's variant as Linux) and delayed ACKs (RFC 5681 4.2)."""

from __future__ import annotations

from tcpcore import ACK


def test_nagle_holds_a_small_segment_while_one_is_unacked(tcp):
    p = tcp.established()
    p.call("send", b"a")
    p.expect("P.", payload=b"a")
    p.call("send", b"b")
    p.call("send", b"c")
    p.expect_nothing()
    p.deliver(ACK, p.irs + 1, p.iss + 2, t=0.01)
    p.expect("P.", seq=p.iss + 2, payload=b"bc")  # coalesced


def test_nagle_lets_full_segments_and_the_tail_after_them_go(tcp):
    """Minshall: only an unacknowledged *small* segment holds the next small one."""
    p = tcp.established()
    p.call("send", b"x" * 1500)
    p.expect(".", length=1000)
    p.expect("P.", length=500)
    p.call("send", b"y" * 10)
    p.expect_nothing()


def test_nodelay_sends_at_once_and_setting_it_pushes(tcp):
    p = tcp.established()
    p.call("send", b"a")
    p.call("send", b"b")
    p.expect("P.", payload=b"a")
    p.expect_nothing()
    p.conn.nodelay = True
    p.poll()
    p.expect("P.", payload=b"b")
    p.call("send", b"c")
    p.expect("P.", payload=b"c")


def test_fin_is_never_held_by_nagle(tcp):
    p = tcp.established()
    p.call("send", b"a")
    p.drain()
    p.call("send", b"b", poll=False)
    p.call("close")
    p.expect("FP.", seq=p.iss + 2, payload=b"b")


def test_delayed_ack_for_a_single_segment(tcp):
    p = tcp.established()
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"a" * 100, t=1.0)
    p.expect_nothing()
    assert p.conn.get_timer() == 1.0 + 0.04
    p.advance(1.05)
    p.expect(".", ack=p.irs + 101)
    assert p.conn.get_timer() is None


def test_every_second_full_segment_is_acked_at_once(tcp):
    p = tcp.established()
    for i in range(4):
        p.deliver(ACK, p.irs + 1 + 1000 * i, p.iss + 1, payload=b"f" * 1000)
    p.expect(".", ack=p.irs + 2001)
    p.expect(".", ack=p.irs + 4001)
    p.expect_nothing()


def test_quickack_segments_one_acks_each_segment(tcp):
    p = tcp.established(tcp.PLAIN.replace(quickack_segments=1))
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"f" * 1000)
    p.expect(".", ack=p.irs + 1001)


def test_data_sent_cancels_the_delayed_ack(tcp):
    p = tcp.established()
    p.deliver(ACK, p.irs + 1, p.iss + 1, payload=b"q")
    p.call("send", b"r")
    p.expect("P.", ack=p.irs + 2, payload=b"r")
    p.advance(0.2)
    assert not [s for s in p.drain() if not s.payload]  # no separate ACK


def test_small_segments_still_acked_by_the_timer(tcp):
    p = tcp.established()
    for i in range(5):
        p.deliver(ACK, p.irs + 1 + 10 * i, p.iss + 1, payload=b"s" * 10, t=0.005 * i)
    p.expect_nothing()
    p.advance(0.041)
    p.expect(".", ack=p.irs + 51)
