# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""IPv4 (RFC 791 3.1) and TCP (RFC 9293 3.1) wire formats: compiled.

Every length is checked against the buffer before a byte is read, so untrusted input can only
raise MalformedPacket. Parsed segments keep a reference to the caller's buffer and hand out the
payload as a zero-copy memoryview. Builders lay options out as Linux does (tcp_options_write).
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.memoryview cimport PyMemoryView_FromObject, PyMemoryView_GET_BUFFER
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memmove, memset, strcmp

from tcpcore._csum cimport tc_ones_sum, tc_pseudo_v4

import ipaddress

from tcpcore.constants import flags_to_str
from tcpcore.errors import MalformedPacket

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


# Mirrors tcpcore.constants (C constants so the option loop compares machine integers).
cdef enum:
    _IPPROTO_TCP = 6
    _OPT_EOL = 0
    _OPT_NOP = 1
    _OPT_MSS = 2
    _OPT_WSCALE = 3
    _OPT_SACK_PERMITTED = 4
    _OPT_SACK = 5
    _OPT_TIMESTAMPS = 8
    _HEADER_MIN = 20  # both IPv4 and TCP (RFC 791 3.1, RFC 9293 3.1)
    _OPTIONS_MAX = 40  # data offset 15 * 4 - 20 (RFC 9293 3.1)
    _SACK_BLOCKS_MAX = 4  # (40 - 2) // 8 (RFC 2018 section 3)
    _IP_DF = 0x4000
    _IP_MF = 0x2000
    _IP_OFFSET_MASK = 0x1FFF
    _IP_LENGTH_MAX = 0xFFFF  # the 16-bit total length field (RFC 791 3.1)


cdef inline uint16_t _load16(const uint8_t *p) noexcept nogil:
    return <uint16_t>((<uint16_t>p[0] << 8) | p[1])


cdef inline uint32_t _load32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void _store16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v


cdef inline void _store32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


# Parsed headers are short-lived and allocated per packet; a freelist of 64 reuses the objects of a
# whole receive batch instead of calling malloc, while bounding idle memory to 64 small objects.
# Their fields are declared in _wire_c.pxd, so compiled callers read them as C struct members.
@cython.freelist(64)
cdef class IPv4Header:
    """Fields of a validated IPv4 header (RFC 791 3.1); IPv4 options are skipped, never parsed."""

    def __init__(self):
        raise TypeError("IPv4Header objects are created by parse_ipv4 and parse_packet")

    def __repr__(self):
        return (
            f"IPv4Header(src={ipaddress.IPv4Address(self.src)}, dst={ipaddress.IPv4Address(self.dst)}, "
            f"protocol={self.protocol}, total_length={self.total_length}, ttl={self.ttl}, "
            f"ident={self.ident}, fragment_offset={self.fragment_offset}, "
            f"more_fragments={self.more_fragments})"
        )


@cython.freelist(64)
cdef class TCPSegment:
    """Fields and options of a validated TCP segment (RFC 9293 3.1, RFC 7323, RFC 2018).

    ``payload`` is a view of the buffer that was parsed: valid until the caller reuses it.
    """

    def __init__(self):
        raise TypeError("TCPSegment objects are created by parse_tcp and parse_packet")

    @property
    def payload(self):
        cdef object view = PyMemoryView_FromObject(self._buffer)
        cdef Py_buffer *info = PyMemoryView_GET_BUFFER(view)
        # Only a buffer of another item format or shape needs the (allocating) cast to bytes.
        if info.ndim != 1 or info.format == NULL or strcmp(info.format, "B") != 0:
            view = view.cast("B")
        return view[self.payload_offset : self.payload_offset + self.payload_length]

    def __repr__(self):
        return (
            f"TCPSegment({self.src_port}->{self.dst_port} [{flags_to_str(self.flags)}] seq={self.seq} "
            f"ack={self.ack} win={self.window} len={self.payload_length})"
        )


