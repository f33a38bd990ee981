"""IPv4/TCP wire formats on hand-built packets, against both implementations (the `core` fixture)."""

from __future__ import annotations

import importlib
import struct
from types import SimpleNamespace
from typing import Any

import pytest

from tcpcore.constants import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG
from tcpcore.errors import MalformedPacket

SRC = 0x0A000001  # 10.0.0.1
DST = 0xC0A80102  # 192.168.1.2
PUBLIC = [
    "IPv4Header",
    "TCPSegment",
    "build_ipv4",
    "build_tcp_ipv4",
    "build_tcp_ipv4_into",
    "parse_ipv4",
    "parse_packet",
    "parse_tcp",
    "tcp_options_length",
]


# Reference encoders, written from RFC 791 / RFC 9293 and independent of the code under test.


def fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ones(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    return fold(sum(struct.unpack(f"!{len(data) // 2}H", data)))


def pseudo(src: int, dst: int, length: int) -> int:
    return fold((src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + 6 + length)


def ipv4(
    payload: bytes,
    *,
    src: int = SRC,
    dst: int = DST,
    protocol: int = 6,
    tos: int = 0,
    ident: int = 0x1234,
    frag: int = 0x4000,
    ttl: int = 64,
    options: bytes = b"",
    version: int = 4,
    ihl: int | None = None,
    total: int | None = None,
    checksum: int | None = None,
) -> bytes:
    ihl = (20 + len(options)) // 4 if ihl is None else ihl
    total = 20 + len(options) + len(payload) if total is None else total
    header = struct.pack(
        "!BBHHHBBHII", version << 4 | ihl, tos, total, ident, frag, ttl, protocol, 0, src, dst
    ) + bytes(options)
    check = ~ones(header) & 0xFFFF if checksum is None else checksum
    return header[:10] + struct.pack("!H", check) + header[12:] + payload


def tcp(
    payload: bytes = b"",
    *,
    sport: int = 40000,
    dport: int = 80,
    seq: int = 0x11223344,
    ack: int = 0x55667788,
    flags: int = ACK,
    window: int = 29200,
    urgent: int = 0,
    options: bytes = b"",
    data_offset: int | None = None,
    src: int = SRC,
    dst: int = DST,
    checksum: int | None = None,
) -> bytes:
    options = options + b"\0" * (-len(options) % 4)
    data_offset = (20 + len(options)) // 4 if data_offset is None else data_offset
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, data_offset << 4, flags, window, 0, urgent)
    segment = header + options + payload
    check = ~fold(ones(segment) + pseudo(src, dst, len(segment))) & 0xFFFF if checksum is None else checksum
    return segment[:16] + struct.pack("!H", check) + segment[18:]


def packet(payload: bytes = b"", **tcp_fields: Any) -> bytes:
    return ipv4(tcp(payload, **tcp_fields))


def parse_options(core: SimpleNamespace, options: bytes) -> Any:
    _, seg = core.parse_packet(packet(b"data", options=options))
    assert seg is not None
    assert bytes(seg.payload) == b"data"
    return seg


# --- IPv4 -----------------------------------------------------------------------------------------


def test_public_names_identical() -> None:
    twin = importlib.import_module("tcpcore._wire_py")
    assert sorted(twin.__all__) == PUBLIC
    try:
        compiled = importlib.import_module("tcpcore._wire_c")
    except ImportError:
        pytest.skip("compiled tcpcore not built")
    assert sorted(compiled.__all__) == PUBLIC


def test_ipv4_fields(core: SimpleNamespace) -> None:
    data = ipv4(b"x" * 13, tos=0xB8, ident=0xBEEF, frag=0x4000, ttl=7, protocol=17)
    h = core.parse_ipv4(data)
    assert (h.version, h.header_length, h.tos, h.total_length) == (4, 20, 0xB8, 33)
    assert (h.ident, h.ttl, h.protocol) == (0xBEEF, 7, 17)
    assert h.dont_fragment is True and h.more_fragments is False and h.is_fragment is False
    assert h.fragment_offset == 0
    assert h.checksum == struct.unpack_from("!H", data, 10)[0]
    assert (h.src, h.dst) == (SRC, DST)
    assert (h.payload_offset, h.payload_length) == (20, 13)
    assert "10.0.0.1" in repr(h) and "192.168.1.2" in repr(h)


@pytest.mark.parametrize(
    ("frag", "df", "mf", "offset"),
    [
        (0x0000, False, False, 0),
        (0x2000, False, True, 0),
        (0x0001, False, False, 8),
        (0x3FFF, False, True, 65528),
    ],
)
def test_ipv4_fragment_fields(core: SimpleNamespace, frag: int, df: bool, mf: bool, offset: int) -> None:
    h = core.parse_ipv4(ipv4(b"", frag=frag))
    assert (h.dont_fragment, h.more_fragments, h.fragment_offset) == (df, mf, offset)
    assert h.is_fragment == (mf or offset != 0)


def test_ipv4_options_skipped(core: SimpleNamespace) -> None:
    # Router Alert (RFC 2113) followed by garbage-looking option bytes: never parsed, only skipped.
    data = ipv4(tcp(b"hi"), options=b"\x94\x04\x00\x00\xff\x00\x07\x01")
    ip, seg = core.parse_packet(data)
    assert (ip.header_length, ip.payload_offset, ip.payload_length) == (28, 28, 22)
    assert seg is not None and seg.payload_offset == 48 and bytes(seg.payload) == b"hi"


def test_trailing_link_padding_ignored(core: SimpleNamespace) -> None:
    data = packet(b"abc") + b"\0" * 7  # Ethernet pads short frames to 60 bytes
    ip, seg = core.parse_packet(data)
    assert ip.total_length == 43 and ip.payload_length == 23
    assert seg is not None and seg.payload_length == 3 and bytes(seg.payload) == b"abc"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (ipv4(b"")[:19], "shorter than 20"),
        (b"", "shorter than 20"),
        (ipv4(b"", version=6), "version"),
        (ipv4(b"", ihl=4), "IHL"),
        (ipv4(b"", ihl=6), "header longer"),
        (ipv4(b"", ihl=15, options=b"\1" * 40)[:40], "header longer"),
        (ipv4(b"abc", total=19), "shorter than the header"),
        (ipv4(b"", options=b"\1" * 4, total=20), "shorter than the header"),
        (ipv4(b"abc", total=24), "exceeds"),
        (ipv4(b"abc", checksum=0), "checksum"),
    ],
)
def test_ipv4_malformed(core: SimpleNamespace, data: bytes, message: str) -> None:
    with pytest.raises(MalformedPacket, match=message):
        core.parse_ipv4(data)
    with pytest.raises(MalformedPacket, match=message):
        core.parse_packet(data)


