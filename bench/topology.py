"""The benchmark's private network: namespaces, links, peer processes, and what /proc says about them.

Four namespaces, created on entry and deleted on exit (also after a failure or Ctrl-C; the harness turns
SIGTERM into KeyboardInterrupt so this holds for ``kill`` too):

- ``kc`` and ``ks``, joined by a veth pair (198.18.1.1 <-> 198.18.1.2): the kernel reference, a kernel
  client in ``kc`` talking to a kernel server in ``ks``;
- ``ss``: the stack servers' TUN devices (SERVER_TUNS, MEMORY_TUN: kernel side .1, stack .2 of their own
  /24) and the kernel clients that drive them;
- ``sc``: a kernel server (the receiver for bulk transfers out of the stack) and the TUN device of each
  short-lived stack client (CLIENT_TUN);
- for the forwarder scenario, on first use: pytcp.forwarder.topology()'s client, upstream and server
  namespaces, with the forwarder itself running in this process (its runtime's loop thread) as in the
  tests. A kernel client in its client namespace reaches one kernel server agent in its server namespace
  either through the forwarder (TUN, pytcp, a kernel socket in the upstream namespace) or routed by the
  kernel across the same namespaces (veth pairs, IP forwarding in the upstream namespace).

Every address comes from 198.18.0.0/15 (RFC 2544's benchmarking range). Peer processes (bench.peer) run
inside a namespace through ``NetNamespace.popen``, which kills them by PID when the namespace closes.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import platform
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from pytcp.forwarder import Topology as ForwarderTopology
from pytcp.forwarder import topology as forwarder_topology
from pytcp.netns import NetNamespace, require_privileges, veth_pair

from .peer import PORTS

__all__ = ["BenchError", "Link", "PeerProcess", "Topology", "Tun", "irq_time_accounting", "slab_bytes"]

logger = logging.getLogger(__name__)

#: The checkout that holds this package: appended (not prepended) to the peers' sys.path, so an installed
#: pytcp wins over the checkout's sources (CI tests the wheel) while ``bench`` comes from the checkout.
ROOT = Path(__file__).resolve().parent.parent
_BOOT = f"import sys; sys.path.append({str(ROOT)!r}); from bench.peer import main; sys.exit(main())"
#: A peer (Python start-up, imports, a TUN device) is ready in well under a second; 20 s covers a loaded
#: 2-core CI machine.
STARTUP_TIMEOUT = 20.0
#: A command to a running server agent is answered within milliseconds (``stats`` runs a GC).
REQUEST_TIMEOUT = 10.0
#: After stdin closes, a server stops its runtime (at most peer.STOP_TIMEOUT = 5 s) and exits.
EXIT_TIMEOUT = 8.0
#: Lines of a failed peer's stderr quoted in the error.
STDERR_TAIL = 15
#: Port of the first service (discard) of every server agent; the others follow (bench.peer.PORTS).
PORT_BASE = 5001
#: Port base of the memory scenario's fresh servers, apart from the long-lived servers' ports, which
#: live in the same namespaces.
MEMORY_PORT_BASE = 6001
#: /24 prefixes inside 198.18.0.0/15.
PREFIX_LEN = 24
#: Ephemeral ports of the client namespaces: the widest Linux allows, with TIME-WAIT reuse (below), so
#: a kernel CRR client at ~10k connections/s never runs out of ports during a run.
PORT_RANGE = "1024 65535"
#: Offloads switched off on both veth ends for the kernel's "offload off" reference: no segmentation
#: (TSO/GSO/GRO) and checksums computed in software, as the TUN device without IFF_VNET_HDR.
VETH_OFFLOADS = ("tso", "gso", "gro", "tx", "rx")


class BenchError(RuntimeError):
    """A peer failed, timed out or answered with an error; the message carries its stderr tail."""


@dataclass(frozen=True, slots=True)
class Link:
    """Where a server listens, from the client's namespace."""

    client_ns: NetNamespace
    address: str
    port_base: int = PORT_BASE

    def target(self, service: str) -> str:
        return f"{self.address}:{self.port_base + PORTS.index(service)}"


