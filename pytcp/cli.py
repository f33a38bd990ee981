"""The ``pytcp`` command line: one argparse subcommand per tool.

``sim`` (a simulated transfer), ``demo`` (a handshake-to-TIME-WAIT conversation with the kernel),
``serve`` (echo, discard and HTTP on a TUN device), ``config`` (the knobs), and ``connections`` /
``counters`` (a running ``serve``, through its control socket). Each subcommand registers itself with an
``_add_<name>(subparsers)`` function that sets its handler as the ``run`` default. Bad arguments exit 2
with one line on stderr; a missing privilege or another failure of the environment exits 1 with one
line; a handler returns the exit status. Logging is configured here and nowhere else.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import math
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .config import ConfigError, TCPConfig

if TYPE_CHECKING:
    from .runtime import StackRuntime

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``pytcp sim: error: ...`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a valid {kind.__name__}: {text!r}") from None
    if not 0 <= value < math.inf:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be finite and >= 0, got {text}")
    return value


def _count(text: str) -> int:
    return int(_number(text, int))


def _positive(text: str) -> float:
    value = _number(text, float)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


class _UsageError(Exception):
    """A bad argument only the handler can detect (a cross-field bound, an unwritable file): exit 2."""


class _Failure(Exception):
    """The environment refused (missing privileges, a device or socket in use, nothing to talk to): exit 1."""


#: Linux IFNAMSIZ - 1.
_IFNAME_MAX = 15
#: The smallest MTU whose MSS (MTU - 40) the engine accepts: TCPConfig.mss >= 88 (Linux TCP_MIN_MSS).
_MTU_MIN = 88 + 40
_MTU_MAX = 0xFFFF
#: Seconds `serve` gives its services and then the runtime to close connections on SIGINT/SIGTERM.
_STOP_TIMEOUT = 5.0
#: How often `serve` checks that its runtime is still alive while it waits for a signal.
_WATCH_INTERVAL = 1.0
_DEFAULT_SERVICES = {"echo": 7, "discard": 9, "http": 80}
_RUN_DIR = "/run/pytcp"
#: The demo's MSL: pytcp's TIME-WAIT lasts 2 * 0.5 = 1 s instead of the default 60 s, so it ends quickly.
_DEMO_MSL = 0.5


def _bounded_int(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a valid int: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {value}")
        return value

    return parse


_port = _bounded_int(1, 0xFFFF)


def _ipv4(text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {text!r}") from None


def _ifname(text: str) -> str:
    # Linux dev_valid_name: 1..15 bytes, no '/', ':' or whitespace, not "." or "..".
    if not 0 < len(text.encode()) <= _IFNAME_MAX or text in (".", "..") or any(c in "/: \t\n" for c in text):
        raise argparse.ArgumentTypeError(
            f"not a valid interface name: {text!r} (1..15 characters, no / : or spaces)"
        )
    return text


def _setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"expected KNOB=VALUE, got {text!r}")
    return name.strip(), value


def _reason(exc: BaseException) -> str:
    """An exception as one line without the "[Errno N]" prefix."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


def _load_config(path: str | None, settings: list[tuple[str, str]]) -> TCPConfig:
    """The TOML file's knobs (if any), then each --set on top; a bad one is a usage error."""
    try:
        config = TCPConfig.load(path) if path is not None else TCPConfig()
        if settings:
            values: dict[str, object] = {name: value for name, value, _ in config.describe()}
            values.update(settings)
            config = TCPConfig.from_mapping(values)
    except ConfigError as exc:
        raise _UsageError(str(exc)) from None
    except OSError as exc:
        raise _UsageError(f"--config: {exc.strerror or exc}: {path}") from None
    return config


