"""Protocol numbers and TCP flag bits (RFC 9293 section 3.1, RFC 3168 for ECE/CWR)."""

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17

#: Minimum header lengths in bytes.
IPV4_HEADER_MIN = 20
TCP_HEADER_MIN = 20
#: TCP options fit in data offset 15 * 4 - 20 bytes.
TCP_OPTIONS_MAX = 40

#: TCP option kinds (RFC 9293, RFC 7323, RFC 2018).
OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERMITTED = 4
OPT_SACK = 5
OPT_TIMESTAMPS = 8

_FLAG_NAMES = ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (ACK, "."), (URG, "U"), (ECE, "E"), (CWR, "W"))


def flags_to_str(flags: int) -> str:
    """tcpdump-style flag string: SYN+ACK -> 'S.', bare ACK -> '.'."""
    return "".join(name for bit, name in _FLAG_NAMES if flags & bit) or "none"