cdef IPv4Header _parse_ipv4(const uint8_t *p, Py_ssize_t n, bint verify):
    cdef Py_ssize_t header_length, total_length
    cdef uint16_t fragment
    cdef IPv4Header h
    if n < _HEADER_MIN:
        raise MalformedPacket("IPv4 packet shorter than 20 bytes")
    if p[0] >> 4 != 4:
        raise MalformedPacket("IP version is not 4")
    header_length = (p[0] & 0x0F) * 4
    if header_length < _HEADER_MIN:
        raise MalformedPacket("IPv4 IHL below 5")
    if header_length > n:
        raise MalformedPacket("IPv4 header longer than the packet")
    total_length = _load16(p + 2)
    if total_length < header_length:
        raise MalformedPacket("IPv4 total length shorter than the header")
    # RFC 1122 3.3.2 / Linux ip_rcv_core: a total length beyond the bytes received is a lie; bytes
    # after it are link-layer padding and ignored.
    if total_length > n:
        raise MalformedPacket("IPv4 total length exceeds the packet")
    if verify and tc_ones_sum(p, header_length, 0) != 0xFFFF:
        raise MalformedPacket("IPv4 header checksum mismatch")
    fragment = _load16(p + 6)
    h = IPv4Header.__new__(IPv4Header)
    h.version = 4
    h.header_length = header_length
    h.tos = p[1]
    h.total_length = total_length
    h.ident = _load16(p + 4)
    h.dont_fragment = (fragment & _IP_DF) != 0
    h.more_fragments = (fragment & _IP_MF) != 0
    h.fragment_offset = (fragment & _IP_OFFSET_MASK) * 8
    h.ttl = p[8]
    h.protocol = p[9]
    h.checksum = _load16(p + 10)
    h.src = _load32(p + 12)
    h.dst = _load32(p + 16)
    h.payload_offset = header_length
    h.payload_length = total_length - header_length
    h.is_fragment = h.more_fragments or h.fragment_offset != 0
    return h


cdef TCPSegment _parse_tcp(
    object owner,
    const uint8_t *base,
    Py_ssize_t n,
    Py_ssize_t offset,
    Py_ssize_t length,
    uint32_t src,
    uint32_t dst,
    bint verify,
):
    cdef const uint8_t *p
    cdef Py_ssize_t header_length, i, size, k, count
    cdef uint8_t kind
    cdef TCPSegment seg
    if offset < 0 or length < 0 or offset > n or length > n - offset:
        raise MalformedPacket("TCP segment outside the buffer")
    if length < _HEADER_MIN:
        raise MalformedPacket("TCP segment shorter than 20 bytes")
    p = base + offset
    header_length = (p[12] >> 4) * 4
    if header_length < _HEADER_MIN:
        raise MalformedPacket("TCP data offset below 5")
    if header_length > length:
        raise MalformedPacket("TCP header longer than the segment")
    # Checksum before options, as Linux tcp_v4_rcv: a corrupted header is reported as such.
    # Header and payload are contiguous, so one pass with the pseudo-header as the initial value
    # sums to 0xFFFF exactly when the checksum field is right (RFC 9293 3.1).
    if verify and tc_ones_sum(p, length, tc_pseudo_v4(src, dst, _IPPROTO_TCP, length)) != 0xFFFF:
        raise MalformedPacket("TCP checksum mismatch")
    seg = TCPSegment.__new__(TCPSegment)
    seg.src_port = _load16(p)
    seg.dst_port = _load16(p + 2)
    seg.seq = _load32(p + 4)
    seg.ack = _load32(p + 8)
    seg.header_length = header_length
    seg.flags = p[13]
    seg.window = _load16(p + 14)
    seg.checksum = _load16(p + 16)
    seg.urgent = _load16(p + 18)
    seg.wscale = -1
    seg.sack_blocks = ()
    seg.payload_offset = offset + header_length
    seg.payload_length = length - header_length
    seg._buffer = owner
    i = _HEADER_MIN
    while i < header_length:
        kind = p[i]
        if kind == _OPT_EOL:
            break
        if kind == _OPT_NOP:
            i += 1
            continue
        if i + 1 >= header_length:
            raise MalformedPacket("TCP option length byte past the header")
        size = p[i + 1]
        if size < 2:
            raise MalformedPacket("TCP option length below 2")
        if size > header_length - i:
            raise MalformedPacket("TCP option runs past the header")
        # A known kind with the wrong length is skipped by its length byte and ignored, as Linux
        # tcp_parse_options does; unknown kinds are skipped the same way (RFC 9293 3.2).
        if kind == _OPT_MSS:
            if size == 4:
                seg.mss = _load16(p + i + 2)
        elif kind == _OPT_WSCALE:
            if size == 3:
                seg.wscale = p[i + 2]
        elif kind == _OPT_SACK_PERMITTED:
            if size == 2:
                seg.sack_permitted = True
        elif kind == _OPT_TIMESTAMPS:
            if size == 10:
                seg.has_timestamps = True
                seg.ts_val = _load32(p + i + 2)
                seg.ts_ecr = _load32(p + i + 6)
        elif kind == _OPT_SACK:
            # 2 + 8n bytes; size <= 40 bounds n to 4 (RFC 2018 section 3).
            if size >= 10 and (size - 2) % 8 == 0:
                count = (size - 2) // 8
                seg.sack_blocks = tuple(
                    [(_load32(p + i + 2 + 8 * k), _load32(p + i + 6 + 8 * k)) for k in range(count)]
                )
        i += size
    return seg


