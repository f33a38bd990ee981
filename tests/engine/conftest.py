"""Packet-trace harness for the connection engine (smoltcp style), on a virtual clock.

A ``Peer`` wraps one Connection: ``deliver`` builds a segment from the remote end with
tcpcore.build_tcp_ipv4 and feeds its parsed form to ``handle_segment``; every packet the connection
emits (after each delivery, application call or timer) is parsed and queued; ``expect`` pops the oldest
and checks exactly the fields given; ``expect_nothing`` asserts the queue is empty; ``advance`` moves
the clock, firing timers at their own deadlines. Factories build a connection in each state with fixed
ISNs so traces read like the RFC's: SYN seq=ISS; SYN-ACK seq=IRS ack=ISS+1; ...

``Pair`` wires two connections back to back over a seeded lossy link for end-to-end checks.

Test modules reach all of it through the ``tcp`` fixture (a namespace: factories, Peer, Pair, PLAIN);
a Peer knows its ``iss`` and the peer's ``irs``.
"""

from __future__ import annotations

import heapq
import random
import socket
from collections import deque
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

import tcpcore
from pytcp import events
from pytcp.config import TCPConfig
from pytcp.connection import ChallengeAckLimiter, Connection
from pytcp.mib import MIB
from pytcp.state import State, TransitionRecord
from tcpcore import ACK, FIN, RST, SYN, TCPSegment, flags_to_str

LOCAL = 0x0A000001  # 10.0.0.1
REMOTE = 0x0A000002  # 10.0.0.2
LPORT = 40000
RPORT = 80
ISS = 1000  # ours
IRS = 5000  # the peer's
MASK = 0xFFFFFFFF

#: Round numbers for traces: 1000-byte MSS, 64000-byte buffers (< 65535, so windows fit without scaling),
#: and no options unless a test turns them on.
PLAIN = TCPConfig(
    mss=1000,
    recv_buffer=64000,
    send_buffer=64000,
    sack=False,
    timestamps=False,
    window_scaling=False,
    congestion_control="reno",
)


def seq(base: int, offset: int) -> int:
    return (base + offset) & MASK


@dataclass
class Sent:
    """One packet the connection emitted, parsed."""

    seg: TCPSegment
    packet: bytes
    flags: str
    payload: bytes

    def __repr__(self) -> str:
        s = self.seg
        return f"<{self.flags} seq={s.seq} ack={s.ack} win={s.window} len={len(self.payload)}>"


