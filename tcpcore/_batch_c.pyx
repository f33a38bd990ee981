# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Batch packet I/O on boundary-preserving fds (TUN, SOCK_DGRAM), and the I/O loop's wait: compiled.

The read and write loops run without the GIL and call read(2), write(2) or writev(2) directly on
preallocated memory: no Python object is created per packet.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc
from cpython.pythread cimport (
    PY_LOCK_ACQUIRED,
    PY_LOCK_INTR,
    PyLockStatus,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_release_lock,
    PyThread_type_lock,
)
from libc.errno cimport EAGAIN, EINTR, errno
from libc.string cimport strerror
from posix.uio cimport iovec, writev
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.unistd cimport read, write


cdef extern from "<errno.h>":
    # Equal to EAGAIN on Linux; POSIX allows them to differ.
    const int EWOULDBLOCK

cdef extern from "pythread.h":
    # Not in Cython's cpython/pythread.pxd. PY_TIMEOUT_T is long long; -1 waits without limit.
    PyLockStatus PyThread_acquire_lock_timed(PyThread_type_lock lock, long long microseconds,
                                             int intr_flag) nogil

cdef extern from "<poll.h>":
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout) nogil
    const short POLLIN

__all__ = ["PacketBatch", "Parker", "poll_waking", "write_packets", "write_vnet_packets"]

# The default bounds are derived once, in the twin.
from tcpcore._batch_py import DEFAULT_SLOT_SIZE, DEFAULT_SLOTS


cdef Py_ssize_t _read_loop(int fd, char *base, Py_ssize_t slot_size, Py_ssize_t *lengths,
                           Py_ssize_t n, Py_ssize_t limit, int *err) noexcept nogil:
    """Read packets into slots n..limit-1; returns the new count and leaves the stopping errno in err."""
    cdef ssize_t got
    err[0] = 0
    while n < limit:
        got = read(fd, base + n * slot_size, <size_t>slot_size)
        if got < 0:
            err[0] = errno
            break
        lengths[n] = got
        n += 1
    return n


cdef Py_ssize_t _write_loop(int fd, const iovec *iov, int parts, Py_ssize_t n, Py_ssize_t total,
                            int *err) noexcept nogil:
    """Write packets n..total-1, packet i being the ``parts`` iovecs at iov[i * parts], one system call
    each; returns how many are written and leaves the stopping errno in err."""
    cdef ssize_t put
    cdef size_t size
    cdef const iovec *packet
    cdef int k
    err[0] = 0
    while n < total:
        packet = iov + n * parts
        size = 0
        for k in range(parts):
            size += packet[k].iov_len
        # write(2) for a single buffer: writev(2) of zero bytes in all sends nothing (Linux vfs_writev
        # returns early), where write(2) sends an empty datagram.
        put = write(fd, packet.iov_base, packet.iov_len) if parts == 1 else writev(fd, packet, parts)
        if put < 0:
            err[0] = errno
            break
        if <size_t>put != size:
            break
        n += 1
    return n


cdef bint _retry(int err) except -1:
    """PEP 475, as os.read does: after EINTR run the signal handlers (which may raise), then retry."""
    if err == EINTR:
        PyErr_CheckSignals()
        return True
    return False


cdef int _raise_unless_again(int err) except -1:
    """0 (loop finished) and EAGAIN (nothing more ready) end a loop normally; any other errno raises
    OSError(errno, strerror), which picks the errno's subclass as the twin's os-level calls do."""
    if err != 0 and err != EAGAIN and err != EWOULDBLOCK:
        raise OSError(err, strerror(err).decode())
    return 0


