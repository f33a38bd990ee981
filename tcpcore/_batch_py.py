"""Batch packet I/O on boundary-preserving fds (TUN, SOCK_DGRAM), and the I/O loop's wait: the twin.

One ``read()`` is one packet and one ``write()`` is one packet, so a wake-up drains every
ready packet into preallocated slots without allocating per packet.

``poll_waking`` is the loop's sleep: it first wakes the threads parked on the ``Parker`` objects it is
given, then polls. Compiled, both happen with the GIL released, so a woken thread finds the GIL free
instead of preempting the loop thread only to wait for it (on one CPU that is two context switches per
hand-off saved). Here, in Python, the same calls in the same order.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import attrgetter
from typing import TypeVar

from ._types import Buffer

__all__ = ["PacketBatch", "Parker", "poll_waking", "write_packets", "write_vnet_packets"]

#: 64 matches Linux's NAPI poll weight: one wake-up handles at most 64 packets before the event
#: loop gets back to timers and other fds; 64 full slots are about 4 MB, the memory bound per batch.
DEFAULT_SLOTS = 64
#: A TUN read returns at most one 64 KB GSO super-packet (GSO_MAX_SIZE 65536) plus a 10/12-byte
#: virtio_net_hdr (and a 4-byte tun_pi without IFF_NO_PI); 64 bytes of headroom cover both and keep
#: every slot offset a multiple of the 64-byte cache line.
DEFAULT_SLOT_SIZE = 65536 + 64
_NBYTES = attrgetter("nbytes")
T = TypeVar("T")


class PacketBatch:
    """Preallocated slots for the packets of one wake-up.

    Packet ``i`` lives at offset ``i * slot_size`` of ``buffer``. The views returned by ``packet``
    and ``__iter__`` are zero-copy: they stay valid only until the next ``read_from``. A packet
    longer than ``slot_size`` is truncated by the kernel to ``slot_size`` bytes.
    """

    __slots__ = ("_buffer", "_count", "_lengths", "_slot_size", "_slots")

    def __init__(self, slots: int = DEFAULT_SLOTS, slot_size: int = DEFAULT_SLOT_SIZE) -> None:
        if slots < 1 or slot_size < 1:
            raise ValueError("slots and slot_size must be positive")
        self._slots = slots
        self._slot_size = slot_size
        self._buffer = memoryview(bytearray(slots * slot_size))
        self._lengths = [0] * slots
        self._count = 0

    @property
    def count(self) -> int:
        """Packets held since the last ``read_from``."""
        return self._count

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def slot_size(self) -> int:
        return self._slot_size

    @property
    def buffer(self) -> memoryview:
        """The whole underlying buffer; packet ``i`` starts at ``i * slot_size``."""
        return self._buffer

    def read_from(self, fd: int, max_packets: int = -1) -> int:
        """Read one packet per ``read()`` until EAGAIN, ``max_packets`` (negative: no limit) or a
        full batch; returns the count. Any other OSError propagates with the packets read so far kept.
        """
        limit = self._slots if max_packets < 0 else min(max_packets, self._slots)
        size = self._slot_size
        n = 0
        try:
            while n < limit:
                offset = n * size
                # os.readv reads into a buffer (there is no os.readinto); it retries EINTR (PEP 475).
                self._lengths[n] = os.readv(fd, [self._buffer[offset : offset + size]])
                n += 1
        except BlockingIOError:
            pass
        finally:
            self._count = n
        return n

    def _check(self, i: int) -> None:
        if not 0 <= i < self._count:
            raise IndexError("packet index out of range")

    def length(self, i: int) -> int:
        self._check(i)
        return self._lengths[i]

    def packet(self, i: int) -> memoryview:
        """Zero-copy view of packet ``i``."""
        self._check(i)
        offset = i * self._slot_size
        return self._buffer[offset : offset + self._lengths[i]]

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[memoryview]:
        for i in range(self._count):
            yield self.packet(i)

    def clear(self) -> None:
        self._count = 0


def write_packets(fd: int, packets: Sequence[Buffer]) -> int:
    """Write each packet with one system call; stop at EAGAIN (or a short write, which TUN and
    datagram fds never do) and return how many were written completely.

    Every buffer is acquired before the first write, so a non-buffer item writes nothing.
    Any other OSError propagates with ``packets_written`` set to the count written before it.
    """
    return _write_each(fd, _views(packets), os.write, _NBYTES)


def write_vnet_packets(fd: int, headers: Sequence[Buffer], packets: Sequence[Buffer]) -> int:
    """``write_packets`` with ``headers[i]`` (a virtio_net_hdr) before ``packets[i]``: one ``writev()``
    of the two buffers per packet, so header and packet are never copied together. ValueError unless
    there is one header per packet.
    """
    header_views, packet_views = _views(headers), _views(packets)
    if len(header_views) != len(packet_views):
        raise ValueError(f"{len(header_views)} headers for {len(packet_views)} packets")
    rows = list(zip(header_views, packet_views, strict=True))
    return _write_each(fd, rows, os.writev, _row_nbytes)


def _views(buffers: Iterable[Buffer]) -> list[memoryview]:
    """A view of every buffer, all taken before anything is written."""
    views = [memoryview(buffer) for buffer in buffers]
    for view in views:
        if not view.c_contiguous:
            # The message the compiled module's PyBUF_SIMPLE request raises.
            raise BufferError("memoryview: underlying buffer is not C-contiguous")
    return views


def _row_nbytes(row: tuple[memoryview, ...]) -> int:
    return sum(map(_NBYTES, row))


def _write_each(fd: int, items: list[T], write: Callable[[int, T], int], size: Callable[[T], int]) -> int:
    """``write(fd, item)`` for each item (os.write of a view, os.writev of a row of views); stops at
    EAGAIN or a short write."""
    written = 0
    try:
        for item in items:
            if write(fd, item) != size(item):
                break
            written += 1
    except BlockingIOError:
        pass
    except OSError as exc:
        exc.packets_written = written  # type: ignore[attr-defined]
        raise
    return written


class Parker:
    """A one-shot wake-up for one thread: ``park`` sleeps until ``unpark`` (from any thread, before or
    after ``park``) or the timeout. Signal handlers run while parked, as in ``threading.Lock.acquire``,
    and an exception they raise propagates."""

    __slots__ = ("_lock", "_unparked")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._unparked = False

    def park(self, timeout: float | None = None) -> bool:
        """True once unparked; False when ``timeout`` seconds (None: no limit) passed first."""
        if timeout is None:
            return self._lock.acquire()
        return self._lock.acquire(timeout=max(0.0, timeout))

    def unpark(self) -> None:
        """Wake the parked thread (or let its ``park`` return at once); later calls do nothing."""
        if not self._unparked:
            self._unparked = True
            self._lock.release()


def poll_waking(fds: Sequence[int], timeout_ms: int, parkers: list[Parker]) -> list[tuple[int, int]]:
    """Unpark every parker (and empty the list), then wait up to ``timeout_ms`` (negative: no limit)
    for POLLIN on ``fds``; (fd, revents) for each fd with events, as ``select.poll().poll``."""
    for parker in parkers:
        parker.unpark()
    parkers.clear()
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return poller.poll(timeout_ms)
