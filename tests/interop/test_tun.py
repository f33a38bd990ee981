"""The TUN link layer against the real kernel TCP stack, inside network namespaces created here.

The test plays a minimal TCP server by hand (tcpcore builders and parser) behind a TunDevice; the
kernel side is an ordinary socket created in the namespace by ``in_namespace``. Only 198.18.0.0/15
(RFC 2544 benchmarking) addresses are used, and every wait is bounded by a deadline.
"""

from __future__ import annotations

import errno
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from dataclasses import dataclass
from typing import Any

import pytest

from pytcp import vnet
from pytcp.netns import (
    IpCommandError,
    NetNamespace,
    in_namespace,
    require_privileges,
    run_ip,
    sweep_stale_namespaces,
    veth_pair,
)
from pytcp.tun import TunDevice
from tcpcore import (
    ACK,
    PSH,
    RST,
    SYN,
    IPv4Header,
    MalformedPacket,
    PacketBatch,
    TCPSegment,
    build_ipv4,
    build_tcp_ipv4,
    parse_packet,
    pseudo_header_sum,
)
from tcpcore.constants import IPPROTO_TCP

pytestmark = pytest.mark.netns

KERNEL = "198.18.0.1"
STACK = "198.18.0.2"
PORT = 8080
ISS = 1000
MSS = 1460  # what our SYN-ACK announces for the 1500-byte MTU: 1500 - 20 (IPv4) - 20 (TCP)
WSCALE = 7  # 65535 << 7 = 8 MB of window: the kernel sender is never window-limited
STEP = 5.0  # bound for one protocol step (a reply arrives in microseconds; CI may be loaded)
BULK = 256 * 1024
BULK_DEADLINE = 15.0


@dataclass(frozen=True)
class Inbound:
    header: vnet.VnetHeader
    ip: IPv4Header
    seg: TCPSegment
    raw: bytes


class Peer:
    """The hand-played server behind a TUN device: reads and parses, builds and writes."""

    def __init__(self, tun: TunDevice) -> None:
        self.tun = tun
        self.batch = PacketBatch(slots=16)
        self.kernel = int(tun.kernel_address)
        self.stack = int(tun.stack_address)

    def receive(self, timeout: float) -> list[Inbound]:
        """The IPv4/TCP packets one wake-up brings (others, e.g. IPv6 link-local chatter, dropped)."""
        ready, _, _ = select.select([self.tun], [], [], timeout)
        if not ready:
            return []
        self.tun.read_into(self.batch)
        out = []
        for packet in self.batch:
            header, ip_packet = self.tun.parse_inbound(packet)
            if ip_packet[0] >> 4 != 4:
                continue
            raw = bytes(ip_packet)  # the batch slot is reused on the next read
            ip, seg = parse_packet(raw, verify_checksum=not header.checksum_trusted)
            if seg is not None:
                out.append(Inbound(header, ip, seg, raw))
        return out

    def expect(self, match: Callable[[Inbound], bool], timeout: float = STEP) -> Inbound:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            for packet in self.receive(left):
                if match(packet):
                    return packet
        raise AssertionError(f"no matching packet within {timeout} s")

    def segment(self, port: int, seq: int, ack: int, flags: int, payload: bytes = b"", **opts: Any) -> bytes:
        return build_tcp_ipv4(self.stack, self.kernel, PORT, port, seq, ack, flags, 65535, payload, **opts)

    def send(self, port: int, seq: int, ack: int, flags: int, payload: bytes = b"", **opts: Any) -> None:
        assert self.tun.write(self.segment(port, seq, ack, flags, payload, **opts))


def wait_writable(sock: socket.socket, timeout: float = STEP) -> None:
    _, ready, _ = select.select([], [sock], [], timeout)
    assert ready, "socket not writable in time"


