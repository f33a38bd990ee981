"""The socket API (pytcp.socket) on the real stack and a TUN device, against kernel sockets inside a network
namespace created by the test (root only). Each behaviour is checked as Python's socket module shows it
on Linux: the same exceptions, errno values and return values.

Only 198.18.0.0/15 (RFC 2544 benchmarking) addresses are used, and every wait is bounded.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

import pytest

from pytcp.netns import NetNamespace, in_namespace
from pytcp.runtime import StackRuntime
from pytcp.socket import Socket

pytestmark = pytest.mark.netns

KERNEL = "198.18.0.1"
STACK = "198.18.0.2"
SILENT = "198.18.0.3"  # inside the prefix but nobody's: the namespace does not forward, SYNs vanish
PORT = 8080
STEP = 15.0  # bound for one transfer or protocol step (replies take microseconds; CI may be loaded)
BULK = 10 * 1024 * 1024
SHORT = 0.3  # a timeout that must expire


@pytest.fixture
def runtime(netns: NetNamespace) -> Iterator[StackRuntime]:
    with StackRuntime.open("pytcp0", stack_address=STACK, kernel_address=KERNEL, netns=netns) as rt:
        yield rt


def kernel_socket(ns: NetNamespace) -> socket.socket:
    with in_namespace(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(STEP)
    return sock


def kernel_listener(ns: NetNamespace, port: int = PORT) -> socket.socket:
    sock = kernel_socket(ns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((KERNEL, port))
    sock.listen(64)
    return sock


def run_thread(target: Callable[[], object]) -> Callable[[], None]:
    """Start ``target`` in a daemon thread; the returned function joins it (bounded) and re-raises."""
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()

    def join() -> None:
        thread.join(STEP)
        assert not thread.is_alive(), "helper thread hung"
        if errors:
            raise errors[0]

    return join


def exchange(sock: socket.socket | Socket, data: bytes) -> bytes:
    """Send ``data`` then half-close from a second thread while reading to EOF; returns the bytes read."""

    def write() -> None:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)

    join = run_thread(write)
    received = bytearray()
    buffer = bytearray(256 * 1024)
    while n := sock.recv_into(buffer):
        received += buffer[:n]
    join()
    return bytes(received)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def kernel_peer(listener: socket.socket, handler: Callable[[socket.socket], object]) -> Callable[[], None]:
    """Accept one connection in a thread and run ``handler`` on it; returns the join function."""

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(STEP)
            handler(conn)

    return run_thread(serve)


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
def test_bulk_stack_client_to_kernel_server(offload: bool, netns: NetNamespace) -> None:
    to_kernel, to_stack = os.urandom(BULK), os.urandom(BULK)
    got: dict[str, bytes] = {}
    with (
        StackRuntime.open("pytcp0", netns=netns, offload=offload) as rt,
        kernel_listener(netns) as listener,
    ):
        join = kernel_peer(listener, lambda conn: got.setdefault("kernel", exchange(conn, to_stack)))
        with rt.socket() as client:
            client.settimeout(STEP)
            client.connect((KERNEL, PORT))
            got["stack"] = exchange(client, to_kernel)
        join()
    assert sha(got["kernel"]) == sha(to_kernel)
    assert sha(got["stack"]) == sha(to_stack)


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
def test_bulk_kernel_client_to_stack_server(offload: bool, netns: NetNamespace) -> None:
    to_kernel, to_stack = os.urandom(BULK), os.urandom(BULK)
    got: dict[str, bytes] = {}
    with StackRuntime.open("pytcp0", netns=netns, offload=offload) as rt, rt.socket() as server:
        server.bind(("", PORT))
        server.listen()

        def kernel_client() -> None:
            with kernel_socket(netns) as sock:
                sock.connect((STACK, PORT))
                got["kernel"] = exchange(sock, to_kernel)

        join = run_thread(kernel_client)
        server.settimeout(STEP)
        conn, (host, _) = server.accept()
        with conn:
            assert host == KERNEL
            conn.settimeout(STEP)
            got["stack"] = exchange(conn, to_stack)
        join()
    assert sha(got["kernel"]) == sha(to_stack)
    assert sha(got["stack"]) == sha(to_kernel)


def timed(fn: Callable[[], object], error: type[BaseException]) -> float:
    start = time.monotonic()
    with pytest.raises(error):
        fn()
    return time.monotonic() - start


def test_timeouts(runtime: StackRuntime, netns: NetNamespace) -> None:
    with runtime.socket() as server:
        server.listen()
        server.settimeout(SHORT)
        assert server.gettimeout() == SHORT
        assert SHORT <= timed(server.accept, TimeoutError) < STEP
    with runtime.socket() as lost:
        lost.settimeout(SHORT)
        assert SHORT <= timed(lambda: lost.connect((SILENT, PORT)), socket.timeout) < STEP
    with kernel_listener(netns) as listener:
        silent_until = threading.Event()
        join = kernel_peer(listener, lambda conn: silent_until.wait(STEP))
        with runtime.socket() as client:
            client.settimeout(STEP)
            client.connect((KERNEL, PORT))
            client.settimeout(SHORT)
            assert SHORT <= timed(lambda: client.recv(1), TimeoutError) < STEP
            # The kernel reads nothing: its receive buffer and our send buffer fill, then sendall times out.
            assert SHORT <= timed(lambda: client.sendall(bytes(64 << 20)), TimeoutError) < STEP
        silent_until.set()
        join()


def test_non_blocking(runtime: StackRuntime, netns: NetNamespace) -> None:
    with kernel_listener(netns) as listener, runtime.socket() as client:
        done = threading.Event()

        def echo_once(conn: socket.socket) -> None:
            conn.sendall(conn.recv(5))
            done.wait(STEP)  # no FIN until the test is done

        join = kernel_peer(listener, echo_once)
        client.setblocking(False)
        assert not client.getblocking() and client.gettimeout() == 0.0
        with pytest.raises(BlockingIOError) as caught:
            client.connect((KERNEL, PORT))
        assert caught.value.errno == errno.EINPROGRESS
        deadline = time.monotonic() + STEP
        while (code := client.connect_ex((KERNEL, PORT))) in (errno.EALREADY, errno.EINPROGRESS):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert code == errno.EISCONN
        with pytest.raises(BlockingIOError) as caught:
            client.recv(10)
        assert caught.value.errno == errno.EAGAIN
        assert client.send(b"hello") == 5
        client.setblocking(True)
        client.settimeout(STEP)
        assert client.recv(5) == b"hello"
        with pytest.raises(BlockingIOError):
            client.recv(1, socket.MSG_DONTWAIT)
        done.set()
        join()
    with runtime.socket() as server:
        server.setblocking(False)
        server.listen()
        with pytest.raises(BlockingIOError):
            server.accept()


def test_connection_refused(runtime: StackRuntime) -> None:
    with runtime.socket() as client:
        client.settimeout(STEP)
        with pytest.raises(ConnectionRefusedError) as caught:
            client.connect((KERNEL, PORT))
        assert caught.value.errno == errno.ECONNREFUSED
    with runtime.socket() as client:
        client.settimeout(STEP)
        assert client.connect_ex((KERNEL, PORT)) == errno.ECONNREFUSED
    with runtime.socket() as client:
        client.setblocking(False)
        assert client.connect_ex((KERNEL, PORT)) == errno.EINPROGRESS
        deadline = time.monotonic() + STEP
        while (error := client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)) == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert error == errno.ECONNREFUSED
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0  # reported once, as Linux


def test_reset_when_kernel_aborts(runtime: StackRuntime, netns: NetNamespace) -> None:
    connected = threading.Event()

    def abort(conn: socket.socket) -> None:
        # Once connect() returned (a reset before that would be connect's error, as on Linux), close
        # with a zero linger time: RST.
        connected.wait(STEP)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with kernel_listener(netns) as listener, runtime.socket() as client:
        join = kernel_peer(listener, abort)
        client.settimeout(STEP)
        client.connect((KERNEL, PORT))
        connected.set()
        join()
        with pytest.raises(ConnectionResetError) as caught:
            client.recv(10)
        assert caught.value.errno == errno.ECONNRESET
        # Linux reports the error once: then end of file, and EPIPE for writes.
        assert client.recv(10) == b""
        with pytest.raises(BrokenPipeError):
            client.send(b"x")


def test_epipe_after_shutdown(runtime: StackRuntime, netns: NetNamespace) -> None:
    with kernel_listener(netns) as listener, runtime.socket() as client:
        join = kernel_peer(
            listener, lambda conn: conn.sendall(b"eof seen" if conn.recv(1) == b"" else b"data")
        )
        client.settimeout(STEP)
        client.connect((KERNEL, PORT))
        client.shutdown(socket.SHUT_WR)
        with pytest.raises(BrokenPipeError) as caught:
            client.send(b"x")
        assert caught.value.errno == errno.EPIPE
        with pytest.raises(BrokenPipeError):
            client.sendall(b"x")
        assert client.recv(100) == b"eof seen"  # the other direction still flows
        join()


def test_socket_options_round_trip(runtime: StackRuntime, netns: NetNamespace) -> None:
    tcp, sol = socket.IPPROTO_TCP, socket.SOL_SOCKET
    values = {
        (tcp, socket.TCP_NODELAY): 1,
        (sol, socket.SO_KEEPALIVE): 1,
        (tcp, socket.TCP_KEEPIDLE): 30,
        (tcp, socket.TCP_KEEPINTVL): 5,
        (tcp, socket.TCP_KEEPCNT): 4,
        (tcp, socket.TCP_USER_TIMEOUT): 12000,
        (sol, socket.SO_RCVBUF): 65536,
        (sol, socket.SO_SNDBUF): 131072,
    }
    config = runtime.stack.config
    with runtime.socket() as fresh:
        assert fresh.getsockopt(tcp, socket.TCP_NODELAY) == int(config.nodelay)
        assert fresh.getsockopt(tcp, socket.TCP_KEEPIDLE) == config.keepalive_time
        assert fresh.getsockopt(sol, socket.SO_RCVBUF) == config.recv_buffer
        assert fresh.getsockopt(sol, socket.SO_TYPE) == socket.SOCK_STREAM
        assert fresh.getsockopt(sol, socket.SO_ERROR) == 0
        assert fresh.getsockopt(tcp, socket.TCP_NODELAY, 4) == struct.pack("i", int(config.nodelay))
        for bad in (
            (tcp, socket.TCP_KEEPIDLE, 0),
            (tcp, socket.TCP_KEEPCNT, 128),
            (tcp, socket.TCP_USER_TIMEOUT, -1),
        ):
            with pytest.raises(OSError) as caught:
                fresh.setsockopt(*bad)
            assert caught.value.errno == errno.EINVAL
        for level, name in ((tcp, socket.TCP_CORK), (socket.IPPROTO_IP, socket.IP_TTL)):
            with pytest.raises(OSError) as caught:
                fresh.getsockopt(level, name)
            assert caught.value.errno == errno.ENOPROTOOPT
        fresh.setsockopt(sol, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert struct.unpack("ii", fresh.getsockopt(sol, socket.SO_LINGER)) == (1, 0)

    with kernel_listener(netns) as listener, runtime.socket() as client:
        join = kernel_peer(listener, lambda conn: conn.recv(1))
        # Set before connect (applied to the new connection), read back after; then set again after.
        for (level, name), value in values.items():
            client.setsockopt(level, name, value)
        client.settimeout(STEP)
        client.connect((KERNEL, PORT))
        for (level, name), value in values.items():
            assert client.getsockopt(level, name) == value, (level, name)
        client.setsockopt(tcp, socket.TCP_NODELAY, 0)
        client.setsockopt(tcp, socket.TCP_KEEPIDLE, struct.pack("i", 60))
        assert client.getsockopt(tcp, socket.TCP_NODELAY) == 0
        assert client.getsockopt(tcp, socket.TCP_KEEPIDLE) == 60
        client.sendall(b"x")
        join()

    with runtime.socket() as server:
        server.setsockopt(tcp, socket.TCP_NODELAY, 1)
        server.setsockopt(sol, socket.SO_KEEPALIVE, 1)
        server.listen()
        assert server.getsockopt(sol, socket.SO_ACCEPTCONN) == 1
        with kernel_socket(netns) as sock:
            sock.connect((STACK, server.getsockname()[1]))
            server.settimeout(STEP)
            child, _ = server.accept()
            with child:  # inherited from the listener, as Linux
                assert child.getsockopt(tcp, socket.TCP_NODELAY) == 1
                assert child.getsockopt(sol, socket.SO_KEEPALIVE) == 1


def test_addresses_and_binding(runtime: StackRuntime, netns: NetNamespace) -> None:
    with runtime.socket() as server:
        assert server.getsockname() == ("0.0.0.0", 0)
        with pytest.raises(OSError) as caught:
            server.getpeername()
        assert caught.value.errno == errno.ENOTCONN
        with pytest.raises(OSError) as caught:
            server.bind(("198.18.0.9", PORT))
        assert caught.value.errno == errno.EADDRNOTAVAIL
        server.bind((STACK, PORT))
        assert server.getsockname() == (STACK, PORT)
        with pytest.raises(OSError) as caught:
            server.bind((STACK, PORT + 1))
        assert caught.value.errno == errno.EINVAL  # already bound
        server.listen()
        with runtime.socket() as rival:
            with pytest.raises(OSError) as caught:
                rival.bind(("", PORT))
            assert caught.value.errno == errno.EADDRINUSE
            rival.bind(("", 0))
            assert 32768 <= rival.getsockname()[1] < 61000
        with kernel_socket(netns) as sock:
            sock.connect((STACK, PORT))
            server.settimeout(STEP)
            child, peer = server.accept()
            with child:
                assert peer == sock.getsockname()
                assert child.getpeername() == sock.getsockname()
                assert child.getsockname() == (STACK, PORT) == sock.getpeername()

    with kernel_listener(netns) as listener, runtime.socket() as client:
        join = kernel_peer(listener, lambda conn: conn.recv(1))
        client.settimeout(STEP)
        client.connect((KERNEL, PORT))
        host, port = client.getsockname()
        assert host == STACK and port > 0
        assert client.getpeername() == (KERNEL, PORT)
        client.sendall(b"x")
        join()


def test_errors_on_unconnected_and_closed_sockets(runtime: StackRuntime) -> None:
    sock = runtime.socket()
    assert sock.fileno() == -1
    with pytest.raises(OSError) as caught:
        sock.recv(1)
    assert caught.value.errno == errno.ENOTCONN
    with pytest.raises(BrokenPipeError):
        sock.send(b"x")  # Linux: EPIPE on an unconnected TCP socket
    for call, code in (
        (lambda: sock.shutdown(socket.SHUT_RDWR), errno.ENOTCONN),
        (sock.accept, errno.EINVAL),
    ):
        with pytest.raises(OSError) as caught:
            call()
        assert caught.value.errno == code
    with pytest.raises(OSError) as caught:
        sock.shutdown(7)
    assert caught.value.errno == errno.EINVAL
    sock.close()
    sock.close()  # idempotent
    for call in (
        lambda: sock.recv(1),
        lambda: sock.send(b"x"),
        sock.getsockname,
        lambda: sock.connect((KERNEL, PORT)),
    ):
        with pytest.raises(OSError) as caught:
            call()
        assert caught.value.errno == errno.EBADF
    with pytest.raises(OSError) as caught:
        Socket(runtime, socket.AF_INET6)
    assert caught.value.errno == errno.EAFNOSUPPORT


def test_twenty_concurrent_connections(runtime: StackRuntime, netns: NetNamespace) -> None:
    count, size = 20, 256 * 1024

    def echo(conn: socket.socket) -> None:
        while chunk := conn.recv(65536):
            conn.sendall(chunk)

    def server() -> None:
        joins = []
        with kernel_listener(netns) as listener:
            ready.set()
            for _ in range(count):
                joins.append(kernel_peer_accepted(listener.accept()[0], echo))
        for join in joins:
            join()

    def kernel_peer_accepted(
        conn: socket.socket, handler: Callable[[socket.socket], None]
    ) -> Callable[[], None]:
        def run() -> None:
            with conn:
                conn.settimeout(STEP)
                handler(conn)

        return run_thread(run)

    results: dict[int, tuple[str, str]] = {}

    def client(index: int) -> None:
        data = os.urandom(size)
        with runtime.socket() as sock:
            sock.settimeout(STEP)
            sock.connect((KERNEL, PORT))
            results[index] = (sha(data), sha(exchange(sock, data)))

    ready = threading.Event()
    join_server = run_thread(server)
    assert ready.wait(STEP)
    joins = [run_thread(lambda i=i: client(i)) for i in range(count)]
    for join in joins:
        join()
    join_server()
    assert len(results) == count
    assert all(sent == echoed for sent, echoed in results.values())


def test_blocked_call_fails_when_runtime_stops(netns: NetNamespace) -> None:
    runtime = StackRuntime.open("pytcp0", stack_address=STACK, kernel_address=KERNEL, netns=netns).start()
    try:
        server = runtime.socket()
        server.listen()
        errors: list[OSError] = []

        def accept() -> None:
            try:
                server.accept()
            except OSError as exc:
                errors.append(exc)

        join = run_thread(accept)
        time.sleep(0.1)
    finally:
        runtime.stop()
    join()
    assert [exc.errno for exc in errors] == [errno.ENETDOWN]
    server.close()  # after the runtime is gone: quietly closed


def recv_exactly(sock: socket.socket | Socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "peer closed early"
        data += chunk
    return bytes(data)


def test_send_and_recv_run_on_the_calling_thread(runtime: StackRuntime, netns: NetNamespace) -> None:
    """On an established connection send and recv queue no call for the loop thread: the calling thread
    runs the engine and writes the segment itself, so it has left by the time sendall returns (nothing
    else could have made the loop send it: no call, and no packet from the peer before it)."""

    def echo(conn: socket.socket) -> None:
        while chunk := conn.recv(65536):
            conn.sendall(chunk)

    with kernel_listener(netns) as listener:
        join = kernel_peer(listener, echo)
        with runtime.socket() as sock:
            sock.settimeout(STEP)
            sock.connect((KERNEL, PORT))
            calls = runtime.counters()["runtime"]["calls"]
            for index in range(20):
                sent = runtime.counters()["runtime"]["tx_packets"]
                message = bytes([index]) * (100 + index)
                sock.sendall(message)
                assert runtime.counters()["runtime"]["tx_packets"] > sent
                assert recv_exactly(sock, len(message)) == message
            assert runtime.counters()["runtime"]["calls"] == calls
        join()


def test_idle_recv_sleeps_before_its_first_attempt(runtime: StackRuntime, netns: NetNamespace) -> None:
    """A request-response server's recv, issued right after its reply, finds nothing: it sleeps on the
    connection's waiter without running a section first (Socket._sleep_while), and every request still
    wakes it. Two sections per round trip on the server's thread (the recv that reads, the sendall),
    not three; an idle recv still honours its timeout once."""
    rounds = 200
    sections: list[int] = []
    run = runtime.run

    def counting_run(fn: Callable[..., object], *args: object) -> object:
        sections.append(threading.get_ident())
        return run(fn, *args)

    runtime.run = counting_run  # type: ignore[method-assign]
    with runtime.socket() as listener:
        listener.bind((STACK, PORT))
        listener.listen()
        listener.settimeout(STEP)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(STEP)
                buffer = bytearray(64)
                conn.recv_into(buffer)  # the first request: a section that blocks makes the waiter
                conn.sendall(b"x")
                server_sections = sections.count(threading.get_ident())
                for _ in range(rounds):
                    n = conn.recv_into(buffer)
                    assert n == 1
                    conn.sendall(buffer[:n])
                per_round = (sections.count(threading.get_ident()) - server_sections) / rounds
                assert per_round <= 2.1, per_round
                conn.settimeout(SHORT)
                assert SHORT <= timed(lambda: conn.recv(1), TimeoutError) < 2 * SHORT + 0.5

        join = run_thread(serve)
        with kernel_socket(netns) as client:
            client.connect((STACK, PORT))
            for index in range(rounds + 1):
                client.sendall(b"r")
                assert client.recv(1) == (b"r" if index else b"x")
            join()


def test_threads_racing_on_sockets(runtime: StackRuntime, netns: NetNamespace) -> None:
    """Accepts, connects, sends, receives and closes from many threads at once, two threads on one
    socket, closes under a blocked recv: every byte arrives, every thread ends in bounded time (a race on
    the engine lock or a lost wake-up would corrupt a stream or hang a join)."""
    clients, rounds, blob = 6, 40, 200 * 1024
    joins: list[Callable[[], None]] = []

    def echo(conn: Socket | socket.socket) -> None:
        with conn:
            conn.settimeout(STEP)
            while chunk := conn.recv(4096):
                conn.sendall(chunk)

    def drain(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(STEP)
            while conn.recv(4096):
                pass

    def kernel_server(port: int, handler: Callable[[socket.socket], None], count: int) -> None:
        with kernel_listener(netns, port) as listener:
            ready.release()
            handlers = [run_thread(partial(handler, listener.accept()[0])) for _ in range(count)]
        for join in handlers:
            join()

    def stack_server(count: int) -> None:
        handlers = [run_thread(partial(echo, listening.accept()[0])) for _ in range(count)]
        for join in handlers:
            join()

    def kernel_client(seed: int) -> None:
        """Request-response rounds against the stack's echo server."""
        rng = random.Random(seed)
        with kernel_socket(netns) as sock:
            sock.connect((STACK, PORT))
            for _ in range(rounds):
                message = rng.randbytes(rng.randrange(1, 3000))
                sock.sendall(message)
                assert recv_exactly(sock, len(message)) == message

    def duplex_client(seed: int) -> None:
        """One thread writes while another reads the echo, on the same stack socket."""
        data = random.Random(seed).randbytes(blob)
        with runtime.socket() as sock:
            sock.settimeout(STEP)
            sock.connect((KERNEL, PORT))
            assert exchange(sock, data) == data

    def closed_under_recv() -> None:
        """close() from one thread wakes a recv blocked in another, which fails with EBADF."""
        sock = runtime.socket()
        sock.settimeout(STEP)
        sock.connect((KERNEL, PORT + 1))
        blocked = threading.Event()

        def reader() -> None:
            blocked.set()
            with pytest.raises(OSError) as caught:
                sock.recv(1)
            assert caught.value.errno == errno.EBADF

        join = run_thread(reader)
        assert blocked.wait(STEP)
        time.sleep(0.01)
        sock.close()
        join()

    ready = threading.Semaphore(0)
    joins.append(run_thread(lambda: kernel_server(PORT, echo, clients)))
    joins.append(run_thread(lambda: kernel_server(PORT + 1, drain, clients)))
    for _ in range(2):
        assert ready.acquire(timeout=STEP)
    with runtime.socket() as listening:
        listening.settimeout(STEP)
        listening.bind((STACK, PORT))
        listening.listen()
        joins.append(run_thread(lambda: stack_server(clients)))
        for index in range(clients):
            joins.append(run_thread(partial(kernel_client, index)))
            joins.append(run_thread(partial(duplex_client, index)))
            joins.append(run_thread(closed_under_recv))
        for join in joins:
            join()
    counters = runtime.counters()["runtime"]
    assert counters["callback_errors"] == 0
