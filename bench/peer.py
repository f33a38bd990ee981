"""The programs the harness starts inside its namespaces: one server agent and four clients.

Every program takes ``--backend kernel|stack``: ``kernel`` uses Python's socket module, ``stack`` opens a
pytcp StackRuntime on a TUN device in the namespace it runs in and uses ``runtime.socket()``. The
application code (accept loops, transfer and ping-pong loops) is the same function for both backends,
so the only difference between a stack figure and a kernel figure is the TCP underneath.

Programs (each prints JSON lines on stdout, the protocol the harness reads; see bench.topology):

- ``server``: listens on five consecutive ports (discard, crr, rr, hold, source), prints
  ``{"ready": ...}`` and then answers one JSON line per command line on stdin: ``cpu`` (process CPU
  seconds), ``stats`` (process CPU seconds and RSS after a GC), ``held`` (connections the hold port
  has accepted), ``release`` (close them). EOF on stdin stops it; so does a dead stack runtime (after
  an ``error`` answer), so the harness restarts it.
- ``bulk``: connects, sends ``--bytes`` in CHUNK-sized sendall calls, half-closes and waits for the
  server's EOF, so the time covers delivery of the last byte; reports bytes, seconds and CPU seconds.
  ``--direction down`` receives instead: it asks the server's source port for ``--bytes`` (an 8-byte
  count) and reads until the server's EOF.
- ``crr``: connect, 1-byte request, 1-byte reply, close, in a loop for ``--duration`` seconds.
- ``rr``: 1-byte ping-pong on one connection for ``--duration`` seconds; rate and latency percentiles.
- ``hold``: opens ``--count`` connections, reports, keeps them until a line or EOF arrives on stdin.

Clients report JSON with wall ``seconds`` and ``cpu`` seconds of the measured window only:
``time.process_time()``, every thread of the process (for the stack, the runtime's loop thread included),
user plus system time; plus the softirq time spent meanwhile (see bench.scenarios for how it is used).
crr and rr also report the transactions of their warm-up (``warmup_count``), which the server's CPU
time covers as well.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import socket
import struct
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, Self

from pytcp.services import CHUNK

if TYPE_CHECKING:
    from pytcp.runtime import StackRuntime

__all__ = ["PORTS", "main"]

logger = logging.getLogger(__name__)

#: The server's services, at --port-base + index.
PORTS = ("discard", "crr", "rr", "hold", "source")
#: Bound on every blocking socket call: a step takes microseconds to milliseconds even on a loaded 2-core
#: VM, so 10 s only ever expires on a stall, which then ends the run with an error instead of a hang.
IO_TIMEOUT = 10.0
#: Listen backlog of every service: Linux's somaxconn (and TCPConfig.somaxconn), so the hold client's
#: burst of connects waits in the queue instead of falling back to SYN cookies.
BACKLOG = 4096
#: Seconds a client loop runs before it starts counting: caches, the stack's first connection and the
#: CPU frequency settle.
WARMUP = 0.2
#: RR latency samples kept: 2**22 round trips (32 MB of int64) is 40 s at the kernel's ~100k/s on one
#: vCPU, beyond any --duration the harness passes; later round trips are counted but not sampled.
MAX_SAMPLES = 1 << 22
#: A stack runtime's stop budget (graceful closes, then resets): the runtime's own default.
STOP_TIMEOUT = 5.0
_REQUEST = b"q"
#: The source service's request: how many bytes to send, unsigned 64-bit big-endian.
_COUNT = struct.Struct("!Q")
_TICK = os.sysconf("SC_CLK_TCK")


class StreamSocket(Protocol):
    """What the benchmark programs use of a socket: socket.socket and pytcp.socket.Socket both fit."""

    def bind(self, address: tuple[str, int]) -> None: ...
    def listen(self, backlog: int = ...) -> None: ...
    def accept(self) -> tuple[Any, Any]: ...
    def connect(self, address: tuple[str, int]) -> None: ...
    def sendall(self, data: bytes | bytearray | memoryview, flags: int = ...) -> None: ...
    def recv(self, bufsize: int, flags: int = ...) -> bytes: ...
    def recv_into(self, buffer: bytearray | memoryview, nbytes: int = ..., flags: int = ...) -> int: ...
    def shutdown(self, how: int) -> None: ...
    def close(self) -> None: ...
    def settimeout(self, value: float | None) -> None: ...
    def setsockopt(self, level: int, optname: int, value: int | bytes) -> None: ...


class Backend:
    """A socket factory: the kernel's, or a pytcp runtime's on a TUN device opened in this namespace."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.name: str = args.backend
        self._runtime: StackRuntime | None = None
        if self.name == "stack":
            from pytcp.runtime import StackRuntime  # only stack peers pay for the import

            self._runtime = StackRuntime.open(
                args.tun,
                stack_address=args.stack_address,
                kernel_address=args.kernel_address,
                prefix_len=args.prefix_len,
                offload=not args.no_offload,
            ).start()

    def socket(self) -> StreamSocket:
        sock: StreamSocket
        if self._runtime is not None:
            sock = self._runtime.socket()
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(IO_TIMEOUT)
        return sock

    def check(self) -> None:
        """OSError if the stack's runtime has died (its failure is what a stall would hide)."""
        if self._runtime is not None and not self._runtime.running:
            raise OSError(f"pytcp runtime stopped: {self._runtime.failure!r}")

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.stop(STOP_TIMEOUT)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _pin(cpu: int | None) -> None:
    # Before any thread starts: threads inherit their creator's affinity.
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _softirq_seconds() -> float:
    """Softirq time of all CPUs so far (/proc/stat; system-wide, so other load on the machine counts)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    return int(fields[7]) / _TICK  # cpu user nice system idle iowait irq softirq ...


def _ksoftirqd_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as comm:
                    if comm.read().startswith("ksoftirqd/"):
                        pids.append(int(entry))
            except OSError:
                continue  # a process that just ended
    return pids


def _ksoftirqd_seconds(pids: list[int]) -> float:
    """CPU time of the ksoftirqd threads so far (schedstat: nanoseconds on the CPU), where softirq work
    goes when it cannot run at the end of the interrupt or system call that raised it."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/schedstat") as schedstat:
            total += int(schedstat.read().split()[0])
    return total / 1e9


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# -- server --------------------------------------------------------------------------------------------


