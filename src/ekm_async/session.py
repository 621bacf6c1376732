"""The session rules of protocol.md §6.1 as one transition table, shared by host and meter.

A sign-on (the A or V3 read, and the B read, which carry the address) selects one meter: the session
is CONNECTED. Reads need nothing more. A write needs an acknowledged password right before it, and
after a write the next write needs the whole connect + password again. The close string ends the
session. Both ends drive the same table: the bus before it sends (a missing pair is a local protocol
error: nothing is sent) and the simulated meter when a request arrives (a missing pair: no reply).
"""

from __future__ import annotations

from ._enum import TableKey
from .errors import LocalProtocolError

__all__ = ["MEANING", "TRANSITIONS", "SessionEvent", "State", "allowed", "next_state"]


class State(TableKey):
    """The state of a meter session (meanings in :data:`MEANING`)."""

    IDLE = "idle"
    CONNECTED = "connected"
    AUTHORIZED = "authorized"
    SPENT = "spent"


class SessionEvent(TableKey):
    """What happens in a session: the request, and for password and write the meter's answer."""

    CONNECT = "connect"
    READ = "read"
    PASSWORD_ACCEPTED = "password-accepted"
    PASSWORD_REFUSED = "password-refused"
    WRITE_ACCEPTED = "write-accepted"
    WRITE_REFUSED = "write-refused"
    CLOSE = "close"


S, E = State, SessionEvent

MEANING: dict[State | SessionEvent, str] = {
    S.IDLE: "No meter selected: only a sign-on (or a close) means anything.",
    S.CONNECTED: "A meter answered its sign-on: reads, and a password, may follow.",
    S.AUTHORIZED: "The meter acknowledged the password: one write may follow.",
    S.SPENT: "A write was sent: reads may follow; another write needs connect and password again.",
    E.CONNECT: "A sign-on (V3 read, V4 A or B read, which carry the address) answered by that meter.",
    E.READ: "A settings read answered.",
    E.PASSWORD_ACCEPTED: "The password was acknowledged (ACK).",
    E.PASSWORD_REFUSED: "The password got no ACK.",
    E.WRITE_ACCEPTED: "The write was acknowledged (ACK).",
    E.WRITE_REFUSED: "The write got no ACK: the host cannot know whether it was applied.",
    E.CLOSE: "The close string: no reply; every meter ends its session.",
}
"""What each state and event means (also rendered into docs/session.md)."""

TRANSITIONS: dict[tuple[State, SessionEvent], State] = {
    (S.IDLE, E.CONNECT): S.CONNECTED,
    (S.IDLE, E.CLOSE): S.IDLE,
    (S.CONNECTED, E.CONNECT): S.CONNECTED,
    (S.CONNECTED, E.READ): S.CONNECTED,
    (S.CONNECTED, E.PASSWORD_ACCEPTED): S.AUTHORIZED,
    (S.CONNECTED, E.PASSWORD_REFUSED): S.CONNECTED,
    (S.CONNECTED, E.CLOSE): S.IDLE,
    (S.AUTHORIZED, E.WRITE_ACCEPTED): S.SPENT,
    (S.AUTHORIZED, E.WRITE_REFUSED): S.SPENT,
    (S.AUTHORIZED, E.CONNECT): S.CONNECTED,
    (S.AUTHORIZED, E.CLOSE): S.IDLE,
    (S.SPENT, E.CONNECT): S.CONNECTED,
    (S.SPENT, E.READ): S.SPENT,
    (S.SPENT, E.CLOSE): S.IDLE,
}
"""(state, event) → next state. A pair not in the table is not allowed."""


def allowed(state: State, event: SessionEvent) -> bool:
    return (state, event) in TRANSITIONS


def next_state(state: State, event: SessionEvent) -> State:
    """The state after ``event``; :class:`LocalProtocolError` if the rules do not allow it."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise LocalProtocolError(state, event) from None
