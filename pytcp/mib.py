"""Stack-wide counters named as Linux nstat shows them (RFC 4022 TCP-MIB plus Linux TcpExt).

A slotted dataclass: a counter is an attribute (``mib.InSegs += 1``), so a misspelt name fails
loudly instead of creating a new key, and an increment costs one attribute store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class MIB:
    # IP (RFC 4293 IP-MIB)
    InReceives: int = 0
    InHdrErrors: int = 0
    InDelivers: int = 0
    InUnknownProtos: int = 0
    InAddrErrors: int = 0
    FragDropped: int = 0
    OutRequests: int = 0
    # ICMP
    InEchos: int = 0
    OutEchoReps: int = 0
    InDestUnreachs: int = 0
    OutDestUnreachs: int = 0
    IcmpInErrors: int = 0  # Linux Icmp InErrors: malformed ICMP messages
    OutOfWindowIcmps: int = 0  # Linux TcpExt: errors quoting a segment not in flight (RFC 5927 4.1)
    # TCP (RFC 4022 TCP-MIB)
    ActiveOpens: int = 0
    PassiveOpens: int = 0
    AttemptFails: int = 0
    EstabResets: int = 0
    CurrEstab: int = 0
    InSegs: int = 0
    OutSegs: int = 0
    RetransSegs: int = 0
    InErrs: int = 0
    InCsumErrors: int = 0
    OutRsts: int = 0
    # TcpExt (Linux)
    SyncookiesSent: int = 0
    SyncookiesRecv: int = 0
    SyncookiesFailed: int = 0
    ListenOverflows: int = 0
    ListenDrops: int = 0
    TW: int = 0
    TWRecycled: int = 0
    PAWSEstab: int = 0
    TCPChallengeACK: int = 0
    TCPSYNChallenge: int = 0
    TCPTimeouts: int = 0
    TCPFastRetrans: int = 0
    TCPSlowStartRetrans: int = 0
    TCPRenoRecovery: int = 0
    TCPSackRecovery: int = 0
    TCPDSACKRecv: int = 0
    TCPOFOQueue: int = 0
    TCPOFODrop: int = 0
    TCPZeroWindowDrop: int = 0
    TCPWinProbe: int = 0
    TCPKeepAlive: int = 0
    TCPAbortOnData: int = 0
    TCPAbortOnClose: int = 0
    TCPAbortOnTimeout: int = 0
    TCPAbortOnLinger: int = 0
    TCPAbortFailed: int = 0
    TCPReqQFullDrop: int = 0
    TCPAckSkippedChallenge: int = 0
    TCPLostRetransmit: int = 0
    TCPInvalidSequence: int = 0  # unacceptable segments (Linux drop reason TCP_INVALID_SEQUENCE)
    TCPACKSkippedSeq: int = 0
    TCPACKSkippedPAWS: int = 0
    # Promiscuous listener (Stack.listen_any): SYNs held as requests, and how each request ended
    InterceptRequests: int = 0
    InterceptSynAbsorbed: int = 0  # SYN retransmissions of a pending request
    InterceptAccepted: int = 0
    InterceptRefused: int = 0
    InterceptExpired: int = 0

    def snapshot(self) -> dict[str, int]:
        """All counters by name, for the API, the CLI and tests."""
        return asdict(self)

    def nonzero(self) -> dict[str, int]:
        return {name: value for name, value in asdict(self).items() if value}
