"""Connection establishment (RFC 9293 3.5, 3.10.7.3), traced packet by packet."""

from __future__ import annotations

import errno

from pytcp import events
from pytcp.state import Event, State
from tcpcore import ACK, FIN, RST, SYN


def test_active_open_three_way_handshake(tcp):
    p = tcp.Peer()
    p.call("connect")
    assert p.state is State.SYN_SENT
    p.expect("S", seq=p.iss, ack=0, win=64000, mss=1000, wscale=-1, sack_permitted=False, ts=None, length=0)
    p.expect_nothing()
    p.deliver(SYN | ACK, p.irs, p.iss + 1, 8000, mss=1000, t=0.05)
    p.expect(".", seq=p.iss + 1, ack=p.irs + 1, win=64000, length=0)
    assert p.state is State.ESTABLISHED
    assert [type(e) for e in p.take_events()] == [events.Connected]
    assert p.mib.ActiveOpens == 1 and p.mib.CurrEstab == 1
    assert p.conn.info().rtt == 0.05  # the SYN was not retransmitted: a valid sample (Karn)
    assert [(r.old, r.event, r.new) for r in p.transitions] == [
        (State.CLOSED, Event.APP_CONNECT, State.SYN_SENT),
        (State.SYN_SENT, Event.RCV_SYN_ACK, State.ESTABLISHED),
    ]


def test_passive_open_and_third_ack(tcp):
    p = tcp.syn_received()
    assert p.state is State.SYN_RECEIVED and p.mib.PassiveOpens == 1
    p.deliver(ACK, p.irs + 1, p.iss + 1, 30000)
    p.expect_nothing()
    assert p.state is State.ESTABLISHED
    assert [type(e) for e in p.take_events()] == [events.Connected]
    assert p.conn.info().snd_wnd == 30000
    assert p.mib.CurrEstab == 1


def test_synack_options_follow_the_syn(tcp):
    p = tcp.Peer(tcp.PLAIN.replace(window_scaling=True, sack=True, timestamps=True, max_buffer=1 << 20))
    syn = p.segment(SYN, p.irs, win=65535, mss=1400, wscale=9, sack_permitted=True, ts=(777, 0))
    p.advance(1.5)
    p.conn.accept_syn(syn, p.now)
    p.poll()
    # Our shift comes from max_buffer (1 MiB >> 5 is the first to fit 16 bits); TSecr echoes the TSval.
    p.expect(
        "S.", seq=p.iss, ack=p.irs + 1, mss=1000, wscale=5, sack_permitted=True, ts=(1500, 777), win=64000
    )
    info = p.conn.info()
    assert (info.snd_wscale, info.rcv_wscale, info.sack, info.timestamps) == (9, 5, True, True)
    assert info.snd_mss == 1000 - 12  # timestamps take 12 bytes of every segment (RFC 6691)


def test_options_only_when_both_sides_offer(tcp):
    p = tcp.Peer(tcp.PLAIN.replace(window_scaling=True, sack=True, timestamps=True))
    p.call("connect")
    p.expect("S", mss=1000, sack_permitted=True, ts=(0, 0))
    p.deliver(SYN | ACK, p.irs, p.iss + 1, 5000, t=0.01)  # no options at all
    p.expect(".", ack=p.irs + 1, ts=None)
    info = p.conn.info()
    assert (info.snd_wscale, info.rcv_wscale, info.sack, info.timestamps) == (0, 0, False, False)
    assert info.snd_mss == 536  # RFC 9293 3.7.1: no MSS option means 536


def test_window_scale_clamped_to_14(tcp):
    p = tcp.Peer(tcp.PLAIN.replace(window_scaling=True))
    syn = p.segment(SYN, p.irs, win=1000, wscale=20)
    p.conn.accept_syn(syn, 0.0)
    p.poll()
    p.expect("S.")
    p.deliver(ACK, p.irs + 1, p.iss + 1, 2)
    assert p.conn.info().snd_wnd == 2 << 14  # RFC 7323 2.3: use 14 instead


def test_peer_mss_bounds_ours(tcp):
    p = tcp.syn_sent()
    p.deliver(SYN | ACK, p.irs, p.iss + 1, mss=600)
    p.expect(".")
    assert p.conn.info().snd_mss == 600
    p.call("send", b"x" * 1500)
    p.expect(".", length=600)
    p.expect(".", length=600)
    p.expect("P.", length=300)


