# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Internet checksum (RFC 1071) with pseudo-headers and incremental update (RFC 1624): compiled."""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from tcpcore._csum cimport tc_fold, tc_ones_sum, tc_pseudo_v4

__all__ = [
    "checksum_update16",
    "checksum_update32",
    "internet_checksum",
    "ones_sum",
    "pseudo_header_sum",
    "transport_checksum",
]


# Releasing the GIL costs more than summing a segment; only buffers beyond this size do it.
DEF NOGIL_THRESHOLD = 65536


cdef inline uint16_t _sum_view(Py_buffer *view, uint32_t initial) noexcept:
    cdef uint16_t result
    if view.len < NOGIL_THRESHOLD:
        return tc_ones_sum(<const uint8_t *>view.buf, <size_t>view.len, initial)
    with nogil:
        result = tc_ones_sum(<const uint8_t *>view.buf, <size_t>view.len, initial)
    return result


cdef uint16_t _sum_object(object data, uint32_t initial) except? 0xFFFF:
    cdef Py_buffer view
    cdef uint16_t result
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    result = _sum_view(&view, initial)
    PyBuffer_Release(&view)
    return result


cpdef int ones_sum(object data, uint32_t initial=0) except -1:
    """Folded 16-bit one's-complement sum of ``data`` (big-endian words) plus ``initial``."""
    return tc_fold(<uint64_t>_sum_object(data, 0) + initial)


cpdef int internet_checksum(object data, uint32_t initial=0) except -1:
    """RFC 1071 checksum: the complement of ``ones_sum``; 0 over data whose checksum is valid."""
    return (~tc_fold(<uint64_t>_sum_object(data, 0) + initial)) & 0xFFFF


cdef uint32_t _address_sum(object address) except? 0xFFFFFFFF:
    cdef Py_buffer view
    cdef uint32_t result
    if isinstance(address, int):
        if not 0 <= address <= 0xFFFFFFFF:
            raise ValueError("IPv4 address out of range")
        return (<uint32_t>address >> 16) + (<uint32_t>address & 0xFFFF)
    PyObject_GetBuffer(address, &view, PyBUF_SIMPLE)
    try:
        if view.len != 4 and view.len != 16:
            raise ValueError("address must be 4 or 16 bytes")
        result = tc_ones_sum(<const uint8_t *>view.buf, <size_t>view.len, 0)
    finally:
        PyBuffer_Release(&view)
    return result


cpdef int pseudo_header_sum(object src, object dst, uint32_t protocol, uint32_t length) except -1:
    """Folded sum of the IPv4 (RFC 9293 3.1) or IPv6 (RFC 8200 8.1) pseudo-header."""
    cdef uint64_t total = <uint64_t>_address_sum(src) + _address_sum(dst) + protocol
    return tc_fold(total + (length >> 16) + (length & 0xFFFF))


cpdef int transport_checksum(object src, object dst, uint32_t protocol, object segment) except -1:
    """Checksum of a TCP/UDP segment including its pseudo-header (0 if the segment verifies)."""
    cdef Py_buffer view
    cdef uint16_t result
    cdef uint32_t pseudo
    PyObject_GetBuffer(segment, &view, PyBUF_SIMPLE)
    try:
        pseudo = pseudo_header_sum(src, dst, protocol, <uint32_t>view.len)
        result = _sum_view(&view, pseudo)
    finally:
        PyBuffer_Release(&view)
    return (~result) & 0xFFFF


cpdef int checksum_update16(uint32_t checksum, uint32_t old, uint32_t new) except -1:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') after a 16-bit field changes from old to new."""
    cdef uint64_t total = (~checksum & 0xFFFF) + (~old & 0xFFFF) + (new & 0xFFFF)
    return (~tc_fold(total)) & 0xFFFF


cpdef int checksum_update32(uint32_t checksum, uint32_t old, uint32_t new) except -1:
    """RFC 1624 for a 32-bit field (an address or sequence number): two 16-bit updates in one sum."""
    cdef uint32_t inv = ~old
    cdef uint64_t total = (~checksum & 0xFFFF) + (inv >> 16) + (inv & 0xFFFF) + (new >> 16) + (new & 0xFFFF)
    return (~tc_fold(total)) & 0xFFFF