class Peer:
    """One connection under test plus the remote end we play by hand."""

    def __init__(
        self, config: TCPConfig = PLAIN, *, iss: int = ISS, now: float = 0.0, limit: int = 1000
    ) -> None:
        self.config = config
        self.mib = MIB()
        self.events: list[events.Event] = []
        self.transitions: list[TransitionRecord] = []
        self.now = now
        self.out: deque[Sent] = deque()
        self.conn = Connection(
            config,
            self.mib,
            local_addr=LOCAL,
            local_port=LPORT,
            remote_addr=REMOTE,
            remote_port=RPORT,
            iss=iss,
            now=now,
            emit=self.events.append,
            tracer=self.transitions.append,
            limiter=ChallengeAckLimiter(limit),
        )
        self.iss = iss
        self.irs = IRS

    # -- driving ------------------------------------------------------------------------------------
    def segment(
        self,
        flags: int,
        seq: int,
        ack: int = 0,
        win: int = 65535,
        payload: bytes = b"",
        **options: Any,
    ) -> TCPSegment:
        """A segment from the remote end, built and parsed like wire input."""
        ts = options.pop("ts", None)
        sack = options.pop("sack", ())
        packet = tcpcore.build_tcp_ipv4(
            REMOTE, LOCAL, RPORT, LPORT, seq & MASK, ack & MASK, flags, win, payload,
            timestamps=ts, sack_blocks=tuple(sack), **options,
        )  # fmt: skip
        _ip, seg = tcpcore.parse_packet(packet)
        assert seg is not None
        return seg

    def deliver(
        self, flags: int, seq: int, ack: int = 0, win: int = 65535, payload: bytes = b"", *,
        t: float | None = None, poll: bool = True, **options: Any,
    ) -> None:  # fmt: skip
        """The remote end sends a segment at time t (default: now); ``poll=False`` leaves our answer
        queued in the connection, so an application call can still join it."""
        if t is not None:
            self.advance(t)
        self.conn.handle_segment(self.segment(flags, seq, ack, win, payload, **options), self.now)
        if poll:
            self.poll()

    def poll(self) -> None:
        out: list[bytes] = []
        self.conn.poll_transmit(self.now, out)
        for packet in out:
            ip, seg = tcpcore.parse_packet(packet)
            assert seg is not None and ip.src == LOCAL and ip.dst == REMOTE
            assert (seg.src_port, seg.dst_port) == (LPORT, RPORT)
            self.out.append(Sent(seg, packet, flags_to_str(seg.flags), bytes(seg.payload)))

    def advance(self, t: float) -> None:
        """Move the clock to t, firing every timer due on the way at its own deadline."""
        assert t >= self.now, "time only moves forward"
        for _ in range(100_000):
            due = self.conn.get_timer()
            if due is None or due > t:
                break
            self.now = max(self.now, due)
            self.conn.handle_timer(self.now)
            self.poll()
        else:
            raise AssertionError("timer storm")
        self.now = t

    def call(self, name: str, *args: Any, poll: bool = True) -> Any:
        """Call an application method with the current time, then collect output."""
        result = getattr(self.conn, name)(*args, self.now)
        if poll:
            self.poll()
        return result

    # -- checking -----------------------------------------------------------------------------------
    def expect(
        self,
        flags: str,
        seq: int | None = None,
        ack: int | None = None,
        win: int | None = None,
        payload: bytes | None = None,
        **options: Any,
    ) -> Sent:
        """Pop the oldest emitted packet and check it (flags exactly; other fields when given)."""
        assert self.out, f"expected {flags}, nothing was sent"
        sent = self.out.popleft()
        seg = sent.seg
        where = f"got {sent!r}"
        assert sent.flags == flags, where
        if seq is not None:
            assert seg.seq == seq & MASK, where
        if ack is not None:
            assert seg.ack == ack & MASK, where
        if win is not None:
            assert seg.window == win, where
        if payload is not None:
            assert sent.payload == payload, where
        for name, value in options.items():
            if name == "ts":
                got: Any = (seg.ts_val, seg.ts_ecr) if seg.has_timestamps else None
            elif name == "sack":
                got, value = list(seg.sack_blocks), [(a & MASK, b & MASK) for a, b in value]
            elif name == "length":
                got = len(sent.payload)
            else:
                got = getattr(seg, name)
            assert got == value, f"{name}: {got!r} != {value!r}; {where}"
        return sent

    def expect_nothing(self) -> None:
        assert not self.out, f"unexpected output: {list(self.out)}"

    def drain(self) -> list[Sent]:
        sent = list(self.out)
        self.out.clear()
        return sent

    def take_events(self, kind: type | None = None) -> list[events.Event]:
        """Pop the events so far (only those of ``kind`` are returned, all are cleared)."""
        got = [e for e in self.events if kind is None or isinstance(e, kind)]
        self.events.clear()
        return got

    @property
    def state(self) -> State:
        return self.conn.state


# -- factories: one per starting state ------------------------------------------------------------
def syn_sent(config: TCPConfig = PLAIN, **kw: Any) -> Peer:
    p = Peer(config, **kw)
    p.call("connect")
    p.expect("S", seq=p.iss)
    return p


def syn_received(config: TCPConfig = PLAIN, win: int = 65535, **kw: Any) -> Peer:
    """A listener's child after the peer's SYN (passive open)."""
    p = Peer(config, **kw)
    syn = p.segment(SYN, IRS, win=win, mss=1000)
    p.conn.accept_syn(syn, p.now)
    p.poll()
    p.expect("S.", seq=p.iss, ack=IRS + 1)
    return p


def established(config: TCPConfig = PLAIN, win: int = 65535, passive: bool = False, **kw: Any) -> Peer:
    if passive:
        p = syn_received(config, win=win, **kw)
        p.deliver(ACK, IRS + 1, p.iss + 1, win)
    else:
        p = syn_sent(config, **kw)
        p.deliver(SYN | ACK, IRS, p.iss + 1, win, mss=1000)
        p.expect(".", seq=p.iss + 1, ack=IRS + 1)
    assert p.state is State.ESTABLISHED
    p.take_events()
    return p


def fin_wait_1(config: TCPConfig = PLAIN, **kw: Any) -> Peer:
    p = established(config, **kw)
    p.call("close")
    p.expect("F.", seq=p.iss + 1, ack=IRS + 1)
    assert p.state is State.FIN_WAIT_1
    return p


def fin_wait_2(config: TCPConfig = PLAIN, **kw: Any) -> Peer:
    """Half-closed by shutdown(SHUT_WR), our FIN acknowledged (not orphaned: no FIN-WAIT-2 timer)."""
    p = established(config, **kw)
    p.call("shutdown", socket.SHUT_WR)
    p.expect("F.", seq=p.iss + 1, ack=IRS + 1)
    p.deliver(ACK, IRS + 1, p.iss + 2)
    assert p.state is State.FIN_WAIT_2
    p.expect_nothing()
    return p