def test_ipv4_checksum_not_verified_on_request(core: SimpleNamespace) -> None:
    data = ipv4(b"abc", checksum=0x1234)
    assert core.parse_ipv4(data, verify_checksum=False).checksum == 0x1234


@pytest.mark.parametrize("frag", [0x2000, 0x0010, 0x6001])
def test_fragments_not_parsed_as_tcp(core: SimpleNamespace, frag: int) -> None:
    # A fragment carries only part of the segment (or none of its header): reassembly is not ours.
    ip, seg = core.parse_packet(ipv4(tcp(b"payload"), frag=frag))
    assert ip.is_fragment and seg is None


def test_non_tcp_protocol_has_no_segment(core: SimpleNamespace) -> None:
    ip, seg = core.parse_packet(ipv4(b"\x08\x00\xf7\xff\x00\x00\x00\x00", protocol=1))
    assert ip.protocol == 1 and seg is None


# --- TCP header -----------------------------------------------------------------------------------


def test_tcp_fields(core: SimpleNamespace) -> None:
    data = packet(b"hello", sport=1, dport=65535, seq=0xFFFFFFFF, ack=7, window=0xABCD, urgent=0x0102)
    _, seg = core.parse_packet(data)
    assert seg is not None
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack) == (1, 65535, 0xFFFFFFFF, 7)
    assert (seg.header_length, seg.flags, seg.window, seg.urgent) == (20, ACK, 0xABCD, 0x0102)
    assert seg.checksum == struct.unpack_from("!H", data, 36)[0]
    assert (seg.payload_offset, seg.payload_length) == (40, 5)
    assert (seg.mss, seg.wscale, seg.sack_permitted, seg.has_timestamps) == (0, -1, False, False)
    assert (seg.ts_val, seg.ts_ecr, seg.sack_blocks) == (0, 0, ())
    assert "1->65535 [.]" in repr(seg)


