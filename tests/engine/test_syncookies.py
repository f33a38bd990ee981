"""SYN cookies: round trip, expiry, tampering, MSS table and the TSval option encoding."""

from __future__ import annotations

import pytest

from pytcp.syncookies import (
    COOKIE_PERIOD,
    MSS_TABLE,
    CookieOptions,
    SynCookies,
    decode_timestamp,
    encode_timestamp,
)

KEY = (0xC6120002, 80, 0xC6120001, 40000)
CLIENT_ISN = 0xFFFFFFFF  # wraps: the ACK's seq is 0


def ack_fields(cookie: int) -> tuple[int, int]:
    """(SEG.SEQ, SEG.ACK) of the ACK that completes the handshake."""
    return (CLIENT_ISN + 1) & 0xFFFFFFFF, (cookie + 1) & 0xFFFFFFFF


@pytest.mark.parametrize("mss", [536, 1460, 8960])
def test_round_trip_exact_table_values(mss: int) -> None:
    cookies = SynCookies(b"secret")
    cookie = cookies.make(KEY, CLIENT_ISN, mss, now=1000.0)
    assert cookies.check(KEY, *ack_fields(cookie), now=1000.0) == mss


@pytest.mark.parametrize(
    ("mss", "expected"), [(100, 536), (1400, 1380), (1459, 1452), (65535, 8960), (9000, 8960)]
)
def test_mss_rounds_down_to_the_table(mss: int, expected: int) -> None:
    cookies = SynCookies(b"secret")
    cookie = cookies.make(KEY, CLIENT_ISN, mss, now=0.0)
    assert cookies.check(KEY, *ack_fields(cookie), now=0.0) == expected
    assert expected in MSS_TABLE


def test_cookie_lives_one_to_two_periods() -> None:
    cookies = SynCookies(b"secret")
    made_at = 10 * COOKIE_PERIOD + 63.0  # the end of period 10
    cookie = cookies.make(KEY, CLIENT_ISN, 1460, now=made_at)
    assert cookies.check(KEY, *ack_fields(cookie), now=11 * COOKIE_PERIOD + 63.9) == 1460
    assert cookies.check(KEY, *ack_fields(cookie), now=12 * COOKIE_PERIOD) is None
    # The 5-bit counter wraps after 32 periods, but the MAC covers the full counter.
    assert cookies.check(KEY, *ack_fields(cookie), now=made_at + 32 * COOKIE_PERIOD) is None


def test_tampering_fails() -> None:
    cookies = SynCookies(b"secret")
    cookie = cookies.make(KEY, CLIENT_ISN, 1460, now=5.0)
    seq, ack = ack_fields(cookie)
    for bit in range(32):
        assert cookies.check(KEY, seq, ack ^ (1 << bit), now=5.0) is None
    assert cookies.check(KEY, seq + 1, ack, now=5.0) is None  # a different client ISN
    assert cookies.check((KEY[0], KEY[1], KEY[2], KEY[3] + 1), seq, ack, now=5.0) is None
    assert SynCookies(b"other").check(KEY, seq, ack, now=5.0) is None


def test_random_acks_almost_never_pass() -> None:
    cookies = SynCookies(b"secret")
    passed = sum(cookies.check(KEY, 1, ack, now=0.0) is not None for ack in range(0, 1 << 32, 1 << 18))
    assert passed <= 1  # 16384 guesses against a 24-bit MAC


@pytest.mark.parametrize("ts_now", [0, 63, 64, 1000, 0xFFFFFFFF])
@pytest.mark.parametrize(
    ("wscale", "sack", "ecn"), [(-1, False, False), (0, True, False), (14, True, True), (7, False, True)]
)
def test_timestamp_option_round_trip(ts_now: int, wscale: int, sack: bool, ecn: bool) -> None:
    ts = encode_timestamp(ts_now, wscale, sack, ecn)
    assert decode_timestamp(ts) == (wscale, sack, ecn)
    if ts_now >= 64:
        # Never ahead of the clock (PAWS at the peer) and at most one 64-tick step behind.
        assert ts_now - 64 < ts <= ts_now


def test_timestamp_bits() -> None:
    # Linux layout: low 4 bits the shift (0xF = none), bit 4 SACK, bit 5 ECN, the rest the clock.
    assert decode_timestamp(0x0E) == (14, False, False)
    assert decode_timestamp(0xFFFFFFC0 | 0x0F) == (-1, False, False)
    assert decode_timestamp(0x30 | 3) == (3, True, True)
    assert encode_timestamp(1000, -1, False, False) & 0x3F == 0x0F
    assert decode_timestamp(encode_timestamp(1000, 15, False, False)) == (14, False, False)


def test_validate_with_and_without_timestamps() -> None:
    cookies = SynCookies(b"secret")
    cookie = cookies.make(KEY, CLIENT_ISN, 1460, now=3.0)
    seq, ack = ack_fields(cookie)
    ts = encode_timestamp(123456, 7, True, False)

    def validate(ts_ecr: int | None, ack: int = ack, **enabled: bool) -> CookieOptions | None:
        flags = {"timestamps_enabled": True, "sack_enabled": True, "wscale_enabled": True, **enabled}
        return cookies.validate(KEY, seq, ack, ts_ecr, 3.0, **flags)

    assert validate(ts) == CookieOptions(mss=1460, wscale=7, sack=True, timestamps=True, ecn=False)
    assert validate(None) == CookieOptions(mss=1460, wscale=-1, sack=False, timestamps=False, ecn=False)
    # Options switched off cannot have been offered by our SYN-ACK (Linux cookie_timestamp_decode).
    assert validate(ts, sack_enabled=False) is None
    assert validate(ts, wscale_enabled=False) is None
    assert validate(ts, timestamps_enabled=False) is None
    assert validate(ts, ack=ack ^ 1) is None
