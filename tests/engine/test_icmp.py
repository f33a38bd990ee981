"""ICMPv4 (pytcp.icmp): echo replies and the errors TCP acts on, cross-checked against scapy's encoder."""

from __future__ import annotations

import errno
import ipaddress
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror  # type: ignore[import-untyped]

import tcpcore
from pytcp.icmp import (
    DEST_UNREACHABLE,
    ECHO_REQUEST,
    MIN_PMTU,
    IcmpError,
    IcmpErrorKind,
    IcmpReply,
    build_icmp,
    handle_icmp,
)
from pytcp.mib import MIB
from tcpcore import MalformedPacket
from tcpcore.constants import IPPROTO_ICMP

US = "198.18.0.2"
PEER = "198.18.0.1"
ROUTER = "198.18.0.254"
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def addr(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def handle(packet: bytes, mib: MIB | None = None, **kwargs: object) -> object:
    ip = tcpcore.parse_ipv4(packet)
    return handle_icmp(ip, packet, mib if mib is not None else MIB(), **kwargs)  # type: ignore[arg-type]


def quoting(
    icmp: ICMP, *, sport: int = 40000, dport: int = 80, seq: int = 123456789, proto: object = None
) -> bytes:
    """An ICMP error from ROUTER to us quoting a segment we sent to PEER (IP header + 8 bytes of TCP)."""
    inner = IPerror(src=US, dst=PEER, len=1500) / (proto or TCPerror(sport=sport, dport=dport, seq=seq))
    quote = bytes(inner)[:28]
    return bytes(IP(src=ROUTER, dst=US) / icmp / quote)


# -- echo ---------------------------------------------------------------------------------------------


def test_echo_round_trip() -> None:
    data = bytes(range(256)) * 3
    request = IP(src=PEER, dst=US, tos=0x10) / ICMP(type="echo-request", id=0x1234, seq=7) / data
    mib = MIB()
    action = handle(bytes(request), mib, ttl=42)
    assert isinstance(action, IcmpReply)
    reply = IP(action.packet)
    assert (reply.src, reply.dst, reply.ttl, reply.tos, reply.proto) == (US, PEER, 42, 0x10, IPPROTO_ICMP)
    assert (reply[ICMP].type, reply[ICMP].code, reply[ICMP].id, reply[ICMP].seq) == (0, 0, 0x1234, 7)
    assert bytes(reply[ICMP].payload) == data
    # scapy recomputes both checksums from scratch: they must match ours.
    recomputed = IP(bytes(IP(action.packet, chksum=None)))
    del recomputed.chksum, recomputed[ICMP].chksum
    assert IP(bytes(recomputed)).chksum == reply.chksum
    assert IP(bytes(recomputed))[ICMP].chksum == reply[ICMP].chksum
    assert tcpcore.internet_checksum(action.packet[20:]) == 0
    assert (mib.InEchos, mib.OutEchoReps) == (1, 1)


def test_echo_ignores_link_padding_and_empty_data() -> None:
    request = bytes(IP(src=PEER, dst=US) / ICMP(type="echo-request", id=1, seq=2))
    action = handle(request + b"\x00" * 18)
    assert isinstance(action, IcmpReply)
    assert len(action.packet) == len(request) and IP(action.packet)[ICMP].seq == 2


@pytest.mark.parametrize("source", ["0.0.0.0", "127.0.0.1", "224.0.0.1", "240.0.0.1", "255.255.255.255"])
def test_echo_from_non_unicast_source_is_not_answered(source: str) -> None:
    mib = MIB()
    assert handle(bytes(IP(src=source, dst=US) / ICMP(type="echo-request")), mib) is None
    assert (mib.InEchos, mib.OutEchoReps) == (1, 0)


# -- errors -------------------------------------------------------------------------------------------

UNREACHABLE = [
    (0, IcmpErrorKind.NET_UNREACHABLE, errno.ENETUNREACH),
    (1, IcmpErrorKind.HOST_UNREACHABLE, errno.EHOSTUNREACH),
    (2, IcmpErrorKind.PROTOCOL_UNREACHABLE, errno.ENOPROTOOPT),
    (3, IcmpErrorKind.PORT_UNREACHABLE, errno.ECONNREFUSED),
    (5, IcmpErrorKind.SOURCE_ROUTE_FAILED, errno.EOPNOTSUPP),
    (6, IcmpErrorKind.NET_UNREACHABLE, errno.ENETUNREACH),
    (7, IcmpErrorKind.HOST_UNREACHABLE, errno.EHOSTDOWN),
    (8, IcmpErrorKind.HOST_UNREACHABLE, errno.ENONET),
    (9, IcmpErrorKind.ADMIN_PROHIBITED, errno.ENETUNREACH),
    (10, IcmpErrorKind.ADMIN_PROHIBITED, errno.EHOSTUNREACH),
    (11, IcmpErrorKind.NET_UNREACHABLE, errno.ENETUNREACH),
    (12, IcmpErrorKind.HOST_UNREACHABLE, errno.EHOSTUNREACH),
    (13, IcmpErrorKind.ADMIN_PROHIBITED, errno.EHOSTUNREACH),
    (14, IcmpErrorKind.ADMIN_PROHIBITED, errno.EHOSTUNREACH),
    (15, IcmpErrorKind.ADMIN_PROHIBITED, errno.EHOSTUNREACH),
]


@pytest.mark.parametrize(("code", "kind", "number"), UNREACHABLE)
def test_destination_unreachable_names_the_connection(code: int, kind: IcmpErrorKind, number: int) -> None:
    mib = MIB()
    action = handle(quoting(ICMP(type="dest-unreach", code=code), seq=0xDEADBEEF), mib)
    assert action == IcmpError((addr(US), 40000, addr(PEER), 80), kind, number, 0xDEADBEEF, 0)
    assert mib.InDestUnreachs == 1


def test_soft_and_hard_errors_follow_rfc_1122() -> None:
    soft = {kind for kind in IcmpErrorKind if kind.soft}
    assert soft == {
        IcmpErrorKind.NET_UNREACHABLE,
        IcmpErrorKind.HOST_UNREACHABLE,
        IcmpErrorKind.SOURCE_ROUTE_FAILED,
        IcmpErrorKind.TIME_EXCEEDED,
        IcmpErrorKind.PARAMETER_PROBLEM,
    }


def test_fragmentation_needed_carries_the_next_hop_mtu() -> None:
    action = handle(quoting(ICMP(type="dest-unreach", code=4, nexthopmtu=1280)))
    assert isinstance(action, IcmpError)
    assert (action.kind, action.errno, action.mtu) == (
        IcmpErrorKind.FRAGMENTATION_NEEDED,
        errno.EMSGSIZE,
        1280,
    )


def test_fragmentation_needed_without_mtu_guesses_a_plateau() -> None:
    """RFC 1191 7: the largest plateau below the quoted datagram's length (1500 -> 1492)."""
    action = handle(quoting(ICMP(type="dest-unreach", code=4, nexthopmtu=0)))
    assert isinstance(action, IcmpError) and action.mtu == 1492


def test_fragmentation_needed_mtu_is_floored() -> None:
    action = handle(quoting(ICMP(type="dest-unreach", code=4, nexthopmtu=100)))
    assert isinstance(action, IcmpError) and action.mtu == MIN_PMTU


@pytest.mark.parametrize(
    ("icmp", "kind", "number"),
    [
        (ICMP(type="time-exceeded"), IcmpErrorKind.TIME_EXCEEDED, errno.EHOSTUNREACH),
        (ICMP(type="parameter-problem", ptr=9), IcmpErrorKind.PARAMETER_PROBLEM, errno.EPROTO),
    ],
)
def test_time_exceeded_and_parameter_problem(icmp: ICMP, kind: IcmpErrorKind, number: int) -> None:
    action = handle(quoting(icmp, sport=1, dport=65535, seq=0))
    assert action == IcmpError((addr(US), 1, addr(PEER), 65535), kind, number, 0, 0)


def test_error_quoting_a_longer_ip_header() -> None:
    """The quoted header's IHL says where the TCP ports start (IP options present)."""
    inner = IPerror(src=US, dst=PEER, options=b"\x01\x01\x01\x00") / TCPerror(sport=5, dport=6, seq=7)
    packet = bytes(IP(src=ROUTER, dst=US) / ICMP(type="dest-unreach", code=1) / bytes(inner)[:32])
    action = handle(packet)
    assert isinstance(action, IcmpError) and action.key == (addr(US), 5, addr(PEER), 6) and action.seq == 7


def test_errors_about_other_datagrams_are_ignored() -> None:
    assert handle(quoting(ICMP(type="dest-unreach", code=3), proto=UDP(sport=1, dport=2))) is None
    later_fragment = IPerror(src=US, dst=PEER, frag=185) / TCPerror(sport=1, dport=2)
    packet = bytes(IP(src=ROUTER, dst=US) / ICMP(type="dest-unreach", code=1) / bytes(later_fragment)[:28])
    assert handle(packet) is None
    assert handle(quoting(ICMP(type="dest-unreach", code=16))) is None


@pytest.mark.parametrize("kind", [0, 4, 5, 13, 14, 42, 255])
def test_other_types_are_discarded(kind: int) -> None:
    packet = bytes(IP(src=PEER, dst=US) / ICMP(type=kind) / (b"\x00" * 28))
    mib = MIB()
    assert handle(packet, mib) is None
    assert mib.snapshot() == MIB().snapshot()


# -- malformed input ----------------------------------------------------------------------------------


def ip_around(icmp: bytes, src: str = ROUTER) -> bytes:
    return tcpcore.build_ipv4(addr(src), addr(US), IPPROTO_ICMP, icmp)


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\x08\x00\xf7\xff",  # 4 bytes: no rest of header
        build_icmp(DEST_UNREACHABLE, 1, 0, b"\x45" + b"\x00" * 18),  # quote shorter than an IP header
        build_icmp(DEST_UNREACHABLE, 1, 0, b"\x65" + b"\x00" * 27),  # quoted datagram is IPv6
        build_icmp(DEST_UNREACHABLE, 1, 0, b"\x44" + b"\x00" * 27),  # quoted IHL 4
        build_icmp(DEST_UNREACHABLE, 1, 0, b"\x45" + b"\x00" * 26),  # 7 bytes of quoted data
        build_icmp(DEST_UNREACHABLE, 1, 0, b"\x46" + b"\x00" * 30),  # IHL 6: 24 + 7 bytes
    ],
    ids=["empty", "4 bytes", "short quote", "quoted IPv6", "quoted IHL 4", "7 quoted bytes", "IHL 6 short"],
)
def test_malformed_messages_raise_malformed_packet(message: bytes) -> None:
    with pytest.raises(MalformedPacket):
        handle(ip_around(message))


