"""Network namespaces for tests, the demo and benchmarks: a small API over ``ip netns`` and setns(2).

Every namespace this module creates is named ``pytcp-<prefix>-<pid>-<n>``, so a crashed run's leftovers
can be recognised and swept (``sweep_stale_namespaces``) without touching anyone else's namespaces.
``in_namespace`` moves only the calling thread, so a process can open a TUN device or a socket inside a
namespace and keep using its fd from anywhere: a device and a socket belong to the namespace they were
created in, whatever namespace the thread that later reads or writes them is in.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

__all__ = [
    "IP_TIMEOUT",
    "RUN_TIMEOUT",
    "IpCommandError",
    "NamespaceSwitch",
    "NetNamespace",
    "in_namespace",
    "require_privileges",
    "run_ip",
    "sweep_stale_namespaces",
    "veth_pair",
]

logger = logging.getLogger(__name__)

#: include/uapi/linux/sched.h; Python 3.11 has no os.setns, so setns(2) goes through libc.
CLONE_NEWNET = 0x40000000
#: Where ``ip netns add`` bind-mounts named namespaces.
NETNS_RUN_DIR = "/run/netns"
#: An ``ip`` command is one netlink round trip (milliseconds); 10 s absorbs a loaded 2-core CI machine
#: and still turns a wedged command into an error instead of a hung test run.
IP_TIMEOUT = 10.0
#: Default bound for a command run inside a namespace: the test helpers run short scripts.
RUN_TIMEOUT = 30.0
#: SIGTERM grace, then SIGKILL (which cannot be ignored, so the second wait of this length suffices).
KILL_GRACE = 2.0
#: Linux capability numbers (include/uapi/linux/capability.h).
_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21
#: Interface names are limited to IFNAMSIZ - 1 bytes.
IFNAME_MAX = 15

_NAME_PREFIX = "pytcp"
_PREFIX_RE = re.compile(r"[A-Za-z0-9_]+")
_NAME_RE = re.compile(rf"{_NAME_PREFIX}-[A-Za-z0-9_]+-(\d+)-\d+")
_counter = itertools.count()
_counter_lock = threading.Lock()
_libc = ctypes.CDLL(None, use_errno=True)


class IpCommandError(RuntimeError):
    """An ``ip`` command failed, timed out or could not be started; the message says which and why."""


def run_ip(*args: str, netns: str | None = None, timeout: float = IP_TIMEOUT) -> str:
    """Run ``ip [-n netns] ARGS`` and return its stdout; the one way this package calls ``ip``."""
    cmd = ["ip", *(("-n", netns) if netns else ()), *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise IpCommandError("the `ip` binary was not found: install iproute2") from None
    except subprocess.TimeoutExpired:
        raise IpCommandError(f"`{' '.join(cmd)}` did not finish within {timeout} s") from None
    if done.returncode != 0:
        raise IpCommandError(f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _effective_capabilities() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def require_privileges() -> None:
    """Raise PermissionError naming everything missing for namespaces and TUN devices."""
    missing = []
    caps = _effective_capabilities()
    if not caps >> _CAP_NET_ADMIN & 1:
        missing.append("CAP_NET_ADMIN (run as root)")
    if not caps >> _CAP_SYS_ADMIN & 1:
        missing.append("CAP_SYS_ADMIN for `ip netns add` and setns (run as root)")
    if not os.path.exists("/dev/net/tun"):
        missing.append("/dev/net/tun (load the tun module: modprobe tun)")
    if shutil.which("ip") is None:
        missing.append("the `ip` binary (install iproute2)")
    if missing:
        raise PermissionError("network namespaces unavailable; missing: " + "; ".join(missing))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def sweep_stale_namespaces() -> list[str]:
    """Delete our namespaces whose creating process is gone; return their names.

    A reused pid keeps a stale namespace alive until that process exits too: harmless, only late.
    """
    try:
        names = os.listdir(NETNS_RUN_DIR)
    except FileNotFoundError:
        return []
    swept = []
    for name in names:
        match = _NAME_RE.fullmatch(name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        try:
            run_ip("netns", "del", name)
        except IpCommandError as exc:
            logger.warning("could not sweep stale namespace %s: %s", name, exc)
            continue
        logger.info("swept stale namespace %s", name)
        swept.append(name)
    return swept


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns(CLONE_NEWNET): {os.strerror(errno)}")


class NamespaceSwitch:
    """Moves the CURRENT THREAD into network namespace ``ns`` for the body of each ``with``, then back to
    the namespace the thread was in when the switch was made. Both namespaces stay open (two fds until
    ``close``), so each entry costs two setns(2) calls and no path lookups: for code that creates
    sockets in another namespace at a high rate (the forwarder, once per flow). Use it only on the
    thread that made it.
    """

    def __init__(self, ns: NetNamespace | str) -> None:
        self.name = ns.name if isinstance(ns, NetNamespace) else ns
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._target = os.open(os.path.join(NETNS_RUN_DIR, self.name), os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            os.close(self._home)
            raise

    def __enter__(self) -> None:
        _setns(self._target)

    def __exit__(self, *exc: object) -> None:
        try:
            _setns(self._home)
        except OSError as error:
            # Cannot happen short of a kernel bug; continuing would leak the namespace into whatever
            # this thread runs next, so fail loudly.
            raise RuntimeError(f"could not return this thread from namespace {self.name}") from error

    def close(self) -> None:
        """Close both namespace fds. Idempotent."""
        for fd in (self._home, self._target):
            if fd >= 0:
                os.close(fd)
        self._home = self._target = -1


@contextmanager
def in_namespace(ns: NetNamespace | str) -> Iterator[None]:
    """Run the body with the CURRENT THREAD in network namespace ``ns``, then switch it back.

    Sockets and TUN devices created inside stay in ``ns`` and keep working after the switch back.
    Threads and subprocesses started inside inherit ``ns`` (clone(2) copies the creator's namespaces);
    threads that already exist are unaffected.
    """
    switch = NamespaceSwitch(ns)
    try:
        with switch:
            yield
    finally:
        switch.close()


class NetNamespace:
    """A named network namespace; ``close`` kills the processes it started and deletes it."""

    def __init__(self, name: str) -> None:
        """Wrap the existing namespace ``name`` (see ``create`` to make a new one)."""
        self.name = name
        self._processes: list[subprocess.Popen[Any]] = []
        self._closed = False

    @classmethod
    def create(cls, prefix: str = "ns") -> NetNamespace:
        """A fresh namespace ``pytcp-<prefix>-<pid>-<n>`` with ``lo`` up; stale ones are swept first."""
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"namespace prefix {prefix!r} must match [A-Za-z0-9_]+")
        sweep_stale_namespaces()
        with _counter_lock:
            n = next(_counter)
        name = f"{_NAME_PREFIX}-{prefix}-{os.getpid()}-{n}"
        run_ip("netns", "add", name)
        ns = cls(name)
        try:
            run_ip("link", "set", "lo", "up", netns=name)
        except BaseException:
            ns.close()
            raise
        return ns

    @property
    def path(self) -> str:
        """The bind mount that pins the namespace; open it for setns."""
        return os.path.join(NETNS_RUN_DIR, self.name)

    @property
    def closed(self) -> bool:
        return self._closed

    def _command(self, cmd: Sequence[str]) -> list[str]:
        if self._closed:
            raise ValueError(f"namespace {self.name} is closed")
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(
        self, cmd: Sequence[str], timeout: float = RUN_TIMEOUT, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the namespace and wait (killed after ``timeout`` s: TimeoutExpired)."""
        return subprocess.run(
            self._command(cmd), capture_output=True, text=True, timeout=timeout, check=check, input=input
        )

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` inside the namespace; ``close`` kills it if it is still running."""
        # `ip netns exec` execs the command in place, so the Popen's pid is the command's own pid.
        process = subprocess.Popen(self._command(cmd), **kwargs)
        self._processes.append(process)
        return process

    def close(self) -> None:
        """Kill the processes started by ``popen`` (by pid) and delete the namespace. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for process in self._processes:
            _stop(process)
        self._processes.clear()
        run_ip("netns", "del", self.name)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NetNamespace({self.name!r}{', closed' if self._closed else ''})"


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        process.send_signal(sig)
        try:
            process.wait(KILL_GRACE)
            return
        except subprocess.TimeoutExpired:
            continue
    logger.error("process %d survived SIGKILL for %.0f s", process.pid, KILL_GRACE)


def veth_pair(
    ns_a: NetNamespace | None,
    ns_b: NetNamespace | None,
    *,
    name_a: str = "veth-a",
    name_b: str = "veth-b",
    address_a: str | None = None,
    address_b: str | None = None,
    prefix_len: int = 24,
    mtu: int = 1500,
) -> tuple[str, str]:
    """Connect two namespaces (None: the calling thread's) by a veth pair, addressed and up.

    Addresses are optional (``prefix_len`` applies to both). Deleting either namespace deletes the
    pair; on failure the half-built pair is deleted here. Returns (name_a, name_b).
    """
    for name in (name_a, name_b):
        if not 0 < len(name) <= IFNAME_MAX:
            raise ValueError(f"interface name {name!r} must be 1..{IFNAME_MAX} characters")
    where_a = ("netns", ns_a.name) if ns_a else ()
    where_b = ("netns", ns_b.name) if ns_b else ()
    run_ip("link", "add", name_a, *where_a, "type", "veth", "peer", "name", name_b, *where_b)
    try:
        for ns, name, address in ((ns_a, name_a, address_a), (ns_b, name_b, address_b)):
            netns = ns.name if ns else None
            if address is not None:
                run_ip("addr", "add", f"{address}/{prefix_len}", "dev", name, netns=netns)
            run_ip("link", "set", "dev", name, "mtu", str(mtu), "up", netns=netns)
    except BaseException:
        try:
            run_ip("link", "del", name_a, netns=ns_a.name if ns_a else None)
        except IpCommandError as exc:
            logger.warning("could not delete half-built veth %s: %s", name_a, exc)
        raise
    return name_a, name_b
