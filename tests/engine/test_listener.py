"""Listener decisions (RFC 9293 3.10.7.2, RFC 4987) and queue bookkeeping, without real connections."""

from __future__ import annotations

from typing import Any

import pytest

import tcpcore
from pytcp.config import TCPConfig
from pytcp.listener import ListenAction, Listener
from pytcp.mib import MIB
from pytcp.state import State, TransitionRecord
from pytcp.syncookies import SynCookies, encode_timestamp

LOCAL, REMOTE = 0xC6120002, 0xC6120001
PORT = 80


def segment(flags: int, *, sport: int = 40000, seq: int = 1000, ack: int = 0, **options: Any) -> Any:
    packet = tcpcore.build_tcp_ipv4(REMOTE, LOCAL, sport, PORT, seq, ack, flags, 65535, **options)
    _, seg = tcpcore.parse_packet(packet)
    return seg


def key(sport: int = 40000) -> tuple[int, int, int, int]:
    return (LOCAL, PORT, REMOTE, sport)


def make(backlog: int = 4, **knobs: Any) -> tuple[Listener, MIB]:
    mib = MIB()
    config = TCPConfig(**knobs)
    return Listener(LOCAL, PORT, backlog, config, mib, SynCookies(b"k"), 0.0), mib


def fill_syn_queue(listener: Listener) -> None:
    for i in range(listener.syn_limit):
        assert (
            listener.classify(segment(tcpcore.SYN, sport=50000 + i), key(50000 + i), 0.0, table_full=False)[0]
            is ListenAction.NEW_CHILD
        )
        listener.add_child(key(50000 + i), object())  # type: ignore[arg-type]


def test_rst_ignored_ack_reset_syn_child() -> None:
    listener, mib = make()
    assert listener.classify(segment(tcpcore.RST), key(), 0.0, table_full=False) == (ListenAction.DROP, None)
    assert (
        listener.classify(segment(tcpcore.RST | tcpcore.ACK), key(), 0.0, table_full=False)[0]
        is ListenAction.DROP
    )
    assert (
        listener.classify(segment(tcpcore.ACK, ack=5), key(), 0.0, table_full=False)[0] is ListenAction.RESET
    )
    assert (
        listener.classify(segment(tcpcore.SYN | tcpcore.ACK), key(), 0.0, table_full=False)[0]
        is ListenAction.RESET
    )
    assert listener.classify(segment(tcpcore.SYN), key(), 0.0, table_full=False)[0] is ListenAction.NEW_CHILD
    # Fourth check: neither SYN nor RST nor ACK; and Linux's SYN+FIN discard.
    assert listener.classify(segment(tcpcore.FIN), key(), 0.0, table_full=False)[0] is ListenAction.DROP
    assert (
        listener.classify(segment(tcpcore.SYN | tcpcore.FIN), key(), 0.0, table_full=False)[0]
        is ListenAction.DROP
    )
    assert mib.nonzero() == {}


def test_queue_limits_follow_backlog_somaxconn_and_max_syn_backlog() -> None:
    listener, _ = make(backlog=10, somaxconn=3, max_syn_backlog=5)
    assert (listener.accept_limit, listener.syn_limit) == (3, 5)
    listener, _ = make(backlog=0)
    assert (listener.accept_limit, listener.syn_limit) == (1, 1)
    with pytest.raises(ValueError):
        make(backlog=-1)


def test_full_syn_queue_auto_sends_cookies() -> None:
    listener, mib = make(syncookies="auto")
    fill_syn_queue(listener)
    assert listener.classify(segment(tcpcore.SYN), key(), 1.0, table_full=False) == (
        ListenAction.SEND_COOKIE,
        None,
    )
    assert mib.SyncookiesSent == 1


def test_full_syn_queue_off_drops() -> None:
    listener, mib = make(syncookies="off")
    fill_syn_queue(listener)
    assert listener.classify(segment(tcpcore.SYN), key(), 1.0, table_full=False)[0] is ListenAction.DROP
    assert (mib.TCPReqQFullDrop, mib.ListenDrops, mib.SyncookiesSent) == (1, 1, 0)


def test_syncookies_on_always_sends_cookies() -> None:
    listener, mib = make(syncookies="on")
    assert (
        listener.classify(segment(tcpcore.SYN), key(), 0.0, table_full=False)[0] is ListenAction.SEND_COOKIE
    )
    assert mib.SyncookiesSent == 1


def test_full_accept_queue_drops_syns_and_final_acks() -> None:
    listener, mib = make(backlog=2)
    for i in range(2):
        listener.add_child(key(i + 1), object())  # type: ignore[arg-type]
        assert listener.admits_final_ack()
        listener.child_established(key(i + 1), f"conn{i}")  # type: ignore[arg-type]
    assert listener.accept_queue_full()
    assert listener.classify(segment(tcpcore.SYN), key(), 0.0, table_full=False)[0] is ListenAction.DROP
    assert not listener.admits_final_ack()
    assert (mib.ListenOverflows, mib.ListenDrops) == (2, 2)
    assert listener.pop() == "conn0"  # type: ignore[comparison-overlap]
    assert listener.admits_final_ack()


