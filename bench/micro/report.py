"""Turn a pytest-benchmark JSON file into the README's Cython/Python ratio table."""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

_PARAM = re.compile(r"\[(cython|python)\]$")


def _human_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def table(path: Path) -> str:
    data = json.loads(path.read_text())
    medians: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        match = _PARAM.search(bench["name"])
        if match:
            medians[bench["group"] or bench["name"]][match.group(1)] = bench["stats"]["median"]
    rows = ["| benchmark | cython (median) | python (median) | speed-up |", "|---|---|---|---|"]
    for group, impl in sorted(medians.items()):
        c, p = impl.get("cython"), impl.get("python")
        ratio = f"{p / c:.1f}x" if c and p else "n/a"
        compiled = _human_time(c) if c else "-"
        if group == "checksum-64k" and c:
            compiled += f" ({65536 / c / 1e9:.1f} GB/s)"
        rows.append(f"| {group} | {compiled} | {_human_time(p) if p else '-'} | {ratio} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.micro.report BENCHMARK_JSON", file=sys.stderr)
        return 2
    print(table(Path(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
