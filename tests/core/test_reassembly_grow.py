"""tcpcore.Reassembler.grow (receive-buffer autotuning): the ring enlarges in place of the data, the
window grows by the difference, and compiled and twin agree."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from tcpcore.errors import TooManyHoles

MASK = 0xFFFFFFFF
WRAP = 0xFFFFFFF0  # sequence numbers wrap during the test


def sq(off: int) -> int:
    return (WRAP + off) & MASK


def test_grow_keeps_unread_bytes_and_out_of_order_ranges(core: SimpleNamespace) -> None:
    r = core.Reassembler(WRAP, 10)
    assert r.write(sq(0), b"abcdefgh") == 8
    assert r.read(6) == b"abcdef"
    assert r.write(sq(8), b"ij") == 2  # the ring wraps: head at 6, unread "ghij" across the end
    assert r.write(sq(12), b"mn") == 0  # out of order, inside the 6-byte window
    r.grow(20)
    assert (r.capacity, r.readable, r.window, r.ranges()) == (20, 4, 16, [(sq(12), sq(14))])
    assert r.write(sq(14), b"opqrstuvwxyz") == 0  # beyond the old window, inside the new one
    assert r.write(sq(10), b"kl") == 16
    assert r.read() == b"ghijklmnopqrstuvwxyz"
    assert r.window == 20


def test_grow_of_an_empty_ring_and_to_the_same_size(core: SimpleNamespace) -> None:
    r = core.Reassembler(5, 4)
    r.grow(4)
    r.grow(8)
    assert r.write(5, b"12345678") == 8 and r.read() == b"12345678"


@pytest.mark.parametrize("capacity", [3, (1 << 30) + 1])
def test_grow_never_shrinks_nor_passes_the_bound(core: SimpleNamespace, capacity: int) -> None:
    r = core.Reassembler(0, 4)
    with pytest.raises(ValueError):
        r.grow(capacity)
    assert r.capacity == 4


@pytest.mark.parametrize("seed", range(20))
def test_compiled_and_twin_agree_across_growth(
    both: tuple[SimpleNamespace, SimpleNamespace], seed: int
) -> None:
    rng = random.Random(seed)
    stream = rng.randbytes(20_000)
    rings = [impl.Reassembler(WRAP, 50, 6) for impl in both]
    got: list[bytearray] = [bytearray(), bytearray()]
    for _ in range(400):
        op = rng.random()
        if op < 0.05:
            size = rings[0].capacity + rng.randint(0, 40)
            for r in rings:
                r.grow(size)
        elif op < 0.3:
            n = rng.randint(0, 60)
            for r, out in zip(rings, got, strict=True):
                out += r.read(n)
        else:
            base = (rings[0].rcv_nxt - WRAP) & MASK
            off = max(0, base + rng.randint(-10, rings[0].window))
            data = stream[off : off + rng.randint(1, 30)]
            outcomes = []
            for r in rings:
                try:
                    outcomes.append(r.write(sq(off), data))
                except TooManyHoles:
                    outcomes.append(-1)
            assert outcomes[0] == outcomes[1]
        states = [(r.rcv_nxt, r.readable, r.window, r.ranges(), r.peek()) for r in rings]
        assert states[0] == states[1]
    for r, out in zip(rings, got, strict=True):
        out += r.read()
        assert bytes(out) == stream[: len(out)]