def test_syn_retransmission_backoff_then_etimedout(tcp):
    p = tcp.syn_sent(tcp.PLAIN.replace(syn_retries=3))
    times = []
    for _ in range(3):
        p.advance(p.conn.get_timer())
        p.expect("S", seq=p.iss)
        times.append(p.now)
    assert times == [1.0, 3.0, 7.0]  # RFC 6298 5.5: 1 s, doubling
    p.advance(14.99)
    p.expect_nothing()
    p.advance(15.0)
    p.expect_nothing()  # no RST on giving up
    assert p.state is State.CLOSED
    evs = p.take_events()
    assert [type(e) for e in evs] == [events.ConnectionFailed, events.Closed]
    assert evs[0].errno == errno.ETIMEDOUT
    assert p.mib.RetransSegs == 3 and p.mib.TCPTimeouts == 3 and p.mib.AttemptFails == 1
    assert p.conn.get_timer() is None


def test_retransmitted_syn_gives_no_rtt_sample_and_rto_falls_back(tcp):
    p = tcp.syn_sent()
    p.advance(1.0)
    p.expect("S")
    p.deliver(SYN | ACK, p.irs, p.iss + 1, t=1.1, mss=1000)
    p.expect(".")
    info = p.conn.info()
    assert info.rtt == 0.0  # Karn: ambiguous
    assert info.rto == 3.0  # RFC 6298 5.7
    assert info.cwnd == 10 * 1000  # one spurious-looking SYN retransmission keeps IW10 (Linux)


def test_synack_retransmission_and_give_up(tcp):
    p = tcp.syn_received(tcp.PLAIN.replace(synack_retries=2))
    p.advance(1.0)
    p.expect("S.", seq=p.iss, ack=p.irs + 1)
    p.advance(3.0)
    p.expect("S.", seq=p.iss, ack=p.irs + 1)
    p.advance(7.0)
    p.expect_nothing()
    assert p.state is State.CLOSED
    # A child the application never saw fails silently: only Closed, for the stack's table.
    assert [type(e) for e in p.take_events()] == [events.Closed]
    assert p.mib.AttemptFails == 1 and p.mib.TCPAbortOnTimeout == 0


def test_repeated_syn_gets_synack_again(tcp):
    """The SYN-ACK was lost and the client retransmitted its SYN: answer at once (Linux)."""
    p = tcp.syn_received()
    p.deliver(SYN, p.irs, t=0.5, mss=1000)
    p.expect("S.", seq=p.iss, ack=p.irs + 1)
    assert p.state is State.SYN_RECEIVED and p.mib.RetransSegs == 1


def test_lost_third_ack_data_completes_handshake(tcp):
    p = tcp.syn_received()
    p.deliver(ACK, p.irs + 1, p.iss + 1, 20000, b"hello", t=0.2)
    assert p.state is State.ESTABLISHED
    assert [type(e) for e in p.take_events()] == [events.Connected, events.DataReadable]
    assert p.call("recv", 100) == b"hello"
    p.advance(0.2 + 0.04)
    p.expect(".", seq=p.iss + 1, ack=p.irs + 6)  # the delayed ACK


def test_lost_third_ack_synack_retransmitted_then_challenge_ack_completes(tcp):
    """Client side: the server did not get our ACK and resent SYN,ACK; we answer with an ACK."""
    p = tcp.established()
    p.deliver(SYN | ACK, p.irs, p.iss + 1, t=1.0)
    p.expect(".", seq=p.iss + 1, ack=p.irs + 1)
    assert p.mib.TCPSYNChallenge == 1 and p.state is State.ESTABLISHED


def test_synack_with_bad_ack_gets_reset(tcp):
    p = tcp.syn_sent()
    p.deliver(SYN | ACK, p.irs, p.iss + 7)
    p.expect("R", seq=p.iss + 7)  # RFC 9293 3.10.7.3: <SEQ=SEG.ACK><CTL=RST>
    assert p.state is State.SYN_SENT and p.mib.OutRsts == 1


def test_refused_connect(tcp):
    p = tcp.syn_sent()
    p.deliver(RST | ACK, 0, p.iss + 1)
    p.expect_nothing()
    assert p.state is State.CLOSED
    evs = p.take_events()
    assert [type(e) for e in evs] == [events.ConnectionReset, events.Closed]
    assert evs[0].errno == errno.ECONNREFUSED
    assert p.mib.AttemptFails == 1


