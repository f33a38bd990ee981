"""The engine's modules load compiled or from their source as the tcpcore switches say (pytcp._compiled)."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytcp import _compiled
from pytcp._compiled import _EngineFinder, compiled_modules, source_digest

REQUIRE = os.environ.get("TCPCORE_REQUIRE_EXTENSIONS", "") not in ("", "0")
FORCE_PYTHON = os.environ.get("TCPCORE_NO_EXTENSIONS", "") not in ("", "0")
MODULES = sorted(compiled_modules())
EXTENSION = importlib.machinery.EXTENSION_SUFFIXES[0]


def is_compiled(name: str) -> bool:
    return not str(importlib.import_module(name).__file__).endswith(".py")


def test_required_engine_is_compiled() -> None:
    if not REQUIRE:
        pytest.skip("only with TCPCORE_REQUIRE_EXTENSIONS")
    assert MODULES, f"no {_compiled.MANIFEST} next to pytcp: the engine was not compiled"
    assert [name for name in MODULES if not is_compiled(name)] == []


def test_no_extensions_loads_every_engine_module_from_source() -> None:
    code = f"import importlib; print(*(importlib.import_module(n).__file__ for n in {MODULES!r}))"
    env = {**os.environ, "TCPCORE_NO_EXTENSIONS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert all(path.endswith(".py") for path in out.stdout.split())
    if FORCE_PYTHON:
        assert not any(is_compiled(name) for name in MODULES)


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A package directory holding one engine module's source and a stand-in for its compiled form."""
    (tmp_path / "mod.py").write_text("VALUE = 1\n")
    (tmp_path / f"mod{EXTENSION}").write_bytes(b"")
    return tmp_path


def test_a_fresh_compiled_module_is_left_to_the_usual_finders(package: Path) -> None:
    finder = _EngineFinder(package, {"pytcp.mod": source_digest(package / "mod.py")}, True, True)
    assert finder.find_spec("pytcp.mod", None) is None
    assert finder.find_spec("pytcp.other", None) is None


def test_a_stale_compiled_module_gives_way_to_its_source(
    package: Path, caplog: pytest.LogCaptureFixture
) -> None:
    digests = {"pytcp.mod": source_digest(package / "mod.py")}
    (package / "mod.py").write_text("VALUE = 2\n")  # edited since the build
    spec = _EngineFinder(package, digests, True, False).find_spec("pytcp.mod", None)
    assert spec is not None and spec.origin == str(package / "mod.py")
    assert "built from another version of its source" in caplog.text
    with pytest.raises(ImportError, match="another version"):
        _EngineFinder(package, digests, True, True).find_spec("pytcp.mod", None)


def test_an_edited_declaration_file_makes_the_compiled_module_stale(package: Path) -> None:
    (package / "mod.pxd").write_text("cdef class A:\n    cdef public object x\n")
    digests = {"pytcp.mod": source_digest(package / "mod.py")}
    assert _EngineFinder(package, digests, True, True).find_spec("pytcp.mod", None) is None
    (package / "mod.pxd").write_text("cdef class A:\n    cdef public object y\n")
    with pytest.raises(ImportError, match="another version"):
        _EngineFinder(package, digests, True, True).find_spec("pytcp.mod", None)


def test_a_missing_compiled_module_gives_way_to_its_source(package: Path) -> None:
    (package / f"mod{EXTENSION}").unlink()
    digests = {"pytcp.mod": source_digest(package / "mod.py")}
    spec = _EngineFinder(package, digests, True, False).find_spec("pytcp.mod", None)
    assert spec is not None and spec.origin == str(package / "mod.py")
    with pytest.raises(ImportError, match="missing"):
        _EngineFinder(package, digests, True, True).find_spec("pytcp.mod", None)


def test_one_stale_module_sends_every_engine_module_to_its_source(package: Path) -> None:
    (package / "other.py").write_text("VALUE = 1\n")
    (package / f"other{EXTENSION}").write_bytes(b"")
    digests = {name: source_digest(package / f"{name}.py") for name in ("mod", "other")}
    digests = {f"pytcp.{name}": digest for name, digest in digests.items()}
    (package / "other.py").write_text("VALUE = 2\n")
    spec = _EngineFinder(package, digests, True, False).find_spec("pytcp.mod", None)
    assert spec is not None and spec.origin == str(package / "mod.py")  # fresh, but from source
    with pytest.raises(ImportError, match=r"pytcp\.other: .*another version"):
        _EngineFinder(package, digests, True, True).find_spec("pytcp.mod", None)


def test_without_extensions_the_source_loads_even_when_fresh(package: Path) -> None:
    finder = _EngineFinder(package, {"pytcp.mod": source_digest(package / "mod.py")}, False, True)
    spec = finder.find_spec("pytcp.mod", None)
    assert spec is not None and spec.origin == str(package / "mod.py")
