"""The interop matrix with the real Linux TCP as the peer: the stack on a TUN device and kernel sockets in a
network namespace the test creates (root only; see conftest.py).

Every behaviour runs in both roles -- kernel client to stack server, stack client to kernel server --
and, where the data path differs, with the TUN offloads on and off (offload on: the kernel hands the stack
64 KB TSO super-packets with trusted checksums; off: MTU-sized packets whose checksums the stack verifies).
The lossy variants lose random packets in both directions with the iptables statistic match in the
namespace (netem is not available; see inject_loss for why the kernel's own packets are not simply
dropped in OUTPUT), and check that the senders retransmitted.

Safety: only 198.18.0.0/15 (RFC 2544 benchmarking) addresses, only inside namespaces the tests create (the
iptables rules die with them); every wait is bounded; the only processes started are curl and the ip/ss/
iptables/nstat commands, each run to completion with a timeout or killed by pid when its namespace closes.
Transfers print their throughput (``pytest -s`` shows it).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import random
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import tcpcore
from pytcp.netns import NetNamespace, in_namespace, run_ip, veth_pair
from pytcp.runtime import StackRuntime
from pytcp.services import PATTERN_PERIOD, PATTERN_SEED, Services
from pytcp.socket import Socket

pytestmark = pytest.mark.netns

KERNEL = "198.18.0.1"
STACK = "198.18.0.2"
PORT = 8080
HTTP_PORT = 80
#: Bound for one protocol step or one blocking call (a reply takes microseconds; CI machines are loaded).
STEP = 15.0
#: A transfer of n bytes must finish within STEP + n / MIN_RATE seconds: a hang detector, not a
#: benchmark. 0.5 MB/s is a third of the slowest case measured (the stack sending through 5 % loss).
MIN_RATE = 0.5e6
#: Bytes per send call and per read: the stack's default socket buffers (TCPConfig, 256 KiB).
CHUNK = 256 * 1024
#: The bulk transfers: 100 MB. The pure-Python twins verify every checksum in Python (~2.5x slower than
#: the compiled core here: ~40 vs ~100 MB/s one way); 100 MB still fits the time budget, so the size is
#: the same for both and only the lossy echo is smaller.
BULK = 100 * 10**6
#: The echo through a lossy link, both directions at once: 20 MB keeps the 5 % case (~1.5 MB/s for the
#: stack's direction) at a quarter of a minute.
LOSSY_ECHO = 20 * 10**6
#: Second streams start this far into the random block, so the two directions of one connection differ.
SHIFT = 4099
SEQUENTIAL = 300
CONCURRENT = 100
CONCURRENT_BYTES = 64 * 1024
#: Keep-alive settings of the keep-alive test, in seconds and probes (Linux's minimums are 1).
KEEPIDLE, KEEPINTVL, KEEPCNT = 1, 1, 3

#: The loss injection's sink (see inject_loss): a veth pair, a routing table and a firewall mark.
LOSS_DEVICE, LOSS_SINK, LOSS_TABLE, LOSS_MARK = "loss0", "loss1", "100", "1"

#: The far side of the path MTU test: a namespace routed through the kernel side of the TUN.
FAR_ROUTER, FAR = "198.18.1.1", "198.18.1.2"

KERNEL_CLIENT = "kernel-client"  # the kernel connects to a stack listener
STACK_CLIENT = "stack-client"  # the stack connects to a kernel listener
ROLES = pytest.mark.parametrize("role", [KERNEL_CLIENT, STACK_CLIENT])
OFFLOAD = pytest.mark.parametrize("runtime", [True, False], ids=["offload", "no-offload"], indirect=True)
LOSS = pytest.mark.parametrize("loss", [0.01, 0.05], ids=["loss1pct", "loss5pct"])

AnySocket = Socket | socket.socket


# -- fixtures and helpers ---------------------------------------------------------------------------------


@pytest.fixture
def runtime(request: pytest.FixtureRequest, netns: NetNamespace) -> Iterator[StackRuntime]:
    """A running stack at STACK in ``netns``, offload on unless parametrised (OFFLOAD)."""
    offload: bool = getattr(request, "param", True)
    rt = StackRuntime.open("pytcp0", stack_address=STACK, kernel_address=KERNEL, offload=offload, netns=netns)
    with rt:
        yield rt
    assert rt.failure is None, f"the runtime's loop thread failed: {rt.failure!r}"


@pytest.fixture(scope="module", autouse=True)
def _release_streams() -> Iterator[None]:
    """The random block (100 MB) is shared by this module's tests, then released."""
    yield
    stream.cache_clear()
    _random_block.cache_clear()


