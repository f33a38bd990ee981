"""TCP receive buffer with out-of-order reassembly (RFC 9293 3.10.7.4, "seventh"): the twin.

A fixed-capacity ring holds the bytes received in order but not yet read, followed by the
out-of-order ranges beyond RCV.NXT. The receive window is whatever the ring has left after the
unread bytes, so flow control follows from the application's reads.

Out-of-order ranges are [start, end, stamp] offsets relative to RCV.NXT. Invariant (as smoltcp's
Assembler): 0 < r0.start < r0.end < r1.start < r1.end < ... <= window, i.e. the ranges are sorted,
disjoint and non-adjacent (adjacent ones are merged), never touch RCV.NXT (a range that reaches it
becomes readable at once) and lie inside the window. ``stamp`` orders the ranges by the most recent
segment that landed in them, for the SACK option.
"""

from __future__ import annotations

import operator

from ._seq_py import seq_add, seq_diff
from ._types import Buffer, byte_view
from .errors import TooManyHoles

__all__ = ["Reassembler"]

_MASK = 0xFFFFFFFF
# SACK (RFC 2018) reports 3-4 blocks per ACK, Linux bounds its out-of-order queue by memory rather
# than count and smoltcp keeps 4 ranges. 32 ranges keeps every operation a short linear scan while
# tolerating reordering far heavier than SACK can even describe.
DEFAULT_MAX_RANGES = 32
# Each write scans the ranges linearly, so this caps the worst-case cost per segment at a few
# thousand steps: 128 times the default, beyond any reordering worth buffering.
MAX_RANGES_LIMIT = 4096
# RFC 7323 2.3: with window scaling the window is below 2**30, which also keeps every offset in the
# buffer far inside the 2**31 that wrapping sequence comparisons allow.
MAX_CAPACITY = 1 << 30
# RFC 2018 section 3: 40 option bytes hold 2 + 8 * 4 bytes of SACK blocks (3 with timestamps).
DEFAULT_SACK_BLOCKS = 4


def checked_config(rcv_nxt: int, capacity: int, max_ranges: int) -> tuple[int, int, int]:
    """Validated constructor arguments (shared by the compiled class so both reject the same input)."""
    rcv_nxt = operator.index(rcv_nxt)
    capacity = operator.index(capacity)
    max_ranges = operator.index(max_ranges)
    if not 0 <= rcv_nxt <= _MASK:
        raise ValueError(f"rcv_nxt {rcv_nxt} is not a 32-bit sequence number")
    if not 0 < capacity <= MAX_CAPACITY:
        raise ValueError(f"capacity {capacity} outside 1..{MAX_CAPACITY}")
    if not 0 <= max_ranges <= MAX_RANGES_LIMIT:
        raise ValueError(f"max_ranges {max_ranges} outside 0..{MAX_RANGES_LIMIT}")
    return rcv_nxt, capacity, max_ranges