def test_rst_without_acceptable_ack_ignored_in_syn_sent(tcp):
    p = tcp.syn_sent()
    p.deliver(RST | ACK, 0, p.iss + 5)
    p.deliver(RST, 0)
    p.expect_nothing()
    assert p.state is State.SYN_SENT


def test_simultaneous_open(tcp):
    p = tcp.syn_sent()
    p.deliver(SYN, p.irs, mss=1000, t=0.1)
    assert p.state is State.SYN_RECEIVED
    p.expect("S.", seq=p.iss, ack=p.irs + 1)
    # RFC 9293 Figure 8: the peer's SYN-ACK acknowledges our SYN and completes the handshake (Linux
    # tcp_validate_incoming exempts it from RFC 5961's SYN challenge); nothing more needs sending.
    p.deliver(SYN | ACK, p.irs, p.iss + 1, t=0.2)
    assert p.state is State.ESTABLISHED
    p.expect_nothing()
    p.deliver(ACK, p.irs + 1, p.iss + 1, t=0.3)  # the peer's ACK of our SYN-ACK changes nothing
    p.expect_nothing()
    assert [r.new for r in p.transitions] == [State.SYN_SENT, State.SYN_RECEIVED, State.ESTABLISHED]


def test_rst_in_syn_received_of_passive_open_deletes_child(tcp):
    p = tcp.syn_received()
    p.deliver(RST, p.irs + 1)
    assert p.state is State.CLOSED
    assert [type(e) for e in p.take_events()] == [events.Closed]
    assert [r.new for r in p.transitions][-2:] == [State.LISTEN, State.CLOSED]
    assert p.mib.AttemptFails == 1


def test_bad_ack_in_syn_received_resets(tcp):
    p = tcp.syn_received()
    p.deliver(ACK, p.irs + 1, p.iss + 100)
    p.expect("R", seq=p.iss + 100)
    assert p.state is State.SYN_RECEIVED


def test_data_queued_before_established_goes_after(tcp):
    p = tcp.syn_sent()
    assert p.call("send", b"early") == 5
    p.expect_nothing()  # SYNs carry no data
    p.deliver(SYN | ACK, p.irs, p.iss + 1)
    p.expect("P.", seq=p.iss + 1, ack=p.irs + 1, payload=b"early")


def test_synack_carrying_data_and_fin(tcp):
    p = tcp.syn_sent()
    p.deliver(SYN | ACK | FIN, p.irs, p.iss + 1, payload=b"hi")
    p.expect(".", ack=p.irs + 4)
    assert p.state is State.CLOSE_WAIT
    assert p.call("recv", 10) == b"hi" and p.conn.at_eof


def test_sequence_numbers_wrap(tcp):
    p = tcp.established(iss=0xFFFFFFFE)
    p.call("send", b"a" * 3000)
    p.expect(".", seq=0xFFFFFFFF, length=1000)
    p.expect(".", seq=999, length=1000)
    p.expect("P.", seq=1999, length=1000)
    p.deliver(ACK, p.irs + 1, 2999)
    assert p.conn.info().unacked == 0 and p.conn.snd_nxt == 2999


def test_cookie_establishment_processes_the_ack(tcp):
    p = tcp.Peer(tcp.PLAIN.replace(timestamps=True, sack=True, window_scaling=True), iss=777)
    ack = p.segment(ACK, p.irs + 1, 778, 100, b"data", ts=(50, 9))
    p.conn.establish_from_cookie(ack, irs=p.irs, mss=1460, wscale=7, sack=True, timestamps=True, now=1.0)
    p.poll()
    assert p.state is State.ESTABLISHED
    assert [type(e) for e in p.take_events()] == [events.Connected, events.DataReadable]
    info = p.conn.info()
    assert (info.snd_wnd, info.sack, info.snd_mss) == (100 << 7, True, 1000 - 12)
    assert p.conn.recv(10, 1.0) == b"data"
    assert p.conn.ts_recent == 50


def test_two_lost_syns_mean_an_initial_window_of_one_segment(tcp):
    p = tcp.syn_sent()
    for _ in range(2):
        p.advance(p.conn.get_timer())
        p.expect("S")
    p.deliver(SYN | ACK, p.irs, p.iss + 1, mss=1000, t=p.now + 0.1)
    p.expect(".")
    assert p.conn.info().cwnd == 1000  # RFC 5681 3.1 / RFC 6928 (Linux: more than one retransmission)
    p.call("send", b"x" * 3000)
    assert len(p.drain()) == 1
