"""``python -m bench``: pytcp against the Linux kernel, side by side, in namespaces it creates.

Run from a checkout as root. Writes ``kernel-<mode>.json``, ``.md`` and ``.png`` to ``--out`` and prints
the markdown table. Exit status: 0 when every run produced its figures, 1 when some failed (they are in
the report), 2 on bad arguments, 130 when interrupted (the namespaces are removed in every case).

Not a ``pytcp bench`` subcommand: bench/ is not part of the installed package (only tcpcore and pytcp
are), so the CLI of an installed wheel could not import it.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from pytcp.netns import IpCommandError

from . import report, scenarios
from .topology import Topology

logger = logging.getLogger("bench")

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark pytcp against the Linux kernel (bulk in/out, CRR, RR, the forwarder against "
        "kernel routing, memory per connection), each scenario against both in the same run. Needs root.",
    )
    mode = parser.add_mutually_exclusive_group()
    for flag, summary in (
        ("--quick", "about a minute (the default)"),
        ("--full", "more repeats and longer runs, a few minutes"),
        ("--smoke", "every scenario once, tiny (the CI smoke test)"),
    ):
        mode.add_argument(flag, dest="mode", action="store_const", const=flag[2:], help=summary)
    parser.set_defaults(mode="quick")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory ({DEFAULT_OUT})")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=scenarios.SCENARIOS,
        default=list(scenarios.SCENARIOS),
        metavar="NAME",
        help=f"scenarios to run, of: {', '.join(scenarios.SCENARIOS)} (default: all)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through Topology.__exit__, which deletes the namespaces


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    # Progress from this package only; libraries (matplotlib) stay at WARNING.
    logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    plan = scenarios.PLANS[args.mode]
    names = list(dict.fromkeys(args.scenarios))
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    started = datetime.now(UTC)
    clock = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with Topology() as topo:
            results = scenarios.run(topo, plan, names)
            notes = topo.notes
    except KeyboardInterrupt:
        print("interrupted; namespaces removed", file=sys.stderr)
        return 130
    except (PermissionError, IpCommandError) as exc:
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    document = report.build_document(
        results,
        command=command,
        mode=plan.name,
        started=started.isoformat(timespec="seconds"),
        seconds=round(time.monotonic() - clock, 1),
        machine=report.machine(),
        plan={key: getattr(plan, key) for key in plan.__dataclass_fields__},
        notes=notes,
    )
    paths = report.write_outputs(document, args.out, f"kernel-{plan.name}")
    print(report.markdown(document), end="")
    for note in notes:
        print(f"note: {note}")
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    return 1 if any(result.errors for result in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
