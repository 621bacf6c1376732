"""``ekm-async decode`` as docs/architecture.md gives it."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ekm_async import encode
from ekm_async.cli import main
from ekm_async.crc import crc16

ROOT = Path(__file__).resolve().parents[1]


def decode_cli(args: list[str], stdin: str = "") -> tuple[int, list[dict[str, Any]]]:
    out = io.StringIO()
    code = main(["decode", *args], stdin=io.StringIO(stdin), stdout=out)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def test_decode_hex_argument_with_spaces(frame_a: bytes, captured: dict[str, Any]) -> None:
    code, [report] = decode_cli([frame_a.hex(" ")])
    assert code == 0
    assert report["kind"] == "v4a"
    assert report["crc_ok"] is True
    for name, value in captured["expected"].items():
        assert report["fields"][name] == value


def test_decode_split_hex_arguments(frame_a: bytes) -> None:
    code, [report] = decode_cli(frame_a.hex(" ").split(" "))
    assert code == 0
    assert report["fields"]["kWh_Tot"] == 14892403.0


def test_json_uses_json_numbers(frame_a: bytes) -> None:
    out = io.StringIO()
    main(["decode", frame_a.hex()], stdout=out)
    text = out.getvalue()
    assert '"RMS_Volts_Ln_1": 123.9' in text
    assert '"RMS_Watts_Tot": 2726' in text
    assert '"Model": "1024"' in text


def test_stdin_one_frame_per_line_and_exit_status(frame_a: bytes) -> None:
    bad = bytearray(frame_a)
    bad[20] ^= 1
    code, reports = decode_cli([], f"{frame_a.hex()}\n\n{bad.hex()}\nzz\n{frame_a.hex()}\n")
    assert code == 1
    assert [r["crc_ok"] for r in reports] == [True, False, False, True]
    assert reports[1]["error"] == "crc"
    assert reports[1]["raw"] == bad.hex()
    assert reports[2]["error"] == "hex"


def test_crc_ok_but_content_bad(frame_a: bytes) -> None:
    bad = bytearray(frame_a)
    bad[20] = ord("?")
    bad[253:] = crc16(bad[1:253])
    code, [report] = decode_cli([bad.hex()])
    assert code == 1
    assert report["crc_ok"] is True
    assert report["error"] == "field"


def test_kind_and_kwh_scale_options(frame_a: bytes) -> None:
    code, [report] = decode_cli(["--kind", "v4b", frame_a.hex()])
    assert code == 1
    assert report["error"] == "request-type"
    v3 = encode("v3", {"Meter_Address": "000000000042", "kWh_Tot": 12345.0}, kwh_scale=0)
    code, [report] = decode_cli(["--kind", "v3", "--kwh-scale", "0", v3.hex()])
    assert code == 0
    assert report["kind"] == "v3"
    assert report["fields"]["kWh_Tot"] == 12345.0
    code, [report] = decode_cli(["--kind", "v3", v3.hex()])
    assert report["fields"]["kWh_Tot"] == 1234.5  # V3 default: tenths


def test_console_script_decodes_the_readme_example() -> None:
    exe = Path(sys.executable).with_name("ekm-async")
    with (ROOT / "examples" / "captured_v4a.hex").open() as stdin:
        out = subprocess.run([str(exe), "decode"], stdin=stdin, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["fields"]["Meter_Address"] == "000300001184"
