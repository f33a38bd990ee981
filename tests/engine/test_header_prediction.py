"""Header prediction (Connection._predicted) only skips checks that cannot fire for the segments it
takes: the same seeded exchanges -- bulk both ways over a lossy link (recovery, SACK, out-of-order
arrivals), small request/response messages, two-segment buffers (zero windows, probes) -- give
byte-identical packets, MIB counters and end states with the prediction turned off."""

from __future__ import annotations

import random
import socket
from typing import ClassVar

import pytest

from pytcp.config import TCPConfig
from pytcp.connection import Connection
from pytcp.state import State

FULL = TCPConfig()  # SACK, timestamps, window scaling, CUBIC
# Windows of two segments: zero windows, window probes and updates all the time.
TINY = TCPConfig(mss=1000, recv_buffer=2000, send_buffer=2000, sack=False, window_scaling=False)


def exchange(tcp, connection, config, *, loss, seed, size, chunk, max_steps=3_000_000):
    """Both ends send ``size`` random bytes in writes of up to ``chunk`` bytes, read whatever arrived and
    close; returns the final counters, states and connection info."""
    pair = tcp.Pair(config, loss=loss, seed=seed, connection=connection)
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


class Recorded(Connection):
    """Records every packet it emits, in order, in its class's ``packets``."""

    packets: ClassVar[list[bytes]]

    def poll_transmit(self, now, out):
        start = len(out)
        super().poll_transmit(now, out)
        type(self).packets.extend(bytes(p) for p in out[start:])


class Predicted(Recorded):
    """Header prediction on, counting the segments it takes."""

    packets: ClassVar[list[bytes]] = []
    hits = 0

    def _predicted(self, *args):
        hit = super()._predicted(*args)
        Predicted.hits += hit
        return hit


class Unpredicted(Recorded):
    """Header prediction off: every segment takes the full path."""

    packets: ClassVar[list[bytes]] = []

    def _predicted(self, *args):
        return False


CASES = {
    "bulk-full-lossy": (FULL, dict(loss=0.03, seed=5, size=300_000, chunk=20_000)),
    "bulk-plain-lossy": (None, dict(loss=0.05, seed=6, size=100_000, chunk=5_000)),
    "request-response": (FULL, dict(loss=0.01, seed=7, size=20_000, chunk=64)),
    "tiny-buffers": (TINY, dict(loss=0.05, seed=8, size=50_000, chunk=3_000)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_prediction_changes_nothing(tcp, case):
    # Subclasses, not patches: the compiled engine's classes are extension types, which take no patching.
    config, kwargs = CASES[case]
    config = config or tcp.PLAIN
    Predicted.packets, Predicted.hits, Unpredicted.packets = [], 0, []
    fast = exchange(tcp, Predicted, config, **kwargs)
    slow = exchange(tcp, Unpredicted, config, **kwargs)
    assert Predicted.hits > len(Predicted.packets) // 4  # the fast path carried a good share of the segments
    assert Predicted.packets == Unpredicted.packets
    assert fast == slow
