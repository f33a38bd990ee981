cdef class Segment:
    cdef public object end
    cdef public object ever_retrans
    cdef public object fin
    cdef public object lost
    cdef public object piece
    cdef public object retrans
    cdef public object sacked
    cdef public object sent_at
    cdef public object start

cdef class Sender:
    cdef public object autotune
    cdef public object buf
    cdef public object capacity
    cdef public object end
    cdef public object fin_queued
    cdef public object high_rxt
    cdef public object high_sacked
    cdef public object lost_bytes
    cdef public object nxt
    cdef public object retrans_bytes
    cdef public object sacked_bytes
    cdef public object segs
    cdef public object sml_end
    cdef public object una
    cpdef write(self, data)
    cpdef payload(self, start, end)
    cpdef next_new(self, mss, wnd_end, cwnd_space, nodelay, max_wnd, force=*, size_goal=*)
    cpdef add_segment(self, length, fin, double now, mss)
    cpdef ack(self, ack)
