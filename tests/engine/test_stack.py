"""The stack: demultiplexing, malformed input, RST to closed ports, listeners and their queues, SYN
cookies end to end, ephemeral ports, TIME-WAIT (reuse and takeover), limits and the timer heap.

Packets move between stacks by hand on a scripted clock (aioquic style): ``exchange`` delivers
everything queued until both sides are quiet.
"""

from __future__ import annotations

import errno
import random
import socket
from typing import Any

import pytest

import tcpcore
from pytcp.config import TCPConfig
from pytcp.events import Closed, Connected, IncomingConnection
from pytcp.isn import EPHEMERAL_HIGH, EPHEMERAL_LOW
from pytcp.stack import Stack
from pytcp.state import State

A = 0xC6120001  # 198.18.0.1
B = 0xC6120002  # 198.18.0.2
C = 0xC6120003


def exchange(*stacks: Stack, now: float, drop: Any = None, rounds: int = 100) -> list[bytes]:
    """Deliver queued packets between stacks until none is left; returns everything sent. ``drop``
    (packet -> bool) loses chosen packets."""
    by_address = {s.address: s for s in stacks}
    sent: list[bytes] = []
    for _ in range(rounds):
        moved = False
        for stack in stacks:
            for packet in stack.datagrams_to_send(now):
                sent.append(packet)
                moved = True
                if drop is not None and drop(packet):
                    continue
                target = by_address.get(int.from_bytes(packet[16:20], "big"))
                if target is not None:
                    target.receive(packet, now)
        if not moved:
            return sent
    raise AssertionError("stacks never went quiet")


def parse(packet: bytes) -> Any:
    _, seg = tcpcore.parse_packet(packet)
    assert seg is not None
    return seg


def raw(
    flags: int,
    *,
    src: int = A,
    dst: int = B,
    sport: int = 40000,
    seq: int = 1000,
    ack: int = 0,
    payload: bytes = b"",
    **options: Any,
) -> bytes:
    """A segment from A:sport (by default) to B:80."""
    return tcpcore.build_tcp_ipv4(src, dst, sport, 80, seq, ack, flags, 65535, payload, **options)


def events(stack: Stack) -> list[Any]:
    out = []
    while (event := stack.next_event()) is not None:
        out.append(event)
    return out


def pair(config: TCPConfig | None = None) -> tuple[Stack, Stack]:
    """A client stack at A and a server stack at B."""
    return Stack(A, config, seed=1), Stack(B, config, seed=2)


def established(client: Stack, server: Stack, port: int = 80, now: float = 0.0) -> tuple[Any, Any]:
    listener = server.listen(port)
    conn = client.connect(B, port, now)
    exchange(client, server, now=now)
    child = server.accept(listener)
    assert child is not None
    assert conn.state is State.ESTABLISHED and child.state is State.ESTABLISHED
    return conn, child


# -- RST to a closed port (RFC 9293 3.10.7.1) -----------------------------------------------------------


def test_syn_to_closed_port_gets_rst_ack_exact_fields() -> None:
    server = Stack(B, seed=2)
    server.receive(raw(tcpcore.SYN, seq=0xFFFFFFFF, mss=1460), 1.0)
    (packet,) = server.datagrams_to_send(1.0)
    ip, seg = tcpcore.parse_packet(packet)
    assert seg is not None
    assert (ip.src, ip.dst, seg.src_port, seg.dst_port) == (B, A, 80, 40000)
    # <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, the SYN counting one (wrapping to 0).
    assert (seg.flags, seg.seq, seg.ack, seg.window, seg.payload_length) == (
        tcpcore.RST | tcpcore.ACK,
        0,
        0,
        0,
        0,
    )
    assert seg.mss == 0 and not seg.has_timestamps
    assert server.mib.OutRsts == 1 and server.mib.OutSegs == 1


def test_data_and_fin_count_in_the_rst_ack() -> None:
    server = Stack(B, seed=2)
    server.receive(raw(tcpcore.SYN | tcpcore.FIN, seq=100, payload=b"hello"), 1.0)
    seg = parse(server.datagrams_to_send(1.0)[0])
    assert seg.ack == 100 + 5 + 2


