"""The promiscuous listener (Stack.listen_any), sans-I/O on a scripted clock: SYNs for foreign addresses
become ConnectRequest events that are answered later (accept, RST, ICMP, silence), SYN retransmissions
are absorbed, requests expire, and the request table is bounded. A client Stack plays the kernel: every
packet it sends goes to the promiscuous stack, whatever its destination, as a route into a TUN would.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest

import tcpcore
from pytcp.config import TCPConfig
from pytcp.connection import Connection
from pytcp.events import (
    Closed,
    Connected,
    ConnectionFailed,
    ConnectionReset,
    ConnectRequest,
    IncomingConnection,
)
from pytcp.icmp import IcmpError, IcmpErrorKind, handle_icmp
from pytcp.listener import InterceptListener, Refusal
from pytcp.mib import MIB
from pytcp.stack import REQUEST_TIMEOUT, Stack
from pytcp.state import State
from tcpcore import ACK, RST, SYN
from tcpcore.constants import IPPROTO_ICMP

CLIENT = 0xC6120001  # 198.18.0.1
GATEWAY = 0xC6120002  # 198.18.0.2: the promiscuous stack's own address
TARGET = 0xC6130102  # 198.19.1.2: a foreign address
PORT = 5000


def events(stack: Stack) -> list[Any]:
    out = []
    while (event := stack.next_event()) is not None:
        out.append(event)
    return out


class Net:
    """A client stack and a promiscuous stack on one link, moved by hand."""

    def __init__(self, config: TCPConfig | None = None, backlog: int = 16, **listen: Any) -> None:
        self.now = 0.0
        self.client = Stack(CLIENT, config, seed=1)
        self.gateway = Stack(GATEWAY, config, seed=2)
        self.listener = self.gateway.listen_any(backlog, **listen)
        self.to_client: list[bytes] = []  # everything the gateway sent, in order

    def flush(self, *, drop_from_client: bool = False) -> None:
        """Deliver until both stacks are quiet."""
        for _ in range(100):
            moved = False
            for packet in self.client.datagrams_to_send(self.now):
                moved = True
                if not drop_from_client:
                    self.gateway.receive(packet, self.now)
            for packet in self.gateway.datagrams_to_send(self.now):
                moved = True
                self.to_client.append(packet)
                self.client.receive(packet, self.now)
            if not moved:
                return
        raise AssertionError("never quiet")

    def advance(self, seconds: float) -> None:
        """Move the clock, firing both stacks' timers at their deadlines and delivering as we go."""
        end = self.now + seconds
        while True:
            due = [
                t for t in (self.client.get_timer(), self.gateway.get_timer()) if t is not None and t <= end
            ]
            if not due:
                break
            self.now = max(self.now, min(due))
            self.client.handle_timer(self.now)
            self.gateway.handle_timer(self.now)
            self.flush()
        self.now = end

    def connect(self, port: int = 40000, target: int = TARGET) -> tuple[Connection, Connection]:
        """Client SYN -> the request's connection on the gateway (its ConnectRequest popped)."""
        conn = self.client.connect(target, PORT, self.now, local_port=port)
        self.flush()
        (request,) = [e for e in events(self.gateway) if isinstance(e, ConnectRequest)]
        assert request.listener is self.listener
        return conn, request.conn


def syn(sport: int = 40000, seq: int = 1000, dst: int = TARGET, flags: int = SYN, **options: Any) -> bytes:
    return tcpcore.build_tcp_ipv4(CLIENT, dst, sport, PORT, seq, 0, flags, 65535, **options)


def parse(packet: bytes) -> Any:
    return tcpcore.parse_packet(packet)


def test_syn_for_any_address_becomes_a_request_and_nothing_is_sent() -> None:
    net = Net()
    client_conn, request = net.connect()
    assert net.to_client == []  # no SYN-ACK before the application decides
    assert (request.local_addr, request.local_port, request.remote_addr, request.remote_port) == (
        TARGET,
        PORT,
        CLIENT,
        40000,
    )
    assert request.state is State.CLOSED and client_conn.state is State.SYN_SENT
    assert net.gateway.mib.InterceptRequests == 1 and net.listener.requests
    # Pending requests are no rows of the connection table; the listener is the wildcard one.
    rows = net.gateway.table()
    assert [row["local"] for row in rows] == ["*:*"]
    assert rows[0]["state"] == "LISTEN"


def test_accept_request_completes_the_handshake_with_the_syns_options() -> None:
    net = Net(TCPConfig(mss=1200))
    client_conn, conn = net.connect()
    net.gateway.accept_request(conn, net.now)
    net.flush()
    ip, synack = parse(net.to_client[0])
    assert synack.flags == SYN | ACK and (ip.src, ip.dst) == (TARGET, CLIENT)
    assert synack.ack == (client_conn.iss + 1) & 0xFFFFFFFF
    assert synack.mss == 1200 and synack.wscale >= 0 and synack.sack_permitted and synack.has_timestamps
    assert client_conn.state is State.ESTABLISHED and conn.state is State.ESTABLISHED
    got = events(net.gateway)
    assert [type(e) for e in got] == [Connected, IncomingConnection]
    assert net.gateway.accept(net.listener) is conn
    # Data both ways through the accepted connection.
    client_conn.send(b"ping", net.now)
    conn.send(b"pong", net.now)
    net.flush()
    assert conn.recv(10, net.now) == b"ping" and client_conn.recv(10, net.now) == b"pong"
    assert net.gateway.mib.InterceptAccepted == 1 and not net.listener.requests
    with pytest.raises(ValueError):
        net.gateway.accept_request(conn, net.now)  # answered already


