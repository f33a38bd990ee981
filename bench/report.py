"""Statistics and output of a kernel comparison: the JSON document, the markdown table, the PNG chart.

Per row (one metric of one variant): the median of each side's repeats, their spread, and the ratio
stack / kernel in the metric's own direction (a throughput ratio of 0.3 is 30% of the kernel's; a
CPU-per-GB ratio of 3 is three times the kernel's CPU). The ratio is the median of the repeats' own
ratios: a repeat runs both sides back to back, so each pair saw the same machine, while the host's
speed drifts between repeats (a kernel RR figure of 60 k/s in one repeat and 110 k/s two later has
been seen), which a ratio of the two medians would mix. The chart shows every row as the
stack's performance relative to the kernel (ratio, inverted for lower-is-better metrics), so 1 is parity
and left of it is worse, whatever the metric.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from .scenarios import Metric, VariantResult

__all__ = ["build_document", "machine", "markdown", "paired_ratio", "plot", "write_outputs"]

#: Significant digits shown in the table.
DIGITS = 3
#: Characters per line of the chart's title: about what a 1100-pixel-wide figure holds at 9 points.
TITLE_WIDTH = 120


def _summary(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=float)
    median = float(np.median(array))
    low, high = float(array.min()), float(array.max())
    return {
        "median": median,
        "min": low,
        "max": high,
        # Half the range relative to the median: with 3-5 repeats the range is the honest spread.
        "spread_pct": (high - low) / 2 / median * 100 if median else 0.0,
        "samples": [float(v) for v in array],
    }


def paired_ratio(result: VariantResult, key: str) -> float | None:
    """The median over repeats of stack / kernel, pairing the two sides of each repeat (a repeat whose
    other side failed has no pair and counts for nothing)."""
    kernel = {run["repeat"]: run[key] for run in result.runs["kernel"]}
    ratios = [run[key] / kernel[run["repeat"]] for run in result.runs["stack"] if kernel.get(run["repeat"])]
    return float(np.median(ratios)) if ratios else None


def _row(result: VariantResult, metric: Metric) -> dict[str, Any]:
    variant = result.variant
    stack = _summary([run[metric.key] for run in result.runs["stack"]])
    kernel = _summary([run[metric.key] for run in result.runs["kernel"]])
    ratio = paired_ratio(result, metric.key)
    target = metric.target
    meets = target.met(stack["median"], ratio) if target and stack and ratio is not None else None
    return {
        "scenario": variant.scenario,
        "variant": variant.label,
        "placement": variant.placement,
        "offload": variant.offload,
        "metric": metric.name,
        "key": metric.key,
        "unit": metric.unit,
        "better": metric.better,
        "stack": stack,
        "kernel": kernel,
        "ratio": ratio,
        "target": {"kind": target.kind, "value": target.value, "goal": target.goal} if target else None,
        "meets": meets,
        "errors": result.errors,
    }


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU model and count, kernel, Python, the tcpcore implementation and
    the form of the engine's modules (the peers import them as this process does)."""
    import pytcp.stack
    import tcpcore

    model = "unknown CPU"
    hypervisor = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        lscpu = ""
    for line in lscpu.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            model = value.strip()
        elif key.strip() == "Hypervisor vendor":
            hypervisor = value.strip()
    cpus = os.cpu_count() or 0
    where = f" ({hypervisor} VM)" if hypervisor else ""
    engine = "source" if str(pytcp.stack.__file__).endswith(".py") else "compiled"
    return {
        "cpu": model,
        "cpus": cpus,
        "hypervisor": hypervisor,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tcpcore": tcpcore.IMPLEMENTATION,
        "engine": engine,
        "line": f"{cpus} vCPU {model}{where}, Linux {platform.release()}, "
        f"Python {platform.python_version()}, tcpcore {tcpcore.IMPLEMENTATION}, engine {engine}",
    }


def build_document(results: list[VariantResult], **meta: Any) -> dict[str, Any]:
    rows = [_row(result, metric) for result in results for metric in result.variant.metrics]
    runs = [
        {"scenario": r.variant.scenario, "variant": r.variant.label, "side": side, **run}
        for r in results
        for side, side_runs in r.runs.items()
        for run in side_runs
    ]
    return {**meta, "rows": rows, "runs": runs}


def _number(value: float) -> str:
    """Three significant digits, or a whole number from 100 up (37,214 rather than 3.72e+04)."""
    return f"{value:,.0f}" if abs(value) >= 10 ** (DIGITS - 1) else f"{value:.{DIGITS}g}"


