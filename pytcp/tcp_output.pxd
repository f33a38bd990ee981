from pytcp.tcb cimport TCB

cdef class OutputMixin(TCB):
    pass
    cpdef poll_transmit(self, double now, list out)
    cpdef _send_data(self, double now, list out)
    cpdef _segment_packet(self, seg, psh, double now, mss)
    cpdef _build(self, flags, seq, payload, double now, gso_size=*)
