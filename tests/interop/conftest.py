"""Fixtures for interop tests against the kernel: every test runs inside network namespaces it creates.

Without root (or without /dev/net/tun, or `ip`) the tests skip, except in CI (CI=true/1), where a
missing privilege is a failure: CI must run them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import NoReturn

import pytest

from pytcp.netns import IpCommandError, NetNamespace, require_privileges

IN_CI = os.environ.get("CI", "").lower() in ("true", "1")


def _unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"network namespace tests cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def privileged() -> None:
    """Skip (fail in CI) unless namespaces and TUN devices can be created."""
    try:
        require_privileges()
    except PermissionError as exc:
        _unavailable(str(exc))


@pytest.fixture
def make_netns(privileged: None) -> Iterator[Callable[[str], NetNamespace]]:
    """A factory of fresh namespaces; each is closed and checked gone after the test."""
    created: list[NetNamespace] = []

    def make(prefix: str = "test") -> NetNamespace:
        try:
            ns = NetNamespace.create(prefix)
        except IpCommandError as exc:
            _unavailable(f"cannot create a network namespace: {exc}")
        created.append(ns)
        return ns

    yield make
    for ns in reversed(created):
        ns.close()
    for ns in created:
        assert not os.path.exists(ns.path), f"namespace {ns.name} survived close()"


@pytest.fixture
def netns(make_netns: Callable[[str], NetNamespace]) -> NetNamespace:
    """One fresh namespace, deleted (and verified deleted) after the test."""
    return make_netns("test")
