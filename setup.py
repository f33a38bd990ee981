"""Build the compiled tcpcore modules and the compiled engine; TCPCORE_NO_EXTENSIONS=1 builds a
pure-Python package.

tcpcore's modules are Cython sources with pure-Python twins. The engine's modules on the per-segment
path (ENGINE_MODULES) are plain Python, compiled by Cython (docs/performance.md); their source is the
twin, and pytcp._compiled decides which one loads from the digests recorded here in
pytcp/compiled.sha256. A module's .pxd next to it, where there is one, is what makes it fast: it
declares the module's hot classes as extension types with their fields and the methods called per
segment as cpdef (Cython's "augmenting .pxd"); the .py itself stays plain Python.

A compiled module that fails to build fails the build: a silent fallback would ship a wheel
that is twenty times slower than the user asked for.
"""

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
NO_EXTENSIONS = os.environ.get("TCPCORE_NO_EXTENSIONS", "") not in ("", "0")
#: Every module a segment, a socket call or a connection's setup passes through; the rest of pytcp
#: (configuration, CLI, asyncio layer, forwarder, simulator) stays interpreted.
ENGINE_MODULES = (
    "pytcp.congestion.base",
    "pytcp.congestion.cubic",
    "pytcp.congestion.reno",
    "pytcp.connection",
    "pytcp.isn",
    "pytcp.listener",
    "pytcp.receiver",
    "pytcp.recovery",
    "pytcp.rtt",
    "pytcp.runtime",
    "pytcp.sender",
    "pytcp.socket",
    "pytcp.stack",
    "pytcp.state",
    "pytcp.tcb",
    "pytcp.tcp_input",
    "pytcp.tcp_output",
    "pytcp.timers",
    "pytcp.tun",
    "pytcp.vnet",
)
MANIFEST = HERE / "pytcp" / "compiled.sha256"  # read by pytcp._compiled


def engine_source(name: str) -> Path:
    return HERE.joinpath(*name.split(".")).with_suffix(".py")


def _load_source_digest() -> Callable[[Path], str]:
    """pytcp._digest.source_digest, loaded by path: the package cannot be imported while it is built."""
    spec = importlib.util.spec_from_file_location("_pytcp_digest", HERE / "pytcp" / "_digest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.source_digest


source_digest = _load_source_digest()


def write_manifest() -> None:
    """Record the digest of each engine source as compiled now (none in a pure-Python build)."""
    if NO_EXTENSIONS:
        MANIFEST.unlink(missing_ok=True)
        return
    MANIFEST.write_text("".join(f"{name} {source_digest(engine_source(name))}\n" for name in ENGINE_MODULES))


def extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    modules = [
        Extension(
            f"tcpcore.{path.stem}",
            [str(path.relative_to(HERE))],
            include_dirs=["tcpcore"],
            extra_compile_args=["-O3", "-g0"],
        )
        for path in sorted((HERE / "tcpcore").glob("_*_c.pyx"))
    ]
    core = cythonize(
        modules,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    )
    engine = [
        Extension(name, [str(engine_source(name).relative_to(HERE))], extra_compile_args=["-O2", "-g0"])
        for name in ENGINE_MODULES
    ]
    # Python semantics kept whole (binding: functions stay introspectable descriptors; bounds and
    # wrap-around checks on): the same source must behave the same compiled or not. Types come from
    # the .pxd files alone; the annotations only document (annotation_typing off: a ``float``
    # annotation would otherwise turn an int argument into a C double).
    directives = {"language_level": 3, "binding": True, "annotation_typing": False}
    return core + cythonize(engine, compiler_directives=directives)


write_manifest()
setup(ext_modules=extensions())
