"""The congestion-control plug-in interface and the behaviour every algorithm shares (RFC 5681).

Windows are in bytes; time is only ever the ``now`` argument, never a clock. The engine keeps the loss
recovery accounting itself (NewReno's window inflation, RFC 6582 3.2, or the SACK pipe, RFC 6675) and
tells the algorithm about congestion signals through the ``on_*`` methods.
"""

import abc
from typing import ClassVar

__all__ = ["INFINITE_SSTHRESH", "CongestionControl", "initial_window"]

# RFC 5681 3.1: the initial ssthresh "SHOULD be set arbitrarily high"; Linux TCP_INFINITE_SSTHRESH.
INFINITE_SSTHRESH = 2**31 - 1
# RFC 3465 2.2: slow start grows cwnd by at most L = 2*SMSS per ACK (RFC 5681 3.1 allows this L).
_ABC_LIMIT_SEGMENTS = 2


def initial_window(mss: int, segments: int = 10) -> int:
    """RFC 6928 2: IW = min(10*MSS, max(2*MSS, 14600)), 10 and 14600 (10 x 1460) scaled to ``segments``."""
    return min(segments * mss, max(2 * mss, segments * 1460))


class CongestionControl(abc.ABC):
    """The congestion window of one connection's sender.

    The engine calls ``on_ack`` for each ACK that cumulatively acknowledges new data outside loss
    recovery, ``on_congestion_event`` on entering fast recovery (at most once per window of data),
    ``on_recovery_exit`` when recovery ends, ``on_retransmit_timeout`` when the retransmission timer
    fires, and ``on_idle_restart`` before sending after an idle period longer than the RTO.
    """

    name: ClassVar[str]
    # Multiplicative decrease applied to FlightSize on loss.
    beta: ClassVar[float]

    def __init__(self, mss: int, initial_cwnd: int, now: float) -> None:
        if mss <= 0 or initial_cwnd < mss:
            raise ValueError(f"need mss > 0 and initial_cwnd >= mss (got {mss}, {initial_cwnd})")
        self.mss = mss
        self.initial_cwnd = initial_cwnd
        self.cwnd = initial_cwnd
        self.ssthresh = INFINITE_SSTHRESH

    @property
    def in_slow_start(self) -> bool:
        """RFC 5681 3.1: slow start while cwnd < ssthresh (at equality either may be used; we avoid)."""
        return self.cwnd < self.ssthresh

    def cwnd_limited(self, in_flight: int) -> bool:
        """Whether the sender uses enough of cwnd for an ACK to justify growing it.

        A sender held back by the application or the receive window must not inflate a cwnd it does not
        use (RFC 9438 5.8). RFC 7661 counts cwnd as validated while at least half of it is in flight
        (as Linux's tcp_is_cwnd_limited does in slow start), so cwnd exceeds actual use at most twofold.
        """
        return 2 * in_flight >= self.cwnd

    @abc.abstractmethod
    def on_ack(self, acked: int, now: float, rtt: float | None, in_flight: int) -> None:
        """``acked`` new bytes were cumulatively acknowledged outside recovery.

        ``rtt`` is the smoothed RTT (RFC 6298 SRTT) or None before the first sample; ``in_flight`` is
        FlightSize when the ACK arrived, including the bytes it acknowledges.
        """

    def on_congestion_event(self, now: float, in_flight: int) -> None:
        """Loss detected by duplicate ACKs or SACK: entering fast recovery.

        ssthresh = max(FlightSize * beta, 2*SMSS) (RFC 5681 3.2 eq. 4 with beta 1/2) and cwnd = ssthresh,
        the window SACK recovery starts from (RFC 6675 5 step 4.2); the engine adds NewReno's 3*SMSS
        inflation itself if it runs RFC 6582.
        """
        self.ssthresh = self._reduced_ssthresh(in_flight)
        self.cwnd = self.ssthresh

    def on_recovery_exit(self, now: float) -> None:
        """Recovery ended with a full acknowledgment: deflate to ssthresh (RFC 6582 3.2 step 3 option 2)."""
        self.cwnd = self.ssthresh

    def on_retransmit_timeout(self, now: float, in_flight: int) -> None:
        """The retransmission timer fired: ssthresh as for a loss (RFC 5681 eq. 4), cwnd = loss window.

        RFC 5681 3.1: the loss window is one SMSS. A repeated timeout of the same data passes the same
        FlightSize, so ssthresh holds, as RFC 5681 3.1 asks.
        """
        self.ssthresh = self._reduced_ssthresh(in_flight)
        self.cwnd = self.mss

    def on_idle_restart(self, now: float, rto: float) -> None:
        """Restart after the sender was idle for more than ``rto``: cwnd = min(IW, cwnd) (RFC 5681 4.1).

        ssthresh keeps at least 3/4 of the old cwnd so slow start climbs straight back toward it, as Linux
        tcp_cwnd_restart does (the RFC 2861 rule).
        """
        self.ssthresh = max(self.ssthresh, self.cwnd * 3 // 4)
        self.cwnd = min(self.initial_cwnd, self.cwnd)

    def set_mss(self, mss: int) -> None:
        """The path MSS changed: windows keep their size in segments, as Linux counts cwnd in packets."""
        if mss <= 0:
            raise ValueError(f"need mss > 0 (got {mss})")
        old = self.mss
        self.cwnd = max(self.cwnd * mss // old, mss)
        self.initial_cwnd = max(self.initial_cwnd * mss // old, mss)
        if self.ssthresh != INFINITE_SSTHRESH:
            self.ssthresh = max(self.ssthresh * mss // old, 2 * mss)
        self.mss = mss

    def _slow_start(self, acked: int) -> None:
        """RFC 5681 3.1 eq. 2 with appropriate byte counting: cwnd += min(N, L), L = 2*SMSS (RFC 3465)."""
        self.cwnd += min(acked, _ABC_LIMIT_SEGMENTS * self.mss)

    def _reduced_ssthresh(self, in_flight: int) -> int:
        """max(FlightSize * beta, 2*SMSS): RFC 5681 eq. 4 for Reno, RFC 9438 4.6 for CUBIC."""
        return max(int(in_flight * self.beta), 2 * self.mss)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cwnd={self.cwnd}, ssthresh={self.ssthresh}, mss={self.mss})"