def test_refuse_with_reset_gives_the_client_econnrefused() -> None:
    net = Net()
    client_conn, conn = net.connect()
    net.gateway.refuse_request(conn, net.now, Refusal.RESET)
    net.flush()
    ip, rst = parse(net.to_client[0])
    assert rst.flags == RST | ACK and (ip.src, rst.src_port) == (TARGET, PORT)
    assert client_conn.state is State.CLOSED and client_conn.error == errno.ECONNREFUSED
    assert any(isinstance(e, ConnectionReset) for e in events(net.client))
    assert [type(e) for e in events(net.gateway)] == [Closed]
    assert net.gateway.connections() == [] and net.gateway.mib.InterceptRefused == 1
    with pytest.raises(ValueError):
        net.gateway.refuse_request(conn, net.now)


@pytest.mark.parametrize(
    ("refusal", "code", "source", "kind", "err"),
    [
        (Refusal.NET_UNREACHABLE, 0, GATEWAY, IcmpErrorKind.NET_UNREACHABLE, errno.ENETUNREACH),
        (Refusal.HOST_UNREACHABLE, 1, GATEWAY, IcmpErrorKind.HOST_UNREACHABLE, errno.EHOSTUNREACH),
        (Refusal.PORT_UNREACHABLE, 3, TARGET, IcmpErrorKind.PORT_UNREACHABLE, errno.ECONNREFUSED),
        (Refusal.PROHIBITED, 13, GATEWAY, IcmpErrorKind.ADMIN_PROHIBITED, errno.EHOSTUNREACH),
    ],
)
def test_refuse_with_icmp_quotes_the_syn_and_fails_the_connect(
    refusal: Refusal, code: int, source: int, kind: IcmpErrorKind, err: int
) -> None:
    net = Net()
    client_conn, conn = net.connect()
    net.gateway.refuse_request(conn, net.now, refusal)
    net.flush()
    (packet,) = net.to_client
    ip, seg = parse(packet)
    assert seg is None and ip.protocol == IPPROTO_ICMP and (ip.src, ip.dst) == (source, CLIENT)
    assert packet[ip.payload_offset : ip.payload_offset + 2] == bytes((3, code))
    error = handle_icmp(ip, packet, MIB())
    assert error == IcmpError((CLIENT, 40000, TARGET, PORT), kind, err, client_conn.iss)
    # The client stack (as Linux tcp_v4_err) ends its connect with that errno.
    assert client_conn.state is State.CLOSED and client_conn.error == err
    assert [e.errno for e in events(net.client) if isinstance(e, ConnectionFailed)] == [err]
    assert net.gateway.mib.OutDestUnreachs == 1


def test_refuse_by_dropping_sends_nothing_and_the_retransmitted_syn_asks_again() -> None:
    net = Net()
    client_conn, conn = net.connect()
    net.gateway.refuse_request(conn, net.now, Refusal.DROP)
    net.flush()
    assert net.to_client == [] and net.gateway.connections() == []
    net.advance(1.5)  # the client's first SYN retransmission (RTO 1 s)
    (again,) = [e for e in events(net.gateway) if isinstance(e, ConnectRequest)]
    assert again.conn is not conn and again.conn.key == conn.key
    assert client_conn.state is State.SYN_SENT


def test_syn_retransmissions_are_absorbed_while_pending() -> None:
    net = Net()
    client_conn, conn = net.connect()
    net.advance(3.5)  # retransmissions at 1 s and 3 s
    assert net.gateway.mib.InterceptSynAbsorbed == 2
    assert [e for e in events(net.gateway) if isinstance(e, ConnectRequest)] == []
    assert net.to_client == []
    # Anything but a SYN for a pending request is dropped quietly: nothing was sent it could refer to.
    net.gateway.receive(syn(flags=ACK), net.now)
    net.gateway.receive(syn(flags=RST), net.now)
    net.flush()
    assert net.to_client == [] and len(net.listener.requests) == 1
    net.gateway.accept_request(conn, net.now)
    net.flush()
    assert client_conn.state is State.ESTABLISHED


def test_requests_expire_with_a_closed_event_and_the_next_syn_asks_again() -> None:
    net = Net(request_timeout=5.0)
    client_conn, conn = net.connect()
    assert net.gateway.get_timer() == pytest.approx(5.0)
    net.advance(5.5)
    got = events(net.gateway)
    assert any(isinstance(e, Closed) and e.conn is conn for e in got)
    assert net.gateway.mib.InterceptExpired == 1 and conn.key not in net.listener.requests
    with pytest.raises(ValueError):
        net.gateway.accept_request(conn, net.now)
    net.advance(2.0)  # the client's SYN at 7 s
    (again,) = [e for e in events(net.gateway) if isinstance(e, ConnectRequest)]
    net.gateway.accept_request(again.conn, net.now)
    net.flush()
    assert client_conn.state is State.ESTABLISHED
    assert REQUEST_TIMEOUT > 10.0  # the default outlives a forwarder's connect timeout