def test_table_full_drops_new_children() -> None:
    listener, mib = make()
    assert listener.classify(segment(tcpcore.SYN), key(), 0.0, table_full=True)[0] is ListenAction.DROP
    assert mib.ListenDrops == 1


def cookie_ack(listener: Listener, now: float, *, ts: bool) -> Any:
    """The ACK a well-behaved client sends back to a cookie SYN-ACK."""
    client_isn = 1000
    cookie = listener.cookies.make(key(), client_isn, 1460, now)
    extra: dict[str, Any] = {}
    if ts:
        extra["timestamps"] = (777, encode_timestamp(5000, 7, True, False))
    return segment(tcpcore.ACK, seq=client_isn + 1, ack=cookie + 1, **extra)


def test_cookie_ack_on() -> None:
    listener, mib = make(syncookies="on")
    action, options = listener.classify(cookie_ack(listener, 10.0, ts=True), key(), 10.0, table_full=False)
    assert action is ListenAction.COOKIE_ACK
    assert options is not None
    assert (options.mss, options.wscale, options.sack, options.timestamps) == (1460, 7, True, True)
    action, options = listener.classify(cookie_ack(listener, 10.0, ts=False), key(), 10.0, table_full=False)
    assert action is ListenAction.COOKIE_ACK
    assert options is not None and (options.wscale, options.sack, options.timestamps) == (-1, False, False)
    assert mib.SyncookiesRecv == 2


def test_bad_or_stale_cookie_resets() -> None:
    listener, mib = make(syncookies="on")
    ack = cookie_ack(listener, 10.0, ts=False)
    assert listener.classify(ack, key(), 10.0 + 200.0, table_full=False)[0] is ListenAction.RESET
    assert listener.classify(segment(tcpcore.ACK, seq=1001, ack=12345), key(), 10.0, table_full=False)[0] is (
        ListenAction.RESET
    )
    assert (mib.SyncookiesFailed, mib.SyncookiesRecv) == (2, 0)


def test_auto_checks_cookies_only_after_sending_some() -> None:
    listener, mib = make(syncookies="auto")
    ack = cookie_ack(listener, 10.0, ts=False)
    # No cookie sent recently: an ACK is just a bad ACK in LISTEN, not a cookie failure.
    assert listener.classify(ack, key(), 10.0, table_full=False)[0] is ListenAction.RESET
    assert mib.SyncookiesFailed == 0
    fill_syn_queue(listener)
    assert (
        listener.classify(segment(tcpcore.SYN), key(), 10.0, table_full=False)[0] is ListenAction.SEND_COOKIE
    )
    assert listener.classify(ack, key(), 11.0, table_full=False)[0] is ListenAction.COOKIE_ACK
    # Two cookie periods later cookies are no longer in use.
    assert listener.classify(ack, key(), 10.0 + 128.0, table_full=False)[0] is ListenAction.RESET


def test_cookie_ack_with_full_accept_queue_drops() -> None:
    listener, mib = make(backlog=1, syncookies="on")
    listener.child_established(key(1), object())  # type: ignore[arg-type]
    assert listener.classify(cookie_ack(listener, 1.0, ts=False), key(), 1.0, table_full=False)[0] is (
        ListenAction.DROP
    )
    assert (mib.SyncookiesRecv, mib.ListenOverflows, mib.ListenDrops) == (1, 1, 1)


def test_child_bookkeeping_and_close() -> None:
    listener, _ = make()
    a, b, c = object(), object(), object()
    listener.add_child(key(1), a)  # type: ignore[arg-type]
    listener.add_child(key(2), b)  # type: ignore[arg-type]
    listener.add_child(key(3), c)  # type: ignore[arg-type]
    listener.child_established(key(1), a)  # type: ignore[arg-type]
    listener.child_gone(key(2), b)  # type: ignore[arg-type]
    assert list(listener.syn_queue) == [key(3)]
    assert list(listener.accept_queue) == [a]
    assert set(map(id, listener.close(5.0))) == {id(a), id(c)}
    assert listener.closed and listener.pop() is None


def test_listener_traces_listen_and_close() -> None:
    records: list[TransitionRecord] = []
    listener = Listener(LOCAL, PORT, 1, TCPConfig(), MIB(), SynCookies(b"k"), 2.0, tracer=records.append)
    assert listener.state is State.LISTEN
    listener.close(3.0)
    assert [(r.time, r.old, r.new) for r in records] == [
        (2.0, State.CLOSED, State.LISTEN),
        (3.0, State.LISTEN, State.CLOSED),
    ]
