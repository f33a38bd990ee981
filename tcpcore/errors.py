"""Exceptions shared by both implementations, so callers catch one type whichever is active."""


class MalformedPacket(ValueError):
    """Untrusted bytes failed validation; the packet must be counted and dropped."""


class TooManyHoles(Exception):
    """Storing a segment would exceed the reassembly buffer's bound on out-of-order ranges."""
