"""SYN cookies (RFC 4987 section 3.6), with Linux's timestamp trick for the options a cookie cannot hold.

When the SYN queue is full the listener keeps no state for a SYN: it answers with a SYN-ACK whose ISS
encodes everything it needs, and rebuilds the connection from the ACK that echoes ISS + 1.

ISS layout (32 bits, Bernstein's layout as RFC 4987 describes it)::

    | t mod 32 (5) | MSS index (3) | MAC(secret; 4-tuple, t, client ISN, MSS index) (24) |

``t`` counts 64-second periods of ``now``. A cookie is accepted in its own period and the next one,
so it lives 64 to 128 s (Linux: 60 s periods, MAX_SYNCOOKIE_AGE = 2, "up to 2 minutes"). The MAC covers
the full ``t``, so a cookie from 32 periods ago whose 5 bits alias the current ones still fails. The
client ISN is MACed too (as Linux adds it to the cookie), so the ACK must carry exactly ISN + 1.

Window scale, SACK-permitted and ECN do not fit in the ISS. When the SYN carried timestamps we put
them in the low 6 bits of our TSval (Linux cookie_init_timestamp) and read them back from the TSecr
of the ACK; without timestamps the connection proceeds without those options, as on Linux.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from .isn import derive_key

__all__ = [
    "COOKIE_PERIOD",
    "MSS_TABLE",
    "CookieOptions",
    "SynCookies",
    "decode_timestamp",
    "encode_timestamp",
]

#: Seconds per counter step (a power of two near Linux's 60 s TCP_SYNCOOKIE_PERIOD).
COOKIE_PERIOD = 64.0
#: Counter periods a cookie stays valid: the current and the previous one (Linux MAX_SYNCOOKIE_AGE).
COOKIE_MAX_AGE = 2
#: Common MSS values, one per 3-bit index. The cookie keeps the largest entry <= the peer's MSS, so
#: the connection loses at most a few percent of segment size: 536 (RFC 9293 default), 1220 (1280-byte
#: tunnels), 1300/1380/1440 (VPN and tunnel paths, Linux's table has 1300 and 1440), 1452 (PPPoE),
#: 1460 (Ethernet), 8960 (9000-byte jumbo frames).
MSS_TABLE = (536, 1220, 1300, 1380, 1440, 1452, 1460, 8960)

_COUNTER_BITS = 5
_COUNTER_SHIFT = 27
_MSS_SHIFT = 24
_MAC_MASK = (1 << 24) - 1
# local addr, local port, remote addr, remote port, counter, client ISN, MSS index
_MAC_INPUT = struct.Struct("!IHIHqIB")

# Linux's TSval layout (include/net/tcp.h): TSBITS low bits hold the options.
_TS_BITS = 6
_TS_WSCALE_MASK = 0x0F  # 0xF = the SYN had no window scale option
_TS_SACK = 0x10
_TS_ECN = 0x20
_MAX_WSCALE = 14


@dataclass(frozen=True, slots=True)
class CookieOptions:
    """What a valid cookie ACK tells us about the SYN we did not keep."""

    mss: int
    #: The peer's window shift, -1 when not negotiated.
    wscale: int
    sack: bool
    timestamps: bool
    ecn: bool


def encode_timestamp(ts_now: int, wscale: int, sack: bool, ecn: bool) -> int:
    """Our SYN-ACK TSval carrying the peer's options (Linux cookie_init_timestamp).

    The value never exceeds ``ts_now``, so the TSvals the connection sends later do not go backwards
    (the peer's PAWS check, RFC 7323 section 5, would drop them otherwise).
    """
    # RFC 7323 2.3: a shift above 14 is used as 14, so it always fits the 4 bits below 0xF.
    options = min(wscale, _MAX_WSCALE) if wscale >= 0 else _TS_WSCALE_MASK
    options |= (_TS_SACK if sack else 0) | (_TS_ECN if ecn else 0)
    ts = (ts_now >> _TS_BITS << _TS_BITS) | options
    if ts > ts_now:
        ts -= 1 << _TS_BITS
    return ts & 0xFFFFFFFF


def decode_timestamp(ts_ecr: int) -> tuple[int, bool, bool]:
    """(wscale or -1, sack, ecn) from the TSecr of a cookie ACK. Four bits hold 0..14 or 0xF, so every
    value decodes (Linux's "shift above 14" refusal cannot trigger with this layout)."""
    wscale = ts_ecr & _TS_WSCALE_MASK
    return (-1 if wscale == _TS_WSCALE_MASK else wscale), bool(ts_ecr & _TS_SACK), bool(ts_ecr & _TS_ECN)


def _mss_index(mss: int) -> int:
    """Index of the largest table entry not above ``mss`` (0 for anything below 536)."""
    index = 0
    for i, value in enumerate(MSS_TABLE):
        if value <= mss:
            index = i
    return index


class SynCookies:
    """Makes and checks cookie ISSs with one secret; stateless apart from the key."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes) -> None:
        self._key = derive_key(secret, b"pytcp syncookie")

    def _mac(self, key: tuple[int, int, int, int], counter: int, client_isn: int, index: int) -> int:
        data = _MAC_INPUT.pack(*key, counter, client_isn, index)
        digest = hashlib.blake2s(data, key=self._key, digest_size=3).digest()
        return int.from_bytes(digest, "big")

    def make(self, key: tuple[int, int, int, int], client_isn: int, mss: int, now: float) -> int:
        """The ISS for a SYN on ``key`` (local addr, local port, remote addr, remote port) whose
        sequence number is ``client_isn`` and whose MSS option is ``mss`` (536 when absent)."""
        counter = int(now // COOKIE_PERIOD)
        index = _mss_index(mss)
        mac = self._mac(key, counter, client_isn, index)
        return ((counter & (1 << _COUNTER_BITS) - 1) << _COUNTER_SHIFT) | (index << _MSS_SHIFT) | mac

    def check(self, key: tuple[int, int, int, int], seg_seq: int, seg_ack: int, now: float) -> int | None:
        """The MSS encoded in the ACK (SEG.ACK - 1 is our cookie, SEG.SEQ - 1 the client ISN) when the
        cookie is genuine and fresh; None otherwise."""
        cookie = (seg_ack - 1) & 0xFFFFFFFF
        client_isn = (seg_seq - 1) & 0xFFFFFFFF
        counter = int(now // COOKIE_PERIOD)
        age = (counter - (cookie >> _COUNTER_SHIFT)) & ((1 << _COUNTER_BITS) - 1)
        if age >= COOKIE_MAX_AGE:
            return None
        index = cookie >> _MSS_SHIFT & 0x7
        if self._mac(key, counter - age, client_isn, index) != cookie & _MAC_MASK:
            return None
        return MSS_TABLE[index]

    def validate(
        self,
        key: tuple[int, int, int, int],
        seg_seq: int,
        seg_ack: int,
        ts_ecr: int | None,
        now: float,
        *,
        timestamps_enabled: bool,
        sack_enabled: bool,
        wscale_enabled: bool,
    ) -> CookieOptions | None:
        """Full check of a cookie ACK. ``ts_ecr`` is None when the ACK had no timestamps option; then
        the connection gets no window scaling and no SACK (Linux cookie_timestamp_decode). Options
        we have switched off are refused as Linux does: our SYN-ACK cannot have offered them."""
        mss = self.check(key, seg_seq, seg_ack, now)
        if mss is None:
            return None
        if ts_ecr is None:
            return CookieOptions(mss=mss, wscale=-1, sack=False, timestamps=False, ecn=False)
        wscale, sack, ecn = decode_timestamp(ts_ecr)
        if not timestamps_enabled or (sack and not sack_enabled) or (wscale >= 0 and not wscale_enabled):
            return None
        return CookieOptions(mss=mss, wscale=wscale, sack=sack, timestamps=True, ecn=ecn)
