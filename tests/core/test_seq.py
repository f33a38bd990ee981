"""32-bit sequence arithmetic (RFC 9293 section 3.4) at the wrap point, for both implementations."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

MAX = 0xFFFFFFFF
HALF = 0x80000000
seqs = st.integers(0, MAX)


@pytest.mark.parametrize(
    ("a", "n", "expected"),
    [
        (MAX, 1, 0),
        (0, -1, MAX),
        (5, -10, MAX - 4),
        (MAX, 2, 1),
        (0x7FFFFFFF, 1, HALF),
        (HALF, -1, 0x7FFFFFFF),
        (1234, 1 << 32, 1234),
        (1234, -(1 << 32), 1234),
        (0, MAX, MAX),
        (1, -MAX, 2),
    ],
)
def test_seq_add_wraps(core: SimpleNamespace, a: int, n: int, expected: int) -> None:
    assert core.seq_add(a, n) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (0, MAX, 1),
        (MAX, 0, -1),
        (0x7FFFFFFF, 0, 0x7FFFFFFF),
        (0, 0x7FFFFFFF, -0x7FFFFFFF),
        (HALF, 0, -HALF),  # exactly 2**31 apart: the distance is ambiguous and reads as -2**31
        (0, HALF, -HALF),
        (HALF, 0x7FFFFFFF, 1),
        (0x7FFFFFFF, HALF, -1),
        (10, 10, 0),
    ],
)
def test_seq_diff_at_the_boundaries(core: SimpleNamespace, a: int, b: int, expected: int) -> None:
    assert core.seq_diff(a, b) == expected


@pytest.mark.parametrize(
    ("a", "b"), [(MAX, 0), (MAX - 5, 3), (0x7FFFFFFF, HALF), (0, 0x7FFFFFFF), (HALF, MAX)]
)
def test_comparisons_when_a_precedes_b(core: SimpleNamespace, a: int, b: int) -> None:
    assert core.seq_lt(a, b) and core.seq_le(a, b)
    assert not core.seq_gt(a, b) and not core.seq_ge(a, b)
    assert core.seq_gt(b, a) and core.seq_ge(b, a)
    assert not core.seq_lt(b, a) and not core.seq_le(b, a)
    assert core.seq_max(a, b) == core.seq_max(b, a) == b
    assert core.seq_min(a, b) == core.seq_min(b, a) == a


@pytest.mark.parametrize("a", [0, 1, 0x7FFFFFFF, HALF, MAX])
def test_comparisons_of_equal_numbers(core: SimpleNamespace, a: int) -> None:
    assert core.seq_le(a, a) and core.seq_ge(a, a)
    assert not core.seq_lt(a, a) and not core.seq_gt(a, a)
    assert core.seq_max(a, a) == core.seq_min(a, a) == a


def test_exactly_half_the_space_apart_is_less_both_ways(core: SimpleNamespace) -> None:
    # The one ambiguous distance: each number is "before" the other. RFC 7323 section 2.3 caps
    # windows at 2**30 so compared numbers never get this far apart; pinned so both twins agree.
    assert core.seq_lt(0, HALF) and core.seq_lt(HALF, 0)
    assert core.seq_max(0, HALF) == HALF and core.seq_max(HALF, 0) == 0


@pytest.mark.parametrize(
    ("x", "start", "size", "inside"),
    [
        (5, 5, 0, False),  # RFC 9293 3.10.7.4: a zero window holds nothing, not even its left edge
        (5, 5, 1, True),
        (6, 5, 1, False),
        (4, 5, 1, False),
        (0xFFFFFFF0, 0xFFFFFFF0, 0x20, True),  # window spanning the wrap
        (MAX, 0xFFFFFFF0, 0x20, True),
        (0, 0xFFFFFFF0, 0x20, True),
        (0x0F, 0xFFFFFFF0, 0x20, True),
        (0x10, 0xFFFFFFF0, 0x20, False),
        (0xFFFFFFEF, 0xFFFFFFF0, 0x20, False),
        (0, MAX, 1, False),
        (MAX, MAX, 1, True),
        (0, MAX, 2, True),
        (HALF, 0, HALF, False),
        (0x7FFFFFFF, 0, HALF, True),
        (12345, 99, 1 << 32, True),  # the whole space
        (99, 99, -1, False),
    ],
)
def test_seq_in_window_edges(core: SimpleNamespace, x: int, start: int, size: int, inside: bool) -> None:
    assert core.seq_in_window(x, start, size) is inside


# --- properties ----------------------------------------------------------------------------------


@given(a=seqs, b=seqs)
def test_diff_is_antisymmetric(core: SimpleNamespace, a: int, b: int) -> None:
    assume(core.seq_diff(a, b) != -HALF)  # the ambiguous distance is its own negation mod 2**32
    assert core.seq_diff(a, b) == -core.seq_diff(b, a)
    assert core.seq_lt(a, b) == core.seq_gt(b, a)
    assert core.seq_le(a, b) == core.seq_ge(b, a)


@given(a=seqs, b=seqs)
def test_add_inverts_diff(core: SimpleNamespace, a: int, b: int) -> None:
    d = core.seq_diff(b, a)
    assert -HALF <= d < HALF
    assert core.seq_add(a, d) == b


@given(a=seqs, b=seqs)
def test_comparisons_agree_with_diff(core: SimpleNamespace, a: int, b: int) -> None:
    d = core.seq_diff(a, b)
    assert core.seq_lt(a, b) == (d < 0)
    assert core.seq_le(a, b) == (d <= 0)
    assert core.seq_gt(a, b) == (d > 0)
    assert core.seq_ge(a, b) == (d >= 0)
    assert core.seq_max(a, b) == (b if d < 0 else a)
    assert core.seq_min(a, b) == (a if d <= 0 else b)


@given(start=seqs, k=seqs, size=st.integers(0, 1 << 32))
def test_in_window_is_offset_below_size(core: SimpleNamespace, start: int, k: int, size: int) -> None:
    assert core.seq_in_window(core.seq_add(start, k), start, size) == (k < size)


@given(a=seqs, n=st.integers(-(1 << 32), 1 << 32))
def test_add_is_modular(core: SimpleNamespace, a: int, n: int) -> None:
    assert core.seq_add(a, n) == (a + n) % (1 << 32)


# --- differential: compiled vs twin --------------------------------------------------------------


@given(a=seqs, b=seqs, n=st.integers(-(1 << 32), 1 << 32), size=st.integers(-1, 1 << 32))
def test_differential(
    both: tuple[SimpleNamespace, SimpleNamespace], a: int, b: int, n: int, size: int
) -> None:
    compiled, twin = both
    for name in ("seq_diff", "seq_lt", "seq_le", "seq_gt", "seq_ge", "seq_max", "seq_min"):
        assert getattr(compiled, name)(a, b) == getattr(twin, name)(a, b), name
    assert compiled.seq_add(a, n) == twin.seq_add(a, n)
    assert compiled.seq_in_window(a, b, size) == twin.seq_in_window(a, b, size)