@pytest.mark.parametrize("flags", [FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, SYN | ACK, 0xFF, 0])
def test_tcp_flags(core: SimpleNamespace, flags: int) -> None:
    _, seg = core.parse_packet(packet(flags=flags))
    assert seg is not None and seg.flags == flags


def test_tcp_reserved_bits_not_flags(core: SimpleNamespace) -> None:
    segment = bytearray(tcp(flags=SYN))
    segment[12] |= 0x0F  # reserved bits and the historic NS bit
    segment[16:18] = b"\0\0"
    struct.pack_into("!H", segment, 16, ~fold(ones(bytes(segment)) + pseudo(SRC, DST, 20)) & 0xFFFF)
    seg = core.parse_tcp(ipv4(bytes(segment)), 20, 20, SRC, DST)
    assert seg.flags == SYN and seg.header_length == 20


def test_parse_tcp_offset_and_length(core: SimpleNamespace) -> None:
    segment = tcp(b"body", options=b"\x02\x04\x05\xb4")
    data = b"junk" * 3 + segment + b"tail"
    seg = core.parse_tcp(data, 12, len(segment), SRC, DST)
    assert seg.mss == 1460 and seg.payload_offset == 12 + 24 and bytes(seg.payload) == b"body"
    with pytest.raises(MalformedPacket, match="checksum"):
        core.parse_tcp(data, 12, len(segment), SRC, DST + 1)


@pytest.mark.parametrize(
    ("offset", "length", "message"),
    [
        (0, 19, "shorter than 20"),
        (0, 0, "shorter than 20"),
        (-1, 20, "outside"),
        (0, -1, "outside"),
        (0, 41, "outside"),
        (21, 20, "outside"),
        (41, 0, "outside"),
    ],
)
def test_tcp_bounds(core: SimpleNamespace, offset: int, length: int, message: str) -> None:
    data = tcp(b"x" * 20)
    with pytest.raises(MalformedPacket, match=message):
        core.parse_tcp(data, offset, length, SRC, DST, False)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"data_offset": 4}, "data offset below 5"),
        ({"data_offset": 0}, "data offset below 5"),
        ({"data_offset": 6}, "header longer"),
        ({"data_offset": 15}, "header longer"),
        ({"options": b"\x02\x00\x00\x00"}, "length below 2"),
        ({"options": b"\x01\x1e\x01"}, "length below 2"),
        ({"options": b"\x01\x01\x01\x08"}, "length byte past"),
        ({"options": b"\x08\x0a\x00\x00"}, "runs past"),
        ({"options": b"\x01\x05\x12" + bytes(8)}, "runs past"),
        ({"checksum": 0}, "checksum"),
    ],
)
def test_tcp_malformed(core: SimpleNamespace, fields: dict[str, Any], message: str) -> None:
    data = packet(**fields)
    ip = core.parse_ipv4(data)
    with pytest.raises(MalformedPacket, match=message):
        core.parse_packet(data)
    if message != "checksum":  # the structural checks hold without checksum verification
        with pytest.raises(MalformedPacket, match=message):
            core.parse_tcp(data, 20, ip.payload_length, SRC, DST, False)


def test_tcp_checksum_not_verified_on_request(core: SimpleNamespace) -> None:
    _, seg = core.parse_packet(packet(checksum=0xDEAD), verify_checksum=False)
    assert seg is not None and seg.checksum == 0xDEAD


def test_address_out_of_range_is_a_caller_error(core: SimpleNamespace) -> None:
    with pytest.raises(OverflowError):
        core.parse_tcp(tcp(), 0, 20, 1 << 32, DST)
    with pytest.raises(OverflowError):
        core.parse_tcp(tcp(), 0, 20, SRC, -1, False)


# --- TCP options ----------------------------------------------------------------------------------


