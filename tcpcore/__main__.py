"""``python -m tcpcore``: a short tour of the core on a three-way handshake.

Builds the handshake's three segments with the active implementation, parses them back,
verifies their checksums and prints them the way the seed documents draw them.
"""

from __future__ import annotations

import ipaddress

import tcpcore

CLIENT = int(ipaddress.IPv4Address("198.18.0.1"))
SERVER = int(ipaddress.IPv4Address("198.18.0.2"))


def _describe(packet: bytes) -> str:
    ip, tcp = tcpcore.parse_packet(packet)
    assert tcp is not None
    options = []
    if tcp.mss:
        options.append(f"mss {tcp.mss}")
    if tcp.wscale >= 0:
        options.append(f"wscale {tcp.wscale}")
    if tcp.sack_permitted:
        options.append("sackOK")
    if tcp.has_timestamps:
        options.append(f"TS val {tcp.ts_val} ecr {tcp.ts_ecr}")
    return (
        f"{ipaddress.IPv4Address(ip.src)}:{tcp.src_port} > {ipaddress.IPv4Address(ip.dst)}:{tcp.dst_port} "
        f"[{tcpcore.flags_to_str(tcp.flags)}] seq={tcp.seq} ack={tcp.ack} win={tcp.window} "
        f"len={tcp.payload_length} <{', '.join(options)}> "
        f"ip_csum=0x{ip.checksum:04x} tcp_csum=0x{tcp.checksum:04x}"
    )


def _syn(
    src: int,
    dst: int,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    ts: tuple[int, int],
) -> bytes:
    """A SYN or SYN-ACK with the options both ends offer in the seeds' capture."""
    return tcpcore.build_tcp_ipv4(
        src,
        dst,
        sport,
        dport,
        seq,
        ack,
        flags,
        window,
        timestamps=ts,
        mss=1460,
        wscale=7,
        sack_permitted=True,
    )


def main() -> None:
    x, y = 1_000, 5_000  # the seeds' client ISN x and server ISN y
    handshake = [
        (
            "SYN      (client CLOSED -> SYN-SENT)",
            _syn(CLIENT, SERVER, 40000, 80, x, 0, tcpcore.SYN, 64240, (1, 0)),
        ),
        (
            "SYN-ACK  (server LISTEN -> SYN-RECEIVED)",
            _syn(SERVER, CLIENT, 80, 40000, y, x + 1, tcpcore.SYN | tcpcore.ACK, 65160, (7, 1)),
        ),
        (
            "ACK      (client -> ESTABLISHED, then server -> ESTABLISHED)",
            tcpcore.build_tcp_ipv4(
                CLIENT, SERVER, 40000, 80, x + 1, y + 1, tcpcore.ACK, 502, timestamps=(2, 7)
            ),
        ),
    ]
    print(f"tcpcore implementation: {tcpcore.IMPLEMENTATION}")
    for title, packet in handshake:
        print(f"{title}\n    {_describe(packet)}")
        # parse_packet verified both checksums; the sum over a valid header is zero.
        assert tcpcore.internet_checksum(memoryview(packet)[:20]) == 0


if __name__ == "__main__":
    main()