def _serve_forever(name: str, listener: StreamSocket, handle: Callable[[StreamSocket], None]) -> None:
    """Accept and handle one connection at a time; the benchmark clients use one connection at a time."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError as exc:
            logger.warning("%s: accept failed: %s", name, exc)
            return
        try:
            conn.settimeout(IO_TIMEOUT)
            handle(conn)
        except OSError as exc:
            logger.warning("%s: connection failed: %s", name, exc)
        finally:
            with contextlib.suppress(OSError):
                conn.close()


def _discard(conn: StreamSocket) -> None:
    """RFC 863 discard with pytcp.services' read size; closing after EOF tells the sender all arrived."""
    buffer = bytearray(CHUNK)
    while conn.recv_into(buffer):
        pass


def _crr(conn: StreamSocket) -> None:
    """One request, one reply, then wait for the client's FIN: the client closes first (as netperf
    TCP_CRR), so TIME-WAIT stays on the client side and the server holds nothing between connections."""
    if conn.recv(1):
        conn.sendall(_REQUEST)
        while conn.recv(64):
            pass


def _source(conn: StreamSocket) -> None:
    """Send as many bytes as the 8-byte request asks for, then close (the client reads until EOF)."""
    request = b""
    while len(request) < _COUNT.size:
        chunk = conn.recv(_COUNT.size - len(request))
        if not chunk:
            return
        request += chunk
    (left,) = _COUNT.unpack(request)
    payload = memoryview(os.urandom(CHUNK))
    while left:
        size = min(CHUNK, left)
        conn.sendall(payload[:size])
        left -= size