def kernel_connect(ns: NetNamespace) -> socket.socket:
    """A non-blocking kernel TCP socket in ``ns``, connecting to the stack's address."""
    with in_namespace(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    assert sock.connect_ex((STACK, PORT)) == errno.EINPROGRESS
    return sock


def handshake(peer: Peer, sock: socket.socket) -> Inbound:
    """Answer the kernel's SYN; returns the SYN once the kernel's ACK completed the handshake."""
    syn = peer.expect(lambda p: p.seg.flags & (SYN | ACK) == SYN and p.seg.dst_port == PORT)
    peer.send(syn.seg.src_port, ISS, syn.seg.seq + 1, SYN | ACK, mss=MSS, wscale=WSCALE)
    peer.expect(lambda p: p.seg.flags & ACK != 0 and p.seg.ack == ISS + 1)
    wait_writable(sock)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    return syn


def device_exists(name: str, ns: NetNamespace) -> bool:
    try:
        run_ip("link", "show", "dev", name, netns=ns.name)
    except IpCommandError:
        return False
    return True


@pytest.fixture(params=[True, False], ids=["offload", "no-offload"])
def tun(request: pytest.FixtureRequest, netns: NetNamespace) -> Iterator[TunDevice]:
    device = TunDevice(
        "pytcp0", kernel_address=KERNEL, stack_address=STACK, offload=request.param, netns=netns
    )
    try:
        yield device
    finally:
        device.close()
    assert not device_exists("pytcp0", netns), "close() left the device behind"


def test_device_lives_only_in_its_namespace(netns: NetNamespace) -> None:
    home = os.readlink("/proc/thread-self/ns/net")
    with TunDevice("pytcp0", netns=netns) as device:
        assert os.readlink("/proc/thread-self/ns/net") == home, "the thread did not switch back"
        assert device_exists("pytcp0", netns)
        assert not os.path.exists("/sys/class/net/pytcp0"), "device leaked into the test's namespace"
        info = run_ip("addr", "show", "dev", "pytcp0", netns=netns.name)
        assert "inet 198.18.0.1/15" in info and "mtu 1500" in info and ",UP," in info
    assert device.closed
    assert not device_exists("pytcp0", netns)


def test_bulk_from_kernel(tun: TunDevice, netns: NetNamespace) -> None:
    """Handshake, then 256 KB from the kernel: super-packets with offload, MTU-sized packets without."""
    peer = Peer(tun)
    with closing(kernel_connect(netns)) as sock:
        syn = handshake(peer, sock)
        port = syn.seg.src_port
        data = os.urandom(BULK)
        sent = 0
        received = bytearray()
        rcv_nxt = (syn.seg.seq + 1) & 0xFFFFFFFF
        seen: list[Inbound] = []
        deadline = time.monotonic() + BULK_DEADLINE
        while len(received) < len(data) and time.monotonic() < deadline:
            if sent < len(data):
                with suppress(BlockingIOError):
                    sent += sock.send(data[sent : sent + 65536])
            advanced = False
            for packet in peer.receive(0.05):
                seen.append(packet)
                # The TUN path is lossless and in order: anything else is a test failure below.
                if packet.seg.payload_length and packet.seg.seq == rcv_nxt:
                    received += packet.seg.payload
                    rcv_nxt = (rcv_nxt + packet.seg.payload_length) & 0xFFFFFFFF
                    advanced = True
            if advanced:
                peer.send(port, ISS + 1, rcv_nxt, ACK)
    assert received == data
    data_packets = [p for p in seen if p.seg.payload_length]
    largest = max(p.ip.total_length for p in data_packets)
    if tun.offload:
        supers = [p for p in data_packets if p.ip.total_length > tun.mtu]
        assert supers, f"no GSO super-packet (largest {largest} bytes)"
        for p in supers:
            assert p.header.gso_type == vnet.GSO_TCPV4 and p.header.is_gso
            assert p.header.gso_size == MSS
            assert p.header.hdr_len == p.ip.header_length + p.seg.header_length
        for p in data_packets:
            assert p.header.flags & vnet.VIRTIO_NET_HDR_F_NEEDS_CSUM
            assert (p.header.csum_start, p.header.csum_offset) == (20, 16)
            # Linux CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum over the whole
            # (super-)segment, the same convention build_tcp_ipv4(offload_checksum=True) produces.
            pseudo = pseudo_header_sum(p.ip.src, p.ip.dst, IPPROTO_TCP, p.ip.payload_length)
            assert p.seg.checksum == pseudo
    else:
        assert largest <= tun.mtu
        # Peer.receive verified every checksum: nothing was trusted without the offload header.
        assert all(p.header is vnet.NO_OFFLOAD for p in seen)


def test_gso_write_reaches_kernel_socket_intact(netns: NetNamespace) -> None:
    """One 60 KB GSO super-packet with a pseudo-header checksum, delivered to a kernel socket."""
    with TunDevice("pytcp0", kernel_address=KERNEL, stack_address=STACK, netns=netns) as tun:
        peer = Peer(tun)
        with closing(kernel_connect(netns)) as sock:
            syn = handshake(peer, sock)
            size = min(60000, syn.seg.window)  # within the window the kernel's SYN offered
            payload = os.urandom(size)
            packet = peer.segment(
                syn.seg.src_port, ISS + 1, syn.seg.seq + 1, ACK | PSH, payload, offload_checksum=True
            )
            assert len(packet) > tun.mtu
            assert tun.write(packet, gso_mss=MSS)
            received = bytearray()
            deadline = time.monotonic() + STEP
            while len(received) < size and time.monotonic() < deadline:
                if select.select([sock], [], [], 0.1)[0]:
                    received += sock.recv(65536)
            assert received == payload
            peer.expect(lambda p: p.seg.ack == ISS + 1 + size)


def test_gso_segments_forwarded_with_valid_checksums(netns: NetNamespace) -> None:
    """Proves the pseudo-header seed: the kernel forwards our super-packet out of a device without
    offloads, so it must segment it and finish each checksum in software from our seed; a local
    socket would not check (Linux trusts CHECKSUM_PARTIAL on receive). A full checksum in the field
    (the wrong seed) must yield segments that fail verification."""
    inbound = TunDevice("pytcp0", kernel_address=KERNEL, stack_address=STACK, prefix_len=24, netns=netns)
    outbound = TunDevice(
        "pytcp1",
        kernel_address="198.18.1.1",
        stack_address="198.18.1.2",
        prefix_len=24,
        offload=False,
        netns=netns,
    )
    with inbound, outbound:
        netns.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        batch = PacketBatch(slots=16)
        src, dst = int(inbound.stack_address), int(outbound.stack_address)
        for seeded in (True, False):
            payload = os.urandom(20 * MSS + 123)
            packet = build_tcp_ipv4(
                src, dst, 40000, 9, ISS, 1, ACK | PSH, 65535, payload, offload_checksum=seeded
            )
            assert inbound.write(packet, gso_mss=MSS)
            expected = math.ceil(len(payload) / MSS)
            segments: list[tuple[IPv4Header, bytes]] = []
            deadline = time.monotonic() + STEP
            while len(segments) < expected and time.monotonic() < deadline:
                if not select.select([outbound], [], [], 0.1)[0]:
                    continue
                outbound.read_into(batch)
                for raw in batch:
                    if raw[0] >> 4 == 4:
                        ip, _ = parse_packet(bytes(raw), verify_checksum=False)
                        segments.append((ip, bytes(raw)))
            assert len(segments) == expected
            assert all(ip.total_length <= outbound.mtu and ip.ttl == 63 for ip, _ in segments)
            if seeded:
                # parse_packet verifies both checksums by default.
                parsed = [parse_packet(raw)[1] for _, raw in segments]
                assert b"".join(bytes(seg.payload) for seg in parsed if seg is not None) == payload
            else:
                for _, raw in segments:
                    with pytest.raises(MalformedPacket, match="TCP checksum"):
                        parse_packet(raw)


def test_rst_refuses_kernel_connect(tun: TunDevice, netns: NetNamespace) -> None:
    peer = Peer(tun)
    with closing(kernel_connect(netns)) as sock:
        syn = peer.expect(lambda p: p.seg.flags & (SYN | ACK) == SYN)
        # RFC 9293 3.10.7.1: a RST for a SYN to a closed port carries ACK = SEG.SEQ + SEG.LEN.
        peer.send(syn.seg.src_port, 0, syn.seg.seq + 1, RST | ACK)
        wait_writable(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED


def test_write_validates_offload_requests(tun: TunDevice) -> None:
    peer = Peer(tun)
    big = peer.segment(1234, 1, 1, ACK, bytes(4000), offload_checksum=True)
    with pytest.raises(ValueError, match="MTU"):
        tun.write(big)
    with pytest.raises(ValueError, match="MTU"):
        tun.write_many([peer.segment(1234, 1, 1, ACK), big])
    if tun.offload:
        udp = build_ipv4(peer.stack, peer.kernel, 17, bytes(8))
        with pytest.raises(ValueError, match="TCP/IPv4"):
            tun.write(udp, checksum_offload=True)
    else:
        with pytest.raises(ValueError, match="offload=True"):
            tun.write(big, gso_mss=MSS)


def test_write_many_reaches_kernel(tun: TunDevice, netns: NetNamespace) -> None:
    """Three data segments in one call arrive in order at a kernel socket."""
    peer = Peer(tun)
    with closing(kernel_connect(netns)) as sock:
        syn = handshake(peer, sock)
        chunks = [os.urandom(1000) for _ in range(3)]
        packets = [
            peer.segment(syn.seg.src_port, ISS + 1 + 1000 * i, syn.seg.seq + 1, ACK | PSH, chunk)
            for i, chunk in enumerate(chunks)
        ]
        assert tun.write_many(packets) == 3
        received = bytearray()
        deadline = time.monotonic() + STEP
        while len(received) < 3000 and time.monotonic() < deadline:
            if select.select([sock], [], [], 0.1)[0]:
                received += sock.recv(65536)
        assert received == b"".join(chunks)


# -- pytcp.netns ---------------------------------------------------------------------------------


def test_in_namespace_moves_only_the_current_thread(netns: NetNamespace) -> None:
    home = os.readlink("/proc/thread-self/ns/net")
    target = f"net:[{os.stat(netns.path).st_ino}]"
    seen: dict[str, str] = {}
    entered = threading.Event()

    def observe(key: str) -> None:
        entered.wait(STEP)
        seen[key] = os.readlink("/proc/thread-self/ns/net")

    existing = threading.Thread(target=observe, args=("existing",))
    existing.start()
    with in_namespace(netns):
        assert os.readlink("/proc/thread-self/ns/net") == target
        spawned = threading.Thread(target=observe, args=("spawned",))
        spawned.start()
        entered.set()
        existing.join(STEP)
        spawned.join(STEP)
    # A thread that already ran stays put; one started inside inherits the namespace (clone(2)).
    assert seen == {"existing": home, "spawned": target}
    assert os.readlink("/proc/thread-self/ns/net") == home
    with pytest.raises(RuntimeError, match="boom"), in_namespace(netns):
        raise RuntimeError("boom")
    assert os.readlink("/proc/thread-self/ns/net") == home


def test_namespace_close_kills_its_processes(make_netns: Callable[[str], NetNamespace]) -> None:
    ns = make_netns("procs")
    assert ns.name.startswith(f"pytcp-procs-{os.getpid()}-")
    assert "lo" in ns.run(["ip", "-br", "link"]).stdout
    process = ns.popen(["sleep", "30"])
    ns.close()
    assert process.returncode is not None
    assert not os.path.exists(ns.path)
    ns.close()  # idempotent


def test_sweeper_deletes_namespaces_of_dead_processes(privileged: None) -> None:
    with open("/proc/sys/kernel/pid_max") as f:
        dead_pid = int(f.read()) + 1  # no process can have it
    name = f"pytcp-sweep-{dead_pid}-0"
    run_ip("netns", "add", name)
    try:
        assert name in sweep_stale_namespaces()
        assert not os.path.exists(f"/run/netns/{name}")
    finally:
        if os.path.exists(f"/run/netns/{name}"):
            run_ip("netns", "del", name)


def test_veth_pair_carries_kernel_tcp(make_netns: Callable[[str], NetNamespace]) -> None:
    ns_a, ns_b = make_netns("veth_a"), make_netns("veth_b")
    veth_pair(ns_a, ns_b, address_a="198.18.2.1", address_b="198.18.2.2")
    with in_namespace(ns_b):
        server = socket.create_server(("198.18.2.2", PORT))
    with in_namespace(ns_a):
        client = socket.socket()
    with closing(server), closing(client):
        server.settimeout(STEP)
        client.settimeout(STEP)
        client.connect(("198.18.2.2", PORT))
        conn, (peer_address, _) = server.accept()
        with closing(conn):
            conn.settimeout(STEP)
            assert peer_address == "198.18.2.1"
            client.sendall(b"hello")
            assert conn.recv(5) == b"hello"


def test_require_privileges_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytcp import netns as netns_module

    monkeypatch.setattr(netns_module, "_effective_capabilities", lambda: 0)
    with pytest.raises(PermissionError, match=r"CAP_NET_ADMIN \(run as root\)"):
        require_privileges()
