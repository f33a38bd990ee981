"""Sysctl-like knobs of the TCP engine: one frozen, validated ``TCPConfig``.

Each knob's ``doc`` (field metadata, listed by ``describe()`` for the CLI) derives its default, names the
Linux sysctl or constant it mirrors and the RFC that constrains it; its bounds sit next to it. Validation
runs once, at construction, so the engine can trust every value.
"""

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar, cast

__all__ = ["ConfigError", "TCPConfig", "check_knob"]

_T = TypeVar("_T")

# The largest window TCP can express: 65535 shifted by the maximum scale 14 (RFC 7323 2.3).
_MAX_WINDOW = 65535 << 14
# Linux keeps TCP_USER_TIMEOUT in int milliseconds.
_MAX_USER_TIMEOUT = (2**31 - 1) / 1000
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(ValueError):
    """A knob is unknown, of the wrong type or out of range; the message names it."""


def _knob(
    default: _T,
    doc: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] = (),
) -> _T:
    """A field whose metadata carries its documentation and static bounds (inclusive)."""
    return field(default=default, metadata={"doc": doc, "lo": lo, "hi": hi, "choices": choices})


@dataclass(frozen=True, slots=True, kw_only=True)
class TCPConfig:
    """Stack-wide TCP settings; per-socket options start from these values."""

    mss: int = _knob(
        1460,
        "Maximum segment size we announce: a 1500-byte Ethernet MTU minus 20 bytes of IPv4 and 20 of TCP "
        "header (RFC 9293 3.7.1). From 88 (Linux TCP_MIN_MSS) to 65495 (65535-byte loopback MTU minus 40).",
        lo=88,
        hi=65495,
    )
    recv_buffer: int = _knob(
        262144,
        "Receive buffer in bytes; it bounds the advertised window. 256 KiB holds the bandwidth-delay product "
        "of ~2 Gbit/s at 1 ms RTT (2e9 / 8 * 1e-3 = 250 kB): LAN and same-host paths start at full speed. "
        "It is the initial size: while the application reads more per RTT than before, it grows to about "
        "twice what is read per RTT, up to max_buffer (Linux tcp_rmem and tcp_rcv_space_adjust), unless "
        "SO_RCVBUF fixes it. From 2*mss to max_buffer.",
    )
    send_buffer: int = _knob(
        262144,
        "Send buffer in bytes: the same ~2 Gbit/s x 1 ms bandwidth-delay product as recv_buffer, so the "
        "sender can keep a full window in flight. It is the initial size: while the application keeps it "
        "full it grows to two congestion windows, up to max_buffer (Linux tcp_wmem and tcp_sndbuf_expand), "
        "unless SO_SNDBUF fixes it. From 2*mss to max_buffer.",
    )
    max_buffer: int = _knob(
        4194304,
        "Upper bound for the buffers, their autotuning and SO_RCVBUF/SO_SNDBUF values: 4 MiB, Linux's "
        "tcp_wmem maximum; it caps the memory one connection can pin, and the window scale of our SYN is "
        "derived from it so a buffer of this size can be advertised. At most 65535 << 14, the largest "
        "scaled window (RFC 7323 2.3).",
        lo=2 * 88,
        hi=_MAX_WINDOW,
    )
    initial_cwnd_segments: int = _knob(
        10,
        "Initial congestion window in segments: IW10 of RFC 6928 (Linux TCP_INIT_CWND); in bytes "
        "min(n*mss, max(2*mss, n*1460)). Bounded at 100, ten times the RFC value: room for experiments, "
        "not for floods.",
        lo=1,
        hi=100,
    )
    congestion_control: str = _knob(
        "cubic",
        "Congestion control by registered name (pytcp.congestion.available()): cubic (RFC 9438) is Linux's "
        "default tcp_congestion_control; reno is RFC 5681.",
    )
    sack: bool = _knob(True, "Negotiate Selective Acknowledgment (RFC 2018); Linux tcp_sack=1.")
    dsack: bool = _knob(
        True, "Report duplicate segments with D-SACK (RFC 2883) when SACK is negotiated; Linux tcp_dsack=1."
    )
    timestamps: bool = _knob(
        True, "Negotiate Timestamps for RTT measurement and PAWS (RFC 7323 3-5); Linux tcp_timestamps=1."
    )
    window_scaling: bool = _knob(
        True,
        "Negotiate Window Scale (RFC 7323 2), needed for windows above 64 KiB; Linux tcp_window_scaling=1.",
    )
    nodelay: bool = _knob(
        False,
        "Default for TCP_NODELAY: off keeps Nagle's algorithm (RFC 896), which RFC 9293 3.7.4 says a TCP "
        "SHOULD implement and Linux enables on new sockets.",
    )
    delayed_ack: float = _knob(
        0.040,
        "Delayed-ACK timeout in seconds: 40 ms, Linux TCP_DELACK_MIN. RFC 9293 3.8.6.3 requires less than "
        "0.5 s; the bound is 1 ms to 200 ms (Linux TCP_DELACK_MAX).",
        lo=0.001,
        hi=0.2,
    )
    quickack_segments: int = _knob(
        2,
        "Acknowledge at least every this many full-sized segments: 2, as RFC 5681 4.2 and RFC 9293 3.8.6.3 "
        "say an ACK SHOULD go out for every second one; 1 acknowledges each segment.",
        lo=1,
        hi=2,
    )
    rto_initial: float = _knob(
        1.0,
        "Retransmission timeout before the first RTT sample: 1 s, RFC 6298 2.1 (Linux TCP_TIMEOUT_INIT). "
        "Between rto_min and rto_max.",
        lo=0.001,
        hi=120.0,
    )
    rto_min: float = _knob(
        0.2,
        "Lower bound of the RTO: 200 ms, Linux TCP_RTO_MIN. RFC 6298 2.4 says 1 s; Linux (and this engine) "
        "undercut it so LAN losses recover in milliseconds, not seconds.",
        lo=0.001,
        hi=120.0,
    )
    rto_max: float = _knob(
        120.0,
        "Upper bound of the backed-off RTO: 120 s, Linux TCP_RTO_MAX and its ceiling (RFC 6298 2.5 allows "
        "any cap of at least 60 s).",
        lo=0.001,
        hi=120.0,
    )
    syn_retries: int = _knob(
        6,
        "SYN retransmissions before connect() fails: Linux tcp_syn_retries=6, 127 s with the RTO doubling "
        "from 1 s (RFC 9293 3.8.3 asks for 3 minutes; Linux is shorter). From 1 to 127 (MAX_TCP_SYNCNT).",
        lo=1,
        hi=127,
    )
    synack_retries: int = _knob(
        5,
        "SYN-ACK retransmissions before a half-open connection is dropped: Linux tcp_synack_retries=5, "
        "63 s from a 1 s RTO. From 1 to 127.",
        lo=1,
        hi=127,
    )
    retries2: int = _knob(
        15,
        "Retransmissions of data, FIN or unanswered zero-window probes before the connection is aborted: "
        "Linux tcp_retries2=15, about 924.6 s from a 200 ms RTO capped at 120 s, well above RFC 9293 3.8.3's "
        "100 s minimum for R2. From 1 to 127.",
        lo=1,
        hi=127,
    )
    orphan_retries: int = _knob(
        8,
        "Retransmissions before a connection the application has closed gives up: Linux tcp_orphan_retries, "
        "whose default 0 means 8. From 1 to 127.",
        lo=1,
        hi=127,
    )
    msl: float = _knob(
        30.0,
        "Maximum segment lifetime in seconds: TIME-WAIT lasts 2*msl = 60 s, as Linux TCP_TIMEWAIT_LEN "
        "(RFC 9293 3.4.2 assumes 2 minutes; Linux shortens it). At most 120 s.",
        lo=0.001,
        hi=120.0,
    )
    fin_timeout: float = _knob(
        60.0,
        "Seconds an orphaned connection may wait in FIN-WAIT-2 for the peer's FIN: Linux tcp_fin_timeout=60 "
        "(RFC 9293 has no such timer). At most 120 s, Linux TCP_FIN_TIMEOUT_MAX.",
        lo=0.001,
        hi=120.0,
    )
    tw_reuse: bool = _knob(
        False,
        "Let connect() take over a 4-tuple in TIME-WAIT when timestamps show the new incarnation is newer "
        "(Linux tcp_tw_reuse, RFC 6191). Off: Linux's default enables it for loopback only.",
    )
    keepalive_time: float = _knob(
        7200.0,
        "Idle seconds before the first keep-alive probe: 2 hours, the minimum default RFC 1122 4.2.3.6 "
        "allows; Linux tcp_keepalive_time. From 1 to 32767 (Linux MAX_TCP_KEEPIDLE).",
        lo=1.0,
        hi=32767.0,
    )
    keepalive_intvl: float = _knob(
        75.0,
        "Seconds between unanswered keep-alive probes: Linux tcp_keepalive_intvl=75. From 1 to 32767 "
        "(Linux MAX_TCP_KEEPINTVL).",
        lo=1.0,
        hi=32767.0,
    )
    keepalive_probes: int = _knob(
        9,
        "Unanswered keep-alive probes before the connection is dropped: Linux tcp_keepalive_probes=9. "
        "From 1 to 127 (Linux MAX_TCP_KEEPCNT).",
        lo=1,
        hi=127,
    )
    keepalive: bool = _knob(
        False, "Default for SO_KEEPALIVE: off, as RFC 1122 4.2.3.6 requires keep-alives to default to off."
    )
    user_timeout: float = _knob(
        0.0,
        "Default TCP_USER_TIMEOUT in seconds (RFC 5482; RFC 9293 3.10.8): how long sent data may stay "
        "unacknowledged before the connection is aborted. 0 leaves it to retries2, as Linux does.",
        lo=0.0,
        hi=_MAX_USER_TIMEOUT,
    )
    max_syn_backlog: int = _knob(
        1024,
        "Half-open connections a listener keeps before SYN cookies (or drops) take over: Linux "
        "tcp_max_syn_backlog, which is 1024 on hosts with a few GiB of memory. From 1 to max_connections.",
    )
    somaxconn: int = _knob(
        4096,
        "Cap on the listen() backlog of completed connections: Linux net.core.somaxconn=4096 (since 5.4). "
        "From 1 to 65535 (Linux kept it in 16 bits before 5.4).",
        lo=1,
        hi=65535,
    )
    syncookies: str = _knob(
        "auto",
        "SYN cookies (RFC 4987 3.6): off; auto sends them only when a listener's SYN queue is full "
        "(Linux tcp_syncookies=1); on sends them for every SYN (tcp_syncookies=2).",
        choices=("off", "auto", "on"),
    )
    max_connections: int = _knob(
        65536,
        "Connections in any state (TIME-WAIT included) before new ones are refused: 64 Ki, the ephemeral "
        "port space of one address pair, which bounds the memory TCBs take. From 1 to 2**20.",
        lo=1,
        hi=2**20,
    )
    challenge_ack_limit: int = _knob(
        1000,
        "Challenge ACKs sent per second, stack-wide (RFC 5961 7 rate limit): Linux's long-standing "
        "tcp_challenge_ack_limit default. From 1 to 2**31-1.",
        lo=1,
        hi=2**31 - 1,
    )
    ttl: int = _knob(
        64,
        "IPv4 time-to-live of sent packets: Linux ip_default_ttl=64. From 1 to 255 (8 bits).",
        lo=1,
        hi=255,
    )
    max_reassembly_ranges: int = _knob(
        32,
        "Out-of-order ranges held per connection before new holes are dropped: each insertion costs "
        "O(ranges), and 32 separate holes in one window is far more than SACK can even report (4 blocks "
        "per ACK, RFC 2018 3). From 1 to 1024.",
        lo=1,
        hi=1024,
    )
    gso_max_size: int = _knob(
        0,
        "Largest TCP/IPv4 packet (headers included) handed to a link with segmentation offload, which "
        "cuts it into MSS-sized segments (Linux sk_gso_max_size, from the device's gso_max_size). 0: the "
        "link has none and every segment is MSS-sized (the simulator, a TUN device without offloads). "
        "StackRuntime.open sets 65535, the IPv4 limit TUN's legacy GSO_MAX_SIZE allows, when the device "
        "has offloads. Up to 65535 (the 16-bit IPv4 total length, RFC 791 3.1).",
        lo=0,
        hi=0xFFFF,
    )

    def __post_init__(self) -> None:
        for name in _FIELDS:
            object.__setattr__(self, name, check_knob(name, getattr(self, name)))
        for name in ("recv_buffer", "send_buffer"):
            _check_range(name, getattr(self, name), 2 * self.mss, self.max_buffer, "2*mss..max_buffer = ")
        _check_range("rto_initial", self.rto_initial, self.rto_min, self.rto_max, "rto_min..rto_max = ")
        _check_range(
            "max_syn_backlog", self.max_syn_backlog, 1, self.max_connections, "1..max_connections = "
        )
        from pytcp.congestion import available  # here, so algorithms may import this module without a cycle

        if self.congestion_control not in available():
            choices = ", ".join(available())
            raise ConfigError(
                f"congestion_control must be one of {choices} (got {self.congestion_control!r})"
            )

    @property
    def time_wait(self) -> float:
        """How long TIME-WAIT lasts: 2 * MSL (RFC 9293 3.6.1 MUST-13)."""
        return 2 * self.msl

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied, validated like a new config."""
        _check_known(changes)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, object]) -> Self:
        """A config from knob names to values; strings are converted, for command lines and environments."""
        _check_known(mapping)
        values: dict[str, Any] = {name: _coerce(name, _KINDS[name], value) for name, value in mapping.items()}
        return cls(**values)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """A config from a TOML file: knobs at top level, or in a ``[tcp]`` table beside other sections."""
        try:
            with open(path, "rb") as fp:
                document = tomllib.load(fp)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{os.fspath(path)}: {exc}") from None
        table = document.get("tcp", document)
        if not isinstance(table, dict):
            raise ConfigError(f"{os.fspath(path)}: tcp must be a table")
        return cls.from_mapping(table)

    def describe(self) -> list[tuple[str, object, str]]:
        """(name, value, doc) for every knob, in declaration order."""
        return [(f.name, getattr(self, f.name), f.metadata["doc"]) for f in dataclasses.fields(self)]


# Each knob's type: a class, since this module does not postpone the evaluation of annotations.
_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(TCPConfig)}
_KINDS: dict[str, type] = {name: cast(type, f.type) for name, f in _FIELDS.items()}


def _check_known(names: Mapping[str, object]) -> None:
    unknown = sorted(set(names) - _KINDS.keys())
    if unknown:
        raise ConfigError(f"unknown knob(s): {', '.join(unknown)}")


def check_knob(name: str, value: Any) -> Any:
    """``value`` checked against knob ``name``'s type and static bounds (ints given for float knobs
    become floats); ConfigError (a ValueError) otherwise. Per-connection options that mirror a knob
    (TCP_KEEPINTVL, TCP_USER_TIMEOUT, ...) are checked here too, so both accept the same values."""
    kind = _KINDS[name]
    accepted = (int, float) if kind is float else kind
    # bool subclasses int: a bool passes only for a bool knob, and only a bool passes for one.
    if not isinstance(value, accepted) or isinstance(value, bool) is not (kind is bool):
        raise ConfigError(f"{name} must be {kind.__name__} (got {value!r})")
    if kind is float:
        value = float(cast(float, value))
    metadata = _FIELDS[name].metadata
    lo, hi, choices = metadata["lo"], metadata["hi"], metadata["choices"]
    if choices and value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)} (got {value!r})")
    if lo is not None:
        _check_range(name, value, lo, hi)
    return value


def _check_range(name: str, value: float, lo: float, hi: float, spec: str = "") -> None:
    if not lo <= value <= hi:  # written so that NaN fails too
        raise ConfigError(f"{name} must be in {spec}{lo}..{hi} (got {value!r})")


def _coerce(name: str, kind: type, value: object) -> object:
    """A string value converted to the knob's type; other values are left for validation."""
    if not isinstance(value, str) or kind is str:
        return value
    text = value.strip().lower()
    if kind is bool and text in _TRUE | _FALSE:
        return text in _TRUE
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        pass
    raise ConfigError(f"{name} must be {kind.__name__} (got {value!r})")
