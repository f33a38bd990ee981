"""Type aliases shared by the twins and the stubs."""

from typing import TypeAlias

#: Any bytes-like object (collections.abc.Buffer arrives only in Python 3.12).
Buffer: TypeAlias = bytes | bytearray | memoryview


def byte_view(obj: Buffer, writable: bool = False) -> memoryview:
    """A flat byte view, failing as PyObject_GetBuffer(PyBUF_SIMPLE/WRITABLE) does in the compiled twins."""
    view = memoryview(obj)
    if writable and view.readonly:
        raise BufferError("Object is not writable.")
    if not view.c_contiguous:
        raise BufferError("buffer is not C-contiguous")
    return view.cast("B")