def test_every_option(core: SimpleNamespace) -> None:
    options = (
        b"\x02\x04\x05\xb4"  # MSS 1460
        b"\x01\x03\x03\x0e"  # NOP, WSCALE 14
        b"\x04\x02"  # SACK_PERMITTED
        b"\x08\x0a\x00\x00\x00\x2a\xff\xff\xff\xff"  # TIMESTAMPS 42, 2**32-1
        b"\x05\x12" + struct.pack("!4I", 1, 2, 3, 0xFFFFFFFF)  # SACK, 2 blocks
    )
    seg = parse_options(core, options)
    assert (seg.mss, seg.wscale, seg.sack_permitted) == (1460, 14, True)
    assert (seg.has_timestamps, seg.ts_val, seg.ts_ecr) == (True, 42, 0xFFFFFFFF)
    assert seg.sack_blocks == ((1, 2), (3, 0xFFFFFFFF))
    assert seg.header_length == 20 + 40


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_sack_blocks(core: SimpleNamespace, count: int) -> None:
    edges = list(range(100, 100 + 2 * count))
    seg = parse_options(core, bytes([5, 2 + 8 * count]) + struct.pack(f"!{2 * count}I", *edges))
    assert seg.sack_blocks == tuple(zip(edges[::2], edges[1::2], strict=True))


def test_wscale_reported_as_sent(core: SimpleNamespace) -> None:
    # The engine clamps to 14 (RFC 7323 2.3); the parser reports the peer's byte.
    assert parse_options(core, b"\x03\x03\xff").wscale == 255


def test_eol_ends_parsing(core: SimpleNamespace) -> None:
    # After EOL nothing is parsed, not even bytes that would be malformed as options.
    seg = parse_options(core, b"\x02\x04\x05\xb4\x00\x03\x00\x08\x01\x02\x04\x02")
    assert seg.mss == 1460 and seg.wscale == -1 and not seg.sack_permitted


def test_nop_padding_and_unknown_kinds_skipped(core: SimpleNamespace) -> None:
    options = b"\x01\x01\x1e\x06abcd\xfe\x02\x01\x22\x04\x00\x00\x03\x03\x07"
    seg = parse_options(core, options)
    assert seg.wscale == 7 and seg.mss == 0


@pytest.mark.parametrize(
    "option",
    [
        b"\x02\x03\x05",  # MSS needs 4
        b"\x02\x06\x05\xb4\x00\x00",
        b"\x03\x02",  # WSCALE needs 3
        b"\x03\x04\x07\x00",
        b"\x04\x03\x00",  # SACK_PERMITTED needs 2
        b"\x08\x08" + b"\x00" * 6,  # TIMESTAMPS needs 10
        b"\x08\x0c" + b"\x00" * 10,
        b"\x05\x02",  # SACK needs 2 + 8n, n >= 1
        b"\x05\x06" + b"\x00" * 4,
        b"\x05\x0b" + b"\x00" * 9,
    ],
)
def test_known_option_with_wrong_length_ignored(core: SimpleNamespace, option: bytes) -> None:
    # Linux tcp_parse_options skips such options by their length byte; parsing continues after them.
    seg = parse_options(core, option + b"\x01\x03\x03\x05")
    assert (seg.mss, seg.sack_permitted, seg.has_timestamps, seg.sack_blocks) == (0, False, False, ())
    assert seg.wscale == 5


def test_repeated_option_last_wins(core: SimpleNamespace) -> None:
    seg = parse_options(core, b"\x02\x04\x00\x01\x02\x04\x00\x02")
    assert seg.mss == 2


# --- Zero-copy payload ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_payload_is_a_view_of_the_buffer(core: SimpleNamespace, kind: type) -> None:
    raw = bytearray(packet(b"0123456789"))
    views: dict[type, Any] = {bytes: bytes(raw), bytearray: raw, memoryview: memoryview(raw)}
    data = views[kind]
    _, seg = core.parse_packet(data)
    assert seg is not None
    view = seg.payload
    assert isinstance(view, memoryview) and view.format == "B" and bytes(view) == b"0123456789"
    if kind is bytes:
        assert view.obj is data
    else:
        # Writes to the receive buffer show through: no copy was made.
        assert view.obj is raw
        raw[40] = ord("X")
        assert bytes(seg.payload)[:2] == b"X1"


