"""The facade: which implementation is active, and that both export the same names."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

import tcpcore
from tcpcore._select import MODULES

REQUIRE = os.environ.get("TCPCORE_REQUIRE_EXTENSIONS", "") not in ("", "0")
FORCE_PYTHON = os.environ.get("TCPCORE_NO_EXTENSIONS", "") not in ("", "0")


def test_active_implementation_honours_environment() -> None:
    if FORCE_PYTHON:
        assert tcpcore.IMPLEMENTATION == "python"
    elif REQUIRE:
        assert tcpcore.IMPLEMENTATION == "cython"
    assert tcpcore.IMPLEMENTATION in ("cython", "python")


@pytest.mark.parametrize("module", MODULES)
def test_twins_export_the_same_names(module: str) -> None:
    if FORCE_PYTHON:
        pytest.skip("compiled modules are not under test with TCPCORE_NO_EXTENSIONS")
    compiled = importlib.import_module(f"tcpcore._{module}_c")
    twin = importlib.import_module(f"tcpcore._{module}_py")
    assert sorted(compiled.__all__) == sorted(twin.__all__)


def test_facade_exports_every_public_name() -> None:
    active = tcpcore.implementation(tcpcore.IMPLEMENTATION)
    for name in vars(active):
        assert getattr(tcpcore, name) is getattr(active, name)
        assert name in tcpcore.__all__


def test_no_extensions_switch_forces_the_twins() -> None:
    code = "import tcpcore; print(tcpcore.IMPLEMENTATION, tcpcore.internet_checksum.__module__)"
    env = {**os.environ, "TCPCORE_NO_EXTENSIONS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["python", "tcpcore._checksum_py"]


def test_core_demo_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tcpcore"], capture_output=True, text=True, timeout=60, env=dict(os.environ)
    )
    assert out.returncode == 0, out.stderr
    assert "[S.] seq=5000 ack=1001" in out.stdout
