"""tcpcore.Reassembler: unit cases, a bitmap reference model, and compiled-vs-twin differential runs."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpcore.errors import TooManyHoles

MASK = 0xFFFFFFFF
WRAP = 0xFFFFFF00  # rcv_nxt close to 2**32, so sequence numbers wrap during a test


def sq(base: int, off: int) -> int:
    return (base + off) & MASK


def state(r: Any) -> tuple[Any, ...]:
    """Everything observable without consuming data."""
    return (
        r.rcv_nxt,
        r.readable,
        r.window,
        r.ooo_bytes,
        r.range_count,
        r.ranges(),
        r.sack_blocks(r.max_ranges + 1),
        r.peek(),
    )


# ---------------------------------------------------------------------------------------------------
# Unit cases


def test_in_order(core: SimpleNamespace) -> None:
    r = core.Reassembler(1000, 100)
    assert (r.rcv_nxt, r.capacity, r.readable, r.window, r.max_ranges) == (1000, 100, 0, 100, 32)
    assert r.write(1000, b"hello") == 5
    assert r.write(1005, bytearray(b" wor")) == 4
    assert r.write(1009, memoryview(b"xxld!")[2:]) == 3
    assert (r.rcv_nxt, r.readable, r.window, r.ooo_bytes, r.range_count) == (1012, 12, 88, 0, 0)
    assert r.read() == b"hello world!"
    assert (r.readable, r.window) == (0, 100)
    assert r.sack_blocks() == [] and r.ranges() == []


def test_empty_segment_changes_nothing(core: SimpleNamespace) -> None:
    r = core.Reassembler(5, 10)
    before = state(r)
    assert r.write(5, b"") == 0
    assert r.write(9, b"") == 0
    assert state(r) == before


def test_out_of_order_then_fill(core: SimpleNamespace) -> None:
    r = core.Reassembler(1000, 100)
    assert r.write(1010, b"KLMNO") == 0
    # Out-of-order bytes do not shrink the advertised window: it is measured from rcv_nxt.
    assert (r.rcv_nxt, r.readable, r.window, r.ooo_bytes, r.range_count) == (1000, 0, 100, 5, 1)
    assert r.ranges() == [(1010, 1015)]
    assert r.write(1000, b"ABCDEFGHIJ") == 15
    assert (r.rcv_nxt, r.readable, r.window, r.ooo_bytes, r.range_count) == (1015, 15, 85, 0, 0)
    assert r.read() == b"ABCDEFGHIJKLMNO"


def test_duplicates_change_nothing(core: SimpleNamespace) -> None:
    r = core.Reassembler(100, 50)
    r.write(100, b"abcdef")
    r.write(120, b"uvwxyz")
    before = state(r)
    assert r.write(100, b"abcdef") == 0  # wholly before rcv_nxt
    assert r.write(94, b"......") == 0  # ends exactly at rcv_nxt
    assert r.write(120, b"UVWXYZ") == 0  # same range again: the first copy stays
    assert r.write(122, b"W") == 0
    assert state(r) == before


# Held ranges at offsets [10, 20) and [30, 40) from rcv_nxt; each case writes [lo, hi) and states the
# resulting ranges (relative) and how far rcv_nxt advances.
OVERLAPS = {
    "left": (5, 15, [(5, 20), (30, 40)], 0),
    "right": (15, 25, [(10, 25), (30, 40)], 0),
    "inside": (12, 18, [(10, 20), (30, 40)], 0),
    "exact": (10, 20, [(10, 20), (30, 40)], 0),
    "covering-one": (8, 22, [(8, 22), (30, 40)], 0),
    "covering-several": (5, 45, [(5, 45)], 0),
    "bridge-adjacent": (20, 30, [(10, 40)], 0),
    "bridge-overlapping": (15, 35, [(10, 40)], 0),
    "adjacent-left": (8, 10, [(8, 20), (30, 40)], 0),
    "adjacent-right": (40, 42, [(10, 20), (30, 42)], 0),
    "disjoint-between": (22, 25, [(10, 20), (22, 25), (30, 40)], 0),
    "disjoint-after": (45, 50, [(10, 20), (30, 40), (45, 50)], 0),
    "disjoint-before": (2, 5, [(2, 5), (10, 20), (30, 40)], 0),
    "from-rcv-nxt": (0, 5, [(10, 20), (30, 40)], 5),
    "from-rcv-nxt-adjacent": (0, 10, [(30, 40)], 20),
    "from-rcv-nxt-overlapping": (0, 15, [(30, 40)], 20),
    "from-before-rcv-nxt-covering-all": (-5, 50, [], 50),
}


@pytest.mark.parametrize("base", [1000, 0xFFFFFFE0], ids=["plain", "wrapping"])
@pytest.mark.parametrize("case", OVERLAPS, ids=list(OVERLAPS))
def test_overlap_shapes(core: SimpleNamespace, case: str, base: int) -> None:
    lo, hi, expected, advanced = OVERLAPS[case]
    r = core.Reassembler(base, 64)
    r.write(sq(base, 10), b"o" * 10)
    r.write(sq(base, 30), b"o" * 10)
    assert r.write(sq(base, lo), b"n" * (hi - lo)) == advanced
    assert r.rcv_nxt == sq(base, advanced)
    assert r.ranges() == [(sq(base, a), sq(base, b)) for a, b in expected]
    assert r.ooo_bytes == sum(b - a for a, b in expected)
    # Fill every hole with "f" and check which copy of each byte survived: held bytes stay.
    for off in range(50):
        r.write(sq(base, off), b"f")
    got = r.read()
    assert len(got) == 50
    for off, byte in enumerate(got):
        held = 10 <= off < 20 or 30 <= off < 40
        want = "o" if held else "n" if lo <= off < hi else "f"
        assert chr(byte) == want, off


def test_trim_at_window_edge(core: SimpleNamespace) -> None:
    r = core.Reassembler(0, 10)
    assert r.write(5, b"0123456789") == 0
    assert r.ranges() == [(5, 10)] and r.ooo_bytes == 5
    assert r.write(10, b"beyond") == 0  # starts at the window's right edge: nothing stored
    assert r.ranges() == [(5, 10)]
    assert r.write(0, b"ABCDEFGHIJKLMNOPQRST") == 10
    assert (r.readable, r.window, r.rcv_nxt) == (10, 0, 10)
    assert r.write(10, b"x") == 0  # zero window: even the next expected byte has no room
    assert r.read() == b"ABCDE01234"
    assert r.write(10, b"KLMNOPQRSTUVWXYZ") == 10
    assert r.read() == b"KLMNOPQRST"


def test_trim_before_rcv_nxt(core: SimpleNamespace) -> None:
    r = core.Reassembler(100, 50)
    assert r.write(90, b"0123456789abcdefghij") == 10
    assert r.read() == b"abcdefghij"
    # A sequence number more than 2**31 ahead compares as old (RFC 9293 3.4 arithmetic) and is dropped.
    assert r.write(sq(110, 1 << 31), b"x") == 0
    assert (r.rcv_nxt, r.ooo_bytes) == (110, 0)


def test_sequence_wrap(core: SimpleNamespace) -> None:
    r = core.Reassembler(0xFFFFFFFA, 64)
    assert r.write(0xFFFFFFFA, b"abcd") == 4
    assert r.write(2, b"ghij") == 0
    assert r.ranges() == [(2, 6)]
    # rcv_nxt is 0xFFFFFFFE: "XX" is old and trimmed, "ef01" fills up to the range at sequence 2.
    assert r.write(0xFFFFFFFC, b"XXef01") == 8
    assert (r.rcv_nxt, r.readable, r.ranges()) == (6, 12, [])
    assert r.read() == b"abcdef01ghij"


def test_ring_wraps(core: SimpleNamespace) -> None:
    r = core.Reassembler(WRAP, 8)
    assert r.write(WRAP, b"012345") == 6
    assert r.read(4) == b"0123"
    assert r.window == 6
    # Out of order across the ring's end: ring slots 6, 7, 0 and 1.
    assert r.write(sq(WRAP, 7), b"789") == 0
    assert r.ranges() == [(sq(WRAP, 7), sq(WRAP, 10))]
    assert r.write(sq(WRAP, 6), b"6") == 4
    assert r.peek() == b"456789"
    assert r.peek(3) == b"456"
    buf = bytearray(5)
    assert r.read_into(buf) == 5 and buf == b"45678"
    assert r.write(sq(WRAP, 10), b"abcdefghij") == 7
    assert (r.readable, r.window) == (8, 0)
    assert r.read() == b"9abcdefg"


def test_read_variants(core: SimpleNamespace) -> None:
    r = core.Reassembler(0, 16)
    r.write(0, b"abcdef")
    assert r.read(0) == b"" and r.peek(0) == b""
    assert r.peek(100) == b"abcdef" and r.readable == 6
    assert r.read(2) == b"ab"
    view = memoryview(bytearray(10))
    assert r.read_into(view[3:5]) == 2 and bytes(view[3:5]) == b"cd"
    assert r.read_into(bytearray(10)) == 2
    assert r.read_into(bytearray(10)) == 0
    assert r.read() == b"" and r.read(-5) == b""
    r.write(6, b"x")
    with pytest.raises(BufferError):
        r.read_into(b"readonly")
    assert r.readable == 1


def test_window_accounting(core: SimpleNamespace) -> None:
    r = core.Reassembler(0, 20)
    r.write(12, b"zz")
    assert r.window == 20
    r.write(0, b"0123456789")
    assert (r.window, r.readable) == (10, 10)
    r.read(3)
    assert (r.window, r.readable) == (13, 7)
    assert r.write(10, b"ab") == 4  # joins the held "zz"
    assert (r.window, r.readable, r.ooo_bytes) == (9, 11, 0)
    assert r.window + r.readable == r.capacity


def test_too_many_holes_changes_nothing(core: SimpleNamespace) -> None:
    r = core.Reassembler(WRAP, 100, max_ranges=2)
    r.write(sq(WRAP, 10), b"a")
    r.write(sq(WRAP, 20), b"b")
    before = state(r)
    with pytest.raises(TooManyHoles):
        r.write(sq(WRAP, 30), b"c")
    with pytest.raises(TooManyHoles):
        r.write(sq(WRAP, 15), b"c")
    assert state(r) == before
    # Data that joins a held range needs no new range and is accepted at the limit.
    assert r.write(sq(WRAP, 21), b"c") == 0
    assert r.write(sq(WRAP, 11), b"d" * 9) == 0
    assert r.ranges() == [(sq(WRAP, 10), sq(WRAP, 22))]


def test_next_expected_accepted_at_limit(core: SimpleNamespace) -> None:
    r = core.Reassembler(WRAP, 100, max_ranges=2)
    r.write(sq(WRAP, 10), b"a")
    r.write(sq(WRAP, 20), b"b")
    assert r.write(WRAP, b"0") == 1
    assert r.write(sq(WRAP, -2), b"xyz12") == 2  # covers rcv_nxt from before it
    assert r.range_count == 2
    none = core.Reassembler(0, 10, max_ranges=0)
    with pytest.raises(TooManyHoles):
        none.write(1, b"x")
    assert none.write(0, b"ab") == 2
    assert none.read() == b"ab"


def test_sack_blocks_recency(core: SimpleNamespace) -> None:
    # RFC 2018 section 4: the first block holds the segment that triggered the ACK, then the
    # most recently reported ones.
    r = core.Reassembler(WRAP, 1000)
    a, b, c = (sq(WRAP, 100), sq(WRAP, 110)), (sq(WRAP, 200), sq(WRAP, 210)), (sq(WRAP, 300), sq(WRAP, 310))
    assert r.sack_blocks() == []
    for left, right in (a, b, c):
        r.write(left, bytes(right - left))
    assert r.sack_blocks() == [c, b, a]
    r.write(a[1], b"x")  # extends a
    a = (a[0], sq(a[1], 1))
    assert r.sack_blocks() == [a, c, b]
    r.write(b[0], b"x")  # a duplicate still triggered this ACK: its block goes first
    assert r.sack_blocks() == [b, a, c]
    assert r.sack_blocks(2) == [b, a] and r.sack_blocks(0) == []
    with pytest.raises(ValueError):
        r.sack_blocks(-1)
    r.write(sq(WRAP, 150), bytes(10))
    d = (sq(WRAP, 150), sq(WRAP, 160))
    r.write(b[1], bytes(90))  # bridges b and c
    assert r.sack_blocks() == [(b[0], c[1]), d, a]
    r.write(WRAP, bytes(111))  # a becomes in-order and leaves the list
    assert r.sack_blocks() == [(b[0], c[1]), d]
    assert r.ranges() == [d, (b[0], c[1])]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((-1, 10), ValueError),
        ((1 << 32, 10), ValueError),
        ((0, 0), ValueError),
        ((0, (1 << 30) + 1), ValueError),
        ((0, 10, -1), ValueError),
        ((0, 10, 4097), ValueError),
        ((0.5, 10), TypeError),
        (("0", 10), TypeError),
    ],
)
def test_constructor_rejects(core: SimpleNamespace, args: tuple[Any, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        core.Reassembler(*args)


def test_write_rejects_bad_arguments(core: SimpleNamespace) -> None:
    r = core.Reassembler(0, 10)
    for seq in (-1, 1 << 32):
        with pytest.raises(OverflowError):
            r.write(seq, b"x")
    with pytest.raises(TypeError):
        r.write(0, "text")
    assert state(r) == state(core.Reassembler(0, 10))


# ---------------------------------------------------------------------------------------------------
# Reference model: a dict of received bytes keyed by absolute stream offset, rebuilt by brute force.


class Model:
    """Obviously-correct receive buffer over absolute stream offsets (0 = the initial rcv_nxt)."""

    def __init__(self, isn: int, capacity: int, max_ranges: int) -> None:
        self.isn, self.capacity, self.max_ranges = isn, capacity, max_ranges
        self.nxt = 0
        self.unread = bytearray()
        self.held: dict[int, int] = {}  # out-of-order bytes beyond nxt
        self.writes: list[tuple[int, int, int]] = []  # (stamp, lo, hi) of out-of-order writes
        self.stamp = 0

    @staticmethod
    def runs(held: dict[int, int]) -> list[list[int]]:
        out: list[list[int]] = []
        for off in sorted(held):
            if out and out[-1][1] == off:
                out[-1][1] += 1
            else:
                out.append([off, off + 1])
        return out

    def write(self, start: int, data: bytes) -> int:
        lo = max(start, self.nxt)
        hi = min(start + len(data), self.nxt + self.capacity - len(self.unread))
        if lo >= hi:
            return 0
        held = dict(self.held)
        for off in range(lo, hi):
            held.setdefault(off, data[off - start])
        nxt, unread = self.nxt, bytearray(self.unread)
        while nxt in held:
            unread.append(held.pop(nxt))
            nxt += 1
        if len(self.runs(held)) > self.max_ranges:
            raise TooManyHoles
        advanced = nxt - self.nxt
        if not advanced:
            self.stamp += 1
            self.writes.append((self.stamp, lo, hi))
        self.nxt, self.unread, self.held = nxt, unread, held
        self.writes = [w for w in self.writes if w[1] >= nxt]
        return advanced

    def read(self, n: int) -> bytes:
        n = len(self.unread) if n < 0 else n
        out = bytes(self.unread[:n])
        del self.unread[:n]
        return out

    def state(self) -> tuple[Any, ...]:
        runs = self.runs(self.held)

        def recency(run: list[int]) -> int:
            return max(s for s, lo, hi in self.writes if run[0] <= lo and hi <= run[1])

        edges = [(sq(self.isn, a), sq(self.isn, b)) for a, b in runs]
        by_recency = [edges[i] for i in sorted(range(len(runs)), key=lambda i: -recency(runs[i]))]
        return (
            sq(self.isn, self.nxt),
            len(self.unread),
            self.capacity - len(self.unread),
            len(self.held),
            len(runs),
            edges,
            by_recency,
            bytes(self.unread),
        )


# An operation: ("write", offset from rcv_nxt, length, variant) where variant picks the buffer type
# and whether the payload differs from the stream (to tell first and second copies apart);
# ("read" | "peek" | "read_into", max_bytes).
Op = tuple[Any, ...]


def random_ops(rng: random.Random, capacity: int, steps: int) -> list[Op]:
    ops: list[Op] = []
    for _ in range(steps):
        roll = rng.random()
        if roll < 0.75:
            ops.append(
                (
                    "write",
                    rng.randint(-capacity // 2 - 3, capacity + 3),
                    rng.randint(0, capacity // 2 + 4),
                    rng.randrange(6),
                )
            )
        else:
            ops.append((rng.choice(["read", "peek", "read_into"]), rng.randint(-1, capacity + 2)))
    return ops


class Driver:
    """Feeds operations to one Reassembler, deriving payloads from a fixed random stream."""

    def __init__(self, impl: Any, isn: int, stream: bytes) -> None:
        self.r, self.isn, self.stream = impl, isn, stream

    def payload(self, op: Op) -> tuple[int, int, Any]:
        _, rel, length, variant = op
        start = ((self.r.rcv_nxt - self.isn) & MASK) + rel  # absolute stream offset
        data = bytes(self.stream[(start + i) % len(self.stream)] for i in range(length))
        if variant == 5:
            data = bytes(b ^ 0x5A for b in data)
        wrapped: Any = (data, bytearray(data), memoryview(data))[variant % 3]
        return start, sq(self.isn, start), wrapped

    def apply(self, op: Op) -> Any:
        """The operation's outcome: a result, or the exception type."""
        try:
            if op[0] == "write":
                _, seq, data = self.payload(op)
                return self.r.write(seq, data)
            if op[0] == "read_into":
                buf = bytearray(max(op[1], 0))
                n = self.r.read_into(memoryview(buf))
                return n, bytes(buf[:n])
            return getattr(self.r, op[0])(op[1])
        except TooManyHoles:
            return TooManyHoles