def test_payload_of_wider_format_buffer(core: SimpleNamespace) -> None:
    data = memoryview(bytearray(packet(b"abcd"))).cast("H")
    _, seg = core.parse_packet(data)
    assert seg is not None and bytes(seg.payload) == b"abcd"


def test_headers_not_constructible(core: SimpleNamespace) -> None:
    with pytest.raises(TypeError):
        core.IPv4Header()
    with pytest.raises(TypeError):
        core.TCPSegment()


# --- Builders -------------------------------------------------------------------------------------

ALL_OPTIONS = {
    "mss": 1460,
    "wscale": 7,
    "sack_permitted": True,
    "timestamps": (0x01020304, 0xA0B0C0D0),
}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"mss": 536},
        {"wscale": 0},
        {"sack_permitted": True},
        {"timestamps": (1, 0)},
        ALL_OPTIONS,
        {"timestamps": (5, 6), "sack_blocks": [(10, 20), (30, 40), (50, 60)]},
        {"sack_blocks": [(1, 2), (3, 4), (5, 6), (7, 8)]},
    ],
)
def test_build_parse_round_trip(core: SimpleNamespace, options: dict[str, object]) -> None:
    data = core.build_tcp_ipv4(
        SRC, DST, 1234, 443, 0xFFFFFFFE, 99, SYN | ACK | ECE, 512, b"payload",
        urgent=3, ttl=9, ident=77, tos=2, **options,
    )  # fmt: skip
    ip, seg = core.parse_packet(data)
    assert (ip.src, ip.dst, ip.ttl, ip.ident, ip.tos, ip.protocol) == (SRC, DST, 9, 77, 2, 6)
    assert ip.dont_fragment and not ip.is_fragment and ip.header_length == 20
    assert (
        ip.total_length
        == len(data)
        == 40
        + core.tcp_options_length(
            options.get("mss", 0),
            options.get("wscale", -1),
            options.get("sack_permitted", False),
            "timestamps" in options,
            len(options.get("sack_blocks", ())),  # type: ignore[arg-type]
        )
        + len(b"payload")
    )
    assert seg is not None
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack) == (1234, 443, 0xFFFFFFFE, 99)
    assert (seg.flags, seg.window, seg.urgent) == (SYN | ACK | ECE, 512, 3)
    assert seg.mss == options.get("mss", 0)
    assert seg.wscale == options.get("wscale", -1)
    assert seg.sack_permitted == options.get("sack_permitted", False)
    assert (seg.ts_val, seg.ts_ecr) == options.get("timestamps", (0, 0))
    assert seg.has_timestamps == ("timestamps" in options)
    assert seg.sack_blocks == tuple(options.get("sack_blocks", ()))  # type: ignore[arg-type]
    assert bytes(seg.payload) == b"payload"
    # Checksums checked independently of the implementation.
    assert ones(data[:20]) == 0xFFFF
    assert fold(ones(data[20:]) + pseudo(SRC, DST, len(data) - 20)) == 0xFFFF


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"mss": 1460}, "020405b4"),
        ({"sack_permitted": True}, "01010402"),
        ({"timestamps": (1, 2)}, "0101080a0000000100000002"),
        ({"sack_permitted": True, "timestamps": (1, 2)}, "0402080a0000000100000002"),
        ({"wscale": 7}, "01030307"),
        (
            {"mss": 1460, "sack_permitted": True, "timestamps": (1, 2), "wscale": 7},
            "020405b40402080a000000010000000201030307",
        ),
        ({"sack_blocks": [(1, 2)]}, "0101050a0000000100000002"),
    ],
)
def test_option_layout_like_linux(core: SimpleNamespace, options: dict[str, object], expected: str) -> None:
    data = core.build_tcp_ipv4(SRC, DST, 1, 2, 3, 4, SYN, 5, **options)
    assert data[40:].hex() == expected
    assert data[32] >> 4 == 5 + len(expected) // 8