def _figure(summary: dict[str, Any] | None, unit: str) -> str:
    if summary is None:
        return "failed"
    median = summary["median"]
    text = f"{_number(median / 1024)} KiB" if unit == "bytes" else _number(median)
    return f"{text} ±{summary['spread_pct']:.0f}%" if len(summary["samples"]) > 1 else text


def _target_text(row: dict[str, Any]) -> str:
    target = row["target"]
    if target is None:
        return ""
    verdict = "n/a" if row["meets"] is None else ("met" if row["meets"] else "**missed**")
    if target["kind"] == "ratio_min":
        text = f">= {target['value']:g}x: {verdict}"
        goal = target.get("goal")
        if goal is not None and row["ratio"] is not None:
            text += f"; goal {goal:g}x: {'met' if row['ratio'] >= goal else 'not yet'}"
        return text
    return f"<= {target['value'] / 1024:g} KiB: {verdict}"


def markdown(document: dict[str, Any]) -> str:
    lines = [
        "| scenario | metric | stack | kernel | stack/kernel | target |",
        "|---|---|---|---|---|---|",
    ]
    for row in document["rows"]:
        unit = "" if row["unit"] == "bytes" else f" ({row['unit']})"
        ratio = _number(row["ratio"]) if row["ratio"] is not None else "-"
        target = _target_text(row)
        if row["errors"]:
            target += f" ({len(row['errors'])} failed runs)"
        stack, kernel = _figure(row["stack"], row["unit"]), _figure(row["kernel"], row["unit"])
        lines.append(
            f"| {row['scenario']}, {row['variant']} | {row['metric']}{unit} | {stack} | {kernel} | {ratio}"
            f" | {target.strip()} |"
        )
    return "\n".join(lines) + "\n"


def _relative(row: dict[str, Any]) -> float | None:
    ratio = row["ratio"]
    if ratio is None or ratio <= 0:
        return None
    return float(ratio) if row["better"] == "higher" else 1 / ratio


def _target_relative(row: dict[str, Any]) -> float | None:
    target = row["target"]
    if target is None:
        return None
    if target["kind"] == "ratio_min":
        return float(target["value"])
    kernel = row["kernel"]
    return kernel["median"] / target["value"] if kernel else None


def plot(document: dict[str, Any], path: Path) -> None:
    """Horizontal bars of the stack's performance relative to the kernel, log scale, targets marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = document["rows"]
    labels = [f"{r['scenario']}, {r['variant']}: {r['metric']}" for r in rows]
    values = [_relative(r) for r in rows]
    colors = ["#9e9e9e" if r["meets"] is None else ("#2e7d32" if r["meets"] else "#c62828") for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.38 * len(rows) + 1.6))
    positions = np.arange(len(rows))[::-1]
    shown = [v if v is not None else math.nan for v in values]
    ax.barh(positions, shown, color=colors, height=0.7)
    for y, row, value in zip(positions, rows, values, strict=True):
        goal = _target_relative(row)
        if goal:
            ax.plot([goal, goal], [y - 0.4, y + 0.4], color="black", linewidth=2)
        aim = row["target"].get("goal") if row["target"] else None
        if aim:
            ax.plot([aim, aim], [y - 0.4, y + 0.4], color="black", linewidth=1, linestyle=":")
        text = "failed" if value is None else f"{value:.2g}x"
        # Right of the bar and of its target tick, so neither hides the figure.
        ax.text(
            max(value or 0.0, goal or 0.0, aim or 0.0) * 1.05 or 1e-3, y, f" {text}", va="center", fontsize=8
        )
    ax.axvline(1.0, color="black", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    finite = [v for v in values if v]
    ax.set_xlim(min([*finite, 0.01]) / 2, max([*finite, 1.0]) * 3)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.set_xlabel("stack relative to kernel (1 = parity; latency, CPU and memory inverted: kernel/stack)")
    # Centred on the figure, not the axes (the row labels take its left third), and wrapped: a long
    # machine line would otherwise run off the right edge.
    fig.suptitle(
        f"pytcp vs Linux, {document['mode']} mode (ticks: targets, dotted: goals; green met, red missed)\n"
        + textwrap.fill(document["machine"]["line"], TITLE_WIDTH),
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(document: dict[str, Any], out: Path, stem: str) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md", "png": out / f"{stem}.png"}
    paths["json"].write_text(json.dumps(document, indent=2) + "\n")
    header = f"`{document['command']}` on {document['machine']['line']}, {document['started']}\n\n"
    paths["markdown"].write_text(header + markdown(document))
    plot(document, paths["png"])
    return paths
