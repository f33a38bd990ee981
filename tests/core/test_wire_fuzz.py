"""Fuzz the parsers: only MalformedPacket may escape, and both implementations agree exactly."""

from __future__ import annotations

import struct
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpcore import _wire_py
from tcpcore.errors import MalformedPacket

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
U32 = st.integers(0, 0xFFFFFFFF)

IP_FIELDS = (
    "version",
    "header_length",
    "tos",
    "total_length",
    "ident",
    "dont_fragment",
    "more_fragments",
    "fragment_offset",
    "ttl",
    "protocol",
    "checksum",
    "src",
    "dst",
    "payload_offset",
    "payload_length",
    "is_fragment",
)
TCP_FIELDS = (
    "src_port",
    "dst_port",
    "seq",
    "ack",
    "header_length",
    "flags",
    "window",
    "checksum",
    "urgent",
    "mss",
    "wscale",
    "sack_permitted",
    "has_timestamps",
    "ts_val",
    "ts_ecr",
    "sack_blocks",
    "payload_offset",
    "payload_length",
)


def describe(result: Any) -> Any:
    """Every public field (with its type), the payload bytes and the repr of a parse result."""
    if result is None:
        return None
    if isinstance(result, tuple):
        return tuple(describe(part) for part in result)
    names = IP_FIELDS if hasattr(result, "ttl") else TCP_FIELDS
    fields = [(name, type(getattr(result, name)), getattr(result, name)) for name in names]
    if names is TCP_FIELDS:
        fields.append(("payload", bytes, bytes(result.payload)))
    return fields, repr(result)