@functools.cache
def _random_block() -> bytes:
    return os.urandom(BULK + SHIFT)


@functools.cache
def stream(size: int, shift: int = 0) -> tuple[memoryview, str]:
    """``size`` random bytes (the same object for the whole module run) and their SHA-256."""
    data = memoryview(_random_block())[shift : shift + size]
    return data, hashlib.sha256(data).hexdigest()


def bound(size: int) -> float:
    return STEP + size / MIN_RATE


def kernel_socket(ns: NetNamespace) -> socket.socket:
    with in_namespace(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(STEP)
    return sock


def kernel_listener(ns: NetNamespace, port: int = PORT, address: str = KERNEL) -> socket.socket:
    sock = kernel_socket(ns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(2 * CONCURRENT)  # room for every concurrent SYN: no retransmitted SYNs slow the test
    return sock


def spawn(target: Callable[[], object]) -> Callable[[float], None]:
    """Run ``target`` in a daemon thread; the returned function joins it within ``timeout`` and re-raises
    its exception."""
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()

    def join(timeout: float = STEP) -> None:
        thread.join(timeout)
        assert not thread.is_alive(), "a helper thread hung"
        if errors:
            raise errors[0]

    return join


def wait_for(condition: Callable[[], bool], what: str, timeout: float = STEP) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def send_stream(sock: AnySocket, data: memoryview, deadline: float) -> None:
    """Everything in CHUNK-sized sendall calls (each bounded by the socket's STEP timeout, so a stall
    fails fast), then FIN."""
    for offset in range(0, len(data), CHUNK):
        assert time.monotonic() < deadline, "transfer deadline passed while sending"
        sock.sendall(data[offset : offset + CHUNK])
    sock.shutdown(socket.SHUT_WR)


def drain(sock: AnySocket, deadline: float) -> tuple[int, str]:
    """Read to EOF; (bytes read, their SHA-256)."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    total = 0
    while True:
        try:
            count = sock.recv_into(buffer)
        except TimeoutError as exc:
            raise AssertionError(f"stalled: nothing for {STEP} s after {total} bytes") from exc
        if not count:
            return total, digest.hexdigest()
        assert time.monotonic() < deadline, "transfer deadline passed while receiving"
        digest.update(view[:count])
        total += count


def transfer(sender: AnySocket, receiver: AnySocket, size: int, shift: int = 0) -> float:
    """``size`` bytes from the random block then FIN, sender to receiver, checked by SHA-256; the seconds
    taken."""
    data, digest = stream(size, shift)
    start = time.monotonic()
    deadline = start + bound(size)
    join = spawn(functools.partial(send_stream, sender, data, deadline))
    received = drain(receiver, deadline)
    join(max(0.0, deadline - time.monotonic()))
    assert received == (size, digest), "the data differs from what was sent"
    return time.monotonic() - start


def recv_exactly(sock: AnySocket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "unexpected end of stream"
        data += chunk
    return bytes(data)


def rate(label: str, size: int, seconds: float, extra: str = "") -> None:
    print(
        f"[{tcpcore.IMPLEMENTATION}] {label}: {size / 1e6:.0f} MB in {seconds:.2f} s = "
        f"{size / seconds / 1e6:.1f} MB/s {extra}"
    )


@contextmanager
def connected(
    rt: StackRuntime, ns: NetNamespace, role: str, configure: Callable[[Socket], None] | None = None
) -> Iterator[tuple[Socket, socket.socket]]:
    """An established connection as (stack socket, kernel socket), both closed afterwards. ``configure``
    sets options on the stack's socket before connect, or on its listener (the child inherits them)."""
    if role == KERNEL_CLIENT:
        with rt.socket() as listener:
            if configure is not None:
                configure(listener)
            listener.settimeout(STEP)
            listener.bind(("", PORT))
            listener.listen()
            kernel = kernel_socket(ns)
            try:
                kernel.connect((STACK, PORT))
                stack, _ = listener.accept()
            except BaseException:
                kernel.close()
                raise
    else:
        with kernel_listener(ns) as listener:
            stack = rt.socket()
            try:
                if configure is not None:
                    configure(stack)
                stack.settimeout(STEP)
                stack.connect((KERNEL, PORT))
                kernel, _ = listener.accept()
            except BaseException:
                stack.close()
                raise
    stack.settimeout(STEP)
    kernel.settimeout(STEP)
    with stack, kernel:
        yield stack, kernel


def client_and_server(role: str, stack: Socket, kernel: socket.socket) -> tuple[AnySocket, AnySocket]:
    return (kernel, stack) if role == KERNEL_CLIENT else (stack, kernel)


class KernelEchoServer:
    """RFC 862 echo on kernel sockets in the namespace: one thread per connection; each connection is
    closed after the client's FIN, when everything has been echoed."""

    POLL = 0.1  # how often the acceptor checks for the end of the test

    def __init__(self, ns: NetNamespace) -> None:
        self._listener = kernel_listener(ns)
        self._listener.settimeout(self.POLL)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> KernelEchoServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._acceptor.join(STEP)
        self._listener.close()
        deadline = time.monotonic() + STEP
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not self._acceptor.is_alive() and not any(t.is_alive() for t in self._threads)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _echo(self, conn: socket.socket) -> None:
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        with conn:
            conn.settimeout(STEP)
            try:
                while count := conn.recv_into(buffer):
                    conn.sendall(view[:count])
            except OSError as exc:
                self.errors.append(exc)


@contextmanager
def echo_server(rt: StackRuntime, ns: NetNamespace, role: str) -> Iterator[None]:
    """An echo server on PORT on the server side of ``role``: pytcp.services on the stack, or the kernel."""
    if role == KERNEL_CLIENT:
        services = Services(rt).start(echo=PORT)
        try:
            yield
        finally:
            services.stop(STEP)
        return
    with KernelEchoServer(ns) as server:
        yield
    assert not server.errors, server.errors


def connect_client(rt: StackRuntime, ns: NetNamespace, role: str) -> AnySocket:
    """A client socket of ``role``'s client side, connected to PORT on the other side."""
    sock: AnySocket
    if role == KERNEL_CLIENT:
        sock, address = kernel_socket(ns), (STACK, PORT)
    else:
        sock, address = rt.socket(), (KERNEL, PORT)
        sock.settimeout(STEP)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def echo_stream(sock: AnySocket, size: int) -> float:
    """Write ``size`` bytes from a helper thread while this one reads the echo: no limit on the data in
    flight. Returns the seconds taken."""
    data, digest = stream(size)
    deadline = time.monotonic() + bound(2 * size)
    start = time.monotonic()
    join = spawn(lambda: send_stream(sock, data, deadline))
    received = drain(sock, deadline)
    join(max(0.0, deadline - time.monotonic()))
    assert received == (size, digest), "the echo differs from what was sent"
    return time.monotonic() - start


def stack_state(rt: StackRuntime, stack_port: int, kernel_port: int) -> str | None:
    """The state the stack's connection table shows for the flow, None when it has none."""
    local, remote = f"{STACK}:{stack_port}", f"{KERNEL}:{kernel_port}"
    for row in rt.connections_table(STEP):
        if row["local"] == local and row["remote"] == remote:
            state: str = row["state"]
            return state
    return None


def ss(ns: NetNamespace, *filters: str) -> list[list[str]]:
    return [line.split() for line in ns.run(["ss", "-tanH", *filters], timeout=STEP).stdout.splitlines()]


def kernel_state(ns: NetNamespace, kernel_port: int, stack_port: int) -> str | None:
    """The state `ss` shows for the kernel's socket of the flow (ESTAB, CLOSE-WAIT...), None if gone."""
    local, peer = f"{KERNEL}:{kernel_port}", f"{STACK}:{stack_port}"
    for state, _, _, row_local, row_peer, *_ in ss(ns):
        if (row_local, row_peer) == (local, peer):
            return state
    return None


def ports(stack: Socket, kernel: socket.socket) -> tuple[int, int]:
    return stack.getsockname()[1], kernel.getsockname()[1]


def mib(rt: StackRuntime) -> dict[str, int]:
    return rt.counters(STEP)["mib"]


def inject_loss(ns: NetNamespace, probability: float) -> None:
    """Lose a random ``probability`` of the TCP packets in each direction, as a network would.

    From the stack: the INPUT chain drops them. From the kernel, a DROP in OUTPUT would not be loss:
    netfilter returns -EPERM to tcp_transmit_skb, which keeps the segment unsent and sends it again later,
    so no hole ever reaches the stack. Instead the mangle OUTPUT chain marks the chosen packets and a policy
    route sends marked packets into a veth whose peer discards them (its MAC is not theirs: OTHERHOST),
    while TCP believes they left. The drop unit is what netfilter sees: with TSO/GSO a whole super-packet.
    """
    statistic = ["-p", "tcp", "-m", "statistic", "--mode", "random", "--probability", str(probability)]
    veth_pair(ns, ns, name_a=LOSS_DEVICE, name_b=LOSS_SINK)
    run_ip("link", "set", LOSS_DEVICE, "arp", "off", netns=ns.name)  # frames leave at once, to its own MAC
    run_ip("route", "add", "default", "dev", LOSS_DEVICE, "table", LOSS_TABLE, netns=ns.name)
    run_ip("rule", "add", "fwmark", LOSS_MARK, "lookup", LOSS_TABLE, netns=ns.name)
    mark = ["-j", "MARK", "--set-mark", LOSS_MARK]
    ns.run(["iptables", "-A", "INPUT", *statistic, "-j", "DROP"], timeout=STEP)
    ns.run(["iptables", "-t", "mangle", "-A", "OUTPUT", *statistic, *mark], timeout=STEP)


def dropped(ns: NetNamespace) -> int:
    """Packets lost so far: dropped by INPUT plus marked (and so discarded) by mangle OUTPUT."""
    total = 0
    for table, chain in (("filter", "INPUT"), ("mangle", "OUTPUT")):
        out = ns.run(["iptables", "-t", table, "-nvxL", chain], timeout=STEP).stdout
        total += sum(
            int(line.split()[0]) for line in out.splitlines() if line.split()[2:3] in (["DROP"], ["MARK"])
        )
    return total


def kernel_retransmissions(ns: NetNamespace) -> int:
    """The namespace's TcpRetransSegs: segments the kernel retransmitted (nstat -a: absolute, -s: leave
    nstat's history file alone)."""
    out = ns.run(["nstat", "-asz", "TcpRetransSegs"], timeout=STEP).stdout
    return next(int(line.split()[1]) for line in out.splitlines() if line.startswith("TcpRetransSegs"))


# -- handshake ---------------------------------------------------------------------------------------------

_TCP_INFO_HEAD = struct.Struct("8B4I")  # struct tcp_info up to tcpi_rcv_mss (include/uapi/linux/tcp.h)
_TCPI_OPT_TIMESTAMPS, _TCPI_OPT_SACK, _TCPI_OPT_WSCALE = 1, 2, 4
_TCP_ESTABLISHED = 1


@OFFLOAD
@ROLES
def test_handshake_negotiates_options(role: str, runtime: StackRuntime, netns: NetNamespace) -> None:
    with connected(runtime, netns, role) as (stack, kernel):
        stack_port, kernel_port = ports(stack, kernel)
        assert stack.getpeername() == (KERNEL, kernel_port) and kernel.getpeername() == (STACK, stack_port)
        assert stack_state(runtime, stack_port, kernel_port) == "ESTABLISHED"
        assert kernel_state(netns, kernel_port, stack_port) == "ESTAB"
        raw = kernel.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_HEAD.size)
        k_state, _, _, _, _, k_options, k_wscale, _, _, _, k_snd_mss, _ = _TCP_INFO_HEAD.unpack(raw)
        conn = stack.connection
        assert conn is not None
        info = runtime.call(conn.info).result(STEP)
        # Both ends agree on SACK, timestamps and window scaling (RFC 2018, RFC 7323).
        assert k_state == _TCP_ESTABLISHED
        assert k_options & _TCPI_OPT_SACK and info.sack
        assert k_options & _TCPI_OPT_TIMESTAMPS and info.timestamps
        assert k_options & _TCPI_OPT_WSCALE
        # tcpi_snd_wscale is the low nibble: the shift the kernel applies to our windows, which we chose.
        assert (k_wscale & 0xF, k_wscale >> 4) == (info.rcv_wscale, info.snd_wscale)
        # MSS 1460 each way (MTU 1500); the payload per segment excludes the 12 bytes of the timestamp
        # option on both sides (Linux tcpi_snd_mss is mss_cache).
        assert info.snd_mss == k_snd_mss == 1460 - 12
        stack.sendall(b"ping")
        assert recv_exactly(kernel, 4) == b"ping"
        kernel.sendall(b"pong")
        assert recv_exactly(stack, 4) == b"pong"
    counters = mib(runtime)
    assert counters["ActiveOpens" if role == STACK_CLIENT else "PassiveOpens"] == 1


# -- bulk data ---------------------------------------------------------------------------------------------


@OFFLOAD
@ROLES
def test_bulk_each_way(role: str, runtime: StackRuntime, netns: NetNamespace) -> None:
    """BULK bytes client to server and the client's FIN; then BULK other bytes server to client and FIN.
    Each direction is timed on its own."""
    offload = "offload" if runtime.tun.offload else "no-offload"
    with connected(runtime, netns, role) as (stack, kernel):
        client, server = client_and_server(role, stack, kernel)
        for sender, receiver, shift in ((client, server, 0), (server, client, SHIFT)):
            seconds = transfer(sender, receiver, BULK, shift)
            direction = "stack->kernel" if sender is stack else "kernel->stack"
            rate(f"{role} {direction} {offload}", BULK, seconds)
    assert mib(runtime)["EstabResets"] == 0


@OFFLOAD
@ROLES
def test_echo_both_directions_at_once(role: str, runtime: StackRuntime, netns: NetNamespace) -> None:
    """The client writes BULK bytes without waiting while it reads the echo: both directions full at once.
    An echo server blocks in sendall while the client has not read, so any flow-control bug stalls it."""
    with echo_server(runtime, netns, role), connect_client(runtime, netns, role) as client:
        seconds = echo_stream(client, BULK)
    offload = "offload" if runtime.tun.offload else "no-offload"
    rate(f"{role} echo {offload} (per direction)", BULK, seconds)
    assert mib(runtime)["EstabResets"] == 0


# -- closing -----------------------------------------------------------------------------------------------


@ROLES
@pytest.mark.parametrize("first", ["stack", "kernel"])
def test_half_close(role: str, first: str, runtime: StackRuntime, netns: NetNamespace) -> None:
    """``first`` sends a megabyte and shuts down writing; the other side reads to EOF, then sends a megabyte
    of its own through the half-closed connection (itself in CLOSE-WAIT, ``first`` in FIN-WAIT-2)."""
    size = 1 << 20
    with connected(runtime, netns, role) as (stack, kernel):
        stack_port, kernel_port = ports(stack, kernel)
        closer, other = (stack, kernel) if first == "stack" else (kernel, stack)
        transfer(closer, other, size)

        def states() -> tuple[str | None, str | None]:
            return stack_state(runtime, stack_port, kernel_port), kernel_state(netns, kernel_port, stack_port)

        expected = ("FIN-WAIT-2", "CLOSE-WAIT") if first == "stack" else ("CLOSE-WAIT", "FIN-WAIT-2")
        wait_for(lambda: states() == expected, f"states {expected}")
        transfer(other, closer, size, SHIFT)
        with pytest.raises(BrokenPipeError):
            closer.send(b"after shutdown")


@ROLES
@pytest.mark.parametrize("closer", ["stack", "kernel"])
def test_time_wait_on_the_active_closer(
    role: str, closer: str, runtime: StackRuntime, netns: NetNamespace
) -> None:
    with connected(runtime, netns, role) as (stack, kernel):
        stack_port, kernel_port = ports(stack, kernel)
        active, passive = (stack, kernel) if closer == "stack" else (kernel, stack)
        active.close()
        assert passive.recv(1) == b""
        passive.close()
    if closer == "stack":
        wait_for(lambda: stack_state(runtime, stack_port, kernel_port) == "TIME-WAIT", "stack TIME-WAIT")
        # The passive closer's LAST-ACK ends with our ACK: no TIME-WAIT there.
        wait_for(lambda: kernel_state(netns, kernel_port, stack_port) is None, "kernel socket gone")
    else:
        flow = [f"{KERNEL}:{kernel_port}", f"{STACK}:{stack_port}"]
        wait_for(lambda: any(row[2:4] == flow for row in ss(netns, "state", "time-wait")), "kernel TIME-WAIT")
        wait_for(lambda: stack_state(runtime, stack_port, kernel_port) is None, "stack connection gone")


@ROLES
@pytest.mark.parametrize("aborter", ["stack", "kernel"])
def test_abort_with_rst(role: str, aborter: str, runtime: StackRuntime, netns: NetNamespace) -> None:
    """SO_LINGER with a zero time: close sends RST, and the peer's next recv raises ECONNRESET."""
    linger = struct.pack("ii", 1, 0)
    with connected(runtime, netns, role) as (stack, kernel):
        stack_port, kernel_port = ports(stack, kernel)
        victim: AnySocket
        if aborter == "kernel":
            kernel.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            kernel.close()
            victim = stack
        else:
            stack.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            stack.close()
            victim = kernel
        with pytest.raises(ConnectionResetError) as caught:
            victim.recv(10)
        assert caught.value.errno == errno.ECONNRESET
    counters = mib(runtime)
    if aborter == "kernel":
        assert counters["EstabResets"] == 1
    else:
        assert counters["OutRsts"] >= 1
        wait_for(lambda: kernel_state(netns, kernel_port, stack_port) is None, "kernel socket gone")
    assert stack_state(runtime, stack_port, kernel_port) is None  # an abort leaves no TIME-WAIT


@ROLES
def test_connect_to_closed_port_is_refused(role: str, runtime: StackRuntime, netns: NetNamespace) -> None:
    sock: AnySocket
    if role == KERNEL_CLIENT:
        sock, address = kernel_socket(netns), (STACK, PORT)
    else:
        sock, address = runtime.socket(), (KERNEL, PORT)
        sock.settimeout(STEP)
    with sock, pytest.raises(ConnectionRefusedError) as caught:
        sock.connect(address)
    assert caught.value.errno == errno.ECONNREFUSED
    counters = mib(runtime)
    if role == KERNEL_CLIENT:
        assert counters["OutRsts"] == 1  # the RST for the SYN (RFC 9293 3.10.7.1)
    else:
        assert counters["AttemptFails"] == 1 and counters["CurrEstab"] == 0


@pytest.mark.parametrize(
    ("reject_with", "expected"),
    [("icmp-port-unreachable", errno.ECONNREFUSED), ("icmp-host-unreachable", errno.EHOSTUNREACH)],
)
def test_icmp_unreachable_ends_a_connect(
    reject_with: str, expected: int, runtime: StackRuntime, netns: NetNamespace
) -> None:
    """The kernel answers the stack's SYN with an ICMP error (iptables REJECT): connect fails at once
    with the errno Linux reports (RFC 1122 4.2.3.9, Linux tcp_v4_err), not after the SYN retries."""
    rule = ["INPUT", "-p", "tcp", "--dport", str(PORT), "-j", "REJECT", "--reject-with", reject_with]
    netns.run(["iptables", "-w", "5", "-A", *rule], timeout=STEP)
    sock = runtime.socket()
    sock.settimeout(STEP)
    with sock, pytest.raises(OSError) as caught:
        sock.connect((KERNEL, PORT))
    assert caught.value.errno == expected
    counters = mib(runtime)
    assert counters["InDestUnreachs"] == 1 and counters["AttemptFails"] == 1
    assert counters["TCPTimeouts"] == 0, "the first SYN's error ends the attempt, not the SYN retries"


def test_path_mtu_discovery(
    runtime: StackRuntime, netns: NetNamespace, make_netns: Callable[[str], NetNamespace]
) -> None:
    """RFC 1191 with the kernel as the router: the kernel receiver sits behind a 1000-byte-MTU veth but
    announces a 1460-byte MSS (route advmss), so the stack's first full segments (DF set) come back as
    ICMP "fragmentation needed"; the stack lowers its MSS to 960, resends, and every byte arrives."""
    far = make_netns("far")
    veth_pair(netns, far, name_a="pmtu0", name_b="pmtu1", address_a=FAR_ROUTER, address_b=FAR, mtu=1000)
    netns.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], timeout=STEP)
    run_ip("route", "add", f"{STACK}/32", "via", FAR_ROUTER, "advmss", "1460", netns=far.name)
    with kernel_listener(far, address=FAR) as listener:
        sock = runtime.socket()
        sock.settimeout(STEP)
        with sock:
            sock.connect((FAR, PORT))
            peer, _ = listener.accept()
            with peer:
                peer.settimeout(STEP)
                transfer(sock, peer, 2 * 10**6)
                (row,) = runtime.connections_table()
    assert row["mss"] == 960 - 12  # 1000 - 40, less the timestamp option
    counters = mib(runtime)
    assert counters["InDestUnreachs"] >= 1 and counters["RetransSegs"] >= 1


