"""Micro benchmarks of the engine's per-segment work: two Stacks back to back, no device, no threads.

They measure what bounds RR and CRR on one CPU (docs/performance.md): the Python the engine runs per
segment. The engine uses whichever tcpcore implementation is active, so each benchmark carries that
name as its parameter (``[cython]``, or ``[python]`` under TCPCORE_NO_EXTENSIONS=1) and the report
pairs the two when both runs land in one JSON file.
"""

from __future__ import annotations

from typing import Any

import pytest

import tcpcore
from pytcp.config import TCPConfig
from pytcp.connection import Connection
from pytcp.stack import Stack

CLIENT = 0xC6120001  # 198.18.0.1
SERVER = 0xC6120002  # 198.18.0.2
PORT = 80
#: As StackRuntime.open configures a device with offloads: 64 KB super-segments out.
CONFIG = TCPConfig(gso_max_size=65535)
#: Virtual seconds per round trip: well under every timer, so none fires.
STEP = 1e-4


class BackToBack:
    """A client and a server Stack whose packets are handed over directly, on a virtual clock."""

    def __init__(self) -> None:
        self.client = Stack(CLIENT, CONFIG, seed=1)
        self.server = Stack(SERVER, CONFIG, seed=2)
        self.now = 1.0
        self.listener = self.server.listen(PORT)

    def deliver(self, src: Stack, dst: Stack) -> None:
        """Everything ``src`` has to send, received by ``dst`` (offload-trusted, as from a TUN device)."""
        for packet in src.datagrams_to_send(self.now):
            dst.receive(packet, self.now, checksum_verified=True)
        src.get_timer()
        while src.next_event() is not None:
            pass

    def settle(self) -> None:
        """Both sides' output and events, until nothing moves (at most a handful of exchanges)."""
        for _ in range(4):
            self.deliver(self.client, self.server)
            self.deliver(self.server, self.client)

    def connect(self) -> tuple[Connection, Connection]:
        conn = self.client.connect(SERVER, PORT, self.now)
        self.settle()
        child = self.server.accept(self.listener)
        assert child is not None
        conn.nodelay = child.nodelay = True
        return conn, child


#: The active tcpcore implementation as the test's parameter, for the report's pairing.
IMPLEMENTATION = pytest.mark.parametrize("impl", [tcpcore.IMPLEMENTATION])


@IMPLEMENTATION
@pytest.mark.benchmark(group="engine-rr")
def test_engine_request_response(benchmark: Any, impl: str) -> None:
    """One 1-byte request and its 1-byte reply on an established connection (netperf TCP_RR)."""
    link = BackToBack()
    conn, child = link.connect()

    def round_trip() -> None:
        link.now += STEP
        conn.send(b"x", link.now)
        link.deliver(link.client, link.server)
        child.send(child.recv(64, link.now), link.now)
        link.deliver(link.server, link.client)
        assert conn.recv(64, link.now) == b"x"

    benchmark(round_trip)


@IMPLEMENTATION
@pytest.mark.benchmark(group="engine-crr")
def test_engine_connect_request_response_close(benchmark: Any, impl: str) -> None:
    """Connect, 1 byte each way, close from the client side (netperf TCP_CRR); the clock then jumps
    past TIME-WAIT and the timers reap it, so ports and the connection table never run out."""
    link = BackToBack()

    def connection() -> None:
        link.now += STEP
        conn, child = link.connect()
        conn.send(b"x", link.now)
        link.settle()
        child.send(child.recv(64, link.now), link.now)
        link.settle()
        assert conn.recv(64, link.now) == b"x"
        conn.close(link.now)
        link.settle()
        child.close(link.now)
        link.settle()
        link.now += CONFIG.time_wait + 1
        link.client.handle_timer(link.now)
        link.server.handle_timer(link.now)
        assert not link.client.connections() and not link.server.connections()

    benchmark(connection)
