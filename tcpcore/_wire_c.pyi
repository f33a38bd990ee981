"""Stub of the compiled wire module: the same API as tcpcore._wire_py."""

from collections.abc import Sequence

from ._types import Buffer

__all__ = [
    "IPv4Header",
    "TCPSegment",
    "build_ipv4",
    "build_tcp_ipv4",
    "build_tcp_ipv4_into",
    "parse_ipv4",
    "parse_packet",
    "parse_tcp",
    "tcp_options_length",
]

class IPv4Header:
    @property
    def version(self) -> int: ...
    @property
    def header_length(self) -> int: ...
    @property
    def tos(self) -> int: ...
    @property
    def total_length(self) -> int: ...
    @property
    def ident(self) -> int: ...
    @property
    def dont_fragment(self) -> bool: ...
    @property
    def more_fragments(self) -> bool: ...
    @property
    def fragment_offset(self) -> int: ...
    @property
    def ttl(self) -> int: ...
    @property
    def protocol(self) -> int: ...
    @property
    def checksum(self) -> int: ...
    @property
    def src(self) -> int: ...
    @property
    def dst(self) -> int: ...
    @property
    def payload_offset(self) -> int: ...
    @property
    def payload_length(self) -> int: ...
    @property
    def is_fragment(self) -> bool: ...

class TCPSegment:
    @property
    def src_port(self) -> int: ...
    @property
    def dst_port(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def ack(self) -> int: ...
    @property
    def header_length(self) -> int: ...
    @property
    def flags(self) -> int: ...
    @property
    def window(self) -> int: ...
    @property
    def checksum(self) -> int: ...
    @property
    def urgent(self) -> int: ...
    @property
    def mss(self) -> int: ...
    @property
    def wscale(self) -> int: ...
    @property
    def sack_permitted(self) -> bool: ...
    @property
    def has_timestamps(self) -> bool: ...
    @property
    def ts_val(self) -> int: ...
    @property
    def ts_ecr(self) -> int: ...
    @property
    def sack_blocks(self) -> tuple[tuple[int, int], ...]: ...
    @property
    def payload_offset(self) -> int: ...
    @property
    def payload_length(self) -> int: ...
    @property
    def payload(self) -> memoryview: ...

def parse_ipv4(data: Buffer, verify_checksum: bool = True) -> IPv4Header: ...
def parse_tcp(
    data: Buffer, offset: int, length: int, src: int, dst: int, verify_checksum: bool = True
) -> TCPSegment: ...
def parse_packet(data: Buffer, verify_checksum: bool = True) -> tuple[IPv4Header, TCPSegment | None]: ...
def tcp_options_length(
    mss: int = 0,
    wscale: int = -1,
    sack_permitted: bool = False,
    timestamps: bool = False,
    sack_blocks: int = 0,
) -> int: ...
def build_tcp_ipv4(
    src: int,
    dst: int,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: Buffer = b"",
    *,
    mss: int = 0,
    wscale: int = -1,
    sack_permitted: bool = False,
    timestamps: tuple[int, int] | None = None,
    sack_blocks: Sequence[tuple[int, int]] = (),
    urgent: int = 0,
    ttl: int = 64,
    ident: int = 0,
    tos: int = 0,
    dont_fragment: bool = True,
    offload_checksum: bool = False,
) -> bytes: ...
def build_tcp_ipv4_into(
    buffer: Buffer,
    offset: int,
    src: int,
    dst: int,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: Buffer = b"",
    *,
    mss: int = 0,
    wscale: int = -1,
    sack_permitted: bool = False,
    timestamps: tuple[int, int] | None = None,
    sack_blocks: Sequence[tuple[int, int]] = (),
    urgent: int = 0,
    ttl: int = 64,
    ident: int = 0,
    tos: int = 0,
    dont_fragment: bool = True,
    offload_checksum: bool = False,
) -> int: ...
def build_ipv4(
    src: int,
    dst: int,
    protocol: int,
    payload: Buffer,
    *,
    ttl: int = 64,
    ident: int = 0,
    tos: int = 0,
    dont_fragment: bool = True,
) -> bytes: ...
