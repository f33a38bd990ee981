"""Cross-check the wire formats with scapy: its packets parse to the same fields, ours parse in scapy."""

from __future__ import annotations

import ipaddress
import logging
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

logging.getLogger("scapy").setLevel(logging.ERROR)  # no startup warnings (routes, IPv6, crypto)

from scapy.compat import raw  # noqa: E402
from scapy.layers.inet import IP, TCP, IPOption_NOP, IPOption_Router_Alert, IPOption_Timestamp  # noqa: E402

U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (scapy option, encoded length). Unknown kinds avoid every kind the parser interprets.
KNOWN_KINDS = {0, 1, 2, 3, 4, 5, 8}
OPTION = st.one_of(
    U16.map(lambda v: (("MSS", v), 4)),
    st.integers(0, 255).map(lambda v: (("WScale", v), 3)),
    st.just((("SAckOK", b""), 2)),
    st.tuples(U32, U32).map(lambda t: (("Timestamp", t), 10)),
    st.integers(1, 4)
    .flatmap(lambda n: st.lists(U32, min_size=2 * n, max_size=2 * n))
    .map(lambda edges: (("SAck", tuple(edges)), 2 + 4 * len(edges))),
    st.just((("NOP", None), 1)),
    st.tuples(st.integers(6, 254).filter(lambda k: k not in KNOWN_KINDS), st.binary(max_size=6)).map(
        lambda t: (t, 2 + len(t[1]))
    ),
    # Known kinds with a wrong length: sent raw, ignored by the parser (Linux does the same).
    st.sampled_from([(2, b"\x05"), (3, b""), (4, b"\x00"), (8, bytes(6)), (5, bytes(4))]).map(
        lambda t: (t, 2 + len(t[1]))
    ),
)


def fitting(options: list[tuple[Any, int]]) -> list[tuple[Any, int]]:
    """The leading options that fit in the 40 option bytes."""
    kept, used = [], 0
    for option, size in options:
        if used + size > 40:
            break
        kept.append((option, size))
        used += size
    return kept


OPTIONS = st.lists(OPTION, max_size=10).map(fitting)


def expected_options(options: list[tuple[Any, int]]) -> dict[str, Any]:
    """What the parser must report: the last well-formed instance of each option wins."""
    out: dict[str, Any] = {
        "mss": 0,
        "wscale": -1,
        "sack_permitted": False,
        "has_timestamps": False,
        "ts_val": 0,
        "ts_ecr": 0,
        "sack_blocks": (),
    }
    for (name, value), _ in options:
        if name == "MSS":
            out["mss"] = value
        elif name == "WScale":
            out["wscale"] = value
        elif name == "SAckOK":
            out["sack_permitted"] = True
        elif name == "Timestamp":
            out.update(has_timestamps=True, ts_val=value[0], ts_ecr=value[1])
        elif name == "SAck":
            out["sack_blocks"] = tuple(zip(value[::2], value[1::2], strict=True))
    return out


@st.composite
def scapy_packets(draw: st.DrawFn) -> tuple[bytes, dict[str, Any], list[tuple[Any, int]]]:
    fields: dict[str, Any] = {
        "src": draw(U32),
        "dst": draw(U32),
        "tos": draw(st.integers(0, 255)),
        "id": draw(U16),
        "ttl": draw(st.integers(0, 255)),
        "df": draw(st.booleans()),
        "mf": draw(st.booleans()),
        "frag": draw(st.integers(0, 0x1FFF) | st.just(0)),
        # IPv4 options are skipped whole, whatever they hold.
        "ip_options": draw(
            st.sampled_from([[], [IPOption_Router_Alert()], [IPOption_NOP()], [IPOption_Timestamp()]])
        ),
        "sport": draw(U16),
        "dport": draw(U16),
        "seq": draw(U32),
        "ack": draw(U32),
        "flags": draw(st.integers(0, 255)),
        "window": draw(U16),
        "urgptr": draw(U16),
        "payload": draw(st.binary(max_size=64)),
    }
    options = draw(OPTIONS)
    packet = IP(
        src=str(dotted(fields["src"])),
        dst=str(dotted(fields["dst"])),
        tos=fields["tos"],
        id=fields["id"],
        ttl=fields["ttl"],
        flags=(2 if fields["df"] else 0) | (1 if fields["mf"] else 0),
        frag=fields["frag"],
        options=fields["ip_options"],
    ) / TCP(
        sport=fields["sport"],
        dport=fields["dport"],
        seq=fields["seq"],
        ack=fields["ack"],
        flags=fields["flags"],
        window=fields["window"],
        urgptr=fields["urgptr"],
        options=[option for option, _ in options],
    )
    return raw(packet / fields["payload"]), fields, options


def dotted(address: int) -> str:
    return str(ipaddress.IPv4Address(address))


