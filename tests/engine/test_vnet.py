"""pytcp.vnet: the virtio_net_hdr codec and the precomputed offload headers."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytcp import vnet
from tcpcore.errors import MalformedPacket

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)


@given(u8, u8, u16, u16, u16, u16, st.integers(0, 64))
def test_round_trip(
    flags: int, gso_type: int, hdr_len: int, gso_size: int, csum_start: int, csum_offset: int, offset: int
) -> None:
    buf = bytearray(offset + vnet.HEADER_SIZE + 3)
    assert vnet.encode_into(buf, offset, flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) == 10
    header = vnet.decode(buf, offset)
    assert header == vnet.VnetHeader(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)
    assert header.encode() == bytes(buf[offset : offset + vnet.HEADER_SIZE])
    assert vnet.decode(memoryview(bytes(buf)), offset) == header


def test_layout_is_little_endian() -> None:
    # TUNSETVNETLE: the u16 fields are little-endian on every host.
    header = vnet.VnetHeader(vnet.VIRTIO_NET_HDR_F_NEEDS_CSUM, vnet.GSO_TCPV4, 0x0102, 0x0304, 0x0506, 0x0708)
    assert header.encode() == bytes([1, 1, 2, 1, 4, 3, 6, 5, 8, 7])


def test_plain_header_decodes_to_the_shared_constant() -> None:
    assert bytes(10) == vnet.NO_OFFLOAD_HEADER
    assert vnet.decode(vnet.NO_OFFLOAD_HEADER + b"\x45") is vnet.NO_OFFLOAD
    assert not vnet.NO_OFFLOAD.checksum_trusted and not vnet.NO_OFFLOAD.is_gso


@pytest.mark.parametrize("length", range(vnet.HEADER_SIZE))
def test_short_input_is_malformed(length: int) -> None:
    with pytest.raises(MalformedPacket):
        vnet.decode(bytes(length))
    with pytest.raises(MalformedPacket):
        vnet.decode(bytes(vnet.HEADER_SIZE + length), length + 1)


def test_negative_offset_is_malformed() -> None:
    with pytest.raises(MalformedPacket):
        vnet.decode(bytes(20), -1)


@given(st.binary(max_size=24), st.integers(-2, 26))
def test_arbitrary_bytes_decode_or_raise_malformed(data: bytes, offset: int) -> None:
    try:
        header = vnet.decode(data, offset)
    except MalformedPacket:
        assert offset < 0 or len(data) - offset < vnet.HEADER_SIZE
    else:
        assert header.encode() == data[offset : offset + vnet.HEADER_SIZE]


def test_flag_properties() -> None:
    assert vnet.VnetHeader(flags=vnet.VIRTIO_NET_HDR_F_DATA_VALID).checksum_trusted
    assert vnet.VnetHeader(flags=vnet.VIRTIO_NET_HDR_F_NEEDS_CSUM).checksum_trusted
    assert vnet.VnetHeader(gso_type=vnet.GSO_TCPV4 | vnet.GSO_ECN).is_gso
    assert not vnet.VnetHeader(gso_type=vnet.GSO_ECN).is_gso


def test_encode_rejects_bad_fields_and_small_buffers() -> None:
    with pytest.raises(ValueError, match="out of range"):
        vnet.encode_into(bytearray(10), 0, flags=256)
    with pytest.raises(ValueError, match="out of range"):
        vnet.VnetHeader(gso_size=-1).encode()
    with pytest.raises(ValueError, match="no room"):
        vnet.encode_into(bytearray(12), 3)
    with pytest.raises(ValueError, match="no room"):
        vnet.encode_into(bytearray(12), -1)


def test_gso_tcpv4_header() -> None:
    header = vnet.decode(vnet.gso_tcpv4_header(20, 32, 1448))
    assert header == vnet.VnetHeader(vnet.VIRTIO_NET_HDR_F_NEEDS_CSUM, vnet.GSO_TCPV4, 52, 1448, 20, 16)
    # Cached: the hot path reuses one object per shape.
    assert vnet.gso_tcpv4_header(20, 32, 1448) is vnet.gso_tcpv4_header(20, 32, 1448)
    plain = vnet.decode(vnet.gso_tcpv4_header(24, 20, 0))
    assert plain.gso_type == vnet.GSO_NONE and plain.flags == vnet.VIRTIO_NET_HDR_F_NEEDS_CSUM
    assert (plain.csum_start, plain.csum_offset) == (24, 16)


@pytest.mark.parametrize(("ip", "tcp", "mss"), [(19, 20, 1), (20, 64, 1), (22, 20, 1), (20, 20, 65536)])
def test_gso_tcpv4_header_rejects_impossible_shapes(ip: int, tcp: int, mss: int) -> None:
    with pytest.raises(ValueError):
        vnet.gso_tcpv4_header(ip, tcp, mss)


def test_partial_checksum_completed_as_the_device_does(core: SimpleNamespace) -> None:
    """The header's csum_start/csum_offset and tcpcore's offload_checksum builder agree: summing from
    csum_start to the end (field included) and storing the complement yields a valid checksum."""
    src, dst = 0xC6120002, 0xC6120001  # 198.18.0.2 -> 198.18.0.1
    payload = bytes(range(256)) * 40 + b"odd"
    packet = bytearray(
        core.build_tcp_ipv4(src, dst, 8080, 40000, 1, 2, 0x18, 65535, payload, mss=0, offload_checksum=True)
    )
    ip_header_len = (packet[0] & 0x0F) * 4
    tcp_header_len = (packet[ip_header_len + 12] >> 4) * 4
    header = vnet.decode(vnet.gso_tcpv4_header(ip_header_len, tcp_header_len, 1460))
    field = header.csum_start + header.csum_offset
    # The pseudo-header sum left in the field is summed along with the rest, as the device does.
    struct.pack_into("!H", packet, field, core.internet_checksum(packet[header.csum_start :]))
    ip, seg = core.parse_packet(packet)  # verifies both checksums
    assert seg is not None and bytes(seg.payload) == payload and ip.total_length == len(packet)
