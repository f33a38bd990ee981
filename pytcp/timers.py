"""A connection's timers: one main timer of one kind at a time, plus the delayed-ACK deadline.

The main timer is a small sum type (smoltcp style): retransmission, persist (zero-window probe),
keepalive, FIN-WAIT-2 and TIME-WAIT exclude one another, so two retransmission timers can never run
at once. They are exclusive in the protocol too: persist runs only when nothing is in flight (RFC 9293
3.8.6.1), keepalive only when the connection is idle (RFC 1122 4.2.3.6), and the FIN-WAIT-2 and TIME-WAIT
timers only once our FIN is acknowledged. The delayed ACK (RFC 5681 4.2) runs beside any of them.
"""

from __future__ import annotations

import enum

__all__ = ["TimerKind", "Timers"]


class TimerKind(enum.Enum):
    RETRANSMIT = "retransmit"
    PERSIST = "persist"
    KEEPALIVE = "keepalive"
    FIN_WAIT_2 = "fin-wait-2"
    TIME_WAIT = "time-wait"


# The kinds re-armed per segment as module constants, as pytcp.state's members and for the same reason
# (the two named after states are armed on state changes only).
RETRANSMIT, PERSIST, KEEPALIVE = TimerKind.RETRANSMIT, TimerKind.PERSIST, TimerKind.KEEPALIVE


class Timers:
    """Deadlines in the caller's clock (seconds); None when disarmed."""

    __slots__ = ("at", "delack_at", "kind")

    def __init__(self) -> None:
        self.kind: TimerKind | None = None
        self.at: float | None = None
        self.delack_at: float | None = None

    def __repr__(self) -> str:
        kind = self.kind.value if self.kind else None
        return f"Timers({kind}@{self.at}, delack@{self.delack_at})"

    def arm(self, kind: TimerKind, at: float) -> None:
        """Arm the main timer, replacing whatever kind ran before."""
        self.kind = kind
        self.at = at

    def stop(self, kind: TimerKind | None = None) -> None:
        """Disarm the main timer (only if it is of ``kind``, when given)."""
        if kind is None or self.kind is kind:
            self.kind = None
            self.at = None

    def deadline(self) -> float | None:
        """The earliest deadline of the two, or None."""
        at, delack = self.at, self.delack_at
        if at is None:
            return delack
        if delack is None or at <= delack:
            return at
        return delack

    def pop_due(self, now: float) -> TimerKind | None:
        """The main timer's kind if it is due at ``now`` (and disarm it), else None."""
        at = self.at
        if at is None or at > now:
            return None
        kind = self.kind
        self.kind = None
        self.at = None
        return kind

    def pop_delack_due(self, now: float) -> bool:
        """Whether the delayed ACK is due at ``now`` (and disarm it)."""
        at = self.delack_at
        if at is None or at > now:
            return False
        self.delack_at = None
        return True
