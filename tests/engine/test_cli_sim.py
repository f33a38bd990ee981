"""``python -m pytcp sim``: JSON output, exit codes, one-line usage errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytcp.cli import build_parser


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytcp", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_sim_json_ok(tmp_path: Path) -> None:
    pcap = tmp_path / "run.pcap"
    proc = run(
        "sim", "--seed", "3", "--loss", "0.02", "--dup", "0.01", "--reorder", "0.02", "--corrupt", "0.01",
        "--bytes", "100000", "--pcap", str(pcap), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True
    assert result["seed"] == 3
    for direction in result["directions"].values():
        assert direction["sent"] == direction["received"] == 100000
        assert direction["match"] is True
        assert direction["sha256_sent"] == direction["sha256_received"]
    assert set(result["final_states"].values()) <= {"CLOSED", "TIME-WAIT"}
    assert result["link"]["loss"] == 0.02
    # A pcap with the libpcap magic and at least the handshake in it.
    data = pcap.read_bytes()
    assert data[:4] == bytes.fromhex("d4c3b2a1") and len(data) > 24 + 3 * 56


def test_sim_same_seed_same_json() -> None:
    args = ("sim", "--seed", "11", "--loss", "0.05", "--reorder", "0.05", "--bytes", "30000", "--json")
    first, second = run(*args), run(*args)
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout


def test_sim_human_summary_and_trace() -> None:
    proc = run("sim", "--seed", "1", "--bytes", "2000", "--trace")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # The handshake as the seed documents draw it: SYN seq=x, SYN-ACK seq=y ack=x+1, ACK seq=x+1 ack=y+1.
    assert "client > server  [S] seq=x " in out
    assert "server > client  [S.] seq=y ack=x+1 " in out
    assert "client > server  [.] seq=x+1 ack=y+1 " in out
    assert "CLOSED -> SYN-SENT" in out and "LISTEN -> SYN-RECEIVED" in out
    assert "SYN-RECEIVED -> ESTABLISHED" in out and "SYN-SENT -> ESTABLISHED" in out
    assert any(line.startswith("seed 1: OK after ") for line in out.splitlines())
    assert "final states: client TIME-WAIT" in out or "final states: client CLOSED" in out


def test_sim_failure_exits_1() -> None:
    # A transfer cannot finish in 50 ms of virtual time over a 1 s latency link.
    proc = run("sim", "--latency", "1", "--bytes", "1000", "--max-time", "0.05", "--json")
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert result["ok"] is False and result["failures"]


@pytest.mark.parametrize(
    "args",
    [
        ("sim", "--loss", "1.5"),
        ("sim", "--loss", "nan"),
        ("sim", "--bytes", "-1"),
        ("sim", "--bytes", "many"),
        ("sim", "--latency", "inf"),
        ("sim", "--bandwidth", "0"),
        ("sim", "--queue", "1.5"),
        ("sim", "--unknown"),
        ("sim", "--seed"),
        ("frobnicate",),
        (),
        ("sim", "--pcap", "/nonexistent-dir/x.pcap"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: tuple[str, ...]) -> None:
    proc = run(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pytcp") and "error:" in lines[0]


def test_parser_has_sim_defaults() -> None:
    args = build_parser().parse_args(["sim"])
    assert (args.seed, args.nbytes, args.loss, args.latency, args.bandwidth, args.queue) == (
        1,
        1_000_000,
        0.0,
        0.010,
        None,
        100,
    )
    assert not args.json and not args.trace and args.pcap is None
