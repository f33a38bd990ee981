"""Micro benchmarks of the per-packet hot path, for both implementations.

Run: ``pytest bench/micro --benchmark-json=bench/results/micro.json`` then
``python -m bench.micro.report bench/results/micro.json`` for the Cython/Python ratio table.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest

SRC = 0xC6120001  # 198.18.0.1
DST = 0xC6120002  # 198.18.0.2
MSS_PAYLOAD = os.urandom(1460)
SUPER_PAYLOAD = os.urandom(65536)


@pytest.mark.benchmark(group="checksum-1460")
def test_checksum_1460(benchmark: Any, core: SimpleNamespace) -> None:
    benchmark(core.internet_checksum, MSS_PAYLOAD)


@pytest.mark.benchmark(group="checksum-64k")
def test_checksum_64k(benchmark: Any, core: SimpleNamespace) -> None:
    benchmark(core.internet_checksum, SUPER_PAYLOAD)


def _segment(core: SimpleNamespace) -> bytes:
    packet: bytes = core.build_tcp_ipv4(
        SRC, DST, 40000, 80, 1000, 2000, 0x18, 65535, MSS_PAYLOAD, timestamps=(123456, 654321)
    )
    return packet


@pytest.mark.benchmark(group="parse+verify-1500")
def test_parse_verify_full_segment(benchmark: Any, core: SimpleNamespace) -> None:
    packet = _segment(core)
    benchmark(core.parse_packet, packet)


@pytest.mark.benchmark(group="build-1500")
def test_build_full_segment(benchmark: Any, core: SimpleNamespace) -> None:
    benchmark(_segment, core)


@pytest.mark.benchmark(group="reassembly-inorder")
def test_reassembly_in_order(benchmark: Any, core: SimpleNamespace) -> None:
    """One in-order 1460-byte segment written and read back: the receive fast path."""
    buf = core.Reassembler(0, 1 << 20)
    state = {"seq": 0}

    def step() -> None:
        buf.write(state["seq"], MSS_PAYLOAD)
        buf.read()
        state["seq"] = (state["seq"] + 1460) & 0xFFFFFFFF

    benchmark(step)


@pytest.mark.benchmark(group="reassembly-ooo")
def test_reassembly_out_of_order(benchmark: Any, core: SimpleNamespace) -> None:
    """Eight segments arriving in reverse order, then one read: hole filling and merging."""
    seg = MSS_PAYLOAD
    state = {"base": 0}

    def step() -> None:
        base = state["base"]
        buf = core.Reassembler(base, 1 << 16)
        for i in range(7, -1, -1):
            buf.write((base + i * 1460) & 0xFFFFFFFF, seg)
        buf.read()
        state["base"] = (base + 8 * 1460) & 0xFFFFFFFF

    benchmark(step)
