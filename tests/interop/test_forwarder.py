"""The forwarder against real kernels: a kernel client in one namespace, routed into the TUN device, reaches
kernel servers in another namespace through pytcp and the forwarder's kernel sockets (pytcp.forwarder.
topology builds the three namespaces). Checked: integrity of 100 MB each way, refusals (RST, ICMP) instead
of accept-then-close, half-close and RST passing through, an upload that outlives the client's
connection, back-pressure, 200 concurrent flows, timeouts and reaping, a SOCKS5 upstream with its
failure codes, iperf3 and curl, and the ``pytcp forward`` command.

Only 198.18.0.0/15 addresses are used; every wait and transfer is bounded; every subprocess is started
through NetNamespace.popen, which kills it by PID when its namespace is closed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytcp.forwarder import Forwarder, Topology, topology
from pytcp.netns import IpCommandError, NetNamespace, in_namespace, require_privileges, run_ip, veth_pair
from pytcp.runtime import StackRuntime

pytestmark = pytest.mark.netns

IN_CI = os.environ.get("CI", "").lower() in ("true", "1")
STEP = 15.0  # bound for one exchange or protocol step (they take milliseconds; CI may be loaded)
BULK = 100 * 1024 * 1024
BULK_TIMEOUT = 120.0
PYTCP = [sys.executable, "-m", "pytcp"]
UNREACHABLE_NET = "198.19.5.1"  # an `unreachable` route in the upstream namespace: EHOSTUNREACH
NO_ROUTE = "198.19.6.1"  # no route at all there: ENETUNREACH
PROHIBITED = "198.19.7.1"  # a `prohibit` route: EACCES
SILENT = "198.19.8.1"  # routed into a dummy device: SYNs vanish, connect() never completes
TCP_INFO_STATE_CLOSE = 7  # include/net/tcp_states.h TCP_CLOSE; tcpi_state is struct tcp_info's first byte

#: Each side sends ``count`` bytes of a pattern (a random block of prime length repeated, so no segment
#: moved by less than a megabyte reads the same) while it reads to EOF, and prints both sha256 digests.
PEER = r"""
import hashlib, json, random, socket, sys, threading
mode, host, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
period = 1048573
block = random.Random(7).randbytes(period) * 2
if mode == "server":
    listener = socket.create_server((host, port))
    print("ready", flush=True)
    sock, _ = listener.accept()
else:
    sock = socket.create_connection((host, port), timeout=30)
sock.settimeout(60)
sent = hashlib.sha256()
def send():
    offset = 0
    while offset < count:
        start = offset % period
        chunk = memoryview(block)[start : start + min(count - offset, 262144)]
        sock.sendall(chunk)
        sent.update(chunk)
        offset += len(chunk)
    sock.shutdown(socket.SHUT_WR)
thread = threading.Thread(target=send)
thread.start()
received, total = hashlib.sha256(), 0
while data := sock.recv(1 << 20):
    received.update(data)
    total += len(data)
