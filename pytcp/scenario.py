"""The seeded transfer scenario: two stacks on a simulated link move data both ways, then close.

``run_transfer`` builds a :class:`pytcp.sim.Network` with a client stack (198.18.0.1) and a server stack
(198.18.0.2, RFC 2544 benchmarking addresses), connects them, and lets one application on each side
write ``nbytes`` of seeded random data while reading the other side's, in random-sized chunks, driven by
the stacks' events on the virtual clock. Each side shuts down writing once everything is accepted,
reads to end of file and closes. Every received byte is checked against the expected stream as it
arrives, so a duplicated, skipped or corrupted byte is caught where it happens, not only by the final
hash. The same seed gives the same result, byte for byte (``to_json``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tcpcore

from .config import TCPConfig
from .events import ConnectionFailed, ConnectionReset, IncomingConnection
from .pcap import PcapWriter, open_pcap
from .sim import LinkConfig, Network
from .stack import Stack
from .state import State, TransitionRecord

if TYPE_CHECKING:
    from .connection import Connection

__all__ = [
    "CLIENT_ADDRESS",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "ScenarioResult",
    "StreamCheck",
    "default_max_time",
    "run_transfer",
]

CLIENT_ADDRESS = int(ipaddress.IPv4Address("198.18.0.1"))
SERVER_ADDRESS = int(ipaddress.IPv4Address("198.18.0.2"))
#: The iperf port: any fixed value does.
SERVER_PORT = 5001
#: Largest application read or write: 64 KiB, a typical socket-loop buffer; each call draws a size
#: in 1..64 KiB so tiny writes (Nagle) and writes larger than the window both occur.
APP_CHUNK_MAX = 65536
#: Time allowed for the handshake and the close on top of the transfer: SYN retransmissions back off
#: 1+2+4+8+16+32 s (63 s) before the sixth, and a lost last FIN costs up to a few capped RTOs more.
SETUP_ALLOWANCE = 300.0
#: The slowest pace a working TCP holds: one segment per max(RTT, RTO floor), i.e. every segment
#: recovered by a timeout. The budget allows ten times that, so only a stalled connection exceeds it.
PACE_FACTOR = 10.0
#: Simulator events allowed per expected segment (data, its ACK, retransmissions, duplicates): a bound
#: only a livelock reaches, so a bug cannot spin for ever.
EVENTS_PER_SEGMENT = 200

_CLEAN_STATES = (State.CLOSED, State.TIME_WAIT)

Trace = Callable[[str], None]


def default_max_time(link: LinkConfig, nbytes: int, config: TCPConfig) -> float:
    """Virtual seconds after which a transfer counts as hung.

    SETUP_ALLOWANCE + PACE_FACTOR x (segments x max(RTT, rto_min) / (1 - loss)^2 + serialisation time):
    each segment and its ACK must both survive, hence the squared delivery probability.
    """
    segments = max(1, -(-nbytes // config.mss))
    rtt = 2 * (link.latency + (link.effective_reorder_delay if link.reorder else 0.0))
    survive = max(1.0 - link.loss, 0.01) ** 2
    serialise = 0.0 if link.bandwidth is None else nbytes * 1.1 / link.bandwidth
    return SETUP_ALLOWANCE + PACE_FACTOR * (segments * max(rtt, config.rto_min) / survive + serialise)


class StreamCheck:
    """Checks one direction's bytes against what the sender wrote, as they are read."""

    __slots__ = ("_hash", "corrupted", "duplicated", "expected", "first_error", "out_of_order", "received")

    def __init__(self, expected: bytes) -> None:
        self.expected = expected
        self.received = 0
        self.duplicated = 0
        self.out_of_order = 0
        self.corrupted = 0
        self.first_error: str | None = None
        self._hash = hashlib.sha256()

    def feed(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        start = self.received
        self.received += len(chunk)
        if self.expected[start : self.received] == chunk:
            return
        # Locate the chunk in the stream to say what went wrong: bytes from earlier are a duplicate,
        # bytes from later mean something was skipped. 64 random bytes are unique in the stream.
        where = self.expected.find(chunk[:64])
        if where < 0:
            self.corrupted += len(chunk)
            kind = "corrupted"
        elif where < start:
            self.duplicated += len(chunk)
            kind = f"duplicate of offset {where}"
        else:
            self.out_of_order += len(chunk)
            kind = f"out of order, from offset {where}"
        if self.first_error is None:
            self.first_error = f"{len(chunk)} bytes at offset {start}: {kind}"

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class _App:
    """One side's application: write everything, shut down writing, read to EOF, close."""

    __slots__ = ("check", "closed", "conn", "data", "error", "name", "rng", "sent", "shut")

    def __init__(self, name: str, data: bytes, check: StreamCheck, rng: random.Random) -> None:
        self.name = name
        self.data = data
        self.check = check
        self.rng = rng
        self.conn: Connection | None = None
        self.sent = 0
        self.shut = False
        self.closed = False
        self.error: str | None = None

    @property
    def finished(self) -> bool:
        return self.conn is not None and self.conn.state in _CLEAN_STATES

    def pump(self, now: float) -> None:
        """Write what the send buffer takes, read what is readable, shut down and close when due."""
        conn = self.conn
        if conn is None or self.error is not None or self.closed:
            return
        data = memoryview(self.data)
        try:
            while self.sent < len(data):
                size = self.rng.randint(1, APP_CHUNK_MAX)
                accepted = conn.send(data[self.sent : self.sent + size], now)
                if accepted == 0:
                    break
                self.sent += accepted
            if self.sent == len(data) and not self.shut:
                conn.shutdown(socket.SHUT_WR, now)
                self.shut = True
            while chunk := conn.recv(self.rng.randint(1, APP_CHUNK_MAX), now):
                self.check.feed(chunk)
            if self.shut and conn.at_eof:
                conn.close(now)
                self.closed = True
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"


@dataclass(slots=True)
class ScenarioResult:
    """Outcome of one transfer; ``to_json`` is identical for identical inputs."""

    ok: bool
    seed: int
    nbytes: int
    link: dict[str, Any]
    virtual_time: float
    max_time: float
    directions: dict[str, dict[str, Any]]
    retransmissions: dict[str, int]
    link_stats: dict[str, dict[str, int]]
    final_states: dict[str, str | None]
    counters: dict[str, dict[str, int]]
    failures: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)


