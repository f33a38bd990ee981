"""Build the compiled tcpcore modules; TCPCORE_NO_EXTENSIONS=1 builds a pure-Python package.

A compiled module that fails to build fails the build: a silent fallback would ship a wheel
that is twenty times slower than the user asked for.
"""

import os
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
NO_EXTENSIONS = os.environ.get("TCPCORE_NO_EXTENSIONS", "") not in ("", "0")


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
    return cythonize(
        modules,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    )


setup(ext_modules=extensions())
