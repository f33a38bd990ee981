cdef class Socket:
    # As the source's plain class: instances take weak references and new attributes.
    cdef object __weakref__
    cdef dict __dict__
    cdef public object _runtime
    cdef public object _conn
    cdef public object _listener
    cdef public object _port
    cdef public bint _wildcard
    cdef public bint _reported
    cdef public dict _options
    cdef public tuple _linger
    cdef public object _timeout
    cdef public bint _closed
    cpdef _check_open(self)
    cpdef _attempt(self, attempt, tuple args)
    cpdef _read(self, read, arg, empty)
    cpdef _send_now(self, view)
    cpdef _send_rest(self, list rest)
    cpdef _send_some(self, view)
