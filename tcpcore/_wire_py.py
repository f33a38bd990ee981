"""IPv4 (RFC 791 3.1) and TCP (RFC 9293 3.1) wire formats: the twin.

Every length is checked against the buffer before a byte is read, so untrusted input can only
raise MalformedPacket. Parsed segments keep a reference to the caller's buffer and hand out the
payload as a zero-copy memoryview. Builders lay options out as Linux does (tcp_options_write).
"""

from __future__ import annotations

import ipaddress
import operator
import struct
from collections.abc import Sequence

from ._checksum_py import internet_checksum, ones_sum, pseudo_header_sum
from ._types import Buffer, byte_view
from .constants import (
    IPPROTO_TCP,
    IPV4_HEADER_MIN,
    OPT_EOL,
    OPT_MSS,
    OPT_NOP,
    OPT_SACK,
    OPT_SACK_PERMITTED,
    OPT_TIMESTAMPS,
    OPT_WSCALE,
    TCP_HEADER_MIN,
    TCP_OPTIONS_MAX,
    flags_to_str,
)
from .errors import MalformedPacket

__all__ = [
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

_IPV4 = struct.Struct("!BBHHHBBHII")
_TCP = struct.Struct("!HHIIBBHHH")
_U8, _U16, _U32 = 0xFF, 0xFFFF, 0xFFFFFFFF
_IP_DF, _IP_MF, _IP_OFFSET_MASK = 0x4000, 0x2000, 0x1FFF
_IP_LENGTH_MAX = 0xFFFF  # the 16-bit total length field (RFC 791 3.1)
_SACK_BLOCKS_MAX = 4  # (40 - 2) // 8 (RFC 2018 section 3)


def _field(value: int, limit: int) -> int:
    """``value`` if it fits its wire field; OverflowError otherwise, like the compiled twin's C conversion."""
    number = operator.index(value)
    if not 0 <= number <= limit:
        raise OverflowError(f"{number} does not fit in a {limit.bit_length()}-bit field")
    return number


class IPv4Header:
    """Fields of a validated IPv4 header (RFC 791 3.1); IPv4 options are skipped, never parsed."""

    __slots__ = (
        "checksum",
        "dont_fragment",
        "dst",
        "fragment_offset",
        "header_length",
        "ident",
        "is_fragment",
        "more_fragments",
        "payload_length",
        "payload_offset",
        "protocol",
        "src",
        "tos",
        "total_length",
        "ttl",
        "version",
    )
    version: int
    header_length: int
    tos: int
    total_length: int
    ident: int
    dont_fragment: bool
    more_fragments: bool
    fragment_offset: int
    ttl: int
    protocol: int
    checksum: int
    src: int
    dst: int
    payload_offset: int
    payload_length: int
    is_fragment: bool

    def __init__(self) -> None:
        raise TypeError("IPv4Header objects are created by parse_ipv4 and parse_packet")

    def __repr__(self) -> str:
        return (
            f"IPv4Header(src={ipaddress.IPv4Address(self.src)}, dst={ipaddress.IPv4Address(self.dst)}, "
            f"protocol={self.protocol}, total_length={self.total_length}, ttl={self.ttl}, "
            f"ident={self.ident}, fragment_offset={self.fragment_offset}, "
            f"more_fragments={self.more_fragments})"
        )


class TCPSegment:
    """Fields and options of a validated TCP segment (RFC 9293 3.1, RFC 7323, RFC 2018).

    ``payload`` is a view of the buffer that was parsed: valid until the caller reuses it.
    """

    __slots__ = (
        "_buffer",
        "ack",
        "checksum",
        "dst_port",
        "flags",
        "has_timestamps",
        "header_length",
        "mss",
        "payload_length",
        "payload_offset",
        "sack_blocks",
        "sack_permitted",
        "seq",
        "src_port",
        "ts_ecr",
        "ts_val",
        "urgent",
        "window",
        "wscale",
    )
    src_port: int
    dst_port: int
    seq: int
    ack: int
    header_length: int
    flags: int
    window: int
    checksum: int
    urgent: int
    mss: int
    wscale: int
    sack_permitted: bool
    has_timestamps: bool
    ts_val: int
    ts_ecr: int
    sack_blocks: tuple[tuple[int, int], ...]
    payload_offset: int
    payload_length: int
    _buffer: Buffer

    def __init__(self) -> None:
        raise TypeError("TCPSegment objects are created by parse_tcp and parse_packet")

    @property
    def payload(self) -> memoryview:
        return memoryview(self._buffer).cast("B")[
            self.payload_offset : self.payload_offset + self.payload_length
        ]

    def __repr__(self) -> str:
        return (
            f"TCPSegment({self.src_port}->{self.dst_port} [{flags_to_str(self.flags)}] seq={self.seq} "
            f"ack={self.ack} win={self.window} len={self.payload_length})"
        )


def _parse_ipv4(view: memoryview, verify: bool) -> IPv4Header:
    n = len(view)
    if n < IPV4_HEADER_MIN:
        raise MalformedPacket("IPv4 packet shorter than 20 bytes")
    vihl, tos, total_length, ident, fragment, ttl, protocol, checksum, src, dst = _IPV4.unpack_from(view)
    if vihl >> 4 != 4:
        raise MalformedPacket("IP version is not 4")
    header_length = (vihl & 0x0F) * 4
    if header_length < IPV4_HEADER_MIN:
        raise MalformedPacket("IPv4 IHL below 5")
    if header_length > n:
        raise MalformedPacket("IPv4 header longer than the packet")
    if total_length < header_length:
        raise MalformedPacket("IPv4 total length shorter than the header")
    # RFC 1122 3.3.2 / Linux ip_rcv_core: a total length beyond the bytes received is a lie; bytes
    # after it are link-layer padding and ignored.
    if total_length > n:
        raise MalformedPacket("IPv4 total length exceeds the packet")
    if verify and ones_sum(view[:header_length]) != 0xFFFF:
        raise MalformedPacket("IPv4 header checksum mismatch")
    h = object.__new__(IPv4Header)
    h.version = 4
    h.header_length = header_length
    h.tos = tos
    h.total_length = total_length
    h.ident = ident
    h.dont_fragment = bool(fragment & _IP_DF)
    h.more_fragments = bool(fragment & _IP_MF)
    h.fragment_offset = (fragment & _IP_OFFSET_MASK) * 8
    h.ttl = ttl
    h.protocol = protocol
    h.checksum = checksum
    h.src = src
    h.dst = dst
    h.payload_offset = header_length
    h.payload_length = total_length - header_length
    h.is_fragment = h.more_fragments or h.fragment_offset != 0
    return h


def _parse_tcp(
    owner: Buffer, view: memoryview, offset: int, length: int, src: int, dst: int, verify: bool
) -> TCPSegment:
    # The compiled twin takes src/dst as uint32_t: out of range is the caller's OverflowError.
    if not (0 <= src <= _U32 and 0 <= dst <= _U32):
        raise OverflowError("IPv4 address out of range")
    n = len(view)
    if offset < 0 or length < 0 or offset > n or length > n - offset:
        raise MalformedPacket("TCP segment outside the buffer")
    if length < TCP_HEADER_MIN:
        raise MalformedPacket("TCP segment shorter than 20 bytes")
    src_port, dst_port, seq, ack, data_offset, flags, window, checksum, urgent = _TCP.unpack_from(
        view, offset
    )
    header_length = (data_offset >> 4) * 4
    if header_length < TCP_HEADER_MIN:
        raise MalformedPacket("TCP data offset below 5")
    if header_length > length:
        raise MalformedPacket("TCP header longer than the segment")
    # Checksum before options, as Linux tcp_v4_rcv: a corrupted header is reported as such.
    if verify:
        pseudo = pseudo_header_sum(src, dst, IPPROTO_TCP, length)
        if ones_sum(view[offset : offset + length], pseudo) != 0xFFFF:
            raise MalformedPacket("TCP checksum mismatch")
    seg = object.__new__(TCPSegment)
    seg.src_port = src_port
    seg.dst_port = dst_port
    seg.seq = seq
    seg.ack = ack
    seg.header_length = header_length
    seg.flags = flags
    seg.window = window
    seg.checksum = checksum
    seg.urgent = urgent
    seg.mss = 0
    seg.wscale = -1
    seg.sack_permitted = False
    seg.has_timestamps = False
    seg.ts_val = seg.ts_ecr = 0
    seg.sack_blocks = ()
    seg.payload_offset = offset + header_length
    seg.payload_length = length - header_length
    seg._buffer = owner
    i = offset + TCP_HEADER_MIN
    end = offset + header_length
    while i < end:
        kind = view[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise MalformedPacket("TCP option length byte past the header")
        size = view[i + 1]
        if size < 2:
            raise MalformedPacket("TCP option length below 2")
        if size > end - i:
            raise MalformedPacket("TCP option runs past the header")
        # A known kind with the wrong length is skipped by its length byte and ignored, as Linux
        # tcp_parse_options does; unknown kinds are skipped the same way (RFC 9293 3.2).
        if kind == OPT_MSS:
            if size == 4:
                seg.mss = int.from_bytes(view[i + 2 : i + 4], "big")
        elif kind == OPT_WSCALE:
            if size == 3:
                seg.wscale = view[i + 2]
        elif kind == OPT_SACK_PERMITTED:
            if size == 2:
                seg.sack_permitted = True
        elif kind == OPT_TIMESTAMPS:
            if size == 10:
                seg.has_timestamps = True
                seg.ts_val, seg.ts_ecr = struct.unpack_from("!II", view, i + 2)
        # 2 + 8n bytes; size <= 40 bounds n to 4 (RFC 2018 section 3).
        elif kind == OPT_SACK and size >= 10 and (size - 2) % 8 == 0:
            edges = struct.unpack_from(f"!{(size - 2) // 4}I", view, i + 2)
            seg.sack_blocks = tuple(zip(edges[::2], edges[1::2], strict=True))
        i += size
    return seg


def parse_ipv4(data: Buffer, verify_checksum: bool = True) -> IPv4Header:
    """Validate and decode the IPv4 header at the start of ``data``."""
    return _parse_ipv4(byte_view(data), verify_checksum)


def parse_tcp(
    data: Buffer, offset: int, length: int, src: int, dst: int, verify_checksum: bool = True
) -> TCPSegment:
    """Validate and decode the TCP segment ``data[offset:offset + length]`` sent from src to dst."""
    return _parse_tcp(data, byte_view(data), offset, length, src, dst, verify_checksum)


def parse_packet(data: Buffer, verify_checksum: bool = True) -> tuple[IPv4Header, TCPSegment | None]:
    """(IPv4 header, TCP segment or None): the TCP part is parsed only for unfragmented TCP."""
    view = byte_view(data)
    ip = _parse_ipv4(view, verify_checksum)
    if ip.protocol != IPPROTO_TCP or ip.is_fragment:
        return ip, None
    return ip, _parse_tcp(data, view, ip.header_length, ip.payload_length, ip.src, ip.dst, verify_checksum)


def _options(
    mss: int,
    wscale: int,
    sack_permitted: bool,
    timestamps: tuple[int, int] | None,
    sack_blocks: Sequence[tuple[int, int]],
) -> bytes:
    """The options in Linux's tcp_options_write layout, each 4-byte aligned by NOPs.
    The one place that knows the layout."""
    # At most 4 blocks ever fit in the option space (RFC 2018 section 3); later ones are not read.
    blocks = [(_field(left, _U32), _field(right, _U32)) for left, right in sack_blocks[:_SACK_BLOCKS_MAX]]
    if timestamps is not None:
        ts_val, ts_ecr = timestamps
        ts_val, ts_ecr = _field(ts_val, _U32), _field(ts_ecr, _U32)
    wscale = operator.index(wscale)
    if not -1 <= wscale <= _U8:
        raise OverflowError("wscale must be -1 (absent) or 0..255")
    out = bytearray()
    if _field(mss, _U16):
        out += struct.pack("!BBH", OPT_MSS, 4, mss)
    if timestamps is not None:
        # SACK-permitted rides in the two bytes that would otherwise pad the timestamps.
        out += bytes((OPT_SACK_PERMITTED, 2) if sack_permitted else (OPT_NOP, OPT_NOP))
        out += struct.pack("!BBII", OPT_TIMESTAMPS, 10, ts_val, ts_ecr)
    elif sack_permitted:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2))
    if wscale >= 0:
        out += bytes((OPT_NOP, OPT_WSCALE, 3, wscale))
    # As Linux tcp_established_options: as many blocks as fit after the aligned 4-byte SACK header.
    count = min(len(blocks), (TCP_OPTIONS_MAX - len(out) - 4) // 8)
    if count > 0:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * count))
        for left, right in blocks[:count]:
            out += struct.pack("!II", left, right)
    return bytes(out)