cdef class PacketBatch:
    """Preallocated slots for the packets of one wake-up.

    Packet ``i`` lives at offset ``i * slot_size`` of ``buffer``. The views returned by ``packet``
    and ``__iter__`` are zero-copy: they stay valid only until the next ``read_from``. A packet
    longer than ``slot_size`` is truncated by the kernel to ``slot_size`` bytes.
    """

    cdef readonly Py_ssize_t count
    cdef readonly Py_ssize_t slots
    cdef readonly Py_ssize_t slot_size
    cdef readonly object buffer
    cdef bytearray _storage
    cdef char *_base
    cdef Py_ssize_t *_lengths

    def __init__(self, Py_ssize_t slots=DEFAULT_SLOTS, Py_ssize_t slot_size=DEFAULT_SLOT_SIZE):
        # __init__ rather than __cinit__ so the signature is introspectable; an instance made by
        # __new__ alone has 0 slots, which every method handles without touching memory.
        if slots < 1 or slot_size < 1:
            raise ValueError("slots and slot_size must be positive")
        # The product in Python ints: an oversized batch is a MemoryError, not a wrapped size.
        storage = bytearray(<object>slots * slot_size)
        lengths = <Py_ssize_t *>PyMem_Calloc(<size_t>slots, sizeof(Py_ssize_t))
        if lengths == NULL:
            raise MemoryError()
        PyMem_Free(self._lengths)
        self._lengths = lengths
        self._storage = storage
        # The exported view pins the bytearray: it cannot be resized under the nogil loop.
        self.buffer = memoryview(storage)
        self._base = storage
        self.slots = slots
        self.slot_size = slot_size
        self.count = 0

    def __dealloc__(self):
        PyMem_Free(self._lengths)

    def read_from(self, int fd, Py_ssize_t max_packets=-1):
        """Read one packet per ``read()`` until EAGAIN, ``max_packets`` (negative: no limit) or a
        full batch; returns the count. Any other OSError propagates with the packets read so far kept.
        """
        cdef Py_ssize_t limit = self.slots if max_packets < 0 or max_packets > self.slots else max_packets
        cdef Py_ssize_t n = 0
        cdef int err = 0
        self.count = 0
        while True:
            with nogil:
                n = _read_loop(fd, self._base, self.slot_size, self._lengths, n, limit, &err)
            self.count = n
            if not _retry(err):
                break
        _raise_unless_again(err)
        return n

    cdef int _check(self, Py_ssize_t i) except -1:
        if not 0 <= i < self.count:
            raise IndexError("packet index out of range")
        return 0

    def length(self, Py_ssize_t i):
        self._check(i)
        return self._lengths[i]

    def packet(self, Py_ssize_t i):
        """Zero-copy view of packet ``i``."""
        self._check(i)
        cdef Py_ssize_t offset = i * self.slot_size
        return self.buffer[offset : offset + self._lengths[i]]

    def __len__(self):
        return self.count

    def __iter__(self):
        cdef Py_ssize_t i
        for i in range(self.count):
            yield self.packet(i)

    def clear(self):
        self.count = 0


cdef Py_ssize_t _write_rows(int fd, tuple columns, Py_ssize_t total) except -1:
    """Write row i (``columns[k][i]`` for each column k, concatenated) as one packet, for i < total.

    Every buffer is acquired before the first write and the GIL is released once for the whole run
    (again only after EINTR). Stops at EAGAIN or a short write and returns the rows written; any other
    OSError propagates with ``packets_written`` set to the count written before it.
    """
    cdef int parts = len(columns)
    cdef Py_ssize_t count = total * parts
    cdef Py_ssize_t acquired = 0
    cdef Py_ssize_t i, k
    cdef Py_ssize_t n = 0
    cdef int err = 0
    cdef Py_buffer *views = <Py_buffer *>PyMem_Calloc(<size_t>count + 1, sizeof(Py_buffer))
    cdef iovec *iov = <iovec *>PyMem_Calloc(<size_t>count + 1, sizeof(iovec))
    if views == NULL or iov == NULL:
        PyMem_Free(views)
        PyMem_Free(iov)
        raise MemoryError()
    try:
        for i in range(total):
            for k in range(parts):
                PyObject_GetBuffer((<list>columns[k])[i], &views[acquired], PyBUF_SIMPLE)
                iov[acquired].iov_base = views[acquired].buf
                iov[acquired].iov_len = <size_t>views[acquired].len
                acquired += 1
        while True:
            with nogil:
                n = _write_loop(fd, iov, parts, n, total, &err)
            if not _retry(err):
                break
        _raise_unless_again(err)
    except OSError as exc:
        exc.packets_written = n
        raise
    finally:
        while acquired > 0:
            acquired -= 1
            PyBuffer_Release(&views[acquired])
        PyMem_Free(views)
        PyMem_Free(iov)
    return n


def write_packets(int fd, object packets):
    """Write each packet with one system call; stop at EAGAIN (or a short write, which TUN and
    datagram fds never do) and return how many were written completely.

    Every buffer is acquired before the first write, so a non-buffer item writes nothing.
    Any other OSError propagates with ``packets_written`` set to the count written before it.
    """
    cdef list items = list(packets)
    return _write_rows(fd, (items,), len(items))


