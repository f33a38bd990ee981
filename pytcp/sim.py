"""Deterministic discrete-event network simulator: seeded point-to-point links between sans-I/O endpoints.

Endpoints speak raw IPv4 packets through four aioquic-style verbs (see :class:`Endpoint`); the
:class:`Network` owns a virtual clock and one event heap holding both packet deliveries and endpoint
timers. Each link direction models, in this order: a FIFO transmit queue with tail drop, serialisation
at a fixed bandwidth, then on the wire loss, duplication, reordering (a copy held back), single-bit
corruption and a fixed propagation latency.

Determinism: every random decision of a direction comes from its own ``random.Random`` seeded from
(seed, link index, direction), so the same seed replays the same run byte for byte and traffic in one
direction never shifts the other's random stream.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from tcpcore._types import Buffer

from .addresses import dotted

__all__ = ["Endpoint", "LinkConfig", "LinkStats", "Network", "Tap"]

logger = logging.getLogger(__name__)

#: Shortest packet that carries an IPv4 destination address (RFC 791: bytes 16..20 of the header).
_IPV4_HEADER_MIN = 20
_DST_SLICE = slice(16, 20)

#: tap(time, "out" | "in", packet): every packet an endpoint emits and every packet delivered.
Tap = Callable[[float, str, bytes], None]


class Endpoint(Protocol):
    """A sans-I/O network node (the stack implements it; the simulator and the runtime drive it)."""

    @property
    def address(self) -> int:
        """Its IPv4 address as a host-order int."""
        ...

    def receive(self, packet: bytes, now: float) -> None:
        """Take one inbound IPv4 packet."""
        ...

    def datagrams_to_send(self, now: float) -> Sequence[Buffer]:
        """Hand out (and forget) every outbound IPv4 packet queued so far."""
        ...

    def get_timer(self) -> float | None:
        """Absolute time of the next timer, or None when no timer is armed."""
        ...

    def handle_timer(self, now: float) -> None:
        """Run whatever timers are due at ``now``."""
        ...


def _check_range(name: str, value: float | None, low: float, high: float, *, open_low: bool = False) -> None:
    """One-line ValueError unless value is None or finite within the bounds (NaN fails too)."""
    if value is None:
        return
    if not math.isfinite(value) or value < low or (open_low and value == low) or value > high:
        raise ValueError(
            f"{name} must be finite and in {'(' if open_low else '['}{low}, {high}], got {value!r}"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkConfig:
    """One direction of a link. Bandwidth counts IP bytes only (no link-layer framing)."""

    #: One-way propagation delay in seconds; 10 ms is a typical metro/regional path.
    latency: float = 0.010
    #: Bytes per second; None means infinite (no serialisation delay and so no queueing).
    bandwidth: float | None = None
    #: Packets waiting behind the one being serialised before tail drop. 100 full-size 1500-byte
    #: packets = 150 kB, one bandwidth-delay product (the classic buffer-sizing rule) at the default
    #: 20 ms RTT and 60 Mbit/s; it also caps a direction's queue memory at 100 * 64 KiB.
    queue_limit: int = 100
    loss: float = 0.0
    duplicate: float = 0.0
    #: Probability a copy is held back by ``reorder_delay`` extra seconds.
    reorder: float = 0.0
    #: None means 2 * latency: the held-back copy then lands after packets sent up to a latency later.
    reorder_delay: float | None = None
    #: Probability one random bit of a copy is flipped (checksums must catch it).
    corrupt: float = 0.0

    def __post_init__(self) -> None:
        _check_range("latency", self.latency, 0.0, math.inf)
        _check_range("bandwidth", self.bandwidth, 0.0, math.inf, open_low=True)
        _check_range("reorder_delay", self.reorder_delay, 0.0, math.inf)
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        if type(self.queue_limit) is not int or self.queue_limit < 0:
            raise ValueError(f"queue_limit must be an int >= 0, got {self.queue_limit!r}")

    @property
    def effective_reorder_delay(self) -> float:
        """The hold-back actually applied to a reordered copy."""
        return 2.0 * self.latency if self.reorder_delay is None else self.reorder_delay


@dataclass(slots=True)
class LinkStats:
    """Counters of one link direction. Once the network is idle:
    ``delivered == sent - queue_dropped - lost + duplicated``."""

    sent: int = 0
    delivered: int = 0
    lost: int = 0
    queue_dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    bytes_delivered: int = 0


class _Node:
    """An endpoint plus its routes and the identity of its one armed timer entry."""

    __slots__ = ("endpoint", "routes", "timer_at", "timer_seq")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        #: 4-byte network-order destination address -> outgoing direction.
        self.routes: dict[bytes, _Direction] = {}
        self.timer_at: float | None = None
        #: Sequence number of the live timer heap entry; older entries for this node are stale.
        self.timer_seq = -1


class _Direction:
    """One direction of a link: its config, random stream, transmitter state and counters."""

    __slots__ = ("busy_until", "config", "dst", "rng", "stats", "waiting")

    def __init__(self, config: LinkConfig, dst: _Node, rng: random.Random) -> None:
        self.config = config
        self.dst = dst
        self.rng = rng
        self.stats = LinkStats()
        #: When the transmitter finishes the last packet queued so far.
        self.busy_until = 0.0
        #: Serialisation start times of packets still waiting (nondecreasing: FIFO).
        self.waiting: deque[float] = deque()


#: Heap entry: (time, insertion sequence, target, packet). A _Direction target delivers the packet to
#: its destination; a _Node target is that node's timer (packet b""). The unique sequence breaks time
#: ties by insertion order, so targets are never compared.
_Event = tuple[float, int, _Direction | _Node, bytes]


class Network:
    """A set of endpoints joined by seeded point-to-point links, driven by a virtual clock."""

    def __init__(self, seed: int, *, tap: Tap | None = None) -> None:
        self.seed = seed
        self.tap = tap
        self._now = 0.0
        self._heap: list[_Event] = []
        self._seq = itertools.count()
        self._nodes: dict[int, _Node] = {}
        self._directions: dict[tuple[int, int], _Direction] = {}
        self._links = 0
        self._unroutable = 0

    @property
    def now(self) -> float:
        """Virtual time in seconds, starting at 0.0."""
        return self._now

    @property
    def unroutable(self) -> int:
        """Packets dropped for being shorter than an IPv4 header or having no link to their destination."""
        return self._unroutable

    def add(self, endpoint: Endpoint) -> None:
        """Register an endpoint under its address (adding the same endpoint again is a no-op)."""
        address = endpoint.address
        if not 0 <= address < 1 << 32:
            raise ValueError(f"endpoint address must be a 32-bit int, got {address!r}")
        node = self._nodes.get(address)
        if node is not None:
            if node.endpoint is not endpoint:
                raise ValueError(f"address {dotted(address)} already belongs to another endpoint")
            return
        self._nodes[address] = _Node(endpoint)

    def link(
        self, a: Endpoint, b: Endpoint, config_ab: LinkConfig, config_ba: LinkConfig | None = None
    ) -> None:
        """Join a and b (adding them if needed); config_ba None means the same config both ways."""
        self.add(a)
        self.add(b)
        if a.address == b.address:
            raise ValueError("cannot link an endpoint to itself")
        if (a.address, b.address) in self._directions:
            raise ValueError(f"{dotted(a.address)} and {dotted(b.address)} are already linked")
        index = self._links
        self._links += 1
        ends = ((a, b, config_ab), (b, a, config_ab if config_ba is None else config_ba))
        for direction, (src, dst, config) in enumerate(ends):
            # A str seed is hashed with SHA-512 by random.seed: stable across processes and platforms.
            rng = random.Random(f"{self.seed}/{index}/{direction}")
            d = _Direction(config, self._nodes[dst.address], rng)
            self._nodes[src.address].routes[dst.address.to_bytes(4, "big")] = d
            self._directions[(src.address, dst.address)] = d

    def stats(self) -> dict[tuple[int, int], LinkStats]:
        """Snapshot of every direction's counters keyed by (src_address, dst_address)."""
        return {key: replace(d.stats) for key, d in self._directions.items()}

    def poll(self, endpoint: Endpoint) -> None:
        """Send what the endpoint queued and re-arm its timer; call after acting on it outside an event."""
        node = self._nodes.get(endpoint.address)
        if node is None or node.endpoint is not endpoint:
            raise ValueError(f"endpoint {dotted(endpoint.address)} was not added to this network")
        self._after(node)

    def step(self) -> bool:
        """Process the earliest pending event; False when nothing is pending."""
        if self._peek() is None:
            return False
        at, _, target, packet = heapq.heappop(self._heap)
        self._now = at
        if isinstance(target, _Direction):
            stats = target.stats
            stats.delivered += 1
            stats.bytes_delivered += len(packet)
            if self.tap is not None:
                self.tap(at, "in", packet)
            node = target.dst
            node.endpoint.receive(packet, at)
        else:
            node = target
            node.timer_at = None
            due = node.endpoint.get_timer()
            # Re-read: the application may have moved the timer without a poll; only fire when due.
            if due is not None and due <= at:
                node.endpoint.handle_timer(at)
        self._after(node)
        return True

    def run(
        self,
        until: float | None = None,
        *,
        stop: Callable[[], bool] | None = None,
        max_events: int = 10_000_000,
    ) -> float:
        """Process events until ``stop()`` is true, the next event lies beyond ``until`` (the clock then
        advances to ``until``), nothing is pending, or ``max_events`` were processed. Returns now.

        10 million events is minutes of wall time: a bound that only a livelock reaches.
        """
        for node in self._nodes.values():
            self._after(node)
        events = 0
        while stop is None or not stop():
            at = self._peek()
            if at is None or (until is not None and at > until):
                if until is not None and until > self._now:
                    self._now = until
                break
            if events >= max_events:
                logger.warning("run() stopped after max_events=%d with events still pending", max_events)
                break
            self.step()
            events += 1
        return self._now

    # -- internals -------------------------------------------------------------------------------

    def _peek(self) -> float | None:
        """Time of the next live event, discarding superseded timer entries on the way."""
        heap = self._heap
        while heap:
            at, seq, target, _ = heap[0]
            if isinstance(target, _Direction) or target.timer_seq == seq:
                return at
            heapq.heappop(heap)
        return None

    def _after(self, node: _Node) -> None:
        """After any interaction: drain the endpoint's output onto its links, then re-arm its timer."""
        now = self._now
        endpoint = node.endpoint
        for packet in endpoint.datagrams_to_send(now):
            self._emit(node, bytes(packet))
        due = endpoint.get_timer()
        if due is not None and due < now:  # a timer in the past fires now
            due = now
        if due != node.timer_at:
            node.timer_at = due
            if due is None:
                node.timer_seq = -1
            else:
                node.timer_seq = seq = next(self._seq)
                heapq.heappush(self._heap, (due, seq, node, b""))

    def _emit(self, node: _Node, packet: bytes) -> None:
        now = self._now
        if self.tap is not None:
            self.tap(now, "out", packet)
        d = node.routes.get(packet[_DST_SLICE]) if len(packet) >= _IPV4_HEADER_MIN else None
        if d is None:
            self._unroutable += 1
            return
        config = d.config
        stats = d.stats
        stats.sent += 1
        if config.bandwidth is None:
            departure = now
        else:
            waiting = d.waiting
            while waiting and waiting[0] <= now:
                waiting.popleft()
            if len(waiting) >= config.queue_limit and d.busy_until > now:
                stats.queue_dropped += 1
                return
            start = d.busy_until if d.busy_until > now else now
            if start > now:
                waiting.append(start)
            departure = d.busy_until = start + len(packet) / config.bandwidth
        rng = d.rng
        # Loss strikes on the wire, after the packet used its share of bandwidth.
        if config.loss and rng.random() < config.loss:
            stats.lost += 1
            return
        arrival = departure + config.latency
        self._schedule(d, arrival, packet)
        if config.duplicate and rng.random() < config.duplicate:
            stats.duplicated += 1
            self._schedule(d, arrival, packet)

    def _schedule(self, d: _Direction, arrival: float, packet: bytes) -> None:
        """Queue one copy for delivery; each copy is reordered and corrupted independently."""
        config = d.config
        rng = d.rng
        if config.reorder and rng.random() < config.reorder:
            d.stats.reordered += 1
            arrival += config.effective_reorder_delay
        if config.corrupt and rng.random() < config.corrupt:
            d.stats.corrupted += 1
            bit = rng.randrange(len(packet) * 8)
            flipped = bytearray(packet)
            flipped[bit >> 3] ^= 1 << (bit & 7)
            packet = bytes(flipped)
        heapq.heappush(self._heap, (arrival, next(self._seq), d, packet))
