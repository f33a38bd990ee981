cimport cython
# Aliased: the .py imports the Python names for its annotations.
from tcpcore._wire_c cimport IPv4Header as CIPv4Header, TCPSegment as CSegment

from pytcp.connection cimport Connection

cdef class Stack:
    # As the source's plain class: instances take weak references and new attributes.
    cdef object __weakref__
    cdef dict __dict__
    cdef readonly object _address
    cdef public object config
    cdef public object mib
    cdef public object _isn
    cdef public object _ports
    cdef public object _cookies
    cdef public object _tracer
    cdef public object _limiter
    cdef public dict _conns
    cdef public dict _listeners
    cdef public dict _parents
    cdef public object _intercept
    cdef public object _events
    cdef public object _pending
    cdef public dict _dirty
    cdef public list _heap
    cdef public dict _armed
    cdef public object _heap_seq
    cdef public double _now
    @cython.locals(conn=Connection)
    cpdef datagrams_to_send(self, double now)
    @cython.locals(conn=Connection)
    cpdef get_timer(self)
    @cython.locals(conn=Connection)
    cpdef handle_timer(self, double now)
    cpdef next_event(self)
    cpdef _sync_timer(self, Connection conn)
    @cython.locals(ip=CIPv4Header, seg=CSegment, conn=Connection)
    cpdef _input_packet(self, packet, double now, bint checksum_verified)
    cpdef _deliver(self, Connection conn, key, CSegment seg, double now)
