"""ICMPv4 for a TCP host (RFC 792, RFC 1122 3.2.2): answer echo requests, decode the errors TCP acts on.

``handle_icmp`` takes one ICMP packet the stack received (its IPv4 header already parsed) and returns
what to do: an :class:`IcmpReply` to send (the echo reply), an :class:`IcmpError` naming the TCP
connection an error message concerns, or None when the message needs nothing (echo replies, source
quench, redirects, errors about other protocols, unknown types: RFC 1122 3.2.2 says to discard those
silently). Malformed messages raise ``tcpcore.MalformedPacket`` and nothing else.

What a connection does with an IcmpError is its own business (RFC 1122 4.2.3.9, RFC 5927, RFC 1191);
this module only decodes: which 4-tuple, which kind, the errno Linux would report, the sequence number of
the offending segment (so the connection can check it lies in SND.UNA..SND.NXT, RFC 5927 4.1) and, for
"fragmentation needed", the next-hop MTU.
"""

from __future__ import annotations

import enum
import errno
import struct
from dataclasses import dataclass

import tcpcore
from tcpcore import IPv4Header, MalformedPacket
from tcpcore._types import Buffer
from tcpcore.constants import IPPROTO_ICMP, IPPROTO_TCP, IPV4_HEADER_MIN

from .mib import MIB

__all__ = [
    "DEST_UNREACHABLE",
    "ECHO_REPLY",
    "ECHO_REQUEST",
    "FRAG_NEEDED",
    "PARAMETER_PROBLEM",
    "TIME_EXCEEDED",
    "IcmpAction",
    "IcmpError",
    "IcmpErrorKind",
    "IcmpReply",
    "build_icmp",
    "handle_icmp",
]

# Message types (RFC 792).
ECHO_REPLY = 0
DEST_UNREACHABLE = 3
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAMETER_PROBLEM = 12
#: Destination Unreachable code 4 (RFC 792), whose header carries the next-hop MTU (RFC 1191 4).
FRAG_NEEDED = 4

#: type, code, checksum, and the 4-byte rest of header every ICMP message has (RFC 792).
ICMP_HEADER = 8
#: An error quotes the original IP header plus at least its first 64 bits of data (RFC 792); for TCP
#: those 8 bytes hold the ports and the sequence number. Linux icmp_socket_deliver drops shorter quotes.
QUOTED_DATA = 8
#: RFC 1191 7 plateau table: an old router that leaves the next-hop MTU at zero makes the host guess
#: the largest plateau below the size of the datagram that did not fit.
MTU_PLATEAUS = (32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68)
#: Floor of a reported MTU: Linux ip_rt_min_pmtu (512 + 20 + 20). A forged "fragmentation needed" with
#: a tiny MTU must not shrink segments to a few bytes (RFC 5927 7.2).
MIN_PMTU = 552

_QUOTE = struct.Struct("!HHI")  # TCP source port, destination port, sequence number


class IcmpErrorKind(enum.Enum):
    """What an ICMP error says about the path to the peer, grouped as TCP treats them."""

    NET_UNREACHABLE = "net unreachable"
    HOST_UNREACHABLE = "host unreachable"
    PROTOCOL_UNREACHABLE = "protocol unreachable"
    PORT_UNREACHABLE = "port unreachable"
    FRAGMENTATION_NEEDED = "fragmentation needed"
    SOURCE_ROUTE_FAILED = "source route failed"
    ADMIN_PROHIBITED = "administratively prohibited"
    TIME_EXCEEDED = "time exceeded"
    PARAMETER_PROBLEM = "parameter problem"

    @property
    def soft(self) -> bool:
        """RFC 1122 4.2.3.9: a soft error MUST NOT abort an established connection (codes 0, 1 and 5 of
        Destination Unreachable, Time Exceeded, Parameter Problem); the others SHOULD abort it."""
        return self in _SOFT


_SOFT = frozenset(
    {
        IcmpErrorKind.NET_UNREACHABLE,
        IcmpErrorKind.HOST_UNREACHABLE,
        IcmpErrorKind.SOURCE_ROUTE_FAILED,
        IcmpErrorKind.TIME_EXCEEDED,
        IcmpErrorKind.PARAMETER_PROBLEM,
    }
)