def _rr(conn: StreamSocket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = bytearray(64)
    view = memoryview(buffer)
    while count := conn.recv_into(buffer):
        conn.sendall(view[:count])


class _Holder:
    """Accepts connections and keeps them open (idle) until released."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[StreamSocket] = []

    def run(self, listener: StreamSocket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError as exc:
                logger.warning("hold: accept failed: %s", exc)
                return
            with self._lock:
                self._held.append(conn)

    def count(self) -> int:
        with self._lock:
            return len(self._held)

    def release(self) -> int:
        with self._lock:
            held, self._held = self._held, []
        for conn in held:
            with contextlib.suppress(OSError):
                conn.close()
        return len(held)


def _run_server(args: argparse.Namespace) -> int:
    holder = _Holder()
    handlers: dict[str, Callable[[StreamSocket], None]] = {
        "discard": _discard,
        "crr": _crr,
        "rr": _rr,
        "source": _source,
    }
    with Backend(args) as backend:
        for index, name in enumerate(PORTS):
            listener = backend.socket()
            listener.settimeout(None)  # accept waits for the next client as long as the server lives
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("", args.port_base + index))
            listener.listen(BACKLOG)
            if name == "hold":
                target = partial(holder.run, listener)
            else:
                target = partial(_serve_forever, name, listener, handlers[name])
            # Daemon threads: accept on a kernel socket cannot be interrupted by close(), so the
            # process ends them by exiting when stdin closes.
            threading.Thread(target=target, name=f"bench-{name}", daemon=True).start()
        _emit({"ready": True, "pid": os.getpid(), "backend": backend.name})
        for line in sys.stdin:
            command = line.strip()
            reply: dict[str, Any]
            if command == "cpu":
                reply = {"cpu": time.process_time()}
            elif command == "stats":
                gc.collect()
                reply = {"cpu": time.process_time(), "rss": _rss()}
            elif command == "held":
                reply = {"held": holder.count()}
            elif command == "release":
                reply = {"released": holder.release()}
            else:
                reply = {"error": f"unknown command {command!r}"}
            try:
                backend.check()
            except OSError as exc:
                # Exit, so the harness starts a fresh server for the next run instead of a dead one.
                _emit({"error": str(exc)})
                return 1
            _emit(reply)
    return 0


# -- clients -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _measured() -> Iterator[dict[str, float]]:
    """Wall and process CPU seconds of the body, and the softirq seconds spent meanwhile: the /proc/stat
    softirq column (all CPUs) and the ksoftirqd threads' CPU time. Filled in when the body ends."""
    figures: dict[str, float] = {}
    pids = _ksoftirqd_pids()
    wall, cpu = time.perf_counter(), time.process_time()
    softirq, ksoftirqd = _softirq_seconds(), _ksoftirqd_seconds(pids)
    try:
        yield figures
    finally:
        figures["seconds"] = time.perf_counter() - wall
        figures["cpu"] = time.process_time() - cpu
        figures["softirq"] = _softirq_seconds() - softirq
        figures["ksoftirqd"] = _ksoftirqd_seconds(pids) - ksoftirqd


def _run_bulk(args: argparse.Namespace, backend: Backend) -> dict[str, Any]:
    payload = memoryview(os.urandom(CHUNK))
    target = _target(args.target)
    sock = backend.socket()
    sock.connect(target)
    moved = 0
    truncated = False
    deadline = time.monotonic() + args.timeout
    try:
        with _measured() as figures:
            if args.direction == "up":
                while moved < args.bytes:
                    if time.monotonic() > deadline:
                        truncated = True
                        break
                    size = min(CHUNK, args.bytes - moved)
                    sock.sendall(payload[:size])
                    moved += size
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(CHUNK):  # the discard server sends nothing and closes after our EOF
                    pass
            else:
                sock.sendall(_COUNT.pack(args.bytes))
                buffer = bytearray(CHUNK)
                while count := sock.recv_into(buffer):
                    moved += count
                    if time.monotonic() > deadline:
                        truncated = True
                        break
    finally:
        sock.close()
    return {"bytes": moved, "truncated": truncated, **figures}


def _run_crr(args: argparse.Namespace, backend: Backend) -> dict[str, Any]:
    target = _target(args.target)

    def transaction() -> None:
        sock = backend.socket()
        try:
            sock.connect(target)
            sock.sendall(_REQUEST)
            if not sock.recv(1):
                raise ConnectionError("server closed before replying")
        finally:
            sock.close()

    clock = time.perf_counter
    warm_end = clock() + WARMUP
    warmup = 0
    while clock() < warm_end:
        transaction()
        warmup += 1
    count = 0
    with _measured() as figures:
        end = clock() + args.duration
        while clock() < end:
            transaction()
            count += 1
    return {"count": count, "warmup_count": warmup, **figures}


def _run_rr(args: argparse.Namespace, backend: Backend) -> dict[str, Any]:
    import numpy as np

    sock = backend.socket()
    sock.connect(_target(args.target))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples = array("q")
    clock = time.perf_counter_ns
    try:
        warm_end = clock() + int(WARMUP * 1e9)
        warmup = 0
        while clock() < warm_end:
            sock.sendall(_REQUEST)
            if not sock.recv(1):
                raise ConnectionError("server closed the connection")
            warmup += 1
        count = 0
        with _measured() as figures:
            end = clock() + int(args.duration * 1e9)
            while (before := clock()) < end:
                sock.sendall(_REQUEST)
                if not sock.recv(1):
                    raise ConnectionError("server closed the connection")
                if count < MAX_SAMPLES:
                    samples.append(clock() - before)
                count += 1
        sock.shutdown(socket.SHUT_WR)
    finally:
        sock.close()
    latency = np.frombuffer(samples, dtype=np.int64) / 1e3
    p50, p99 = np.percentile(latency, [50, 99]) if len(latency) else (float("nan"), float("nan"))
    return {"count": count, "warmup_count": warmup, "p50_us": float(p50), "p99_us": float(p99), **figures}


def _run_hold(args: argparse.Namespace, backend: Backend) -> dict[str, Any]:
    target = _target(args.target)
    held: list[StreamSocket] = []
    try:
        with _measured() as figures:
            for _ in range(args.count):
                sock = backend.socket()
                held.append(sock)
                sock.connect(target)
        _emit({"held": len(held), **figures})
        sys.stdin.readline()  # the harness has measured; EOF (the harness gone) ends the hold as well
    finally:
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()
    return {"closed": len(held)}


_CLIENTS: dict[str, Callable[[argparse.Namespace, Backend], dict[str, Any]]] = {
    "bulk": _run_bulk,
    "crr": _run_crr,
    "rr": _run_rr,
    "hold": _run_hold,
}


def _run_client(args: argparse.Namespace) -> int:
    try:
        with Backend(args) as backend:
            result = _CLIENTS[args.program](args, backend)
    except OSError as exc:
        _emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    _emit(result)
    return 0


# -- command line --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench.peer", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", choices=("kernel", "stack"), required=True)
    common.add_argument("--tun", default="bench0", help="stack backend: TUN device name")
    common.add_argument("--stack-address", default="198.18.0.2")
    common.add_argument("--kernel-address", default="198.18.0.1")
    common.add_argument("--prefix-len", type=int, default=24)
    common.add_argument("--no-offload", action="store_true", help="stack backend: TUN without offloads")
    common.add_argument("--cpu", type=int, help="pin the whole process to this CPU")
    programs = parser.add_subparsers(dest="program", required=True)
    server = programs.add_parser("server", parents=[common])
    server.add_argument("--port-base", type=int, required=True)
    for name in _CLIENTS:
        client = programs.add_parser(name, parents=[common])
        client.add_argument("--target", required=True, metavar="HOST:PORT")
        if name == "bulk":
            client.add_argument("--bytes", type=int, required=True)
            client.add_argument("--timeout", type=float, required=True, help="stop after S seconds")
            client.add_argument(
                "--direction", choices=("up", "down"), default="up", help="send (up) or receive (down)"
            )
        elif name == "hold":
            client.add_argument("--count", type=int, required=True)
        else:
            client.add_argument("--duration", type=float, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s", stream=sys.stderr)
    _pin(args.cpu)
    if args.program == "server":
        return _run_server(args)
    return _run_client(args)


if __name__ == "__main__":
    raise SystemExit(main())