def check_against_model(
    core: SimpleNamespace, isn: int, capacity: int, max_ranges: int, ops: list[Op]
) -> None:
    stream = random.Random(isn ^ capacity).randbytes(997)
    driver = Driver(core.Reassembler(isn, capacity, max_ranges), isn, stream)
    model = Model(isn, capacity, max_ranges)
    for step, op in enumerate(ops):
        if op[0] == "write":
            start, _, data = driver.payload(op)
            try:
                expected: Any = model.write(start, bytes(data))
            except TooManyHoles:
                expected = TooManyHoles
        elif op[0] == "peek":
            expected = bytes(model.unread[: len(model.unread) if op[1] < 0 else op[1]])
        elif op[0] == "read_into":
            data = model.read(max(op[1], 0))
            expected = (len(data), data)
        else:
            expected = model.read(op[1])
        assert driver.apply(op) == expected, (step, op)
        assert state(driver.r) == model.state(), (step, op)


ISNS = st.one_of(st.sampled_from([0, WRAP, 0xFFFFFFFF, 0x7FFFFFF0]), st.integers(0, MASK))
# Small capacities and short segments make exact adjacency, merging and the range limit common.
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(-8, 36), st.integers(0, 12), st.integers(0, 5)),
        st.tuples(st.sampled_from(["read", "peek", "read_into"]), st.integers(-1, 36)),
    ),
    min_size=10,  # left to itself hypothesis favours lists too short to build several ranges
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(isn=ISNS, capacity=st.integers(1, 32), max_ranges=st.integers(0, 4), ops=OPS)
def test_model_hypothesis(
    core: SimpleNamespace, isn: int, capacity: int, max_ranges: int, ops: list[Op]
) -> None:
    check_against_model(core, isn, capacity, max_ranges, ops)