_K = IcmpErrorKind
#: Destination Unreachable code -> (kind, errno): the codes of RFC 792, RFC 1122 3.2.2.1 and RFC 1812
#: 5.2.7.1, with the errno of Linux's icmp_err_convert table.
_UNREACHABLE: tuple[tuple[IcmpErrorKind, int], ...] = (
    (_K.NET_UNREACHABLE, errno.ENETUNREACH),  # 0 net unreachable
    (_K.HOST_UNREACHABLE, errno.EHOSTUNREACH),  # 1 host unreachable
    (_K.PROTOCOL_UNREACHABLE, errno.ENOPROTOOPT),  # 2 protocol unreachable
    (_K.PORT_UNREACHABLE, errno.ECONNREFUSED),  # 3 port unreachable
    (_K.FRAGMENTATION_NEEDED, errno.EMSGSIZE),  # 4 fragmentation needed and DF set
    (_K.SOURCE_ROUTE_FAILED, errno.EOPNOTSUPP),  # 5 source route failed
    (_K.NET_UNREACHABLE, errno.ENETUNREACH),  # 6 destination network unknown
    (_K.HOST_UNREACHABLE, errno.EHOSTDOWN),  # 7 destination host unknown
    (_K.HOST_UNREACHABLE, errno.ENONET),  # 8 source host isolated
    (_K.ADMIN_PROHIBITED, errno.ENETUNREACH),  # 9 network administratively prohibited
    (_K.ADMIN_PROHIBITED, errno.EHOSTUNREACH),  # 10 host administratively prohibited
    (_K.NET_UNREACHABLE, errno.ENETUNREACH),  # 11 network unreachable for TOS
    (_K.HOST_UNREACHABLE, errno.EHOSTUNREACH),  # 12 host unreachable for TOS
    (_K.ADMIN_PROHIBITED, errno.EHOSTUNREACH),  # 13 communication administratively prohibited
    (_K.ADMIN_PROHIBITED, errno.EHOSTUNREACH),  # 14 host precedence violation
    (_K.ADMIN_PROHIBITED, errno.EHOSTUNREACH),  # 15 precedence cutoff in effect
)
del _K


@dataclass(frozen=True, slots=True)
class IcmpReply:
    """A packet to send back (the echo reply), complete with checksums."""

    packet: bytes


@dataclass(frozen=True, slots=True)
class IcmpError:
    """An ICMP error about a TCP segment we sent.

    ``key`` is that segment's connection as the stack keys it: (local_addr, local_port, remote_addr,
    remote_port). ``seq`` is the segment's sequence number, ``errno`` what Linux reports for the error,
    ``mtu`` the next-hop MTU for FRAGMENTATION_NEEDED (RFC 1191; 0 otherwise).
    """

    key: tuple[int, int, int, int]
    kind: IcmpErrorKind
    errno: int
    seq: int
    mtu: int = 0


IcmpAction = IcmpReply | IcmpError | None


def handle_icmp(
    ip: IPv4Header, packet: Buffer, mib: MIB, *, ttl: int = 64, verify_checksum: bool = True
) -> IcmpAction:
    """Decide what one received ICMP message calls for (see the module docstring).

    ``ip`` is ``packet``'s parsed IPv4 header (protocol 1, not a fragment); ``ttl`` is the TTL of a reply.
    Counts InEchos, OutEchoReps and InDestUnreachs in ``mib``.
    """
    if ip.protocol != IPPROTO_ICMP or ip.is_fragment:
        raise ValueError("handle_icmp takes unfragmented ICMP packets")
    view = memoryview(packet).cast("B")[ip.payload_offset : ip.payload_offset + ip.payload_length]
    if len(view) < ICMP_HEADER:
        raise MalformedPacket("ICMP message shorter than 8 bytes")
    # RFC 792: the checksum covers the whole ICMP message; a valid one sums to 0xFFFF.
    if verify_checksum and tcpcore.ones_sum(view) != 0xFFFF:
        raise MalformedPacket("ICMP checksum mismatch")
    kind, code = view[0], view[1]
    if kind == ECHO_REQUEST:
        mib.InEchos += 1
        return _echo_reply(ip, view, ttl, mib)
    if kind == DEST_UNREACHABLE:
        mib.InDestUnreachs += 1
        if code >= len(_UNREACHABLE):
            return None  # an unknown code: discard (Linux icmp_unreach)
        error_kind, number = _UNREACHABLE[code]
        return _quoted_error(view, error_kind, number, _next_hop_mtu(view) if code == FRAG_NEEDED else 0)
    if kind == TIME_EXCEEDED:
        return _quoted_error(view, IcmpErrorKind.TIME_EXCEEDED, errno.EHOSTUNREACH, 0)
    if kind == PARAMETER_PROBLEM:
        return _quoted_error(view, IcmpErrorKind.PARAMETER_PROBLEM, errno.EPROTO, 0)
    # Echo replies (we send no requests), source quench (deprecated, RFC 6633), redirects (a host on one
    # link has nowhere else to go) and unknown types are discarded (RFC 1122 3.2.2).
    return None


