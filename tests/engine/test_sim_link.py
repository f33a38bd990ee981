"""The simulator's link layer, driven by small fake endpoints that speak raw IPv4 packets."""

from __future__ import annotations

import hashlib
import math
import struct
from collections import Counter

import pytest

from pytcp.sim import Endpoint, LinkConfig, LinkStats, Network
from tcpcore import internet_checksum

A = 0x0A000001  # 10.0.0.1
B = 0x0A000002  # 10.0.0.2
C = 0x0A000003  # 10.0.0.3
PROTO_EXPERIMENT = 253  # RFC 3692: protocol number reserved for experimentation


def ipv4(src: int, dst: int, payload: bytes = b"") -> bytes:
    """A valid IPv4 header (checksum included) followed by the payload."""
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, PROTO_EXPERIMENT, 0,
        src.to_bytes(4, "big"), dst.to_bytes(4, "big"),
    )  # fmt: skip
    checksum = internet_checksum(header)
    return header[:10] + checksum.to_bytes(2, "big") + header[12:] + payload


def number(packet: bytes) -> int:
    """The sequence number a Host put after the IPv4 header."""
    return int(struct.unpack_from("!I", packet, 20)[0])


class Host:
    """Sends what is put in its outbox, records (time, packet) of everything it receives."""

    def __init__(self, address: int) -> None:
        self.address = address
        self.outbox: list[bytes] = []
        self.inbox: list[tuple[float, bytes]] = []

    def queue(self, dst: int, count: int, size: int = 100, first: int = 0) -> None:
        """Queue ``count`` numbered packets of ``size`` bytes."""
        pad = bytes(size - 24)
        self.outbox += [ipv4(self.address, dst, struct.pack("!I", first + i) + pad) for i in range(count)]

    def receive(self, packet: bytes, now: float) -> None:
        self.inbox.append((now, packet))

    def datagrams_to_send(self, now: float) -> list[bytes]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        raise AssertionError("a Host has no timer")

    def numbers(self) -> list[int]:
        return [number(packet) for _, packet in self.inbox]


class Echo(Host):
    """Answers every packet with the same payload, source and destination swapped."""

    def receive(self, packet: bytes, now: float) -> None:
        super().receive(packet, now)
        src = int.from_bytes(packet[12:16], "big")
        self.outbox.append(ipv4(self.address, src, packet[20:]))


class Ticker(Host):
    """A periodic timer that fires ``count`` times, ``period`` apart, appending to a shared log."""

    def __init__(self, address: int, period: float, count: int, log: list[tuple[float, int]]) -> None:
        super().__init__(address)
        self.period = period
        self.remaining = count
        self.deadline: float | None = period if count else None
        self.log = log

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        assert self.deadline is not None and now >= self.deadline
        self.log.append((now, self.address))
        self.remaining -= 1
        self.deadline = self.deadline + self.period if self.remaining else None


def _pair(
    config: LinkConfig, seed: int = 1, config_ba: LinkConfig | None = None
) -> tuple[Network, Host, Host]:
    net = Network(seed)
    a, b = Host(A), Host(B)
    net.link(a, b, config, config_ba)
    return net, a, b


def _check_conservation(stats: LinkStats) -> None:
    assert stats.delivered == stats.sent - stats.queue_dropped - stats.lost + stats.duplicated