class Reassembler:
    """Receive buffer of one connection: in-order bytes awaiting read() plus out-of-order ranges."""

    __slots__ = ("_buf", "_capacity", "_counter", "_head", "_max_ranges", "_nxt", "_ranges", "_readable")

    def __init__(self, rcv_nxt: int, capacity: int, max_ranges: int = DEFAULT_MAX_RANGES) -> None:
        self._nxt, self._capacity, self._max_ranges = checked_config(rcv_nxt, capacity, max_ranges)
        self._buf = memoryview(bytearray(self._capacity))
        self._head = 0  # ring index of the first unread byte
        self._readable = 0
        self._ranges: list[list[int]] = []
        self._counter = 0  # last recency stamp handed out

    @property
    def rcv_nxt(self) -> int:
        return self._nxt

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def readable(self) -> int:
        return self._readable

    @property
    def window(self) -> int:
        return self._capacity - self._readable

    @property
    def ooo_bytes(self) -> int:
        return sum(r[1] - r[0] for r in self._ranges)

    @property
    def range_count(self) -> int:
        return len(self._ranges)

    @property
    def max_ranges(self) -> int:
        return self._max_ranges

    def __repr__(self) -> str:
        return (
            f"Reassembler(rcv_nxt={self._nxt}, readable={self._readable}, window={self.window}, "
            f"ranges={self.ranges()})"
        )

    def _store(self, off: int, src: memoryview) -> None:
        """Copy src to the ring at offset off from RCV.NXT (at most two pieces around the ring end)."""
        buf = self._buf
        pos = (self._head + self._readable + off) % self._capacity
        first = self._capacity - pos
        n = len(src)
        if n <= first:
            buf[pos : pos + n] = src
        else:
            buf[pos:] = src[:first]
            buf[: n - first] = src[first:]

    def write(self, seq: int, data: Buffer) -> int:
        """Store a segment's text at sequence number seq; returns how far RCV.NXT advanced."""
        if not 0 <= seq <= _MASK:
            raise OverflowError(f"seq {seq} is not a 32-bit sequence number")
        src = byte_view(data)
        n = len(src)
        off = seq_diff(seq, self._nxt)
        window = self._capacity - self._readable
        if off < 0:
            # RFC 9293 3.10.7.4: bytes before RCV.NXT were received already; trim them off.
            if n <= -off:
                return 0
            src = src[-off:]
            n += off
            off = 0
        if off >= window:
            # RFC 9293 3.10.7.4: only text inside the receive window is accepted.
            return 0
        end = min(off + n, window)
        if end == off:
            return 0
        ranges = self._ranges
        count = len(ranges)
        lo = 0
        while lo < count and ranges[lo][1] < off:
            lo += 1
        hi = lo
        while hi < count and ranges[hi][0] <= end:
            hi += 1
        # Only data that touches no held range and not RCV.NXT needs a new range; text at RCV.NXT
        # is never refused, whatever the range count, so the connection always makes progress.
        if lo == hi and off > 0 and count >= self._max_ranges:
            raise TooManyHoles(f"segment needs out-of-order range {count + 1} of {self._max_ranges}")
        # Fill only the gaps: bytes already held stay (RFC 9293 3.10.7.4 lets either copy win).
        pos = off  # never decreases: ranges[lo] ends at or after off and the ranges are sorted
        for i in range(lo, hi):
            start = ranges[i][0]
            if start > pos:
                self._store(pos, src[pos - off : start - off])
            pos = ranges[i][1]
        if end > pos:
            self._store(pos, src[pos - off : end - off])
        if lo < hi:
            off = min(off, ranges[lo][0])
            end = max(end, ranges[hi - 1][1])
        if off == 0:
            # The segment reached RCV.NXT: it and every range it joined become readable.
            del ranges[:hi]
            for r in ranges:
                r[0] -= end
                r[1] -= end
            self._readable += end
            self._nxt = seq_add(self._nxt, end)
            return end
        self._counter += 1
        ranges[lo:hi] = [[off, end, self._counter]]
        return 0

    def grow(self, capacity: int) -> None:
        """Enlarge the ring to ``capacity`` bytes (receive-buffer autotuning); the window grows by the
        difference. Unread bytes and out-of-order ranges keep their offsets from RCV.NXT; only the span
        they occupy is copied. A ring never shrinks: a smaller capacity raises ValueError."""
        capacity = operator.index(capacity)
        if not self._capacity <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity {capacity} outside {self._capacity}..{MAX_CAPACITY}")
        if capacity == self._capacity:
            return
        used = self._readable + (self._ranges[-1][1] if self._ranges else 0)
        buf = memoryview(bytearray(capacity))
        self._copy_out(buf[:used])
        self._buf = buf
        self._head = 0
        self._capacity = capacity

    def _take(self, max_bytes: int) -> int:
        return self._readable if max_bytes < 0 else min(max_bytes, self._readable)

    def _copy_out(self, dst: memoryview) -> None:
        """Copy the first len(dst) unread bytes into dst, without consuming them."""
        n = len(dst)
        head = self._head
        first = self._capacity - head
        if n <= first:
            dst[:] = self._buf[head : head + n]
        else:
            dst[:first] = self._buf[head:]
            dst[first:] = self._buf[: n - first]

    def _consume(self, n: int) -> None:
        self._head = (self._head + n) % self._capacity
        self._readable -= n

    def peek(self, max_bytes: int = -1) -> bytes:
        """Up to max_bytes readable bytes (all if negative) without consuming them."""
        out = bytearray(self._take(max_bytes))
        self._copy_out(memoryview(out))
        return bytes(out)

    def read(self, max_bytes: int = -1) -> bytes:
        """Pop up to max_bytes readable bytes (all if negative); the window grows by as many."""
        data = self.peek(max_bytes)
        self._consume(len(data))
        return data

    def read_into(self, buffer: Buffer) -> int:
        """Pop readable bytes into a writable buffer; returns how many were copied."""
        dst = byte_view(buffer, writable=True)
        n = min(len(dst), self._readable)
        self._copy_out(dst[:n])
        self._consume(n)
        return n

    def sack_blocks(self, max_blocks: int = DEFAULT_SACK_BLOCKS) -> list[tuple[int, int]]:
        """Out-of-order ranges as (left, right) edges, most recently extended first (RFC 2018 4)."""
        if max_blocks < 0:
            raise ValueError("max_blocks must not be negative")
        recent = sorted(self._ranges, key=lambda r: r[2], reverse=True)[:max_blocks]
        nxt = self._nxt
        return [(seq_add(nxt, r[0]), seq_add(nxt, r[1])) for r in recent]

    def ranges(self) -> list[tuple[int, int]]:
        """Out-of-order ranges as (left, right) sequence numbers, in sequence order."""
        nxt = self._nxt
        return [(seq_add(nxt, r[0]), seq_add(nxt, r[1])) for r in self._ranges]