def _stack_seed(seed: int, side: int) -> int:
    return seed * 2 + side


def _segment_tracer(trace: Trace, names: dict[int, str]) -> Callable[[float, str, bytes], None]:
    """Network tap printing each packet a stack sends as the seed documents draw the handshake:
    the client's ISN is x, the server's y, and sequence numbers are shown relative to them."""
    symbols: dict[int, tuple[str, int]] = {}

    def relative(address: int, number: int) -> str:
        if address not in symbols:
            return str(number)
        symbol, isn = symbols[address]
        offset = (number - isn) & 0xFFFFFFFF
        return symbol if offset == 0 else f"{symbol}+{offset}"

    def tap(now: float, direction: str, packet: bytes) -> None:
        if direction != "out":
            return
        try:
            ip, seg = tcpcore.parse_packet(packet, verify_checksum=False)
        except tcpcore.MalformedPacket:
            return
        if seg is None:
            return
        src, dst = names.get(ip.src, str(ip.src)), names.get(ip.dst, str(ip.dst))
        note = ""
        if seg.flags & tcpcore.SYN:
            symbol = "x" if ip.src == CLIENT_ADDRESS else "y"
            symbols[ip.src] = (symbol, seg.seq)
            note = f"  ({symbol}={seg.seq})"
        ack = f" ack={relative(ip.dst, seg.ack)}" if seg.flags & tcpcore.ACK else ""
        trace(
            f"{now:11.6f}  {src} > {dst}  [{tcpcore.flags_to_str(seg.flags)}] seq={relative(ip.src, seg.seq)}"
            f"{ack} win={seg.window} len={seg.payload_length}{note}"
        )

    return tap


def _state_tracer(trace: Trace, side: str) -> Callable[[TransitionRecord], None]:
    def tracer(record: TransitionRecord) -> None:
        note = f"; {record.note}" if record.note else ""
        trace(
            f"{record.time:11.6f}  {side} {record.name}: {record.old.value} -> {record.new.value}"
            f"  ({record.event.value}{note})"
        )

    return tracer


def _make_tap(writer: PcapWriter | None, trace: Trace | None) -> Callable[[float, str, bytes], None] | None:
    """The network tap: capture sent packets to ``writer``, and/or trace them."""
    tracer = _segment_tracer(trace, {CLIENT_ADDRESS: "client", SERVER_ADDRESS: "server"}) if trace else None
    if writer is None and tracer is None:
        return None

    def tap(now: float, direction: str, packet: bytes) -> None:
        if writer is not None and direction == "out":
            writer.write(packet, now)
        if tracer is not None:
            tracer(now, direction, packet)

    return tap


