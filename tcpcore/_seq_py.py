"""32-bit TCP sequence arithmetic (RFC 9293 section 3.4): the twin.

Sequence numbers are plain ints in [0, 2**32); every comparison goes through the signed
wrapping distance, so it is correct across the wrap as long as the two numbers are within
2**31 of each other (which RFC 9293's window limits guarantee).
"""

from __future__ import annotations

__all__ = [
    "seq_add",
    "seq_diff",
    "seq_ge",
    "seq_gt",
    "seq_in_window",
    "seq_le",
    "seq_lt",
    "seq_max",
    "seq_min",
]

_MASK = 0xFFFFFFFF


def seq_add(a: int, n: int) -> int:
    """a + n modulo 2**32 (n may be negative)."""
    return (a + n) & _MASK


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b in [-2**31, 2**31)."""
    d = (a - b) & _MASK
    return d - 0x100000000 if d & 0x80000000 else d


def seq_lt(a: int, b: int) -> bool:
    return seq_diff(a, b) < 0


def seq_le(a: int, b: int) -> bool:
    return seq_diff(a, b) <= 0


def seq_gt(a: int, b: int) -> bool:
    return seq_diff(a, b) > 0


def seq_ge(a: int, b: int) -> bool:
    return seq_diff(a, b) >= 0


def seq_max(a: int, b: int) -> int:
    return b if seq_diff(a, b) < 0 else a


def seq_min(a: int, b: int) -> int:
    return a if seq_diff(a, b) <= 0 else b


def seq_in_window(x: int, start: int, size: int) -> bool:
    """start <= x < start + size, modulo 2**32 (False for size 0)."""
    return 0 <= ((x - start) & _MASK) < size
