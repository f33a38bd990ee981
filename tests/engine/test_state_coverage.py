"""The state table holds exactly the transitions the engine takes (h11 style).

Packet traces (the ``tcp`` harness) and two stacks on a scripted clock drive real connections through
every row of pytcp.state.TRANSITIONS; a tracer on each connection and listener records what happened.
The set of (old, event, new) observed must equal the table: a row no scenario reaches is dead (remove
it, or make the engine take it), and a transition outside the table would have raised IllegalTransition.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from errno import EHOSTUNREACH
from types import SimpleNamespace
from typing import Any

from pytcp.config import TCPConfig
from pytcp.icmp import IcmpError, IcmpErrorKind
from pytcp.stack import Stack
from pytcp.state import TRANSITIONS, Event, State, TransitionRecord
from tcpcore import ACK, FIN, RST, SYN

Row = tuple[State, Event, State]

A = 0xC6120001  # 198.18.0.1
B = 0xC6120002  # 198.18.0.2
C = 0xC6120003  # 198.18.0.3
#: Every timer fires within this: retries, keep-alive probes and FIN-WAIT-2 / TIME-WAIT are made short.
LONG = 1000.0


def quick(tcp: SimpleNamespace, **changes: object) -> TCPConfig:
    """PLAIN with one retry of each kind and one-second keep-alive, so give-ups come fast."""
    base = dict(
        syn_retries=1,
        synack_retries=1,
        retries2=1,
        orphan_retries=1,
        keepalive_time=1.0,
        keepalive_intvl=1.0,
        keepalive_probes=1,
    )
    return tcp.PLAIN.replace(**{**base, **changes})


def give_up(p: Any) -> None:
    p.advance(p.now + LONG)
    assert p.state is State.CLOSED


def peer_traces(tcp: SimpleNamespace) -> Iterable[list[TransitionRecord]]:
    """One Peer per path; yields each one's transitions."""
    irs = tcp.Peer().irs

    # Active open, active close through FIN-WAIT-2 and TIME-WAIT to its timeout.
    p = tcp.time_wait()
    p.advance(p.now + LONG)
    yield p.transitions
    # The peer's FIN acknowledges ours in one segment (Figure 5 note 2).
    p = tcp.fin_wait_1()
    p.deliver(FIN | ACK, irs + 1, p.iss + 2)
    yield p.transitions
    # Simultaneous close through CLOSING; then an abort in TIME-WAIT.
    p = tcp.fin_wait_1()
    p.deliver(FIN | ACK, irs + 1, p.iss + 1)
    assert p.state is State.CLOSING
    p.deliver(ACK, irs + 2, p.iss + 2)
    assert p.state is State.TIME_WAIT
    p.call("abort")
    yield p.transitions
    # Passive close: CLOSE-WAIT, LAST-ACK, CLOSED.
    p = tcp.last_ack()
    p.deliver(ACK, irs + 2, p.iss + 2)
    yield p.transitions
    # Passive open of a listener's child.
    yield tcp.established(passive=True).transitions
    # A passively opened SYN-RECEIVED TCB reset by RST, or by an in-window SYN, returns to LISTEN and goes.
    for flags, seq in ((RST, irs + 1), (SYN, irs + 100)):
        p = tcp.syn_received()
        p.deliver(flags, seq)
        assert p.state is State.CLOSED
        yield p.transitions
    # An ICMP error about our SYN ends the attempt, also after a simultaneous open.
    for simultaneous in (False, True):
        p = tcp.syn_sent()
        if simultaneous:
            p.deliver(SYN, irs, mss=1000)
        p.conn.icmp_error(IcmpError(p.conn.key, IcmpErrorKind.HOST_UNREACHABLE, EHOSTUNREACH, p.iss), p.now)
        assert p.state is State.CLOSED
        yield p.transitions
    # Simultaneous open (SYN-SENT -> SYN-RECEIVED), refused there by a RST, or aborted.
    for action in ("rst", "abort"):
        p = tcp.syn_sent()
        p.deliver(SYN, irs, mss=1000)
        assert p.state is State.SYN_RECEIVED
        if action == "rst":
            p.deliver(RST, irs + 1)
        else:
            p.call("abort")
        assert p.state is State.CLOSED
        yield p.transitions
    # SYN-SENT: refused, closed, aborted, timed out.
    p = tcp.syn_sent()
    p.deliver(RST | ACK, 0, p.iss + 1)
    yield p.transitions
    for call in ("close", "abort"):
        p = tcp.syn_sent()
        p.call(call)
        yield p.transitions
    p = tcp.syn_sent(quick(tcp))
    give_up(p)
    yield p.transitions
    # SYN-RECEIVED: aborted (a listener closing resets its queues too), timed out.
    p = tcp.syn_received()
    p.call("abort")
    yield p.transitions
    p = tcp.syn_received(quick(tcp))
    give_up(p)
    yield p.transitions

    # Every synchronized state: reset by the peer, aborted, and given up on.
    def at(state: State, config: TCPConfig = tcp.PLAIN) -> Any:
        """A Peer in ``state``; ``p.rcv`` is our RCV.NXT, where the peer's next segment goes."""
        if state is State.ESTABLISHED:
            p, rcv = tcp.established(config), irs + 1
        elif state is State.FIN_WAIT_1:
            p, rcv = tcp.fin_wait_1(config), irs + 1  # close(): an orphan
        elif state is State.FIN_WAIT_2:
            p, rcv = tcp.fin_wait_2(config), irs + 1  # shutdown(SHUT_WR): not an orphan
        elif state is State.CLOSE_WAIT:
            p, rcv = tcp.close_wait(config), irs + 2
        elif state is State.CLOSING:
            p, rcv = tcp.fin_wait_1(config), irs + 2
            p.deliver(FIN | ACK, irs + 1, p.iss + 1)
        else:
            p, rcv = tcp.last_ack(config), irs + 2  # close() after the peer's FIN: an orphan
        assert p.state is state
        p.rcv = rcv
        return p

    synchronized = (
        State.ESTABLISHED,
        State.FIN_WAIT_1,
        State.FIN_WAIT_2,
        State.CLOSE_WAIT,
        State.CLOSING,
        State.LAST_ACK,
    )
    for state in synchronized:
        p = at(state)
        p.deliver(RST, p.rcv)  # RFC 5961 3.2: exactly RCV.NXT
        assert p.state is State.CLOSED
        yield p.transitions
        p = at(state)
        p.call("abort")
        yield p.transitions
        p = at(state, quick(tcp, keepalive=True))
        if state in (State.ESTABLISHED, State.CLOSE_WAIT):
            p.call("send", b"unanswered")  # tcp_retries2
        # FIN-WAIT-1, CLOSING and LAST-ACK retransmit their FIN (tcp_orphan_retries); FIN-WAIT-2 has
        # nothing in flight and gives up on keep-alive probes.
        give_up(p)
        yield p.transitions
    # An orphan's FIN-WAIT-2 times out (Linux tcp_fin_timeout).
    p = tcp.fin_wait_1(tcp.PLAIN.replace(fin_timeout=1.0))
    p.deliver(ACK, irs + 1, p.iss + 2)
    assert p.state is State.FIN_WAIT_2
    p.advance(p.now + LONG)
    assert p.state is State.CLOSED
    yield p.transitions