thread.join(60)
print(json.dumps({"sent": sent.hexdigest(), "received": received.hexdigest(), "count": total}), flush=True)
"""


# -- helpers -------------------------------------------------------------------------------------------


def _require_privileges() -> None:
    try:
        require_privileges()
    except PermissionError as exc:
        if IN_CI:
            pytest.fail(f"network namespace tests cannot run in CI: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    """One forwarder (direct upstream, default limits) shared by the tests that do not change it; the
    upstream namespace also gets unreachable, prohibited, missing and silent routes."""
    _require_privileges()
    with topology(kernel_path=False) as built:
        add_failing_routes(built.upstream, "up0")
        yield built
    for ns in built.namespaces:
        assert not os.path.exists(ns.path), f"namespace {ns.name} survived"


def add_failing_routes(ns: NetNamespace, device: str) -> None:
    """Routes behind UNREACHABLE_NET, PROHIBITED and SILENT in ``ns``; SILENT goes via a neighbour that
    exists only as a permanent ARP entry on ``device`` (a veth), so its SYNs leave and are never answered."""
    run_ip("route", "add", "unreachable", "198.19.5.0/24", netns=ns.name)
    run_ip("route", "add", "prohibit", "198.19.7.0/24", netns=ns.name)
    run_ip(
        "neigh",
        "add",
        "198.19.1.99",
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        device,
        "nud",
        "permanent",
        netns=ns.name,
    )
    run_ip("route", "add", "198.19.8.0/24", "via", "198.19.1.99", netns=ns.name)


def sock_in(ns: NetNamespace, timeout: float | None = STEP) -> socket.socket:
    with in_namespace(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    return sock


def listener_in(ns: NetNamespace, address: str, port: int, backlog: int = 256) -> socket.socket:
    sock = sock_in(ns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(backlog)
    return sock


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def send_then_shut(sock: socket.socket, data: bytes) -> None:
    """Send ``data`` and half-close from a helper thread, so the caller can read meanwhile."""

    def body() -> None:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)

    threading.Thread(target=body, daemon=True).start()


def abort(sock: socket.socket) -> None:
    """Close with a RST (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def wait_for(predicate: Callable[[], bool], timeout: float = STEP, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def connect_pair(topo: Topology, port: int) -> tuple[socket.socket, socket.socket, socket.socket]:
    """(listener, client, accepted server side) of one flow through the forwarder."""
    listener = listener_in(topo.server, topo.forwarded_address, port)
    client = sock_in(topo.client)
    client.connect((topo.forwarded_address, port))
    server, _ = listener.accept()
    server.settimeout(STEP)
    return listener, client, server


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def wait_for_output(process: subprocess.Popen[str], needle: str, timeout: float = STEP) -> str:
    """Read ``process``'s stdout straight from its fd (no buffer to hide lines from select) until
    ``needle`` appears; returns everything read."""
    assert process.stdout is not None
    fd, seen = process.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while needle.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {needle!r} in time; got {seen!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"output ended before {needle!r}; got {seen!r}"
            seen += chunk
    return seen.decode()


def connect_error(topo: Topology, address: str, port: int = 5000, timeout: float = STEP) -> int | None:
    """The errno a kernel client's connect() to address:port fails with, or None if it connects."""
    with sock_in(topo.client, timeout) as client:
        return client.connect_ex((address, port))


class EchoServer:
    """Echoes every connection on one selector thread in ``ns``; on EOF it echoes what is left and
    closes. Small messages only (a full send buffer drops the rest: the tests never get there)."""

    def __init__(self, ns: NetNamespace, address: str, port: int) -> None:
        self.listener = listener_in(ns, address, port)
        self.listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._wake_r:
                        for other in list(selector.get_map().values()):
                            other.fileobj.close()  # type: ignore[union-attr]
                        return
                    if sock is self.listener:
                        conn, _ = sock.accept()
                        conn.setblocking(False)
                        selector.register(conn, selectors.EVENT_READ)
                        continue
                    try:
                        data = sock.recv(65536)
                        if data:
                            sock.send(data)
                            continue
                    except OSError:
                        pass
                    selector.unregister(sock)
                    sock.close()

    def close(self) -> None:
        self._wake_w.send(b"x")
        self._thread.join(STEP)
        self._wake_r.close()
        self._wake_w.close()


@pytest.fixture(scope="module")
def echo(topo: Topology) -> Iterator[int]:
    port = 7
    server = EchoServer(topo.server, topo.forwarded_address, port)
    yield port
    server.close()


def run_peers(topo: Topology, port: int, count: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A PEER server in the server namespace and a PEER client in the client namespace exchange
    ``count`` bytes each way through the forwarder; returns their reports."""
    server = topo.server.popen(
        [sys.executable, "-c", PEER, "server", topo.forwarded_address, str(port), str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_for_output(server, "ready\n")
    client = topo.client.popen(
        [sys.executable, "-c", PEER, "client", topo.forwarded_address, str(port), str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    client_out, _ = client.communicate(timeout=BULK_TIMEOUT)
    server_out, _ = server.communicate(timeout=STEP)
    assert client.returncode == 0 and server.returncode == 0
    return json.loads(client_out), json.loads(server_out)


# -- data path ------------------------------------------------------------------------------------------


def test_100_mb_each_way_arrive_intact(topo: Topology) -> None:
    before = topo.forwarder.counters()
    client, server = run_peers(topo, 5001, BULK)
    assert client["count"] == server["count"] == BULK
    assert client["received"] == server["sent"] and server["received"] == client["sent"]
    after = topo.forwarder.counters()
    assert after["bytes_up"] - before["bytes_up"] == BULK
    assert after["bytes_down"] - before["bytes_down"] == BULK
    assert after["completed"] == before["completed"] + 1
    wait_for(lambda: topo.forwarder.counters()["active"] == 0, what="the flow to end")


def test_flow_table_shows_addresses_state_and_bytes(topo: Topology) -> None:
    listener, client, server = connect_pair(topo, 5002)
    with listener, client, server:
        client.sendall(b"x" * 1000)
        assert server.recv(2000) == b"x" * 1000
        server.sendall(b"y" * 10)
        assert client.recv(100) == b"y" * 10
        host, port = client.getsockname()
        local = f"{host}:{port}"
        (row,) = [row for row in topo.forwarder.flows() if row["local"] == local]
        assert row["remote"] == f"{topo.forwarded_address}:5002" and row["state"] == "open"
        assert row["tcp"] == "ESTABLISHED" and row["upstream"].startswith("198.19.1.1:")
        assert (row["bytes_up"], row["bytes_down"]) == (1000, 10) and row["age"] >= 0
        # The client's MSS is clamped to the TUN's MTU (1500 - 40, minus 12 bytes of timestamps).
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) <= 1460


def test_backpressure_both_ways_keeps_buffers_bounded(topo: Topology) -> None:
    """A reader that stops reading stalls the writer on the other side within kernel plus stack buffer
    sizes (a few MB), and everything arrives once it reads again."""
    block = os.urandom(1 << 20)
    listener, client, server = connect_pair(topo, 5003)
    with listener, client, server:
        for writer, reader in ((client, server), (server, client)):
            writer.setblocking(False)
            written, stalled_since = 0, None
            digest = hashlib.sha256()
            while stalled_since is None or time.monotonic() - stalled_since < 1.0:
                try:
                    n = writer.send(block)
                except BlockingIOError:
                    stalled_since = stalled_since or time.monotonic()
                    time.sleep(0.02)
                    continue
                digest.update(block[:n])
                written += n
                stalled_since = None
                assert written < 64 << 20, "the writer was never held back"
            writer.setblocking(True)
            writer.settimeout(STEP)
            writer.shutdown(socket.SHUT_WR)
            assert hashlib.sha256(recv_all(reader)).digest() == digest.digest()


def test_200_concurrent_flows(topo: Topology, echo: int) -> None:
    clients = []
    try:
        for _ in range(200):
            client = sock_in(topo.client, None)
            client.setblocking(False)
            assert client.connect_ex((topo.forwarded_address, echo)) == errno.EINPROGRESS
            clients.append(client)
        with selectors.DefaultSelector() as selector:
            for client in clients:
                selector.register(client, selectors.EVENT_WRITE)
            pending = set(clients)
            deadline = time.monotonic() + STEP
            while pending and time.monotonic() < deadline:
                for key, _ in selector.select(0.5):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                    selector.unregister(sock)
                    pending.discard(sock)
            assert not pending, f"{len(pending)} connects did not complete"
        assert topo.forwarder.counters()["active"] >= 200
        for index, client in enumerate(clients):
            client.settimeout(STEP)
            client.sendall(b"%08d" % index * 100)
        for index, client in enumerate(clients):
            expected = b"%08d" % index * 100
            got = b""
            while len(got) < len(expected):
                got += client.recv(len(expected) - len(got))
            assert got == expected
    finally:
        for client in clients:
            client.close()
    wait_for(lambda: topo.forwarder.counters()["active"] == 0, what="200 flows to end")


# -- refusals -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "port", "expected"),
    [
        ("198.19.1.2", 5999, errno.ECONNREFUSED),  # nobody listens: RST
        (UNREACHABLE_NET, 5000, errno.EHOSTUNREACH),  # ICMP host unreachable
        (NO_ROUTE, 5000, errno.ENETUNREACH),  # ICMP net unreachable
        (PROHIBITED, 5000, errno.EHOSTUNREACH),  # ICMP administratively prohibited
    ],
    ids=["refused", "host-unreachable", "no-route", "prohibited"],
)
def test_upstream_failures_fail_the_clients_connect(
    topo: Topology, address: str, port: int, expected: int
) -> None:
    """Never connect-then-EOF: the client's connect() itself fails, at once, with the matching errno."""
    before = topo.forwarder.counters()
    started = time.monotonic()
    assert connect_error(topo, address, port) == expected
    assert time.monotonic() - started < 2.0  # no SYN retransmission needed
    after = topo.forwarder.counters()
    assert after["refused"] == before["refused"] + 1 and after["accepted"] == before["accepted"]


def test_curl_downloads_through_the_forwarder(topo: Topology, tmp_path: Path) -> None:
    body = os.urandom(5 << 20)
    (tmp_path / "blob").write_bytes(body)
    server = topo.server.popen(
        [sys.executable, "-m", "http.server", "8080", "--bind", topo.forwarded_address],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def serving() -> bool:
            with sock_in(topo.server, 1.0) as probe:
                return probe.connect_ex((topo.forwarded_address, 8080)) == 0

        wait_for(serving, what="the HTTP server")
        out = tmp_path / "out"
        url = f"http://{topo.forwarded_address}:8080"
        proc = topo.client.run(["curl", "-sS", "--max-time", "30", "-o", str(out), f"{url}/blob"], timeout=40)
        assert proc.returncode == 0, proc.stderr
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(body).digest()
        # A closed port: curl's "couldn't connect" (7) at once, not a timeout (28) or an empty reply (52).
        closed = f"http://{topo.forwarded_address}:8099/"
        refused = topo.client.run(["curl", "-sS", "--max-time", "10", closed], timeout=20, check=False)
        assert refused.returncode == 7, refused.stderr
    finally:
        server.terminate()
        server.wait(STEP)


def test_iperf3_both_directions(topo: Topology) -> None:
    server = topo.server.popen(
        ["iperf3", "-s", "-B", topo.forwarded_address, "-p", "5201", "--forceflush"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_output(server, "Server listening")
        for reverse in ([], ["-R"]):
            proc = topo.client.run(
                ["iperf3", "-c", topo.forwarded_address, "-p", "5201", "-t", "2", "-J", *reverse],
                timeout=30,
                check=False,
            )
            report = json.loads(proc.stdout)
            assert proc.returncode == 0 and "error" not in report, proc.stdout[-2000:]
            assert report["end"]["sum_received"]["bytes"] > 0
    finally:
        server.terminate()
        server.wait(STEP)


# -- closing --------------------------------------------------------------------------------------------


def test_half_close_passes_through_both_ways(topo: Topology) -> None:
    before = topo.forwarder.counters()["completed"]
    # The client finishes first and still receives the answer.
    listener, client, server = connect_pair(topo, 5004)
    with listener, client, server:
        client.sendall(b"question")
        client.shutdown(socket.SHUT_WR)
        assert recv_all(server) == b"question"
        server.sendall(b"answer")
        server.shutdown(socket.SHUT_WR)
        assert recv_all(client) == b"answer"
    # The server finishes first and still receives what the client sends afterwards.
    listener, client, server = connect_pair(topo, 5005)
    with listener, client, server:
        server.sendall(b"banner")
        server.shutdown(socket.SHUT_WR)
        assert recv_all(client) == b"banner"
        client.sendall(b"late words")
        client.shutdown(socket.SHUT_WR)
        assert recv_all(server) == b"late words"
    wait_for(lambda: topo.forwarder.counters()["completed"] == before + 2, what="both flows to complete")
    # Nothing left half-open in the stack: only TIME-WAIT (the side that closed first) may remain.
    lingering = {"CLOSE-WAIT", "FIN-WAIT-2", "FIN-WAIT-1", "LAST-ACK", "CLOSING", "ESTABLISHED"}

    def settled() -> bool:
        rows = topo.runtime.connections_table()
        return not [row for row in rows if row["state"] in lingering and row["remote"] != "*:*"]

    wait_for(settled, what="the stack's connections to settle")


def test_server_that_speaks_first_and_closes_at_once(topo: Topology) -> None:
    # The banner and the FIN reach the upstream socket right after the connect, often within one epoll
    # report: the forwarder must read on past the banner to the EOF, and relay a banner that came
    # with no client byte to prompt it.
    flows = 20
    before = topo.forwarder.counters()["completed"]
    listener = listener_in(topo.server, topo.forwarded_address, 5008)

    def serve() -> None:
        for _ in range(flows):
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"220 ready")
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(64):  # until the client's FIN
                    pass

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    with listener:
        for _ in range(flows):
            with sock_in(topo.client) as client:
                client.connect((topo.forwarded_address, 5008))
                assert recv_all(client) == b"220 ready"
        server.join(STEP)
        assert not server.is_alive()
    wait_for(lambda: topo.forwarder.counters()["completed"] == before + flows, what="every flow to complete")


def test_client_bytes_still_relayed_after_its_connection_closed(topo: Topology) -> None:
    # The client uploads and half-closes while the server reads nothing yet (a tiny receive buffer, so
    # most of the upload waits in the forwarder), then the server answers and half-closes too. The
    # stack connection ends in an orderly way (CLOSE-WAIT, our FIN, LAST-ACK, the client's ACK:
    # CLOSED) with bytes of the upload still unread: they must reach the server, followed by its EOF,
    # as from a kernel socket whose peer closed before the reader caught up.
    before = topo.forwarder.counters()
    upload = os.urandom(200_000)  # within the stack's 256 KiB receive buffer: the client's FIN gets in
    listener = listener_in(topo.server, topo.forwarded_address, 5014)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by the accepted socket
    client = sock_in(topo.client)
    with listener, client:
        client.connect((topo.forwarded_address, 5014))
        server, _ = listener.accept()
        with server:
            server.settimeout(STEP)
            client.sendall(upload)
            client.shutdown(socket.SHUT_WR)

            def states() -> list[str]:
                rows = topo.runtime.connections_table()
                return [row["state"] for row in rows if row["local"].endswith(":5014")]

            wait_for(lambda: states() == ["CLOSE-WAIT"], what="the client's FIN to reach the stack")
            server.sendall(b"thanks")
            server.shutdown(socket.SHUT_WR)
            assert recv_all(client) == b"thanks"  # its ACK of our FIN closes the stack connection
            # CLOSED leaves the stack's table: the upload's rest is now read from a closed connection.
            wait_for(lambda: not states(), what="the stack connection to close")
            assert recv_all(server) == upload
    wait_for(lambda: topo.forwarder.counters()["completed"] == before["completed"] + 1, what="completion")
    after = topo.forwarder.counters()
    for resets in ("client_resets", "upstream_resets"):
        assert after[resets] == before[resets], resets


def test_urgent_data_is_relayed_inline_without_a_stall(topo: Topology) -> None:
    # Linux ends a read at the urgent mark, so the short read that brings the bytes before it does not
    # mean the upstream socket is empty, and nothing later raises another epoll edge for the bytes
    # behind it. The urgent byte itself stays in the stream (SO_OOBINLINE): the client gets every byte.
    listener, client, server = connect_pair(topo, 5009)
    with listener, client, server:
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)  # one segment, mark in the middle
        server.send(b"A" * 10 + b"X", socket.MSG_OOB)
        server.send(b"B" * 10)
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        received = b""
        while len(received) < 21:  # the server sends nothing more and keeps the flow open
            chunk = client.recv(64)
            assert chunk, received
            received += chunk
        assert received == b"A" * 10 + b"X" + b"B" * 10


def test_resets_pass_through_both_ways(topo: Topology) -> None:
    before = topo.forwarder.counters()
    listener, client, server = connect_pair(topo, 5006)
    with listener, server:
        client.sendall(b"hello")
        assert server.recv(10) == b"hello"
        abort(client)
        with pytest.raises(ConnectionResetError):
            server.recv(10)
    listener, client, server = connect_pair(topo, 5007)
    with listener, client:
        server.sendall(b"hello")
        assert client.recv(10) == b"hello"
        abort(server)
        with pytest.raises(ConnectionResetError):
            client.recv(10)
    after = topo.forwarder.counters()
    assert after["client_resets"] == before["client_resets"] + 1
    assert after["upstream_resets"] == before["upstream_resets"] + 1


# -- timeouts, limits, loops ----------------------------------------------------------------------------


def test_timeouts_and_reaping(privileged: None) -> None:
    with topology(kernel_path=False, connect_timeout=2.0, idle_timeout=1.0, half_close_timeout=1.0) as topo:
        add_failing_routes(topo.upstream, "up0")
        # A silent destination: the client's SYN retransmissions are absorbed until the connect timeout,
        # which the client sees as an ICMP host unreachable.
        started = time.monotonic()
        assert connect_error(topo, SILENT) == errno.EHOSTUNREACH
        assert 1.9 < time.monotonic() - started < 2.0 + 1.0 + 1.0  # timeout + tick + slack
        counters = topo.forwarder.counters()
        assert counters["connect_timeouts"] == 1 and counters["requests"] == 1
        assert topo.runtime.counters()["mib"]["InterceptSynAbsorbed"] >= 1
        # An idle flow is reset on both sides.
        listener, client, server = connect_pair(topo, 5010)
        with listener, client, server:
            with pytest.raises(ConnectionResetError):
                client.recv(10)
            wait_for(lambda: tcp_state(server) == TCP_INFO_STATE_CLOSE, what="the server side reset")
        # A half-closed flow is reset once it has been idle for half_close_timeout.
        listener, client, server = connect_pair(topo, 5011)
        with listener, client, server:
            client.shutdown(socket.SHUT_WR)
            assert recv_all(server) == b""
            with pytest.raises(ConnectionResetError):
                client.recv(10)
            wait_for(lambda: tcp_state(server) == TCP_INFO_STATE_CLOSE, what="the server side reset")
        counters = topo.forwarder.counters()
        assert (counters["idle_reaped"], counters["half_close_reaped"], counters["active"]) == (1, 1, 0)


def test_max_sessions_drops_syns_until_a_flow_ends(privileged: None) -> None:
    with topology(kernel_path=False, max_sessions=1) as topo:
        listener, client, server = connect_pair(topo, 5012)
        with listener:
            with sock_in(topo.client, 0.5) as late, pytest.raises(TimeoutError):
                late.connect((topo.forwarded_address, 5012))  # its SYN dropped: no answer at all
            assert topo.forwarder.counters()["session_limit_drops"] >= 1
            client.close()
            server.close()
            wait_for(lambda: topo.forwarder.counters()["active"] == 0, what="the flow to end")
            with sock_in(topo.client) as again:
                again.connect((topo.forwarded_address, 5012))


def test_a_route_back_into_the_device_is_refused_not_looped(netns: NetNamespace) -> None:
    """Upstream sockets in the device's own namespace, with the destination routed into the device: the
    forwarder's SYN comes back to itself, is recognised, and the client gets ECONNREFUSED."""
    with StackRuntime.open(
        "pl0", stack_address="198.18.0.2", kernel_address="198.18.0.1", prefix_len=24, netns=netns
    ) as runtime:
        run_ip("route", "add", "198.19.0.0/16", "dev", "pl0", netns=netns.name)
        with Forwarder(runtime, netns=netns) as forwarder, sock_in(netns) as client:
            assert client.connect_ex(("198.19.1.2", 80)) == errno.ECONNREFUSED
            counters = forwarder.counters()
            assert counters["loops"] == 1 and counters["accepted"] == 0


def test_small_mtu_without_offload(privileged: None) -> None:
    with topology(kernel_path=False, mtu=1280, offload=False) as topo:
        listener, client, server = connect_pair(topo, 5013)
        with listener, client, server:
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) <= 1280 - 40
            data = os.urandom(4 << 20)
            send_then_shut(client, data)
            assert recv_all(server) == data


# -- SOCKS5 ---------------------------------------------------------------------------------------------


class Socks5Server:
    """A small threaded SOCKS5 server (RFC 1928 CONNECT to IPv4 only; RFC 1929 username/password when
    ``credentials`` are set) in namespace ``ns``. Upstream connect errors map onto reply codes as real
    servers do; ``forbidden`` ports get "not allowed by ruleset"."""

    def __init__(
        self,
        ns: NetNamespace,
        address: str,
        port: int,
        credentials: tuple[bytes, bytes] | None = None,
        forbidden: frozenset[int] = frozenset({25}),
    ) -> None:
        self.credentials, self.forbidden = credentials, forbidden
        self.listener = listener_in(ns, address, port)
        # Started inside the namespace, the threads (and the sockets they create) stay in it.
        with in_namespace(ns):
            threading.Thread(target=self._accept_loop, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _exact(sock: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("client went away")
            data += chunk
        return data

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(STEP)
        with conn:
            version, count = self._exact(conn, 2)
            methods = self._exact(conn, count)
            wanted = 2 if self.credentials is not None else 0
            if version != 5 or wanted not in methods:
                conn.sendall(b"\x05\xff")
                return
            conn.sendall(bytes((5, wanted)))
            if self.credentials is not None:
                _, ulen = self._exact(conn, 2)
                user = self._exact(conn, ulen)
                password = self._exact(conn, self._exact(conn, 1)[0])
                ok = (user, password) == self.credentials
                conn.sendall(b"\x01\x00" if ok else b"\x01\x01")
                if not ok:
                    return
            _, command, _, atyp = self._exact(conn, 4)
            if command != 1 or atyp != 1:
                conn.sendall(bytes((5, 7 if command != 1 else 8, 0, 1)) + bytes(6))
                return
            address = socket.inet_ntoa(self._exact(conn, 4))
            (port,) = struct.unpack("!H", self._exact(conn, 2))
            if port in self.forbidden:
                conn.sendall(b"\x05\x02\x00\x01" + bytes(6))
                return
            try:
                upstream = socket.create_connection((address, port), timeout=3)
            except OSError as exc:
                codes = {errno.ECONNREFUSED: 5, errno.EHOSTUNREACH: 4, errno.ENETUNREACH: 3}
                code = codes.get(exc.errno or 0, 1)  # 1: general failure
                conn.sendall(bytes((5, code, 0, 1)) + bytes(6))
                return
            with upstream:
                host, port = upstream.getsockname()
                conn.sendall(b"\x05\x00\x00\x01" + socket.inet_aton(host) + struct.pack("!H", port))
                upstream.settimeout(STEP)
                back = threading.Thread(target=self._copy, args=(upstream, conn), daemon=True)
                back.start()
                self._copy(conn, upstream)
                back.join(STEP)

    @staticmethod
    def _copy(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            return


def test_socks5_upstream_relays_and_maps_failures(privileged: None) -> None:
    proxy = "socks5://user:secret@198.19.1.2:1080"
    with topology(kernel_path=False, upstream=proxy) as topo:
        add_failing_routes(topo.server, "srv0")  # the proxy's own routes decide here
        socks = Socks5Server(topo.server, topo.forwarded_address, 1080, (b"user", b"secret"))
        echo = EchoServer(topo.server, topo.forwarded_address, 7)
        try:
            with sock_in(topo.client) as client:
                client.connect((topo.forwarded_address, 7))
                (flow,) = topo.forwarder.flows()
                assert flow["upstream"] == "socks5://198.19.1.2:1080" and flow["state"] == "open"
                data = os.urandom(1 << 20)
                send_then_shut(client, data)
                assert recv_all(client) == data
            assert connect_error(topo, topo.forwarded_address, 5999) == errno.ECONNREFUSED  # reply 5
            assert connect_error(topo, UNREACHABLE_NET) == errno.EHOSTUNREACH  # reply 4
            assert connect_error(topo, NO_ROUTE) == errno.ENETUNREACH  # reply 3
            assert connect_error(topo, topo.forwarded_address, 25) == errno.EHOSTUNREACH  # reply 2
            counters = topo.forwarder.counters()
            assert counters["proxy_failures"] == 4 and counters["refused"] == 4
        finally:
            socks.close()
            echo.close()


def test_socks5_proxy_rejecting_our_methods_is_unreachable(privileged: None) -> None:
    with topology(kernel_path=False, upstream="socks5://198.19.1.2:1080") as topo:
        socks = Socks5Server(topo.server, topo.forwarded_address, 1080, (b"user", b"secret"))
        try:
            assert connect_error(topo, topo.forwarded_address, 7) == errno.EHOSTUNREACH
            assert topo.forwarder.counters()["proxy_failures"] == 1
        finally:
            socks.close()


# -- the command line -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["forward", "--upstream", "http://198.19.1.1:80"],
        ["forward", "--upstream", "socks5://proxy.example:1080"],  # names are not resolved
        ["forward", "--upstream", "socks5://198.19.1.1"],
        ["forward", "--upstream", "socks5://198.19.1.1:70000"],
        ["forward", "--max-sessions", "0"],
        ["forward", "--idle-timeout", "0"],
        ["forward", "--connect-timeout", "-1"],
        ["forward", "--route", "198.19.0.1/16"],  # host bits set
        ["forward", "--route", "nonsense"],
        ["forward", "--mtu", "100"],
        ["forward", "--mark", "-1"],
        ["forward", "--tun-netns", "pytcp-no-such-namespace"],
        ["forward", "--address", "198.18.0.1"],  # the same as --peer-address
    ],
    ids=lambda args: " ".join(args),
)
def test_forward_bad_arguments_exit_2_with_one_line(args: list[str]) -> None:
    proc = subprocess.run([*PYTCP, *args], capture_output=True, text=True, timeout=STEP, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("pytcp") and "error: " in proc.stderr


def test_forward_command(make_netns: Callable[[str], NetNamespace], tmp_path: Path) -> None:
    client, router, server = make_netns("fcc"), make_netns("fcu"), make_netns("fcs")
    veth_pair(router, server, name_a="up0", name_b="srv0", address_a="198.19.1.1", address_b="198.19.1.2")
    add_failing_routes(router, "up0")
    control = str(tmp_path / "forward.sock")
    process = router.popen(
        [
            *PYTCP,
            "forward",
            "--tun",
            "pc0",
            "--tun-netns",
            client.name,
            "--prefix-length",
            "24",
            "--route",
            "198.19.0.0/16",
            "--no-icmp",
            "--control",
            control,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = wait_for_output(process, "\n")
        assert line.startswith("ready: forward tun pc0 198.18.0.2 <-> 198.18.0.1, upstream direct"), line
        with listener_in(server, "198.19.1.2", 5000) as listener, sock_in(client) as conn:
            conn.connect(("198.19.1.2", 5000))
            accepted, _ = listener.accept()
            with accepted:
                conn.sendall(b"through the command")
                assert accepted.recv(100) == b"through the command"
                flows = subprocess.run(
                    [*PYTCP, "flows", "--control", control], capture_output=True, text=True, timeout=STEP
                )
                assert flows.returncode == 0, flows.stderr
                assert "198.18.0.1:" in flows.stdout and "198.19.1.2:5000" in flows.stdout
        counters = subprocess.run(
            [*PYTCP, "counters", "--control", control], capture_output=True, text=True, timeout=STEP
        )
        assert "#forwarder" in counters.stdout and "InterceptRequests" in counters.stdout
        # --no-icmp: an unreachable destination is refused with a RST too.
        with sock_in(client) as conn:
            assert conn.connect_ex((UNREACHABLE_NET, 80)) == errno.ECONNREFUSED
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=STEP)
        assert process.returncode == 0, err
        assert out == ""  # the ready line was read already; nothing else is printed
        with pytest.raises(IpCommandError):
            run_ip("link", "show", "pc0", netns=client.name)
        assert not os.path.exists(control)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(STEP)
