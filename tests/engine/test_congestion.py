"""Reno and CUBIC window dynamics over simulated round trips, and the registry."""

import itertools
import math

import pytest

from pytcp import congestion
from pytcp.congestion import (
    INFINITE_SSTHRESH,
    CongestionControl,
    Cubic,
    Reno,
    available,
    create,
    initial_window,
)

MSS = 1000


def round_trip(cc: CongestionControl, now: float, rtt: float, *, per_ack: int = 1) -> float:
    """Send a full cwnd, receive its ACKs (each for ``per_ack`` segments) spread over one RTT."""
    flight = cc.cwnd
    acks = max(1, flight // (per_ack * MSS))
    for i in range(acks):
        cc.on_ack(per_ack * MSS, now + rtt * (i + 1) / acks, rtt, flight)
    return now + rtt


def after_loss(cls: type[CongestionControl], segments: int) -> CongestionControl:
    """An instance that just entered recovery with ``segments`` in flight and left it at t = 0."""
    cc = cls(MSS, segments * MSS, 0.0)
    cc.on_congestion_event(0.0, segments * MSS)
    cc.on_recovery_exit(0.0)
    return cc


def w_cubic(t: float, w_max: float, cwnd_epoch: float) -> float:
    """RFC 9438 eq. 1 with K from eq. 2, in segments."""
    k = math.cbrt((w_max - cwnd_epoch) / 0.4)
    return 0.4 * (t - k) ** 3 + w_max


@pytest.mark.parametrize(("mss", "expected"), [(536, 5360), (1460, 14600), (8960, 17920)])
def test_initial_window_rfc6928(mss: int, expected: int) -> None:
    assert initial_window(mss) == expected


def test_initial_window_scales_with_segments() -> None:
    assert initial_window(1460, 1) == 1460
    assert initial_window(1460, 4) == 5840


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_initial_state(cls: type[CongestionControl]) -> None:
    cc = cls(MSS, 10 * MSS, 0.0)
    assert (cc.cwnd, cc.ssthresh) == (10 * MSS, INFINITE_SSTHRESH)
    assert cc.in_slow_start


@pytest.mark.parametrize("cls", [Reno, Cubic])
@pytest.mark.parametrize("per_ack", [1, 2])
def test_slow_start_doubles_per_rtt(cls: type[CongestionControl], per_ack: int) -> None:
    # Delayed ACKs (2 segments per ACK) still double thanks to byte counting with L = 2*SMSS.
    cc = cls(MSS, 10 * MSS, 0.0)
    now = 0.0
    for expected in (20, 40, 80, 160):
        now = round_trip(cc, now, 0.05, per_ack=per_ack)
        assert cc.cwnd == expected * MSS


def test_slow_start_byte_counting_limit() -> None:
    # RFC 3465 L = 2*SMSS: a stretch ACK for 8 segments grows cwnd by 2 only.
    cc = Reno(MSS, 10 * MSS, 0.0)
    cc.on_ack(8 * MSS, 0.1, 0.1, 10 * MSS)
    assert cc.cwnd == 12 * MSS


def test_reno_congestion_avoidance_adds_one_mss_per_rtt() -> None:
    cc = after_loss(Reno, 40)
    assert cc.cwnd == cc.ssthresh == 20 * MSS
    now = 0.0
    for expected in range(21, 31):
        now = round_trip(cc, now, 0.1)
        assert cc.cwnd == expected * MSS
    now = round_trip(cc, now, 0.1, per_ack=2)  # delayed ACKs: same bytes, same growth
    assert cc.cwnd == 31 * MSS


def test_reno_loss_halves_flight_size() -> None:
    cc = Reno(MSS, 30 * MSS, 0.0)
    cc.on_congestion_event(1.0, 24 * MSS)
    assert (cc.ssthresh, cc.cwnd) == (12 * MSS, 12 * MSS)  # RFC 5681 eq. 4 uses FlightSize, not cwnd
    cc.on_congestion_event(2.0, 3 * MSS)
    assert cc.ssthresh == 2 * MSS  # floor of 2*SMSS


def test_cubic_loss_multiplies_by_0_7() -> None:
    cc = Cubic(MSS, 100 * MSS, 0.0)
    cc.on_congestion_event(1.0, 100 * MSS)
    assert (cc.ssthresh, cc.cwnd) == (70 * MSS, 70 * MSS)
    cc.on_congestion_event(2.0, 2 * MSS)
    assert cc.ssthresh == 2 * MSS  # RFC 9438 4.6: at least 2 segments


@pytest.mark.parametrize(("cls", "ssthresh"), [(Reno, 20), (Cubic, 28)])
def test_timeout_leaves_one_mss(cls: type[CongestionControl], ssthresh: int) -> None:
    cc = cls(MSS, 40 * MSS, 0.0)
    cc.on_retransmit_timeout(1.0, 40 * MSS)
    assert (cc.cwnd, cc.ssthresh) == (MSS, ssthresh * MSS)
    cc.on_retransmit_timeout(3.0, 40 * MSS)  # the same data times out again: ssthresh holds
    assert (cc.cwnd, cc.ssthresh) == (MSS, ssthresh * MSS)
    # Slow start again, up to ssthresh.
    now = 3.0
    while cc.in_slow_start:
        now = round_trip(cc, now, 0.1)
    assert ssthresh * MSS <= cc.cwnd <= 2 * ssthresh * MSS


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_recovery_exit_deflates_to_ssthresh(cls: type[CongestionControl]) -> None:
    cc = cls(MSS, 40 * MSS, 0.0)
    cc.on_congestion_event(1.0, 40 * MSS)
    cc.cwnd += 3 * MSS  # the engine's NewReno inflation
    cc.on_recovery_exit(1.5)
    assert cc.cwnd == cc.ssthresh


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_no_growth_when_application_limited(cls: type[CongestionControl]) -> None:
    cc = cls(MSS, 20 * MSS, 0.0)
    for i in range(50):
        cc.on_ack(MSS, 0.01 * i, 0.1, 9 * MSS)  # fewer than half of cwnd in flight
    assert cc.cwnd == 20 * MSS
    cc.on_ack(MSS, 1.0, 0.1, 10 * MSS)
    assert cc.cwnd == 21 * MSS


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_idle_restart(cls: type[CongestionControl]) -> None:
    cc = cls(MSS, 10 * MSS, 0.0)
    now = 0.0
    for _ in range(3):
        now = round_trip(cc, now, 0.1)
    assert cc.cwnd == 80 * MSS
    cc.on_idle_restart(10.0, 1.0)
    assert cc.cwnd == 10 * MSS  # RFC 5681 4.1: min(IW, cwnd)
    assert cc.ssthresh == INFINITE_SSTHRESH  # never lowered by an idle restart
    small = after_loss(cls, 8)
    small.on_idle_restart(10.0, 1.0)
    assert small.cwnd == small.ssthresh < small.initial_cwnd  # a window below IW is kept
    grown = after_loss(cls, 40)
    now = 0.0
    while grown.cwnd < 2 * grown.ssthresh:  # congestion avoidance took cwnd well past ssthresh
        now = round_trip(grown, now, 0.1)
    before = grown.cwnd
    grown.on_idle_restart(now + 10.0, 1.0)
    # Linux tcp_cwnd_restart: ssthresh remembers 3/4 of the old cwnd for the next slow start.
    assert (grown.cwnd, grown.ssthresh) == (grown.initial_cwnd, before * 3 // 4)


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_set_mss_keeps_windows_in_segments(cls: type[CongestionControl]) -> None:
    cc = after_loss(cls, 40)
    segments = cc.cwnd // MSS
    cc.set_mss(500)
    assert cc.mss == 500
    assert cc.cwnd == segments * 500
    assert cc.ssthresh == segments * 500


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        Reno(0, 10, 0.0)
    with pytest.raises(ValueError):
        Cubic(MSS, MSS - 1, 0.0)


def test_cubic_window_follows_the_cubic_function() -> None:
    # W_max = 1000 segments, RTT 100 ms: large enough that the Reno-friendly estimate stays below.
    cc = after_loss(Cubic, 1000)
    assert cc.cwnd == 700 * MSS
    now, rtt = 0.0, 0.1
    k = math.cbrt(300 / 0.4)
    while now < k + 4:
        now = round_trip(cc, now, rtt)
        w = cc.cwnd / MSS
        # The target looks one RTT ahead (RFC 9438 4.2), so cwnd sits between W(t) and W(t + RTT).
        assert w_cubic(now, 1000, 700) - 1 <= w <= w_cubic(now + rtt, 1000, 700) + 1, now
    plateau = [w_cubic(t, 1000, 700) for t in (k - 0.5, k, k + 0.5)]
    assert max(plateau) - min(plateau) < 0.2  # concave approach, flat at W_max, then convex probing


def test_cubic_concave_then_convex_growth_rate() -> None:
    cc = after_loss(Cubic, 1000)
    now, sizes = 0.0, []
    for _ in range(130):
        now = round_trip(cc, now, 0.1)
        sizes.append(cc.cwnd)
    growth = [b - a for a, b in itertools.pairwise(sizes)]
    # Growth slows while approaching W_max (K ~ 9.1 s, round 91) and speeds up after it.
    assert growth[5] > growth[45] > growth[85]
    assert growth[125] > growth[100] > growth[88]


def test_cubic_fast_convergence_lowers_w_max() -> None:
    cc = after_loss(Cubic, 1000)
    now = 0.0
    while cc.cwnd < 900 * MSS:  # still below the old W_max = 1000
        now = round_trip(cc, now, 0.1)
    prior = cc.cwnd / MSS
    start = now
    cc.on_congestion_event(now, cc.cwnd)
    cc.on_recovery_exit(now)
    # RFC 9438 4.7: W_max = cwnd * (1 + 0.7) / 2 instead of cwnd: the new plateau is lower.
    w_max = prior * 1.7 / 2
    epoch = cc.cwnd / MSS
    k = math.cbrt((w_max - epoch) / 0.4)
    while now < start + k:
        now = round_trip(cc, now, 0.1)
    assert cc.cwnd / MSS == pytest.approx(w_max, rel=0.01)
    assert cc.cwnd / MSS < prior - 100


def test_cubic_after_timeout_grows_from_cwnd_epoch_with_k_zero() -> None:
    cc = Cubic(MSS, 1000 * MSS, 0.0)
    cc.on_retransmit_timeout(0.0, 1000 * MSS)
    now = 0.0
    while cc.in_slow_start:
        now = round_trip(cc, now, 1.0)
    epoch, start = cc.cwnd / MSS, now
    for _ in range(5):
        now = round_trip(cc, now, 1.0)
        t = now - start
        # RFC 9438 4.8: K = 0 and W_max = cwnd_epoch, so W(t) = 0.4 t^3 + cwnd_epoch (purely convex).
        assert epoch + 0.4 * t**3 - 1 <= cc.cwnd / MSS <= epoch + 0.4 * (t + 1.0) ** 3 + 1


def test_cubic_reno_friendly_region_dominates_small_bdp() -> None:
    # W_max = 10 segments at RTT 10 ms: W_cubic barely moves in a second, while W_est grows like Reno.
    cc = after_loss(Cubic, 10)
    now, sizes = 0.0, []
    for _ in range(100):
        now = round_trip(cc, now, 0.01)
        sizes.append(cc.cwnd / MSS)
    assert w_cubic(now, 10, 7) < 10
    assert sizes[-1] > 90
    # Once W_est passes cwnd_prior alpha_cubic becomes 1: one segment per RTT, like Reno.
    assert sizes[-1] - sizes[-51] == pytest.approx(50, abs=2)
    # Before that, alpha_cubic = 3 * 0.3 / 1.7 ~ 0.53 segments per RTT.
    assert sizes[3] - 7 == pytest.approx(4 * 0.53, abs=0.3)


def test_cubic_does_not_count_application_limited_time() -> None:
    busy, paused = after_loss(Cubic, 1000), after_loss(Cubic, 1000)
    now = 0.0
    for _ in range(20):
        round_trip(busy, now, 0.1)
        now = round_trip(paused, now, 0.1)
    # paused spends 5 s application-limited: ACKs for a trickle of data, far below cwnd / 2.
    for i in range(50):
        paused.on_ack(MSS, now + 0.1 * (i + 1), 0.1, 10 * MSS)
    assert paused.cwnd == busy.cwnd
    # Resumed, it continues on the same curve as busy, not 5 s further along it (RFC 9438 4.2).
    busy_now, paused_now = now, now + 5.0
    for _ in range(20):
        busy_now = round_trip(busy, busy_now, 0.1)
        paused_now = round_trip(paused, paused_now, 0.1)
    assert paused.cwnd == pytest.approx(busy.cwnd, rel=0.001)


def test_registry() -> None:
    assert available() == ["cubic", "reno"]
    assert isinstance(create("cubic", MSS, 10 * MSS, 0.0), Cubic)
    reno = create("reno", MSS, 10 * MSS, 0.0)
    assert isinstance(reno, Reno) and reno.name == "reno" and reno.cwnd == 10 * MSS
    with pytest.raises(ValueError, match="unknown congestion control 'bbr'; available: cubic, reno"):
        create("bbr", MSS, 10 * MSS, 0.0)
    assert congestion.register(Reno) is Reno  # registering the same class again is harmless


def test_register_new_and_conflicting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(congestion, "_REGISTRY", dict(congestion._REGISTRY))

    @congestion.register
    class Fixed(Reno):
        name = "fixed"

        def on_ack(self, acked: int, now: float, rtt: float | None, in_flight: int) -> None:
            pass

    assert available() == ["cubic", "fixed", "reno"]
    assert isinstance(create("fixed", MSS, 2 * MSS, 0.0), Fixed)

    class Impostor(Reno):
        name = "cubic"

    with pytest.raises(ValueError, match="already registered"):
        congestion.register(Impostor)
    assert create("cubic", MSS, 2 * MSS, 0.0).__class__ is Cubic
