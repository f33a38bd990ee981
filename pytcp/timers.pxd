cdef class Timers:
    cdef public object at
    cdef public object delack_at
    cdef public object kind
    cpdef arm(self, kind, double at)
    cpdef stop(self, kind=*)
    cpdef deadline(self)