def run_transfer(
    seed: int,
    link: LinkConfig,
    nbytes: int,
    *,
    config: TCPConfig | None = None,
    max_time: float | None = None,
    pcap: str | os.PathLike[str] | PcapWriter | None = None,
    trace: Trace | None = None,
) -> ScenarioResult:
    """Transfer ``nbytes`` each way between two stacks over ``link`` (same config both directions).

    ``max_time`` (virtual seconds) defaults to :func:`default_max_time`. ``pcap`` (a path, or a writer
    the caller closes) records every packet as the stacks send it, before the link loses, duplicates or
    corrupts it. ``trace`` receives one line per state transition and per sent segment.
    """
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    config = config or TCPConfig()
    budget = default_max_time(link, nbytes, config) if max_time is None else max_time
    rng = random.Random(f"pytcp-scenario/{seed}")
    payload = {side: rng.randbytes(nbytes) for side in ("client", "server")}
    checks = {"client": StreamCheck(payload["server"]), "server": StreamCheck(payload["client"])}
    apps = {
        side: _App(side, payload[side], checks[side], random.Random(f"pytcp-scenario/{seed}/{side}"))
        for side in ("client", "server")
    }
    stacks = {
        side: Stack(
            address,
            config,
            seed=_stack_seed(seed, index),
            tracer=_state_tracer(trace, side) if trace is not None else None,
        )
        for index, (side, address) in enumerate((("client", CLIENT_ADDRESS), ("server", SERVER_ADDRESS)))
    }
    segments = 2 * max(1, -(-nbytes // config.mss))
    owned = None if pcap is None or isinstance(pcap, PcapWriter) else open_pcap(pcap)
    try:
        net = Network(seed, tap=_make_tap(pcap if isinstance(pcap, PcapWriter) else owned, trace))
        net.link(stacks["client"], stacks["server"], link)
        listener = stacks["server"].listen(SERVER_PORT)
        apps["client"].conn = stacks["client"].connect(SERVER_ADDRESS, SERVER_PORT, net.now)

        def drive() -> bool:
            """Between simulator events: hand each stack's events to its app; True stops the run."""
            now = net.now
            for side, stack in stacks.items():
                app = apps[side]
                touched = False
                while (event := stack.next_event()) is not None:
                    if isinstance(event, IncomingConnection) and event.listener is listener:
                        if app.conn is None:
                            app.conn = stack.accept(listener)
                    elif (
                        isinstance(event, ConnectionReset | ConnectionFailed)
                        and event.conn is app.conn
                        and not app.closed
                    ):
                        # After close() the connection is an orphan no application sees (as with sockets):
                        # how it ends (a RST from a peer whose TIME-WAIT outlived our backed-off FIN, or
                        # tcp_orphan_retries) is no application error. Undelivered bytes still fail the
                        # stream checks below.
                        app.error = f"{type(event).__name__} errno={event.errno}"
                    touched = True
                if touched:
                    app.pump(now)
                    net.poll(stack)
            return any(app.error for app in apps.values()) or all(app.finished for app in apps.values())

        net.run(until=budget, stop=drive, max_events=100_000 + EVENTS_PER_SEGMENT * segments)
    finally:
        if owned is not None:
            owned.close()
    return _summarise(seed, link, nbytes, budget, net, stacks, apps, payload, checks)


def _summarise(
    seed: int,
    link: LinkConfig,
    nbytes: int,
    budget: float,
    net: Network,
    stacks: dict[str, Stack],
    apps: dict[str, _App],
    payload: dict[str, bytes],
    checks: dict[str, StreamCheck],
) -> ScenarioResult:
    failures: list[str] = []
    errored = any(app.error for app in apps.values())
    for side, app in apps.items():
        if app.error:
            failures.append(f"{side}: {app.error}")
        # A connection that went from ESTABLISHED (or CLOSE-WAIT) straight to CLOSED was reset or
        # aborted, even if no event said so (our own abort, e.g. close() with unread data).
        if stacks[side].mib.EstabResets:
            failures.append(f"{side}: {stacks[side].mib.EstabResets} connection reset(s)")
        if app.conn is None:
            failures.append(f"{side}: no connection")
        elif app.conn.state not in _CLEAN_STATES:
            # After an error the run stops at once, so the other side is caught mid-way: no hang.
            hang = "" if errored else " (hang)"
            failures.append(f"{side}: ended in {app.conn.state.value} at {net.now:.3f} s{hang}")
    directions: dict[str, dict[str, Any]] = {}
    for sender, receiver in (("client", "server"), ("server", "client")):
        app, check = apps[sender], checks[receiver]
        sent_hash = hashlib.sha256(payload[sender][: app.sent]).hexdigest()
        complete = app.sent == nbytes and check.received == nbytes
        match = complete and sent_hash == check.sha256 and check.first_error is None
        name = f"{sender}_to_{receiver}"
        directions[name] = {
            "sent": app.sent,
            "received": check.received,
            "sha256_sent": sent_hash,
            "sha256_received": check.sha256,
            "match": match,
            "duplicated_bytes": check.duplicated,
            "out_of_order_bytes": check.out_of_order,
            "corrupted_bytes": check.corrupted,
            "first_error": check.first_error,
        }
        if not match:
            detail = check.first_error or f"sent {app.sent}, received {check.received} of {nbytes}"
            failures.append(f"{name}: {detail}")
    link_stats = net.stats()
    return ScenarioResult(
        ok=not failures,
        seed=seed,
        nbytes=nbytes,
        link=dataclasses.asdict(link),
        virtual_time=round(net.now, 9),
        max_time=round(budget, 9),
        directions=directions,
        retransmissions={side: stack.mib.RetransSegs for side, stack in stacks.items()},
        link_stats={
            "client_to_server": dataclasses.asdict(link_stats[(CLIENT_ADDRESS, SERVER_ADDRESS)]),
            "server_to_client": dataclasses.asdict(link_stats[(SERVER_ADDRESS, CLIENT_ADDRESS)]),
        },
        final_states={side: app.conn.state.value if app.conn else None for side, app in apps.items()},
        counters={side: stack.mib.nonzero() for side, stack in stacks.items()},
        failures=failures,
    )
