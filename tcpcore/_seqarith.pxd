# C-level 32-bit sequence arithmetic (RFC 9293 section 3.4), cimported by compiled modules.
# Comparisons go through the signed wrapping difference only (as smoltcp's TcpSeqNumber does).
from libc.stdint cimport int32_t, uint32_t


cdef inline int32_t seq_sub(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b)


cdef inline bint seq_lt_c(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) < 0


cdef inline bint seq_le_c(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) <= 0
