"""pytcp.aio against the kernel's TCP: the stack's asyncio streams in a network namespace the test creates,
the kernel's side as asyncio streams over sockets created in that namespace (one event loop drives both).

Only 198.18.0.0/15 (RFC 2544 benchmarking) addresses are used; every test is bounded by asyncio.wait_for.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import hashlib
import os
import socket
import struct
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from pytcp import aio
from pytcp.connection import TCPInfo
from pytcp.netns import NetNamespace, in_namespace
from pytcp.runtime import RuntimeNotRunning, StackRuntime
from pytcp.state import State

pytestmark = pytest.mark.netns

T = TypeVar("T")

KERNEL = "198.18.0.1"
STACK = "198.18.0.2"
PORT = 8080
STEP = 10.0  # one protocol step (replies take microseconds; CI may be loaded)
BULK_TIMEOUT = 120.0  # a 10 MB transfer each way through a Python stack on a loaded 2-core machine
BULK_BYTES = 10 * 1024 * 1024
CHUNK = 64 * 1024
STOP_TIMEOUT = 4.0

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(coro: Coroutine[Any, Any, T], timeout: float = STEP * 3) -> T:
    """Run one test body in a fresh event loop, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def runtime(request: pytest.FixtureRequest, netns: NetNamespace) -> Iterator[StackRuntime]:
    """A started runtime in ``netns``; ``offload`` follows an indirect parameter (default on)."""
    rt = StackRuntime.open(
        "pytcp0",
        stack_address=STACK,
        kernel_address=KERNEL,
        offload=getattr(request, "param", True),
        netns=netns,
    )
    rt.start()
    try:
        yield rt
    finally:
        rt.stop(STOP_TIMEOUT)


