# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""TCP receive buffer with out-of-order reassembly (RFC 9293 3.10.7.4, "seventh"): compiled.

Same algorithm as the twin (tcpcore/_reassembly_py.py, which also derives the bounds): a malloc'ed
ring of ``capacity`` bytes holds the unread in-order bytes followed by the out-of-order ranges.

Ranges are a C array of offsets relative to RCV.NXT. Invariant (as smoltcp's Assembler):
0 < r[0].start < r[0].end < r[1].start < ... < r[count-1].end <= window: sorted, disjoint,
non-adjacent (adjacent ones are merged), never touching RCV.NXT (a range that reaches it becomes
readable at once) and inside the window. ``stamp`` orders ranges by their most recent segment.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memmove

from tcpcore._seqarith cimport seq_sub

from tcpcore._reassembly_py import DEFAULT_MAX_RANGES, DEFAULT_SACK_BLOCKS, MAX_CAPACITY, checked_config
from tcpcore.errors import TooManyHoles

__all__ = ["Reassembler"]


ctypedef struct _Range:
    Py_ssize_t start
    Py_ssize_t end
    uint64_t stamp


cdef class Reassembler:
    """Receive buffer of one connection: in-order bytes awaiting read() plus out-of-order ranges."""

    cdef uint8_t *_buf
    cdef _Range *_ranges
    cdef Py_ssize_t _capacity
    cdef Py_ssize_t _head  # ring index of the first unread byte
    cdef Py_ssize_t _readable
    cdef Py_ssize_t _count
    cdef Py_ssize_t _max_ranges
    cdef uint64_t _counter  # last recency stamp handed out
    cdef uint32_t _nxt

    def __cinit__(self, rcv_nxt, capacity, max_ranges=DEFAULT_MAX_RANGES):
        self._buf = NULL
        self._ranges = NULL
        self._nxt, self._capacity, self._max_ranges = checked_config(rcv_nxt, capacity, max_ranges)
        self._buf = <uint8_t *>malloc(<size_t>self._capacity)
        # One slot even for max_ranges == 0, so the pointer is never a malloc(0) NULL.
        self._ranges = <_Range *>malloc(<size_t>(self._max_ranges + 1) * sizeof(_Range))
        if self._buf == NULL or self._ranges == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self._buf)
        free(self._ranges)

    @property
    def rcv_nxt(self):
        return self._nxt

    @property
    def capacity(self):
        return self._capacity

    @property
    def readable(self):
        return self._readable

    @property
    def window(self):
        return self._capacity - self._readable

    @property
    def ooo_bytes(self):
        cdef Py_ssize_t i, total = 0
        for i in range(self._count):
            total += self._ranges[i].end - self._ranges[i].start
        return total

    @property
    def range_count(self):
        return self._count

    @property
    def max_ranges(self):
        return self._max_ranges

    def __repr__(self):
        return (
            f"Reassembler(rcv_nxt={self._nxt}, readable={self._readable}, window={self.window}, "
            f"ranges={self.ranges()})"
        )

    cdef inline void _store(self, Py_ssize_t off, const uint8_t *src, Py_ssize_t n) noexcept:
        """Copy n bytes to the ring at offset off from RCV.NXT (two pieces around the ring end)."""
        cdef Py_ssize_t pos = (self._head + self._readable + off) % self._capacity
        cdef Py_ssize_t first = self._capacity - pos
        if n <= first:
            memcpy(self._buf + pos, src, <size_t>n)
        else:
            memcpy(self._buf + pos, src, <size_t>first)
            memcpy(self._buf, src + first, <size_t>(n - first))

    cdef Py_ssize_t _write(self, uint32_t seq, const uint8_t *src, Py_ssize_t n) except -1:
        cdef Py_ssize_t off = seq_sub(seq, self._nxt)
        cdef Py_ssize_t window = self._capacity - self._readable
        cdef Py_ssize_t end, pos, lo, hi, i
        cdef _Range *ranges = self._ranges
        cdef Py_ssize_t count = self._count
        if off < 0:
            # RFC 9293 3.10.7.4: bytes before RCV.NXT were received already; trim them off.
            if n <= -off:
                return 0
            src -= off
            n += off
            off = 0
        if off >= window:
            # RFC 9293 3.10.7.4: only text inside the receive window is accepted.
            return 0
        end = off + n if n < window - off else window
        if end == off:
            return 0
        lo = 0
        while lo < count and ranges[lo].end < off:
            lo += 1
        hi = lo
        while hi < count and ranges[hi].start <= end:
            hi += 1
        # Only data that touches no held range and not RCV.NXT needs a new range; text at RCV.NXT
        # is never refused, whatever the range count, so the connection always makes progress.
        if lo == hi and off > 0 and count >= self._max_ranges:
            raise TooManyHoles(f"segment needs out-of-order range {count + 1} of {self._max_ranges}")
        # Fill only the gaps: bytes already held stay (RFC 9293 3.10.7.4 lets either copy win).
        pos = off  # never decreases: ranges[lo] ends at or after off and the ranges are sorted
        for i in range(lo, hi):
            if ranges[i].start > pos:
                self._store(pos, src + (pos - off), ranges[i].start - pos)
            pos = ranges[i].end
        if end > pos:
            self._store(pos, src + (pos - off), end - pos)
        if lo < hi:
            if ranges[lo].start < off:
                off = ranges[lo].start
            if ranges[hi - 1].end > end:
                end = ranges[hi - 1].end
        if off == 0:
            # The segment reached RCV.NXT: it and every range it joined (lo == 0) become readable.
            self._count = count - hi
            memmove(ranges, ranges + hi, <size_t>self._count * sizeof(_Range))
            for i in range(self._count):
                ranges[i].start -= end
                ranges[i].end -= end
            self._readable += end
            self._nxt = <uint32_t>(self._nxt + <uint32_t>end)
            return end
        # Replace ranges[lo:hi] with the merged range (hi == lo inserts one: the slot exists).
        if hi != lo + 1:
            memmove(ranges + lo + 1, ranges + hi, <size_t>(count - hi) * sizeof(_Range))
            self._count = count - (hi - lo) + 1
        self._counter += 1
        ranges[lo].start = off
        ranges[lo].end = end
        ranges[lo].stamp = self._counter
        return 0

    def write(self, uint32_t seq, object data):
        """Store a segment's text at sequence number seq; returns how far RCV.NXT advanced."""
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return self._write(seq, <const uint8_t *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def grow(self, Py_ssize_t capacity):
        """Enlarge the ring to ``capacity`` bytes (receive-buffer autotuning); the window grows by the
        difference. Unread bytes and out-of-order ranges keep their offsets from RCV.NXT; only the span
        they occupy is copied. A ring never shrinks: a smaller capacity raises ValueError."""
        cdef Py_ssize_t used
        cdef uint8_t *buf
        if not self._capacity <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity {capacity} outside {self._capacity}..{MAX_CAPACITY}")
        if capacity == self._capacity:
            return
        buf = <uint8_t *>malloc(<size_t>capacity)
        if buf == NULL:
            raise MemoryError()
        used = self._readable + (self._ranges[self._count - 1].end if self._count else 0)
        self._copy_out(buf, used)
        free(self._buf)
        self._buf = buf
        self._head = 0
        self._capacity = capacity

    cdef inline Py_ssize_t _take(self, Py_ssize_t max_bytes) noexcept:
        return self._readable if max_bytes < 0 or max_bytes > self._readable else max_bytes

    cdef void _copy_out(self, uint8_t *dst, Py_ssize_t n) noexcept:
        """Copy the first n unread bytes to dst, without consuming them."""
        cdef Py_ssize_t first = self._capacity - self._head
        if n <= first:
            memcpy(dst, self._buf + self._head, <size_t>n)
        else:
            memcpy(dst, self._buf + self._head, <size_t>first)
            memcpy(dst + first, self._buf, <size_t>(n - first))

    cdef inline void _consume(self, Py_ssize_t n) noexcept:
        self._head = (self._head + n) % self._capacity
        self._readable -= n

    cdef bytes _peek(self, Py_ssize_t n):
        cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
        self._copy_out(<uint8_t *>PyBytes_AS_STRING(out), n)
        return out

    def peek(self, Py_ssize_t max_bytes=-1):
        """Up to max_bytes readable bytes (all if negative) without consuming them."""
        return self._peek(self._take(max_bytes))

    def read(self, Py_ssize_t max_bytes=-1):
        """Pop up to max_bytes readable bytes (all if negative); the window grows by as many."""
        cdef Py_ssize_t n = self._take(max_bytes)
        cdef bytes out = self._peek(n)
        self._consume(n)
        return out

    def read_into(self, object buffer):
        """Pop readable bytes into a writable buffer; returns how many were copied."""
        cdef Py_buffer view
        cdef Py_ssize_t n
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            n = self._take(view.len)
            self._copy_out(<uint8_t *>view.buf, n)
        finally:
            PyBuffer_Release(&view)
        self._consume(n)
        return n

    def sack_blocks(self, Py_ssize_t max_blocks=DEFAULT_SACK_BLOCKS):
        """Out-of-order ranges as (left, right) edges, most recently extended first (RFC 2018 4)."""
        cdef list out = []
        cdef uint64_t below = <uint64_t>-1  # stamps are unique: pick the largest below the last pick
        cdef uint64_t stamp
        cdef Py_ssize_t i, best
        if max_blocks < 0:
            raise ValueError("max_blocks must not be negative")
        while len(out) < max_blocks:
            best = -1
            for i in range(self._count):
                stamp = self._ranges[i].stamp
                if stamp < below and (best < 0 or stamp > self._ranges[best].stamp):
                    best = i
            if best < 0:
                break
            below = self._ranges[best].stamp
            out.append(self._edges(best))
        return out

    cdef tuple _edges(self, Py_ssize_t i):
        return (
            <uint32_t>(self._nxt + <uint32_t>self._ranges[i].start),
            <uint32_t>(self._nxt + <uint32_t>self._ranges[i].end),
        )

    def ranges(self):
        """Out-of-order ranges as (left, right) sequence numbers, in sequence order."""
        return [self._edges(i) for i in range(self._count)]
