"""Internet checksum (RFC 1071), pseudo-headers and RFC 1624 incremental update, for both implementations."""

from __future__ import annotations

import functools
import random
import socket
import struct
from types import SimpleNamespace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

IPPROTO_TCP = 6
RFC1071_DATA = bytes.fromhex("0001f203f4f5f6f7")
INITIALS = [0, 1, 0xFFFF, 0x1FFFE]


def naive_sum(data: bytes, initial: int = 0) -> int:
    """The RFC 1071 definition word by word: big-endian 16-bit words, end-around carry at each add."""
    if len(data) % 2:
        data += b"\x00"
    total = initial
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def naive_checksum(data: bytes, initial: int = 0) -> int:
    return ~naive_sum(data, initial) & 0xFFFF


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@functools.cache
def large_case(n: int) -> tuple[bytes, int]:
    """A large buffer and its naive sum, computed once for both implementations."""
    data = random_bytes(n, n)
    return data, naive_sum(data)


# --- RFC 1071 and carry handling -------------------------------------------------------------


def test_rfc1071_section_3_vector(core: SimpleNamespace) -> None:
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to 0xddf2.
    assert core.ones_sum(RFC1071_DATA) == 0xDDF2
    assert core.internet_checksum(RFC1071_DATA) == 0x220D
    # Appending the checksum makes the data verify.
    assert core.internet_checksum(RFC1071_DATA + (0x220D).to_bytes(2, "big")) == 0


@pytest.mark.parametrize(
    ("data", "initial"),
    [
        (b"\xff\xff\x00\x01", 0),
        (b"\x80\x00\x80\x00", 0),
        (b"\xff\xff", 1),
        (b"\x00\x01", 0xFFFF),
        (b"", 0x10000),
        (b"\xff\xff\xff\xff\x00\x01", 0),  # 0x1FFFF folds to 0x10000, which folds again to 1
    ],
)
def test_sum_of_0x10000_folds_to_one(core: SimpleNamespace, data: bytes, initial: int) -> None:
    # End-around carry: 0x10000 is 0x0000 + carry 1, i.e. 0x0001; one's complement never yields +0 here.
    assert core.ones_sum(data, initial) == 0x0001
    assert core.internet_checksum(data, initial) == 0xFFFE


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 63, 64, 65, 1500, 65535])
def test_all_ones_data(core: SimpleNamespace, n: int) -> None:
    data = b"\xff" * n
    assert core.ones_sum(data) == naive_sum(data)
    if n % 2 == 0:
        # Every word is -0: the sum stays 0xFFFF and never collapses to +0.
        assert core.ones_sum(data) == 0xFFFF
    assert core.internet_checksum(data) == naive_checksum(data)


@pytest.mark.parametrize("n", range(0, 65))
def test_all_zero_data(core: SimpleNamespace, n: int) -> None:
    assert core.ones_sum(bytes(n)) == 0
    assert core.internet_checksum(bytes(n)) == 0xFFFF


@pytest.mark.parametrize("initial", INITIALS)
@pytest.mark.parametrize("n", range(0, 65))
def test_every_length_and_initial_matches_reference(core: SimpleNamespace, n: int, initial: int) -> None:
    data = random_bytes(n, n)
    assert core.ones_sum(data, initial) == naive_sum(data, initial)
    assert core.internet_checksum(data, initial) == naive_checksum(data, initial)


def test_trailing_odd_byte_is_high_byte_of_padded_word(core: SimpleNamespace) -> None:
    # RFC 1071 section 4.1: a final odd byte is added as if followed by a zero byte.
    assert core.ones_sum(b"\x01") == 0x0100
    assert core.ones_sum(b"\x00\x01\x02") == 0x0201
    assert core.ones_sum(b"\xab") == core.ones_sum(b"\xab\x00")


@pytest.mark.parametrize("initial", INITIALS)
def test_initial_alone(core: SimpleNamespace, initial: int) -> None:
    assert core.ones_sum(b"", initial) == naive_sum(b"", initial)


# --- buffer types ----------------------------------------------------------------------------


@pytest.mark.parametrize("offset", range(0, 8))
@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview-bytes", "memoryview-bytearray"])
def test_buffer_types_and_unaligned_offsets(core: SimpleNamespace, kind: str, offset: int) -> None:
    raw = random_bytes(301, offset)
    backing: bytes | bytearray = bytearray(raw) if kind.endswith("bytearray") else raw
    buf: bytes | bytearray | memoryview
    if kind.startswith("memoryview"):
        buf = memoryview(backing)[offset : offset + 257]  # non-zero start: unaligned for the C loop
    else:
        buf = backing[offset : offset + 257]
    expected = raw[offset : offset + 257]
    assert core.ones_sum(buf) == naive_sum(expected)
    assert core.internet_checksum(buf, 0x1234) == naive_checksum(expected, 0x1234)


def test_memoryview_with_wide_items_sums_its_bytes(core: SimpleNamespace) -> None:
    view = memoryview(bytearray(RFC1071_DATA)).cast("H")
    assert core.ones_sum(view) == 0xDDF2


