"""The pcap writer, read back by scapy and (when installed) tcpdump."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from scapy.utils import rdpcap

from pytcp.pcap import LINKTYPE_RAW, SNAPLEN, PcapWriter, open_pcap
from pytcp.sim import LinkConfig, Network
from tcpcore import internet_checksum


def ipv4_udp(src: str, dst: str, payload: bytes) -> bytes:
    """A checksummed IPv4 header carrying a UDP datagram (UDP checksum 0: RFC 768 'not computed')."""
    udp = struct.pack("!HHHH", 5000, 6000, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
        bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))),
    )  # fmt: skip
    return header[:10] + internet_checksum(header).to_bytes(2, "big") + header[12:] + udp


PACKETS = [
    (ipv4_udp("10.0.0.1", "10.0.0.2", b"hello"), 0.0),
    (ipv4_udp("10.0.0.2", "10.0.0.1", b"x" * 1000), 1.5),
    (ipv4_udp("192.168.1.1", "10.0.0.2", b""), 1_700_000_000.123456),
    (ipv4_udp("10.0.0.1", "10.0.0.2", b"carry"), 2.9999996),  # rounds up into the next second
]


def _write(path: Path) -> None:
    with open_pcap(path) as writer:
        for packet, timestamp in PACKETS:
            writer.write(packet, timestamp)


def test_scapy_reads_back_bytes_and_times(tmp_path: Path) -> None:
    path = tmp_path / "trace.pcap"
    _write(path)
    records = rdpcap(str(path))
    assert len(records) == len(PACKETS)
    for record, (packet, timestamp) in zip(records, PACKETS, strict=True):
        assert bytes(record) == packet
        assert int(record.time * 1_000_000) == round(timestamp * 1_000_000)


def test_file_header_and_record_layout() -> None:
    stream = io.BytesIO()
    writer = PcapWriter(stream)
    writer.write(memoryview(b"\x45" + bytes(19)), 2.9999996)
    writer.close()
    data = stream.getvalue()  # the caller's stream stays open
    assert struct.unpack_from("<IHHiIII", data) == (0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_RAW)
    assert struct.unpack_from("<IIII", data, 24) == (3, 0, 20, 20)
    assert data[40:] == b"\x45" + bytes(19)


def test_same_input_same_bytes(tmp_path: Path) -> None:
    _write(tmp_path / "one.pcap")
    _write(tmp_path / "two.pcap")
    assert (tmp_path / "one.pcap").read_bytes() == (tmp_path / "two.pcap").read_bytes()


def test_close_is_idempotent_and_write_after_close_fails(tmp_path: Path) -> None:
    writer = open_pcap(tmp_path / "closed.pcap")
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(PACKETS[0][0], 0.0)


@pytest.mark.parametrize("timestamp", [-1.0, float("nan"), float("inf"), 2.0**32])
def test_timestamps_outside_the_format_are_rejected(timestamp: float) -> None:
    writer = PcapWriter(io.BytesIO())
    with pytest.raises(ValueError, match="timestamp"):
        writer.write(PACKETS[0][0], timestamp)


def test_simulator_tap_to_pcap(tmp_path: Path) -> None:
    """Virtual-time capture of delivered packets, as the simulator's users record traces."""
    path = tmp_path / "sim.pcap"

    class Sender:
        address = 0x0A000001

        def __init__(self) -> None:
            self.outbox = [ipv4_udp("10.0.0.1", "10.0.0.2", bytes([i]) * 10) for i in range(3)]

        def receive(self, packet: bytes, now: float) -> None:
            pass

        def datagrams_to_send(self, now: float) -> list[bytes]:
            out, self.outbox = self.outbox, []
            return out

        def get_timer(self) -> float | None:
            return None

        def handle_timer(self, now: float) -> None:
            pass

    class Receiver(Sender):
        address = 0x0A000002

    with open_pcap(path) as writer:

        def capture(now: float, direction: str, packet: bytes) -> None:
            if direction == "in":
                writer.write(packet, now)

        net = Network(1, tap=capture)
        receiver = Receiver()
        receiver.outbox = []
        net.link(Sender(), receiver, LinkConfig(latency=0.002, bandwidth=10_000.0))
        net.run()
    records = rdpcap(str(path))
    assert [bytes(r)[20 + 8] for r in records] == [0, 1, 2]
    assert [round(float(r.time), 6) for r in records] == [0.0058, 0.0096, 0.0134]


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_tcpdump_reads_the_capture(tmp_path: Path) -> None:
    path = tmp_path / "trace.pcap"
    _write(path)
    tcpdump = shutil.which("tcpdump")
    assert tcpdump is not None
    result = subprocess.run(
        [tcpdump, "-nn", "-tt", "-r", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(PACKETS)
    assert lines[0].startswith("0.000000 IP 10.0.0.1.5000 > 10.0.0.2.6000: UDP, length 5")
    assert lines[1].startswith("1.500000 IP 10.0.0.2.5000 > 10.0.0.1.6000: UDP, length 1000")
    assert lines[2].startswith("1700000000.123456 IP 192.168.1.1.5000 > 10.0.0.2.6000: UDP, length 0")
    assert lines[3].startswith("3.000000 ")
    assert "link-type RAW" in result.stderr