def peer_command(*args: str) -> list[str]:
    return [sys.executable, "-c", _BOOT, *args]


@dataclass(frozen=True, slots=True)
class Tun:
    """A stack's TUN device and its 198.18.<subnet>.0/24: the kernel side is .1, the stack .2."""

    name: str
    subnet: int

    @property
    def kernel_address(self) -> str:
        return f"198.18.{self.subnet}.1"

    @property
    def stack_address(self) -> str:
        return f"198.18.{self.subnet}.2"

    def peer_args(self, offload: bool) -> list[str]:
        """bench.peer options for a stack on this device."""
        args = ["--backend", "stack", "--tun", self.name, "--prefix-len", str(PREFIX_LEN)]
        args += ["--kernel-address", self.kernel_address, "--stack-address", self.stack_address]
        return args if offload else [*args, "--no-offload"]


#: The long-lived stack servers (in ss), by offload setting; the short-lived stack clients (in sc); the
#: memory scenario's fresh stack server (in ss). Subnet 1 is the veth pair's.
SERVER_TUNS = {True: Tun("bs-on", 0), False: Tun("bs-off", 3)}
CLIENT_TUN = Tun("bc", 2)
MEMORY_TUN = Tun("bs-mem", 4)
KERNEL_CLIENT_ADDRESS = "198.18.1.1"
KERNEL_SERVER_ADDRESS = "198.18.1.2"