def test_ack_to_closed_port_gets_bare_rst_at_seg_ack() -> None:
    server = Stack(B, seed=2)
    server.receive(raw(tcpcore.ACK | tcpcore.PSH, seq=5, ack=0x12345678, payload=b"x"), 1.0)
    seg = parse(server.datagrams_to_send(1.0)[0])
    # <SEQ=SEG.ACK><CTL=RST>
    assert (seg.flags, seg.seq, seg.ack) == (tcpcore.RST, 0x12345678, 0)


def test_never_rst_in_reply_to_rst() -> None:
    server = Stack(B, seed=2)
    server.receive(raw(tcpcore.RST, seq=5), 1.0)
    server.receive(raw(tcpcore.RST | tcpcore.ACK, seq=5, ack=9), 1.0)
    assert server.datagrams_to_send(1.0) == []
    assert server.mib.OutRsts == 0 and server.mib.InSegs == 2


# -- malformed and foreign input --------------------------------------------------------------------


def test_bad_ip_checksum_counts_inhdrerrors() -> None:
    server = Stack(B, seed=2)
    packet = bytearray(raw(tcpcore.SYN))
    packet[10] ^= 0xFF
    server.receive(bytes(packet), 0.0)
    assert (server.mib.InReceives, server.mib.InHdrErrors, server.mib.InSegs) == (1, 1, 0)
    assert server.datagrams_to_send(0.0) == []


def test_bad_tcp_checksum_counts_inerrs_and_incsumerrors() -> None:
    server = Stack(B, seed=2)
    packet = bytearray(raw(tcpcore.SYN, payload=b"abc"))
    packet[-1] ^= 0x01
    server.receive(bytes(packet), 0.0)
    m = server.mib
    assert (m.InSegs, m.InErrs, m.InCsumErrors, m.OutRsts) == (1, 1, 1, 0)


def test_checksum_verified_by_the_device_skips_verification() -> None:
    server = Stack(B, seed=2)
    server.listen(80)
    packet = bytearray(raw(tcpcore.SYN))
    packet[36:38] = b"\x00\x00"  # zero the TCP checksum: only an offloaded receive accepts it
    server.receive(bytes(packet), 0.0, checksum_verified=True)
    assert len(server.connections()) == 1 and server.mib.InCsumErrors == 0
    server.receive(bytes(packet), 0.0)
    assert server.mib.InCsumErrors == 1


def test_truncated_tcp_header_is_inerrs_not_csum() -> None:
    server = Stack(B, seed=2)
    packet = tcpcore.build_ipv4(A, B, tcpcore.IPPROTO_TCP, b"\x00" * 12)
    server.receive(packet, 0.0)
    assert (server.mib.InErrs, server.mib.InCsumErrors) == (1, 0)


def test_foreign_fragment_and_other_protocols() -> None:
    server = Stack(B, seed=2)
    server.receive(raw(tcpcore.SYN, dst=C), 0.0)
    server.receive(tcpcore.build_ipv4(A, B, tcpcore.IPPROTO_UDP, b"\x00" * 8), 0.0)
    fragment = bytearray(raw(tcpcore.SYN))
    fragment[6] = 0x20  # MF set, DF clear
    fragment[10:12] = b"\x00\x00"
    fragment[10:12] = tcpcore.internet_checksum(bytes(fragment[:20])).to_bytes(2, "big")
    server.receive(bytes(fragment), 0.0)
    m = server.mib
    assert (m.InAddrErrors, m.InUnknownProtos, m.FragDropped, m.InSegs) == (1, 1, 1, 0)
    assert server.datagrams_to_send(0.0) == []


def test_random_garbage_never_raises() -> None:
    server = Stack(B, seed=2)
    server.listen(80)
    rng = random.Random(4)
    good = raw(tcpcore.SYN, mss=1460, wscale=7, sack_permitted=True, timestamps=(1, 0))
    for i in range(3000):
        if i % 2:
            packet = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                packet[rng.randrange(len(packet))] = rng.randrange(256)
            data = bytes(packet[: rng.randint(0, len(packet))])
        else:
            data = rng.randbytes(rng.randint(0, 80))
        server.receive(data, i * 0.001)
        server.datagrams_to_send(i * 0.001)
    assert server.mib.InReceives == 3000


