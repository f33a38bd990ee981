"""Benchmarks run against both tcpcore implementations, like the tests."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

import tcpcore

FORCE_PYTHON = os.environ.get("TCPCORE_NO_EXTENSIONS", "") not in ("", "0")


@pytest.fixture(scope="session", params=["python"] if FORCE_PYTHON else ["cython", "python"])
def core(request: pytest.FixtureRequest) -> SimpleNamespace:
    return tcpcore.implementation(request.param)
