"""The digest that says which version of an engine module its compiled form was built from.

Dependency-free on purpose: setup.py loads this file by its path while the package is being built (it
cannot import pytcp then), and pytcp._compiled checks the compiled modules against it at run time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["source_digest"]


def source_digest(source: Path) -> str:
    """sha256 of a module's source and of its .pxd declarations, if any: an edit to either makes the
    compiled module stale."""
    digest = hashlib.sha256(source.read_bytes())
    declarations = source.with_suffix(".pxd")
    if declarations.exists():
        digest.update(declarations.read_bytes())
    return digest.hexdigest()
