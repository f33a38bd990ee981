cdef class StateMachine:
    cdef readonly object state
    cdef readonly object _tracer
    cdef object _name
    cdef readonly bint _debug
    cpdef apply(self, event, double now, str note=*)
