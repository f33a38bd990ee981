# C-level checksum core shared by every compiled module (see _csum.h).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "_csum.h" nogil:
    uint16_t tc_fold(uint64_t s)
    uint16_t tc_ones_sum(const uint8_t *p, size_t n, uint32_t initial)
    uint16_t tc_pseudo_v4(uint32_t src, uint32_t dst, uint32_t proto, uint32_t length)