# --- pseudo-headers ------------------------------------------------------------------------------


@given(src=st.integers(0, 0xFFFFFFFF), dst=st.integers(0, 0xFFFFFFFF), length=st.integers(0, 0xFFFF))
def test_pseudo_header_v4_int_equals_buffer(core: SimpleNamespace, src: int, dst: int, length: int) -> None:
    src_b, dst_b = src.to_bytes(4, "big"), dst.to_bytes(4, "big")
    # RFC 9293 section 3.1: source, destination, zero, protocol, TCP length.
    expected = naive_sum(src_b + dst_b + struct.pack("!BBH", 0, IPPROTO_TCP, length))
    assert core.pseudo_header_sum(src, dst, IPPROTO_TCP, length) == expected
    assert core.pseudo_header_sum(src_b, bytearray(dst_b), IPPROTO_TCP, length) == expected
    assert core.pseudo_header_sum(memoryview(src_b), dst, IPPROTO_TCP, length) == expected


@given(
    src=st.binary(min_size=16, max_size=16),
    dst=st.binary(min_size=16, max_size=16),
    length=st.integers(0, 0xFFFFFFFF),
    next_header=st.integers(0, 255),
)
def test_pseudo_header_v6_by_hand(
    core: SimpleNamespace, src: bytes, dst: bytes, length: int, next_header: int
) -> None:
    # RFC 8200 section 8.1: addresses, 32-bit upper-layer length (jumbograms too), 3 zero bytes, next header.
    expected = naive_sum(src + dst + struct.pack("!IxxxB", length, next_header))
    assert core.pseudo_header_sum(src, dst, next_header, length) == expected


@pytest.mark.parametrize("bad", [-1, 0x100000000, b"\x00" * 5, b"", b"\x00" * 15])
def test_pseudo_header_rejects_bad_address(core: SimpleNamespace, bad: int | bytes) -> None:
    with pytest.raises(ValueError):
        core.pseudo_header_sum(bad, 0, IPPROTO_TCP, 20)
    with pytest.raises(ValueError):
        core.pseudo_header_sum(0, bad, IPPROTO_TCP, 20)


# --- transport checksum of real segments ---------------------------------------------------------


def tcp_segment(payload: bytes, checksum: int = 0) -> bytes:
    """A TCP header (RFC 9293 section 3.1) with MSS and NOP/window-scale options, then the payload."""
    options = struct.pack("!BBH", 2, 4, 1460) + struct.pack("!BBBB", 1, 3, 3, 7)
    offset_words = (20 + len(options)) // 4
    header = struct.pack(
        "!HHIIBBHHH", 49152, 80, 0x01020304, 0xFFFFFFF0, offset_words << 4, 0x18, 65535, checksum, 0
    )
    return header + options + payload


@pytest.mark.parametrize("payload", [b"", b"x", b"hello, world!", bytes(range(256)) * 6])
def test_transport_checksum_ipv4_segment_verifies(core: SimpleNamespace, payload: bytes) -> None:
    src, dst = bytes([192, 0, 2, 1]), bytes([198, 51, 100, 7])
    segment = tcp_segment(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, IPPROTO_TCP, len(segment))
    expected = naive_checksum(pseudo + segment)
    assert core.transport_checksum(src, dst, IPPROTO_TCP, segment) == expected
    assert core.transport_checksum(int.from_bytes(src, "big"), dst, IPPROTO_TCP, segment) == expected
    filled = tcp_segment(payload, expected)
    assert core.transport_checksum(src, dst, IPPROTO_TCP, filled) == 0
    assert core.transport_checksum(src, dst, IPPROTO_TCP, memoryview(bytearray(filled))) == 0


@pytest.mark.parametrize("payload", [b"", b"odd", bytes(1000)])
@pytest.mark.parametrize(
    ("family", "src", "dst"),
    [(socket.AF_INET, "10.0.0.1", "10.0.0.2"), (socket.AF_INET6, "2001:db8::1", "2001:db8::2")],
)
def test_transport_checksum_matches_scapy(
    core: SimpleNamespace, payload: bytes, family: int, src: str, dst: str
) -> None:
    # An independent implementation fills in the checksum of IPv4 and IPv6 TCP segments.
    scapy = pytest.importorskip("scapy.all")
    ip_class = scapy.IP if family == socket.AF_INET else scapy.IPv6
    built = ip_class(
        bytes(ip_class(src=src, dst=dst) / scapy.TCP(sport=1234, dport=80, flags="PA") / payload)
    )
    segment = bytes(built[scapy.TCP])
    src_b, dst_b = socket.inet_pton(family, src), socket.inet_pton(family, dst)
    assert core.transport_checksum(src_b, dst_b, IPPROTO_TCP, segment) == 0
    zeroed = segment[:16] + b"\x00\x00" + segment[18:]
    assert core.transport_checksum(src_b, dst_b, IPPROTO_TCP, zeroed) == built[scapy.TCP].chksum