# -- demultiplexing, listeners, accept ------------------------------------------------------------------


def test_handshake_events_demux_and_table() -> None:
    client, server = pair()
    listener = server.listen(80)
    conn = client.connect(B, 80, 0.0)
    assert EPHEMERAL_LOW <= conn.local_port <= EPHEMERAL_HIGH
    assert conn.state is State.SYN_SENT and client.mib.ActiveOpens == 1
    sent = exchange(client, server, now=0.0)
    assert [tcpcore.flags_to_str(parse(p).flags) for p in sent] == ["S", "S.", "."]
    assert [type(e) for e in events(client)] == [Connected]
    incoming = events(server)
    assert [type(e) for e in incoming] == [Connected, IncomingConnection]
    assert incoming[1].listener is listener
    child = server.accept(listener)
    assert child is incoming[1].conn and server.accept(listener) is None
    assert child.key == (B, 80, A, conn.local_port)
    assert server.connections() == [child] and client.connections() == [conn]
    # Data goes to the right connection by 4-tuple.
    conn.send(b"ping", 0.1)
    exchange(client, server, now=0.1)
    assert child.recv(100, 0.1) == b"ping"
    rows = server.table()
    assert rows[0]["state"] == "LISTEN" and rows[0]["local"] == "198.18.0.2:80"
    assert rows[1]["state"] == "ESTABLISHED" and rows[1]["remote"] == f"198.18.0.1:{conn.local_port}"
    assert server.info()["connections"] == 1 and server.mib.CurrEstab == 1


def test_listen_twice_is_eaddrinuse() -> None:
    server = Stack(B, seed=2)
    server.listen(80)
    with pytest.raises(OSError) as info:
        server.listen(80)
    assert info.value.errno == errno.EADDRINUSE


def test_ack_to_listener_is_reset() -> None:
    server = Stack(B, seed=2)
    server.listen(80)
    server.receive(raw(tcpcore.ACK, seq=7, ack=99), 0.0)
    seg = parse(server.datagrams_to_send(0.0)[0])
    assert (seg.flags, seg.seq) == (tcpcore.RST, 99)


def test_accept_queue_overflow_drops_the_final_ack_until_accept() -> None:
    client = Stack(A, seed=1)
    # Room for two half-open children but only one completed connection.
    server = Stack(B, TCPConfig(syncookies="off", somaxconn=1), seed=2)
    listener = server.listen(80, backlog=2)
    # Both SYNs arrive while the accept queue is empty; only the first final ACK finds room.
    first = client.connect(B, 80, 0.0)
    second = client.connect(B, 80, 0.0)
    exchange(client, server, now=0.0)
    # The client thinks it is connected; the server's child stays in SYN-RECEIVED.
    assert first.state is second.state is State.ESTABLISHED
    assert server.mib.ListenOverflows == 1 and server.mib.ListenDrops == 1
    assert len(listener.accept_queue) == 1 and len(listener.syn_queue) == 1
    # While the queue is full, new SYNs are dropped too (Linux tcp_conn_request).
    server.receive(raw(tcpcore.SYN, src=C), 0.0)
    assert server.datagrams_to_send(0.0) == [] and server.mib.ListenOverflows == 2
    assert server.accept(listener) is not None
    # The server retransmits its SYN-ACK; the client's ACK now completes the handshake.
    at = server.get_timer()
    assert at is not None
    server.handle_timer(at)
    exchange(client, server, now=at)
    assert server.accept(listener) is not None


def test_syn_queue_full_without_cookies_drops() -> None:
    server = Stack(B, TCPConfig(syncookies="off"), seed=2)
    server.listen(80, backlog=2)
    for port in (1, 2, 3):
        server.receive(raw(tcpcore.SYN, sport=port), 0.0)
    assert len(server.connections()) == 2
    assert server.mib.TCPReqQFullDrop == 1 and server.mib.ListenDrops == 1
    assert len(server.datagrams_to_send(0.0)) == 2


