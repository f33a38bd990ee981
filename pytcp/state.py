"""The TCP connection state machine: the one place that owns every state transition.

``TRANSITIONS`` is the RFC 9293 3.3.2 diagram (Figure 5) written as a table, refined by the event
processing text of RFC 9293 3.10 and by the two Linux timers the engine copies. It holds exactly the
transitions the engine takes (tests/engine/test_state_coverage.py drives every row); the diagram's edges
it never takes are left out, each with the reason below the table. ``StateMachine.apply`` is
the only setter of a connection's state: it looks the (state, event) pair up, raises
``IllegalTransition`` (leaving the state unchanged) when the table has no row, logs the change and hands
a ``TransitionRecord`` to an optional tracer. Events that leave the state as it is (a retransmitted FIN
in TIME-WAIT, a challenge ACK, a CLOSE in FIN-WAIT-2...) are not transitions; the engine handles them
without calling ``apply``. ``diagram()`` draws the documentation's state diagram from the same table.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .addresses import dotted

__all__ = [
    "TRANSITIONS",
    "Event",
    "IllegalTransition",
    "State",
    "StateMachine",
    "TCPStateError",
    "TransitionRecord",
    "diagram",
]

_log = logging.getLogger(__name__)


class State(enum.Enum):
    """The connection states of RFC 9293 3.3.2, valued as the RFC spells them."""

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    #: Members are singletons compared by identity, so identity hashing is consistent with equality;
    #: Enum's own __hash__ is interpreted Python (hash of the name), and every transition looks up
    #: (state, event) in TRANSITIONS.
    __hash__ = object.__hash__

    @property
    def synchronized(self) -> bool:
        """True from ESTABLISHED on: both sequence spaces are known (RFC 9293 3.5.2)."""
        return self in _SYNCHRONIZED


_SYNCHRONIZED = frozenset(
    {
        State.ESTABLISHED,
        State.FIN_WAIT_1,
        State.FIN_WAIT_2,
        State.CLOSE_WAIT,
        State.CLOSING,
        State.LAST_ACK,
        State.TIME_WAIT,
    }
)


class Event(enum.Enum):
    """What causes a transition; the value is the label the RFC 9293 diagram uses for it."""

    APP_LISTEN = "passive OPEN"
    """listen(): passive OPEN (RFC 9293 3.10.1)."""
    APP_CONNECT = "active OPEN"
    """connect(): active OPEN (3.10.1)."""
    APP_CLOSE = "CLOSE"
    """close() or shutdown(SHUT_WR): the user's CLOSE, which sends a FIN once data is out (3.10.4)."""
    APP_ABORT = "ABORT"
    """ABORT (3.10.5): SO_LINGER with zero timeout, or close() with unread data (RFC 2525 2.17)."""
    RCV_SYN = "rcv SYN"
    """A SYN without ACK: passive open of a child TCB, or simultaneous open from SYN-SENT."""
    RCV_SYN_ACK = "rcv SYN,ACK"
    """A SYN whose ACK covers our SYN, in SYN-SENT (3.10.7.3 fourth check)."""
    RCV_ACK_OF_SYN = "rcv ACK of SYN"
    """An acceptable ACK in SYN-RECEIVED (3.10.7.4 fifth check)."""
    RCV_FIN = "rcv FIN"
    """An in-sequence FIN (3.10.7.4 eighth check) that does not also acknowledge our FIN."""
    RCV_FIN_ACK_OF_FIN = "rcv FIN, ACK of FIN"
    """One segment carrying the peer's FIN and the ACK of ours, in FIN-WAIT-1 (Figure 5 note 2)."""
    RCV_ACK_OF_FIN = "rcv ACK of FIN"
    """An ACK covering our FIN (3.10.7.4 fifth check)."""
    RCV_RST = "rcv RST"
    """An acceptable RST (3.10.7.3 and 3.10.7.4 second check, after the RFC 5961 3.2 exact-match test)."""
    PASSIVE_RESET = "rcv RST or SYN (passive)"
    """An acceptable RST or an in-window SYN in SYN-RECEIVED of a connection that came from LISTEN."""
    TIMEOUT_TIME_WAIT = "timeout 2MSL"
    """The TIME-WAIT timer (2 * MSL) expired (3.10.8)."""
    TIMEOUT_FIN_WAIT_2 = "timeout FIN-WAIT-2"
    """An orphaned connection spent tcp_fin_timeout in FIN-WAIT-2 (Linux; RFC 9293 has no such timer)."""
    GIVE_UP = "give up"
    """Retransmission, SYN, keep-alive or user timeout exhausted (3.8.3 R2, 3.10.8, RFC 1122 4.2.3.6)."""
    ICMP_ERROR = "rcv ICMP error"
    """An ICMP error about our SYN (RFC 1122 4.2.3.9): Linux tcp_v4_err ends the attempt at once."""
    TIME_WAIT_REUSE = "TIME-WAIT reuse"
    """A new incarnation takes over the 4-tuple: acceptable SYN (3.6.1, RFC 6191) or Linux tcp_tw_reuse."""

    __hash__ = object.__hash__  # as State's


