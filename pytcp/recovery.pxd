cdef class Recovery:
    cdef public object dupacks
    cdef public object force_rtx
    cdef public object inflation
    cdef public object partial_seen
    cdef public object phase
    cdef public object recover
    cdef public object sack
