cdef class RTTEstimator:
    cdef public object backoff_count
    cdef public object granularity
    cdef public object rto
    cdef public object rto_initial
    cdef public object rto_max
    cdef public object rto_min
    cdef public object rttvar
    cdef public object srtt
    cpdef sample(self, double rtt)