S, E = State, Event
TRANSITIONS: Mapping[tuple[State, Event], State] = MappingProxyType(
    {
        # CLOSED (no TCB).
        (S.CLOSED, E.APP_LISTEN): S.LISTEN,  # 3.10.1: passive OPEN enters LISTEN
        (S.CLOSED, E.APP_CONNECT): S.SYN_SENT,  # 3.10.1: active OPEN sends SYN
        # LISTEN.
        (S.LISTEN, E.RCV_SYN): S.SYN_RECEIVED,  # 3.10.7.2 third check: send SYN,ACK
        (S.LISTEN, E.APP_CLOSE): S.CLOSED,  # 3.10.4: delete TCB (a listener; a reset child, 3.10.7.4)
        # SYN-SENT.
        (S.SYN_SENT, E.RCV_SYN_ACK): S.ESTABLISHED,  # 3.10.7.3 fourth check: our SYN is ACKed
        (S.SYN_SENT, E.RCV_SYN): S.SYN_RECEIVED,  # 3.10.7.3 fourth check: simultaneous open
        (S.SYN_SENT, E.RCV_RST): S.CLOSED,  # 3.10.7.3 second check: "connection reset"
        (S.SYN_SENT, E.APP_CLOSE): S.CLOSED,  # 3.10.4: delete TCB
        (S.SYN_SENT, E.APP_ABORT): S.CLOSED,  # 3.10.5: delete TCB
        (S.SYN_SENT, E.GIVE_UP): S.CLOSED,  # 3.8.3: R2 for a SYN (Linux tcp_syn_retries)
        (S.SYN_SENT, E.ICMP_ERROR): S.CLOSED,  # RFC 1122 4.2.3.9, Linux tcp_v4_err: connect fails
        # SYN-RECEIVED.
        (S.SYN_RECEIVED, E.RCV_ACK_OF_SYN): S.ESTABLISHED,  # 3.10.7.4 fifth check
        (S.SYN_RECEIVED, E.PASSIVE_RESET): S.LISTEN,  # 3.10.7.4 second/fourth checks, Figure 5 note 1
        (S.SYN_RECEIVED, E.RCV_RST): S.CLOSED,  # 3.10.7.4 second check: active open, "refused"
        (S.SYN_RECEIVED, E.APP_ABORT): S.CLOSED,  # 3.10.5: send RST, delete TCB
        (S.SYN_RECEIVED, E.GIVE_UP): S.CLOSED,  # 3.8.3 R2 (Linux tcp_synack_retries)
        (S.SYN_RECEIVED, E.ICMP_ERROR): S.CLOSED,  # as SYN-SENT, for a simultaneous open
        # ESTABLISHED.
        (S.ESTABLISHED, E.APP_CLOSE): S.FIN_WAIT_1,  # 3.10.4: send FIN after queued data
        (S.ESTABLISHED, E.RCV_FIN): S.CLOSE_WAIT,  # 3.10.7.4 eighth check
        (S.ESTABLISHED, E.RCV_RST): S.CLOSED,  # 3.10.7.4 second check: "connection reset"
        (S.ESTABLISHED, E.APP_ABORT): S.CLOSED,  # 3.10.5: send RST, delete TCB
        (S.ESTABLISHED, E.GIVE_UP): S.CLOSED,  # 3.8.3 R2, 3.10.8 user timeout, keep-alive
        # FIN-WAIT-1.
        (S.FIN_WAIT_1, E.RCV_ACK_OF_FIN): S.FIN_WAIT_2,  # 3.10.7.4 fifth check
        (S.FIN_WAIT_1, E.RCV_FIN): S.CLOSING,  # 3.10.7.4 eighth check: simultaneous close
        (S.FIN_WAIT_1, E.RCV_FIN_ACK_OF_FIN): S.TIME_WAIT,  # 3.10.7.4 eighth check, Figure 5 note 2
        (S.FIN_WAIT_1, E.RCV_RST): S.CLOSED,  # 3.10.7.4 second check
        (S.FIN_WAIT_1, E.APP_ABORT): S.CLOSED,  # 3.10.5: send RST, delete TCB
        (S.FIN_WAIT_1, E.GIVE_UP): S.CLOSED,  # 3.8.3 R2 (tcp_retries2, tcp_orphan_retries)
        # FIN-WAIT-2.
        (S.FIN_WAIT_2, E.RCV_FIN): S.TIME_WAIT,  # 3.10.7.4 eighth check
        (S.FIN_WAIT_2, E.RCV_RST): S.CLOSED,  # 3.10.7.4 second check
        (S.FIN_WAIT_2, E.APP_ABORT): S.CLOSED,  # 3.10.5: send RST, delete TCB
        (S.FIN_WAIT_2, E.TIMEOUT_FIN_WAIT_2): S.CLOSED,  # Linux tcp_fin_timeout for orphans
        (S.FIN_WAIT_2, E.GIVE_UP): S.CLOSED,  # 3.10.8 user timeout, keep-alive
        # CLOSE-WAIT.
        (S.CLOSE_WAIT, E.APP_CLOSE): S.LAST_ACK,  # 3.10.4: send FIN after queued data
        (S.CLOSE_WAIT, E.RCV_RST): S.CLOSED,  # 3.10.7.4 second check
        (S.CLOSE_WAIT, E.APP_ABORT): S.CLOSED,  # 3.10.5: send RST, delete TCB
        (S.CLOSE_WAIT, E.GIVE_UP): S.CLOSED,  # 3.8.3 R2, 3.10.8 user timeout, keep-alive
        # CLOSING.
        (S.CLOSING, E.RCV_ACK_OF_FIN): S.TIME_WAIT,  # 3.10.7.4 fifth check
        (S.CLOSING, E.RCV_RST): S.CLOSED,  # 3.10.7.4 second check
        (S.CLOSING, E.APP_ABORT): S.CLOSED,  # 3.10.5: delete TCB
        (S.CLOSING, E.GIVE_UP): S.CLOSED,  # 3.8.3 R2 on the FIN
        # LAST-ACK.
        (S.LAST_ACK, E.RCV_ACK_OF_FIN): S.CLOSED,  # 3.10.7.4 fifth check: delete TCB
        (S.LAST_ACK, E.RCV_RST): S.CLOSED,  # 3.10.7.4 second check
        (S.LAST_ACK, E.APP_ABORT): S.CLOSED,  # 3.10.5: delete TCB
        (S.LAST_ACK, E.GIVE_UP): S.CLOSED,  # 3.8.3 R2 on the FIN
        # TIME-WAIT.
        (S.TIME_WAIT, E.TIMEOUT_TIME_WAIT): S.CLOSED,  # 3.10.8: 2 MSL elapsed
        (S.TIME_WAIT, E.TIME_WAIT_REUSE): S.CLOSED,  # 3.6.1 MAY-2 / RFC 6191: new incarnation
        (S.TIME_WAIT, E.APP_ABORT): S.CLOSED,  # 3.10.5: delete TCB
    }
)
# Figure 5 / RFC 9293 3.10 edges the engine never takes, hence not rows:
# - LISTEN -[SEND or active OPEN]-> SYN-SENT (3.10.1-2): as with sockets, a listener never connects.
# - LISTEN -[ABORT]-> CLOSED: a listener closes; a child leaves LISTEN in the call that creates it.
# - SYN-RECEIVED -[CLOSE]-> FIN-WAIT-1 (3.10.4): our FIN waits for ESTABLISHED (3.10.4's "otherwise,
#   queue" branch, as for SYN-SENT), so that congestion control and loss recovery, which start there,
#   carry it.
# - SYN-RECEIVED -[rcv FIN]-> CLOSE-WAIT (3.10.7.4 eighth check): a FIN is only processed with an
#   acceptable ACK, and the fifth check moves SYN-RECEIVED to ESTABLISHED first.
# - TIME-WAIT -[rcv RST]-> CLOSED: RFC 1337 (Linux tcp_rfc1337=1 behaviour): TIME-WAIT ignores RSTs,
#   so no stray RST can cut it short ("TIME-WAIT assassination").
del S, E

