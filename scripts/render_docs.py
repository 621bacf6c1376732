"""Render the documents generated from the code's tables: docs/session.md (the session state diagram,
from the one transition table), docs/settings.md (every setting, from the settings catalogue),
docs/checks.md (every byte the decoder checks, with its evidence, from the layouts), docs/config.md
(every key of the config file, from its key tables, and the example config) and docs/fields.md (every
field with its JSON type, unit, blocks and meaning, and what prints JSON).

    .venv/bin/python scripts/render_docs.py          # write them
    .venv/bin/python scripts/render_docs.py --check  # exit 1 if one is out of date

The diagram is Mermaid (GitHub renders it); tests/test_docs.py keeps both in step with their tables.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ekm_async import config, text
from ekm_async.calculated import CALCULATED
from ekm_async.catalogue import BODY_EXAMPLES, SETTINGS, SettingSpec
from ekm_async.layouts import LAYOUTS, BlockKind, Evidence, FieldSpec, FieldType
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
    return BODY_EXAMPLES[spec.name]


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


_FRAME_CHECKS = [
    ("every block", "0", "STX (`02`)", "captured (both frames)", "reject: `no-stx`"),
    ("every block", "0–254", "exactly 255 bytes", "captured; ekmmeters' code", "reject: `length` / `truncated`"),
    ("every block", "0–254", "7-bit bytes (the line is 7E1)", "EKM's serial settings", "reject: `not-7bit`"),
    ("every block", "253–254", "CRC of 1–252", "captured (both frames); ekmmeters' code", "reject: `crc`"),
    ("every block", "fields", "digits where a field is a number", "EKM's document; ekmmeters' code", "reject: `field`"),
    ("V4 A", "230", "`kWh_Scale` 0, 1 or 2", "captured (0 and 2); ekmmeters' code", "reject: `field`"),
    ("V3, V4 A, V4 B", "4–15", "the address asked", "ekmmeters' code (HEAD)", "reject (`unexpected`), asked again"),
]


def render_checks() -> str:
    lines = [
        "# Bytes the decoder checks, and why",
        "",
        "Generated from `ekm_async.layouts.LAYOUTS` by `scripts/render_docs.py`; do not edit. Only two frames",
        "were ever captured from real meters (both V4 A, in `tests/vectors/`); every other expectation comes",
        "from EKM's document or ekmmeters' code, or is a guess. A check that a captured frame backs rejects a",
        "frame that fails it. One that only the vendor's code or a guess backs does not: a frame whose CRC,",
        "length, STX, address and fields hold is delivered, its block flagged (`block.anomalies`), counted",
        "(`bus.stats.anomalies`, `ekm_frames_anomalous` in the metrics) and logged once per meter with the raw",
        "frame — unless the bus is strict (`open_bus(url, strict=True)`), which rejects it. A block of the",
        "wrong kind is still caught: a frame that holds another kind's *captured* mark where its own is",
        "expected (`00`, the V4 A request type, where a B block's `01` should be) is rejected as that kind.",
        "",
        "| block | offset | what | evidence | when it fails |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in _FRAME_CHECKS]
    for layout in LAYOUTS.values():
        for c in sorted(layout.constants, key=lambda c: c.offset):
            verdict = f"reject: `{c.reason.value}`" if c.evidence is Evidence.CAPTURED else "flag (reject if strict)"
            lines.append(
                f"| {layout.kind.value} | {c.offset}–{c.end - 1} | {c.what} `{c.value.hex(' ')}` | {c.evidence.value} "
                f"| {verdict} |"
            )
    lines += [
        "",
        "Settings blocks (months, schedules, holidays) begin with 6 bytes EKM's document calls reserved and",
        "ekmmeters an echo of the command; nothing shows what they hold, and the decoder does not check them.",
    ]
    return "\n".join(lines) + "\n"


def render_config() -> str:
    lines = [
        "# The config file of `ekm-async run`",
        "",
        "Generated from the key tables of `ekm_async.config` and its example by `scripts/render_docs.py`;",
        "do not edit. `ekm-async run --config FILE` runs what one TOML file describes: the buses and their",
        "meters, the store, the web service and MQTT, in one process. `ekm-async config check FILE` checks",
        "a file completely (secrets and certificate files included) and starts nothing;",
        "`ekm-async config example` prints the example below, which runs as it is on the built-in simulator.",
        "",
        "* A file is checked whole before anything starts: an unknown key, a value of the wrong type or",
        "  out of range, a secret that cannot be read is one line naming the file and the key",
        "  (`ekm.toml: bus[0].meter[1].address: …`), exit status 2.",
        "* Secrets are never in the file: meter passwords, the web token and the MQTT password come from",
        "  a file (`…_file`, its line end stripped) or an environment variable (`…_env`), not both. A",
        "  meter without either has the factory password `00000000`. Errors never repeat a secret.",
        "* Relative paths are relative to the config file's directory.",
        "* A password or an address changed through any interface (web, MQTT, `ekm-async set`) is held",
        "  by the running process only: the audit trail says so, and the config must be updated by hand.",
        '* `url = "simulate"` is the built-in simulator (paced at 9600 baud), serving that bus\'s meters.',
        "",
        "## Keys",
    ]
    for section, keys in config.sections().items():
        lines += ["", f"### `{section}`", "", "| key | value | default |", "|---|---|---|"]
        for name, key in keys.items():
            value, default = config.describe_key(key)
            lines.append(f"| `{name}` | {value} | {default} |")
    lines += [
        "",
        "Every `[[bus]]` key but `url`, `interval`, `meter` is an option of `ekm_async.open_bus`",
        "(`BusOptions`; docs/architecture.md); `interval` is its meters' default.",
        "",
        "## The example",
        "",
        "```toml",
        config.example().rstrip("\n"),
        "```",
    ]
    return "\n".join(lines) + "\n"


_JSON_TYPE = {
    FieldType.INT: "integer",
    FieldType.FLOAT: "number",
    FieldType.STR: "string",
    FieldType.HEX: "string (hex)",
    FieldType.PF: "string",
    FieldType.NUMBER: "integer, from 1",
}
_KIND_NAME = {
    BlockKind.V3: "V3",
    BlockKind.V4A: "V4 A",
    BlockKind.V4B: "V4 B",
    BlockKind.MONTHS: "months",
    BlockKind.SCHEDULES: "schedules",
    BlockKind.SCHEDULES_5_8: "schedules_5_8",
    BlockKind.HOLIDAYS: "holidays",
}
_OUTPUTS = (
    ("`ekm-async read --json`", "one object: field → value (a V4 read: A's fields, B's own, the calculated ones)"),
    (
        "`ekm-async settings --json`",
        "one object: block (`months_forward`, `months_reverse`, `schedules`, "
        "`schedules_5_8`, `holidays`) → field → value",
    ),
    ("`ekm-async poll --json`", "one line per read: `time` (the host's, ISO 8601, UTC), then field → value"),
    (
        "`ekm-async decode`",
        "one line per frame: `kind`, `crc_ok`, `fields` (field → value); a bad frame "
        "`error` (the reason), `detail`, `raw` (hex) instead of `fields`",
    ),
    (
        "`GET /api/meters/{address}/latest`, the stream's `read` events",
        "`address`, `time` (the host's), "
        "`meter_time` (the meter's clock, ISO 8601 without a zone, null when unreadable), `fields`",
    ),
    (
        "`GET /api/meters/{address}/reads`",
        "`address`, `reads`: each `address`, `time`, `kind` (`v3`/`v4`), "
        "`raw_a`, `raw_b` (hex), `fields` (the stored columns that hold a value)",
    ),
    ("MQTT `{prefix}/{address}/state`", "`time` (the host's), then field → value"),
    ("`store.export_json(address, since)`", "one line per read: `time`, then the stored columns"),
)


def _families(kinds: list[tuple[BlockKind, list[str], dict[str, str]]]) -> list[tuple[str, str, set[str], str]]:
    """(family shown, JSON type, the blocks that carry it, unit) for every field family, in wire order."""
    out: dict[str, tuple[str, set[str], str, list[tuple[int, ...]]]] = {}
    for kind, names, types in kinds:
        for name in names:
            fam = text.family(name)
            numbers = tuple(int(n) for n in re.findall(r"\d+", name))
            entry = out.setdefault(fam, (types[name], set(), text.unit(name), []))
            entry[1].add(_KIND_NAME[kind])
            entry[3].append(numbers)
    rows = []
    for fam, (json_type, where, unit, numbers) in out.items():
        letters = iter("nmp") if fam.count("{}") > 1 else iter("n")
        shown, ranges = fam, []
        for i in range(fam.count("{}")):
            letter = next(letters)
            values = [n[i] for n in numbers]
            shown = shown.replace("{}", letter, 1)
            ranges.append(f"{letter} = {min(values)}–{max(values)}")
        label = f"`{shown}`" + (f" ({', '.join(ranges)})" if ranges else "")
        rows.append((fam, label, json_type, where, unit))
    return [(fam, f"{label} | {json_type}", where, unit) for fam, label, json_type, where, unit in rows]


def render_fields() -> str:
    kinds = []
    for kind, layout in LAYOUTS.items():
        types = {f.name: _code_type(f) if f.type is FieldType.CODE else _JSON_TYPE[f.type] for f in layout.fields}
        names = [f.name for f in layout.fields]
        for calc in CALCULATED.get(kind, ()):
            names += calc.names
            types |= dict.fromkeys(calc.names, "integer (calculated)")
        kinds.append((kind, names, types))
    lines = [
        "# Fields and JSON output",
        "",
        "Generated from `ekm_async.layouts`, `ekm_async.calculated` and `ekm_async.text` by",
        "`scripts/render_docs.py`; do not edit. Every value is a JSON number, string or null, never a display",
        "string; numbering and units follow [numbering.md](numbering.md): schedules 1–8, tariffs 1–4, the",
        "max-demand period in minutes, the reset interval in words. `ekm-async read` and `settings` without",
        "`--json` print the same values for people (`ekm_async.text`: units, the meter's clock as a date,",
        "tables).",
        "",
        "## What prints JSON",
        "",
        "| where | what |",
        "|---|---|",
        *(f"| {where} | {what} |" for where, what in _OUTPUTS),
        "",
        "## Every field",
        "",
        "| field | JSON | unit | blocks | meaning |",
        "|---|---|---|---|---|",
    ]
    order = list(_KIND_NAME.values())
    for fam, label_type, where, unit in _families(kinds):
        blocks = ", ".join(sorted(where, key=order.index))
        lines.append(f"| {label_type} | {unit} | {blocks} | {text.DESCRIPTIONS[fam]} |")
    return "\n".join(lines) + "\n"


def _code_type(spec: FieldSpec) -> str:
    return ("integer" if spec.says_numbers else "string") + " or null"


RENDERERS = {
    "session.md": render_session,
    "fields.md": render_fields,
    "settings.md": render_settings,
    "checks.md": render_checks,
    "config.md": render_config,
}


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
