cdef class Receiver:
    cdef public object _capacity
    cdef public object _nxt
    cdef public object _reasm
    cdef public object _space
    cdef public object _space_seq
    cdef public object _space_time
    cdef public object adv_right
    cdef public object dsack
    cdef public object fin_done
    cdef public object fin_seq
    cdef public object max_mss
    cdef public object max_ranges
    cdef public object rcv_mss
    cdef public object rtt
    cdef public object rtt_tsecr
    cdef public object unacked
    cdef public object wscale
    cpdef on_segment(self, seq, payload, fin, dsack)
    cpdef ack_decision(self, result, quickack_segments)
    cpdef _select(self)
    cpdef advertise(self)
    cpdef window_update_due(self)
    cpdef sack_count(self, max_blocks)
    cpdef sack_blocks(self, max_blocks)
    cpdef read(self, max_bytes)
    cpdef read_into(self, buffer)
    cpdef space_adjust(self, double now, double rtt, limit)