def write_vnet_packets(int fd, object headers, object packets):
    """``write_packets`` with ``headers[i]`` (a virtio_net_hdr) before ``packets[i]``: one ``writev()``
    of the two buffers per packet, so header and packet are never copied together. ValueError unless
    there is one header per packet.
    """
    cdef list header_items = list(headers)
    cdef list packet_items = list(packets)
    if len(header_items) != len(packet_items):
        raise ValueError(f"{len(header_items)} headers for {len(packet_items)} packets")
    return _write_rows(fd, (header_items, packet_items), len(packet_items))


cdef double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef class Parker:
    """A one-shot wake-up for one thread: ``park`` sleeps until ``unpark`` (from any thread, before or
    after ``park``) or the timeout. Signal handlers run while parked, as in ``threading.Lock.acquire``,
    and an exception they raise propagates."""

    cdef PyThread_type_lock _lock
    cdef bint _unparked

    def __cinit__(self):
        self._lock = PyThread_allocate_lock()
        if self._lock == NULL:
            raise MemoryError()
        PyThread_acquire_lock_timed(self._lock, 0, 0)  # held until unpark

    def __dealloc__(self):
        if self._lock != NULL:
            if not self._unparked:
                PyThread_release_lock(self._lock)
            PyThread_free_lock(self._lock)

    def park(self, timeout=None):
        """True once unparked; False when ``timeout`` seconds (None: no limit) passed first."""
        cdef double deadline = 0.0
        cdef long long micros = -1
        cdef PyLockStatus status
        if timeout is not None:
            deadline = _now() + max(0.0, <double>timeout)
        while True:
            if timeout is not None:
                micros = <long long>(max(0.0, deadline - _now()) * 1e6)
            with nogil:
                status = PyThread_acquire_lock_timed(self._lock, micros, 1)
            if status != PY_LOCK_INTR:
                return status == PY_LOCK_ACQUIRED
            PyErr_CheckSignals()  # a signal arrived: run its handler (which may raise), then go on

    cdef inline PyThread_type_lock _take(self):
        """The lock to release to wake the parked thread, once; NULL if already unparked."""
        if self._unparked:
            return NULL
        self._unparked = True
        return self._lock

    def unpark(self):
        """Wake the parked thread (or let its ``park`` return at once); later calls do nothing."""
        cdef PyThread_type_lock lock = self._take()
        if lock != NULL:
            PyThread_release_lock(lock)


def poll_waking(object fds, int timeout_ms, list parkers):
    """Unpark every parker (and empty the list), then wait up to ``timeout_ms`` (negative: no limit)
    for POLLIN on ``fds``; (fd, revents) for each fd with events, as ``select.poll().poll``. Both
    happen with the GIL released, so a woken thread takes the GIL at once (module docstring)."""
    cdef list fd_list = list(fds)
    cdef Py_ssize_t nfds = len(fd_list), nlocks = len(parkers), i, count = 0
    cdef pollfd *polled = <pollfd *>PyMem_Calloc(<size_t>nfds + 1, sizeof(pollfd))
    cdef PyThread_type_lock *locks = <PyThread_type_lock *>PyMem_Malloc(
        (nlocks + 1) * sizeof(PyThread_type_lock)
    )
    cdef PyThread_type_lock lock
    cdef double deadline = _now() + timeout_ms / 1000.0
    cdef int ready = 0, err = 0
    if polled == NULL or locks == NULL:
        PyMem_Free(polled)
        PyMem_Free(locks)
        raise MemoryError()
    try:
        for i in range(nfds):
            polled[i].fd = fd_list[i]
            polled[i].events = POLLIN
        for i in range(nlocks):
            lock = (<Parker?>parkers[i])._take()
            if lock != NULL:
                locks[count] = lock
                count += 1
        with nogil:
            for i in range(count):
                PyThread_release_lock(locks[i])
            ready = poll(polled, <unsigned long>nfds, timeout_ms)
            err = errno if ready < 0 else 0
        # Only now: the list's references kept every lock in ``locks`` alive while it was released.
        parkers.clear()
        while ready < 0 and _retry(err):  # PEP 475: EINTR retries with the time left
            if timeout_ms >= 0:
                timeout_ms = <int>max(0.0, (deadline - _now()) * 1000.0 + 0.999)
            with nogil:
                ready = poll(polled, <unsigned long>nfds, timeout_ms)
                err = errno if ready < 0 else 0
        if ready < 0:
            raise OSError(err, strerror(err).decode())
        return [(polled[i].fd, polled[i].revents) for i in range(nfds) if polled[i].revents]
    finally:
        PyMem_Free(polled)
        PyMem_Free(locks)
