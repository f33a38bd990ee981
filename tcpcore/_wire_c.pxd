# The parsed headers' fields as C members, for compiled modules that cimport them (pytcp's engine reads
# a segment's fields without an attribute lookup each). Python sees them as read-only attributes.
cimport cython
from libc.stdint cimport uint32_t


@cython.final
cdef class IPv4Header:
    cdef readonly int version, header_length, tos, total_length, ident, fragment_offset
    cdef readonly int ttl, protocol, checksum, payload_offset, payload_length
    cdef readonly bint dont_fragment, more_fragments, is_fragment
    cdef readonly uint32_t src, dst


@cython.final
cdef class TCPSegment:
    cdef readonly int src_port, dst_port, header_length, flags, window, checksum, urgent
    cdef readonly int mss, wscale
    cdef readonly uint32_t seq, ack, ts_val, ts_ecr
    cdef readonly bint sack_permitted, has_timestamps
    cdef readonly tuple sack_blocks
    cdef readonly Py_ssize_t payload_offset, payload_length
    cdef object _buffer
