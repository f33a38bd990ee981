"""Which form of the engine's modules loads: compiled, or their source.

setup.py compiles the modules on the per-segment path (the engine, the runtime and the socket layer)
with Cython from their own source, unchanged (with the .pxd declarations next to it, where there is
one), and records a digest of each source and its declarations in ``compiled.sha256``; the source
stays in the package as the pure-Python twin. The switches of tcpcore apply here too:

- ``TCPCORE_NO_EXTENSIONS=1``: every module loads from its source;
- otherwise a module loads compiled when it was built from its source as it is now; one built from
  another version (a checkout edited since its last build) loads from its source instead, with a
  warning, so stale machine code never hides an edit;
- ``TCPCORE_REQUIRE_EXTENSIONS=1`` (CI) turns a missing or stale compiled module into an ImportError.
"""

from __future__ import annotations

import hashlib
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

__all__ = ["MANIFEST", "compiled_modules", "install", "source_digest"]

logger = logging.getLogger(__name__)

#: Written by setup.py next to this file: one ``<module> <sha256 of its source>`` line per compiled module.
MANIFEST = "compiled.sha256"
PACKAGE_DIR = Path(__file__).resolve().parent


def source_digest(path: Path) -> str:
    """sha256 of a module's source and of its .pxd declarations, if any (as setup.py records it): an
    edit to either makes the compiled module stale."""
    digest = hashlib.sha256(path.read_bytes())
    declarations = path.with_suffix(".pxd")
    if declarations.exists():
        digest.update(declarations.read_bytes())
    return digest.hexdigest()


def compiled_modules(directory: Path = PACKAGE_DIR) -> dict[str, str]:
    """The manifest: module name -> digest of the source it was compiled from (empty: none compiled)."""
    try:
        text = (directory / MANIFEST).read_text()
    except FileNotFoundError:
        return {}
    return dict(line.split() for line in text.splitlines() if line.strip())


class _EngineFinder(importlib.abc.MetaPathFinder):
    """Routes the manifest's modules to their source when their compiled form must not be used."""

    def __init__(self, directory: Path, digests: dict[str, str], use_compiled: bool, require: bool) -> None:
        self._directory = directory
        self._digests = digests
        self._use_compiled = use_compiled
        self._require = require

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        digest = self._digests.get(fullname)
        if digest is None:
            return None
        # pytcp.congestion.cubic -> <package dir>/congestion/cubic.py
        source = self._directory.joinpath(*fullname.split(".")[1:]).with_suffix(".py")
        if self._use_compiled:
            problem = self._problem(source, digest)
            if problem is None:
                return None  # the usual finders take the extension module before the source
            if self._require:
                raise ImportError(f"{fullname}: {problem} (TCPCORE_REQUIRE_EXTENSIONS is set)", name=fullname)
            logger.warning(
                "%s: %s; using its source (rebuild: python setup.py build_ext --inplace)", fullname, problem
            )
        loader = importlib.machinery.SourceFileLoader(fullname, str(source))
        return importlib.util.spec_from_file_location(fullname, source, loader=loader)

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