cpdef IPv4Header parse_ipv4(object data, bint verify_checksum=True):
    """Validate and decode the IPv4 header at the start of ``data``."""
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return _parse_ipv4(<const uint8_t *>view.buf, view.len, verify_checksum)
    finally:
        PyBuffer_Release(&view)


cpdef TCPSegment parse_tcp(
    object data, Py_ssize_t offset, Py_ssize_t length, uint32_t src, uint32_t dst, bint verify_checksum=True
):
    """Validate and decode the TCP segment ``data[offset:offset + length]`` sent from src to dst."""
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return _parse_tcp(
            data, <const uint8_t *>view.buf, view.len, offset, length, src, dst, verify_checksum
        )
    finally:
        PyBuffer_Release(&view)


cpdef tuple parse_packet(object data, bint verify_checksum=True):
    """(IPv4 header, TCP segment or None): the TCP part is parsed only for unfragmented TCP."""
    cdef Py_buffer view
    cdef IPv4Header ip
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        ip = _parse_ipv4(<const uint8_t *>view.buf, view.len, verify_checksum)
        if ip.protocol != _IPPROTO_TCP or ip.is_fragment:
            return ip, None
        return ip, _parse_tcp(
            data,
            <const uint8_t *>view.buf,
            view.len,
            ip.header_length,
            ip.payload_length,
            ip.src,
            ip.dst,
            verify_checksum,
        )
    finally:
        PyBuffer_Release(&view)