def test_close_listener_resets_children() -> None:
    client, server = pair()
    listener = server.listen(80)
    conn = client.connect(B, 80, 0.0)
    exchange(client, server, now=0.0, drop=lambda p: parse(p).flags == tcpcore.ACK)  # no final ACK
    (child,) = server.connections()
    assert child.state is State.SYN_RECEIVED
    server.close_listener(listener, 0.5)
    assert listener.closed and server.connections() == [] and server.listeners() == []
    (rst,) = server.datagrams_to_send(0.5)
    assert parse(rst).flags & tcpcore.RST
    client.receive(rst, 0.5)
    assert conn.state is State.CLOSED
    # The port is closed now: a new SYN gets a RST.
    server.receive(raw(tcpcore.SYN), 0.6)
    assert parse(server.datagrams_to_send(0.6)[0]).flags == tcpcore.RST | tcpcore.ACK


# -- SYN cookies through the stack --------------------------------------------------------------------


@pytest.mark.parametrize("timestamps", [True, False])
def test_cookie_handshake(timestamps: bool) -> None:
    config = TCPConfig(timestamps=timestamps)
    client = Stack(A, config, seed=1)
    server = Stack(B, config.replace(syncookies="on"), seed=2)
    listener = server.listen(80)
    conn = client.connect(B, 80, 10.0)
    exchange(client, server, now=10.0)
    assert server.mib.SyncookiesSent == 1 and server.mib.SyncookiesRecv == 1
    child = server.accept(listener)
    assert child is not None and child.state is State.ESTABLISHED
    assert conn.state is State.ESTABLISHED
    info, peer = child.info(), conn.info()
    # With timestamps the TSval carried wscale and SACK-permitted; without them both are lost (Linux).
    assert info.sack is peer.sack is timestamps
    assert info.timestamps is peer.timestamps is timestamps
    assert info.snd_wscale == (peer.rcv_wscale if timestamps else 0)
    assert info.snd_mss + (12 if timestamps else 0) == 1460
    conn.send(b"x" * 5000, 10.1)
    exchange(client, server, now=10.1)
    assert child.recv(10000, 10.1) == b"x" * 5000


def test_auto_cookies_when_syn_queue_full() -> None:
    client = Stack(A, seed=1)
    server = Stack(B, TCPConfig(syncookies="auto"), seed=2)
    listener = server.listen(80, backlog=1)
    server.receive(raw(tcpcore.SYN, src=C, sport=9), 0.0)  # a half-open that fills the SYN queue
    server.datagrams_to_send(0.0)
    conn = client.connect(B, 80, 0.0)
    exchange(client, server, now=0.0)
    assert server.mib.SyncookiesSent == 1 and server.mib.SyncookiesRecv == 1
    assert conn.state is State.ESTABLISHED
    assert server.accept(listener) is not None
    assert len(listener.syn_queue) == 1


def test_forged_cookie_ack_is_reset() -> None:
    server = Stack(B, TCPConfig(syncookies="on"), seed=2)
    server.listen(80)
    server.receive(raw(tcpcore.ACK, seq=1001, ack=0xDEADBEEF), 0.0)
    assert parse(server.datagrams_to_send(0.0)[0]).flags == tcpcore.RST
    assert server.mib.SyncookiesFailed == 1 and server.connections() == []


# -- ports, limits ------------------------------------------------------------------------------------


def test_ephemeral_ports_distinct_and_explicit_conflict() -> None:
    client = Stack(A, seed=1)
    ports = {client.connect(B, 80, 0.0).local_port for _ in range(50)}
    assert len(ports) == 50
    taken = next(iter(ports))
    with pytest.raises(OSError) as info:
        client.connect(B, 80, 0.0, local_port=taken)
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert client.connect(B, 81, 0.0, local_port=taken).local_port == taken  # another destination


def test_same_seed_same_isns_and_ports() -> None:
    conns = [Stack(A, seed=9).connect(B, 80, 1.0) for _ in range(2)]
    assert conns[0].local_port == conns[1].local_port and conns[0].iss == conns[1].iss
    assert Stack(A, seed=10).connect(B, 80, 1.0).iss != conns[0].iss