def stack_traces() -> Iterable[list[TransitionRecord]]:
    """Stacks on a scripted clock: listeners, a SYN-cookie handshake, TIME-WAIT reuse (tcp_tw_reuse),
    and a listener that closes with a half-open child in its SYN queue."""
    records: list[TransitionRecord] = []
    client = Stack(A, TCPConfig(tw_reuse=True), seed=1, tracer=records.append)
    cookies = Stack(B, TCPConfig(syncookies="on"), seed=2, tracer=records.append)
    plain = Stack(C, seed=3, tracer=records.append)
    by_address = {stack.address: stack for stack in (client, cookies, plain)}

    def exchange(now: float, drop: Callable[[bytes], bool] = lambda packet: False) -> None:
        for _ in range(100):
            moved = False
            for stack in by_address.values():
                for packet in stack.datagrams_to_send(now):
                    moved = True
                    if not drop(packet):
                        by_address[int.from_bytes(packet[16:20], "big")].receive(packet, now)
            if not moved:
                return
        raise AssertionError("never quiet")

    listener = cookies.listen(80)
    conn = client.connect(B, 80, 0.0)
    exchange(0.0)
    child = cookies.accept(listener)
    assert child is not None and conn.state is State.ESTABLISHED and cookies.mib.SyncookiesRecv == 1
    conn.close(1.0)
    exchange(1.0)
    child.shutdown(socket.SHUT_WR, 1.0)
    exchange(1.0)
    assert conn.state is State.TIME_WAIT
    again = client.connect(B, 80, 3.0, local_port=conn.local_port)  # RFC 6191, Linux tcp_tw_reuse
    assert conn.state is State.CLOSED and again.state is State.SYN_SENT
    listener = plain.listen(80)
    client.connect(C, 80, 3.0)
    exchange(3.0, drop=lambda packet: packet[16:20] == A.to_bytes(4, "big"))  # the SYN-ACK is lost
    (half_open,) = plain.connections()
    assert half_open.state is State.SYN_RECEIVED
    plain.close_listener(listener, 3.0)  # Linux inet_csk_listen_stop: the child is reset
    assert half_open.state is State.CLOSED
    yield records


def test_every_row_is_taken_and_nothing_else(tcp: SimpleNamespace) -> None:
    seen: set[Row] = set()
    for records in (*peer_traces(tcp), *stack_traces()):
        seen.update((r.old, r.event, r.new) for r in records)
    table = {(old, event, new) for (old, event), new in TRANSITIONS.items()}
    assert not table - seen, f"rows no engine path takes: {sorted(table - seen, key=str)}"
    assert not seen - table, f"transitions outside the table: {sorted(seen - table, key=str)}"