def test_request_table_is_bounded_by_the_backlog_and_never_uses_cookies() -> None:
    net = Net(TCPConfig(syncookies="on"), backlog=2)
    assert net.listener.syn_limit == 2
    gateway, mib = net.gateway, net.gateway.mib
    for port in (1, 2):
        gateway.receive(syn(sport=port), net.now)
    _, first = [e.conn for e in events(gateway) if isinstance(e, ConnectRequest)]
    gateway.receive(syn(sport=3), net.now)
    assert events(gateway) == [] and mib.TCPReqQFullDrop == 1 and mib.ListenDrops == 1
    assert gateway.datagrams_to_send(net.now) == []  # no cookie SYN-ACK, whatever syncookies says
    # An accepted request still counts (SYN-RECEIVED) until its handshake completes.
    gateway.accept_request(first, net.now)
    gateway.receive(syn(sport=4), net.now)
    assert mib.TCPReqQFullDrop == 2 and not any(isinstance(e, ConnectRequest) for e in events(gateway))
    # An ACK is never a cookie here: RST, as for any segment without a connection (RFC 9293 3.10.7.2).
    gateway.receive(syn(sport=5, flags=ACK), net.now)
    rst = [parse(p)[1] for p in gateway.datagrams_to_send(net.now) if parse(p)[1].flags & RST]
    assert [(s.flags, s.dst_port) for s in rst] == [(RST, 5)]
    assert mib.SyncookiesSent == 0


def test_table_full_drops_the_syn() -> None:
    net = Net(TCPConfig(max_connections=1, max_syn_backlog=1))
    net.gateway.receive(syn(sport=1), net.now)
    net.gateway.receive(syn(sport=2, dst=TARGET + 1), net.now)
    assert len([e for e in events(net.gateway) if isinstance(e, ConnectRequest)]) == 1


def test_own_address_keeps_closed_port_and_listener_semantics() -> None:
    net = Net()
    gateway = net.gateway
    gateway.receive(syn(dst=GATEWAY), net.now)
    (packet,) = gateway.datagrams_to_send(net.now)
    assert parse(packet)[1].flags == RST | ACK and events(gateway) == []
    listener = gateway.listen(PORT)
    gateway.receive(syn(sport=40001, dst=GATEWAY), net.now)
    assert parse(gateway.datagrams_to_send(net.now)[0])[1].flags == SYN | ACK
    assert listener.syn_queue and not net.listener.requests


def test_foreign_non_tcp_is_still_an_address_error() -> None:
    net = Net()
    packet = tcpcore.build_ipv4(CLIENT, TARGET, 17, b"\0" * 8)
    net.gateway.receive(packet, net.now)
    assert net.gateway.mib.InAddrErrors == 1


def test_time_wait_takeover_makes_a_new_request() -> None:
    net = Net()
    client_conn, conn = net.connect()
    net.gateway.accept_request(conn, net.now)
    net.flush()
    assert net.gateway.accept(net.listener) is conn
    conn.close(net.now)  # the gateway closes first and keeps TIME-WAIT
    net.flush()
    client_conn.close(net.now)
    net.flush()
    assert conn.state is State.TIME_WAIT
    events(net.gateway)
    net.advance(1.0)  # a newer ISN and timestamp: RFC 6191's test for a new incarnation
    assert conn.state is State.TIME_WAIT
    again = net.client.connect(TARGET, PORT, net.now, local_port=40000)
    net.flush()
    (request,) = [e for e in events(net.gateway) if isinstance(e, ConnectRequest)]
    assert request.conn is not conn and request.conn.key == conn.key
    net.gateway.accept_request(request.conn, net.now)
    net.flush()
    assert again.state is State.ESTABLISHED


def test_close_listener_ends_requests_and_promiscuity() -> None:
    net = Net()
    _, conn = net.connect()
    assert net.gateway.listeners() == [net.listener]
    net.gateway.close_listener(net.listener, net.now)
    assert [(type(e), e.conn) for e in events(net.gateway)] == [(Closed, conn)]
    assert net.gateway.connections() == []
    assert net.gateway.listeners() == [] and net.listener.closed
    net.gateway.receive(syn(sport=2), net.now)
    assert net.gateway.mib.InAddrErrors == 1 and net.gateway.datagrams_to_send(net.now) == []
    assert isinstance(net.gateway.listen_any(), InterceptListener)  # one at a time, again possible


def test_one_promiscuous_listener_per_stack() -> None:
    net = Net()
    with pytest.raises(OSError) as info:
        net.gateway.listen_any()
    assert info.value.errno == errno.EADDRINUSE
    with pytest.raises(ValueError):
        Stack(GATEWAY).listen_any(request_timeout=0)