# Every member as a module constant as well, which the engine's modules use: on Python 3.11 each
# ``State.X`` read passes through EnumType's __getattr__ hook (~0.15 us, more than the comparison it
# serves, compiled or not; gone in 3.12), and the engine makes dozens per segment.
CLOSED = State.CLOSED
LISTEN = State.LISTEN
SYN_SENT = State.SYN_SENT
SYN_RECEIVED = State.SYN_RECEIVED
ESTABLISHED = State.ESTABLISHED
FIN_WAIT_1 = State.FIN_WAIT_1
FIN_WAIT_2 = State.FIN_WAIT_2
CLOSE_WAIT = State.CLOSE_WAIT
CLOSING = State.CLOSING
LAST_ACK = State.LAST_ACK
TIME_WAIT = State.TIME_WAIT
APP_LISTEN = Event.APP_LISTEN
APP_CONNECT = Event.APP_CONNECT
APP_CLOSE = Event.APP_CLOSE
APP_ABORT = Event.APP_ABORT
RCV_SYN = Event.RCV_SYN
RCV_SYN_ACK = Event.RCV_SYN_ACK
RCV_ACK_OF_SYN = Event.RCV_ACK_OF_SYN
RCV_FIN = Event.RCV_FIN
RCV_FIN_ACK_OF_FIN = Event.RCV_FIN_ACK_OF_FIN
RCV_ACK_OF_FIN = Event.RCV_ACK_OF_FIN
RCV_RST = Event.RCV_RST
PASSIVE_RESET = Event.PASSIVE_RESET
TIMEOUT_TIME_WAIT = Event.TIMEOUT_TIME_WAIT
TIMEOUT_FIN_WAIT_2 = Event.TIMEOUT_FIN_WAIT_2
GIVE_UP = Event.GIVE_UP
ICMP_ERROR = Event.ICMP_ERROR
TIME_WAIT_REUSE = Event.TIME_WAIT_REUSE


