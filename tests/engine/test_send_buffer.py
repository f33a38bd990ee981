"""The send buffer: it counts bytes whatever the item size of what the application passes, and grows with
cwnd while the application keeps it full (Linux tcp_sndbuf_expand) unless SO_SNDBUF fixed its size."""

from __future__ import annotations

from array import array

from pytcp import events
from pytcp.sender import Sender
from tcpcore import ACK

WORDS = array("I", range(20_000))  # 80000 bytes in 20000 items


def test_write_counts_bytes_of_wide_items() -> None:
    snd = Sender(3000)
    assert snd.write(memoryview(WORDS)) == 3000
    assert bytes(snd.buf) == WORDS.tobytes()[:3000]
    snd = Sender(100_000)
    assert snd.write(memoryview(WORDS)) == 80_000 and snd.end == 80_001


def test_partial_send_of_wide_items_wakes_the_writer_later(tcp) -> None:
    p = tcp.established()  # 64000-byte send buffer
    assert p.call("send", memoryview(WORDS)) == 64_000
    t = 0.0
    while not p.take_events(events.Writable):
        assert p.conn.snd.free < 64_000 // 3, "a third of the buffer is free: the writer must be woken"
        t += 0.01
        p.deliver(ACK, p.irs + 1, p.conn.snd_nxt, t=t)  # everything sent so far arrived


def fill_and_ack(p, rounds: int) -> None:
    """The application keeps the buffer full; the peer acknowledges every segment, round after round."""
    for k in range(rounds):
        p.call("send", b"f" * 200_000)
        for sent in p.drain():
            end = sent.seg.seq + len(sent.payload)
            p.deliver(ACK, p.irs + 1, end, t=0.01 * (k + 1), poll=False)
        p.poll()


def test_buffer_grows_to_two_congestion_windows_for_a_blocked_writer(tcp) -> None:
    p = tcp.established()  # 64000 bytes to start with
    fill_and_ack(p, 8)
    info = p.conn.info()
    assert 64_000 < p.conn.snd.capacity <= 2 * info.cwnd  # two windows as of the last send


def test_buffer_growth_stops_at_max_buffer(tcp) -> None:
    p = tcp.established(tcp.PLAIN.replace(max_buffer=100_000))
    fill_and_ack(p, 8)
    assert p.conn.snd.capacity == 100_000


def test_so_sndbuf_fixes_the_size(tcp) -> None:
    p = tcp.established()
    p.conn.set_buffer_sizes(send=64_000)
    fill_and_ack(p, 8)
    assert p.conn.snd.capacity == 64_000
