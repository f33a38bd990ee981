"""The transition table: every row, every illegal event, tracing, and whole connection lifetimes."""

import logging

import pytest

from pytcp.state import (
    TRANSITIONS,
    Event,
    IllegalTransition,
    State,
    StateMachine,
    TCPStateError,
    TransitionRecord,
    diagram,
)

ROWS = list(TRANSITIONS.items())


@pytest.mark.parametrize(("row", "new"), ROWS, ids=[f"{s.name}-{e.name}" for (s, e), _ in ROWS])
def test_every_row_applies(row: tuple[State, Event], new: State) -> None:
    old, event = row
    machine = StateMachine(old)
    assert machine.can(event)
    assert machine.apply(event, now=1.0) is new
    assert machine.state is new


def test_rows_are_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[(State.CLOSED, Event.APP_LISTEN)] = State.ESTABLISHED  # type: ignore[index]


ILLEGAL = [(state, event) for state in State for event in Event if (state, event) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=[f"{s.name}-{e.name}" for s, e in ILLEGAL])
def test_illegal_event_raises_and_keeps_state(state: State, event: Event) -> None:
    records: list[TransitionRecord] = []
    machine = StateMachine(state, name="c1", tracer=records.append)
    assert not machine.can(event)
    with pytest.raises(IllegalTransition) as info:
        machine.apply(event, now=0.0)
    assert machine.state is state
    assert records == []
    assert info.value.state is state and info.value.event is event
    assert state.value in str(info.value) and event.name in str(info.value) and "c1" in str(info.value)
    assert isinstance(info.value, TCPStateError)


def test_every_state_has_an_illegal_event() -> None:
    assert {state for state, _ in ILLEGAL} == set(State)


def test_every_state_is_left_and_reached_and_abort_closes_any_tcb() -> None:
    sources = {state for state, _ in TRANSITIONS}
    targets = set(TRANSITIONS.values())
    assert sources == set(State)
    assert targets == set(State)
    # Every TCB the application holds can be aborted; LISTEN belongs to listeners (closed, not aborted)
    # and to children in the instant before their SYN moves them on.
    assert all(
        TRANSITIONS[(state, Event.APP_ABORT)] is State.CLOSED
        for state in State
        if state not in (State.CLOSED, State.LISTEN)
    )


def test_synchronized_states() -> None:
    # RFC 9293 3.5.2 lists the non-synchronized states; CLOSED has no TCB at all.
    unsynchronized = {State.CLOSED, State.LISTEN, State.SYN_SENT, State.SYN_RECEIVED}
    assert {s for s in State if not s.synchronized} == unsynchronized


def test_state_values_spell_the_rfc_names() -> None:
    assert State.SYN_RECEIVED.value == "SYN-RECEIVED"
    assert State.FIN_WAIT_2.value == "FIN-WAIT-2"
    assert State("TIME-WAIT") is State.TIME_WAIT


def test_tracer_gets_records_in_order_and_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    records: list[TransitionRecord] = []
    with caplog.at_level(logging.DEBUG, logger="pytcp.state"):
        # The level is read once, by the constructor (state.StateMachine's docstring says why).
        machine = StateMachine(name="client", tracer=records.append)
        machine.apply(Event.APP_CONNECT, 0.0, "connect()")
        machine.apply(Event.RCV_SYN_ACK, 0.5)
    assert records == [
        TransitionRecord(0.0, "client", State.CLOSED, Event.APP_CONNECT, State.SYN_SENT, "connect()"),
        TransitionRecord(0.5, "client", State.SYN_SENT, Event.RCV_SYN_ACK, State.ESTABLISHED, ""),
    ]
    messages = [r.getMessage() for r in caplog.records if r.name == "pytcp.state"]
    assert len(messages) == 2
    assert "client" in messages[0] and "SYN-SENT" in messages[0] and "APP_CONNECT" in messages[0]


def test_machine_created_without_debug_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    machine = StateMachine(name="quiet")
    with caplog.at_level(logging.DEBUG, logger="pytcp.state"):
        machine.apply(Event.APP_CONNECT, 0.0)
    assert not [r for r in caplog.records if r.name == "pytcp.state"]


def test_connection_name_is_formatted_when_first_needed() -> None:
    machine = StateMachine(name=(0xC6120002, 80, 0xC6120001, 40000))
    machine.apply(Event.APP_CONNECT, 0.0)
    assert machine.name == "198.18.0.2:80>198.18.0.1:40000"
    assert repr(machine) == "StateMachine(State.SYN_SENT, name='198.18.0.2:80>198.18.0.1:40000')"


def run(machine: StateMachine, *steps: tuple[Event, State]) -> None:
    """Apply each event at increasing times, checking the state after each."""
    for now, (event, expected) in enumerate(steps):
        assert machine.apply(event, float(now)) is expected, (event, expected)