def test_max_connections() -> None:
    config = TCPConfig(max_connections=2, max_syn_backlog=2)
    client = Stack(A, config, seed=1)
    client.connect(B, 80, 0.0)
    client.connect(B, 80, 0.0)
    with pytest.raises(OSError) as info:
        client.connect(B, 80, 0.0)
    assert info.value.errno == errno.EAGAIN
    # One outgoing connection and one child fill the table; the next SYN finds the SYN queue with room
    # but the table full.
    server = Stack(B, config, seed=2)
    server.connect(C, 80, 0.0)
    server.listen(80)
    for port in (1, 2):
        server.receive(raw(tcpcore.SYN, sport=port), 0.0)
    assert len(server.connections()) == 2 and server.mib.ListenDrops == 1


# -- TIME-WAIT ----------------------------------------------------------------------------------------


def close_both(client: Stack, server: Stack, conn: Any, child: Any, now: float) -> None:
    """The client closes first and ends in TIME-WAIT; the server ends CLOSED."""
    conn.close(now)
    exchange(client, server, now=now)
    child.close(now)
    exchange(client, server, now=now)
    assert conn.state is State.TIME_WAIT and child.state is State.CLOSED


def test_time_wait_stays_until_its_timer() -> None:
    client, server = pair()
    conn, child = established(client, server)
    close_both(client, server, conn, child, 1.0)
    events(client)
    assert server.connections() == [] and client.connections() == [conn]
    deadline = client.get_timer()
    assert deadline is not None and deadline == pytest.approx(1.0 + TCPConfig().time_wait)
    client.handle_timer(deadline - 0.001)
    assert client.connections() == [conn]
    client.handle_timer(deadline)
    assert client.connections() == [] and client.get_timer() is None
    assert [type(e) for e in events(client)] == [Closed]
    assert client.mib.TW == 1


def test_new_syn_takes_over_time_wait() -> None:
    # The server closes first, so its side of the 4-tuple is in TIME-WAIT while it keeps listening.
    client, server = pair()
    conn, child = established(client, server)
    close_both(server, client, child, conn, 1.0)
    assert child.state is State.TIME_WAIT and child in server.connections()
    old_snd_nxt = child.snd_nxt
    # A new SYN from the same port, beyond the old RCV.NXT: a new incarnation (RFC 6191).
    server.receive(raw(tcpcore.SYN, sport=conn.local_port, seq=(conn.snd_nxt + 100_000) & 0xFFFFFFFF), 2.0)
    (new,) = server.connections()
    assert new is not child and new.state is State.SYN_RECEIVED and child.state is State.CLOSED
    assert new.iss == (old_snd_nxt + 65537) & 0xFFFFFFFF
    synack = parse(server.datagrams_to_send(2.0)[-1])
    assert synack.flags == tcpcore.SYN | tcpcore.ACK


def test_syn_with_old_timestamp_stays_with_time_wait() -> None:
    client, server = pair()
    conn, child = established(client, server)
    close_both(server, client, child, conn, 1.0)
    assert child.ts_recent is not None
    old_ts = (child.ts_recent - 1000) & 0xFFFFFFFF
    seq = (child.rcv_nxt + 100_000) & 0xFFFFFFFF
    server.receive(raw(tcpcore.SYN, sport=conn.local_port, seq=seq, timestamps=(old_ts, 0)), 2.0)
    assert server.connections() == [child] and child.state is State.TIME_WAIT


def test_old_syn_stays_with_time_wait() -> None:
    client, server = pair(TCPConfig(timestamps=False))
    conn, child = established(client, server)
    close_both(server, client, child, conn, 1.0)
    server.receive(raw(tcpcore.SYN, sport=conn.local_port, seq=(child.rcv_nxt - 10) & 0xFFFFFFFF), 2.0)
    assert server.connections() == [child] and child.state is State.TIME_WAIT