# -- many connections --------------------------------------------------------------------------------------


@ROLES
def test_sequential_connections(role: str, runtime: StackRuntime, netns: NetNamespace) -> None:
    """SEQUENTIAL connect / exchange / close in a row; the client closes first each time."""
    with echo_server(runtime, netns, role):
        start = time.monotonic()
        for index in range(SEQUENTIAL):
            message = f"connection {index:04d} ".encode() * 4
            with connect_client(runtime, netns, role) as client:
                client.sendall(message)
                assert recv_exactly(client, len(message)) == message
        seconds = time.monotonic() - start
    print(f"[{tcpcore.IMPLEMENTATION}] {role}: {SEQUENTIAL} connections in {seconds:.2f} s")
    counters = mib(runtime)
    assert counters["ActiveOpens" if role == STACK_CLIENT else "PassiveOpens"] == SEQUENTIAL
    assert counters["EstabResets"] == 0 and counters["AttemptFails"] == 0
    if role == STACK_CLIENT:  # the stack closed first every time: each connection waits in TIME-WAIT
        wait_for(
            lambda: sum(row["state"] == "TIME-WAIT" for row in runtime.connections_table(STEP)) == SEQUENTIAL,
            f"{SEQUENTIAL} TIME-WAIT connections",
        )


@ROLES
def test_concurrent_connections(role: str, runtime: StackRuntime, netns: NetNamespace) -> None:
    """CONCURRENT threads connect, wait until all are connected, then each echoes its own 64 KB."""
    established: list[int] = []

    def count_established() -> None:
        # A kernel client's connect returns before the stack has processed its ACK: allow a moment.
        deadline = time.monotonic() + STEP
        while True:
            rows = runtime.connections_table(STEP)
            count = sum(row["state"] == "ESTABLISHED" for row in rows)
            if count >= CONCURRENT or time.monotonic() > deadline:
                established.append(count)
                return
            time.sleep(0.01)

    barrier = threading.Barrier(CONCURRENT, action=count_established, timeout=STEP)
    echoed: list[int] = []

    def client(index: int) -> None:
        data = random.Random(index).randbytes(CONCURRENT_BYTES)
        with connect_client(runtime, netns, role) as sock:
            barrier.wait()
            sock.sendall(data)  # fits the send buffer: no writer thread needed
            sock.shutdown(socket.SHUT_WR)
            received = bytearray()
            while chunk := sock.recv(CHUNK):
                received += chunk
        assert received == data, f"connection {index}: the echo differs"
        echoed.append(index)

    with echo_server(runtime, netns, role):
        joins = [spawn(functools.partial(client, index)) for index in range(CONCURRENT)]
        deadline = time.monotonic() + 4 * STEP
        for join in joins:
            join(max(0.0, deadline - time.monotonic()))
    assert sorted(echoed) == list(range(CONCURRENT))
    assert established and established[0] >= CONCURRENT, established
    counters = mib(runtime)
    assert counters["EstabResets"] == 0 and counters["ListenDrops"] == 0


