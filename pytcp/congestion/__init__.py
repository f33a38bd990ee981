"""Congestion-control algorithms selected by name, like Linux's tcp_congestion_control."""

from typing import TypeVar

from pytcp.congestion.base import INFINITE_SSTHRESH, CongestionControl, initial_window
from pytcp.congestion.cubic import Cubic
from pytcp.congestion.reno import Reno

__all__ = [
    "INFINITE_SSTHRESH",
    "CongestionControl",
    "Cubic",
    "Reno",
    "available",
    "create",
    "initial_window",
    "register",
]

_C = TypeVar("_C", bound=type[CongestionControl])
_REGISTRY: dict[str, type[CongestionControl]] = {}


def register(cls: _C) -> _C:
    """Make ``cls`` selectable by its ``name``; usable as a class decorator."""
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"congestion control {cls.name!r} is already registered by {existing.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def create(name: str, mss: int, initial_cwnd: int, now: float) -> CongestionControl:
    """A new instance of the algorithm registered as ``name``."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown congestion control {name!r}; available: {', '.join(available())}"
        ) from None
    return cls(mss, initial_cwnd, now)


def available() -> list[str]:
    """Registered names, sorted."""
    return sorted(_REGISTRY)


register(Reno)
register(Cubic)