class PeerProcess:
    """A bench.peer program in a namespace, spoken to in JSON lines with a deadline on every read."""

    def __init__(self, ns: NetNamespace, args: list[str], log_dir: Path, label: str) -> None:
        self.label = label
        self._stderr_path = log_dir / f"{label}-{time.monotonic_ns()}.log"
        self._stderr: IO[bytes] = open(self._stderr_path, "wb")  # noqa: SIM115  # closed in close()
        self.process = ns.popen(
            peer_command(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def read(self, timeout: float) -> dict[str, Any]:
        """The next JSON line; BenchError on timeout, exit, or an ``error`` record."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.error(f"no answer within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.process.wait(EXIT_TIMEOUT)
                    raise self.error(f"exited with status {self.process.returncode}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        record: dict[str, Any] = json.loads(line)
        if "error" in record:
            raise self.error(record["error"])
        return record

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(line.encode() + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise self.error("gone (stdin closed)") from None

    def request(self, command: str, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
        self.send(command)
        return self.read(timeout)

    def error(self, reason: str) -> BenchError:
        self._stderr.flush()
        tail = self._stderr_path.read_text(errors="replace").splitlines()[-STDERR_TAIL:]
        detail = "\n    ".join(tail)
        return BenchError(f"{self.label} (pid {self.pid}): {reason}" + (f"\n    {detail}" if tail else ""))

    def pin(self, cpus: set[int]) -> None:
        """Move every thread of the process to ``cpus`` (new threads inherit their creator's set)."""
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                os.sched_setaffinity(int(tid), cpus)

    def close(self) -> None:
        """EOF on stdin (the peer's signal to stop), then wait; kill by PID if it does not exit."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.warning("%s (pid %d) did not exit; killing it", self.label, self.pid)
            self.process.kill()
            self.process.wait(EXIT_TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Topology:
    """The namespaces, links and long-lived server agents of one benchmark run."""

    def __init__(self) -> None:
        self._namespaces: list[NetNamespace] = []
        self._agents: dict[str, PeerProcess] = {}
        self._log_dir = Path(tempfile.mkdtemp(prefix="pytcp-bench-"))
        self._veth_offload = True
        #: Holds the forwarder's network once built (see ``forwarder``); closed before our namespaces.
        self._forwarder_exit = contextlib.ExitStack()
        self._forwarder: ForwarderTopology | None = None
        self.notes: list[str] = []
        self.irq_time_accounting = irq_time_accounting()
        if self.irq_time_accounting is None:
            self.notes.append("kernel config unreadable: assumed no CONFIG_IRQ_TIME_ACCOUNTING")

    def __enter__(self) -> Self:
        require_privileges()
        try:
            self.kc, self.ks, self.ss, self.sc = (self._namespace(p) for p in ("kc", "ks", "ss", "sc"))
            veth_pair(
                self.kc,
                self.ks,
                name_a="bk-c",
                name_b="bk-s",
                address_a=KERNEL_CLIENT_ADDRESS,
                address_b=KERNEL_SERVER_ADDRESS,
                prefix_len=PREFIX_LEN,
            )
            for ns in (self.kc, self.ss, self.sc):
                _widen_ports(ns)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _namespace(self, prefix: str) -> NetNamespace:
        ns = NetNamespace.create(f"bench_{prefix}")
        self._namespaces.append(ns)
        return ns

    def close(self) -> None:
        for agent in self._agents.values():
            try:
                agent.close()
            except Exception as exc:  # keep going: the namespaces must go whatever happened
                logger.warning("closing %s: %s", agent.label, exc)
        self._agents.clear()
        try:
            self._forwarder_exit.close()  # stops the forwarder and deletes its namespaces
        except Exception as exc:
            logger.error("could not tear down the forwarder's network: %s", exc)
        self._forwarder = None
        for ns in reversed(self._namespaces):
            try:
                ns.close()
            except Exception as exc:
                logger.error("could not delete namespace %s: %s", ns.name, exc)
        self._namespaces.clear()
        shutil.rmtree(self._log_dir, ignore_errors=True)

    # -- peers ---------------------------------------------------------------------------------------

    def start(self, ns: NetNamespace, args: list[str], label: str) -> PeerProcess:
        """A peer program; the caller closes it (the namespace kills it otherwise)."""
        return PeerProcess(ns, args, self._log_dir, label)

    def start_server(
        self, ns: NetNamespace, backend_args: list[str], label: str, port_base: int = PORT_BASE
    ) -> PeerProcess:
        """A server agent, ready; the caller closes it (``agent`` keeps long-lived ones)."""
        agent = self.start(ns, ["server", *backend_args, "--port-base", str(port_base)], label)
        try:
            agent.read(STARTUP_TIMEOUT)
        except BaseException:
            agent.close()
            raise
        return agent

    def agent(self, kind: str) -> PeerProcess:
        """A long-lived server, started on first use and restarted if it died: ``kernel`` (in ks),
        ``sink`` (kernel, in sc), ``stack`` and ``stack-nooffload`` (in ss), ``forward`` (kernel, in the
        forwarder network's server namespace)."""
        agent = self._agents.get(kind)
        if agent is not None and agent.process.poll() is None:
            return agent
        if agent is not None:
            agent.close()
            self.notes.append(f"server {kind} died (status {agent.process.returncode}) and was restarted")
        if kind == "kernel":
            agent = self.start_server(self.ks, ["--backend", "kernel"], kind)
        elif kind == "sink":
            agent = self.start_server(self.sc, ["--backend", "kernel"], kind)
        elif kind == "forward":
            agent = self.start_server(self.forwarder().server, ["--backend", "kernel"], kind)
        elif kind in ("stack", "stack-nooffload"):
            offload = kind == "stack"
            agent = self.start_server(self.ss, SERVER_TUNS[offload].peer_args(offload), kind)
        else:
            raise ValueError(f"unknown agent {kind!r}")
        self._agents[kind] = agent
        return agent

    def stack_link(self, offload: bool) -> Link:
        """Kernel clients in ss to the stack server agent of that offload setting."""
        return Link(self.ss, SERVER_TUNS[offload].stack_address)

    def kernel_link(self) -> Link:
        """The kernel client namespace to the kernel server agent."""
        return Link(self.kc, KERNEL_SERVER_ADDRESS)

    def stack_client(self, offload: bool) -> tuple[list[str], Link]:
        """bench.peer options for a stack client in sc, and its way to the ``sink`` agent there."""
        return CLIENT_TUN.peer_args(offload), Link(self.sc, CLIENT_TUN.kernel_address)

    def forwarder(self) -> ForwarderTopology:
        """The forwarder's network and its running forwarder (default options, offloads on, MTU 1500),
        built on first use and kept for the rest of the run."""
        if self._forwarder is None:
            built = self._forwarder_exit.enter_context(forwarder_topology())
            # The client's connections, and the forwarder's upstream ones, at CRR rates.
            for ns in (built.client, built.upstream):
                _widen_ports(ns)
            self._forwarder = built
        return self._forwarder

    def forward_link(self, through_forwarder: bool) -> Link:
        """From the forwarder network's client namespace to the ``forward`` agent: through the forwarder
        (its forwarded address) or routed by the kernel (its routed address)."""
        built = self.forwarder()
        address = built.forwarded_address if through_forwarder else built.routed_address
        assert address is not None  # built with the kernel path
        return Link(built.client, address)

    def memory_server(self, stack: bool) -> tuple[PeerProcess, Link]:
        """A fresh server (its RSS growth is the measurement) and the way to it; the caller closes it."""
        if stack:
            server = self.start_server(self.ss, MEMORY_TUN.peer_args(True), "stack-memory", MEMORY_PORT_BASE)
            return server, Link(self.ss, MEMORY_TUN.stack_address, MEMORY_PORT_BASE)
        server = self.start_server(self.ks, ["--backend", "kernel"], "kernel-memory", MEMORY_PORT_BASE)
        return server, Link(self.kc, KERNEL_SERVER_ADDRESS, MEMORY_PORT_BASE)

    def run_client(self, ns: NetNamespace, args: list[str], label: str, timeout: float) -> dict[str, Any]:
        """Run a client program to completion and return its JSON result (BenchError otherwise)."""
        with self.start(ns, args, label) as client:
            assert client.process.stdin is not None
            client.process.stdin.close()
            return client.read(timeout)

    # -- the kernel reference's offloads ---------------------------------------------------------------

    def set_veth_offload(self, on: bool) -> bool:
        """Switch VETH_OFFLOADS on both veth ends; False (and a note) if ethtool is missing."""
        if on == self._veth_offload:
            return True
        if shutil.which("ethtool") is None:
            note = "ethtool missing: the kernel's offload-off reference kept its veth offloads on"
            if note not in self.notes:
                self.notes.append(note)
            return False
        value = "on" if on else "off"
        for ns, dev in ((self.kc, "bk-c"), (self.ks, "bk-s")):
            settings = [item for name in VETH_OFFLOADS for item in (name, value)]
            ns.run(["ethtool", "-K", dev, *settings])
        self._veth_offload = on
        return True


def _widen_ports(ns: NetNamespace) -> None:
    # Per-namespace sysctls (net.ipv4.*), so nothing outside our namespaces changes.
    ns.run(["sysctl", "-qw", f"net.ipv4.ip_local_port_range={PORT_RANGE}"])
    ns.run(["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])


def slab_bytes() -> int:
    """Bytes in active slab objects, all caches (/proc/slabinfo: active_objs x objsize; root only)."""
    total = 0
    with open("/proc/slabinfo") as slabinfo:
        for line in slabinfo:
            if line.startswith(("slabinfo", "#")):
                continue
            fields = line.split()
            total += int(fields[1]) * int(fields[3])
    return total


def irq_time_accounting() -> bool | None:
    """Whether the kernel has CONFIG_IRQ_TIME_ACCOUNTING, None if its configuration cannot be read.

    Without it, softirq work is charged to whichever task was on the CPU (a process's CPU time includes
    the packet processing that ran at the end of its own system calls, and ksoftirqd's includes the rest);
    with it, softirq time is charged to no task and only the /proc/stat softirq column has it.
    """
    for path in ("/proc/config.gz", f"/boot/config-{platform.release()}"):
        try:
            with gzip.open(path, "rt") if path.endswith(".gz") else open(path) as config:
                return any(line.strip() == "CONFIG_IRQ_TIME_ACCOUNTING=y" for line in config)
        except OSError:
            continue
    return None