# --- RFC 1624 incremental update -----------------------------------------------------------------


def test_rfc1624_section_4_example(core: SimpleNamespace) -> None:
    # The other header words sum to 0xCD7A; m = 0x5555 changes to m' = 0x3285.
    before = struct.pack("!HH", 0x5555, 0xCD7A)
    after = struct.pack("!HH", 0x3285, 0xCD7A)
    assert core.internet_checksum(before) == 0xDD2F
    assert core.internet_checksum(after) == 0x0000
    # RFC 1141's eqn. 2 (HC - ~m - m') gives 0xFFFF (-0) here; eqn. 3 gives the recomputed 0x0000.
    assert core.checksum_update16(0xDD2F, 0x5555, 0x3285) == 0x0000


@st.composite
def field_change(draw: st.DrawFn, width: int) -> tuple[bytes, int, int]:
    words = draw(st.integers(width // 2, 40))
    data = draw(st.binary(min_size=2 * words, max_size=2 * words))
    offset = 2 * draw(st.integers(0, words - width // 2))
    new = draw(st.integers(0, (1 << (8 * width)) - 1))
    return data, offset, new


def _check_update(core: SimpleNamespace, change: tuple[bytes, int, int], width: int) -> None:
    data, offset, new = change
    changed = data[:offset] + new.to_bytes(width, "big") + data[offset + width :]
    # One's complement has two zeros: all-zero data checksums to 0xFFFF, which eqn. 3 cannot produce.
    # IP and TCP headers are never all zero (version, protocol), so the case does not arise there.
    assume(any(changed))
    old = int.from_bytes(data[offset : offset + width], "big")
    update = core.checksum_update16 if width == 2 else core.checksum_update32
    assert update(core.internet_checksum(data), old, new) == core.internet_checksum(changed)


@given(change=field_change(2))
def test_update16_equals_recomputation(core: SimpleNamespace, change: tuple[bytes, int, int]) -> None:
    _check_update(core, change, 2)


@given(change=field_change(4))
def test_update32_equals_recomputation(core: SimpleNamespace, change: tuple[bytes, int, int]) -> None:
    _check_update(core, change, 4)


@pytest.mark.parametrize(("old", "new"), [(0, 0xFFFFFFFF), (0xFFFFFFFF, 0), (0x12345678, 0x12345678)])
def test_update32_extremes(core: SimpleNamespace, old: int, new: int) -> None:
    data = old.to_bytes(4, "big") + b"\x45\x00"
    changed = new.to_bytes(4, "big") + b"\x45\x00"
    assert core.checksum_update32(core.internet_checksum(data), old, new) == core.internet_checksum(changed)


# --- large buffers -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [65536, 65535, 1 << 20])
def test_large_buffers_match_reference(core: SimpleNamespace, n: int) -> None:
    data, expected = large_case(n)
    assert core.ones_sum(data) == expected
    assert core.internet_checksum(memoryview(data)[1:]) == naive_checksum(data[1:])


# --- differential: compiled vs twin --------------------------------------------------------------


@given(data=st.binary(max_size=4096), initial=st.integers(0, 0xFFFFFFFF), start=st.integers(0, 7))
def test_differential_sums(
    both: tuple[SimpleNamespace, SimpleNamespace], data: bytes, initial: int, start: int
) -> None:
    compiled, twin = both
    view = memoryview(data)[start:]
    assert compiled.ones_sum(view, initial) == twin.ones_sum(view, initial)
    assert compiled.internet_checksum(view, initial) == twin.internet_checksum(view, initial)


@given(
    src=st.one_of(
        st.integers(0, 0xFFFFFFFF), st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16)
    ),
    dst=st.one_of(
        st.integers(0, 0xFFFFFFFF), st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16)
    ),
    protocol=st.integers(0, 255),
    segment=st.binary(max_size=2048),
)
def test_differential_transport(
    both: tuple[SimpleNamespace, SimpleNamespace],
    src: int | bytes,
    dst: int | bytes,
    protocol: int,
    segment: bytes,
) -> None:
    compiled, twin = both
    length = len(segment)
    assert compiled.pseudo_header_sum(src, dst, protocol, length) == twin.pseudo_header_sum(
        src, dst, protocol, length
    )
    assert compiled.transport_checksum(src, dst, protocol, segment) == twin.transport_checksum(
        src, dst, protocol, segment
    )


@given(checksum=st.integers(0, 0xFFFF), old=st.integers(0, 0xFFFFFFFF), new=st.integers(0, 0xFFFFFFFF))
def test_differential_updates(
    both: tuple[SimpleNamespace, SimpleNamespace], checksum: int, old: int, new: int
) -> None:
    compiled, twin = both
    assert compiled.checksum_update32(checksum, old, new) == twin.checksum_update32(checksum, old, new)
    old16, new16 = old & 0xFFFF, new & 0xFFFF
    assert compiled.checksum_update16(checksum, old16, new16) == twin.checksum_update16(
        checksum, old16, new16
    )
