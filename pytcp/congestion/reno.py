"""Reno congestion control (RFC 5681): slow start, then one SMSS per window of acknowledged bytes."""

from typing import ClassVar

from pytcp.congestion.base import CongestionControl

__all__ = ["Reno"]


class Reno(CongestionControl):
    """RFC 5681 congestion avoidance with appropriate byte counting (RFC 3465)."""

    name: ClassVar[str] = "reno"
    beta: ClassVar[float] = 0.5  # RFC 5681 3.1 eq. 4: ssthresh = FlightSize / 2

    def __init__(self, mss: int, initial_cwnd: int, now: float) -> None:
        super().__init__(mss, initial_cwnd, now)
        # Bytes acknowledged in congestion avoidance since cwnd last grew.
        self._bytes_acked = 0

    def on_ack(self, acked: int, now: float, rtt: float | None, in_flight: int) -> None:
        if not self.cwnd_limited(in_flight):
            return
        if self.in_slow_start:
            self._slow_start(acked)
            return
        # RFC 5681 3.1 (byte counting, RFC 3465 2.1): one SMSS once a cwnd's worth of bytes is acknowledged.
        self._bytes_acked += acked
        if self._bytes_acked >= self.cwnd:
            self._bytes_acked -= self.cwnd
            self.cwnd += self.mss

    def on_congestion_event(self, now: float, in_flight: int) -> None:
        super().on_congestion_event(now, in_flight)
        self._bytes_acked = 0

    def on_retransmit_timeout(self, now: float, in_flight: int) -> None:
        super().on_retransmit_timeout(now, in_flight)
        self._bytes_acked = 0