@SETTINGS
@given(case=scapy_packets())
def test_parses_scapy_packets(core: SimpleNamespace, case: tuple[bytes, dict[str, Any], list[Any]]) -> None:
    data, fields, options = case
    ip, seg = core.parse_packet(data)  # scapy's checksums must verify
    options_length = len(raw(IP(options=fields["ip_options"]))) - 20
    assert (ip.header_length, ip.payload_offset) == (20 + options_length, 20 + options_length)
    assert (ip.more_fragments, ip.fragment_offset) == (fields["mf"], fields["frag"] * 8)
    if fields["mf"] or fields["frag"]:
        assert ip.is_fragment and seg is None
        seg = core.parse_tcp(data, ip.payload_offset, ip.payload_length, ip.src, ip.dst)
    assert (ip.src, ip.dst, ip.tos, ip.ident, ip.ttl) == (
        fields["src"],
        fields["dst"],
        fields["tos"],
        fields["id"],
        fields["ttl"],
    )
    assert ip.dont_fragment == fields["df"] and ip.total_length == len(data)
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window, seg.urgent) == (
        fields["sport"],
        fields["dport"],
        fields["seq"],
        fields["ack"],
        fields["flags"],
        fields["window"],
        fields["urgptr"],
    )
    for name, value in expected_options(options).items():
        assert getattr(seg, name) == value, name
    assert bytes(seg.payload) == fields["payload"]
    assert seg.header_length == 20 + -(-sum(size for _, size in options) // 4) * 4


def scapy_view(option_list: list[tuple[Any, Any]]) -> dict[str, Any]:
    """Options as scapy decodes them, in the builder's argument names."""
    out: dict[str, Any] = {"mss": 0, "wscale": -1, "sack_permitted": False, "timestamps": None, "sack": ()}
    for name, value in option_list:
        if name == "MSS":
            out["mss"] = value
        elif name == "WScale":
            out["wscale"] = value
        elif name == "SAckOK":
            out["sack_permitted"] = True
        elif name == "Timestamp":
            out["timestamps"] = value
        elif name == "SAck":
            out["sack"] = tuple(zip(value[::2], value[1::2], strict=True))
        else:
            assert name == "NOP", name
    return out


@SETTINGS
@given(
    src=U32,
    dst=U32,
    ports=st.tuples(U16, U16),
    seq=U32,
    ack=U32,
    flags=st.integers(0, 255),
    window=U16,
    urgent=U16,
    payload=st.binary(max_size=300),
    mss=st.one_of(st.just(0), U16),
    wscale=st.integers(-1, 14),
    sack_permitted=st.booleans(),
    timestamps=st.none() | st.tuples(U32, U32),
    sack_blocks=st.lists(st.tuples(U32, U32), max_size=6),
    ttl=st.integers(0, 255),
    ident=U16,
    tos=st.integers(0, 255),
    dont_fragment=st.booleans(),
)
def test_scapy_reads_our_packets(
    core: SimpleNamespace,
    src: int,
    dst: int,
    ports: tuple[int, int],
    seq: int,
    ack: int,
    flags: int,
    window: int,
    urgent: int,
    payload: bytes,
    mss: int,
    wscale: int,
    sack_permitted: bool,
    timestamps: tuple[int, int] | None,
    sack_blocks: list[tuple[int, int]],
    ttl: int,
    ident: int,
    tos: int,
    dont_fragment: bool,
) -> None:
    data = core.build_tcp_ipv4(
        src, dst, *ports, seq, ack, flags, window, payload, mss=mss, wscale=wscale,
        sack_permitted=sack_permitted, timestamps=timestamps, sack_blocks=sack_blocks, urgent=urgent,
        ttl=ttl, ident=ident, tos=tos, dont_fragment=dont_fragment,
    )  # fmt: skip
    packet = IP(data)
    assert (packet.version, packet.ihl, packet.len, packet.frag) == (4, 5, len(data), 0)
    assert (packet.src, packet.dst) == (dotted(src), dotted(dst))
    assert (packet.ttl, packet.id, packet.tos, packet.proto) == (ttl, ident, tos, 6)
    assert int(packet.flags) == (2 if dont_fragment else 0)
    segment = packet[TCP]
    assert (segment.sport, segment.dport, segment.seq, segment.ack) == (*ports, seq, ack)
    assert (int(segment.flags), segment.window, segment.urgptr) == (flags, window, urgent)
    assert bytes(segment.payload) == payload
    got = scapy_view(segment.options)
    used = 4 * bool(mss) + (12 if timestamps else 4 * sack_permitted) + 4 * (wscale >= 0)
    assert got == {
        "mss": mss,
        "wscale": wscale,
        "sack_permitted": sack_permitted,
        "timestamps": timestamps,
        "sack": tuple(sack_blocks[: (40 - used - 4) // 8]),
    }
    # scapy recomputes both checksums from scratch: they must equal ours, byte for byte.
    del packet.chksum
    del segment.chksum
    assert raw(packet) == data


@SETTINGS
@given(
    src=U32,
    dst=U32,
    # IGMP (2) excluded: scapy adds a Router Alert option when it rebuilds an IGMP packet.
    protocol=st.integers(0, 255).filter(lambda p: p != 2),
    payload=st.binary(max_size=100),
    ttl=st.integers(0, 255),
    dont_fragment=st.booleans(),
)
def test_scapy_reads_our_ipv4(
    core: SimpleNamespace, src: int, dst: int, protocol: int, payload: bytes, ttl: int, dont_fragment: bool
) -> None:
    data = core.build_ipv4(src, dst, protocol, payload, ttl=ttl, dont_fragment=dont_fragment)
    packet = IP(data)
    assert (packet.src, packet.dst, packet.proto, packet.ttl, packet.len) == (
        dotted(src),
        dotted(dst),
        protocol,
        ttl,
        len(data),
    )
    assert int(packet.flags) == (2 if dont_fragment else 0)
    del packet.chksum
    assert raw(packet)[:20] == data[:20]
