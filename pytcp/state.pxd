cdef class StateMachine:
    cdef readonly object state
    cdef readonly object _tracer
    cdef public object name
