"""Retransmission timeout estimation per RFC 6298 (SRTT, RTTVAR, RTO with exponential backoff)."""

import math

__all__ = ["RTTEstimator"]

ALPHA = 1 / 8  # RFC 6298 2.3: SRTT gain
BETA = 1 / 4  # RFC 6298 2.3: RTTVAR gain
K = 4  # RFC 6298 2.2: RTTVAR multiplier in RTO
# RFC 6298 5.7: RTO when data transfer starts after the SYN timed out; Linux TCP_TIMEOUT_FALLBACK.
SYN_TIMEOUT_RTO = 3.0


class RTTEstimator:
    """One connection's RTO.

    Karn's rule is the caller's: a segment that was retransmitted gives no sample, since its ACK may
    belong to either transmission (RFC 6298 3), unless the Timestamps option tells which one it echoes
    (RFC 7323 4). ``rto`` always includes the backoff; ``srtt`` is None and ``rttvar`` 0 until the
    first sample.
    """

    __slots__ = ("backoff_count", "granularity", "rto", "rto_initial", "rto_max", "rto_min", "rttvar", "srtt")

    def __init__(
        self,
        rto_initial: float = 1.0,
        rto_min: float = 0.2,
        rto_max: float = 120.0,
        granularity: float = 0.001,
    ) -> None:
        if not 0 < rto_min <= rto_initial <= rto_max < math.inf or not 0 <= granularity < math.inf:
            raise ValueError(
                "need 0 < rto_min <= rto_initial <= rto_max and granularity >= 0, all finite "
                f"(got {rto_min}, {rto_initial}, {rto_max}, {granularity})"
            )
        self.rto_initial = rto_initial
        self.rto_min = rto_min
        self.rto_max = rto_max
        self.granularity = granularity
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = rto_initial
        self.backoff_count = 0

    def sample(self, rtt: float) -> None:
        """Take one valid RTT measurement in seconds; raises ValueError if negative or not finite."""
        if not 0 <= rtt < math.inf:
            raise ValueError(f"RTT sample must be finite and >= 0 (got {rtt})")
        if self.srtt is None:
            # RFC 6298 2.2: first measurement.
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            # RFC 6298 2.3: RTTVAR first, from the SRTT before this sample.
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - rtt)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * rtt
        # RFC 6298 5 (after 5.7): a new measurement collapses a backed-off RTO; Linux tcp_ack_update_rtt
        # likewise clears icsk_backoff on every valid sample.
        self.backoff_count = 0
        self.rto = self._bounded(self.srtt + max(self.granularity, K * self.rttvar))  # RFC 6298 2.2/2.3

    def backoff(self) -> None:
        """The retransmission timer expired: RTO = RTO * 2, capped at rto_max (RFC 6298 5.5, 2.5)."""
        self.backoff_count += 1
        self.rto = min(self.rto * 2, self.rto_max)

    def restart_after_syn_timeout(self) -> None:
        """RFC 6298 5.7: the SYN (or SYN-ACK) timed out and the handshake gave no RTT sample, so data
        transfer starts from RTO = 3 s (Linux TCP_TIMEOUT_FALLBACK) instead of the backed-off value.
        """
        if self.srtt is None:
            self.backoff_count = 0
            self.rto = self._bounded(max(SYN_TIMEOUT_RTO, self.rto_initial))

    def _bounded(self, rto: float) -> float:
        # RFC 6298 2.4 rounds up to a minimum (1 s there, rto_min here like Linux); 2.5 allows a maximum.
        return min(max(rto, self.rto_min), self.rto_max)

    def __repr__(self) -> str:
        return (
            f"RTTEstimator(srtt={self.srtt}, rttvar={self.rttvar}, rto={self.rto}, "
            f"backoff_count={self.backoff_count})"
        )
