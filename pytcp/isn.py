"""Initial sequence numbers (RFC 6528) and ephemeral port selection (RFC 6056).

Both are keyed hashes of the connection identifiers, so an off-path attacker who cannot read the secret
can predict neither the ISN of someone else's connection nor the port it will use. Time comes in as an
argument (``now``, seconds): the module never reads a clock, so the simulator replays it exactly.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
from collections.abc import Callable

__all__ = [
    "EPHEMERAL_HIGH",
    "EPHEMERAL_LOW",
    "ISN_TICKS_PER_SECOND",
    "IsnGenerator",
    "PortAllocator",
    "derive_key",
]

#: RFC 6528 section 3 / RFC 9293 3.4.1: M is a timer that ticks every 4 microseconds.
ISN_TICKS_PER_SECOND = 250_000
#: Linux's default net.ipv4.ip_local_port_range (RFC 6056 section 3.2 recommends 1024-65535; Linux
#: keeps ports above 61000 free for masquerading).
EPHEMERAL_LOW = 32768
EPHEMERAL_HIGH = 60999
#: RFC 6056 Algorithm 4's table of per-destination-group counters. The RFC's example uses 10 entries;
#: Linux uses 65536 (INET_TABLE_PERTURB_SIZE). 256 keeps the table at a few kB while making two busy
#: destinations share a counter (and so leak their connection rate to each other) only 1 time in 256.
PORT_TABLE_SIZE = 256

_TUPLE = struct.Struct("!IHIH")
_DESTINATION = struct.Struct("!IIH")
_MASK32 = 0xFFFFFFFF


def derive_key(secret: bytes, purpose: bytes) -> bytes:
    """A 32-byte subkey of ``secret`` for one purpose, so the ISN, port and cookie hashes are independent
    (learning one function's outputs says nothing about another's)."""
    return hashlib.blake2s(purpose, key=hashlib.blake2s(secret).digest()).digest()


def _hash32(key: bytes, data: bytes) -> int:
    return int.from_bytes(hashlib.blake2s(data, key=key, digest_size=4).digest(), "big")


class IsnGenerator:
    """RFC 6528 section 3: ISN = M + F(localip, localport, remoteip, remoteport, secretkey)."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes) -> None:
        self._key = derive_key(secret, b"pytcp isn")

    def isn(self, local_addr: int, local_port: int, remote_addr: int, remote_port: int, now: float) -> int:
        # F is a keyed hash (RFC 6528 recommends a PRF with a secret key; BLAKE2s replaces MD5).
        offset = _hash32(self._key, _TUPLE.pack(local_addr, local_port, remote_addr, remote_port))
        # M grows with time, so successive incarnations of one 4-tuple get increasing ISNs and old
        # duplicates fall outside the new connection's window (RFC 9293 3.4.1).
        return (int(now * ISN_TICKS_PER_SECOND) + offset) & _MASK32


class PortAllocator:
    """RFC 6056 section 3.3.4, Algorithm 4 ("double-hash port selection").

    The starting point F(local, remote, remote port) is stable per destination, and a per-group counter
    table[G(...)] moves it along: consecutive connections to one destination get distinct ports, while
    connections to other destinations neither disturb nor reveal that sequence (Algorithm 3's single
    global counter would).
    """

    __slots__ = ("_f_key", "_g_key", "_table", "high", "low")

    def __init__(self, secret: bytes, low: int = EPHEMERAL_LOW, high: int = EPHEMERAL_HIGH) -> None:
        if not 0 < low <= high <= 0xFFFF:
            raise ValueError(f"bad ephemeral port range {low}-{high}")
        self.low = low
        self.high = high
        self._f_key = derive_key(secret, b"pytcp port F")
        self._g_key = derive_key(secret, b"pytcp port G")
        # RFC 6056 seeds the table randomly; zeros do as well here because F is already secret.
        self._table = [0] * PORT_TABLE_SIZE

    def allocate(
        self, local_addr: int, remote_addr: int, remote_port: int, in_use: Callable[[int], bool]
    ) -> int:
        """A port for a new connection to (remote_addr, remote_port) for which ``in_use`` is false.

        The search visits each port of the range at most once (bounded by its size, 28232 by default);
        OSError(EADDRNOTAVAIL) when every one is taken, as Linux connect() reports.
        """
        destination = _DESTINATION.pack(local_addr, remote_addr, remote_port)
        offset = _hash32(self._f_key, destination)
        index = _hash32(self._g_key, destination) % PORT_TABLE_SIZE
        count = self.high - self.low + 1
        start = self._table[index]
        for step in range(count):
            port = self.low + (offset + start + step) % count
            if not in_use(port):
                # RFC 6056: table[index] advances past the ports tried, plus one, so the next connection
                # to this destination starts beyond the port just handed out.
                self._table[index] = (start + step + 1) & _MASK32
                return port
        raise OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))