cdef Py_ssize_t _write_options(
    uint8_t *p,
    uint16_t mss,
    int wscale,
    bint sack_permitted,
    bint timestamps,
    uint32_t ts_val,
    uint32_t ts_ecr,
    const uint32_t *blocks,
    Py_ssize_t nblocks,
) except -1:
    """Write the options into p (room for 40 bytes) in Linux's tcp_options_write layout, each option
    4-byte aligned by NOPs; return their length. The one place that knows the layout."""
    cdef Py_ssize_t i = 0, k
    if wscale < -1 or wscale > 255:
        raise OverflowError("wscale must be -1 (absent) or 0..255")
    if mss:
        p[0] = _OPT_MSS
        p[1] = 4
        _store16(p + 2, mss)
        i = 4
    if timestamps:
        # SACK-permitted rides in the two bytes that would otherwise pad the timestamps.
        p[i] = _OPT_SACK_PERMITTED if sack_permitted else _OPT_NOP
        p[i + 1] = 2 if sack_permitted else _OPT_NOP
        p[i + 2] = _OPT_TIMESTAMPS
        p[i + 3] = 10
        _store32(p + i + 4, ts_val)
        _store32(p + i + 8, ts_ecr)
        i += 12
    elif sack_permitted:
        p[i] = _OPT_NOP
        p[i + 1] = _OPT_NOP
        p[i + 2] = _OPT_SACK_PERMITTED
        p[i + 3] = 2
        i += 4
    if wscale >= 0:
        p[i] = _OPT_NOP
        p[i + 1] = _OPT_WSCALE
        p[i + 2] = 3
        p[i + 3] = <uint8_t>wscale
        i += 4
    # As Linux tcp_established_options: as many blocks as fit after the aligned 4-byte SACK header.
    nblocks = min(nblocks, (_OPTIONS_MAX - i - 4) // 8)
    if nblocks > 0:
        p[i] = _OPT_NOP
        p[i + 1] = _OPT_NOP
        p[i + 2] = _OPT_SACK
        p[i + 3] = <uint8_t>(2 + 8 * nblocks)
        i += 4
        for k in range(2 * nblocks):
            _store32(p + i, blocks[k])
            i += 4
    return i


cpdef Py_ssize_t tcp_options_length(
    uint16_t mss=0, int wscale=-1, bint sack_permitted=False, bint timestamps=False, Py_ssize_t sack_blocks=0
) except -1:
    """Bytes of options build_tcp_ipv4 emits for these choices (``sack_blocks`` is a count)."""
    cdef uint8_t scratch[_OPTIONS_MAX]
    cdef uint32_t blocks[2 * _SACK_BLOCKS_MAX]
    if sack_blocks < 0:
        raise ValueError("sack_blocks must be a count >= 0")
    memset(blocks, 0, sizeof(blocks))
    return _write_options(
        scratch, mss, wscale, sack_permitted, timestamps, 0, 0, blocks, min(sack_blocks, _SACK_BLOCKS_MAX)
    )


cdef int _check_ip_length(Py_ssize_t total_length) except -1:
    if total_length > _IP_LENGTH_MAX:
        raise ValueError(f"packet of {total_length} bytes exceeds the 65535-byte IPv4 limit")
    return 0


cdef void _write_ipv4(
    uint8_t *p,
    uint32_t src,
    uint32_t dst,
    uint8_t protocol,
    uint16_t total_length,
    uint8_t ttl,
    uint16_t ident,
    uint8_t tos,
    bint dont_fragment,
) noexcept nogil:
    """A 20-byte IPv4 header (no options) with its checksum (RFC 791 3.1)."""
    p[0] = 0x45
    p[1] = tos
    _store16(p + 2, total_length)
    _store16(p + 4, ident)
    _store16(p + 6, _IP_DF if dont_fragment else 0)
    p[8] = ttl
    p[9] = protocol
    p[10] = 0
    p[11] = 0
    _store32(p + 12, src)
    _store32(p + 16, dst)
    _store16(p + 10, ~tc_ones_sum(p, _HEADER_MIN, 0))


ctypedef struct _TcpPacket:
    uint32_t src, dst, seq, ack
    uint16_t src_port, dst_port, window, urgent, ident
    uint8_t flags, ttl, tos
    bint dont_fragment, offload_checksum
    Py_ssize_t options_length, payload_length, total_length
    uint8_t options[_OPTIONS_MAX]


cdef int _prepare(
    _TcpPacket *f,
    uint32_t src,
    uint32_t dst,
    uint16_t src_port,
    uint16_t dst_port,
    uint32_t seq,
    uint32_t ack,
    uint8_t flags,
    uint16_t window,
    Py_ssize_t payload_length,
    uint16_t mss,
    int wscale,
    bint sack_permitted,
    object timestamps,
    object sack_blocks,
    uint16_t urgent,
    uint8_t ttl,
    uint16_t ident,
    uint8_t tos,
    bint dont_fragment,
    bint offload_checksum,
) except -1:
    """Convert the builder's arguments and lay out the options; shared by both TCP builders."""
    cdef uint32_t blocks[2 * _SACK_BLOCKS_MAX]
    cdef uint32_t ts_val = 0, ts_ecr = 0
    cdef Py_ssize_t k, nblocks
    # At most 4 blocks ever fit in the option space (RFC 2018 section 3); later ones are not read.
    nblocks = min(len(sack_blocks), _SACK_BLOCKS_MAX)
    for k in range(nblocks):
        blocks[2 * k], blocks[2 * k + 1] = sack_blocks[k]
    if timestamps is not None:
        ts_val, ts_ecr = timestamps
    f.options_length = _write_options(
        f.options, mss, wscale, sack_permitted, timestamps is not None, ts_val, ts_ecr, blocks, nblocks
    )
    f.payload_length = payload_length
    f.total_length = 2 * _HEADER_MIN + f.options_length + payload_length
    _check_ip_length(f.total_length)
    f.src = src
    f.dst = dst
    f.seq = seq
    f.ack = ack
    f.src_port = src_port
    f.dst_port = dst_port
    f.window = window
    f.urgent = urgent
    f.ident = ident
    f.flags = flags
    f.ttl = ttl
    f.tos = tos
    f.dont_fragment = dont_fragment
    f.offload_checksum = offload_checksum
    return 0


cdef void _emit(uint8_t *out, const _TcpPacket *f, const uint8_t *payload) noexcept nogil:
    """Write the prepared packet to out (f.total_length bytes)."""
    cdef uint8_t *tcp = out + _HEADER_MIN
    cdef Py_ssize_t header_length = _HEADER_MIN + f.options_length
    cdef Py_ssize_t tcp_length = header_length + f.payload_length
    cdef uint16_t check
    # Payload first: it may already live in the output buffer, even where the headers go.
    if f.payload_length:
        memmove(tcp + header_length, payload, f.payload_length)
    _write_ipv4(
        out, f.src, f.dst, _IPPROTO_TCP, <uint16_t>f.total_length, f.ttl, f.ident, f.tos, f.dont_fragment
    )
    _store16(tcp, f.src_port)
    _store16(tcp + 2, f.dst_port)
    _store32(tcp + 4, f.seq)
    _store32(tcp + 8, f.ack)
    tcp[12] = <uint8_t>((header_length // 4) << 4)
    tcp[13] = f.flags
    _store16(tcp + 14, f.window)
    _store16(tcp + 16, 0)
    _store16(tcp + 18, f.urgent)
    memcpy(tcp + _HEADER_MIN, f.options, f.options_length)
    check = tc_pseudo_v4(f.src, f.dst, _IPPROTO_TCP, <uint32_t>tcp_length)
    # With checksum offload (virtio_net_hdr NEEDS_CSUM, Linux CHECKSUM_PARTIAL) the field holds the
    # folded pseudo-header sum, uncomplemented; the device completes it over header and payload.
    if not f.offload_checksum:
        check = ~tc_ones_sum(tcp, tcp_length, check)
    _store16(tcp + 16, check)


def build_tcp_ipv4(
    uint32_t src,
    uint32_t dst,
    uint16_t src_port,
    uint16_t dst_port,
    uint32_t seq,
    uint32_t ack,
    uint8_t flags,
    uint16_t window,
    object payload=b"",
    *,
    uint16_t mss=0,
    int wscale=-1,
    bint sack_permitted=False,
    object timestamps=None,
    object sack_blocks=(),
    uint16_t urgent=0,
    uint8_t ttl=64,
    uint16_t ident=0,
    uint8_t tos=0,
    bint dont_fragment=True,
    bint offload_checksum=False,
):
    """A complete IPv4+TCP packet with both checksums (see build_tcp_ipv4_into)."""
    cdef _TcpPacket f
    cdef Py_buffer data
    cdef bytes out
    PyObject_GetBuffer(payload, &data, PyBUF_SIMPLE)
    try:
        _prepare(
            &f, src, dst, src_port, dst_port, seq, ack, flags, window, data.len, mss, wscale,
            sack_permitted, timestamps, sack_blocks, urgent, ttl, ident, tos, dont_fragment, offload_checksum,
        )
        out = PyBytes_FromStringAndSize(NULL, f.total_length)
        _emit(<uint8_t *>PyBytes_AS_STRING(out), &f, <const uint8_t *>data.buf)
        return out
    finally:
        PyBuffer_Release(&data)


def build_tcp_ipv4_into(
    object buffer,
    Py_ssize_t offset,
    uint32_t src,
    uint32_t dst,
    uint16_t src_port,
    uint16_t dst_port,
    uint32_t seq,
    uint32_t ack,
    uint8_t flags,
    uint16_t window,
    object payload=b"",
    *,
    uint16_t mss=0,
    int wscale=-1,
    bint sack_permitted=False,
    object timestamps=None,
    object sack_blocks=(),
    uint16_t urgent=0,
    uint8_t ttl=64,
    uint16_t ident=0,
    uint8_t tos=0,
    bint dont_fragment=True,
    bint offload_checksum=False,
):
    """Write an IPv4+TCP packet into ``buffer`` at ``offset``; return its length.

    ``timestamps`` is None or (ts_val, ts_ecr); ``sack_blocks`` holds (left, right) pairs, of which
    as many are sent as fit. ``offload_checksum`` leaves the folded pseudo-header sum in the TCP
    checksum field for the kernel to complete. The payload may already sit in ``buffer``.
    """
    cdef _TcpPacket f
    cdef Py_buffer out, data
    PyObject_GetBuffer(buffer, &out, PyBUF_WRITABLE)
    try:
        PyObject_GetBuffer(payload, &data, PyBUF_SIMPLE)
        try:
            _prepare(
                &f, src, dst, src_port, dst_port, seq, ack, flags, window, data.len, mss, wscale,
                sack_permitted, timestamps, sack_blocks, urgent, ttl, ident, tos, dont_fragment,
                offload_checksum,
            )
            if offset < 0 or offset > out.len or f.total_length > out.len - offset:
                raise ValueError(f"a {f.total_length}-byte packet does not fit at offset {offset}")
            _emit(<uint8_t *>out.buf + offset, &f, <const uint8_t *>data.buf)
            return f.total_length
        finally:
            PyBuffer_Release(&data)
    finally:
        PyBuffer_Release(&out)


def build_ipv4(
    uint32_t src,
    uint32_t dst,
    uint8_t protocol,
    object payload,
    *,
    uint8_t ttl=64,
    uint16_t ident=0,
    uint8_t tos=0,
    bint dont_fragment=True,
):
    """A plain IPv4 packet (20-byte header, checksum computed) around ``payload``."""
    cdef Py_buffer data
    cdef bytes out
    cdef uint8_t *p
    PyObject_GetBuffer(payload, &data, PyBUF_SIMPLE)
    try:
        _check_ip_length(_HEADER_MIN + data.len)
        out = PyBytes_FromStringAndSize(NULL, _HEADER_MIN + data.len)
        p = <uint8_t *>PyBytes_AS_STRING(out)
        if data.len:
            memcpy(p + _HEADER_MIN, data.buf, data.len)
        _write_ipv4(p, src, dst, protocol, <uint16_t>(_HEADER_MIN + data.len), ttl, ident, tos, dont_fragment)
        return out
    finally:
        PyBuffer_Release(&data)
