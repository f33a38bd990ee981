# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""32-bit TCP sequence arithmetic (RFC 9293 section 3.4): compiled."""

from libc.stdint cimport int32_t, int64_t, uint32_t

from tcpcore._seqarith cimport seq_sub

__all__ = ["seq_add", "seq_diff", "seq_ge", "seq_gt", "seq_in_window", "seq_le", "seq_lt", "seq_max", "seq_min"]


cpdef uint32_t seq_add(uint32_t a, int64_t n):
    """a + n modulo 2**32 (n may be negative)."""
    return <uint32_t>(a + <uint32_t>n)


cpdef int32_t seq_diff(uint32_t a, uint32_t b):
    """Signed distance a - b in [-2**31, 2**31)."""
    return seq_sub(a, b)


cpdef bint seq_lt(uint32_t a, uint32_t b):
    return seq_sub(a, b) < 0


cpdef bint seq_le(uint32_t a, uint32_t b):
    return seq_sub(a, b) <= 0


cpdef bint seq_gt(uint32_t a, uint32_t b):
    return seq_sub(a, b) > 0


cpdef bint seq_ge(uint32_t a, uint32_t b):
    return seq_sub(a, b) >= 0


cpdef uint32_t seq_max(uint32_t a, uint32_t b):
    return b if seq_sub(a, b) < 0 else a


cpdef uint32_t seq_min(uint32_t a, uint32_t b):
    return a if seq_sub(a, b) <= 0 else b


cpdef bint seq_in_window(uint32_t x, uint32_t start, int64_t size):
    """start <= x < start + size, modulo 2**32 (False for size 0)."""
    return <int64_t>(<uint32_t>(x - start)) < size