def tcp_options_length(
    mss: int = 0,
    wscale: int = -1,
    sack_permitted: bool = False,
    timestamps: bool = False,
    sack_blocks: int = 0,
) -> int:
    """Bytes of options build_tcp_ipv4 emits for these choices (``sack_blocks`` is a count)."""
    count = operator.index(sack_blocks)
    if count < 0:
        raise ValueError("sack_blocks must be a count >= 0")
    return len(
        _options(mss, wscale, sack_permitted, (0, 0) if timestamps else None, [(0, 0)] * min(count, 4))
    )


def _ipv4_header(
    src: int, dst: int, protocol: int, total_length: int, ttl: int, ident: int, tos: int, dont_fragment: bool
) -> bytes:
    """A 20-byte IPv4 header (no options) with its checksum (RFC 791 3.1)."""
    if total_length > _IP_LENGTH_MAX:
        raise ValueError(f"packet of {total_length} bytes exceeds the 65535-byte IPv4 limit")
    header = bytearray(
        _IPV4.pack(
            0x45,
            _field(tos, _U8),
            total_length,
            _field(ident, _U16),
            _IP_DF if dont_fragment else 0,
            _field(ttl, _U8),
            _field(protocol, _U8),
            0,
            _field(src, _U32),
            _field(dst, _U32),
        )
    )
    struct.pack_into("!H", header, 10, internet_checksum(header))
    return bytes(header)


