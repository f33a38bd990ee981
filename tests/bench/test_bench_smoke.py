"""Smoke test of the kernel comparison (``python -m bench --smoke``): every scenario runs once, small, in
namespaces the harness creates, and the JSON, markdown and PNG outputs carry a stack and a kernel figure
for every row. Figures are not judged here (performance is measured in bench/, never asserted by tests).

Root only: skipped without the privileges, failed in CI (CI=true), like the interop tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytcp.netns import NETNS_RUN_DIR, require_privileges

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: The smoke mode takes ~10 s on a 2-vCPU VM with either tcpcore implementation (its transfers are small);
#: the bound turns a hang into a failure with room to spare on a loaded CI machine.
TIMEOUT = 60.0
#: bench is not installed with the package: append the checkout to sys.path (after site-packages, so an
#: installed pytcp is still the one tested), as the harness does for its own peer processes.
_BOOT = f"import sys; sys.path.append({str(ROOT)!r}); from bench.__main__ import main; sys.exit(main())"
BENCH = [sys.executable, "-c", _BOOT]
SCENARIOS = {"bulk-in", "bulk-out", "crr", "rr", "forwarder", "memory"}
#: The harness's namespaces and those of the forwarder network it builds (pytcp.forwarder.topology).
_OURS = re.compile(r"pytcp-(?:bench_\w+|fwd[cus])-(\d+)-\d+")


@pytest.fixture
def privileged() -> None:
    try:
        require_privileges()
    except PermissionError as exc:
        if IN_CI:
            pytest.fail(f"the bench smoke test cannot run in CI: {exc}")
        pytest.skip(str(exc))
    for module in ("numpy", "matplotlib"):
        if IN_CI:
            __import__(module)  # the [bench] extra is part of the CI install: missing is a failure
        else:
            pytest.importorskip(module)


def _leftover_namespaces(pid: int) -> list[str]:
    names = os.listdir(NETNS_RUN_DIR) if os.path.isdir(NETNS_RUN_DIR) else []
    return [name for name in names if (m := _OURS.fullmatch(name)) and int(m.group(1)) == pid]


def test_smoke_run_writes_both_figures_for_every_row(privileged: None, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*BENCH, "--smoke", "--quiet", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, f"{out}\n{err}"
    assert not _leftover_namespaces(process.pid)

    document = json.loads((tmp_path / "kernel-smoke.json").read_text())
    assert document["mode"] == "smoke" and document["machine"]["cpus"] >= 1
    rows = document["rows"]
    assert {row["scenario"] for row in rows} == SCENARIOS
    for row in rows:
        assert not row["errors"], row
        for side in ("stack", "kernel"):
            assert row[side]["median"] > 0 and len(row[side]["samples"]) == 1, (side, row)
        assert row["ratio"] == pytest.approx(row["stack"]["median"] / row["kernel"]["median"])
        assert row["unit"] and row["placement"] in ("free", "one CPU", "across CPUs")
    assert any(row["meets"] is not None for row in rows)  # the targets are evaluated
    # The forwarder against kernel routing: bulk both ways with the floor and goal, CRR reported.
    forwarded = {row["variant"]: row for row in rows if row["scenario"] == "forwarder"}
    assert set(forwarded) == {"bulk up", "bulk down", "crr"}
    bulk = [forwarded["bulk up"], forwarded["bulk down"]]
    assert all(row["target"]["goal"] > row["target"]["value"] for row in bulk)
    assert forwarded["crr"]["target"] is None
    # Issue 5's floors with their goals: bulk 0.3 (goal 0.8), CRR and RR on one CPU 0.2 (goal 0.6).
    aims = {
        (row["scenario"], row["variant"]): (row["target"]["value"], row["target"]["goal"])
        for row in rows
        if row["target"] and row["scenario"] in ("bulk-in", "bulk-out", "crr", "rr")
    }
    assert aims == {
        ("bulk-in", "offload on"): (0.3, 0.8),
        ("bulk-out", "offload on"): (0.3, 0.8),
        ("crr", "one CPU"): (0.2, 0.6),
        ("rr", "one CPU"): (0.2, 0.6),
    }

    table = (tmp_path / "kernel-smoke.md").read_text()
    assert table.count("\n| ") == len(rows) + 1  # header and one line per row (after the separator)
    assert "| scenario | metric | stack | kernel | stack/kernel | target |" in table
    assert table.count("; goal ") == len(bulk) + len(aims)
    assert table.split("\n\n", 1)[1] in out  # printed too, without the file's command line
    png = (tmp_path / "kernel-smoke.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
