"""The ``pytcp`` command line: one argparse subcommand per tool (``sim`` for now).

Each subcommand registers itself with an ``_add_<name>(subparsers)`` function that sets its handler as
the ``run`` default, so demo, serve, forward and bench slot in beside ``sim``. Bad arguments exit 2 with
one line on stderr; a handler returns the exit status. Logging is configured here and nowhere else.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from . import __version__

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