def kernel_socket(ns: NetNamespace) -> socket.socket:
    with in_namespace(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


async def kernel_connect(ns: NetNamespace, port: int = PORT, sndbuf: int = 0) -> socket.socket:
    sock = kernel_socket(ns)
    if sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)  # fixed: no autotuning
    try:
        await asyncio.get_running_loop().sock_connect(sock, (STACK, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def kernel_open(
    ns: NetNamespace, port: int = PORT
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(sock=await kernel_connect(ns, port))


def kernel_listener(ns: NetNamespace, port: int = PORT, rcvbuf: int = 0) -> socket.socket:
    sock = kernel_socket(ns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # inherited by accepted sockets
    sock.bind((KERNEL, port))
    sock.listen()
    return sock


async def kernel_server(ns: NetNamespace, handler: Handler, port: int = PORT) -> asyncio.Server:
    return await asyncio.start_server(handler, sock=kernel_listener(ns, port))


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo to EOF with drain (so back-pressure travels through), then close: FIN after the data."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> tuple[bytes, int]:
    """Write all of ``data`` then EOF while reading concurrently to EOF: (sha256 of what came back, bytes)."""

    async def send() -> None:
        view = memoryview(data)
        for offset in range(0, len(view), CHUNK):
            writer.write(view[offset : offset + CHUNK])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    digest, count = hashlib.sha256(), 0
    while chunk := await reader.read(1 << 18):
        digest.update(chunk)
        count += len(chunk)
    await sender
    return digest.digest(), count


async def stalled(probe: Callable[[], int], quiet: float = 0.3) -> int:
    """Wait (bounded by the caller) until ``probe()`` stops changing for ``quiet`` seconds; its value."""
    last = probe()
    while True:
        await asyncio.sleep(quiet)
        now = probe()
        if now == last:
            return now
        last = now


# -- data transfer -------------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", [True, False], ids=["offload", "no-offload"], indirect=True)
def test_kernel_client_bulk_echo_through_stack_server(runtime: StackRuntime, netns: NetNamespace) -> None:
    """10 MB each way; the kernel client writes everything while it reads the echo, so the data in
    flight is only limited by the transports' flow control, which must not deadlock."""
    data = os.urandom(BULK_BYTES)
    transports: list[asyncio.BaseTransport] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transports.append(writer.transport)
        await echo(reader, writer)

    async def main() -> None:
        async with await aio.start_server(runtime, handler, port=PORT) as server:
            reader, writer = await kernel_open(netns)
            digest, count = await exchange(reader, writer, data)
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()  # the echo connection is gone too
        assert count == len(data) and digest == hashlib.sha256(data).digest()

    run(main(), BULK_TIMEOUT)
    assert len(transports) == 1 and isinstance(transports[0], aio.StackTransport)
    counters = runtime.counters()
    assert counters["runtime"]["callback_errors"] == 0
    assert counters["mib"]["PassiveOpens"] == 1 and counters["mib"]["EstabResets"] == 0


def test_stack_client_bulk_echo_through_kernel_server(runtime: StackRuntime, netns: NetNamespace) -> None:
    data = os.urandom(BULK_BYTES)

    async def main() -> None:
        server = await kernel_server(netns, echo)
        async with server:
            reader, writer = await aio.open_connection(runtime, KERNEL, PORT)
            digest, count = await exchange(reader, writer, data)
            writer.close()
            await writer.wait_closed()
        assert count == len(data) and digest == hashlib.sha256(data).digest()

    run(main(), BULK_TIMEOUT)
    assert runtime.counters()["mib"]["ActiveOpens"] == 1


def test_half_close_from_stack_client(runtime: StackRuntime, netns: NetNamespace) -> None:
    """write_eof sends our FIN after the data; the kernel reads to EOF and only then answers."""
    data = os.urandom(1 << 20)

    async def digest_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(hashlib.sha256(await reader.read()).digest())
        writer.close()

    async def main() -> None:
        async with await kernel_server(netns, digest_server):
            reader, writer = await aio.open_connection(runtime, KERNEL, PORT)
            assert writer.can_write_eof()
            writer.write(data)
            writer.write_eof()
            await writer.drain()
            assert await reader.read() == hashlib.sha256(data).digest()
            assert reader.at_eof()
            with pytest.raises(RuntimeError):
                writer.write(b"after write_eof")
            writer.close()
            await writer.wait_closed()

    run(main())


def test_half_close_from_kernel_client(runtime: StackRuntime, netns: NetNamespace) -> None:
    """The kernel shuts down writing; the stack's server sees EOF, then still answers."""
    data = os.urandom(1 << 20)

    async def digest_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = await reader.read()
        assert reader.at_eof() and not writer.transport.is_closing()
        writer.write(hashlib.sha256(received).digest())
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with await aio.start_server(runtime, digest_server, port=PORT):
            reader, writer = await kernel_open(netns)
            writer.write(data)
            writer.write_eof()
            assert await reader.read() == hashlib.sha256(data).digest()
            writer.close()
            await writer.wait_closed()

    run(main())


def test_sync_client_connected_callback(runtime: StackRuntime, netns: NetNamespace) -> None:
    def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        writer.close()

    async def main() -> None:
        async with await aio.start_server(runtime, greet, port=PORT):
            reader, writer = await kernel_open(netns)
            assert await reader.readline() == b"hello\n"
            assert await reader.read() == b""
            writer.close()

    run(main())


def test_protocol_level_api(runtime: StackRuntime, netns: NetNamespace) -> None:
    """create_connection with a plain asyncio.Protocol: the callbacks in asyncio's order; eof_received
    returning a false value closes the transport, as asyncio's do."""

    class Recorder(asyncio.Protocol):
        def __init__(self) -> None:
            self.calls: list[object] = []
            self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.calls.append("made")

        def data_received(self, data: bytes) -> None:
            self.calls.append(data)

        def eof_received(self) -> None:
            self.calls.append("eof")

        def connection_lost(self, exc: Exception | None) -> None:
            self.calls.append(("lost", exc))
            self.lost.set_result(None)

    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        writer.close()

    async def main() -> None:
        async with await kernel_server(netns, hello):
            transport, protocol = await aio.create_connection(runtime, Recorder, KERNEL, PORT)
            assert isinstance(protocol, Recorder) and transport.get_protocol() is protocol
            transport.set_write_buffer_limits(high=1000)
            assert transport.get_write_buffer_limits() == (250, 1000)
            with pytest.raises(ValueError):
                transport.set_write_buffer_limits(high=10, low=20)
            await protocol.lost
            assert b"".join(c for c in protocol.calls if isinstance(c, bytes)) == b"hello"
            assert protocol.calls[0] == "made" and protocol.calls[-2:] == ["eof", ("lost", None)]
            assert transport.is_closing() and not transport.is_reading()

    run(main())


# -- flow control --------------------------------------------------------------------------------------


def test_drain_blocks_on_a_slow_kernel_reader(runtime: StackRuntime, netns: NetNamespace) -> None:
    """Nobody reads on the kernel side: drain() must block with the transport buffer within its high
    mark (plus one write), and the bytes accepted overall bounded by the buffers on the way."""
    total = 8 * 1024 * 1024
    data = os.urandom(total)
    kernel_rcvbuf = 64 * 1024

    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener = kernel_listener(netns, rcvbuf=kernel_rcvbuf)
        with listener:
            _reader, writer = await aio.open_connection(runtime, KERNEL, PORT)
            peer, _ = await loop.sock_accept(listener)
        transport = writer.transport
        low, high = transport.get_write_buffer_limits()
        assert (low, high) == (16 * 1024, 64 * 1024)
        written = 0
        sizes: list[int] = []

        async def send() -> None:
            nonlocal written
            for offset in range(0, total, CHUNK):
                writer.write(data[offset : offset + CHUNK])
                written += CHUNK
                sizes.append(transport.get_write_buffer_size())
                await writer.drain()

        sender = asyncio.create_task(send())
        with peer:
            await asyncio.wait_for(stalled(lambda: written), STEP)
            assert not sender.done(), "drain() did not block"
            assert max(sizes) <= high + CHUNK
            # kernel receive buffer (doubled by the kernel, as getsockopt reports it) + the engine's send
            # buffer + the transport's high mark + one write
            rcvbuf = peer.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            bound = rcvbuf + runtime.stack.config.send_buffer + high + CHUNK
            assert written <= bound, f"{written} bytes accepted with nobody reading (bound {bound})"
            digest, count = hashlib.sha256(), 0
            while count < total:
                chunk = await loop.sock_recv(peer, 1 << 18)
                assert chunk
                digest.update(chunk)
                count += len(chunk)
            await sender
        assert digest.digest() == hashlib.sha256(data).digest()
        # The section that handed the last bytes to the engine posted their count to this loop before they
        # left (events are dispatched before output), so it runs in the loop's next turn at the latest:
        # the peer may read them first when that section ran on another thread.
        await asyncio.sleep(0)
        assert max(sizes) <= high + CHUNK and transport.get_write_buffer_size() == 0
        writer.close()
        await writer.wait_closed()

    run(main())


def test_paused_reading_closes_the_window(runtime: StackRuntime, netns: NetNamespace) -> None:
    """The stack's server does not read: its StreamReader pauses the transport, the engine's receive
    buffer fills and its window closes, so the kernel's sends stop; then everything arrives intact."""
    release = asyncio.Event()
    infos: list[TCPInfo] = []
    limit = 64 * 1024

    async def late_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        infos.append(writer.get_extra_info("tcp_info"))
        received = await reader.read()
        writer.write(hashlib.sha256(received).digest())
        writer.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with await aio.start_server(runtime, late_reader, port=PORT, limit=limit):
            sock = await kernel_connect(netns, sndbuf=64 * 1024)
            with sock:
                sent = 0
                block = os.urandom(CHUNK)
                digest = hashlib.sha256()

                def wake(future: asyncio.Future[None]) -> None:
                    if not future.done():
                        future.set_result(None)

                async def push() -> None:
                    """Send whenever the socket takes more: the stack's window alone stops it."""
                    nonlocal sent
                    while True:
                        try:
                            n = sock.send(block)
                        except BlockingIOError:
                            writable = loop.create_future()
                            loop.add_writer(sock, wake, writable)
                            try:
                                await writable
                            finally:
                                loop.remove_writer(sock)
                            continue
                        digest.update(block[:n])
                        sent += n

                pusher = asyncio.create_task(push())
                try:
                    await asyncio.wait_for(stalled(lambda: sent), STEP)
                finally:
                    pusher.cancel()
                sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
                config = runtime.stack.config
                # kernel send buffer + engine receive buffer (autotuned up to max_buffer while the
                # StreamReader still reads) + what is on its way to the protocol + the StreamReader's
                # pause threshold (2 * limit) + one read
                bound = sndbuf + config.max_buffer + aio.READ_AHEAD + 2 * limit + aio.READ_CHUNK
                assert sent <= bound, f"{sent} bytes accepted with nobody reading (bound {bound})"
                release.set()
                sock.shutdown(socket.SHUT_WR)
                reply = await loop.sock_recv(sock, 64)
                assert reply == digest.digest()
        # Closed: less than a segment left (the advertised window is scaled, so it may end at a few bytes).
        info = infos[0]
        assert info.readable > 0 and info.rcv_wnd < info.rcv_mss, info

    run(main())


# -- errors --------------------------------------------------------------------------------------------


def test_connection_refused(runtime: StackRuntime, netns: NetNamespace) -> None:
    async def main() -> None:
        with pytest.raises(ConnectionRefusedError):
            await aio.open_connection(runtime, KERNEL, PORT + 1)
        with pytest.raises(OSError):
            await aio.open_connection(runtime, "0.0.0.0", PORT)
        with pytest.raises(socket.gaierror):
            await aio.open_connection(runtime, "localhost", PORT)

    run(main())
    assert runtime.counters()["mib"]["AttemptFails"] >= 1


def test_connection_reset_by_the_kernel(runtime: StackRuntime, netns: NetNamespace) -> None:
    """SO_LINGER 0 on the kernel side: RST; the stack's reader and writer raise ConnectionResetError."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with kernel_listener(netns) as listener:
            reader, writer = await aio.open_connection(runtime, KERNEL, PORT)
            peer, _ = await loop.sock_accept(listener)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        with pytest.raises(ConnectionResetError):
            await reader.read()
        assert writer.transport.is_closing()
        with pytest.raises(ConnectionResetError):
            await writer.drain()
        writer.close()
        with pytest.raises(ConnectionResetError):
            await writer.wait_closed()

    run(main())


def test_abort_sends_rst(runtime: StackRuntime, netns: NetNamespace) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with kernel_listener(netns) as listener:
            _reader, writer = await aio.open_connection(runtime, KERNEL, PORT)
            peer, _ = await loop.sock_accept(listener)
        with peer:
            writer.write(b"x" * 1000)
            writer.transport.abort()
            await writer.wait_closed()  # connection_lost(None)
            with pytest.raises(ConnectionResetError):
                while await loop.sock_recv(peer, 65536):
                    pass

    run(main())


def test_runtime_stop_ends_the_streams(runtime: StackRuntime, netns: NetNamespace) -> None:
    """The runtime sends FIN, then resets what is still open when its grace period ends: the transport
    reports ECONNABORTED; writing afterwards fails instead of hanging."""

    release, finished = asyncio.Event(), asyncio.Event()

    async def lingering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Reads the stack's FIN but keeps its own side open until the test is over."""
        assert await reader.read() == b""
        await release.wait()
        writer.close()
        finished.set()

    async def main() -> None:
        async with await kernel_server(netns, lingering):
            reader, writer = await aio.open_connection(runtime, KERNEL, PORT)
            await asyncio.to_thread(runtime.stop, 1.0)
            with pytest.raises(ConnectionAbortedError):
                await reader.read()
            writer.write(b"after stop")
            with pytest.raises(ConnectionAbortedError):
                await writer.drain()
            writer.close()
            release.set()
            await finished.wait()

    run(main())


class _Crash(BaseException):
    """Escapes the loop thread's reader guard (it catches Exception), as a bug in the loop would."""


def test_runtime_crash_ends_the_streams(runtime: StackRuntime, netns: NetNamespace) -> None:
    """The loop thread dies without a graceful stop: a pending read and a pending drain fail with
    RuntimeNotRunning (ENETDOWN) instead of hanging, a server stops serving, and a write afterwards
    fails too."""
    kernel_rcvbuf = 64 * 1024

    def crash() -> None:
        raise _Crash("simulated loop-thread failure")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await aio.start_server(runtime, echo)
        serving = asyncio.create_task(server.serve_forever())
        with kernel_listener(netns, rcvbuf=kernel_rcvbuf) as listener:
            reader, writer = await aio.open_connection(runtime, KERNEL, PORT)
            peer, _ = await loop.sock_accept(listener)
        with peer:
            reading = asyncio.create_task(reader.read())
            writer.write(os.urandom(4 * 1024 * 1024))  # nobody reads it: far above every buffer
            draining = asyncio.create_task(writer.drain())
            done, _ = await asyncio.wait([reading, draining, serving], timeout=0.3)
            assert not done, "the read, the drain and the server should all be pending"
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            try:
                await asyncio.wrap_future(runtime.call(runtime.add_reader, fd, crash))
                os.eventfd_write(fd, 1)
                for task in (reading, draining):
                    with pytest.raises(OSError) as caught:
                        await task
                    assert isinstance(caught.value, RuntimeNotRunning)
                    assert caught.value.errno == errno.ENETDOWN
                with pytest.raises(asyncio.CancelledError):
                    await serving  # as asyncio's: closing the server ends serve_forever
            finally:
                os.close(fd)
        assert isinstance(runtime.failure, _Crash) and not server.is_serving()
        writer.write(b"after the crash")
        with pytest.raises(RuntimeNotRunning):
            await writer.drain()
        writer.close()
        with pytest.raises(RuntimeNotRunning):  # as asyncio's: the error connection_lost reported
            await writer.wait_closed()

    run(main())


# -- addresses, many connections, server lifecycle -----------------------------------------------------


def test_extra_info_and_local_port(runtime: StackRuntime, netns: NetNamespace) -> None:
    async def main() -> None:
        peers: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue()

        async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await peers.put((writer.get_extra_info("peername"), writer.get_extra_info("sockname")))
            await reader.read()
            writer.close()

        async with await kernel_server(netns, record):
            _reader, writer = await aio.open_connection(runtime, KERNEL, PORT, local_port=40001)
            assert writer.get_extra_info("peername") == (KERNEL, PORT)
            assert writer.get_extra_info("sockname") == (STACK, 40001)
            assert writer.get_extra_info("socket") is None
            assert writer.get_extra_info("nonexistent", 42) == 42
            info = writer.get_extra_info("tcp_info")
            assert isinstance(info, TCPInfo) and info.state is State.ESTABLISHED
            assert await peers.get() == ((STACK, 40001), (KERNEL, PORT))
            with pytest.raises(OSError):  # EADDRNOTAVAIL: that 4-tuple is in use
                await aio.open_connection(runtime, KERNEL, PORT, local_port=40001)
            writer.close()
            await writer.wait_closed()

        async def server_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await peers.put((writer.get_extra_info("peername"), writer.get_extra_info("sockname")))
            writer.close()

        async with await aio.start_server(runtime, server_side, host=STACK, port=PORT) as server:
            assert server.get_sockname() == (STACK, PORT)
            assert server.sockets[0].getsockname() == (STACK, PORT)
            sock = await kernel_connect(netns)
            with sock:
                assert await peers.get() == (sock.getsockname(), (STACK, PORT))

    run(main())


def test_fifty_concurrent_connections(runtime: StackRuntime, netns: NetNamespace) -> None:
    count = 50

    async def client(index: int) -> None:
        data = os.urandom(32 * 1024 + index)
        reader, writer = await kernel_open(netns)
        digest, received = await exchange(reader, writer, data)
        assert received == len(data) and digest == hashlib.sha256(data).digest()
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        async with await aio.start_server(runtime, echo, port=PORT, backlog=count):
            await asyncio.gather(*(client(i) for i in range(count)))

    run(main(), STEP * 6)
    assert runtime.counters()["mib"]["PassiveOpens"] == count


def test_server_close(runtime: StackRuntime, netns: NetNamespace) -> None:
    """close() stops accepting but keeps open connections; wait_closed waits for them; serve_forever
    ends when the server closes; an ephemeral port is chosen for port 0."""

    async def main() -> None:
        server = await aio.start_server(runtime, echo)
        host, port = server.get_sockname()
        assert host == "0.0.0.0" and 32768 <= port < 61000 and server.is_serving()
        serving = asyncio.create_task(server.serve_forever())
        reader, writer = await kernel_open(netns, port)
        writer.write(b"before")
        assert await reader.readexactly(6) == b"before"
        server.close()
        assert not server.is_serving() and server.sockets == ()
        with pytest.raises(ConnectionRefusedError):
            await kernel_connect(netns, port)
        writer.write(b"after")  # the accepted connection is untouched
        assert await reader.readexactly(5) == b"after"
        # As Python 3.12's: wait_closed, and serve_forever ending on close, wait for the connections.
        done, _ = await asyncio.wait([serving, asyncio.create_task(server.wait_closed())], timeout=0.2)
        assert not done
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(server.wait_closed(), STEP)
        with pytest.raises(asyncio.CancelledError):
            await serving
        # The port is free again.
        async with await aio.start_server(runtime, echo, port=port) as again:
            assert again.get_sockname() == ("0.0.0.0", port)
            with pytest.raises(OSError):
                await aio.start_server(runtime, echo, port=port)  # EADDRINUSE

    run(main())


def test_a_stopped_runtime_is_not_kept_alive_by_what_was_open(netns: NetNamespace) -> None:
    """A server and a stream still open when the runtime stops end, and keep no reference to it."""

    async def main() -> weakref.ref[StackRuntime]:
        rt = StackRuntime.open("pytcp0", stack_address=STACK, kernel_address=KERNEL, netns=netns).start()
        server = await aio.start_server(rt, echo)
        with kernel_listener(netns) as listener:
            _, writer = await aio.open_connection(rt, KERNEL, PORT)
            peer, _ = await asyncio.get_running_loop().sock_accept(listener)
        with peer:
            rt.stop(STOP_TIMEOUT)
            for _ in range(100):  # the end callback's posts run on this loop
                if not server.is_serving() and writer.is_closing():
                    break
                await asyncio.sleep(0.01)
        assert not server.is_serving() and writer.is_closing()
        return weakref.ref(rt)

    ref = run(main())
    gc.collect()
    assert ref() is None, [type(r).__name__ for r in gc.get_referrers(ref())]
