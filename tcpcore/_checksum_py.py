"""Internet checksum (RFC 1071) with pseudo-headers and incremental update (RFC 1624): the twin."""

from __future__ import annotations

from ._types import Buffer

__all__ = [
    "checksum_update16",
    "checksum_update32",
    "internet_checksum",
    "ones_sum",
    "pseudo_header_sum",
    "transport_checksum",
]


def _fold(total: int) -> int:
    """End-around carry until 16 bits remain: 0x10000 folds to 0x0001, never to 0x0000."""
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ones_sum(data: Buffer, initial: int = 0) -> int:
    """Folded 16-bit one's-complement sum of ``data`` (big-endian words) plus ``initial``."""
    view = memoryview(data).cast("B")
    n = len(view)
    # int.from_bytes sums all words at once: the value mod 0xFFFF is the one's-complement sum
    # (2^16 = 1 mod 0xFFFF), so one big-integer reduction replaces a per-word loop.
    total = int.from_bytes(view[: n - (n & 1)], "big")
    if n & 1:
        total += view[n - 1] << 8
    folded = _fold(total % 0xFFFF if total else 0)
    # x mod 0xFFFF maps a non-zero sum that is a multiple of 0xFFFF to 0; one's complement keeps 0xFFFF.
    if folded == 0 and total:
        folded = 0xFFFF
    return _fold(folded + initial)


def internet_checksum(data: Buffer, initial: int = 0) -> int:
    """RFC 1071 checksum: the complement of ``ones_sum``; 0 over data whose checksum is valid."""
    return ~ones_sum(data, initial) & 0xFFFF


def _address_sum(address: int | Buffer) -> int:
    if isinstance(address, int):
        if not 0 <= address <= 0xFFFFFFFF:
            raise ValueError("IPv4 address out of range")
        return (address >> 16) + (address & 0xFFFF)
    raw = memoryview(address).cast("B")
    if len(raw) not in (4, 16):
        raise ValueError("address must be 4 or 16 bytes")
    return ones_sum(raw)


def pseudo_header_sum(src: int | Buffer, dst: int | Buffer, protocol: int, length: int) -> int:
    """Folded sum of the IPv4 (RFC 9293 3.1) or IPv6 (RFC 8200 8.1) pseudo-header.

    Addresses are IPv4 integers or 4/16-byte buffers; 16-byte addresses make it the IPv6 form,
    where the upper-layer length is 32 bits.
    """
    return _fold(_address_sum(src) + _address_sum(dst) + protocol + (length >> 16) + (length & 0xFFFF))


def transport_checksum(src: int | Buffer, dst: int | Buffer, protocol: int, segment: Buffer) -> int:
    """Checksum of a TCP/UDP segment including its pseudo-header (0 if the segment verifies)."""
    view = memoryview(segment).cast("B")
    return internet_checksum(view, pseudo_header_sum(src, dst, protocol, len(view)))


def checksum_update16(checksum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') after a 16-bit field changes from old to new."""
    return ~_fold((~checksum & 0xFFFF) + (~old & 0xFFFF) + (new & 0xFFFF)) & 0xFFFF


def checksum_update32(checksum: int, old: int, new: int) -> int:
    """RFC 1624 for a 32-bit field (an address or sequence number): two 16-bit updates in one sum."""
    total = (~checksum & 0xFFFF) + (~old >> 16 & 0xFFFF) + (~old & 0xFFFF) + (new >> 16) + (new & 0xFFFF)
    return ~_fold(total) & 0xFFFF
