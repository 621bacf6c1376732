"""The session table (protocol.md §6.1): every (state, event) pair, and the rules as properties checked
against an independent reference model over random event sequences."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ekm_async.errors import EkmError, LocalProtocolError
from ekm_async.session import TRANSITIONS, SessionEvent, State, allowed, next_state

ALL_PAIRS = list(itertools.product(State, SessionEvent))
WRITES = {SessionEvent.WRITE_ACCEPTED, SessionEvent.WRITE_REFUSED}
PASSWORDS = {SessionEvent.PASSWORD_ACCEPTED, SessionEvent.PASSWORD_REFUSED}
events = st.lists(st.sampled_from(SessionEvent), max_size=40)


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=[f"{s.value}-{e.value}" for s, e in ALL_PAIRS])
def test_next_state_follows_the_table_for_every_pair(state: State, event: SessionEvent) -> None:
    if (state, event) in TRANSITIONS:
        assert allowed(state, event)
        after = next_state(state, event)
        assert isinstance(after, State)
        assert after is TRANSITIONS[state, event]
    else:
        assert not allowed(state, event)
        with pytest.raises(LocalProtocolError) as info:
            next_state(state, event)
        assert info.value.state is state
        assert info.value.event is event
        assert isinstance(info.value, EkmError)
        assert event.value in str(info.value)
        assert state.value in str(info.value)


def test_table_only_holds_states_and_events() -> None:
    for (state, event), after in TRANSITIONS.items():
        assert isinstance(state, State)
        assert isinstance(event, SessionEvent)
        assert isinstance(after, State)


def test_idle_allows_no_password_write_or_read() -> None:
    for event in (*PASSWORDS, *WRITES, SessionEvent.READ):
        assert not allowed(State.IDLE, event)
        with pytest.raises(LocalProtocolError):
            next_state(State.IDLE, event)


def test_a_write_needs_authorized() -> None:
    assert {state for state, event in TRANSITIONS if event in WRITES} == {State.AUTHORIZED}


def test_authorized_is_reached_only_by_an_accepted_password_from_connected() -> None:
    into_authorized = {pair for pair, after in TRANSITIONS.items() if after is State.AUTHORIZED}
    assert into_authorized == {(State.CONNECTED, SessionEvent.PASSWORD_ACCEPTED)}


def test_any_write_spends_the_session() -> None:
    for event in WRITES:
        assert next_state(State.AUTHORIZED, event) is State.SPENT


@pytest.mark.parametrize("state", list(State))
def test_close_always_leads_to_idle(state: State) -> None:
    assert next_state(state, SessionEvent.CLOSE) is State.IDLE


@pytest.mark.parametrize("state", list(State))
def test_connect_is_always_allowed_and_connects(state: State) -> None:
    assert next_state(state, SessionEvent.CONNECT) is State.CONNECTED


@dataclass
class Reference:
    """§6.1 written out independently of the table: what the host has done since the last close."""

    connected: bool = False
    """A sign-on was answered and no close followed."""
    written: bool = False
    """A write was sent since that sign-on."""
    armed: bool = False
    """The event just before was an acknowledged password in a fresh, connected session."""

    def write_legal(self) -> bool:
        return self.armed

    def apply(self, event: SessionEvent) -> None:
        was_armed, self.armed = self.armed, False
        if event is SessionEvent.CONNECT:
            self.connected, self.written = True, False
        elif event is SessionEvent.CLOSE:
            self.connected, self.written = False, False
        elif event in WRITES:
            self.written = True
        elif event is SessionEvent.PASSWORD_ACCEPTED:
            self.armed = self.connected and not self.written and not was_armed


@given(st.data(), st.integers(0, 40))
def test_random_sequences_agree_with_the_reference(data: st.DataObject, length: int) -> None:
    state, ref = State.IDLE, Reference()
    for _ in range(length):
        # Mostly events the table allows (to reach deep states), sometimes any event at all.
        legal = [e for e in SessionEvent if allowed(state, e)]
        event = data.draw(st.sampled_from(legal) | st.sampled_from(list(SessionEvent)))
        # What §6.1 says the host may do now, checked against the table before the event.
        assert allowed(state, SessionEvent.WRITE_ACCEPTED) == ref.write_legal()
        assert allowed(state, SessionEvent.WRITE_REFUSED) == ref.write_legal()
        assert allowed(state, SessionEvent.CONNECT)
        assert allowed(state, SessionEvent.CLOSE)
        if allowed(state, SessionEvent.PASSWORD_ACCEPTED) or allowed(state, SessionEvent.PASSWORD_REFUSED):
            assert ref.connected
            assert not ref.written
        if allowed(state, SessionEvent.READ):
            assert ref.connected
        assert (state is State.IDLE) == (not ref.connected)
        if allowed(state, event):
            state = next_state(state, event)
            ref.apply(event)
        else:
            with pytest.raises(LocalProtocolError):
                next_state(state, event)


@given(events, st.sampled_from(sorted(WRITES, key=lambda e: e.value)), events)
def test_after_a_write_another_needs_connect_and_password_again(
    before: list[SessionEvent], write: SessionEvent, after: list[SessionEvent]
) -> None:
    state = State.IDLE
    for event in [SessionEvent.CONNECT, *before, SessionEvent.CONNECT, SessionEvent.PASSWORD_ACCEPTED]:
        state = next_state(state, event) if allowed(state, event) else state
    state = next_state(state, write)  # legal: just connected and authorized
    seen_connect = seen_password = False
    for event in after:
        if not allowed(state, event):
            continue
        if event in WRITES:
            assert seen_connect
            assert seen_password
        if event is SessionEvent.CONNECT:
            seen_connect, seen_password = True, False
        elif event is SessionEvent.PASSWORD_ACCEPTED:
            seen_password = seen_connect
        elif event in WRITES or event is SessionEvent.CLOSE:
            seen_connect = seen_password = False
        state = next_state(state, event)


@given(events)
def test_close_after_any_sequence_is_idle(sequence: list[SessionEvent]) -> None:
    state = State.IDLE
    for event in sequence:
        if allowed(state, event):
            state = next_state(state, event)
    assert next_state(state, SessionEvent.CLOSE) is State.IDLE
