"""The runtime: one thread that puts the sans-I/O stack on a real TUN device.

The engine (pytcp.stack) never reads a clock and never touches a file descriptor; this module owns both.
One engine lock keeps the engine single-threaded: whoever holds it may touch the stack, reads ``now``
when it takes it, and before letting go writes the packets the stack queued and hands out the events it
raised (a "section"). Its loop thread waits on the TUN fd and a wake-up eventfd with a timeout equal to
the stack's next timer, and on every wake-up:

1. reads every packet the device holds, in batches (tcpcore.PacketBatch), feeding each batch to the
   stack in one section, so ACKs leave while the kernel is still sending and application threads get
   the lock between batches;
2. runs the calls other threads queued with ``call`` (the asyncio layer and the forwarder), fires due
   timers, writes the output.

Application threads run their engine operations themselves in a section (``run``; pytcp.socket does
every operation that way), as Linux runs TCP in process context under the socket lock and leaves the
rest to softirq: a send goes out on the sending thread, with no hand-off to the loop thread, which is
woken only when its timer deadline must move earlier. Events go to per-connection waiters (pytcp.socket)
and to registered listeners (the asyncio layer uses ``loop.call_soon_threadsafe`` there), on whichever
thread holds the lock; the threads sleeping on a waiter are woken once the section has released the
lock (``notify``), so none wakes only to wait for it.

Offloads (TunDevice with ``offload=True``): inbound packets flagged NEEDS_CSUM or DATA_VALID skip checksum
verification (``Stack.receive(..., checksum_verified=True)``), and inbound TSO super-packets reach the stack
whole, one 64 KB segment per read. Outbound, ``open`` sets ``TCPConfig.gso_max_size`` from the device
(Linux sk_gso_max_size), so connections build super-segments of up to 64 KB
(pytcp.tcp_output.OffloadSegment) with only the pseudo-header sum in their checksum field; each leaves in
one write with a virtio_net_hdr asking the kernel to cut it into ``gso_size``-byte segments and to
complete the checksums. One write and one Python pass per 64 KB instead of per MSS is what lets the
stack send at kernel-like rates (docs/performance.md).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import os
import select
import socket as _socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from tcpcore import PacketBatch, Parker, poll_waking
from tcpcore._types import Buffer
from tcpcore.constants import IPV4_HEADER_MIN, TCP_HEADER_MIN
from tcpcore.errors import MalformedPacket

from .config import TCPConfig
from .events import Closed, Event, IncomingConnection
from .netns import NetNamespace
from .pcap import PcapWriter, open_pcap
from .socket import Socket
from .stack import Stack, Tracer
from .state import CLOSED, TIME_WAIT
from .tcp_output import OffloadSegment, Packet
from .tun import TunDevice
from .vnet import VnetHeader

__all__ = ["RuntimeCounters", "RuntimeNotRunning", "StackRuntime", "Waiter"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Packets per read batch: Linux's NAPI weight (see tcpcore.PacketBatch), about 4 MB of slots.
BATCH_SLOTS = 64
#: Full batches read per wake-up before calls, timers and events get their turn: 16 x 64 = 1024 packets,
#: Linux's netdev_budget-sized share (300 packets, rounded up to whole batches of 64 with room for
#: GSO-less traffic) so a kernel flooding the device cannot starve the application's calls.
BATCHES_PER_WAKEUP = 16
#: Calls queued between two wake-ups. Each wake-up runs every queued call, so the queue holds only what
#: threads submit during one iteration (well under a millisecond); 64 Ki is far beyond any real burst
#: (one asyncio operation per call) and caps the queue at a few MB.
MAX_PENDING_CALLS = 65536
#: Share of ``stop(timeout)`` spent waiting for FIN handshakes before the survivors are reset; the other
#: half is left for the RSTs to go out and the thread to finish.
GRACEFUL_SHARE = 0.5
#: IPv4 + TCP headers without options (RFC 791, RFC 9293): the MSS that fits an MTU is MTU - 40.
TCPIP_HEADERS = IPV4_HEADER_MIN + TCP_HEADER_MIN
#: Largest GSO packet a TUN device with offloads takes: its gso_max_size is the legacy GSO_MAX_SIZE
#: (65536), and without BIG TCP an IPv4 packet ends at the 16-bit total length, 65535 bytes.
TUN_GSO_MAX_SIZE = 0xFFFF
#: States a connection may be left in when the runtime stops: TIME-WAIT only protects against old
#: duplicates, which cannot outlive the device that is about to be removed.
_SETTLED = frozenset({CLOSED, TIME_WAIT})


class RuntimeNotRunning(OSError):
    """The runtime is not (or no longer) running: ENETDOWN, as a socket whose interface went away."""

    def __init__(self, message: str = "pytcp runtime is not running") -> None:
        super().__init__(errno.ENETDOWN, message)


class Device(Protocol):
    """What the runtime needs from its link: pytcp.tun.TunDevice (tests substitute a datagram socket)."""

    @property
    def mtu(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def offload(self) -> bool: ...
    def fileno(self) -> int: ...
    def read_into(self, batch: PacketBatch, max_packets: int = -1) -> int: ...
    def parse_inbound(self, packet: Buffer) -> tuple[VnetHeader, memoryview]: ...
    def write_many(
        self, packets: Sequence[Buffer], gso_mss: int = 0, *, checksum_offload: bool = False
    ) -> int: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class RuntimeCounters:
    """What the loop itself saw (the stack's own counters are in its MIB)."""

    wakeups: int = 0
    batches: int = 0
    rx_packets: int = 0
    rx_bytes: int = 0
    rx_trusted: int = 0  # checksum verification skipped (NEEDS_CSUM / DATA_VALID)
    rx_not_ipv4: int = 0  # IPv6 neighbour discovery and the like: not ours to answer
    rx_malformed: int = 0  # no valid virtio_net_hdr
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_gso: int = 0  # super-packets handed to the kernel for segmentation
    tx_dropped: int = 0  # device queue full (EAGAIN); TCP retransmits them
    calls: int = 0
    events: int = 0
    callback_errors: int = 0


class Waiter:
    """Wakes application threads blocked on one connection or listener.

    Whoever dispatches an event (under the engine lock) bumps ``generation``; a thread that saw
    generation g in the section of its attempt sleeps until it differs, so an event dispatched between
    the attempt and the sleep is never lost. Each sleeper parks on a tcpcore.Parker of its own, which
    ``notify`` unparks: what threading.Condition does, without running threading.py's interpreted code
    twice per round trip. The loop thread instead ``take``s the parkers and unparks them as it goes to
    sleep, with the GIL released (tcpcore.poll_waking). Lock order: engine lock, then ``_guard``; a
    sleeper holds no engine lock, so notifying under it cannot deadlock.

    Every accepted connection has one from the start (pytcp.socket), so it is kept small: ``guard`` is
    the runtime's, shared by all its waiters (held for a few instructions at a time), and the sleepers
    are a tuple (the empty one is shared): ~100 bytes per waiter with its table entry.
    """

    __slots__ = ("_guard", "_sleepers", "generation")

    def __init__(self, guard: threading.Lock) -> None:
        self._guard = guard
        self._sleepers: tuple[Parker, ...] = ()
        self.generation = 0

    def notify(self) -> None:
        for parker in self.take():
            parker.unpark()

    def take(self) -> tuple[Parker, ...]:
        """Bump the generation and hand over the sleepers' parkers: whoever takes them must unpark
        them (a sleeper that times out meanwhile still reports a wake-up, which it is)."""
        with self._guard:
            self.generation += 1
            sleepers, self._sleepers = self._sleepers, ()
        return sleepers

    def wait(self, seen: int, deadline: float | None, running: Callable[[], bool]) -> bool:
        """Sleep until the generation moves past ``seen`` (or the runtime stops); False at ``deadline``
        (monotonic)."""
        parker = Parker()
        with self._guard:
            if self.generation != seen or not running():
                return True
            self._sleepers = (*self._sleepers, parker)
        # take() bumps the generation before its parkers are unparked, and the runtime's end notifies
        # every waiter, so a wake-up is never spurious.
        if parker.park(None if deadline is None else deadline - time.monotonic()):
            return True
        with self._guard:
            if parker in self._sleepers:
                self._sleepers = tuple(other for other in self._sleepers if other is not parker)
                return False
        return True  # take() took the parker out of the list as the wait timed out: a wake-up


class StackRuntime:
    """Drives a Stack on a TUN device from one thread; see the module docstring."""

    def __init__(
        self,
        tun: Device,
        stack: Stack,
        *,
        pcap: str | os.PathLike[str] | None = None,
        batch_slots: int = BATCH_SLOTS,
    ) -> None:
        config = stack.config
        if config.mss + TCPIP_HEADERS > tun.mtu:
            # Larger segments leave as super-segments (gso_max_size), never as oversized plain packets.
            raise ValueError(f"mss {config.mss} does not fit the {tun.mtu}-byte MTU")
        if config.gso_max_size and not tun.offload:
            raise ValueError("gso_max_size needs a device with offloads (the virtio_net_hdr carries GSO)")
        self._tun = tun
        self._stack = stack
        self._mtu = tun.mtu
        self._batch = PacketBatch(slots=batch_slots)
        self._pcap: PcapWriter | None = open_pcap(pcap) if pcap is not None else None
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # Reentrant: stop() may run in a signal handler that interrupted wake() on the same thread.
        self._wake_lock = threading.RLock()
        #: The engine lock (module docstring) and the ident of the thread holding it (a Lock has no
        #: owner to ask). An ident is reused only after its thread exits, and no thread exits inside a
        #: section, so the owner's ident names a live thread; get_ident, unlike current_thread, is C.
        self._lock = threading.Lock()
        self._owner: int | None = None
        #: Waiters to wake when the current section ends (``notify``).
        self._woken: dict[Waiter, None] = {}
        #: The timer deadline the loop sleeps until (inf: none; -inf: awake, it reads the timer again
        #: before sleeping). A section that arms an earlier timer wakes the loop.
        self._sleep_until = -math.inf
        #: stop() called by a signal handler inside a section: its timeout, for when the section ends.
        self._deferred_stop: float | None = None
        self._calls: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = deque()
        self._listeners: tuple[Callable[[Event], None], ...] = ()
        self._end_callbacks: list[Callable[[], None]] = []
        #: What the loop polls: the device and the wake-up eventfd (set in _loop), and add_reader's fds.
        self._poll_fds: list[int] = []
        #: Parkers of the threads the loop's last section woke, unparked as the loop goes to sleep.
        self._parked: list[Parker] = []
        #: Extra fds the loop waits on (add_reader) -> their callbacks.
        self._readers: dict[int, Callable[[], None]] = {}
        self._waiters: dict[object, Waiter] = {}
        self._waiter_guard = threading.Lock()  # every Waiter's _guard
        #: Local ports of pytcp.socket sockets bound but not yet listening or connected (loop thread).
        self.bound_ports: set[int] = set()
        self._counters = RuntimeCounters()
        self._now = time.monotonic()
        self._thread: threading.Thread | None = None
        self._accepting = False  # call() takes work
        self._stopping = False
        self._grace = 0.0
        self._shutdown_deadline: float | None = None
        self._failure: BaseException | None = None
        self._closed = False

    @classmethod
    def open(
        cls,
        tun_name: str = "pytcp0",
        *,
        stack_address: str = "198.18.0.2",
        kernel_address: str = "198.18.0.1",
        prefix_len: int = 15,
        mtu: int = 1500,
        offload: bool = True,
        config: TCPConfig | None = None,
        netns: NetNamespace | str | None = None,
        pcap: str | os.PathLike[str] | None = None,
        seed: int | None = None,
        tracer: Tracer | None = None,
    ) -> StackRuntime:
        """Create the TUN device (inside ``netns`` if given) and a Stack answering as ``stack_address``.

        The announced MSS is capped at ``mtu - 40`` as Linux derives it from the route MTU, so every
        segment fits the device once cut. With ``offload`` connections send super-segments of up to
        ``config.gso_max_size`` bytes, or of the device's limit (65535) when that is 0; without, none.
        ``tracer`` receives every state transition of every connection (pytcp.stack.Tracer), in the
        section that makes it: it must not block.
        """
        config = config or TCPConfig()
        gso_max_size = min(config.gso_max_size or TUN_GSO_MAX_SIZE, TUN_GSO_MAX_SIZE) if offload else 0
        config = config.replace(mss=min(config.mss, mtu - TCPIP_HEADERS), gso_max_size=gso_max_size)
        stack = Stack(int(ipaddress.IPv4Address(stack_address)), config, seed=seed, tracer=tracer)
        tun = TunDevice(
            tun_name,
            kernel_address=kernel_address,
            stack_address=stack_address,
            prefix_len=prefix_len,
            mtu=mtu,
            offload=offload,
            netns=netns,
        )
        try:
            return cls(tun, stack, pcap=pcap)
        except BaseException:
            tun.close()
            raise

    # -- properties ----------------------------------------------------------------------------------

    @property
    def stack(self) -> Stack:
        """The engine; touch it only inside a section (``run``, ``call``, an event listener)."""
        return self._stack

    @property
    def tun(self) -> Device:
        return self._tun

    @property
    def now(self) -> float:
        """The monotonic clock as of the current section's start: the ``now`` for engine calls in it."""
        return self._now

    @property
    def running(self) -> bool:
        """True from ``start`` until ``stop`` begins (or the loop thread fails)."""
        return self._accepting and not self._stopping

    @property
    def failure(self) -> BaseException | None:
        """The exception that ended the loop thread, if it failed (it is logged as well)."""
        return self._failure

    def on_loop_thread(self) -> bool:
        """Whether the calling thread is inside a section, where engine calls run at once: the loop
        thread at work, or an application thread in ``run`` (and the event listeners it calls)."""
        return self._owner == threading.get_ident()

    # -- lifetime ------------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None or self._closed:
            raise RuntimeError("a StackRuntime starts once")
        self._accepting = True
        # A daemon thread: a runtime its owner forgot to stop must not keep the interpreter alive.
        self._thread = threading.Thread(target=self._main, name=f"pytcp-{self._tun.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection, then remove the device. Idempotent; safe from a signal handler.

        The first ``timeout * GRACEFUL_SHARE`` seconds go to orderly closes (FIN); connections not in
        CLOSED or TIME-WAIT by then are reset. TimeoutError if the loop thread does not finish in
        ``timeout``, in which case the device is left open (the thread may still be using it).
        """
        thread = self._thread
        if threading.current_thread() is thread:
            raise RuntimeError("stop() cannot run on the runtime's own thread")
        if thread is not None and thread.is_alive():
            if not self._stopping:
                self._grace = max(0.0, timeout) * GRACEFUL_SHARE
                # The flag first, then the wake-up: the loop reads the flag after it wakes.
                self._stopping = True
                self._wake()
            if self.on_loop_thread():
                # A signal handler interrupted this thread's section: the loop needs the lock to finish,
                # so the section's end completes the stop (before the interrupted operation returns).
                self._deferred_stop = timeout
                return
            thread.join(max(0.0, timeout))
            if thread.is_alive():
                raise TimeoutError(f"runtime thread did not stop within {timeout} s")
        self._close_resources()

    def __enter__(self) -> Self:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _close_resources(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._accepting = False
        self._tun.close()
        if self._pcap is not None:
            self._pcap.close()
        with self._wake_lock:
            fd, self._wake_fd = self._wake_fd, -1
            os.close(fd)

    # -- cross-thread entry points -------------------------------------------------------------------

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the calling thread in a section: under the engine lock, with ``now`` read
        as it starts; the packets it queued leave and its events are dispatched before it returns, and
        the loop is woken only if ``fn`` armed a timer earlier than the one it sleeps until.
        RuntimeNotRunning when the runtime is not running. Inside a section ``fn`` just runs (the outer
        section sends its output). ``fn`` must not block: the loop waits for the lock meanwhile.
        """
        current = threading.get_ident()
        if self._owner == current:
            return fn(*args)
        self._lock.acquire()
        self._owner = current
        try:
            if not self.running:
                raise RuntimeNotRunning()
            now = self._now = time.monotonic()
            try:
                return fn(*args)
            finally:
                self._flush(now)
                self._nudge()
        finally:
            self._leave()
            if self._deferred_stop is not None:
                timeout, self._deferred_stop = self._deferred_stop, None
                self.stop(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on the loop thread; its result or exception lands in the returned Future.

        Inside a section (an event listener, a function already inside ``call`` or ``run``) ``fn`` runs
        at once, so code shared by both sides cannot deadlock waiting for itself.
        """
        future: Future[T] = Future()
        if self.on_loop_thread():
            future.set_running_or_notify_cancel()
            _run_into(future, fn, args)
            return future
        if not self.running:
            future.set_exception(RuntimeNotRunning())
            return future
        if len(self._calls) >= MAX_PENDING_CALLS:
            future.set_exception(OSError(errno.ENOBUFS, "too many calls queued on the pytcp runtime"))
            return future
        self._calls.append((future, fn, args))
        if self._accepting:
            self._wake()
        else:
            # The loop stopped between the check above and the append and may have drained already.
            self._fail_calls()
        return future

    def add_event_listener(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` for every stack event, in the section that dispatches it (on the loop
        thread or an application thread in ``run``). It must not block; an exception it raises is logged
        and counted, never propagated."""
        self._listeners = (*self._listeners, callback)

    def remove_event_listener(self, callback: Callable[[Event], None]) -> None:
        self._listeners = tuple(cb for cb in self._listeners if cb is not callback)

    def add_end_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the loop has ended, after a stop or a failure, on the loop thread
        after every blocked thread was woken (pytcp.aio ends its transports there). Register it while
        the runtime runs (in a section, say); it must not block; an exception it raises is logged."""
        self._end_callbacks.append(callback)

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Also wait on ``fd`` and call ``callback()`` on the loop thread while it is readable (an epoll
        fd gathers many sockets into one; pytcp.forwarder does so). Loop thread only (inside ``call``),
        or before ``start``. Engine calls made by the callback are sent in the same wake-up; errors are
        handled as an event listener's."""
        if fd not in self._readers:
            self._poll_fds.append(fd)
        self._readers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        """Stop waiting on ``fd`` (loop thread only, or before ``start``)."""
        if self._readers.pop(fd, None) is not None:
            self._poll_fds.remove(fd)

    def watch(self, key: object) -> Waiter:
        """The Waiter for a Connection or Listener (inside a section); created on first use. A
        connection's waiter is forgotten after its Closed event; call ``unwatch`` for listeners."""
        waiter = self._waiters.get(key)
        if waiter is None:
            waiter = self._waiters[key] = Waiter(self._waiter_guard)
        return waiter

    def waiter(self, key: object) -> Waiter | None:
        """The Waiter ``watch`` made for ``key``, if any; safe outside a section (one dict lookup)."""
        return self._waiters.get(key)

    def notify(self, waiter: Waiter) -> None:
        """Inside a section: wake the threads sleeping on ``waiter`` once the section has released the
        engine lock (a thread woken under it would only wait for it, on the same vCPU after a switch
        each way)."""
        self._woken[waiter] = None

    def unwatch(self, key: object) -> None:
        """Forget ``key``'s waiter (inside a section)."""
        self._waiters.pop(key, None)

    def socket(
        self, family: int = _socket.AF_INET, type: int = _socket.SOCK_STREAM, proto: int = 0
    ) -> Socket:
        """A new socket (AF_INET, SOCK_STREAM) on this runtime; see pytcp.socket."""
        return Socket(self, family, type, proto)

    def connections_table(self, timeout: float | None = 5.0) -> list[dict[str, Any]]:
        """A snapshot of every listener and connection (as ``ss -tanoi``), taken under the engine lock."""
        return self._locked(self._stack.table, timeout)

    def counters(self, timeout: float | None = 5.0) -> dict[str, dict[str, int]]:
        """Snapshots of the runtime's counters and the stack's MIB, taken together under the engine lock."""
        return self._locked(self._snapshot, timeout)

    def _snapshot(self) -> dict[str, dict[str, int]]:
        return {"runtime": asdict(self._counters), "mib": self._stack.mib.snapshot()}

    def _locked(self, fn: Callable[[], T], timeout: float | None) -> T:
        """``fn()`` under the engine lock, whether or not the loop runs (the final figures stay readable
        after stop); TimeoutError if the lock stays taken for ``timeout`` seconds."""
        current = threading.get_ident()
        if self._owner == current:
            return fn()
        if not self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise TimeoutError(f"the pytcp engine stayed busy for {timeout} s")
        self._owner = current
        try:
            return fn()
        finally:
            self._leave()

    def _wake(self) -> None:
        # EBADF: closed (-1) by stop(), nothing left to wake; EAGAIN: the counter is saturated (awake).
        # try/except rather than contextlib.suppress, whose methods are interpreted Python.
        with self._wake_lock:
            try:  # noqa: SIM105
                os.eventfd_write(self._wake_fd, 1)
            except OSError:
                pass

    def _fail_calls(self) -> None:
        while True:
            try:
                future, _, _ = self._calls.popleft()
            except IndexError:
                return
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeNotRunning())

    # -- the loop thread -----------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self._failure = exc
            logger.exception("pytcp runtime on %s crashed", self._tun.name)
        finally:
            # Order matters for call(): it appends, then re-checks _accepting and drains if it is False.
            # Under the engine lock: a section that saw the runtime running (after a crash the loop has
            # let go of the lock) ends before the callbacks below, so whatever it registered is seen.
            with self._lock:
                self._accepting = False
            self._fail_calls()
            for parker in self._parked:  # taken by the last section, never polled for
                parker.unpark()
            self._parked.clear()
            for waiter in list(self._waiters.values()):
                waiter.notify()
            for callback in self._end_callbacks:
                try:
                    callback()
                except Exception:
                    logger.exception("runtime end callback %r failed", callback)

    def _loop(self) -> None:
        tun, batch = self._tun, self._batch
        tun_fd = tun.fileno()
        wake_fd = self._wake_fd
        poll_fds = self._poll_fds
        poll_fds[:0] = (tun_fd, wake_fd)
        parked = self._parked
        counters = self._counters
        timeout = 0
        while True:
            ready = poll_waking(poll_fds, timeout, parked)
            # Awake: sections need not wake the loop, which reads the timer again before it sleeps.
            self._sleep_until = -math.inf
            readable = False
            for fd, mask in ready:
                if mask & (select.POLLERR | select.POLLNVAL):
                    raise OSError(errno.EIO, f"poll reported {mask:#x} on fd {fd}")
                if fd == wake_fd:
                    try:  # noqa: SIM105 (see _wake)
                        os.eventfd_read(wake_fd)
                    except BlockingIOError:
                        pass
                elif fd == tun_fd:
                    readable = True
                elif (reader := self._readers.get(fd)) is not None:
                    self._enter()
                    try:
                        reader()
                    except Exception:
                        counters.callback_errors += 1
                        logger.exception("runtime reader %r failed", reader)
                    finally:
                        self._leave()  # its output leaves with the section below, in this wake-up
            # One section per batch read, the lock released in between; the last one (usually the only
            # one) also runs the queued calls and due timers and reads the timer for the next sleep.
            for budget in reversed(range(BATCHES_PER_WAKEUP)):
                # The device is read outside the section: only this thread reads it.
                count = tun.read_into(batch) if readable else 0
                readable = count == batch.slots
                last = not (readable and budget)
                now = self._enter()
                try:
                    if count:
                        self._receive(now)
                    done = last and self._tend(now)
                    self._flush(now)
                    if last:
                        timeout = self._poll_timeout(now)
                finally:
                    self._leave(last)
                if last:
                    break
            if done:
                return

    def _tend(self, now: float) -> bool:
        """Once per wake-up: the queued calls, a step of the graceful stop, the due timers. True when
        the loop may exit (after this section's output)."""
        self._counters.wakeups += 1
        self._run_calls()
        done = self._stopping and self._shutdown_step(now)
        stack = self._stack
        deadline = stack.get_timer()
        if deadline is not None and deadline <= now:
            stack.handle_timer(now)
        return done

    def _enter(self) -> float:
        """Begin a section on the loop thread; returns its ``now``."""
        self._lock.acquire()
        self._owner = threading.get_ident()
        now = self._now = time.monotonic()
        return now

    def _leave(self, defer: bool = False) -> None:
        """End a section: release the engine lock, then wake the waiters its events concern. With
        ``defer`` (the loop's last section before it sleeps) their threads are unparked by the loop's
        poll_waking, with the GIL released: woken here, a thread would preempt the loop thread (on one
        CPU) only to wait for the GIL it holds, two context switches per wake-up for nothing."""
        woken = self._woken
        if woken:
            self._woken = {}
        self._owner = None
        self._lock.release()
        if woken:
            # After the release: a thread woken under the lock would only wait for it.
            if defer:
                for waiter in woken:
                    self._parked.extend(waiter.take())
            else:
                for waiter in woken:
                    waiter.notify()

    def _flush(self, now: float) -> None:
        """The end of every section: events first (listeners may answer them, as the forwarder and the
        asyncio layer do, and their output should leave now), the output, then the events the output
        step itself raised."""
        self._dispatch()
        self._transmit(now)
        self._dispatch()

    def _nudge(self) -> None:
        """Wake the loop if the stack's next timer now comes before the deadline the loop sleeps until
        (an application thread armed it): the one hand-off a section may need."""
        deadline = self._stack.get_timer()
        if deadline is not None and deadline < self._sleep_until:
            self._sleep_until = -math.inf
            self._wake()

    def _poll_timeout(self, now: float) -> int:
        """Milliseconds until the next timer, rounded up so the loop never wakes early and spins, and
        the deadline it stands for in ``_sleep_until`` (read by ``_nudge``). Measured from this
        section's clock read: a timer may fire late by the loop's own work in one iteration."""
        deadline = self._stack.get_timer()
        if self._stopping:
            shutdown = self._shutdown_deadline
            if shutdown is None:
                shutdown = now
            deadline = shutdown if deadline is None else min(deadline, shutdown)
        if self._calls:
            deadline = now
        if deadline is None:
            self._sleep_until = math.inf
            return -1
        self._sleep_until = deadline
        return max(0, math.ceil((deadline - now) * 1000))

    def _receive(self, now: float) -> None:
        """Feed the batch just read to the stack (inside a section)."""
        tun, batch, stack, pcap, counters = self._tun, self._batch, self._stack, self._pcap, self._counters
        counters.batches += 1
        stamp = time.time() if pcap is not None else 0.0
        for slot in batch:
            try:
                header, packet = tun.parse_inbound(slot)
            except MalformedPacket:
                counters.rx_malformed += 1
                continue
            if not packet or packet[0] >> 4 != 4:
                counters.rx_not_ipv4 += 1
                continue
            counters.rx_packets += 1
            counters.rx_bytes += len(packet)
            if pcap is not None:
                pcap.write(packet, stamp)
            trusted = header.checksum_trusted
            if trusted:
                counters.rx_trusted += 1
            # The stack must not keep views of ``packet`` past this call: the slot is reused.
            stack.receive(packet, now, checksum_verified=trusted)

    def _run_calls(self) -> None:
        """The calls queued before this point; later ones wait for the next iteration (bounded work)."""
        calls = self._calls
        for _ in range(len(calls)):
            future, fn, args = calls.popleft()
            if future.set_running_or_notify_cancel():
                self._counters.calls += 1
                _run_into(future, fn, args)

    def _transmit(self, now: float) -> None:
        packets = self._stack.datagrams_to_send(now)
        if not packets:
            return
        counters = self._counters
        if self._pcap is not None:
            stamp = time.time()
            for packet in packets:
                self._pcap.write(packet, stamp)
        # Without offloads every packet is complete and fits the MTU (the constructor saw to it).
        written = self._write_offload(packets) if self._tun.offload else self._tun.write_many(packets)
        counters.tx_packets += written
        counters.tx_bytes += sum(map(len, packets[:written]))
        counters.tx_dropped += len(packets) - written

    def _write_offload(self, packets: list[Packet]) -> int:
        """Runs of alike packets in one batch each: complete ones, and offload segments by gso_size (the
        device writes one virtio_net_hdr per run); stops at EAGAIN."""
        tun, counters = self._tun, self._counters
        written = start = 0
        count = len(packets)
        while start < count:
            gso_size = _gso_size(packets[start])
            end = start + 1
            while end < count and _gso_size(packets[end]) == gso_size:
                end += 1
            run = packets if end - start == count else packets[start:end]  # usually one run: no copy
            if gso_size < 0:
                done = tun.write_many(run)
            else:
                done = tun.write_many(run, gso_size, checksum_offload=True)
                if gso_size:
                    counters.tx_gso += done
            written += done
            if done < end - start:
                break
            start = end
        return written

    def _dispatch(self) -> None:
        stack, waiters, counters, woken = self._stack, self._waiters, self._counters, self._woken
        listeners = self._listeners
        while (event := stack.next_event()) is not None:
            counters.events += 1
            conn = event.conn
            waiter = waiters.get(conn)
            if waiter is not None:
                if isinstance(event, Closed):
                    del waiters[conn]  # nothing follows Closed
                woken[waiter] = None
            if isinstance(event, IncomingConnection):
                owner = waiters.get(event.listener)
                if owner is not None:
                    woken[owner] = None
            for callback in listeners:
                try:
                    callback(event)
                except Exception:
                    counters.callback_errors += 1
                    logger.exception("runtime event listener %r failed on %r", callback, event)

    def _shutdown_step(self, now: float) -> bool:
        """One step of the graceful stop; True when the loop may exit (after this iteration's output)."""
        stack = self._stack
        if self._shutdown_deadline is None:
            self._shutdown_deadline = now + self._grace
            for listener in stack.listeners():
                stack.close_listener(listener, now)
            for conn in stack.connections():
                if conn.state not in _SETTLED:
                    conn.close(now)
        # Packets and timers wake the loop as the closes progress; each wake-up checks again.
        unsettled = [conn for conn in stack.connections() if conn.state not in _SETTLED]
        if unsettled and now < self._shutdown_deadline:
            return False
        for conn in unsettled:
            conn.abort(now)
        if unsettled:
            logger.info("runtime stop: reset %d connections that did not close in time", len(unsettled))
        return True


def _run_into(future: Future[T], fn: Callable[..., T], args: tuple[Any, ...]) -> None:
    try:
        result = fn(*args)
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _gso_size(packet: Packet) -> int:
    """An offload segment's gso_size (0: checksum offload only), -1 for a complete packet."""
    return packet.gso_size if isinstance(packet, OffloadSegment) else -1