def outcome(parse: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """The parse result or the MalformedPacket message; any other exception fails the test."""
    try:
        return "ok", describe(parse(*args))
    except MalformedPacket as exc:
        return "malformed", str(exc)


def check_all(core: SimpleNamespace, data: bytes, tcp_args: tuple[int, int, int, int]) -> list[Any]:
    """Run every parser on data with and without checksum verification."""
    results = []
    for verify in (True, False):
        results.append(outcome(core.parse_ipv4, data, verify))
        results.append(outcome(core.parse_packet, data, verify))
        results.append(outcome(core.parse_tcp, data, *tcp_args, verify))
    # A bytearray (the receive-buffer type) behaves exactly as bytes.
    results.append(outcome(core.parse_packet, bytearray(data), False))
    return results


TCP_ARGS = st.tuples(st.integers(-4, 80), st.integers(-4, 120), U32, U32)


@SETTINGS
@given(data=st.binary(max_size=120), tcp_args=TCP_ARGS)
def test_random_bytes(core: SimpleNamespace, data: bytes, tcp_args: tuple[int, int, int, int]) -> None:
    check_all(core, data, tcp_args)


@SETTINGS
@given(data=st.binary(max_size=120), tcp_args=TCP_ARGS)
def test_random_bytes_agree(
    both: tuple[SimpleNamespace, SimpleNamespace], data: bytes, tcp_args: tuple[int, int, int, int]
) -> None:
    compiled, twin = both
    assert check_all(compiled, data, tcp_args) == check_all(twin, data, tcp_args)


@st.composite
def valid_packets(draw: st.DrawFn) -> bytes:
    """Well-formed packets with any mix of options and sometimes IPv4 options, from the twin's builder."""
    u16, u8 = st.integers(0, 0xFFFF), st.integers(0, 255)
    data = _wire_py.build_tcp_ipv4(
        draw(U32), draw(U32), draw(u16), draw(u16), draw(U32), draw(U32), draw(u8), draw(u16),
        draw(st.binary(max_size=40)),
        mss=draw(u16), wscale=draw(st.integers(-1, 255)), sack_permitted=draw(st.booleans()),
        timestamps=draw(st.none() | st.tuples(U32, U32)),
        sack_blocks=draw(st.lists(st.tuples(U32, U32), max_size=4)),
    )  # fmt: skip
    ip_options = draw(st.sampled_from([b"", b"\x94\x04\x00\x00", b"\x01" * 8]))
    if ip_options:
        header = bytearray(data[:20] + ip_options)
        header[0] = 0x40 | len(header) // 4
        struct.pack_into("!H", header, 2, len(data) + len(ip_options))
        header[10:12] = b"\0\0"
        total = sum(struct.unpack(f"!{len(header) // 2}H", header))
        while total > 0xFFFF:
            total = (total & 0xFFFF) + (total >> 16)
        struct.pack_into("!H", header, 10, ~total & 0xFFFF)
        data = bytes(header) + data[20:]
    return data


def field_lie(offset: int, fmt: str) -> st.SearchStrategy[Callable[[bytearray], None]]:
    """Overwrite one header field (relative to the TCP header when offset >= 1000) with any value."""
    maximum = (1 << (8 * struct.calcsize(fmt))) - 1

    def apply(value: int) -> Callable[[bytearray], None]:
        def mutate(data: bytearray) -> None:
            at = offset if offset < 1000 or not data else (data[0] & 0x0F) * 4 + offset - 1000
            if at + struct.calcsize(fmt) <= len(data):
                struct.pack_into(fmt, data, at, value)

        return mutate

    return st.integers(0, maximum).map(apply)


def bit_flip(position: int, bit: int) -> Callable[[bytearray], None]:
    def mutate(data: bytearray) -> None:
        if data:
            data[position % len(data)] ^= 1 << bit

    return mutate


def truncate(keep: int) -> Callable[[bytearray], None]:
    def mutate(data: bytearray) -> None:
        del data[keep:]

    return mutate


def garbage(position: int, junk: bytes) -> Callable[[bytearray], None]:
    """Overwrite bytes in the TCP option area (or anywhere, for short packets)."""

    def mutate(data: bytearray) -> None:
        start = (data[0] & 0x0F) * 4 + 20 + position if data else 0
        data[start : start + len(junk)] = junk

    return mutate


def append(extra: bytes) -> Callable[[bytearray], None]:
    def mutate(data: bytearray) -> None:
        data += extra

    return mutate


MUTATION = st.one_of(
    st.builds(bit_flip, st.integers(0, 200), st.integers(0, 7)),
    st.builds(truncate, st.integers(0, 120)),
    field_lie(2, "!H"),  # IPv4 total length
    field_lie(0, "!B"),  # version and IHL
    field_lie(6, "!H"),  # flags and fragment offset
    field_lie(9, "!B"),  # protocol
    field_lie(1012, "!B"),  # TCP data offset
    st.builds(garbage, st.integers(0, 40), st.binary(min_size=1, max_size=12)),
    st.builds(append, st.binary(min_size=1, max_size=8)),
)


def mutated(data: bytes, mutations: list[Callable[[bytearray], None]]) -> bytes:
    out = bytearray(data)
    for mutate in mutations:
        mutate(out)
    return bytes(out)


@SETTINGS
@given(data=valid_packets(), mutations=st.lists(MUTATION, min_size=1, max_size=4), tcp_args=TCP_ARGS)
def test_mutated_packets(
    core: SimpleNamespace, data: bytes, mutations: list[Any], tcp_args: tuple[int, int, int, int]
) -> None:
    check_all(core, mutated(data, mutations), tcp_args)


@SETTINGS
@given(data=valid_packets(), mutations=st.lists(MUTATION, max_size=4))
def test_mutated_packets_agree(
    both: tuple[SimpleNamespace, SimpleNamespace], data: bytes, mutations: list[Any]
) -> None:
    compiled, twin = both
    data = mutated(data, mutations)
    # The TCP arguments parse_packet would use, so option and checksum paths are reached too.
    ihl = (data[0] & 0x0F) * 4 if data else 0
    tcp_args = (ihl, len(data) - ihl, 0x0A000001, 0x0A000002)
    assert check_all(compiled, data, tcp_args) == check_all(twin, data, tcp_args)


@SETTINGS
@given(data=valid_packets())
def test_valid_packets_parse(core: SimpleNamespace, data: bytes) -> None:
    ip, seg = core.parse_packet(data)
    assert seg is not None and seg.payload_offset + seg.payload_length == ip.total_length == len(data)


def build_outcome(build: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, Any]:
    try:
        return "ok", build(*args, **kwargs)
    except (OverflowError, ValueError) as exc:  # the caller's programming errors
        return "error", type(exc)


# Mostly in range, sometimes just outside, so both implementations reject the same arguments.
def near(limit: int) -> st.SearchStrategy[int]:
    return st.integers(0, limit) | st.sampled_from([-1, limit + 1])


@SETTINGS
@given(
    fixed=st.tuples(near(0xFFFFFFFF), near(0xFFFFFFFF), near(0xFFFF), near(0xFFFF), U32, U32, near(255), U32),
    payload=st.binary(max_size=64),
    mss=near(0xFFFF),
    wscale=st.integers(-2, 256),
    sack_permitted=st.booleans(),
    timestamps=st.none() | st.tuples(near(0xFFFFFFFF), U32),
    sack_blocks=st.lists(st.tuples(U32, near(0xFFFFFFFF)), max_size=6),
    offload_checksum=st.booleans(),
    offset=st.integers(-2, 40),
)
def test_builders_agree(
    both: tuple[SimpleNamespace, SimpleNamespace],
    fixed: tuple[int, ...],
    payload: bytes,
    mss: int,
    wscale: int,
    sack_permitted: bool,
    timestamps: tuple[int, int] | None,
    sack_blocks: list[tuple[int, int]],
    offload_checksum: bool,
    offset: int,
) -> None:
    # The window field is 16 bits: fold the drawn 32-bit value so most examples build.
    args = (*fixed[:7], fixed[7] & 0xFFFF, payload)
    options = {
        "mss": mss,
        "wscale": wscale,
        "sack_permitted": sack_permitted,
        "timestamps": timestamps,
        "sack_blocks": sack_blocks,
        "offload_checksum": offload_checksum,
    }
    results = []
    for core in both:
        buffer = bytearray(140)
        written = build_outcome(core.build_tcp_ipv4_into, buffer, offset, *args, **options)
        results.append((build_outcome(core.build_tcp_ipv4, *args, **options), written, bytes(buffer)))
        wscale_sent = max(-1, min(wscale, 255))
        length = core.tcp_options_length(mss & 0xFFFF, wscale_sent, sack_permitted, bool(timestamps), 9)
        results.append(length)
    assert results[0] == results[2] and results[1] == results[3]
