"""The generated documents (docs/session.md from the session table, docs/settings.md from the settings
catalogue) must stay in step with their tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ekm_async.catalogue import SETTINGS
from ekm_async.layouts import LAYOUTS
from ekm_async.session import MEANING, TRANSITIONS, SessionEvent, State

ROOT = Path(__file__).resolve().parents[1]


def test_generated_docs_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render_docs.py"), "--check"],
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


def test_every_setting_is_documented_with_its_command_line_and_body() -> None:
    text = (ROOT / "docs" / "settings.md").read_text()
    for spec in SETTINGS.values():
        assert f"`{spec.name}`: {spec.summary}" in text
        assert f"meter.{spec.method}(" in text


def test_every_checked_constant_is_listed_with_its_evidence() -> None:
    text = (ROOT / "docs" / "checks.md").read_text()
    for layout in LAYOUTS.values():
        for c in layout.constants:
            assert (
                f"| {layout.kind.value} | {c.offset}–{c.end - 1} | {c.what} `{c.value.hex(' ')}` | {c.evidence.value} |"
                in text
            )