# -- keep-alive --------------------------------------------------------------------------------------------


@ROLES
def test_keepalive_answered_then_timed_out(role: str, runtime: StackRuntime, netns: NetNamespace) -> None:
    """The stack probes an idle connection; the kernel answers every probe, so it survives more probes than
    KEEPCNT. Then the namespace drops the flow and the connection fails with ETIMEDOUT."""

    def keepalive(sock: Socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPIDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPINTVL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPCNT)

    with connected(runtime, netns, role, configure=keepalive) as (stack, kernel):
        stack_port, kernel_port = ports(stack, kernel)
        # KEEPCNT + 1 probes: had the kernel not answered, the connection would have died at KEEPCNT.
        wait_for(
            lambda: mib(runtime)["TCPKeepAlive"] > KEEPCNT,
            "keep-alive probes",
            timeout=STEP + (KEEPCNT + 1) * (KEEPIDLE + KEEPINTVL),
        )
        assert stack_state(runtime, stack_port, kernel_port) == "ESTABLISHED"
        assert kernel_state(netns, kernel_port, stack_port) == "ESTAB"
        netns.run(
            ["iptables", "-I", "INPUT", "-p", "tcp", "-s", STACK, "--sport", str(stack_port),
             "-d", KERNEL, "--dport", str(kernel_port), "-j", "DROP"],
            timeout=STEP,
        )  # fmt: skip
        start = time.monotonic()
        with pytest.raises(TimeoutError) as caught:
            stack.recv(1)
        elapsed = time.monotonic() - start
        assert caught.value.errno == errno.ETIMEDOUT, "the socket timeout expired instead"
        # Idle time, then KEEPCNT unanswered probes KEEPINTVL apart (Linux tcp_keepalive_timer).
        assert elapsed < KEEPIDLE + KEEPCNT * KEEPINTVL + 3.0, elapsed
        assert kernel_state(netns, kernel_port, stack_port) == "ESTAB"  # it never heard of the end
    assert mib(runtime)["TCPAbortOnTimeout"] == 1


