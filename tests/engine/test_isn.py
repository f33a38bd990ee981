"""RFC 6528 ISNs and RFC 6056 ephemeral ports."""

from __future__ import annotations

import errno

import pytest

from pytcp.isn import EPHEMERAL_HIGH, EPHEMERAL_LOW, ISN_TICKS_PER_SECOND, IsnGenerator, PortAllocator

TUPLE = (0xC6120001, 40000, 0xC6120002, 80)


def test_isn_grows_with_the_4us_clock() -> None:
    gen = IsnGenerator(b"k")
    first = gen.isn(*TUPLE, now=1.0)
    # Same tuple, one second later: exactly 250000 ticks on (modulo 2**32).
    assert gen.isn(*TUPLE, now=2.0) == (first + ISN_TICKS_PER_SECOND) & 0xFFFFFFFF
    assert gen.isn(*TUPLE, now=1.5) == (first + ISN_TICKS_PER_SECOND // 2) & 0xFFFFFFFF
    # Deterministic for one secret.
    assert IsnGenerator(b"k").isn(*TUPLE, now=1.0) == first


def test_isn_differs_per_tuple_and_secret() -> None:
    gen = IsnGenerator(b"k")
    values = {gen.isn(0xC6120001, port, 0xC6120002, 80, now=5.0) for port in range(40000, 40100)}
    assert len(values) == 100
    assert IsnGenerator(b"other").isn(*TUPLE, now=5.0) != gen.isn(*TUPLE, now=5.0)
    assert all(0 <= v < 1 << 32 for v in values)


def test_isn_wraps_modulo_2_32() -> None:
    gen = IsnGenerator(b"k")
    assert 0 <= gen.isn(*TUPLE, now=1e6) < 1 << 32


def test_ports_in_range_distinct_and_deterministic() -> None:
    alloc = PortAllocator(b"k")
    used: set[int] = set()
    for _ in range(200):
        port = alloc.allocate(1, 2, 80, used.__contains__)
        assert EPHEMERAL_LOW <= port <= EPHEMERAL_HIGH
        assert port not in used
        used.add(port)
    again = PortAllocator(b"k")
    assert again.allocate(1, 2, 80, lambda p: False) == PortAllocator(b"k").allocate(
        1, 2, 80, lambda p: False
    )


def test_consecutive_ports_to_one_destination_differ_without_in_use() -> None:
    alloc = PortAllocator(b"k")
    # Algorithm 4's counter moves on even when the previous port has since been freed.
    first = alloc.allocate(1, 2, 80, lambda p: False)
    second = alloc.allocate(1, 2, 80, lambda p: False)
    assert second == EPHEMERAL_LOW + (first - EPHEMERAL_LOW + 1) % (EPHEMERAL_HIGH - EPHEMERAL_LOW + 1)


def test_other_destinations_start_elsewhere() -> None:
    alloc = PortAllocator(b"k")
    starts = {alloc.allocate(1, 2, dport, lambda p: False) for dport in range(80, 120)}
    assert len(starts) > 30


def test_skips_ports_in_use() -> None:
    alloc = PortAllocator(b"k", low=1000, high=1009)
    first = alloc.allocate(1, 2, 80, lambda p: False)
    # Everything but one port busy: that one is found wherever the search starts.
    free = 1000 + (first - 1000 + 5) % 10
    assert alloc.allocate(1, 2, 80, lambda p: p != free) == free


def test_exhaustion_raises_eaddrnotavail_after_bounded_search() -> None:
    alloc = PortAllocator(b"k", low=1000, high=1009)
    calls: list[int] = []

    def busy(port: int) -> bool:
        calls.append(port)
        return True

    with pytest.raises(OSError) as info:
        alloc.allocate(1, 2, 80, busy)
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert sorted(calls) == list(range(1000, 1010))


def test_bad_range_rejected() -> None:
    with pytest.raises(ValueError):
        PortAllocator(b"k", low=2000, high=1000)
