"""What a connection tells its owner: small frozen dataclasses, handed to the ``emit`` callback in order.

Each event names the connection it concerns. The engine emits all of them except
:class:`IncomingConnection`, which the stack emits when a passive connection that reached
ESTABLISHED (announced by :class:`Connected`) is queued on its listener, and :class:`ConnectRequest`,
which a promiscuous stack (``Stack.listen_any``) emits for a SYN it holds for the application to answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from .connection import Connection

__all__ = [
    "Closed",
    "ConnectRequest",
    "Connected",
    "ConnectionFailed",
    "ConnectionReset",
    "DataReadable",
    "Event",
    "IncomingConnection",
    "PeerClosed",
    "Writable",
]


@dataclass(frozen=True, slots=True)
class Connected:
    """The connection reached ESTABLISHED (active open, or a passive one before it is accepted)."""

    conn: Connection


@dataclass(frozen=True, slots=True)
class DataReadable:
    """New in-order bytes arrived. Emitted once per batch: not again until the app calls recv."""

    conn: Connection


@dataclass(frozen=True, slots=True)
class Writable:
    """Send-buffer space freed after a send() could not take everything it was given."""

    conn: Connection


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer's FIN arrived: end of file once the buffered bytes are read."""

    conn: Connection


@dataclass(frozen=True, slots=True)
class ConnectionReset:
    """An acceptable RST arrived: errno is ECONNRESET, or ECONNREFUSED for one answering our SYN."""

    conn: Connection
    errno: int


@dataclass(frozen=True, slots=True)
class ConnectionFailed:
    """The connection gave up: errno is ETIMEDOUT (retransmissions, probes, keepalive), or another
    errno the stack reports (EHOSTUNREACH from ICMP, ...)."""

    conn: Connection
    errno: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The TCB reached CLOSED (after TIME-WAIT too): the stack removes it from its table."""

    conn: Connection


@dataclass(frozen=True, slots=True)
class IncomingConnection:
    """A passive connection reached ESTABLISHED and waits in its listener's accept queue."""

    conn: Connection
    # The stack's Listener; typed loosely so this module does not depend on the stack.
    listener: Any


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """A SYN reached the promiscuous listener (Stack.listen_any) and nothing was answered yet: ``conn`` is
    the unopened TCB for its 4-tuple (``conn.local_addr`` is the address the peer wants), waiting for
    ``Stack.accept_request`` or ``Stack.refuse_request``. A Closed event ends it if it expires first."""

    conn: Connection
    # The stack's InterceptListener; typed loosely as IncomingConnection.listener.
    listener: Any


Event: TypeAlias = (
    Connected
    | DataReadable
    | Writable
    | PeerClosed
    | ConnectionReset
    | ConnectionFailed
    | Closed
    | IncomingConnection
    | ConnectRequest
)