class TCPStateError(Exception):
    """Base class of state machine errors."""


class IllegalTransition(TCPStateError):
    """The table has no row for (state, event); the state is left unchanged."""

    def __init__(self, name: str, state: State, event: Event) -> None:
        super().__init__(f"{name or 'connection'}: no transition from {state.value} on {event.name}")
        self.state = state
        self.event = event


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """One applied transition, as handed to the tracer."""

    time: float
    name: str
    old: State
    event: Event
    new: State
    note: str


class StateMachine:
    """One connection's state; ``apply`` is its only setter.

    ``name`` may be a connection's (local address, local port, remote address, remote port) instead,
    formatted when first needed: formatting costs more than a handshake's transitions, and the tuple
    shares its numbers with the connection, so it takes less memory than the string. Transitions are logged at
    DEBUG by machines created while that level is enabled for this module: asking the logger on every
    transition would cost more than the transition.
    """

    #: ``state`` is read-only outside ``apply`` (enforced where the module is compiled: state.pxd).
    __slots__ = ("_debug", "_name", "_tracer", "state")

    def __init__(
        self,
        state: State = State.CLOSED,
        *,
        name: str | tuple[int, int, int, int] = "",
        tracer: Callable[[TransitionRecord], None] | None = None,
    ) -> None:
        self.state = state
        self._name = name
        self._tracer = tracer
        self._debug = _log.isEnabledFor(logging.DEBUG)

    @property
    def name(self) -> str:
        name = self._name
        if not isinstance(name, str):
            local_addr, local_port, remote_addr, remote_port = name
            name = self._name = f"{dotted(local_addr)}:{local_port}>{dotted(remote_addr)}:{remote_port}"
        return name

    def can(self, event: Event) -> bool:
        """Whether ``event`` is a transition from the current state."""
        return (self.state, event) in TRANSITIONS

    def apply(self, event: Event, now: float, note: str = "") -> State:
        """Move to the state the table gives for (state, event) and return it."""
        old = self.state
        new = TRANSITIONS.get((old, event))
        if new is None:
            raise IllegalTransition(self.name, old, event)
        self.state = new
        if self._debug:
            _log.debug("%s %s -[%s]-> %s %s", self.name, old.value, event.name, new.value, note)
        if self._tracer is not None:
            self._tracer(TransitionRecord(now, self.name, old, event, new, note))
        return new

    def __repr__(self) -> str:
        return f"StateMachine({self.state}, name={self.name!r})"


def diagram() -> str:
    """The transition table as a Mermaid ``stateDiagram-v2``; parallel rows share one labelled edge."""
    edges: dict[tuple[State, State], list[str]] = {}
    for (old, event), new in TRANSITIONS.items():
        edges.setdefault((old, new), []).append(event.value)
    lines = ["stateDiagram-v2"]
    lines += [f'    state "{state.value}" as {state.name}' for state in State]
    lines.append(f"    [*] --> {State.CLOSED.name}")
    lines += [f"    {old.name} --> {new.name}: {' / '.join(labels)}" for (old, new), labels in edges.items()]
    return "\n".join(lines) + "\n"
