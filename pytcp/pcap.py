"""Classic libpcap capture writer for raw IP packets (readable by tcpdump, Wireshark, scapy).

Format: https://www.tcpdump.org/manpages/pcap-savefile.5.html. Fields are written little-endian with
the 0xA1B2C3D4 magic (microsecond timestamps) so a capture is byte-identical on every platform.
Timestamps are arguments: the simulator passes virtual time, the runtime passes ``time.time()``.
"""

from __future__ import annotations

import math
import os
import struct
from types import TracebackType
from typing import IO, Self

from tcpcore._types import Buffer

__all__ = ["LINKTYPE_RAW", "SNAPLEN", "PcapWriter", "open_pcap"]

#: Raw IPv4/IPv6, version read from the first nibble (tcpdump.org link-layer header types).
LINKTYPE_RAW = 101
#: tcpdump's default snapshot length since 4.0; larger than any IPv4 packet, so nothing is cut.
SNAPLEN = 262144

_MAGIC_USEC = 0xA1B2C3D4
# magic, version 2.4, thiszone, sigfigs, snaplen, linktype
_FILE_HEADER = struct.Struct("<IHHiIII")
# ts_sec, ts_usec, incl_len, orig_len
_RECORD_HEADER = struct.Struct("<IIII")
_USEC = 1_000_000


class PcapWriter:
    """Writes one capture to a binary stream; closes the stream on close() only if ``close_stream``."""

    def __init__(self, stream: IO[bytes], *, close_stream: bool = False) -> None:
        self._stream: IO[bytes] | None = stream
        self._close_stream = close_stream
        stream.write(_FILE_HEADER.pack(_MAGIC_USEC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_RAW))

    def write(self, packet: Buffer, timestamp: float) -> None:
        """Append one raw IP packet captured at ``timestamp`` (seconds since the epoch, >= 0)."""
        stream = self._stream
        if stream is None:
            raise ValueError("write to a closed PcapWriter")
        if not math.isfinite(timestamp):
            raise ValueError(f"pcap timestamp must be finite, got {timestamp!r}")
        # Round once in integer microseconds so 0.9999996 carries into the seconds field.
        seconds, micros = divmod(round(timestamp * _USEC), _USEC)
        if not 0 <= seconds < 1 << 32:
            raise ValueError(f"pcap timestamp out of the 32-bit seconds range: {timestamp!r}")
        data = memoryview(packet).cast("B")
        length = len(data)
        captured = min(length, SNAPLEN)
        stream.write(_RECORD_HEADER.pack(seconds, micros, captured, length))
        stream.write(data[:captured])

    def flush(self) -> None:
        """Push buffered records to the file, e.g. so a live ``tcpdump -r`` sees them."""
        if self._stream is not None:
            self._stream.flush()

    def close(self) -> None:
        """Flush, and close the stream if this writer owns it. Idempotent."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        if self._close_stream:
            stream.close()
        else:
            stream.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_pcap(path: str | os.PathLike[str]) -> PcapWriter:
    """Create (or truncate) a capture file at ``path``; the writer closes it."""
    return PcapWriter(open(path, "wb"), close_stream=True)  # the writer owns and closes the file
