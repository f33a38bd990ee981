"""``pytcp demo``: one TCP conversation between the Linux kernel and pytcp, drawn segment by segment.

The demo makes a private network namespace with a TUN device, runs a pytcp stack on it as a server, and
has a kernel socket in the namespace connect, exchange a line each way and close, twice: first the
kernel closes first (so the kernel passes through TIME-WAIT, as the textbooks draw it), then pytcp does
(so pytcp's own TIME-WAIT shows, shortened by a small MSL so the demo ends quickly).

Each exchange is drawn as a ladder: one line per segment with its flags, sequence and acknowledgment
numbers (relative to the initial sequence numbers x of the kernel and y of pytcp, absolute in
parentheses) and window, and the state each side enters. pytcp's states come from its state machine's
tracer; the kernel's are inferred from the segments with the same transition table (RFC 9293 Figure 5)
and checked with ``ss -tan`` in the namespace between steps.

Segments are recorded by a thin wrapper around the TUN device, on the runtime's loop thread, so they and
the tracer's transitions are in the exact order the stack saw them. Offloads are off: every packet the
wrapper sees is one wire segment.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tcpcore
from tcpcore import ACK, FIN, PSH, RST, SYN, MalformedPacket
from tcpcore._types import Buffer

from .config import TCPConfig
from .netns import NetNamespace, in_namespace
from .runtime import StackRuntime
from .stack import Stack
from .state import Event, State, StateMachine, TransitionRecord
from .tun import TunDevice
from .vnet import VnetHeader

if TYPE_CHECKING:
    from .socket import Socket

__all__ = ["run_demo"]

KERNEL = "198.18.0.1"
STACK = "198.18.0.2"
PORT = 7
TUN_NAME = "pytcp-demo"
#: Bound for each blocking step; every reply on a TUN device takes microseconds.
STEP = 5.0
#: Pause after each step so delayed ACKs (40 ms in Linux and pytcp) have gone out before the next one:
#: it keeps the ACK of a FIN apart from the FIN that answers it, as the four-way close is drawn.
SETTLE = 0.25
SS_TIMEOUT = 10.0
LEFT, MIDDLE = 14, 72

_FLAG_NAMES = ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (PSH, "PSH"), (ACK, "ACK"))


@dataclass(frozen=True, slots=True)
class _Segment:
    time: float
    from_kernel: bool
    src_port: int
    dst_port: int
    flags: int
    seq: int
    ack: int
    window: int
    length: int
    options: str


@dataclass(frozen=True, slots=True)
class _Note:
    time: float
    text: str


_Entry = _Segment | TransitionRecord | _Note


class _Log:
    """Everything that happened, in order: segments (loop thread), transitions (loop thread), notes."""

    def __init__(self) -> None:
        self.entries: list[_Entry] = []  # list.append is atomic: the loop thread and the main thread add

    def transition(self, record: TransitionRecord) -> None:
        self.entries.append(record)

    def note(self, text: str) -> None:
        self.entries.append(_Note(time.monotonic(), text))

    def packet(self, packet: Buffer, from_kernel: bool) -> None:
        try:
            _, seg = tcpcore.parse_packet(packet, False)
        except MalformedPacket:
            return
        if seg is None:
            return
        options = []
        if seg.mss:
            options.append(f"mss {seg.mss}")
        if seg.sack_permitted:
            options.append("sackOK")
        if seg.has_timestamps and seg.flags & SYN:
            options.append(f"TS val {seg.ts_val} ecr {seg.ts_ecr}")
        if seg.wscale >= 0:
            options.append(f"wscale {seg.wscale}")
        self.entries.append(
            _Segment(
                time.monotonic(),
                from_kernel,
                seg.src_port,
                seg.dst_port,
                seg.flags,
                seg.seq,
                seg.ack,
                seg.window,
                seg.payload_length,
                ", ".join(options),
            )
        )


class _RecordingTun(TunDevice):
    """The TUN device, copying every packet in either direction to the log (on the loop thread)."""

    def __init__(self, log: _Log, name: str, **options: Any) -> None:
        self.log = log
        super().__init__(name, **options)

    def parse_inbound(self, packet: Buffer) -> tuple[VnetHeader, memoryview]:
        header, view = super().parse_inbound(packet)
        self.log.packet(view, from_kernel=True)
        return header, view

    def write_many(
        self, packets: Sequence[Buffer], gso_mss: int = 0, *, checksum_offload: bool = False
    ) -> int:
        for packet in packets:
            self.log.packet(packet, from_kernel=False)
        return super().write_many(packets, gso_mss, checksum_offload=checksum_offload)


def run_demo(write: Callable[[str], None], *, msl: float, pcap: str | None = None) -> bool:
    """Run both exchanges, writing the drawing line by line; True when everything went as drawn. ``msl``
    (seconds) is short so pytcp's TIME-WAIT (2 * msl) ends within the demo.

    Needs root (pytcp.netns.require_privileges); the namespace and the device are gone afterwards.
    """
    config = TCPConfig(msl=msl)
    log = _Log()
    ns = NetNamespace.create("demo")
    try:
        stack = Stack(int(ipaddress.IPv4Address(STACK)), config, tracer=log.transition)
        tun = _RecordingTun(
            log, TUN_NAME, kernel_address=KERNEL, stack_address=STACK, offload=False, netns=ns
        )
        try:
            runtime = StackRuntime(tun, stack, pcap=pcap)
        except BaseException:
            tun.close()
            raise
        write("pytcp demo: one TCP conversation between the Linux kernel and pytcp, segment by segment")
        write(f"  private network namespace {ns.name} with TUN device {TUN_NAME} (both removed at the end)")
        write(f"  kernel client {KERNEL}  <->  pytcp server {STACK}:{PORT}")
        write(
            f"  MSL is {msl:g} s for the demo (knob msl, default {TCPConfig().msl:g} s), so pytcp's "
            f"TIME-WAIT lasts 2*MSL = {config.time_wait:g} s"
        )
        write("  pytcp states come from its state machine's tracer; kernel states marked * are inferred")
        write("  from the segments (RFC 9293 Figure 5) and checked with `ss -tan` in the namespace ([ss])")
        write("  seq/ack: relative to the initial sequence numbers x (kernel) and y (pytcp), absolute in ()")
        write("  win: the raw 16-bit field, scaled by 2^wscale after the SYNs (RFC 7323)")
        with runtime:
            listener = runtime.socket()
            listener.settimeout(STEP)
            listener.bind(("", PORT))
            listener.listen()
            demo = _Demo(runtime, ns, log, listener, config, write)
            ok = demo.kernel_closes_first() & demo.pytcp_closes_first()
            listener.close()
        write("demo OK" if ok else "demo FAILED: see the lines marked !!")
        return ok
    finally:
        ns.close()


class _Demo:
    def __init__(
        self,
        runtime: StackRuntime,
        ns: NetNamespace,
        log: _Log,
        listener: Socket,
        config: TCPConfig,
        write: Callable[[str], None],
    ) -> None:
        self.runtime, self.ns, self.log, self.listener = runtime, ns, log, listener
        self.config, self.write = config, write

    def kernel_closes_first(self) -> bool:
        """Exchange 1: the kernel client closes first: kernel FIN-WAIT-1/2 and TIME-WAIT, pytcp CLOSE-WAIT
        and LAST-ACK (the four-way close of the textbooks)."""
        start = len(self.log.entries)
        client, server, port = self._connect()
        problems = self._talk(client, server, b"hello, pytcp\n", b"hello, kernel\n")
        self.log.note("kernel app: close()")
        client.close()
        if server.recv(100) != b"":
            problems.append("pytcp did not read the end of file")
        self._settle(port)
        self.log.note("pytcp app: close()")
        server.close()
        self._settle(port)
        kernel = self._ss(port)
        if kernel != "TIME-WAIT":
            problems.append(f"ss shows the kernel socket in {kernel}, not TIME-WAIT")
        ours = self._states(start, port)
        if ours[-2:] != [State.LAST_ACK, State.CLOSED]:
            problems.append(f"pytcp went through {_names(ours)}, expected ... LAST-ACK, CLOSED")
        self._draw("Exchange 1: the kernel client closes first", start, port, problems)
        return not problems

    def pytcp_closes_first(self) -> bool:
        """Exchange 2: pytcp closes first: pytcp FIN-WAIT-1/2 and TIME-WAIT for 2*MSL, kernel CLOSE-WAIT
        and LAST-ACK."""
        start = len(self.log.entries)
        client, server, port = self._connect()
        problems = self._talk(client, server, b"bye?\n", b"bye\n")
        self.log.note("pytcp app: close()")
        server.close()
        if client.recv(100) != b"":
            problems.append("the kernel did not read the end of file")
        self._settle(port)
        self.log.note("kernel app: close()")
        client.close()
        self._settle(port)
        deadline = time.monotonic() + self.config.time_wait + STEP
        while self._pytcp_has(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        ours = self._states(start, port)
        if ours[-2:] != [State.TIME_WAIT, State.CLOSED]:
            problems.append(f"pytcp went through {_names(ours)}, expected ... TIME-WAIT, CLOSED")
        self._draw("Exchange 2: pytcp closes first", start, port, problems)
        held = [r.time for r in self._transitions(start, port) if r.new in (State.TIME_WAIT, State.CLOSED)]
        if len(held) == 2:
            self.write(
                f"  pytcp held TIME-WAIT for {held[1] - held[0]:.3f} s (2*MSL = {self.config.time_wait:g} s);"
                " the kernel's lasts 60 s (Linux TCP_TIMEWAIT_LEN)"
            )
        return not problems

    # -- steps -----------------------------------------------------------------------------------------

    def _connect(self) -> tuple[socket.socket, Socket, int]:
        with in_namespace(self.ns):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.settimeout(STEP)
        self.log.note("kernel app: connect()")
        client.connect((STACK, PORT))
        server, _ = self.listener.accept()
        server.settimeout(STEP)
        port = client.getsockname()[1]
        self._settle(port)
        return client, server, port

    def _talk(self, client: socket.socket, server: Socket, request: bytes, reply: bytes) -> list[str]:
        self.log.note(f"kernel app: send {request!r}")
        client.sendall(request)
        got = _read_exactly(server.recv, len(request))
        self.log.note(f"pytcp app: send {reply!r}")
        server.sendall(reply)
        answer = _read_exactly(client.recv, len(reply))
        time.sleep(SETTLE)
        problems = []
        if got != request or answer != reply:
            problems.append(f"data mismatch: pytcp read {got!r}, the kernel read {answer!r}")
        return problems

    def _settle(self, port: int) -> None:
        time.sleep(SETTLE)
        self.log.note(f"[ss] kernel socket {KERNEL}:{port}: {self._ss(port)}")

    def _ss(self, port: int) -> str:
        """The kernel's state for the client socket, as `ss -tan` in the namespace shows it."""
        done = self.ns.run(["ss", "-tanH"], timeout=SS_TIMEOUT, check=False)
        for line in done.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 5 and fields[3] == f"{KERNEL}:{port}" and fields[4] == f"{STACK}:{PORT}":
                return {"ESTAB": "ESTABLISHED"}.get(fields[0], fields[0])
        return "no socket (CLOSED)"

    def _pytcp_has(self, port: int) -> bool:
        remote = f"{KERNEL}:{port}"
        return any(row["remote"] == remote for row in self.runtime.connections_table(STEP))

    def _transitions(self, start: int, port: int) -> list[TransitionRecord]:
        name = _conn_name(port)
        return [e for e in self.log.entries[start:] if isinstance(e, TransitionRecord) and e.name == name]

    def _states(self, start: int, port: int) -> list[State]:
        return [record.new for record in self._transitions(start, port)]

    # -- drawing ---------------------------------------------------------------------------------------

    def _draw(self, title: str, start: int, port: int, problems: list[str]) -> None:
        entries = [e for e in self.log.entries[start:] if _belongs(e, port)]
        t0 = entries[0].time if entries else 0.0
        write = self.write
        write("")
        write(title)
        write(f"  {'time ms':>9}  {'kernel':<{LEFT}}{'':<{MIDDLE}}  pytcp")
        write(f"  {'':>9}  {'CLOSED':<{LEFT}}{'':<{MIDDLE}}  LISTEN")
        for when, left, middle, right in _ladder(entries):
            stamp = f"{(when - t0) * 1000:9.3f}"
            write(f"  {stamp}  {left:<{LEFT}}{middle:<{MIDDLE}}  {right}".rstrip())
        for problem in problems:
            write(f"  !! {problem}")


