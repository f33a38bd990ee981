"""RFC 6298 estimator against sequences computed by hand."""

import math

import pytest

from pytcp.rtt import RTTEstimator


def test_before_the_first_sample() -> None:
    est = RTTEstimator()
    assert (est.srtt, est.rttvar, est.rto, est.backoff_count) == (None, 0.0, 1.0, 0)  # RFC 6298 2.1


def test_first_and_second_samples() -> None:
    est = RTTEstimator()
    est.sample(0.1)
    # 2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + max(G, 4 * RTTVAR) = 0.1 + 0.2.
    assert est.srtt == pytest.approx(0.1)
    assert est.rttvar == pytest.approx(0.05)
    assert est.rto == pytest.approx(0.3)
    est.sample(0.2)
    # 2.3: RTTVAR = 3/4 * 0.05 + 1/4 * |0.1 - 0.2| = 0.0625 (with the old SRTT);
    #      SRTT = 7/8 * 0.1 + 1/8 * 0.2 = 0.1125; RTO = 0.1125 + 4 * 0.0625 = 0.3625.
    assert est.rttvar == pytest.approx(0.0625)
    assert est.srtt == pytest.approx(0.1125)
    assert est.rto == pytest.approx(0.3625)


def test_third_sample_uses_the_updated_values() -> None:
    est = RTTEstimator()
    for rtt in (0.1, 0.2, 0.05):
        est.sample(rtt)
    # RTTVAR = 3/4 * 0.0625 + 1/4 * |0.1125 - 0.05| = 0.046875 + 0.015625 = 0.0625
    # SRTT = 7/8 * 0.1125 + 1/8 * 0.05 = 0.0984375 + 0.00625 = 0.1046875
    assert est.rttvar == pytest.approx(0.0625)
    assert est.srtt == pytest.approx(0.1046875)
    assert est.rto == pytest.approx(0.1046875 + 0.25)


def test_rto_min_clamps_small_rtos() -> None:
    est = RTTEstimator()
    est.sample(0.01)  # 0.01 + 0.02 = 0.03, below rto_min (2.4, Linux's 200 ms)
    assert est.rto == pytest.approx(0.2)


def test_rto_max_clamps_large_rtos() -> None:
    est = RTTEstimator()
    est.sample(100.0)  # 100 + 200 = 300 > 120 (2.5)
    assert est.rto == 120.0


def test_granularity_floors_the_variance_term() -> None:
    est = RTTEstimator(rto_min=0.01, granularity=0.1)
    for _ in range(200):
        est.sample(1.0)
    # RTTVAR decays as 0.5 * (3/4)^n toward 0, so RTO tends to SRTT + G.
    assert est.rttvar < 1e-20
    assert est.rto == pytest.approx(1.1)


def test_backoff_doubles_up_to_rto_max() -> None:
    est = RTTEstimator()
    seen = []
    for _ in range(9):
        est.backoff()
        seen.append(est.rto)
    assert seen == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 120.0, 120.0, 120.0]  # 5.5, capped per 2.5
    assert est.backoff_count == 9


def test_new_sample_collapses_the_backoff() -> None:
    est = RTTEstimator()
    est.sample(0.1)
    est.backoff()
    est.backoff()
    assert est.rto == pytest.approx(1.2)
    est.sample(0.1)
    # RTTVAR = 3/4 * 0.05 = 0.0375, SRTT = 0.1: RTO = 0.1 + 0.15, backoff forgotten.
    assert est.backoff_count == 0
    assert est.rto == pytest.approx(0.25)


def test_restart_after_syn_timeout() -> None:
    est = RTTEstimator()
    est.backoff()
    est.backoff()  # SYN sent three times: RTO 4 s
    est.restart_after_syn_timeout()
    assert (est.rto, est.backoff_count) == (3.0, 0)  # RFC 6298 5.7
    timed = RTTEstimator()
    timed.sample(0.1)  # a timestamp-derived sample exists: nothing to fall back from
    timed.restart_after_syn_timeout()
    assert timed.rto == pytest.approx(0.3)


@pytest.mark.parametrize("rtt", [-0.001, math.nan, math.inf])
def test_invalid_samples_raise(rtt: float) -> None:
    est = RTTEstimator()
    with pytest.raises(ValueError):
        est.sample(rtt)
    assert est.srtt is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rto_min": 0.0},
        {"rto_min": 2.0},
        {"rto_max": 0.5},
        {"rto_max": math.inf},
        {"granularity": -1.0},
        {"rto_initial": math.nan},
    ],
)
def test_invalid_bounds_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RTTEstimator(**kwargs)


def test_zero_rtt_is_a_valid_sample() -> None:
    est = RTTEstimator(rto_min=0.001)
    est.sample(0.0)  # loopback with a coarse clock
    assert est.rto == pytest.approx(0.001)  # SRTT 0 + max(G, 0)
