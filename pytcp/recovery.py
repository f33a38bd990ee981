"""Loss recovery of one sender: fast retransmit and fast recovery, NewReno (RFC 6582) without SACK and
SACK-based (RFC 6675) with it, plus the loss state after a retransmission timeout (Linux TCP_CA_Loss).

The congestion-control plug-in owns cwnd and ssthresh; this module owns what RFC 6582 and RFC 6675 add
around them: the duplicate-ACK count, the recovery point, NewReno's window inflation and the choice of
what to mark lost in the scoreboard (``pytcp.sender.Sender``). The connection sends what the marks and
``cwnd + inflation - pipe`` allow, and retransmits the first lost segment at once when ``force_rtx`` says
RFC 5681 3.2 step 2 / RFC 6582 3.2 step 5 / RFC 6675 5 step 4.3 require it, whatever cwnd allows.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .congestion import CongestionControl
    from .mib import MIB
    from .sender import Sender

__all__ = ["DUP_THRESH", "Phase", "Recovery"]

#: RFC 5681 3.2 / RFC 6675 2: duplicate ACKs (or SACKed segments) that signal a loss.
DUP_THRESH = 3


class Phase(enum.Enum):
    OPEN = "open"
    RECOVERY = "recovery"  # fast recovery (RFC 5681 3.2, RFC 6582, RFC 6675)
    LOSS = "loss"  # after a retransmission timeout, until everything sent before it is acknowledged


# The members as module constants, as pytcp.state's and for the same reason.
OPEN, RECOVERY, LOSS = Phase.OPEN, Phase.RECOVERY, Phase.LOSS


class Recovery:
    """Duplicate-ACK counting and the recovery phase of one connection."""

    __slots__ = ("dupacks", "force_rtx", "inflation", "partial_seen", "phase", "recover", "sack")

    def __init__(self, sack: bool) -> None:
        self.sack = sack
        self.phase = OPEN
        # One past the highest position sent when recovery began (RFC 6582 "recover" + 1, RFC 6675
        # RecoveryPoint + 1); RFC 6582 3.2 initialises it to the ISS, the offset of our SYN plus one.
        self.recover = 1
        self.dupacks = 0
        # Bytes added to cwnd: RFC 3042 limited transmit, then NewReno's inflation (RFC 6582 3.2).
        self.inflation = 0
        self.partial_seen = False
        self.force_rtx = False

    def __repr__(self) -> str:
        return f"Recovery({self.phase.value}, dupacks={self.dupacks}, recover={self.recover})"

    def on_ack(
        self,
        snd: Sender,
        cc: CongestionControl,
        mib: MIB,
        *,
        acked: int,
        newly_sacked: int,
        dup: bool,
        mss: int,
        now: float,
    ) -> bool:
        """Account one acceptable ACK (the scoreboard is already updated). ``dup`` is RFC 5681's duplicate
        ACK, or with SACK one that newly SACKs data (RFC 6675 2). Returns whether the retransmission
        timer may restart on it (RFC 6298 5.3; NewReno's "impatient" variant, RFC 6582 4)."""
        una = snd.una
        phase = self.phase
        if phase is RECOVERY:
            if una >= self.recover:
                # RFC 6582 3.2 step 6 / RFC 6675 5 (A): a full acknowledgment ends recovery.
                self._exit(cc, now)
                return True
            if self.sack:
                # RFC 6675 5 (B): the scoreboard decides what is lost now.
                snd.update_lost(mss)
                return acked > 0
            if acked > 0:
                # RFC 6582 3.2 step 5: a partial ACK; retransmit the next hole at once and deflate
                # cwnd by what it acknowledged, adding one SMSS back if it covered one.
                snd.mark_head_lost()
                self.force_rtx = True
                self.inflation -= acked
                if acked >= mss:
                    self.inflation += mss
                first = not self.partial_seen
                self.partial_seen = True
                return first
            if dup:
                # RFC 6582 3.2 step 4 (RFC 5681 3.2 step 4): each further duplicate inflates cwnd.
                self.inflation += mss
            return False
        if phase is LOSS and una >= self.recover:
            # Everything sent before the timeout is acknowledged (Linux tcp_try_undo_recovery path).
            self.phase = OPEN
        if acked > 0:
            # RFC 6675 5: a cumulative ACK resets DupAcks (and ends RFC 3042 limited transmit).
            self.dupacks = 0
            self.inflation = 0
        if self.phase is LOSS:
            if newly_sacked:
                snd.update_lost(mss)
            return acked > 0
        lost = False
        if dup:
            self.dupacks += 1
            if self.sack and newly_sacked:
                lost = snd.update_lost(mss)
        if (self.dupacks >= DUP_THRESH or lost) and snd.flight > 0:
            if una >= self.recover:
                self._enter(snd, cc, mib, mss, now)
            # else RFC 6582 3.2 step 2 / 4.1: the duplicates belong to data sent before the last
            # recovery or timeout; no new fast retransmit.
        elif dup and not self.sack and self.dupacks < DUP_THRESH:
            # RFC 3042: the first two duplicates each let one new segment out.
            self.inflation = self.dupacks * mss
        return acked > 0

    def _enter(self, snd: Sender, cc: CongestionControl, mib: MIB, mss: int, now: float) -> None:
        """RFC 5681 3.2 steps 2-3, RFC 6582 3.2 step 2, RFC 6675 5 step 4."""
        self.phase = Phase.RECOVERY
        self.recover = snd.nxt
        self.partial_seen = False
        cc.on_congestion_event(now, snd.flight)
        snd.mark_head_lost()
        self.force_rtx = True
        if self.sack:
            mib.TCPSackRecovery += 1
            self.inflation = 0
        else:
            mib.TCPRenoRecovery += 1
            # RFC 5681 3.2 step 4: cwnd = ssthresh + 3*SMSS for the segments that left the network.
            self.inflation = DUP_THRESH * mss

    def _exit(self, cc: CongestionControl, now: float) -> None:
        self.phase = OPEN
        self.dupacks = 0
        self.inflation = 0
        self.force_rtx = False
        cc.on_recovery_exit(now)

    def on_timeout(self, snd: Sender, cc: CongestionControl, now: float) -> None:
        """RFC 5681 3.1 / RFC 6298 5.4-5.6: the retransmission timer fired; everything outstanding is
        presumed lost and goes again in slow start. RFC 6582 3.2 step 1 sets recover to SND.NXT so the
        duplicates this causes do not start a fast retransmit."""
        cc.on_retransmit_timeout(now, snd.flight)
        self.phase = Phase.LOSS
        self.recover = snd.nxt
        self.dupacks = 0
        self.inflation = 0
        snd.mark_all_lost()
        self.force_rtx = True