@pytest.mark.parametrize(
    ("options", "sent"),
    [
        ({}, 4),
        ({"timestamps": (1, 2)}, 3),
        ({"mss": 1460, "timestamps": (1, 2), "wscale": 7}, 2),
        ({"mss": 1460, "sack_permitted": True, "wscale": 7}, 3),
    ],
)
def test_sack_block_truncation(core: SimpleNamespace, options: dict[str, object], sent: int) -> None:
    # As Linux tcp_established_options: the first blocks that fit in the 40 option bytes.
    blocks = [(i, i + 1) for i in range(0, 100, 10)]
    data = core.build_tcp_ipv4(SRC, DST, 1, 2, 3, 4, ACK, 5, sack_blocks=blocks, **options)
    _, seg = core.parse_packet(data)
    assert seg is not None and seg.sack_blocks == tuple(blocks[:sent])
    assert seg.header_length <= 60


@pytest.mark.parametrize("mss", [0, 1460])
@pytest.mark.parametrize("wscale", [-1, 0, 14])
@pytest.mark.parametrize("sack_permitted", [False, True])
@pytest.mark.parametrize("timestamps", [False, True])
def test_tcp_options_length_matches_builder(
    core: SimpleNamespace, mss: int, wscale: int, sack_permitted: bool, timestamps: bool
) -> None:
    for blocks in range(7):
        data = core.build_tcp_ipv4(
            SRC, DST, 1, 2, 3, 4, ACK, 5, b"", mss=mss, wscale=wscale, sack_permitted=sack_permitted,
            timestamps=(7, 8) if timestamps else None, sack_blocks=[(1, 2)] * blocks,
        )  # fmt: skip
        length = core.tcp_options_length(mss, wscale, sack_permitted, timestamps, blocks)
        assert length == len(data) - 40 and length % 4 == 0 and length <= 40


def test_tcp_options_length_rejects_negative_count(core: SimpleNamespace) -> None:
    with pytest.raises(ValueError):
        core.tcp_options_length(sack_blocks=-1)


def test_offload_checksum_holds_pseudo_header_sum(core: SimpleNamespace) -> None:
    payload = b"offloaded payload!"
    full = core.build_tcp_ipv4(SRC, DST, 1, 2, 3, 4, ACK | PSH, 5, payload, timestamps=(1, 2))
    partial = core.build_tcp_ipv4(
        SRC, DST, 1, 2, 3, 4, ACK | PSH, 5, payload, timestamps=(1, 2), offload_checksum=True
    )
    tcp_length = len(full) - 20
    assert full[:36] == partial[:36] and full[38:] == partial[38:]
    assert struct.unpack_from("!H", partial, 36)[0] == pseudo(SRC, DST, tcp_length)
    # The IPv4 header checksum is complete either way.
    assert ones(partial[:20]) == 0xFFFF
    # What the device does for CHECKSUM_PARTIAL: sum from the start of TCP, store the complement.
    completed = partial[:36] + struct.pack("!H", ~ones(partial[20:]) & 0xFFFF) + partial[38:]
    assert completed == full
    with pytest.raises(MalformedPacket, match="checksum"):
        core.parse_packet(partial)
    assert core.parse_packet(partial, verify_checksum=False)[1] is not None


def test_build_flags_and_no_df(core: SimpleNamespace) -> None:
    data = core.build_tcp_ipv4(SRC, DST, 1, 2, 3, 4, 0xFF, 5, dont_fragment=False)
    ip, seg = core.parse_packet(data)
    assert not ip.dont_fragment and seg is not None and seg.flags == 0xFF


def test_build_into(core: SimpleNamespace) -> None:
    buffer = bytearray(b"\xee" * 200)
    n = core.build_tcp_ipv4_into(buffer, 10, SRC, DST, 1, 2, 3, 4, ACK, 5, b"abc", mss=1000)
    expected = core.build_tcp_ipv4(SRC, DST, 1, 2, 3, 4, ACK, 5, b"abc", mss=1000)
    assert n == len(expected) == 47
    assert buffer[10 : 10 + n] == expected
    assert buffer[:10] == b"\xee" * 10 and buffer[10 + n :] == b"\xee" * (190 - n)
    view = memoryview(bytearray(64))
    assert core.build_tcp_ipv4_into(view, 0, SRC, DST, 1, 2, 3, 4, ACK, 5, b"abc", mss=1000) == 47
    assert bytes(view[:47]) == expected


