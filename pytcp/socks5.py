"""The client side of a SOCKS5 CONNECT (RFC 1928), with username/password authentication (RFC 1929),
sans-I/O: :class:`Socks5Connect` says what to send and consumes what the proxy answers; the caller moves
the bytes (pytcp.forwarder does, on a non-blocking socket).

Exchange: our greeting (version 5 and the methods we offer), the proxy's method choice, the RFC 1929
sub-negotiation if it chose username/password, our CONNECT request for an IPv4 address, and the proxy's
reply. A reply other than "succeeded" raises :class:`Socks5Error` carrying the reply code, which the
forwarder maps onto what its client sees (a RST for "connection refused", ICMP unreachable otherwise).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["Reply", "Socks5Connect", "Socks5Error", "Socks5Proxy"]

VERSION = 5
#: RFC 1929 2: the username/password sub-negotiation has its own version number.
AUTH_VERSION = 1
METHOD_NONE = 0x00
METHOD_PASSWORD = 0x02
METHOD_UNACCEPTABLE = 0xFF
CMD_CONNECT = 1
ATYP_IPV4 = 1
ATYP_DOMAIN = 3
ATYP_IPV6 = 4
#: RFC 1929 2: UNAME and PASSWD are 1 to 255 bytes each.
CREDENTIAL_MAX = 255
#: The longest reply (RFC 1928 6): VER REP RSV ATYP, a 255-byte domain name with its length, the port.
REPLY_MAX = 4 + 1 + 255 + 2
_BOUND_LENGTH = {ATYP_IPV4: 4, ATYP_IPV6: 16}


class Reply(enum.IntEnum):
    """RFC 1928 6 reply codes."""

    SUCCEEDED = 0
    GENERAL_FAILURE = 1
    NOT_ALLOWED = 2
    NETWORK_UNREACHABLE = 3
    HOST_UNREACHABLE = 4
    CONNECTION_REFUSED = 5
    TTL_EXPIRED = 6
    COMMAND_NOT_SUPPORTED = 7
    ADDRESS_TYPE_NOT_SUPPORTED = 8


class Socks5Error(Exception):
    """The proxy refused or broke the protocol. ``reply`` is its RFC 1928 reply code; failures before the
    CONNECT reply (no acceptable method, bad credentials, garbage) count as GENERAL_FAILURE."""

    def __init__(self, reply: int, message: str) -> None:
        super().__init__(message)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Socks5Proxy:
    """Where the proxy is (an IPv4 address: the forwarder's loop must never wait for DNS) and the
    credentials to offer, if any."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        ipaddress.IPv4Address(self.host)  # ValueError for a name or an IPv6 address
        if not 0 < self.port <= 0xFFFF:
            raise ValueError(f"proxy port must be in 1..65535, got {self.port}")
        if (self.username is None) != (self.password is None):
            raise ValueError("give both a username and a password, or neither")
        for credential in (self.username, self.password):
            if credential is not None and not 0 < len(credential.encode()) <= CREDENTIAL_MAX:
                raise ValueError(f"SOCKS5 credentials are 1..{CREDENTIAL_MAX} bytes (RFC 1929)")

    @classmethod
    def parse(cls, url: str) -> Socks5Proxy:
        """``socks5://[USER:PASSWORD@]ADDRESS:PORT``; ValueError when it is not one."""
        parts = urlsplit(url)
        if parts.scheme != "socks5" or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"expected socks5://[user:password@]address:port, got {url!r}")
        if parts.hostname is None or parts.port is None:  # .port raises ValueError when out of range
            raise ValueError(f"the proxy needs an address and a port: {url!r}")
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(parts.hostname, parts.port, username, password)

    def __str__(self) -> str:
        return f"socks5://{self.host}:{self.port}"


class _Step(enum.Enum):
    METHOD = "method"
    AUTH = "auth"
    REPLY = "reply"
    DONE = "done"