def test_three_way_handshake() -> None:
    # Client CLOSED -> SYN-SENT -> ESTABLISHED; server's child LISTEN -> SYN-RECEIVED -> ESTABLISHED.
    client, server = StateMachine(), StateMachine()
    run(server, (Event.APP_LISTEN, State.LISTEN))
    run(client, (Event.APP_CONNECT, State.SYN_SENT))  # SYN seq=x
    child = StateMachine(server.state)  # the listener stays in LISTEN; the SYN gets its own TCB
    run(child, (Event.RCV_SYN, State.SYN_RECEIVED))  # SYN,ACK seq=y ack=x+1
    run(client, (Event.RCV_SYN_ACK, State.ESTABLISHED))  # ACK seq=x+1 ack=y+1
    run(child, (Event.RCV_ACK_OF_SYN, State.ESTABLISHED))
    assert server.state is State.LISTEN


def test_four_way_close_with_time_wait() -> None:
    active, passive = StateMachine(State.ESTABLISHED), StateMachine(State.ESTABLISHED)
    run(active, (Event.APP_CLOSE, State.FIN_WAIT_1))  # FIN seq=u
    run(passive, (Event.RCV_FIN, State.CLOSE_WAIT))  # ACK ack=u+1; half-closed, may still send
    run(active, (Event.RCV_ACK_OF_FIN, State.FIN_WAIT_2))
    run(passive, (Event.APP_CLOSE, State.LAST_ACK))  # FIN seq=w
    run(active, (Event.RCV_FIN, State.TIME_WAIT))  # ACK ack=w+1
    run(passive, (Event.RCV_ACK_OF_FIN, State.CLOSED))
    run(active, (Event.TIMEOUT_TIME_WAIT, State.CLOSED))  # after 2 MSL


def test_close_with_fin_and_ack_in_one_segment() -> None:
    # The peer's FIN carries the ACK of ours: FIN-WAIT-1 straight to TIME-WAIT (Figure 5 note 2).
    active = StateMachine(State.ESTABLISHED)
    run(active, (Event.APP_CLOSE, State.FIN_WAIT_1), (Event.RCV_FIN_ACK_OF_FIN, State.TIME_WAIT))


def test_simultaneous_open() -> None:
    a, b = StateMachine(), StateMachine()
    run(a, (Event.APP_CONNECT, State.SYN_SENT))
    run(b, (Event.APP_CONNECT, State.SYN_SENT))
    # Each SYN crosses the other: both answer SYN,ACK from SYN-RECEIVED, then see the other's SYN,ACK.
    run(a, (Event.RCV_SYN, State.SYN_RECEIVED), (Event.RCV_ACK_OF_SYN, State.ESTABLISHED))
    run(b, (Event.RCV_SYN, State.SYN_RECEIVED), (Event.RCV_ACK_OF_SYN, State.ESTABLISHED))


def test_simultaneous_close_through_closing() -> None:
    for side in (StateMachine(State.ESTABLISHED), StateMachine(State.ESTABLISHED)):
        run(
            side,
            (Event.APP_CLOSE, State.FIN_WAIT_1),  # both FINs cross
            (Event.RCV_FIN, State.CLOSING),
            (Event.RCV_ACK_OF_FIN, State.TIME_WAIT),
            (Event.TIMEOUT_TIME_WAIT, State.CLOSED),
        )


def test_half_close_keeps_close_wait_until_the_application_closes() -> None:
    passive = StateMachine(State.ESTABLISHED)
    run(passive, (Event.RCV_FIN, State.CLOSE_WAIT))
    # A retransmitted FIN is not a transition; the state stays.
    assert not passive.can(Event.RCV_FIN)
    run(passive, (Event.APP_CLOSE, State.LAST_ACK), (Event.RCV_ACK_OF_FIN, State.CLOSED))


def test_passive_reset_returns_to_listen_and_active_refusal_closes() -> None:
    child = StateMachine(State.LISTEN)
    run(child, (Event.RCV_SYN, State.SYN_RECEIVED), (Event.PASSIVE_RESET, State.LISTEN))
    active = StateMachine()
    run(active, (Event.APP_CONNECT, State.SYN_SENT), (Event.RCV_SYN, State.SYN_RECEIVED))
    run(active, (Event.RCV_RST, State.CLOSED))


def test_listen_ignores_rst() -> None:
    # RFC 9293 3.10.7.2: an RST in LISTEN is ignored, so it is no transition.
    assert not StateMachine(State.LISTEN).can(Event.RCV_RST)


def test_time_wait_ignores_rst() -> None:
    # RFC 1337: no TIME-WAIT assassination; the engine drops RSTs there, so the table has no such row.
    assert not StateMachine(State.TIME_WAIT).can(Event.RCV_RST)


def test_diagram_draws_every_row() -> None:
    text = diagram()
    assert text.startswith("stateDiagram-v2\n")
    for (old, event), new in TRANSITIONS.items():
        edge = next(
            line for line in text.splitlines() if line.strip().startswith(f"{old.name} --> {new.name}:")
        )
        assert event.value in edge
    for state in State:
        assert f'"{state.value}" as {state.name}' in text
