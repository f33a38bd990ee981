"""CUBIC congestion control (RFC 9438), Linux's default.

The RFC works in segments and seconds; so do the formulas here, while ``cwnd`` and ``ssthresh`` stay in
bytes like every other algorithm's. Time is only the ``now`` argument.
"""

import math
from typing import ClassVar

from pytcp.congestion.base import CongestionControl

__all__ = ["Cubic"]

C = 0.4  # RFC 9438 4.1.1 / 5.1: C SHOULD be 0.4
BETA_CUBIC = 0.7  # RFC 9438 4.1.1 / 4.6: beta_cubic SHOULD be 0.7
ALPHA_CUBIC = 3 * (1 - BETA_CUBIC) / (1 + BETA_CUBIC)  # RFC 9438 4.3: Reno-friendly additive increase


class Cubic(CongestionControl):
    """RFC 9438 with fast convergence (4.7) on, as in Linux, and Reno's slow start (4.10)."""

    name: ClassVar[str] = "cubic"
    beta: ClassVar[float] = BETA_CUBIC

    def __init__(self, mss: int, initial_cwnd: int, now: float) -> None:
        super().__init__(mss, initial_cwnd, now)
        # Segments. W_max is 0 while no saturation point is known (4.8, 4.10).
        self._w_max = 0.0
        self._k = 0.0
        self._w_est = 0.0
        self._cwnd_prior = 0.0
        # Start of the current congestion avoidance stage; None until its first ACK.
        self._t_epoch: float | None = None
        self._last_ack = now
        # Sub-byte growth not yet added to the integer cwnd.
        self._carry = 0.0

    def on_ack(self, acked: int, now: float, rtt: float | None, in_flight: int) -> None:
        if not self.cwnd_limited(in_flight):
            # 4.2: t MUST NOT include application-limited periods (5.8), so the epoch moves with them.
            if self._t_epoch is not None:
                self._t_epoch += now - self._last_ack
            self._last_ack = now
            return
        self._last_ack = now
        if self.in_slow_start:
            self._slow_start(acked)  # 4.10: Reno's slow start (HyStart++ is not implemented)
            return
        mss = self.mss
        cwnd = self.cwnd / mss
        if self._t_epoch is None:
            self._start_epoch(cwnd)
            self._t_epoch = now
        t = now - self._t_epoch
        segments_acked = acked / mss
        # 4.3 eq. 4, counting acknowledged segments (the ABC adjustment); alpha becomes 1 once W_est
        # reaches cwnd_prior, to grow as fast as Reno from there.
        alpha = 1.0 if self._w_est >= self._cwnd_prior else ALPHA_CUBIC
        self._w_est += alpha * segments_acked / cwnd
        if self._w_cubic(t) < self._w_est:
            new = max(cwnd, self._w_est)  # 4.3: Reno-friendly region, cwnd = W_est (never shrunk on an ACK)
        else:
            # 4.2: target = W_cubic(t + RTT) clamped to [cwnd, 1.5 cwnd]; 4.4 (concave, cwnd < W_max) and
            # 4.5 (convex) both add (target - cwnd) / cwnd per acknowledged segment.
            target = min(max(self._w_cubic(t + (rtt or 0.0)), cwnd), 1.5 * cwnd)
            new = cwnd + (target - cwnd) / cwnd * segments_acked
        grow = (new - cwnd) * mss + self._carry
        whole = int(grow)
        self._carry = grow - whole
        self.cwnd += whole

    def on_congestion_event(self, now: float, in_flight: int) -> None:
        cwnd = self.cwnd / self.mss
        if cwnd < self._w_max:
            # 4.7 fast convergence: the saturation point is falling, release bandwidth sooner.
            self._w_max = cwnd * (1 + BETA_CUBIC) / 2
        else:
            self._w_max = cwnd
        self._cwnd_prior = cwnd
        super().on_congestion_event(now, in_flight)  # 4.6: ssthresh = max(flight * beta, 2), cwnd = ssthresh
        self._t_epoch = None

    def on_retransmit_timeout(self, now: float, in_flight: int) -> None:
        self._cwnd_prior = self.cwnd / self.mss
        super().on_retransmit_timeout(now, in_flight)  # 4.8: Reno's loss window, ssthresh with beta_cubic
        # 4.8: the next congestion avoidance stage starts with K = 0 and W_max = cwnd_epoch.
        self._w_max = 0.0
        self._t_epoch = None

    def on_idle_restart(self, now: float, rto: float) -> None:
        super().on_idle_restart(now, rto)
        self._t_epoch = None  # 4.2 / 5.8: idle time is not part of t; a new stage starts

    def _start_epoch(self, cwnd: float) -> None:
        """Begin a congestion avoidance stage with cwnd_epoch = ``cwnd`` segments."""
        self._w_est = cwnd  # 4.3: W_est starts at cwnd_epoch
        # 4.8 / 4.10: without a saturation point above cwnd_epoch, W_max = cwnd_epoch and K = 0 (Linux
        # also takes this branch when cwnd_epoch is already past W_max).
        self._w_max = max(self._w_max, cwnd)
        self._k = math.cbrt((self._w_max - cwnd) / C)  # 4.2 eq. 2

    def _w_cubic(self, t: float) -> float:
        """4.2 eq. 1: W_cubic(t) = C * (t - K)^3 + W_max, in segments."""
        return C * (t - self._k) ** 3 + self._w_max
