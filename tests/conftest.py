"""Shared fixtures: every tcpcore test runs against both implementations (multidict-style)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

import tcpcore

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FORCE_PYTHON = os.environ.get("TCPCORE_NO_EXTENSIONS", "") not in ("", "0")
IMPLEMENTATIONS = ["python"] if FORCE_PYTHON else ["cython", "python"]


def load_implementation(name: str) -> SimpleNamespace:
    """The named implementation; a missing compiled build fails in CI and skips elsewhere."""
    try:
        return tcpcore.implementation(name)
    except ImportError as exc:
        if IN_CI:
            pytest.fail(f"compiled tcpcore missing in CI: {exc}")
        pytest.skip(f"compiled tcpcore not built: {exc}")


@pytest.fixture(scope="session", params=IMPLEMENTATIONS)
def core(request: pytest.FixtureRequest) -> SimpleNamespace:
    """One tcpcore implementation: the test runs once per implementation."""
    return load_implementation(request.param)


@pytest.fixture(scope="session")
def both() -> tuple[SimpleNamespace, SimpleNamespace]:
    """(compiled, twin) for differential tests that feed the same inputs to both."""
    if FORCE_PYTHON:
        pytest.skip("TCPCORE_NO_EXTENSIONS forces the twin; nothing to compare")
    return load_implementation("cython"), load_implementation("python")