def _binomial_bounds(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    """Mean +- 5 standard deviations: a seeded run far outside means a biased model, not bad luck."""
    spread = sigmas * math.sqrt(n * p * (1 - p))
    return n * p - spread, n * p + spread


# -- latency and bandwidth ----------------------------------------------------------------------------


def test_fake_endpoints_satisfy_the_protocol() -> None:
    endpoints: list[Endpoint] = [Host(A), Echo(B), Ticker(C, 1.0, 1, [])]
    assert [e.address for e in endpoints] == [A, B, C]


def test_latency_is_exact_and_per_direction() -> None:
    net = Network(1)
    a, b = Host(A), Echo(B)
    net.link(a, b, LinkConfig(latency=0.025), LinkConfig(latency=0.040))
    a.queue(B, 3)
    assert net.run() == 0.025 + 0.040
    assert b.inbox == [(0.025, p) for p in (ipv4(A, B, struct.pack("!I", i) + bytes(76)) for i in range(3))]
    assert [t for t, _ in a.inbox] == [0.025 + 0.040] * 3
    assert a.numbers() == b.numbers() == [0, 1, 2]


def test_zero_latency_delivers_at_send_time() -> None:
    net, a, b = _pair(LinkConfig(latency=0.0))
    a.queue(B, 2)
    assert net.run() == 0.0
    assert [t for t, _ in b.inbox] == [0.0, 0.0]


def test_bandwidth_serialises_packets_back_to_back() -> None:
    net, a, b = _pair(LinkConfig(latency=0.010, bandwidth=1000.0))
    a.queue(B, 5, size=100)  # 0.1 s of serialisation each
    net.run()
    assert [t for t, _ in b.inbox] == pytest.approx([0.1 * k + 0.010 for k in range(1, 6)])
    assert b.numbers() == [0, 1, 2, 3, 4]
    # An idle transmitter starts the next packet at once: no leftover busy time.
    net.run(until=10.0)
    a.queue(B, 1, size=50)
    net.poll(a)
    net.run()
    assert b.inbox[-1][0] == pytest.approx(10.0 + 0.05 + 0.010)


def test_queue_tail_drop_counts_and_recovery() -> None:
    net, a, b = _pair(LinkConfig(latency=0.0, bandwidth=1000.0, queue_limit=3))
    a.queue(B, 10, size=100)
    net.run()
    # One on the wire, three waiting, six dropped at the tail.
    assert b.numbers() == [0, 1, 2, 3]
    stats = net.stats()[(A, B)]
    assert (stats.sent, stats.queue_dropped, stats.delivered) == (10, 6, 4)
    assert stats.bytes_delivered == 400
    # Half way through the second packet, one slot is free again (the third starts at 0.2).
    net2, a2, b2 = _pair(LinkConfig(latency=0.0, bandwidth=1000.0, queue_limit=3))
    a2.queue(B, 4)
    net2.run(until=0.15)
    a2.queue(B, 2, first=100)
    net2.poll(a2)
    net2.run()
    assert b2.numbers() == [0, 1, 2, 3, 100]
    assert net2.stats()[(A, B)].queue_dropped == 1


def test_queue_limit_zero_allows_only_the_packet_on_the_wire() -> None:
    net, a, b = _pair(LinkConfig(bandwidth=1000.0, queue_limit=0))
    a.queue(B, 5)
    net.run()
    assert b.numbers() == [0]
    assert net.stats()[(A, B)].queue_dropped == 4


def test_infinite_bandwidth_never_queues() -> None:
    net, a, b = _pair(LinkConfig(queue_limit=0))
    a.queue(B, 500)
    net.run()
    assert len(b.inbox) == 500
    assert net.stats()[(A, B)].queue_dropped == 0


# -- impairments ----------------------------------------------------------------------------------------


def test_loss_rate_within_binomial_bounds() -> None:
    n, p = 10_000, 0.05
    net, a, b = _pair(LinkConfig(loss=p), seed=42)
    a.queue(B, n, size=24)
    net.run()
    stats = net.stats()[(A, B)]
    low, high = _binomial_bounds(n, p)
    assert low <= stats.lost <= high
    assert stats.delivered == len(b.inbox) == n - stats.lost
    assert b.numbers() == sorted(set(b.numbers()))  # no reordering or duplication slipped in
    _check_conservation(stats)


def test_duplication_delivers_extra_identical_copies_at_the_same_time() -> None:
    n, p = 2000, 0.1
    net, a, b = _pair(LinkConfig(duplicate=p), seed=3)
    a.queue(B, n, size=24)
    net.run()
    stats = net.stats()[(A, B)]
    low, high = _binomial_bounds(n, p)
    assert low <= stats.duplicated <= high
    copies = Counter(b.inbox)  # (time, bytes): a duplicate is the same bytes at the same time
    assert sum(copies.values()) == n + stats.duplicated
    assert Counter(copies.values()) == {1: n - stats.duplicated, 2: stats.duplicated}
    _check_conservation(stats)


def test_reordering_holds_packets_back_past_later_ones() -> None:
    n = 200
    # 1 ms per 100-byte packet; the queue holds the whole burst.
    config = LinkConfig(latency=0.010, bandwidth=100_000.0, queue_limit=n, reorder=0.1)
    net, a, b = _pair(config, seed=5)
    a.queue(B, n)
    net.run()
    order = b.numbers()
    assert sorted(order) == list(range(n))
    assert order != sorted(order)
    stats = net.stats()[(A, B)]
    assert 0 < stats.reordered < n
    # Each held-back packet arrives exactly reorder_delay (default 2 * latency) after its slot.
    late = [t - (0.001 * (k + 1) + 0.010) for t, k in ((t, number(p)) for t, p in b.inbox)]
    assert sum(1 for d in late if d == pytest.approx(0.020)) == stats.reordered
    assert sum(1 for d in late if d == pytest.approx(0.0, abs=1e-12)) == n - stats.reordered


def test_explicit_reorder_delay() -> None:
    net, a, b = _pair(LinkConfig(latency=0.010, reorder=1.0, reorder_delay=0.5))
    a.queue(B, 2)
    net.run()
    assert [t for t, _ in b.inbox] == [0.510, 0.510]


def test_corruption_flips_exactly_one_bit() -> None:
    n = 300
    net, a, b = _pair(LinkConfig(corrupt=1.0), seed=9)
    a.queue(B, n)
    sent = list(a.outbox)
    net.run()
    assert net.stats()[(A, B)].corrupted == n
    positions = set()
    header_hits = 0
    for original, (_, received) in zip(sent, b.inbox, strict=True):
        diff = int.from_bytes(original, "big") ^ int.from_bytes(received, "big")
        assert diff.bit_count() == 1
        positions.add(len(original) - 1 - (diff.bit_length() - 1) // 8)
        if received[:20] != original[:20]:
            header_hits += 1
            assert internet_checksum(received[:20]) != 0  # the header checksum catches a header flip
    assert len(positions) > 50  # flips land all over the packet
    assert header_hits > 0


def test_partial_corruption_rate() -> None:
    n, p = 5000, 0.2
    net, a, b = _pair(LinkConfig(corrupt=p), seed=11)
    a.queue(B, n, size=24)
    sent = list(a.outbox)
    net.run()
    stats = net.stats()[(A, B)]
    low, high = _binomial_bounds(n, p)
    assert low <= stats.corrupted <= high
    changed = sum(1 for original, (_, got) in zip(sent, b.inbox, strict=True) if got != original)
    assert changed == stats.corrupted


# -- statistics, tap and determinism ----------------------------------------------------------------


IMPAIRED = LinkConfig(
    latency=0.005, bandwidth=200_000.0, queue_limit=20, loss=0.05, duplicate=0.03, reorder=0.05, corrupt=0.02
)


def _impaired_run(seed: int) -> tuple[str, Network, Host, Echo]:
    """Bursty traffic through a lossy bottleneck and echoed back; returns the tap trace hash."""
    trace = hashlib.sha256()

    def tap(now: float, direction: str, packet: bytes) -> None:
        trace.update(struct.pack("!d", now) + direction.encode() + packet)

    net = Network(seed, tap=tap)
    a, b = Host(A), Echo(B)
    net.link(a, b, IMPAIRED)
    for burst in range(5):
        a.queue(B, 40, size=200, first=burst * 40)
        net.poll(a)
        net.run(until=burst * 0.1 + 0.1)
    net.run()
    return trace.hexdigest(), net, a, b


def test_statistics_add_up_in_both_directions() -> None:
    _, net, a, b = _impaired_run(seed=21)
    stats = net.stats()
    assert set(stats) == {(A, B), (B, A)}
    ab, ba = stats[(A, B)], stats[(B, A)]
    assert ab.queue_dropped > 0 and ab.lost > 0 and ab.duplicated > 0 and ab.reordered > 0
    assert ab.sent == 200
    for s in (ab, ba):
        _check_conservation(s)
    # The echo answers every delivery; a flip in the source address sends the answer nowhere.
    assert ab.delivered == len(b.inbox) == ba.sent + net.unroutable
    assert ba.delivered == len(a.inbox)
    assert ab.bytes_delivered == sum(len(p) for _, p in b.inbox)
    assert ba.bytes_delivered == sum(len(p) for _, p in a.inbox)


def test_stats_are_snapshots() -> None:
    net, a, _ = _pair(LinkConfig())
    before = net.stats()[(A, B)]
    a.queue(B, 1)
    net.run()
    assert before.sent == 0
    assert net.stats()[(A, B)].sent == 1


def test_tap_sees_every_packet_out_and_in() -> None:
    seen: list[tuple[float, str, bytes]] = []
    net = Network(1, tap=lambda now, d, p: seen.append((now, d, p)))
    a, b = Host(A), Host(B)
    net.link(a, b, LinkConfig(latency=0.5, loss=0.5))
    a.queue(B, 100)
    net.run()
    stats = net.stats()[(A, B)]
    assert sum(1 for _, d, _ in seen if d == "out") == stats.sent == 100
    assert [(t, p) for t, d, p in seen if d == "in"] == b.inbox
    assert all(t == 0.0 for t, d, _ in seen if d == "out")


def test_same_seed_same_trace_different_seed_different_trace() -> None:
    first, net1, _, _ = _impaired_run(seed=7)
    second, net2, _, _ = _impaired_run(seed=7)
    other, _, _, _ = _impaired_run(seed=8)
    assert first == second
    assert net1.stats() == net2.stats()
    assert net1.now == net2.now
    assert first != other


def test_reverse_traffic_does_not_change_forward_randomness() -> None:
    config = LinkConfig(loss=0.1, duplicate=0.1, reorder=0.1, corrupt=0.1)
    traces = []
    for receiver in (Host(B), Echo(B)):  # the Echo adds B->A traffic
        net = Network(99)
        a = Host(A)
        net.link(a, receiver, config)
        a.queue(B, 500)
        net.run()
        traces.append(receiver.inbox)
    assert traces[0] == traces[1]


def test_emitted_buffers_are_copied() -> None:
    buffer = bytearray(ipv4(A, B, b"original"))
    net = Network(1)
    a, b = Host(A), Host(B)
    net.link(a, b, LinkConfig())
    a.outbox.append(buffer)  # type: ignore[arg-type]  # a bytes-like buffer the stack may reuse
    net.poll(a)
    buffer[20:] = b"clobber!"
    net.run()
    assert b.inbox[0][1].endswith(b"original")


# -- routing --------------------------------------------------------------------------------------------


def test_unroutable_packets_are_counted_and_dropped() -> None:
    taps: list[str] = []
    net = Network(1, tap=lambda now, d, p: taps.append(d))
    a, b, c = Host(A), Host(B), Host(C)
    net.link(a, b, LinkConfig())
    net.add(c)  # known, but a has no link to it
    a.outbox += [ipv4(A, B)[:19], ipv4(A, 0x0A0000FF), ipv4(A, C), b""]
    a.queue(B, 1)
    net.run()
    assert net.unroutable == 4
    assert len(b.inbox) == 1 and not c.inbox
    assert net.stats()[(A, B)].sent == 1
    assert taps == ["out"] * 5 + ["in"]


def test_star_routes_by_destination_address() -> None:
    net = Network(1)
    hub, b, c = Host(A), Host(B), Host(C)
    net.link(hub, b, LinkConfig(latency=0.1))
    net.link(hub, c, LinkConfig(latency=0.2))
    hub.queue(C, 1)
    hub.queue(B, 1, first=1)
    net.run()
    assert b.inbox == [(0.1, b.inbox[0][1])] and b.numbers() == [1]
    assert c.inbox == [(0.2, c.inbox[0][1])] and c.numbers() == [0]


def test_poll_schedules_from_current_time() -> None:
    net, a, b = _pair(LinkConfig(latency=0.010))
    net.run(until=3.0)
    assert net.now == 3.0
    a.queue(B, 1)
    net.poll(a)
    net.run()
    assert b.inbox[0][0] == 3.010


# -- timers ---------------------------------------------------------------------------------------------


def test_timers_fire_in_order_at_the_right_virtual_time() -> None:
    log: list[tuple[float, int]] = []
    net = Network(1)
    slow, fast = Ticker(A, 0.3, 3, log), Ticker(B, 0.2, 4, log)
    net.add(slow)
    net.add(fast)
    assert net.run() == pytest.approx(0.9)
    assert [t for t, _ in log] == sorted(t for t, _ in log)
    assert [t for t, who in log if who == A] == pytest.approx([0.3, 0.6, 0.9])
    assert [t for t, who in log if who == B] == pytest.approx([0.2, 0.4, 0.6, 0.8])


def test_simultaneous_timers_fire_in_arming_order() -> None:
    log: list[tuple[float, int]] = []
    net = Network(1)
    # Dyadic periods are exact in binary floating point, so the deadlines truly coincide.
    net.add(Ticker(B, 0.5, 2, log))  # armed first for 0.5, re-armed for 1.0 at 0.5
    net.add(Ticker(A, 0.25, 4, log))  # armed for 0.5 at 0.25, for 1.0 at 0.75
    net.run()
    assert log == [(0.25, A), (0.5, B), (0.5, A), (0.75, A), (1.0, B), (1.0, A)]


def test_timer_fires_exactly_at_its_deadline() -> None:
    log: list[tuple[float, int]] = []
    net = Network(1)
    net.add(Ticker(A, 0.125, 2, log))  # dyadic: exact in binary floating point
    net.run()
    assert log == [(0.125, A), (0.25, A)]


def test_timer_in_the_past_fires_now() -> None:
    log: list[tuple[float, int]] = []
    net = Network(1)
    ticker = Ticker(A, 1.0, 1, log)
    net.add(ticker)
    net.run(until=5.0)
    assert log == [(1.0, A)]
    ticker.deadline, ticker.remaining = 2.0, 1
    net.poll(ticker)
    net.run()
    assert log == [(1.0, A), (5.0, A)]


def test_timer_moved_or_cancelled_by_the_application() -> None:
    log: list[tuple[float, int]] = []
    net = Network(1)
    ticker = Ticker(A, 1.0, 1, log)
    net.add(ticker)
    net.poll(ticker)
    ticker.deadline = 2.0  # moved without a poll: re-read when the old deadline comes, not fired
    while net.step():
        pass
    assert log == [(2.0, A)]
    ticker.deadline, ticker.remaining = 3.0, 1
    net.poll(ticker)
    ticker.deadline = None
    net.poll(ticker)  # cancelled: the armed entry goes stale
    assert net.step() is False
    assert log == [(2.0, A)]


def test_timers_and_packets_share_one_clock() -> None:
    log: list[tuple[float, int]] = []
    net = Network(1)
    ticker, b = Ticker(A, 0.004, 5, log), Host(B)
    net.link(ticker, b, LinkConfig(latency=0.010))
    ticker.queue(B, 1)
    net.run(until=0.0125)
    assert [t for t, _ in log] == pytest.approx([0.004, 0.008, 0.012])
    assert [t for t, _ in b.inbox] == [0.010]
    assert net.now == 0.0125


# -- run() termination ----------------------------------------------------------------------------------


def test_run_until_stops_before_later_events_and_advances_the_clock() -> None:
    net, a, b = _pair(LinkConfig(latency=1.0))
    a.queue(B, 1)
    assert net.run(until=0.5) == 0.5
    assert not b.inbox
    assert net.step() is True
    assert net.now == 1.0 and len(b.inbox) == 1
    assert net.step() is False


def test_run_until_with_a_perpetual_timer_terminates() -> None:
    log: list[tuple[float, int]] = []
    net = Network(1)
    net.add(Ticker(A, 0.25, 10**9, log))
    assert net.run(until=2.0) == 2.0
    assert len(log) == 8


def test_run_stop_predicate() -> None:
    net, a, b = _pair(LinkConfig(bandwidth=1000.0))
    a.queue(B, 10)
    net.run(stop=lambda: len(b.inbox) >= 3)
    assert len(b.inbox) == 3
    assert net.now == b.inbox[-1][0]
    assert net.run(stop=lambda: True) == net.now  # already true: nothing processed
    assert len(b.inbox) == 3


def test_run_returns_when_idle() -> None:
    net, a, b = _pair(LinkConfig(latency=0.25))
    a.queue(B, 1)
    assert net.run() == 0.25
    assert len(b.inbox) == 1
    assert net.run() == 0.25
    assert net.step() is False


def test_run_max_events_bounds_a_livelock() -> None:
    class Stuck(Host):
        """A broken endpoint whose timer never leaves the past."""

        fired = 0

        def get_timer(self) -> float | None:
            return -1.0

        def handle_timer(self, now: float) -> None:
            self.fired += 1

    net = Network(1)
    stuck = Stuck(A)
    net.add(stuck)
    assert net.run(max_events=50) == 0.0
    assert stuck.fired == 50
    assert net.step() is True  # still pending


# -- validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"latency": -0.001}, "latency"),
        ({"latency": math.inf}, "latency"),
        ({"latency": math.nan}, "latency"),
        ({"bandwidth": 0.0}, "bandwidth"),
        ({"bandwidth": -5.0}, "bandwidth"),
        ({"bandwidth": math.inf}, "bandwidth"),
        ({"queue_limit": -1}, "queue_limit"),
        ({"queue_limit": 1.5}, "queue_limit"),
        ({"queue_limit": True}, "queue_limit"),
        ({"loss": -0.1}, "loss"),
        ({"loss": 1.01}, "loss"),
        ({"duplicate": 2.0}, "duplicate"),
        ({"reorder": math.nan}, "reorder"),
        ({"reorder_delay": -1.0}, "reorder_delay"),
        ({"corrupt": 1.5}, "corrupt"),
    ],
)
def test_link_config_validation(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=f"^{match} ") as info:
        LinkConfig(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_link_config_boundaries_and_defaults() -> None:
    config = LinkConfig(loss=0.0, duplicate=1.0, reorder=1.0, corrupt=0.0, latency=0.0, queue_limit=0)
    assert config.effective_reorder_delay == 0.0
    default = LinkConfig()
    assert (default.latency, default.bandwidth, default.queue_limit) == (0.010, None, 100)
    assert default.effective_reorder_delay == 0.020
    with pytest.raises(TypeError):
        LinkConfig(0.1)  # type: ignore[call-arg]  # keyword-only


def test_network_rejects_inconsistent_topologies() -> None:
    net = Network(1)
    a, b = Host(A), Host(B)
    net.link(a, b, LinkConfig())
    net.add(a)  # the same endpoint again is fine
    with pytest.raises(ValueError, match="already belongs"):
        net.add(Host(A))
    with pytest.raises(ValueError, match="already linked"):
        net.link(b, a, LinkConfig())
    with pytest.raises(ValueError, match="itself"):
        net.link(a, a, LinkConfig())
    with pytest.raises(ValueError, match="not added"):
        net.poll(Host(C))
    with pytest.raises(ValueError, match="32-bit"):
        net.add(Host(1 << 32))
