"""The report pairs each repeat's two sides: the ratio is the median of the repeats' own ratios."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# bench is not installed with the package: the checkout goes after site-packages, as in the smoke test.
sys.path.append(str(Path(__file__).resolve().parents[2]))
from bench.report import paired_ratio
from bench.scenarios import PLANS, VariantResult, _catalogue

RR = next(variant for variant in _catalogue(PLANS["quick"])["rr"] if variant.placement == "one CPU")


def result(stack: list[float | None], kernel: list[float | None]) -> VariantResult:
    """Rates per repeat; None: that side's run failed."""
    outcome = VariantResult(RR)
    for side, rates in (("stack", stack), ("kernel", kernel)):
        outcome.runs[side] = [{"repeat": i + 1, "rate": r} for i, r in enumerate(rates) if r is not None]
    return outcome


def test_a_host_that_speeds_up_between_repeats_keeps_each_pair_together() -> None:
    # Both sides doubled from repeat 3 on: every repeat says 0.2, the medians' ratio would say 0.125.
    drifting = result([10, 10, 20, 20, 20], [50, 50, 100, 100, 100])
    assert paired_ratio(drifting, "rate") == pytest.approx(0.2)


def test_a_repeat_without_its_other_side_is_left_out() -> None:
    assert paired_ratio(result([10, 30, 20], [50, None, 100]), "rate") == pytest.approx(0.2)
    assert paired_ratio(result([10, None], [None, 100]), "rate") is None
