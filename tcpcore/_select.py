"""Choose between the compiled modules and their pure-Python twins.

Every compiled module ``_<name>_c`` has a twin ``_<name>_py`` exporting the same ``__all__``.
``TCPCORE_NO_EXTENSIONS=1`` forces the twins; ``TCPCORE_REQUIRE_EXTENSIONS=1`` (set in CI)
turns a missing compiled module into an ImportError instead of a silent fallback.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import SimpleNamespace

logger = logging.getLogger(__name__)

MODULES = ("checksum", "seq", "wire", "reassembly", "batch")
SUFFIXES = {"cython": "_c", "python": "_py"}


def env_flag(name: str) -> bool:
    """Whether an environment switch is on (set, and not "0"); pytcp._compiled reads the same ones."""
    return os.environ.get(name, "") not in ("", "0")


def implementation(name: str) -> SimpleNamespace:
    """All public names of one implementation ("cython" or "python") as a namespace."""
    suffix = SUFFIXES[name]
    namespace = SimpleNamespace()
    for module_name in MODULES:
        module = importlib.import_module(f"tcpcore._{module_name}{suffix}")
        for attr in module.__all__:
            setattr(namespace, attr, getattr(module, attr))
    return namespace


def choose() -> tuple[str, SimpleNamespace]:
    """The implementation the facade exports, honouring the environment switches."""
    if env_flag("TCPCORE_NO_EXTENSIONS"):
        return "python", implementation("python")
    try:
        return "cython", implementation("cython")
    except ImportError:
        if env_flag("TCPCORE_REQUIRE_EXTENSIONS"):
            raise
        logger.warning("tcpcore compiled modules unavailable; using the pure-Python twins")
        return "python", implementation("python")