class Socks5Connect:
    """One CONNECT negotiation: send ``greeting()``, then ``feed`` every byte the proxy sends and send
    what each call returns, until ``done``. Then ``rest`` holds bytes the proxy sent after its reply: the
    start of the relayed stream. Raises Socks5Error on a refusal or a protocol violation."""

    __slots__ = ("_buffer", "_proxy", "_request", "_step", "rest")

    def __init__(self, proxy: Socks5Proxy, address: int, port: int) -> None:
        self._proxy = proxy
        self._request = struct.pack("!BBBBIH", VERSION, CMD_CONNECT, 0, ATYP_IPV4, address, port)
        self._step = _Step.METHOD
        self._buffer = b""
        self.rest = b""

    @property
    def done(self) -> bool:
        return self._step is _Step.DONE

    def greeting(self) -> bytes:
        """RFC 1928 3: version, method count, methods (username/password only when we have them)."""
        methods = (METHOD_NONE, METHOD_PASSWORD) if self._proxy.username is not None else (METHOD_NONE,)
        return bytes((VERSION, len(methods), *methods))

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the proxy; return the bytes to send it next (b"" when nothing is due)."""
        if self._step is _Step.DONE:
            raise ValueError("the negotiation is over; relay the stream instead")
        buffer = self._buffer + data
        if len(buffer) > REPLY_MAX and self._step is not _Step.REPLY:
            raise Socks5Error(Reply.GENERAL_FAILURE, "SOCKS5 proxy sent more than a negotiation step holds")
        out = b""
        while True:
            if self._step is _Step.METHOD:
                if len(buffer) < 2:
                    break
                out += self._method(buffer[0], buffer[1])
                buffer = buffer[2:]
            elif self._step is _Step.AUTH:
                if len(buffer) < 2:
                    break
                if buffer[0] != AUTH_VERSION or buffer[1] != 0:
                    raise Socks5Error(Reply.GENERAL_FAILURE, "SOCKS5 proxy rejected the credentials")
                buffer = buffer[2:]
                out += self._request
                self._step = _Step.REPLY
            else:
                length = _reply_length(buffer)
                if length is None or len(buffer) < length:
                    break
                if buffer[1] != Reply.SUCCEEDED:
                    raise Socks5Error(buffer[1], f"SOCKS5 proxy: {_describe(buffer[1])}")
                self.rest = buffer[length:]
                buffer = b""
                self._step = _Step.DONE
                break
        self._buffer = buffer
        return out

    def _method(self, version: int, method: int) -> bytes:
        if version != VERSION:
            raise Socks5Error(Reply.GENERAL_FAILURE, f"not a SOCKS5 proxy (version {version})")
        username, password = self._proxy.username, self._proxy.password
        if method == METHOD_NONE:
            self._step = _Step.REPLY
            return self._request
        if method == METHOD_PASSWORD and username is not None and password is not None:
            self._step = _Step.AUTH
            user, secret = username.encode(), password.encode()
            return bytes((AUTH_VERSION, len(user))) + user + bytes((len(secret),)) + secret
        raise Socks5Error(Reply.GENERAL_FAILURE, "SOCKS5 proxy accepts none of our authentication methods")


def _describe(code: int) -> str:
    try:
        return Reply(code).name.lower().replace("_", " ")
    except ValueError:
        return f"unassigned reply {code}"


def _reply_length(buffer: bytes) -> int | None:
    """The length of the reply at the start of ``buffer`` (RFC 1928 6), or None until it is known."""
    if len(buffer) < 5:
        return None
    if buffer[0] != VERSION:
        raise Socks5Error(Reply.GENERAL_FAILURE, f"bad SOCKS5 reply version {buffer[0]}")
    atyp = buffer[3]
    if atyp == ATYP_DOMAIN:
        return 4 + 1 + buffer[4] + 2
    if atyp in _BOUND_LENGTH:
        return 4 + _BOUND_LENGTH[atyp] + 2
    raise Socks5Error(Reply.GENERAL_FAILURE, f"bad SOCKS5 reply address type {atyp}")
