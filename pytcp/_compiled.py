"""Which form of the engine's modules loads: compiled, or their source.

setup.py compiles the modules on the per-segment path (the engine, the runtime and the socket layer)
with Cython from their own source, unchanged (with the .pxd declarations next to it, where there is
one), and records a digest of each source and its declarations in ``compiled.sha256``; the source
stays in the package as the pure-Python twin. The switches of tcpcore apply here too:

- ``TCPCORE_NO_EXTENSIONS=1``: every module loads from its source;
- otherwise the modules load compiled when each was built from its source as it is now; when one was
  built from another version (a checkout edited since its last build) or is missing, all of them load
  from their source, with a warning, so stale machine code never hides an edit (all or none: the
  compiled modules share extension types);
- ``TCPCORE_REQUIRE_EXTENSIONS=1`` (CI) turns a missing or stale compiled module into an ImportError.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

from tcpcore._select import env_flag

from ._digest import source_digest

__all__ = ["MANIFEST", "compiled_modules", "install", "source_digest"]

logger = logging.getLogger(__name__)

#: Written by setup.py next to this file: one ``<module> <sha256 of its source>`` line per compiled module.
MANIFEST = "compiled.sha256"
PACKAGE_DIR = Path(__file__).resolve().parent


def compiled_modules(directory: Path = PACKAGE_DIR) -> dict[str, str]:
    """The manifest: module name -> digest of the source it was compiled from (empty: none compiled)."""
    try:
        text = (directory / MANIFEST).read_text()
    except FileNotFoundError:
        return {}
    return dict(line.split() for line in text.splitlines() if line.strip())


class _EngineFinder(importlib.abc.MetaPathFinder):
    """Routes the manifest's modules to their source when their compiled form must not be used.

    All of them or none: the compiled modules share extension types (a compiled Connection derives
    from the compiled TCB, and cannot from one loaded from source), so one stale or missing module
    sends every one of them to its source.
    """

    def __init__(self, directory: Path, digests: dict[str, str], use_compiled: bool, require: bool) -> None:
        self._directory = directory
        self._digests = digests
        self._use_compiled = use_compiled
        self._require = require
        self._problems: dict[str, str] | None = None  # found at the first engine import

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self._digests:
            return None
        if self._use_compiled:
            problems = self._check()
            if not problems:
                return None  # the usual finders take the extension module before the source
            if self._require:
                name, problem = next(iter(problems.items()))
                raise ImportError(f"{name}: {problem} (TCPCORE_REQUIRE_EXTENSIONS is set)", name=fullname)
        source = self._source(fullname)
        loader = importlib.machinery.SourceFileLoader(fullname, str(source))
        return importlib.util.spec_from_file_location(fullname, source, loader=loader)

    def _source(self, fullname: str) -> Path:
        # pytcp.congestion.cubic -> <package dir>/congestion/cubic.py
        return self._directory.joinpath(*fullname.split(".")[1:]).with_suffix(".py")

    def _check(self) -> dict[str, str]:
        """Each module whose compiled form cannot be used, and why; warns once when there is one."""
        if self._problems is None:
            self._problems = {}
            for name, digest in self._digests.items():
                problem = self._problem(self._source(name), digest)
                if problem is not None:
                    self._problems[name] = problem
            if self._problems and not self._require:
                listed = "; ".join(f"{name}: {problem}" for name, problem in self._problems.items())
                rebuild = "python setup.py build_ext --inplace"
                logger.warning("%s; the engine's modules load from source (rebuild: %s)", listed, rebuild)
        return self._problems

    @staticmethod
    def _problem(source: Path, digest: str) -> str | None:
        if not any(source.with_suffix(suffix).exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES):
            return "its compiled module is missing"
        if source_digest(source) != digest:
            return "its compiled module was built from another version of its source"
        return None


def install() -> None:
    """Put the finder in front of the usual ones (once, at ``import pytcp``)."""
    require = env_flag("TCPCORE_REQUIRE_EXTENSIONS")
    use_compiled = not env_flag("TCPCORE_NO_EXTENSIONS")
    digests = compiled_modules()
    if not digests and use_compiled and require:
        raise ImportError(
            f"pytcp's engine is not compiled (no {MANIFEST}; TCPCORE_REQUIRE_EXTENSIONS is set)"
        )
    if digests and not any(isinstance(finder, _EngineFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _EngineFinder(PACKAGE_DIR, digests, use_compiled, require))
