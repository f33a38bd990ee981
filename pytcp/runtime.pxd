from pytcp.stack cimport Stack


cdef class Waiter:
    cdef readonly object _guard
    cdef readonly tuple _sleepers
    cdef public object generation
    cpdef notify(self)
    cpdef tuple take(self)


cdef class StackRuntime:
    # As the source's plain class: instances take weak references and new attributes.
    cdef object __weakref__
    cdef dict __dict__
    cdef public object _tun
    cdef public Stack _stack
    cdef public object _mtu
    cdef public object _batch
    cdef public object _pcap
    cdef public object _wake_fd
    cdef public object _wake_lock
    cdef public object _lock
    cdef public object _owner
    cdef public dict _woken
    cdef public double _sleep_until
    cdef public object _deferred_stop
    cdef public object _calls
    cdef public tuple _listeners
    cdef public list _end_callbacks
    cdef public list _poll_fds
    cdef public list _parked
    cdef public dict _readers
    cdef public dict _waiters
    cdef public object _waiter_guard
    cdef public set bound_ports
    cdef public object _counters
    cdef public double _now
    cdef public object _thread
    cdef public bint _accepting
    cdef public bint _stopping
    cdef public double _grace
    cdef public object _shutdown_deadline
    cdef public object _failure
    cdef public bint _closed
    cpdef notify(self, Waiter waiter)
    cpdef watch(self, key)
    cpdef _tend(self, double now)
    cpdef double _enter(self) except? -1
    cpdef _leave(self, bint defer=*)
    cpdef _flush(self, double now)
    cpdef _nudge(self)
    cpdef _poll_timeout(self, double now)
    cpdef _receive(self, double now)
    cpdef _run_calls(self)
    cpdef _transmit(self, double now)
    cpdef _write_offload(self, list packets)
    cpdef _dispatch(self)


cpdef int _gso_size(packet) except? -2