def _tcp_ipv4_headers(
    src: int,
    dst: int,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: memoryview,
    mss: int,
    wscale: int,
    sack_permitted: bool,
    timestamps: tuple[int, int] | None,
    sack_blocks: Sequence[tuple[int, int]],
    urgent: int,
    ttl: int,
    ident: int,
    tos: int,
    dont_fragment: bool,
    offload_checksum: bool,
) -> bytes:
    """IPv4 and TCP headers (with options and both checksums) for ``payload``; shared by both builders."""
    options = _options(mss, wscale, sack_permitted, timestamps, sack_blocks)
    header_length = TCP_HEADER_MIN + len(options)
    tcp_length = header_length + len(payload)
    ip = _ipv4_header(src, dst, IPPROTO_TCP, IPV4_HEADER_MIN + tcp_length, ttl, ident, tos, dont_fragment)
    tcp = bytearray(
        _TCP.pack(
            _field(src_port, _U16),
            _field(dst_port, _U16),
            _field(seq, _U32),
            _field(ack, _U32),
            (header_length // 4) << 4,
            _field(flags, _U8),
            _field(window, _U16),
            0,
            _field(urgent, _U16),
        )
    )
    tcp += options
    check = pseudo_header_sum(src, dst, IPPROTO_TCP, tcp_length)
    # With checksum offload (virtio_net_hdr NEEDS_CSUM, Linux CHECKSUM_PARTIAL) the field holds the
    # folded pseudo-header sum, uncomplemented; the device completes it over header and payload.
    if not offload_checksum:
        # The header has even length, so summing it and then the payload equals one pass over both.
        check = internet_checksum(payload, ones_sum(tcp, check))
    struct.pack_into("!H", tcp, 16, check)
    return ip + tcp


def build_tcp_ipv4(
    src: int,
    dst: int,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: Buffer = b"",
    *,
    mss: int = 0,
    wscale: int = -1,
    sack_permitted: bool = False,
    timestamps: tuple[int, int] | None = None,
    sack_blocks: Sequence[tuple[int, int]] = (),
    urgent: int = 0,
    ttl: int = 64,
    ident: int = 0,
    tos: int = 0,
    dont_fragment: bool = True,
    offload_checksum: bool = False,
) -> bytes:
    """A complete IPv4+TCP packet with both checksums (see build_tcp_ipv4_into)."""
    data = byte_view(payload)
    headers = _tcp_ipv4_headers(
        src,
        dst,
        src_port,
        dst_port,
        seq,
        ack,
        flags,
        window,
        data,
        mss,
        wscale,
        sack_permitted,
        timestamps,
        sack_blocks,
        urgent,
        ttl,
        ident,
        tos,
        dont_fragment,
        offload_checksum,
    )
    return headers + data


def build_tcp_ipv4_into(
    buffer: Buffer,
    offset: int,
    src: int,
    dst: int,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: Buffer = b"",
    *,
    mss: int = 0,
    wscale: int = -1,
    sack_permitted: bool = False,
    timestamps: tuple[int, int] | None = None,
    sack_blocks: Sequence[tuple[int, int]] = (),
    urgent: int = 0,
    ttl: int = 64,
    ident: int = 0,
    tos: int = 0,
    dont_fragment: bool = True,
    offload_checksum: bool = False,
) -> int:
    """Write an IPv4+TCP packet into ``buffer`` at ``offset``; return its length.

    ``timestamps`` is None or (ts_val, ts_ecr); ``sack_blocks`` holds (left, right) pairs, of which
    as many are sent as fit. ``offload_checksum`` leaves the folded pseudo-header sum in the TCP
    checksum field for the kernel to complete. The payload may already sit in ``buffer``.
    """
    out = byte_view(buffer, writable=True)
    data = byte_view(payload)
    headers = _tcp_ipv4_headers(
        src,
        dst,
        src_port,
        dst_port,
        seq,
        ack,
        flags,
        window,
        data,
        mss,
        wscale,
        sack_permitted,
        timestamps,
        sack_blocks,
        urgent,
        ttl,
        ident,
        tos,
        dont_fragment,
        offload_checksum,
    )
    total = len(headers) + len(data)
    offset = operator.index(offset)
    if offset < 0 or offset > len(out) or total > len(out) - offset:
        raise ValueError(f"a {total}-byte packet does not fit at offset {offset}")
    # Payload first: it may already live in the output buffer, even where the headers go.
    out[offset + len(headers) : offset + total] = data
    out[offset : offset + len(headers)] = headers
    return total


def build_ipv4(
    src: int,
    dst: int,
    protocol: int,
    payload: Buffer,
    *,
    ttl: int = 64,
    ident: int = 0,
    tos: int = 0,
    dont_fragment: bool = True,
) -> bytes:
    """A plain IPv4 packet (20-byte header, checksum computed) around ``payload``."""
    data = byte_view(payload)
    return (
        _ipv4_header(src, dst, protocol, IPV4_HEADER_MIN + len(data), ttl, ident, tos, dont_fragment) + data
    )