@pytest.mark.parametrize("seed", range(40))
def test_model_random(core: SimpleNamespace, seed: int) -> None:
    rng = random.Random(seed)
    capacity = rng.choice([1, 2, 3, rng.randint(4, 64), rng.randint(65, 300)])
    isn = rng.choice([WRAP, rng.randrange(1 << 32)])
    check_against_model(core, isn, capacity, rng.randint(0, 8), random_ops(rng, capacity, 300))


# ---------------------------------------------------------------------------------------------------
# Differential: the compiled class and the twin agree step by step.


@pytest.mark.parametrize("seed", range(30))
def test_compiled_matches_twin(both: tuple[SimpleNamespace, SimpleNamespace], seed: int) -> None:
    rng = random.Random(1000 + seed)
    capacity = rng.randint(1, 2000)
    max_ranges = rng.randint(0, 40)
    isn = rng.choice([WRAP, rng.randrange(1 << 32)])
    stream = rng.randbytes(4093)
    drivers = [Driver(impl.Reassembler(isn, capacity, max_ranges), isn, stream) for impl in both]
    for step, op in enumerate(random_ops(rng, capacity, 500)):
        outcomes = [d.apply(op) for d in drivers]
        assert outcomes[0] == outcomes[1], (step, op)
        assert state(drivers[0].r) == state(drivers[1].r), (step, op)
        assert repr(drivers[0].r) == repr(drivers[1].r)