def _add_sim(subparsers: argparse._SubParsersAction[_Parser]) -> None:
    p = subparsers.add_parser(
        "sim",
        help="transfer data both ways between two stacks over a simulated lossy link",
        description="Run the seeded transfer scenario (pytcp.scenario.run_transfer): both sides send "
        "--bytes of random data concurrently, shut down, read to EOF and close. Exit 0 when every byte "
        "arrived exactly once and in order and both ends closed cleanly, 1 otherwise.",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed of the link and the data (default 1)")
    p.add_argument(
        "--bytes",
        dest="nbytes",
        type=_count,
        default=1_000_000,
        metavar="N",
        help="bytes to send in each direction (default 1000000)",
    )
    # The link's own bounds (LinkConfig) are checked once, by LinkConfig; its ValueError is a usage error.
    p.add_argument("--loss", type=float, default=0.0, help="packet loss probability")
    p.add_argument("--dup", type=float, default=0.0, help="packet duplication probability")
    p.add_argument("--reorder", type=float, default=0.0, help="probability a packet is held back")
    p.add_argument("--corrupt", type=float, default=0.0, help="probability a bit of a packet flips")
    p.add_argument(
        "--latency",
        type=float,
        default=0.010,
        metavar="S",
        help="one-way delay in seconds (default 0.010)",
    )
    p.add_argument(
        "--bandwidth",
        type=float,
        default=None,
        metavar="B/s",
        help="link rate in bytes per second (default: unlimited)",
    )
    p.add_argument(
        "--queue",
        type=int,
        default=100,
        metavar="N",
        help="packets queued behind the transmitter before tail drop (default 100)",
    )
    p.add_argument(
        "--max-time",
        type=_positive,
        default=None,
        metavar="S",
        help="virtual seconds before the run counts as hung (default: derived from the "
        "transfer size, RTT and loss)",
    )
    p.add_argument("--pcap", metavar="FILE", help="write every packet the stacks send to a pcap file")
    p.add_argument(
        "--trace",
        action="store_true",
        help="print each state transition and each sent segment (to stderr with --json)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=_run_sim)


def _run_sim(args: argparse.Namespace) -> int:
    from .pcap import PcapWriter, open_pcap
    from .scenario import run_transfer
    from .sim import LinkConfig

    try:
        link = LinkConfig(
            latency=args.latency,
            bandwidth=args.bandwidth,
            queue_limit=args.queue,
            loss=args.loss,
            duplicate=args.dup,
            reorder=args.reorder,
            corrupt=args.corrupt,
        )
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    pcap: PcapWriter | None = None
    if args.pcap is not None:
        try:
            pcap = open_pcap(args.pcap)
        except OSError as exc:
            raise _UsageError(f"--pcap: {exc}") from None
    trace_stream = sys.stderr if args.json else sys.stdout

    def trace(line: str) -> None:
        print(line, file=trace_stream)

    started = time.perf_counter()
    try:
        result = run_transfer(
            args.seed,
            link,
            args.nbytes,
            max_time=args.max_time,
            pcap=pcap,
            trace=trace if args.trace else None,
        )
    finally:
        if pcap is not None:
            pcap.close()
    wall = time.perf_counter() - started
    if args.json:
        print(result.to_json())
    else:
        verdict = "OK" if result.ok else "FAILED"
        print(f"seed {result.seed}: {verdict} after {result.virtual_time:.3f} s virtual ({wall:.2f} s wall)")
        for name, d in result.directions.items():
            status = "sha256 match" if d["match"] else f"MISMATCH ({d['first_error'] or 'incomplete'})"
            print(f"  {name}: sent {d['sent']}, received {d['received']}, {status}")
        for name, s in result.link_stats.items():
            print(
                f"  link {name}: sent {s['sent']} delivered {s['delivered']} lost {s['lost']} "
                f"queue-dropped {s['queue_dropped']} duplicated {s['duplicated']} "
                f"reordered {s['reordered']} corrupted {s['corrupted']}"
            )
        print("  retransmissions: " + ", ".join(f"{k} {v}" for k, v in result.retransmissions.items()))
        print("  final states: " + ", ".join(f"{k} {v}" for k, v in result.final_states.items()))
        for failure in result.failures:
            print(f"  failure: {failure}")
    return 0 if result.ok else 1


def build_parser() -> _Parser:
    parser = _Parser(prog="pytcp", description="A user-space TCP/IP stack: tools and experiments.")
    parser.add_argument("--version", action="version", version=f"pytcp {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug) to stderr"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    _add_sim(subparsers)
    _add_demo(subparsers)
    _add_serve(subparsers)
    _add_config(subparsers)
    _add_control_client(subparsers, "connections", "list a running `pytcp serve`'s connections, like ss -tan")
    _add_control_client(subparsers, "counters", "show a running `pytcp serve`'s counters, like nstat")
    _add_forward(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(
        level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        return int(args.run(args))
    except _UsageError as exc:
        parser.exit(2, f"pytcp {args.command}: error: {exc}\n")
    except _Failure as exc:
        parser.exit(1, f"pytcp {args.command}: {exc}\n")
    except BrokenPipeError:
        # The reader went away (`pytcp config | head`): stop quietly, as the Python documentation advises
        # (stdout goes to /dev/null so the interpreter's final flush does not fail again).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


# -- demo ----------------------------------------------------------------------------------------------


def _add_demo(subparsers: argparse._SubParsersAction[_Parser]) -> None:
    p = subparsers.add_parser(
        "demo",
        help="draw one TCP conversation with the Linux kernel, from the handshake to TIME-WAIT",
        description="Create a private network namespace and TUN device, run a pytcp server on it and let "
        "a kernel client connect, exchange a line each way and close: once with the kernel closing first, "
        "once with pytcp closing first. Every segment is printed with its flags, sequence and "
        "acknowledgment numbers and window, next to the state each side enters. Needs root. Exit 0 when "
        "both exchanges went as drawn.",
    )
    p.add_argument(
        "--msl",
        type=_positive,
        default=_DEMO_MSL,
        metavar="S",
        help=f"maximum segment lifetime; pytcp's TIME-WAIT lasts 2*MSL (default {_DEMO_MSL})",
    )
    p.add_argument("--pcap", metavar="FILE", help="also write every packet to a pcap file")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .netns import IpCommandError, require_privileges

    try:
        TCPConfig(msl=args.msl)
    except ConfigError as exc:
        raise _UsageError(str(exc)) from None
    _check_output_file(args.pcap, "--pcap")
    try:
        require_privileges()
    except PermissionError as exc:
        raise _Failure(str(exc)) from None
    try:
        ok = run_demo(print, msl=args.msl, pcap=args.pcap)
    except (IpCommandError, OSError) as exc:
        raise _Failure(_reason(exc)) from None
    return 0 if ok else 1


def _check_output_file(path: str | None, option: str) -> None:
    if path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise _UsageError(f"{option}: no such directory: {os.path.dirname(path)}")


# -- serve ---------------------------------------------------------------------------------------------


def _add_serve(subparsers: argparse._SubParsersAction[_Parser]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve echo, discard and HTTP on a TUN device until SIGINT/SIGTERM",
        description="Create a TUN device in the current network namespace, give the kernel side "
        "--peer-address, and answer as --address with echo (RFC 862), discard (RFC 863) and a minimal "
        "HTTP/1.1 server (GET / and GET /bytes/N). Without any of --echo, --discard and --http all three "
        "run, on 7, 9 and 80. Prints one line when ready; SIGINT or SIGTERM closes every connection, "
        "removes the device and exits 0. `pytcp connections` and `pytcp counters` read a running server "
        "through --control.",
    )
    _add_device_options(
        p,
        address="the stack's address",
        prefix="prefix routed into the device (default 15: 198.18.0.0/15, RFC 2544's benchmarking range)",
        mtu="device MTU (default 1500)",
    )
    p.add_argument("--echo", type=_port, metavar="PORT", help="serve echo on PORT")
    p.add_argument("--discard", type=_port, metavar="PORT", help="serve discard on PORT")
    p.add_argument("--http", type=_port, metavar="PORT", help="serve HTTP on PORT")
    _add_knob_options(p, "connections/counters")
    p.set_defaults(run=_run_serve)


def _add_device_options(p: argparse.ArgumentParser, *, address: str, prefix: str, mtu: str) -> None:
    """The TUN device options ``serve`` and ``forward`` share (what ``_open_runtime`` reads)."""
    p.add_argument(
        "--tun", type=_ifname, default="pytcp0", metavar="NAME", help="device name (default pytcp0)"
    )
    p.add_argument("--address", type=_ipv4, default=_ipv4("198.18.0.2"), help=address)
    p.add_argument(
        "--peer-address", type=_ipv4, default=_ipv4("198.18.0.1"), help="the kernel's address on the device"
    )
    p.add_argument("--prefix-length", type=_bounded_int(1, 32), default=15, metavar="N", help=prefix)
    p.add_argument("--mtu", type=_bounded_int(_MTU_MIN, _MTU_MAX), default=1500, metavar="N", help=mtu)
    p.add_argument(
        "--no-offload", action="store_true", help="no virtio-net offloads: verify every checksum, no GSO"
    )
    p.add_argument("--pcap", metavar="FILE", help="write every packet on the device to a pcap file")


def _add_knob_options(p: argparse.ArgumentParser, commands: str) -> None:
    """--config, --set and --control, as ``serve`` and ``forward`` take them."""
    p.add_argument("--config", metavar="FILE", help="TOML file of TCP knobs (see `pytcp config`)")
    p.add_argument(
        "--set",
        dest="settings",
        type=_setting,
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="set one knob, after --config; repeatable",
    )
    p.add_argument(
        "--control",
        metavar="PATH",
        help=f"control socket for {commands} (default {_RUN_DIR}/NAME.sock)",
    )


def _check_addresses(args: argparse.Namespace) -> None:
    address, peer, prefix = args.address, args.peer_address, args.prefix_length
    if address == peer:
        raise _UsageError(f"--address and --peer-address are both {address}")
    network = ipaddress.IPv4Interface(f"{peer}/{prefix}").network
    if address not in network:
        raise _UsageError(f"--address {address} is not in {network}, the prefix of --peer-address")
    if prefix <= 30:  # /31 and /32 have no network or broadcast address (RFC 3021)
        for option, value in (("--address", address), ("--peer-address", peer)):
            if value in (network.network_address, network.broadcast_address):
                raise _UsageError(f"{option} {value} is the network or broadcast address of {network}")


def _run_serve(args: argparse.Namespace) -> int:
    from .services import ControlServer, Services

    _check_addresses(args)
    given = {name: getattr(args, name) for name in _DEFAULT_SERVICES}
    ports = {name: port for name, port in given.items() if port is not None} or dict(_DEFAULT_SERVICES)
    if len(set(ports.values())) < len(ports):
        raise _UsageError(f"services need distinct ports, got {ports}")
    config = _load_config(args.config, args.settings)
    _check_output_file(args.pcap, "--pcap")
    control = args.control or f"{_RUN_DIR}/{args.tun}.sock"

    runtime = _open_runtime(args, config)
    services = Services(runtime)
    server = ControlServer(runtime, control)
    with _stop_on_signal() as stop:
        try:
            runtime.start()
            try:
                server.start()
                services.start(**ports)
            except OSError as exc:
                raise _Failure(_reason(exc)) from None
            listening = ", ".join(f"{name} {port}" for name, port in ports.items())
            print(
                f"ready: tun {args.tun} {args.address} <-> {args.peer_address}, {listening}, "
                f"control {control}",
                flush=True,
            )
            _watch(runtime, stop)
        finally:
            services.stop(_STOP_TIMEOUT)
            server.stop()
            runtime.stop(_STOP_TIMEOUT)
    return 0


def _open_runtime(args: argparse.Namespace, config: TCPConfig, netns: str | None = None) -> StackRuntime:
    """The TUN device and stack that ``serve`` and ``forward`` run, from their shared options."""
    from .netns import IpCommandError
    from .runtime import StackRuntime

    try:
        return StackRuntime.open(
            args.tun,
            stack_address=str(args.address),
            kernel_address=str(args.peer_address),
            prefix_len=args.prefix_length,
            mtu=args.mtu,
            offload=not args.no_offload,
            config=config,
            netns=netns,
            pcap=args.pcap,
        )
    except (IpCommandError, OSError) as exc:
        raise _Failure(_reason(exc)) from None


@contextlib.contextmanager
def _stop_on_signal() -> Iterator[threading.Event]:
    """An Event that SIGINT and SIGTERM set while the block runs; the previous handlers come back after."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch(runtime: StackRuntime, stop: threading.Event) -> None:
    """Serve until signalled; a runtime that dies meanwhile is a failure."""
    while not stop.wait(_WATCH_INTERVAL):
        if not runtime.running:
            raise _Failure("the runtime stopped unexpectedly (see the log)")


# -- config --------------------------------------------------------------------------------------------


def _add_config(subparsers: argparse._SubParsersAction[_Parser]) -> None:
    p = subparsers.add_parser(
        "config",
        help="list every TCP knob with its default and documentation",
        description="List the knobs of pytcp.config.TCPConfig (for --config files and --set).",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list of {name, default, doc}")
    p.set_defaults(run=_run_config)


def _run_config(args: argparse.Namespace) -> int:
    knobs = TCPConfig().describe()
    if args.json:
        print(
            json.dumps([{"name": name, "default": value, "doc": doc} for name, value, doc in knobs], indent=2)
        )
        return 0
    for name, value, doc in knobs:
        shown = json.dumps(value) if isinstance(value, bool | str) else value
        print(f"{name} = {shown}")
        print(textwrap.fill(doc, width=100, initial_indent="    ", subsequent_indent="    "))
    return 0


# -- connections, counters -----------------------------------------------------------------------------


def _add_control_client(subparsers: argparse._SubParsersAction[_Parser], command: str, summary: str) -> None:
    p = subparsers.add_parser(
        command,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}, read through its control socket.",
    )
    p.add_argument(
        "--control",
        metavar="PATH",
        default=f"{_RUN_DIR}/pytcp0.sock",
        help=f"the server's control socket (default {_RUN_DIR}/pytcp0.sock, `serve --tun pytcp0`'s)",
    )
    p.add_argument("--json", action="store_true", help="print the server's JSON answer")
    if command == "counters":
        p.add_argument("--zeros", action="store_true", help="also list counters that are zero (nstat -z)")
    p.set_defaults(run=_run_control_client)


def _run_control_client(args: argparse.Namespace) -> int:
    from .services import control_request

    try:
        reply = control_request(args.control, args.command)
    except (OSError, ValueError) as exc:
        raise _Failure(f"no answer from {args.control}: {_reason(exc)} (is `pytcp serve` running?)") from None
    if args.json:
        print(json.dumps(reply, indent=2))
    elif args.command == "connections":
        _print_connections(reply)
    else:
        _print_counters(reply, args.zeros)
    return 0


#: Columns of `pytcp connections`, as ss -tan names them; other fields follow as key:value (ss -i).
_TABLE_COLUMNS = (("state", "State", 13), ("recv_q", "Recv-Q", 7), ("send_q", "Send-Q", 7))
_ENDPOINT_WIDTH = 22
_SECONDS_FIELDS = frozenset({"rtt", "rttvar", "rto"})


def _print_connections(rows: list[dict[str, Any]]) -> None:
    header = "".join(f"{title:<{width}}" for _, title, width in _TABLE_COLUMNS)
    print(f"{header}{'Local Address:Port':<{_ENDPOINT_WIDTH}}{'Peer Address:Port':<{_ENDPOINT_WIDTH}}")
    for row in rows:
        line = "".join(f"{row.get(key, '')!s:<{width}}" for key, _, width in _TABLE_COLUMNS)
        line += f"{row.get('local', '')!s:<{_ENDPOINT_WIDTH}}{row.get('remote', '')!s:<{_ENDPOINT_WIDTH}}"
        shown = {key for key, _, _ in _TABLE_COLUMNS} | {"local", "remote"}
        extra = [
            f"{key}:{value * 1000:.3f}ms" if key in _SECONDS_FIELDS else f"{key}:{value}"
            for key, value in row.items()
            if key not in shown
        ]
        print((line + " ".join(extra)).rstrip())


def _print_counters(snapshot: dict[str, dict[str, int]], zeros: bool) -> None:
    for section, counters in snapshot.items():
        print(f"#{section}")
        for name, value in counters.items():
            if value or zeros:
                print(f"{name:<32}{value}")


# -- forward, flows ------------------------------------------------------------------------------------


def _network(text: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an IPv4 prefix: {text!r} ({exc})") from None


def _add_forward(subparsers: argparse._SubParsersAction[_Parser]) -> None:
    p = subparsers.add_parser(
        "forward",
        help="relay every TCP flow routed into a TUN device over kernel sockets, directly or via SOCKS5",
        description="Create a TUN device (in --tun-netns if given, else here) whose stack answers SYNs for "
        "any address, and relay each flow over a kernel socket made in the current namespace: to its "
        "original destination (--upstream direct) or through a SOCKS5 proxy. The upstream is connected "
        "first: a refusal reaches the client as a RST, an unreachable destination or a timeout as ICMP "
        "unreachable. Route the traffic to forward into the device with --route (or ip route). Prints one "
        "line when ready; SIGINT or SIGTERM resets the flows, removes the device and exits 0. `pytcp flows` "
        "and `pytcp counters` read a running forwarder through --control.",
    )
    _add_device_options(
        p,
        address="the stack's own address",
        prefix="prefix of the device's own addresses (default 15)",
        mtu="device MTU; the announced MSS is MTU - 40 (default 1500)",
    )
    p.add_argument(
        "--upstream",
        default="direct",
        metavar="direct|socks5://[USER:PASS@]ADDR:PORT",
        help="where flows go (default direct)",
    )
    p.add_argument(
        "--route",
        dest="routes",
        type=_network,
        action="append",
        default=[],
        metavar="CIDR",
        help="route this prefix into the device (in --tun-netns); repeatable",
    )
    p.add_argument(
        "--tun-netns",
        metavar="NAME",
        help="create the device in this network namespace (ip netns): its applications are forwarded, "
        "while the upstream sockets stay here, out of the device's routes",
    )
    p.add_argument(
        "--interface", type=_ifname, metavar="IFACE", help="bind upstream sockets to IFACE (SO_BINDTODEVICE)"
    )
    p.add_argument(
        "--mark", type=_bounded_int(0, 0xFFFFFFFF), metavar="N", help="SO_MARK of upstream sockets"
    )
    p.add_argument(
        "--max-sessions",
        type=_bounded_int(1, 2**20),
        default=None,
        metavar="N",
        help="flows at once; SYNs beyond are dropped and retried by the clients (default 1024)",
    )
    p.add_argument(
        "--idle-timeout",
        type=_positive,
        default=None,
        metavar="S",
        help="reset flows idle this long (default 300)",
    )
    p.add_argument(
        "--half-close-timeout",
        type=_positive,
        default=None,
        metavar="S",
        help="reset half-closed flows idle this long (default 60)",
    )
    p.add_argument(
        "--connect-timeout",
        type=_positive,
        default=None,
        metavar="S",
        help="upstream connect (and SOCKS5) timeout (default 10)",
    )
    p.add_argument(
        "--no-icmp",
        action="store_true",
        help="refuse with a RST only (default: ICMP unreachable for unreachable destinations and timeouts)",
    )
    _add_knob_options(p, "flows/connections/counters")
    p.set_defaults(run=_run_forward)

    f = subparsers.add_parser(
        "flows",
        help="list a running `pytcp forward`'s flows",
        description="List a running `pytcp forward`'s flows (client, target, state, age, bytes each way), "
        "read through its control socket.",
    )
    f.add_argument(
        "--control",
        metavar="PATH",
        default=f"{_RUN_DIR}/pytcp0.sock",
        help=f"the forwarder's control socket (default {_RUN_DIR}/pytcp0.sock)",
    )
    f.add_argument("--json", action="store_true", help="print the forwarder's JSON answer")
    f.set_defaults(run=_run_flows)


def _run_forward(args: argparse.Namespace) -> int:
    from .forwarder import Forwarder, parse_upstream
    from .netns import NETNS_RUN_DIR, IpCommandError, run_ip
    from .services import ControlServer

    _check_addresses(args)
    try:
        proxy = parse_upstream(args.upstream)
    except ValueError as exc:
        raise _UsageError(f"--upstream: {exc}") from None
    if args.tun_netns is not None and not os.path.exists(os.path.join(NETNS_RUN_DIR, args.tun_netns)):
        raise _UsageError(f"--tun-netns: no network namespace {args.tun_netns!r} (see ip netns list)")
    config = _load_config(args.config, args.settings)
    _check_output_file(args.pcap, "--pcap")
    control = args.control or f"{_RUN_DIR}/{args.tun}.sock"

    runtime = _open_runtime(args, config, args.tun_netns)
    limits = {
        name: getattr(args, name)
        for name in ("max_sessions", "idle_timeout", "half_close_timeout", "connect_timeout")
        if getattr(args, name) is not None
    }
    forwarder = Forwarder(
        runtime, proxy, icmp=not args.no_icmp, interface=args.interface, mark=args.mark, **limits
    )
    server = ControlServer(
        runtime,
        control,
        {
            "flows": lambda: forwarder.flows(_STOP_TIMEOUT),
            "counters": lambda: {**runtime.counters(_STOP_TIMEOUT), "forwarder": forwarder.counters()},
        },
    )
    with _stop_on_signal() as stop:
        try:
            try:
                for route in args.routes:
                    run_ip("route", "add", str(route), "dev", args.tun, netns=args.tun_netns)
                runtime.start()
                forwarder.start()
                server.start()
            except (IpCommandError, OSError) as exc:
                raise _Failure(_reason(exc)) from None
            routes = ", ".join(map(str, args.routes)) or "none"
            print(
                f"ready: forward tun {args.tun} {args.address} <-> {args.peer_address}, "
                f"upstream {forwarder.upstream}, routes {routes}, control {control}",
                flush=True,
            )
            _watch(runtime, stop)
        finally:
            server.stop()
            try:
                forwarder.stop(_STOP_TIMEOUT)
            finally:
                runtime.stop(_STOP_TIMEOUT)
    return 0


def _run_flows(args: argparse.Namespace) -> int:
    from .services import control_request

    try:
        rows = control_request(args.control, "flows")
    except (OSError, ValueError) as exc:
        raise _Failure(
            f"no answer from {args.control}: {_reason(exc)} (is `pytcp forward` running?)"
        ) from None
    if not isinstance(rows, list):
        raise _Failure(f"{args.control} is not a forwarder's control socket: {rows}")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'State':<17}{'Client':<22}{'Target':<22}{'Upstream':<24}{'Age':>9}{'Idle':>9}{'Up':>14}{'Down':>14}"
    )
    for row in rows:
        print(
            f"{row['state']:<17}{row['local']:<22}{row['remote']:<22}{row['upstream']:<24}"
            f"{row['age']:>9.1f}{row['idle']:>9.1f}{row['bytes_up']:>14}{row['bytes_down']:>14}"
        )
    return 0