def test_build_into_payload_already_in_place(core: SimpleNamespace) -> None:
    # The engine may place the payload first and then build the headers around it.
    buffer = bytearray(100)
    buffer[52:56] = b"data"
    n = core.build_tcp_ipv4_into(
        buffer, 0, SRC, DST, 1, 2, 3, 4, ACK, 5, memoryview(buffer)[52:56], timestamps=(1, 2)
    )
    assert bytes(buffer[:n]) == core.build_tcp_ipv4(SRC, DST, 1, 2, 3, 4, ACK, 5, b"data", timestamps=(1, 2))
    # Even when the payload's current place overlaps where the headers go.
    buffer[:4] = b"wxyz"
    n = core.build_tcp_ipv4_into(buffer, 0, SRC, DST, 1, 2, 3, 4, ACK, 5, memoryview(buffer)[:4])
    assert bytes(buffer[40:n]) == b"wxyz"
    assert core.parse_packet(buffer[:n])[1] is not None


@pytest.mark.parametrize(("size", "offset"), [(46, 0), (47, 1), (100, 60), (100, -1), (10, 11)])
def test_build_into_does_not_fit(core: SimpleNamespace, size: int, offset: int) -> None:
    buffer = bytearray(size)
    with pytest.raises(ValueError, match="does not fit"):
        core.build_tcp_ipv4_into(buffer, offset, SRC, DST, 1, 2, 3, 4, ACK, 5, b"abc", mss=1000)
    assert buffer == bytearray(size)


def test_build_into_readonly_buffer(core: SimpleNamespace) -> None:
    with pytest.raises(BufferError):
        core.build_tcp_ipv4_into(bytes(100), 0, SRC, DST, 1, 2, 3, 4, ACK, 5)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"src_port": 65536}, OverflowError),
        ({"dst_port": -1}, OverflowError),
        ({"seq": 1 << 32}, OverflowError),
        ({"src": -1}, OverflowError),
        ({"flags": 256}, OverflowError),
        ({"window": 65536}, OverflowError),
        ({"mss": 65536}, OverflowError),
        ({"wscale": 256}, OverflowError),
        ({"wscale": -2}, OverflowError),
        ({"ttl": 256}, OverflowError),
        ({"timestamps": (1 << 32, 0)}, OverflowError),
        ({"sack_blocks": [(1, -1)]}, OverflowError),
        ({"payload": bytes(65536 - 40)}, ValueError),
        ({"payload": bytes(65535 - 51), "timestamps": (1, 2)}, ValueError),
    ],
)
def test_build_rejects_bad_arguments(
    core: SimpleNamespace, arguments: dict[str, object], error: type[Exception]
) -> None:
    base: dict[str, object] = {
        "src": SRC, "dst": DST, "src_port": 1, "dst_port": 2, "seq": 3, "ack": 4, "flags": ACK, "window": 5,
    }  # fmt: skip
    with pytest.raises(error):
        core.build_tcp_ipv4(**(base | arguments))
    with pytest.raises(error):
        core.build_tcp_ipv4_into(bytearray(70000), 0, **(base | arguments))


def test_build_largest_packet(core: SimpleNamespace) -> None:
    data = core.build_tcp_ipv4(SRC, DST, 1, 2, 3, 4, ACK, 5, bytes(65535 - 52), timestamps=(1, 2))
    assert len(data) == 65535
    _, seg = core.parse_packet(data)
    assert seg is not None and seg.payload_length == 65535 - 52


def test_build_ipv4(core: SimpleNamespace) -> None:
    payload = b"\x08\x00\x00\x00icmp"
    data = core.build_ipv4(SRC, DST, 1, payload, ttl=3, ident=0x0102, tos=0x10, dont_fragment=False)
    assert data == ipv4(payload, protocol=1, ttl=3, ident=0x0102, tos=0x10, frag=0)
    ip, seg = core.parse_packet(data)
    assert ip.protocol == 1 and ip.payload_length == len(payload) and seg is None
    assert core.build_ipv4(SRC, DST, 17, b"")[6] == 0x40  # DF by default
    with pytest.raises(ValueError):
        core.build_ipv4(SRC, DST, 17, bytes(65535 - 19))
    with pytest.raises(OverflowError):
        core.build_ipv4(SRC, DST, 256, b"")
