"""Render the session state diagram from the one transition table into docs/session.md.

    .venv/bin/python scripts/render_session_diagram.py          # write docs/session.md
    .venv/bin/python scripts/render_session_diagram.py --check  # exit 1 if it is out of date

The diagram is Mermaid (GitHub renders it); tests/test_session_doc.py keeps it in step with the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ekm_async.session import MEANING, TRANSITIONS, SessionEvent, State

DOC = Path(__file__).resolve().parents[1] / "docs" / "session.md"


def render() -> str:
    lines = [
        "# The session state machine",
        "",
        "Generated from `ekm_async.session.TRANSITIONS` by `scripts/render_session_diagram.py`; do not edit.",
        "Host and simulated meter drive the same table (protocol.md §6.1). A pair not drawn is not",
        "allowed: the bus raises `LocalProtocolError` before sending, the meter does not answer.",
        "",
        "```mermaid",
        "stateDiagram-v2",
        f"    [*] --> {State.IDLE.name}",
    ]
    lines += [f"    {src.name} --> {dst.name}: {event.value}" for (src, event), dst in TRANSITIONS.items()]
    lines += ["```", "", "| state | meaning |", "|---|---|"]
    lines += [f"| {state.name} | {MEANING[state]} |" for state in State]
    lines += ["", "| event | meaning |", "|---|---|"]
    lines += [f"| {event.value} | {MEANING[event]} |" for event in SessionEvent]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = DOC.read_text() if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is out of date: run scripts/render_session_diagram.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