def _read_exactly(recv: Callable[[int], bytes], count: int) -> bytes:
    data = b""
    while len(data) < count and (chunk := recv(count - len(data))):
        data += chunk
    return data


def _conn_name(port: int) -> str:
    """The name pytcp's tracer gives the server side of the connection from the kernel's ``port``."""
    return f"{STACK}:{PORT}>{KERNEL}:{port}"


def _belongs(entry: _Entry, port: int) -> bool:
    if isinstance(entry, _Segment):
        return port in (entry.src_port, entry.dst_port) and PORT in (entry.src_port, entry.dst_port)
    if isinstance(entry, TransitionRecord):
        return entry.name == _conn_name(port) and entry.event is not Event.APP_LISTEN
    return True


def _names(states: list[State]) -> str:
    return ", ".join(state.value for state in states) or "nothing"


def _flags(flags: int) -> str:
    return "+".join(name for bit, name in _FLAG_NAMES if flags & bit) or "none"


class _KernelModel:
    """The kernel's side of the connection, inferred from the segments with pytcp's own transition table."""

    def __init__(self) -> None:
        self.machine = StateMachine(State.CLOSED, name="kernel (inferred)")
        self.fin_end: int | None = None  # sequence number just past the kernel's FIN

    def apply(self, seg: _Segment) -> State | None:
        """The state the kernel enters with this segment, or None if it stays."""
        before = self.machine.state
        for event in self._events(seg):
            if self.machine.can(event):
                self.machine.apply(event, seg.time)
        after = self.machine.state
        return after if after is not before else None

    def _events(self, seg: _Segment) -> list[Event]:
        flags = seg.flags
        if flags & RST:
            return [Event.APP_ABORT if seg.from_kernel else Event.RCV_RST]
        if seg.from_kernel:  # what the kernel sends follows from the application's calls
            if flags & SYN and not flags & ACK:
                return [Event.APP_CONNECT]
            if flags & FIN:
                self.fin_end = (seg.seq + seg.length + 1) & 0xFFFFFFFF
                return [Event.APP_CLOSE]
            return []
        if flags & SYN:
            return [Event.RCV_SYN_ACK] if flags & ACK else [Event.RCV_SYN]
        acks_fin = bool(flags & ACK) and self.fin_end is not None and seg.ack == self.fin_end
        if flags & FIN and acks_fin and self.machine.state is State.FIN_WAIT_1:
            return [Event.RCV_FIN_ACK_OF_FIN]
        events = [Event.RCV_ACK_OF_FIN] if acks_fin else []
        return [*events, Event.RCV_FIN] if flags & FIN else events


