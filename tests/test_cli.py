"""``ekm-async decode`` as docs/architecture.md gives it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ekm_async import Refused, commands, encode, open_bus
from ekm_async.cli import main
from ekm_async.crc import crc16
from ekm_async.sim import MeterModel, MeterType, SimBus, SimServer

ADDRESS = "000300001184"

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
    assert reports[2]["detail"] == "not hex: give pairs of hex digits (0–9, a–f), spaces allowed, one frame per line"


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


# ---------------------------------------------------------------------------------------------------
# Captures for bug reports


async def _captured_session(path: Path) -> None:
    """An echoing simulated wire: a read, a settings read, a refused password whose CRC holds 06, a write."""
    sim = SimBus([MeterModel(ADDRESS, MeterType.V4)], baud=0, turnaround=0.001, echo=True)
    async with SimServer(sim) as server:
        host, port = await server.start_tcp()
        async with open_bus(f"tcp://{host}:{port}", timeout_margin=0.1, capture=str(path)) as bus:
            meter = bus.v4(ADDRESS)
            await meter.read()
            await meter.read_settings()
            with contextlib.suppress(Refused):
                await meter.set_ct_ratio(800, password="00049865")
            await meter.set_password("12345678")
            await bus.v4(ADDRESS, password="12345678").set_password("00000000")
        # Once the bus is closed (and its capture with it): what a capture holds back for redaction,
        # and what its thread has not yet written, is in the file.
        assert bus.stats.bytes_received == sum(len(rx) for rx in _lines(path, "rx"))
        assert bus.stats.bytes_sent == sum(len(tx) for tx in _lines(path, "tx"))


def _lines(path: Path, direction: str) -> list[bytes]:
    out = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("dir") == direction:
            out.append(bytes.fromhex(record["hex"]))
    return out


def test_a_capture_holds_every_byte_both_ways_and_no_password(tmp_path: Path) -> None:
    path = tmp_path / "capture.jsonl"
    asyncio.run(_captured_session(path))
    header = json.loads(path.read_text().splitlines()[0])
    assert header["capture"] == "ekm-async"
    assert header["url"].startswith("tcp://")
    everything = b"".join(_lines(path, "tx") + _lines(path, "rx"))
    for password in (b"00049865", b"12345678"):
        assert password not in everything
    assert everything.count(b"(********)") >= 2 * 4  # four passwords sent, each echoed


def test_decode_replays_a_capture_and_says_what_it_made_of_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "capture.jsonl"
    asyncio.run(_captured_session(path))
    result = cli("decode", "--capture", str(path))
    assert result.returncode == 0, result.stdout[-2000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    frames = [r for r in records if r.get("event") == "frame"]
    kinds = {r["kind"] for r in frames}
    assert kinds == {"v4a", "v4b", "months", "schedules", "schedules_5_8", "holidays"}
    assert all(r["fields"]["Meter_Address"] == ADDRESS for r in frames if r["kind"].startswith("v4"))
    echoed = sum(len(bytes.fromhex(r["raw"])) for r in records if r.get("event") == "echo")
    sent = sum(len(r["sent"].encode("latin-1")) for r in records if "sent" in r)
    assert echoed in (sent, sent - 5)  # every byte sent was echoed (the last close string's may come after the end)
    assert sum(r.get("event") == "ack" for r in records) == 4  # two passwords and two writes acknowledged
    assert not any(r.get("event") == "rejected" for r in records)


def test_decode_of_a_file_that_is_no_capture_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "other.jsonl"
    path.write_text('{"hello": 1}\n')
    result = cli("decode", "--capture", str(path))
    assert result.returncode == 2
    assert "not a line of an ekm-async capture" in result.stderr


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(args), stdout=out)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize(
    "damage",
    [
        lambda echo: b"\x03" + echo[1:],  # its SOH: the echo no longer looks like a request
        lambda echo: echo[:8] + b"7" + echo[9:],  # a digit of the password
        lambda echo: echo[:4] + b"*" + echo[5:],  # its opening parenthesis
    ],
)
def test_a_capture_redacts_a_damaged_echo_of_a_password_and_nothing_of_a_frame(
    tmp_path: Path, frame_a: bytes, damage: Callable[[bytes], bytes]
) -> None:
    from ekm_async._capture import Capture  # noqa: PLC0415

    secret = b"00049865"
    request = commands.password(secret.decode())
    path = tmp_path / "capture.jsonl"
    capture = Capture(path, {"url": "test"})
    capture.tx(request)
    echo = damage(request)
    for i in range(0, len(echo), 3):  # cut across reads
        capture.rx(echo[i : i + 3])
    capture.rx(frame_a)
    capture.close()
    received = b"".join(_lines(path, "rx"))
    assert secret[:7] not in received
    assert secret[1:] not in received
    assert received.endswith(frame_a)  # a frame's digits are left alone
