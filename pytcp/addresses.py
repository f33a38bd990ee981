"""IPv4 addresses as the engine keeps them (32-bit ints) and as people and the socket API write them."""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["dotted", "parse_endpoint"]


def dotted(address: int) -> str:
    """``0xC6120002`` -> ``"198.18.0.2"`` (in C: every connection names itself with two of these)."""
    return socket.inet_ntoa(address.to_bytes(4, "big"))


def parse_endpoint(address: object) -> tuple[int, int]:
    """(IPv4 as int, port) from ``(host, port)`` with a dotted-quad host, checked as Python's socket does."""
    if not isinstance(address, tuple) or len(address) != 2:
        raise TypeError("AF_INET address must be a pair (host, port)")
    host, port = address
    if not isinstance(host, str) or not isinstance(port, int):
        raise TypeError("AF_INET address must be a (str, int) pair")
    if not 0 <= port <= 0xFFFF:
        raise OverflowError("port must be 0-65535.")
    if host in ("", "<any>"):
        return 0, port
    try:
        return int(ipaddress.IPv4Address(host)), port
    except ipaddress.AddressValueError:
        # This stack resolves no names: a host that is no dotted quad fails as getaddrinfo would.
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