def close_wait(config: TCPConfig = PLAIN, **kw: Any) -> Peer:
    p = established(config, **kw)
    p.deliver(FIN | ACK, IRS + 1, p.iss + 1)
    # Its ACK waits for a close that could carry it, up to the delayed-ACK timeout (Linux tcp_fin).
    p.expect_nothing()
    p.advance(p.now + config.delayed_ack)
    p.expect(".", seq=p.iss + 1, ack=IRS + 2)
    assert p.state is State.CLOSE_WAIT
    p.take_events()
    return p


def last_ack(config: TCPConfig = PLAIN, **kw: Any) -> Peer:
    p = close_wait(config, **kw)
    p.call("close")
    p.expect("F.", seq=p.iss + 1, ack=IRS + 2)
    assert p.state is State.LAST_ACK
    return p


def time_wait(config: TCPConfig = PLAIN, **kw: Any) -> Peer:
    p = fin_wait_1(config, **kw)
    p.deliver(ACK, IRS + 1, p.iss + 2)
    p.deliver(FIN | ACK, IRS + 1, p.iss + 2)
    p.expect(".", seq=p.iss + 2, ack=IRS + 2)
    assert p.state is State.TIME_WAIT
    p.take_events()
    return p


# -- two connections back to back ------------------------------------------------------------------
@dataclass(order=True)
class _Flight:
    at: float
    order: int
    packet: bytes = field(compare=False)
    to_client: bool = field(compare=False)


class Pair:
    """Client and server connections over a link with one-way ``delay`` and seeded random ``loss``."""

    def __init__(
        self,
        client_config: TCPConfig = PLAIN,
        server_config: TCPConfig | None = None,
        *,
        delay: float = 0.005,
        loss: float = 0.0,
        seed: int = 1,
        connection: type[Connection] = Connection,
    ) -> None:
        self.connection = connection  # a subclass may instrument the engine's methods
        self.delay = delay
        self.loss = loss
        self.rng = random.Random(seed)
        self.now = 0.0
        self.mib_client = MIB()
        self.mib_server = MIB()
        self.events: list[events.Event] = []
        self.server_config = server_config or client_config
        self.limiter = ChallengeAckLimiter(1000)
        self.client = connection(
            client_config, self.mib_client, local_addr=LOCAL, local_port=LPORT, remote_addr=REMOTE,
            remote_port=RPORT, iss=0xFFFFF000, now=0.0, emit=self.events.append, limiter=self.limiter,
        )  # fmt: skip
        self.server: Connection | None = None
        self._heap: list[_Flight] = []
        self._order = 0
        self.dropped = 0

    def _send(self, conn: Connection, to_client: bool) -> None:
        out: list[bytes] = []
        conn.poll_transmit(self.now, out)
        for packet in out:
            if self.rng.random() < self.loss:
                self.dropped += 1
                continue
            self._order += 1
            heapq.heappush(self._heap, _Flight(self.now + self.delay, self._order, packet, to_client))

    def pump(self) -> None:
        self._send(self.client, False)
        if self.server is not None:
            self._send(self.server, True)

    def step(self) -> bool:
        """Advance to the next packet arrival or timer; False when nothing is left to happen."""
        self.pump()
        times = [c.get_timer() for c in (self.client, self.server) if c is not None]
        deadlines = [t for t in times if t is not None]
        arrival = self._heap[0].at if self._heap else None
        candidates = deadlines + ([arrival] if arrival is not None else [])
        if not candidates:
            return False
        self.now = max(self.now, min(candidates))
        if arrival is not None and arrival <= self.now:
            flight = heapq.heappop(self._heap)
            _ip, seg = tcpcore.parse_packet(flight.packet)
            assert seg is not None
            if flight.to_client:
                self.client.handle_segment(seg, self.now)
            elif self.server is None:
                if seg.flags & (SYN | ACK | RST) == SYN:
                    self.server = self.connection(
                        self.server_config, self.mib_server, local_addr=REMOTE, local_port=RPORT,
                        remote_addr=LOCAL, remote_port=LPORT, iss=0x7FFFFF00, now=self.now,
                        emit=self.events.append, limiter=self.limiter,
                    )  # fmt: skip
                    self.server.accept_syn(seg, self.now)
            else:
                self.server.handle_segment(seg, self.now)
        for conn in (self.client, self.server):
            if conn is not None and (due := conn.get_timer()) is not None and due <= self.now:
                conn.handle_timer(self.now)
        return True


@pytest.fixture
def tcp() -> SimpleNamespace:
    """The harness: factories per starting state, Peer, Pair and the PLAIN config."""
    return SimpleNamespace(
        PLAIN=PLAIN,
        Peer=Peer,
        Pair=Pair,
        syn_sent=syn_sent,
        syn_received=syn_received,
        established=established,
        fin_wait_1=fin_wait_1,
        fin_wait_2=fin_wait_2,
        close_wait=close_wait,
        last_ack=last_ack,
        time_wait=time_wait,
    )
