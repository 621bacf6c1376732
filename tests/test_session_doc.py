"""docs/session.md is generated from the transition table and must stay in step with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ekm_async.session import MEANING, TRANSITIONS, SessionEvent, State

ROOT = Path(__file__).resolve().parents[1]


def test_session_doc_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render_session_diagram.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_transition_is_drawn() -> None:
    text = (ROOT / "docs" / "session.md").read_text()
    for (src, event), dst in TRANSITIONS.items():
        assert f"{src.name} --> {dst.name}: {event.value}" in text


def test_every_state_and_event_has_a_meaning() -> None:
    assert set(MEANING) == set(State) | set(SessionEvent)