@pytest.mark.parametrize(
    ("reuse", "delay", "expect"), [(False, 5.0, False), (True, 0.5, False), (True, 5.0, True)]
)
def test_tw_reuse_on_connect(reuse: bool, delay: float, expect: bool) -> None:
    client, server = pair(TCPConfig(tw_reuse=reuse))
    conn, child = established(client, server)
    close_both(client, server, conn, child, 1.0)
    old_snd_nxt = conn.snd_nxt
    if not expect:
        with pytest.raises(OSError) as info:
            client.connect(B, 80, 1.0 + delay, local_port=conn.local_port)
        assert info.value.errno == errno.EADDRNOTAVAIL
        return
    new = client.connect(B, 80, 1.0 + delay, local_port=conn.local_port)
    assert conn.state is State.CLOSED and client.connections() == [new]
    assert new.iss == (old_snd_nxt + 65537) & 0xFFFFFFFF
    assert client.mib.TWRecycled == 1


# -- timers -------------------------------------------------------------------------------------------


def test_timer_heap_orders_and_stays_bounded() -> None:
    client = Stack(A, TCPConfig(syn_retries=3), seed=1)
    conns = [client.connect(B, 80 + i, i * 0.1) for i in range(5)]
    client.datagrams_to_send(0.5)
    # Each SYN's retransmission timer runs from connect(): initial RTO 1 s (RFC 6298 2.1).
    assert client.get_timer() == pytest.approx(1.0)
    now = 0.0
    for _ in range(200):
        at = client.get_timer()
        if at is None:
            break
        now = at
        client.handle_timer(now)
        client.datagrams_to_send(now)
        assert len(client._heap) <= 2 * len(conns) + 64  # the bound is the point
    assert client.get_timer() is None
    assert all(c.state is State.CLOSED for c in conns) and client.connections() == []


def test_shutdown_and_event_order() -> None:
    client, server = pair()
    conn, child = established(client, server)
    events(client), events(server)
    conn.shutdown(socket.SHUT_WR, 1.0)
    exchange(client, server, now=1.0)
    assert [type(e).__name__ for e in events(server)] == ["PeerClosed"]
    assert child.at_eof


# -- the wake hook: application calls reach the stack by themselves -----------------------------------


def test_application_calls_wake_the_stack() -> None:
    """send / close / abort / option changes need no event and no explicit call to be noticed: the
    connection's wake hook queues it for datagrams_to_send and re-pushes its timer."""
    client, server = pair()
    conn, child = established(client, server)
    assert client.datagrams_to_send(0.0) == server.datagrams_to_send(0.0) == []
    assert client.get_timer() is None and server.get_timer() is None  # events left undelivered too
    assert conn.send(b"hello", 1.0) == 5
    (data,) = [parse(p) for p in client.datagrams_to_send(1.0)]
    assert data.payload_length == 5 and data.seq == conn.snd_nxt - 5
    assert client.get_timer() == pytest.approx(1.0 + conn.info().rto)  # RFC 6298 5.1
    child.close(1.0)
    (fin,) = [parse(p) for p in server.datagrams_to_send(1.0)]
    assert tcpcore.flags_to_str(fin.flags) == "F." and child.state is State.FIN_WAIT_1
    assert server.get_timer() == pytest.approx(1.0 + child.info().rto)
    conn.abort(2.0)
    (rst,) = [parse(p) for p in client.datagrams_to_send(2.0)]
    assert (tcpcore.flags_to_str(rst.flags), rst.seq) == ("R.", conn.snd_nxt)
    assert conn.state is State.CLOSED and client.get_timer() is None and client.connections() == []


def test_option_change_arms_a_timer_without_output() -> None:
    client, server = pair()
    _conn, child = established(client, server)
    child.keepalive = True  # SO_KEEPALIVE on an idle connection: only the timer changes
    assert server.get_timer() == pytest.approx(server.config.keepalive_time)
    assert server.datagrams_to_send(0.0) == []
    server.handle_timer(server.config.keepalive_time)
    (probe,) = [parse(p) for p in server.datagrams_to_send(server.config.keepalive_time)]
    assert probe.seq == child.snd_nxt - 1 and probe.payload_length == 0  # RFC 1122 4.2.3.6
