"""Render the documents generated from the code's tables: docs/session.md (the session state diagram,
from the one transition table) and docs/settings.md (every setting, from the settings catalogue).

    .venv/bin/python scripts/render_docs.py          # write them
    .venv/bin/python scripts/render_docs.py --check  # exit 1 if one is out of date

The diagram is Mermaid (GitHub renders it); tests/test_docs.py keeps both in step with their tables.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ekm_async.catalogue import SETTINGS, SettingSpec
from ekm_async.session import MEANING, TRANSITIONS, SessionEvent, State

DOCS = Path(__file__).resolve().parents[1] / "docs"


def render_session() -> str:
    lines = [
        "# The session state machine",
        "",
        "Generated from `ekm_async.session.TRANSITIONS` by `scripts/render_docs.py`; do not edit.",
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


def _json_example(spec: SettingSpec) -> str:
    examples = {
        "relay": '{"relay": 1, "state": "close", "seconds": 5}',
        "ct-ratio": '{"ratio": 800}',
        "max-demand-period": '{"period": 30}',
        "max-demand-reset-interval": '{"interval": "daily"}',
        "max-demand-reset-now": "{}",
        "time": '{"when": "2026-01-31T14:30:00+01:00"}',
        "pulse-input-ratio": '{"line": 1, "ratio": 100}',
        "pulse-output-ratio": '{"ratio": 800}',
        "zero-resettable": "{}",
        "lcd": '{"items": ["kWh_Tot", "RMS_Watts_Tot", 33]}',
        "weekend-holiday-schedules": '{"weekend": 2, "holiday": 3}',
        "password": '{"new_password": "12345678"}',
        "address": '{"new_address": "000300001185"}',
        "schedule": '{"schedule": 1, "periods": [[6, 0, 1], [18, 30, 2]]}',
        "seasons": '{"seasons": [[1, 1, 0], [6, 1, 1]]}',
        "holidays": '{"dates": [[1, 1], [12, 25]]}',
    }
    return examples[spec.name]


def render_settings() -> str:
    lines = [
        "# Settings",
        "",
        "Generated from `ekm_async.catalogue.SETTINGS` by `scripts/render_docs.py`; do not edit. Every",
        "setting is one entry of that table, which the meter handles, `ekm-async set`, the web service and",
        "MQTT all read: the same names, arguments and checks everywhere. A bad argument is refused before",
        "anything is sent. Every write is connect → password → write → close, and is sent only after the",
        "password was acknowledged.",
        "",
        "| setting | `ekm-async set URL ADDRESS …` | Python | `POST /api/meters/{address}/{setting}` body "
        "| meters | ekmmeters |",
        "|---|---|---|---|---|---|",
    ]
    for spec in SETTINGS.values():
        keywords = ", ".join(a.name for a in spec.arguments)
        command = f"{spec.name} {spec.usage}".rstrip().replace("|", "\\|")
        cells = [
            f"`{spec.name}`: {spec.summary}",
            f"`{command}`",
            f"`meter.{spec.method}({keywords})`",
            f"`{_json_example(spec)}`",
            "V4" if spec.v4_only else "V3, V4",
            f"`{spec.ekmmeters}`" if spec.ekmmeters.startswith("set") else spec.ekmmeters,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Every body may also carry `password` (the meter's; default: the handle's). `meter.apply(name, **arguments)`",
        "writes any setting by its name, as the command line and the web service do.",
    ]
    return "\n".join(lines) + "\n"


RENDERERS = {"session.md": render_session, "settings.md": render_settings}


def main(argv: list[str]) -> int:
    stale = []
    for name, render in RENDERERS.items():
        path, text = DOCS / name, render()
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
            continue
        path.write_text(text)
        print(f"wrote {path}")
    for name in stale:
        print(f"docs/{name} is out of date: run scripts/render_docs.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
