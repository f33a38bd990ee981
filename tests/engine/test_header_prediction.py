"""Header prediction (InputMixin._predicted) only skips checks that cannot fire for the segments it
takes: the same seeded exchanges -- bulk both ways over a lossy link (recovery, SACK, out-of-order
arrivals), small request/response messages, two-segment buffers (zero windows, probes) -- give
byte-identical packets, MIB counters and end states with the prediction turned off."""

from __future__ import annotations

import random
import socket

import pytest

from pytcp.config import TCPConfig
from pytcp.connection import Connection
from pytcp.state import State
from pytcp.tcp_input import InputMixin

FULL = TCPConfig()  # SACK, timestamps, window scaling, CUBIC
# Windows of two segments: zero windows, window probes and updates all the time.
TINY = TCPConfig(mss=1000, recv_buffer=2000, send_buffer=2000, sack=False, window_scaling=False)


def exchange(tcp, config, *, loss, seed, size, chunk, max_steps=3_000_000):
    """Both ends send ``size`` random bytes in writes of up to ``chunk`` bytes, read whatever arrived and
    close; returns the final counters, states and connection info."""
    pair = tcp.Pair(config, loss=loss, seed=seed)
    rng = random.Random(seed)
    out = {"c": rng.randbytes(size), "s": rng.randbytes(size)}
    got = {"c": bytearray(), "s": bytearray()}
    sent = {"c": 0, "s": 0}
    shut = {"c": False, "s": False}
    pair.client.connect(0.0)
    for _ in range(max_steps):
        for side, conn in (("c", pair.client), ("s", pair.server)):
            if conn is None or conn.state is State.CLOSED:
                continue
            conn.nodelay = True
            data = out[side]
            if conn.state in (State.ESTABLISHED, State.CLOSE_WAIT) and sent[side] < len(data):
                n = rng.randint(1, chunk)
                sent[side] += conn.send(memoryview(data)[sent[side] : sent[side] + n], pair.now)
            if (
                sent[side] == len(data)
                and not shut[side]
                and conn.state in (State.ESTABLISHED, State.CLOSE_WAIT)
            ):
                conn.shutdown(socket.SHUT_WR, pair.now)
                shut[side] = True
            while piece := conn.recv(rng.randint(1, 4 * chunk), pair.now):
                got[side] += piece
            if shut[side] and conn.at_eof:
                conn.close(pair.now)
        if not pair.step():
            break
    assert bytes(got["s"]) == out["c"] and bytes(got["c"]) == out["s"]
    assert pair.server is not None
    return (
        pair.mib_client.snapshot(),
        pair.mib_server.snapshot(),
        pair.client.state,
        pair.server.state,
        pair.client.info(),
        pair.server.info(),
    )


def record(monkeypatch):
    """Every packet any connection emits, in order."""
    packets: list[bytes] = []
    poll = Connection.poll_transmit

    def recording(self, now, out):
        start = len(out)
        poll(self, now, out)
        packets.extend(bytes(p) for p in out[start:])

    monkeypatch.setattr(Connection, "poll_transmit", recording)
    return packets


CASES = {
    "bulk-full-lossy": (FULL, dict(loss=0.03, seed=5, size=300_000, chunk=20_000)),
    "bulk-plain-lossy": (None, dict(loss=0.05, seed=6, size=100_000, chunk=5_000)),
    "request-response": (FULL, dict(loss=0.01, seed=7, size=20_000, chunk=64)),
    "tiny-buffers": (TINY, dict(loss=0.05, seed=8, size=50_000, chunk=3_000)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_prediction_changes_nothing(tcp, monkeypatch, case):
    config, kwargs = CASES[case]
    config = config or tcp.PLAIN
    predicted = 0
    original = InputMixin._predicted

    def counting(self, *args):
        nonlocal predicted
        hit = original(self, *args)
        predicted += hit
        return hit

    with monkeypatch.context() as m:
        m.setattr(InputMixin, "_predicted", counting)
        fast_packets = record(m)
        fast = exchange(tcp, config, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(InputMixin, "_predicted", lambda self, *args: False)
        slow_packets = record(m)
        slow = exchange(tcp, config, **kwargs)
    assert predicted > len(fast_packets) // 4  # the fast path carried a good share of the segments
    assert fast_packets == slow_packets
    assert fast == slow
