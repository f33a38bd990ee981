"""Two connections back to back on a virtual clock with seeded random loss: every byte arrives, in order,
both ways, and both ends close cleanly (the engine's self-check; pytcp.sim runs the full stacks)."""

from __future__ import annotations

import random
import socket

import pytest

from pytcp.config import TCPConfig
from pytcp.state import State

FULL = TCPConfig()  # SACK, timestamps, window scaling, CUBIC


def transfer(tcp, config, loss, seed, size, *, both_ways=True, max_steps=3_000_000):
    pair = tcp.Pair(config, loss=loss, seed=seed)
    rng = random.Random(seed)
    out = {"c": rng.randbytes(size), "s": rng.randbytes(size if both_ways else 0)}
    got = {"c": bytearray(), "s": bytearray()}
    sent = {"c": 0, "s": 0}
    shut = {"c": False, "s": False}
    pair.client.connect(0.0)
    for _ in range(max_steps):
        for side, conn in (("c", pair.client), ("s", pair.server)):
            if conn is None or conn.state is State.CLOSED:
                continue
            data = out[side]
            if conn.state in (State.ESTABLISHED, State.CLOSE_WAIT) and sent[side] < len(data):
                chunk = rng.randint(1, 100_000)
                sent[side] += conn.send(memoryview(data)[sent[side] : sent[side] + chunk], pair.now)
            if (
                sent[side] == len(data)
                and not shut[side]
                and conn.state in (State.ESTABLISHED, State.CLOSE_WAIT)
            ):
                conn.shutdown(socket.SHUT_WR, pair.now)
                shut[side] = True
            while chunk := conn.recv(rng.randint(1, 70_000), pair.now):
                got[side] += chunk
            if shut[side] and conn.at_eof:
                conn.close(pair.now)
        if not pair.step():
            break
    assert bytes(got["s"]) == out["c"]
    assert bytes(got["c"]) == out["s"]
    assert pair.client.state is State.CLOSED and pair.server is not None and pair.server.state is State.CLOSED
    return pair


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("loss", [0.0, 0.02, 0.1])
def test_plain_reno_newreno(tcp, loss, seed):
    pair = transfer(tcp, tcp.PLAIN, loss, seed, 300_000)
    if loss:
        assert pair.client.info().total_retrans > 0


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("loss", [0.0, 0.01, 0.05])
def test_full_options_one_megabyte(tcp, loss, seed):
    pair = transfer(tcp, FULL, loss, seed, 1_000_000)
    if loss:
        assert pair.mib_client.TCPSackRecovery + pair.mib_client.TCPTimeouts > 0
        assert pair.mib_client.TCPRenoRecovery == 0


def test_heavy_loss_still_completes(tcp):
    transfer(tcp, FULL, 0.2, 11, 100_000, both_ways=False)


def test_tiny_buffers(tcp):
    config = tcp.PLAIN.replace(recv_buffer=2000, send_buffer=2000)
    transfer(tcp, config, 0.05, 4, 50_000)