def build_icmp(kind: int, code: int, rest: bytes | int, data: Buffer = b"") -> bytes:
    """An ICMP message with its checksum: ``rest`` is the 4-byte rest of header (bytes, or an int)."""
    if isinstance(rest, int):
        rest = rest.to_bytes(4, "big")
    if len(rest) != 4:
        raise ValueError("the ICMP rest of header is 4 bytes")
    message = bytearray(ICMP_HEADER + len(memoryview(data).cast("B")))
    message[0], message[1] = kind, code
    message[4:8] = rest
    message[8:] = data
    struct.pack_into("!H", message, 2, tcpcore.internet_checksum(message))
    return bytes(message)


def _echo_reply(ip: IPv4Header, view: memoryview, ttl: int, mib: MIB) -> IcmpReply | None:
    """RFC 1122 3.2.2.6: the reply carries the request's identifier, sequence number and data, unchanged."""
    if not _unicast(ip.src):
        # RFC 1122 3.2.1.3: a datagram from a broadcast, multicast, loopback or "this network" source is
        # discarded; answering it would reflect traffic at a whole network.
        return None
    reply = build_icmp(ECHO_REPLY, 0, bytes(view[4:8]), view[ICMP_HEADER:])
    mib.OutEchoReps += 1
    # The request's TOS comes back as Linux icmp_reply does; the reply is the request's size, which the
    # link just carried, so it is sent whole (DF, RFC 6864's atomic datagram, identification 0).
    return IcmpReply(tcpcore.build_ipv4(ip.dst, ip.src, IPPROTO_ICMP, reply, ttl=ttl, tos=ip.tos))


def _unicast(address: int) -> bool:
    first = address >> 24
    return first not in (0, 127) and first < 224  # 224/4 multicast, 240/4 reserved and 255.255.255.255


def _next_hop_mtu(view: memoryview) -> int:
    """RFC 1191 4: the low 16 bits of the rest of header; zero from a pre-RFC 1191 router means "guess"
    from the plateau table (RFC 1191 7). Floored at MIN_PMTU; the connection only ever lowers its MSS."""
    mtu = int.from_bytes(view[6:8], "big")
    if mtu == 0:
        quoted_length = int.from_bytes(view[ICMP_HEADER + 2 : ICMP_HEADER + 4], "big")
        mtu = next((plateau for plateau in MTU_PLATEAUS if plateau < quoted_length), MTU_PLATEAUS[-1])
    return max(mtu, MIN_PMTU)


def _quoted_error(view: memoryview, kind: IcmpErrorKind, number: int, mtu: int) -> IcmpError | None:
    """The IcmpError for the TCP segment an error message quotes; None when it quotes no TCP header."""
    quote = view[ICMP_HEADER:]
    if len(quote) < IPV4_HEADER_MIN:
        raise MalformedPacket("ICMP error quotes less than an IPv4 header")
    if quote[0] >> 4 != 4:
        raise MalformedPacket("ICMP error quotes a datagram that is not IPv4")
    header_length = (quote[0] & 0x0F) * 4
    if header_length < IPV4_HEADER_MIN:
        raise MalformedPacket("ICMP error quotes an IPv4 header with IHL below 5")
    if len(quote) < header_length + QUOTED_DATA:
        raise MalformedPacket("ICMP error quotes fewer than 8 bytes of the original data")
    if quote[9] != IPPROTO_TCP or int.from_bytes(quote[6:8], "big") & 0x1FFF:
        return None  # another protocol's datagram, or a later fragment without the TCP header
    src, dst = struct.unpack_from("!II", quote, 12)
    src_port, dst_port, seq = _QUOTE.unpack_from(quote, header_length)
    return IcmpError((src, src_port, dst, dst_port), kind, number, seq, mtu)
