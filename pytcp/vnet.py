"""virtio_net_hdr: the offload header a TUN device opened with IFF_VNET_HDR puts before every packet.

Layout (include/uapi/linux/virtio_net.h, struct virtio_net_hdr, 10 bytes)::

    u8 flags; u8 gso_type; u16 hdr_len; u16 gso_size; u16 csum_start; u16 csum_offset;

Byte order: the u16 fields are "virtio16", whose order the TUN driver picks per device. By default it
is the host's order (legacy virtio); ``TUNSETVNETLE`` makes it little-endian on every host (virtio 1.0,
drivers/net/tun_vnet.h: ``tun_vnet_is_little_endian``). pytcp.tun always sets TUNSETVNETLE, so this
module encodes and decodes little-endian only; on little-endian hosts the ioctl changes nothing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

from tcpcore._types import Buffer
from tcpcore.constants import IPV4_HEADER_MIN, TCP_HEADER_MIN
from tcpcore.errors import MalformedPacket

__all__ = [
    "GSO_ECN",
    "GSO_NONE",
    "GSO_TCPV4",
    "GSO_TCPV6",
    "GSO_UDP",
    "HEADER_SIZE",
    "NO_OFFLOAD",
    "NO_OFFLOAD_HEADER",
    "VIRTIO_NET_HDR_F_DATA_VALID",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VnetHeader",
    "decode",
    "encode_into",
    "gso_tcpv4_header",
]

#: The checksum from csum_start to the end is unfinished: the field at csum_start + csum_offset holds
#: the pseudo-header sum and the receiver completes it (Linux CHECKSUM_PARTIAL).
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
#: The sender already verified the checksum (Linux CHECKSUM_UNNECESSARY).
VIRTIO_NET_HDR_F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
#: Or-ed into gso_type: the segments carry ECN CWR handling (TUN_F_TSO_ECN, which pytcp never enables).
GSO_ECN = 0x80

HEADER_SIZE = 10
_HEADER = struct.Struct("<BBHHHH")
_unpack_from = _HEADER.unpack_from  # bound once: decode runs per received packet
#: Offset of the checksum field inside the TCP header (RFC 9293 3.1).
_TCP_CHECKSUM_OFFSET = 16
#: IPv4 IHL and TCP data offset are 4-bit counts of 32-bit words: 60 bytes at most.
_HEADER_MAX = 60
#: Header bytes for a plain packet: no offload, checksums complete. Written before every ordinary packet.
NO_OFFLOAD_HEADER = bytes(HEADER_SIZE)


@dataclass(frozen=True, slots=True)
class VnetHeader:
    """A decoded virtio_net_hdr."""

    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @property
    def checksum_trusted(self) -> bool:
        """True when the packet's checksum need not be verified (NEEDS_CSUM or DATA_VALID)."""
        return bool(self.flags & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID))

    @property
    def is_gso(self) -> bool:
        """True for a super-packet the receiver would have to cut into ``gso_size`` pieces."""
        return self.gso_type & ~GSO_ECN != GSO_NONE

    def encode(self) -> bytes:
        return _pack(
            self.flags, self.gso_type, self.hdr_len, self.gso_size, self.csum_start, self.csum_offset
        )


#: The decoded form of NO_OFFLOAD_HEADER, shared so plain packets decode without allocating.
NO_OFFLOAD = VnetHeader()
#: Decoded headers by their fields, so the receive path builds no object per packet: the kernel sends a
#: handful of shapes (plain, NEEDS_CSUM or DATA_VALID, GSO at one or two sizes and header lengths).
#: Bounded so a stream of odd headers cannot grow it; 256 is far beyond the shapes of real traffic.
_DECODED: dict[tuple[int, ...], VnetHeader] = {tuple(_HEADER.unpack(NO_OFFLOAD_HEADER)): NO_OFFLOAD}
_DECODED_MAX = 256


def _pack(flags: int, gso_type: int, hdr_len: int, gso_size: int, csum_start: int, csum_offset: int) -> bytes:
    try:
        return _HEADER.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)
    except struct.error as exc:
        raise ValueError(f"virtio_net_hdr field out of range: {exc}") from None


def decode(buf: Buffer, offset: int = 0) -> VnetHeader:
    """The header at ``buf[offset:offset + 10]``; fewer bytes there raise MalformedPacket."""
    if offset < 0:
        raise MalformedPacket("negative virtio_net_hdr offset")
    try:
        fields = _unpack_from(buf, offset)
    except struct.error:
        raise MalformedPacket("packet shorter than its 10-byte virtio_net_hdr") from None
    header = _DECODED.get(fields)
    if header is None:
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
            _DECODED[tuple(_HEADER.unpack(NO_OFFLOAD_HEADER))] = NO_OFFLOAD
        header = _DECODED[fields] = VnetHeader(*fields)
    return header


def encode_into(
    buf: Buffer,
    offset: int,
    flags: int = 0,
    gso_type: int = GSO_NONE,
    hdr_len: int = 0,
    gso_size: int = 0,
    csum_start: int = 0,
    csum_offset: int = 0,
) -> int:
    """Write a header at ``buf[offset:]`` and return its size (10)."""
    view = memoryview(buf).cast("B")
    if offset < 0 or len(view) - offset < HEADER_SIZE:
        raise ValueError(f"no room for a {HEADER_SIZE}-byte virtio_net_hdr at offset {offset}")
    view[offset : offset + HEADER_SIZE] = _pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)
    return HEADER_SIZE


# One entry per (IP header length, TCP header length, MSS) in use: a connection sends a handful of
# TCP option layouts (timestamps on or off, 0-4 SACK blocks) at one or two MSS values, so 64 entries
# cover many connections while bounding the cache.
@lru_cache(maxsize=64)
def gso_tcpv4_header(ip_header_len: int, tcp_header_len: int, mss: int) -> bytes:
    """The header for a TCP/IPv4 packet we send whose TCP checksum field holds the pseudo-header sum.

    ``mss > 0``: a super-packet (up to 64 KB) the kernel cuts into segments of ``mss`` payload bytes,
    each carrying a copy of the IP and TCP headers (so ``mss`` excludes the option bytes).
    ``mss == 0``: a packet within the MTU that only needs its checksum completed.
    The result is cached: the hot path reuses one bytes object per shape.
    """
    for length, minimum in ((ip_header_len, IPV4_HEADER_MIN), (tcp_header_len, TCP_HEADER_MIN)):
        if not minimum <= length <= _HEADER_MAX or length % 4:
            raise ValueError(f"header length {length} is not a multiple of 4 in {minimum}..{_HEADER_MAX}")
    if not 0 <= mss <= 0xFFFF:
        raise ValueError(f"mss {mss} out of range 0..65535")
    return _pack(
        VIRTIO_NET_HDR_F_NEEDS_CSUM,
        GSO_TCPV4 if mss else GSO_NONE,
        ip_header_len + tcp_header_len,
        mss,
        ip_header_len,
        _TCP_CHECKSUM_OFFSET,
    )