# -- HTTP with curl ----------------------------------------------------------------------------------------


def expected_body_digest(length: int) -> str:
    """SHA-256 of /bytes/<length> built from the documented contract, not from the server's code: byte i is
    PATTERN[i % PATTERN_PERIOD], PATTERN = random.Random(PATTERN_SEED).randbytes(PATTERN_PERIOD)."""
    pattern = random.Random(PATTERN_SEED).randbytes(PATTERN_PERIOD)
    digest = hashlib.sha256()
    whole, rest = divmod(length, PATTERN_PERIOD)
    for _ in range(whole):
        digest.update(pattern)
    digest.update(pattern[:rest])
    return digest.hexdigest()


def curl(ns: NetNamespace, timeout: float, *args: str) -> str:
    """Run curl in the namespace (bounded: --max-time, and killed by pid past ``timeout``); its -w output."""
    process = ns.popen(
        ["curl", "-sS", "--fail", "--max-time", str(timeout), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=timeout + STEP)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(timeout=STEP)
        raise
    assert process.returncode == 0, f"curl failed ({process.returncode}): {err}"
    return str(out)


@OFFLOAD
def test_curl_downloads_bytes(runtime: StackRuntime, netns: NetNamespace, tmp_path: Path) -> None:
    """curl fetches a few small bodies over one kept-alive connection, then a BULK-sized one."""
    services = Services(runtime).start(http=HTTP_PORT)
    try:
        small = [0, 1, PATTERN_PERIOD - 1, PATTERN_PERIOD, PATTERN_PERIOD + 1, 1_000_003]
        args: list[str] = []
        for length in small:
            args += [f"http://{STACK}:{HTTP_PORT}/bytes/{length}", "-o", str(tmp_path / f"small-{length}")]
        curl(netns, STEP, *args)
        for length in small:
            assert hashlib.sha256((tmp_path / f"small-{length}").read_bytes()).hexdigest() == (
                expected_body_digest(length)
            ), length
        assert mib(runtime)["PassiveOpens"] == 1, "curl did not reuse the kept-alive connection"

        length = BULK - 7  # not a multiple of the period, nor of a chunk
        body = tmp_path / "big"
        start = time.monotonic()
        written = curl(netns, bound(length), "-w", "%{size_download}", "-o", str(body),
                       f"http://{STACK}:{HTTP_PORT}/bytes/{length}")  # fmt: skip
        seconds = time.monotonic() - start
        assert int(written) == length
        digest = hashlib.sha256()
        with body.open("rb") as file:
            while block := file.read(1 << 20):
                digest.update(block)
        assert digest.hexdigest() == expected_body_digest(length)
    finally:
        services.stop(STEP)
    offload = "offload" if runtime.tun.offload else "no-offload"
    rate(f"curl /bytes stack->kernel {offload}", length, seconds)


# -- through random loss -----------------------------------------------------------------------------------


@LOSS
@pytest.mark.parametrize("direction", ["stack->kernel", "kernel->stack"])
def test_bulk_through_loss(loss: float, direction: str, runtime: StackRuntime, netns: NetNamespace) -> None:
    """BULK bytes one way, the sender being the client, with ``loss`` of the packets dropped both ways."""
    inject_loss(netns, loss)
    role = STACK_CLIENT if direction == "stack->kernel" else KERNEL_CLIENT
    before = kernel_retransmissions(netns)
    with connected(runtime, netns, role) as (stack, kernel):
        sender, receiver = client_and_server(role, stack, kernel)
        seconds = transfer(sender, receiver, BULK)
    lost = dropped(netns)
    retrans = mib(runtime)["RetransSegs"] if sender is stack else kernel_retransmissions(netns) - before
    rate(f"{direction} loss {loss:.0%}", BULK, seconds, f"dropped={lost} sender RetransSegs={retrans}")
    assert lost > 0 and retrans > 0, "no loss happened: the test proved nothing"


@LOSS
@ROLES
def test_echo_through_loss(loss: float, role: str, runtime: StackRuntime, netns: NetNamespace) -> None:
    """LOSSY_ECHO bytes echoed, both directions at once, with ``loss`` of the packets dropped both ways."""
    inject_loss(netns, loss)
    before = kernel_retransmissions(netns)
    with echo_server(runtime, netns, role), connect_client(runtime, netns, role) as client:
        seconds = echo_stream(client, LOSSY_ECHO)
    lost = dropped(netns)
    stack_retrans, kernel_retrans = mib(runtime)["RetransSegs"], kernel_retransmissions(netns) - before
    rate(
        f"{role} echo loss {loss:.0%} (per direction)",
        LOSSY_ECHO,
        seconds,
        f"dropped={lost} RetransSegs stack={stack_retrans} kernel={kernel_retrans}",
    )
    # The drop unit is a whole super-packet (inject_loss): at 1 % a side's ~300 data packets escape every
    # drop about one run in twenty, so only the sum must show a recovery; the per-side figures are above.
    assert lost > 0 and stack_retrans + kernel_retrans > 0, "no loss happened: the test proved nothing"
