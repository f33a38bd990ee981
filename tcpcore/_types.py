"""Type aliases shared by the twins and the stubs."""

from typing import TypeAlias

#: Any bytes-like object (collections.abc.Buffer arrives only in Python 3.12).
Buffer: TypeAlias = bytes | bytearray | memoryview
