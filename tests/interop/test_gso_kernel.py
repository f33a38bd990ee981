"""Segmentation offload output against the kernel: with offloads the stack sends 64 KB super-segments the
TUN device cuts into MSS-sized segments with completed checksums, and the kernel receives every byte, in
order; without offloads nothing but MSS-sized packets leaves. Inside a namespace the test creates
(198.18.0.0/15 addresses only), every wait bounded.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator

import pytest

from pytcp.netns import NetNamespace, in_namespace
from pytcp.runtime import StackRuntime

KERNEL = "198.18.0.1"
STACK = "198.18.0.2"
PORT = 9100
STEP = 30.0  # bound for one transfer (tens of MB take well under a second)
SIZE = 32 << 20
MTU = 1500


@pytest.fixture(params=[True, False], ids=["offload", "no-offload"])
def runtime(request: pytest.FixtureRequest, netns: NetNamespace) -> Iterator[StackRuntime]:
    rt = StackRuntime.open(
        "pytcp0", stack_address=STACK, kernel_address=KERNEL, offload=request.param, netns=netns
    )
    rt.start()
    try:
        yield rt
    finally:
        rt.stop(5.0)


def pattern(size: int) -> bytes:
    """Data no two 64 KB windows of which are alike, so a misplaced piece changes the digest."""
    block = hashlib.sha256(b"gso").digest() * 2048  # 64 KiB
    return b"".join(bytes([i & 0xFF]) + block[1:] for i in range(size // len(block)))


@pytest.mark.netns
def test_kernel_receives_a_large_transfer_intact(runtime: StackRuntime, netns: NetNamespace) -> None:
    data = pattern(SIZE)
    digest: list[bytes] = []
    with in_namespace(netns):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with server:
        server.bind((KERNEL, PORT))
        server.listen()
        server.settimeout(STEP)

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(STEP)
                hasher = hashlib.sha256()
                while chunk := conn.recv(1 << 20):
                    hasher.update(chunk)
                digest.append(hasher.digest())

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with runtime.socket() as client:
            client.settimeout(STEP)
            client.connect((KERNEL, PORT))
            client.sendall(data)
        thread.join(STEP)
        assert not thread.is_alive(), "the kernel side never saw the end of the stream"
    assert digest == [hashlib.sha256(data).digest()]
    counters = runtime.counters()
    tx = counters["runtime"]
    if runtime.tun.offload:  # type: ignore[attr-defined]  # a TunDevice here
        # Most of the data left as super-segments: far fewer writes than MSS-sized segments.
        assert tx["tx_gso"] > 0 and tx["tx_bytes"] / tx["tx_packets"] > 4 * MTU
    else:
        assert tx["tx_gso"] == 0 and tx["tx_bytes"] / tx["tx_packets"] <= MTU
