"""The seeded two-stack transfer: every byte once and in order, clean close, bounded virtual time."""

from __future__ import annotations

import hashlib
import random

import pytest

from pytcp.config import TCPConfig
from pytcp.scenario import StreamCheck, run_transfer
from pytcp.sim import LinkConfig

# (name, link, bytes each way). The whole matrix (x 3 seeds) takes about 5 s on 2 cores with either tcpcore;
# the heavy-loss case moves less data because one packet in five is lost and recovery is RTO-bound.
MATRIX = [
    ("clean", LinkConfig(), 2_000_000),
    # 10 Mbit/s with a 20-packet queue: slow start overflows it, so there is tail-drop loss too.
    ("bandwidth", LinkConfig(bandwidth=1_250_000, queue_limit=20), 1_000_000),
    ("loss1", LinkConfig(loss=0.01, duplicate=0.01, reorder=0.01, corrupt=0.01), 2_000_000),
    ("loss5", LinkConfig(loss=0.05, duplicate=0.01, reorder=0.05, corrupt=0.01), 1_000_000),
    ("heavy20", LinkConfig(loss=0.20, duplicate=0.02, reorder=0.05, corrupt=0.02), 100_000),
]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(("name", "link", "nbytes"), MATRIX, ids=[m[0] for m in MATRIX])
def test_transfer_matrix(seed: int, name: str, link: LinkConfig, nbytes: int) -> None:
    result = run_transfer(seed, link, nbytes)
    assert result.ok, result.failures
    for direction in result.directions.values():
        assert direction["sent"] == direction["received"] == nbytes
        assert direction["match"]
        assert direction["duplicated_bytes"] == direction["out_of_order_bytes"] == 0
        assert direction["corrupted_bytes"] == 0
    assert set(result.final_states.values()) <= {"CLOSED", "TIME-WAIT"}
    assert result.virtual_time < result.max_time
    if link.loss or link.bandwidth:
        assert sum(result.retransmissions.values()) > 0
    # The links really impaired the traffic. Delivered copies never exceed what was sent (copies may
    # still be in flight when the run stops in TIME-WAIT, so this is not an equality).
    for stats in result.link_stats.values():
        assert (
            stats["delivered"] <= stats["sent"] - stats["queue_dropped"] - stats["lost"] + stats["duplicated"]
        )
        if link.loss:
            assert stats["lost"] > 0


HEAVY = LinkConfig(loss=0.2, duplicate=0.02, reorder=0.05, corrupt=0.02)


@pytest.mark.parametrize(
    ("seed", "config"),
    [
        # A duplicate ACK echoing the original's TSval after three timeouts gave a 14 s "RTT": the next
        # lost segment waited for a 17 s, then 35 s, 69 s... RTO and the client hung in CLOSING.
        (159, TCPConfig(congestion_control="reno")),
        # The same without SACK.
        (208, TCPConfig(congestion_control="reno", sack=False)),
        # A retransmission lost again after a timeout waited for the next, backed-off, timeout (no RACK).
        (263, TCPConfig(congestion_control="reno", timestamps=False)),
        # Without timestamps and with every cumulative ACK covering a retransmission (Karn), no RTT sample
        # came after the timed-out SYN's 3 s RTO: the backoff outran the budget. SACKed new data now
        # times the path.
        (241, TCPConfig(congestion_control="reno", timestamps=False)),
        # The client's FIN, backed off past the server's TIME-WAIT, drew a RST after the application had
        # closed: an orphan's end, no application error (every byte arrived).
        (282, TCPConfig()),
    ],
    ids=["159-stale-echo", "208-stale-echo", "263-rack", "241-sack-rtt", "282-orphan-reset"],
)
def test_heavy_loss_regressions(seed: int, config: TCPConfig) -> None:
    result = run_transfer(seed, HEAVY, 50_000, config=config)
    assert result.ok, result.failures


# A slice of the sweep run for every engine change (seeds 0-299 x reno/cubic at 20 % loss, seeds 0-99 at
# 5 % loss x SACK x timestamps; about 40 s on 2 cores): 0.1 s per seed here.
@pytest.mark.parametrize("congestion_control", ["reno", "cubic"])
@pytest.mark.parametrize("first", range(0, 60, 10))
def test_heavy_loss_sweep_slice(first: int, congestion_control: str) -> None:
    config = TCPConfig(congestion_control=congestion_control)
    for seed in range(first, first + 10):
        result = run_transfer(seed, HEAVY, 50_000, config=config)
        assert result.ok, (seed, result.failures)


@pytest.mark.parametrize("timestamps", [True, False])
@pytest.mark.parametrize("sack", [True, False])
def test_five_percent_loss_sweep_slice(sack: bool, timestamps: bool) -> None:
    config = TCPConfig(sack=sack, timestamps=timestamps)
    for seed in range(3):
        result = run_transfer(seed, LinkConfig(loss=0.05), 300_000, config=config)
        assert result.ok, (seed, result.failures)


def test_same_seed_same_json() -> None:
    link = LinkConfig(loss=0.05, duplicate=0.02, reorder=0.05, corrupt=0.02)
    first = run_transfer(5, link, 40_000).to_json()
    assert run_transfer(5, link, 40_000).to_json() == first
    assert run_transfer(6, link, 40_000).to_json() != first


def test_zero_bytes_still_opens_and_closes() -> None:
    result = run_transfer(1, LinkConfig(), 0)
    assert result.ok, result.failures
    assert all(d["received"] == 0 for d in result.directions.values())


def test_hang_is_reported_not_hidden() -> None:
    result = run_transfer(1, LinkConfig(latency=1.0), 1000, max_time=0.5)
    assert not result.ok
    assert any("hang" in failure for failure in result.failures)
    assert result.virtual_time <= 0.5


def test_trace_lines() -> None:
    lines: list[str] = []
    result = run_transfer(1, LinkConfig(), 100, trace=lines.append)
    assert result.ok
    text = "\n".join(lines)
    assert "[S] seq=x " in text and "[S.] seq=y ack=x+1 " in text
    assert "client listen" not in text
    assert "server listen :5001: CLOSED -> LISTEN" in text


def test_stream_check_names_what_went_wrong() -> None:
    expected = random.Random(1).randbytes(1000)
    check = StreamCheck(expected)
    check.feed(expected[:100])
    check.feed(expected[:100])  # the same bytes again
    assert check.duplicated == 100 and check.first_error == "100 bytes at offset 100: duplicate of offset 0"
    skip = StreamCheck(expected)
    skip.feed(expected[200:300])
    assert skip.out_of_order == 100 and "out of order, from offset 200" in (skip.first_error or "")
    bad = StreamCheck(expected)
    bad.feed(bytes(100))
    assert bad.corrupted == 100
    good = StreamCheck(expected)
    good.feed(expected[:500])
    good.feed(expected[500:])
    assert good.first_error is None and good.received == 1000
    assert good.sha256 == hashlib.sha256(expected).hexdigest()