def _ladder(entries: list[_Entry]) -> list[tuple[float, str, str, str]]:
    """(time, kernel state, segment or note, pytcp state) rows. A pytcp transition shares the row of the
    segment that caused it (the kernel's segment just before it) or that it causes (pytcp's just after)."""
    kernel = _KernelModel()
    isn: dict[bool, int] = {}  # from_kernel -> initial sequence number
    rows: list[tuple[float, str, str, str]] = []
    attach_at: int | None = None  # row of the last entry if it was a kernel segment with a free pytcp column
    held: TransitionRecord | None = None  # a pytcp transition waiting for the segment it causes
    for entry in entries:
        if isinstance(entry, TransitionRecord):
            if attach_at is not None:
                when, left, middle, _ = rows[attach_at]
                rows[attach_at] = (when, left, middle, entry.new.value)
            else:
                if held is not None:
                    rows.append((held.time, "", "", held.new.value))
                held = entry
            attach_at = None
            continue
        right = ""
        if held is not None:
            if isinstance(entry, _Segment) and not entry.from_kernel:
                right = held.new.value
            else:
                rows.append((held.time, "", "", held.new.value))
            held = None
        attach_at = None
        if isinstance(entry, _Note):
            rows.append((entry.time, "", f"  {entry.text}", ""))
            continue
        if entry.flags & SYN:
            isn[entry.from_kernel] = entry.seq
        entered = kernel.apply(entry)
        description = _describe(entry, isn)
        if entry.from_kernel:
            arrow = f"-- {description} ".ljust(MIDDLE - 1, "-") + ">"
            attach_at = len(rows)
        else:
            arrow = "<" + f" {description} --".rjust(MIDDLE - 1, "-")
        rows.append((entry.time, f"{entered.value}*" if entered is not None else "", arrow, right))
        if entry.options:
            rows.append((entry.time, "", f"   <{entry.options}>", ""))
    if held is not None:
        rows.append((held.time, "", "", held.new.value))
    return rows


def _describe(seg: _Segment, isn: dict[bool, int]) -> str:
    own, other = ("x", "y") if seg.from_kernel else ("y", "x")
    text = f"{_flags(seg.flags)} seq={_relative(seg.seq, own, isn.get(seg.from_kernel))} ({seg.seq})"
    if seg.flags & ACK:
        text += f" ack={_relative(seg.ack, other, isn.get(not seg.from_kernel))} ({seg.ack})"
    text += f" win={seg.window}"
    if seg.length:
        text += f" len={seg.length}"
    return text


def _relative(number: int, symbol: str, base: int | None) -> str:
    if base is None:
        return "?"
    offset = (number - base) & 0xFFFFFFFF
    return symbol if offset == 0 else f"{symbol}+{offset}"