def test_checksum_is_verified_unless_the_device_did() -> None:
    good = bytearray(ip_around(build_icmp(ECHO_REQUEST, 0, 0x00010002, b"data")))
    good[-1] ^= 0x01
    with pytest.raises(MalformedPacket, match="checksum"):
        handle(bytes(good))
    assert isinstance(handle(bytes(good), verify_checksum=False), IcmpReply)


def test_build_icmp_checksums_and_checks_its_rest_of_header() -> None:
    message = build_icmp(ECHO_REQUEST, 0, b"\x00\x01\x00\x02", b"odd")
    assert tcpcore.internet_checksum(message) == 0
    assert ICMP(message).chksum == struct.unpack_from("!H", message, 2)[0]
    with pytest.raises(ValueError):
        build_icmp(ECHO_REQUEST, 0, b"\x00")


def test_non_icmp_packets_are_refused() -> None:
    packet = bytes(IP(src=PEER, dst=US) / TCP())
    with pytest.raises(ValueError):
        handle_icmp(tcpcore.parse_ipv4(packet), packet, MIB())


@SETTINGS
@given(st.binary(max_size=120), st.booleans())
def test_random_messages_raise_only_malformed_packet(body: bytes, fix_checksum: bool) -> None:
    message = bytearray(body)
    if fix_checksum and len(message) >= 4:
        message[2:4] = b"\x00\x00"
        struct.pack_into("!H", message, 2, tcpcore.internet_checksum(message))
    try:
        action = handle(ip_around(bytes(message)))
    except MalformedPacket:
        return
    assert action is None or isinstance(action, IcmpReply | IcmpError)


@SETTINGS
@given(st.sampled_from([0, 3, 4, 5, 8, 11, 12]), st.integers(0, 255), st.binary(max_size=80))
def test_structured_messages_raise_only_malformed_packet(kind: int, code: int, rest: bytes) -> None:
    """Valid checksums and the types that are parsed further, so the fuzzing reaches the quote parser."""
    message = build_icmp(kind, code, rest[:4].ljust(4, b"\x00"), rest[4:])
    try:
        action = handle(ip_around(message))
    except MalformedPacket:
        return
    if isinstance(action, IcmpError):
        assert 0 <= action.seq <= 0xFFFFFFFF and (action.mtu == 0 or action.mtu >= MIN_PMTU)
