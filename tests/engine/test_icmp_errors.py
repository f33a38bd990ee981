"""ICMP errors reaching a connection (RFC 1122 4.2.3.9, RFC 5927, RFC 1191; Linux tcp_v4_err), and the
stack's ICMP input: echo requests answered, errors routed to the connection they quote."""

from __future__ import annotations

import errno

import tcpcore
from pytcp.config import TCPConfig
from pytcp.events import ConnectionFailed
from pytcp.icmp import (
    DEST_UNREACHABLE,
    ECHO_REPLY,
    ECHO_REQUEST,
    FRAG_NEEDED,
    IcmpError,
    IcmpErrorKind,
    build_icmp,
)
from pytcp.stack import Stack
from pytcp.state import State
from tcpcore.constants import IPPROTO_ICMP

K = IcmpErrorKind


def error(p, kind: IcmpErrorKind, number: int, seq: int, mtu: int = 0) -> None:
    p.conn.icmp_error(IcmpError(p.conn.key, kind, number, seq & 0xFFFFFFFF, mtu), p.now)
    p.poll()


def test_port_unreachable_refuses_a_connect(tcp):
    p = tcp.syn_sent()
    error(p, K.PORT_UNREACHABLE, errno.ECONNREFUSED, p.iss)
    assert p.state is State.CLOSED
    (failed,) = p.take_events(ConnectionFailed)
    assert failed.errno == errno.ECONNREFUSED
    assert p.transitions[-1].event.value == "rcv ICMP error" and p.mib.AttemptFails == 1
    p.expect_nothing()


def test_host_unreachable_ends_a_connect_too(tcp):
    """Linux aborts a connection attempt on soft errors as well (RFC 1122 only protects established ones)."""
    p = tcp.syn_sent()
    error(p, K.HOST_UNREACHABLE, errno.EHOSTUNREACH, p.iss)
    assert p.state is State.CLOSED
    assert p.take_events(ConnectionFailed)[0].errno == errno.EHOSTUNREACH


def test_an_error_about_a_segment_not_in_flight_is_ignored(tcp):
    p = tcp.syn_sent()
    error(p, K.PORT_UNREACHABLE, errno.ECONNREFUSED, p.iss + 5)  # RFC 5927 4.1
    assert p.state is State.SYN_SENT and p.mib.OutOfWindowIcmps == 1


def test_established_keeps_the_error_for_a_later_give_up(tcp):
    p = tcp.established(tcp.PLAIN.replace(retries2=2))
    p.call("send", b"x" * 100)
    p.expect("P.", seq=p.iss + 1)
    error(p, K.HOST_UNREACHABLE, errno.EHOSTUNREACH, p.iss + 1)
    assert p.state is State.ESTABLISHED  # RFC 1122 4.2.3.9: a soft error does not abort
    p.advance(p.now + 1000)
    assert p.state is State.CLOSED
    assert p.take_events(ConnectionFailed)[0].errno == errno.EHOSTUNREACH  # Linux tcp_write_err


def test_passive_half_open_child_is_dropped_silently_on_a_hard_error(tcp):
    p = tcp.syn_received()
    error(p, K.HOST_UNREACHABLE, errno.EHOSTUNREACH, p.iss)
    assert p.state is State.SYN_RECEIVED  # soft: the SYN-ACK keeps being retransmitted
    error(p, K.PORT_UNREACHABLE, errno.ECONNREFUSED, p.iss)
    assert p.state is State.CLOSED and not p.take_events(ConnectionFailed)  # Linux tcp_req_err


def test_fragmentation_needed_cuts_the_flight_to_the_new_mss(tcp):
    p = tcp.established()
    p.call("send", b"a" * 3000)
    p.expect(".", seq=p.iss + 1, length=1000)
    p.expect(".", seq=p.iss + 1001, length=1000)
    p.expect("P.", seq=p.iss + 2001, length=1000)
    error(p, K.FRAGMENTATION_NEEDED, errno.EMSGSIZE, p.iss + 1, mtu=576)  # RFC 1191
    assert p.conn.info().snd_mss == 536 and p.state is State.ESTABLISHED
    sizes = [len(s.payload) for s in p.drain()]
    assert sizes and max(sizes) <= 536 and sum(sizes) == 3000
    assert p.mib.RetransSegs == len(sizes)
    error(p, K.FRAGMENTATION_NEEDED, errno.EMSGSIZE, p.iss + 1, mtu=1500)  # never raises the MSS
    assert p.conn.info().snd_mss == 536


def _stack_pair() -> tuple[Stack, int, int]:
    us, peer = 0xC6120002, 0xC6120001
    return Stack(us, TCPConfig(), seed=1), us, peer


def test_stack_answers_ping() -> None:
    stack, us, peer = _stack_pair()
    request = build_icmp(ECHO_REQUEST, 0, 0x00070001, b"ping!")
    stack.receive(tcpcore.build_ipv4(peer, us, IPPROTO_ICMP, request), 0.0)
    (reply,) = stack.datagrams_to_send(0.0)
    ip = tcpcore.parse_ipv4(reply)
    icmp = reply[ip.payload_offset :]
    assert (ip.src, ip.dst, icmp[0]) == (us, peer, ECHO_REPLY) and icmp[8:] == b"ping!"
    assert stack.mib.InEchos == stack.mib.OutEchoReps == 1 and stack.mib.OutSegs == 0


def test_stack_routes_an_icmp_error_to_the_connection() -> None:
    stack, us, peer = _stack_pair()
    conn = stack.connect(peer, 80, 0.0)
    (syn,) = stack.datagrams_to_send(0.0)
    quote = syn[:28]  # our IP header and the first 8 bytes of TCP: ports and sequence number
    unreachable = build_icmp(DEST_UNREACHABLE, 3, 0, quote)
    stack.receive(tcpcore.build_ipv4(peer, us, IPPROTO_ICMP, unreachable), 0.1)
    assert conn.state is State.CLOSED
    event = stack.next_event()
    assert isinstance(event, ConnectionFailed) and event.errno == errno.ECONNREFUSED
    broken = bytearray(
        tcpcore.build_ipv4(peer, us, IPPROTO_ICMP, build_icmp(DEST_UNREACHABLE, FRAG_NEEDED, 0))
    )
    broken[-1] ^= 0xFF
    stack.receive(bytes(broken), 0.2)  # malformed: counted, dropped
    assert stack.mib.IcmpInErrors == 1
