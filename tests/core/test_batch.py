"""Batch packet I/O, for both implementations.

A non-blocking AF_UNIX SOCK_DGRAM socketpair stands in for a TUN fd: both preserve packet
boundaries, one read() or write() per packet.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from types import FrameType, SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

Pair = tuple[socket.socket, socket.socket]
#: Bound on every blocking call in these tests: a missed signal fails the test instead of hanging it.
BLOCK_SECONDS = 3


def make_pair() -> Pair:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


@pytest.fixture
def pair() -> Iterator[Pair]:
    a, b = make_pair()
    with a, b:
        yield a, b


def payload(i: int, size: int) -> bytes:
    """Distinct packets: the index repeated, so reordering or mixing shows up."""
    return bytes((i + k) & 0xFF for k in range(size))


def drain(core: SimpleNamespace, sock: socket.socket) -> list[bytes]:
    batch = core.PacketBatch(slots=16, slot_size=4096)
    received: list[bytes] = []
    while batch.read_from(sock.fileno()):
        received += [bytes(p) for p in batch]
    return received


def make_blocking(sock: socket.socket, option: int) -> None:
    sock.setblocking(True)
    sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", BLOCK_SECONDS, 0))


@contextlib.contextmanager
def interrupting(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """Send SIGUSR1 to this thread every 20 ms while the block runs, so a blocked read()/write() gets
    EINTR (a signal landing before the call blocks is only handled; the next one interrupts)."""
    done = threading.Event()
    target = threading.get_ident()

    def kick() -> None:
        for _ in range(BLOCK_SECONDS * 50):
            if done.wait(0.02):
                return
            signal.pthread_kill(target, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, handler)
    thread = threading.Thread(target=kick)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        signal.signal(signal.SIGUSR1, previous)


# --- construction and access ---------------------------------------------------------------------


def test_defaults(core: SimpleNamespace) -> None:
    batch = core.PacketBatch()
    assert batch.slots == 64
    assert batch.slot_size == 65536 + 64
    assert isinstance(batch.buffer, memoryview)
    assert len(batch.buffer) == 64 * (65536 + 64)
    assert batch.count == len(batch) == 0
    assert list(batch) == []


@pytest.mark.parametrize(("slots", "slot_size"), [(0, 100), (1, 0), (-1, 100), (4, -5)])
def test_rejects_empty_geometry(core: SimpleNamespace, slots: int, slot_size: int) -> None:
    with pytest.raises(ValueError):
        core.PacketBatch(slots, slot_size)


def test_empty_read_returns_zero(core: SimpleNamespace, pair: Pair) -> None:
    batch = core.PacketBatch(slots=4, slot_size=256)
    assert batch.read_from(pair[0].fileno()) == 0
    assert batch.count == len(batch) == 0
    assert list(batch) == []


def test_packets_of_varied_sizes_read_back_exactly(core: SimpleNamespace, pair: Pair) -> None:
    a, b = pair
    sizes = [40, 1, 0, 576, 1500, 9000, 65535, 20]  # 0: an empty datagram is still one read, one packet
    sent = [payload(i, size) for i, size in enumerate(sizes)]
    for packet in sent:
        b.send(packet)
    batch = core.PacketBatch()
    assert batch.read_from(a.fileno()) == len(sent)
    assert batch.count == len(batch) == len(sent)
    assert [batch.length(i) for i in range(len(sent))] == sizes
    assert [bytes(batch.packet(i)) for i in range(len(sent))] == sent
    assert [bytes(p) for p in batch] == sent
    for i, packet in enumerate(sent):
        offset = i * batch.slot_size
        assert batch.buffer[offset : offset + len(packet)] == packet
    assert batch.read_from(a.fileno()) == 0
    assert batch.count == 0


def test_packet_views_are_zero_copy(core: SimpleNamespace, pair: Pair) -> None:
    a, b = pair
    b.send(b"abc")
    batch = core.PacketBatch(slots=2, slot_size=64)
    batch.read_from(a.fileno())
    view = batch.packet(0)
    assert isinstance(view, memoryview)
    batch.buffer[1] = ord("X")
    assert bytes(view) == b"aXc"


def test_max_packets_is_respected(core: SimpleNamespace, pair: Pair) -> None:
    a, b = pair
    sent = [payload(i, 10 + i) for i in range(5)]
    for packet in sent:
        b.send(packet)
    batch = core.PacketBatch(slots=8, slot_size=128)
    assert batch.read_from(a.fileno(), 0) == 0
    assert batch.read_from(a.fileno(), 2) == 2
    assert [bytes(p) for p in batch] == sent[:2]
    assert batch.read_from(a.fileno(), 100) == 3  # beyond the slots: clipped, the rest arrive in order
    assert [bytes(p) for p in batch] == sent[2:]


def test_full_batch_stops_and_the_rest_waits(core: SimpleNamespace, pair: Pair) -> None:
    a, b = pair
    sent = [payload(i, 100) for i in range(7)]
    for packet in sent:
        b.send(packet)
    batch = core.PacketBatch(slots=3, slot_size=128)
    received = []
    counts = []
    while count := batch.read_from(a.fileno()):
        counts.append(count)
        received += [bytes(p) for p in batch]
    assert counts == [3, 3, 1]
    assert received == sent


def test_packet_of_exactly_slot_size_and_truncation(core: SimpleNamespace, pair: Pair) -> None:
    a, b = pair
    exact, oversized, after = payload(1, 2048), payload(2, 3000), payload(3, 7)
    for packet in (exact, oversized, after):
        b.send(packet)
    batch = core.PacketBatch(slots=4, slot_size=2048)
    assert batch.read_from(a.fileno()) == 3
    assert bytes(batch.packet(0)) == exact
    # The kernel truncates a packet longer than the slot; the next packet is unaffected.
    assert bytes(batch.packet(1)) == oversized[:2048]
    assert bytes(batch.packet(2)) == after


def test_index_errors_and_clear(core: SimpleNamespace, pair: Pair) -> None:
    a, b = pair
    b.send(b"one")
    b.send(b"two")
    batch = core.PacketBatch(slots=4, slot_size=64)
    for i in (0, -1):
        with pytest.raises(IndexError):
            batch.packet(i)
    batch.read_from(a.fileno())
    for i in (-1, 2, 3, 4):
        with pytest.raises(IndexError):
            batch.packet(i)
        with pytest.raises(IndexError):
            batch.length(i)
    assert batch.length(1) == 3
    batch.clear()
    assert batch.count == len(batch) == 0
    assert list(batch) == []
    with pytest.raises(IndexError):
        batch.packet(0)


# --- errors --------------------------------------------------------------------------------------


def test_bad_fds_raise_ebadf(core: SimpleNamespace) -> None:
    a, b = make_pair()
    closed = a.detach()
    os.close(closed)
    b.close()
    batch = core.PacketBatch(slots=2, slot_size=64)
    for fd in (-1, closed):
        with pytest.raises(OSError) as info:
            batch.read_from(fd)
        assert info.value.errno == errno.EBADF
        assert batch.count == 0
        for write in (_plain, _vnet):
            with pytest.raises(OSError) as info:
                write(core, fd, [b"x"])
            assert info.value.errno == errno.EBADF
            assert info.value.packets_written == 0  # type: ignore[attr-defined]


def test_read_error_keeps_packets_already_read(core: SimpleNamespace, pair: Pair) -> None:
    a, b = pair
    make_blocking(a, socket.SO_RCVTIMEO)
    b.send(b"first")
    b.send(b"second")
    fd = a.detach()  # the handler closes it
    closed: list[int] = []

    def close_fd(signum: int, frame: FrameType | None) -> None:
        if not closed:
            os.close(fd)
            closed.append(fd)

    batch = core.PacketBatch(slots=3, slot_size=64)
    # The third read blocks; the handler runs on EINTR, the retried read() then fails with EBADF.
    with interrupting(close_fd), pytest.raises(OSError) as info:
        batch.read_from(fd)
    assert info.value.errno == errno.EBADF
    assert batch.count == 2
    assert [bytes(p) for p in batch] == [b"first", b"second"]


def test_read_retries_after_eintr(core: SimpleNamespace, pair: Pair) -> None:
    a, b = pair
    make_blocking(a, socket.SO_RCVTIMEO)
    b.send(b"first")
    calls: list[int] = []

    def supply(signum: int, frame: FrameType | None) -> None:
        # PEP 475: a handler that returns normally makes the interrupted read() resume.
        if not calls:
            b.send(b"late")
        calls.append(signum)

    batch = core.PacketBatch(slots=2, slot_size=64)
    with interrupting(supply):
        assert batch.read_from(a.fileno()) == 2
    assert calls
    assert [bytes(p) for p in batch] == [b"first", b"late"]


def test_blocking_read_releases_the_gil(core: SimpleNamespace, pair: Pair) -> None:
    a, b = pair
    make_blocking(a, socket.SO_RCVTIMEO)
    sender = threading.Timer(0.05, b.send, [b"from another thread"])
    sender.start()
    batch = core.PacketBatch(slots=1, slot_size=64)
    assert batch.read_from(a.fileno()) == 1
    sender.join()
    assert bytes(batch.packet(0)) == b"from another thread"


# --- write_packets and write_vnet_packets ------------------------------------------------------------

#: Stands in for a virtio_net_hdr: 10 distinct bytes the receiver must find before every packet.
HEADER = bytes(range(0xA0, 0xAA))
Writer = Callable[[SimpleNamespace, int, list[bytes]], int]


def _plain(core: SimpleNamespace, fd: int, packets: list[bytes]) -> int:
    return int(core.write_packets(fd, packets))


def _vnet(core: SimpleNamespace, fd: int, packets: list[bytes]) -> int:
    return int(core.write_vnet_packets(fd, [HEADER] * len(packets), packets))


@pytest.fixture(params=[(_plain, b""), (_vnet, HEADER)], ids=["write_packets", "write_vnet_packets"])
def writer(request: pytest.FixtureRequest) -> tuple[Writer, bytes]:
    """Each batched writer, with what it puts before every packet; the shared behaviour runs on both."""
    return request.param  # type: ignore[no-any-return]


def test_write_packets_writes_each_buffer_as_one_packet(core: SimpleNamespace, pair: Pair) -> None:
    a, b = pair
    packets = [b"bytes", bytearray(b"bytearray"), memoryview(b"--memoryview--")[2:-2], b"", payload(9, 1500)]
    assert core.write_packets(b.fileno(), packets) == len(packets)
    assert drain(core, a) == [bytes(p) for p in packets]
    assert core.write_packets(b.fileno(), []) == 0
    assert core.write_packets(b.fileno(), iter([b"any", b"iterable"])) == 2
    assert drain(core, a) == [b"any", b"iterable"]


def test_write_vnet_packets_puts_each_header_before_its_packet(core: SimpleNamespace, pair: Pair) -> None:
    a, b = pair
    headers = [HEADER, bytearray(b"0123456789"), memoryview(b"--abcdefghij--")[2:-2], HEADER]
    packets = [b"bytes", bytearray(b"bytearray"), memoryview(b"--memoryview--")[2:-2], payload(9, 1500)]
    assert core.write_vnet_packets(b.fileno(), headers, packets) == len(packets)
    assert drain(core, a) == [bytes(h) + bytes(p) for h, p in zip(headers, packets, strict=True)]
    assert core.write_vnet_packets(b.fileno(), [], []) == 0
    assert core.write_vnet_packets(b.fileno(), iter([HEADER, HEADER]), iter([b"any", b""])) == 2
    assert drain(core, a) == [HEADER + b"any", HEADER]  # an empty packet still carries its header


@pytest.mark.parametrize(("headers", "packets"), [(1, 2), (2, 1), (1, 0)])
def test_write_vnet_packets_needs_one_header_per_packet(
    core: SimpleNamespace, pair: Pair, headers: int, packets: int
) -> None:
    a, b = pair
    with pytest.raises(ValueError, match="headers for"):
        core.write_vnet_packets(b.fileno(), [HEADER] * headers, [b"packet"] * packets)
    assert drain(core, a) == []


def test_write_stops_at_eagain(core: SimpleNamespace, pair: Pair, writer: tuple[Writer, bytes]) -> None:
    a, b = pair
    write, prefix = writer
    b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    packets = [payload(i, 1000) for i in range(500)]
    written = write(core, b.fileno(), packets)
    assert 0 < written < len(packets)
    assert write(core, b.fileno(), packets[written:]) == 0  # still full: nothing more fits
    received = drain(core, a)
    assert received == [prefix + p for p in packets[:written]]
    assert write(core, b.fileno(), packets[written : written + 1]) == 1  # room again


def test_write_error_reports_packets_written(
    core: SimpleNamespace, pair: Pair, writer: tuple[Writer, bytes]
) -> None:
    a, b = pair
    write, prefix = writer
    sndbuf = b.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    with pytest.raises(OSError) as info:
        write(core, b.fileno(), [b"sent", bytes(sndbuf + 1), b"never"])
    assert info.value.errno == errno.EMSGSIZE
    assert info.value.packets_written == 1  # type: ignore[attr-defined]
    assert drain(core, a) == [prefix + b"sent"]


def test_write_interrupted_by_raising_handler(
    core: SimpleNamespace, pair: Pair, writer: tuple[Writer, bytes]
) -> None:
    a, b = pair
    write, prefix = writer
    make_blocking(b, socket.SO_SNDTIMEO)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)

    class Stop(OSError):
        pass

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Stop("interrupted")

    packets = [payload(i, 1000) for i in range(500)]
    # The socket fills and write() blocks; the handler's exception ends the loop with the count attached.
    with interrupting(stop), pytest.raises(Stop) as info:
        write(core, b.fileno(), packets)
    written = info.value.packets_written  # type: ignore[attr-defined]
    assert 0 < written < len(packets)
    assert drain(core, a) == [prefix + p for p in packets[:written]]


def test_blocking_write_releases_the_gil(
    core: SimpleNamespace, pair: Pair, writer: tuple[Writer, bytes]
) -> None:
    a, b = pair
    write, prefix = writer
    make_blocking(b, socket.SO_SNDTIMEO)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    packets = [payload(i, 1000) for i in range(100)]
    received: list[bytes] = []

    def receive() -> None:
        # Python code: it runs only while the writer, blocked on a full socket, has released the GIL.
        a.settimeout(BLOCK_SECONDS)
        while len(received) < len(packets):
            received.append(a.recv(4096))

    reader = threading.Thread(target=receive)
    reader.start()
    try:
        assert write(core, b.fileno(), packets) == len(packets)
    finally:
        reader.join(BLOCK_SECONDS * 2)
    assert received == [prefix + p for p in packets]


@pytest.mark.parametrize(
    ("bad", "error"), [(memoryview(b"abcdef")[::2], BufferError), ("text", TypeError), (None, TypeError)]
)
def test_write_packets_acquires_every_buffer_first(
    core: SimpleNamespace, pair: Pair, bad: object, error: type[Exception]
) -> None:
    a, b = pair
    with pytest.raises(error):
        core.write_packets(b.fileno(), [b"ok", bad])
    for headers, packets in (([HEADER, bad], [b"ok", b"ok"]), ([HEADER, HEADER], [b"ok", bad])):
        with pytest.raises(error):
            core.write_vnet_packets(b.fileno(), headers, packets)
    assert drain(core, a) == []  # nothing was written before the bad item was found


# --- round trip property -------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(sizes=st.lists(st.integers(0, 3000), max_size=20), slots=st.integers(1, 8))
def test_round_trip(core: SimpleNamespace, sizes: list[int], slots: int) -> None:
    a, b = make_pair()
    with a, b:
        sent = [payload(i, size) for i, size in enumerate(sizes)]
        headers = [payload(size, 10) for size in sizes]
        assert core.write_packets(b.fileno(), sent) == len(sent)
        assert core.write_vnet_packets(b.fileno(), headers, sent) == len(sent)
        batch = core.PacketBatch(slots=slots, slot_size=3010)
        received: list[bytes] = []
        while count := batch.read_from(a.fileno()):
            assert count <= slots
            received += [bytes(batch.packet(i)) for i in range(count)]
        assert received == sent + [h + p for h, p in zip(headers, sent, strict=True)]


# --- Parker and poll_waking ------------------------------------------------------------------------


def test_parker_times_out_then_wakes_once(core: SimpleNamespace) -> None:
    parker = core.Parker()
    assert parker.park(0.01) is False
    assert parker.park(0) is False
    parker.unpark()
    parker.unpark()  # one-shot: a second unpark does nothing
    assert parker.park(BLOCK_SECONDS) is True


def test_parker_wakes_a_thread_parked_without_limit(core: SimpleNamespace) -> None:
    parker = core.Parker()
    waker = threading.Timer(0.05, parker.unpark)
    waker.start()
    assert parker.park() is True
    waker.join()


def test_parker_runs_signal_handlers_and_lets_them_raise(core: SimpleNamespace) -> None:
    calls: list[int] = []

    def count(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)

    with interrupting(count):
        assert core.Parker().park(0.2) is False  # handlers ran, the wait went on to its timeout
    assert calls

    def fail(signum: int, frame: FrameType | None) -> None:
        raise InterruptedError("from the handler")

    with interrupting(fail), pytest.raises(InterruptedError, match="from the handler"):
        core.Parker().park(BLOCK_SECONDS)


def test_poll_waking_unparks_first_then_polls(core: SimpleNamespace, pair: Pair) -> None:
    a, b = pair
    parkers = [core.Parker(), core.Parker()]
    woken: list[bool] = []
    sleeper = threading.Thread(target=lambda: woken.append(parkers[0].park(BLOCK_SECONDS)))
    sleeper.start()
    assert core.poll_waking([a.fileno()], 50, parkers) == []  # nothing readable: the timeout
    sleeper.join(BLOCK_SECONDS)
    assert woken == [True] and parkers == []
    b.send(b"x")
    ready = core.poll_waking([b.fileno(), a.fileno()], BLOCK_SECONDS * 1000, [])
    assert ready == [(a.fileno(), select.POLLIN)]


def test_poll_waking_retries_after_eintr_and_reports_bad_fds(core: SimpleNamespace, pair: Pair) -> None:
    a, b = pair
    calls: list[int] = []

    def supply(signum: int, frame: FrameType | None) -> None:
        if not calls:
            b.send(b"late")
        calls.append(signum)

    with interrupting(supply):
        assert core.poll_waking([a.fileno()], BLOCK_SECONDS * 1000, []) == [(a.fileno(), select.POLLIN)]
    assert calls
    closed = os.dup(a.fileno())
    os.close(closed)
    assert core.poll_waking([closed], 0, []) == [(closed, select.POLLNVAL)]
