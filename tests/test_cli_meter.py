"""``ekm-async read``, ``settings`` and ``set`` against ``ekm-async simulate`` over TCP.

One simulator subprocess serves the module; every test takes meters of its own from it (``v4`` and
``v3`` hand out fresh addresses), so tests do not see each other's writes.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ekm_async.cli import main
from ekm_async.model import parse_meter_time

pytestmark = pytest.mark.timeout(60)

_BIN = Path(sys.executable).parent
CLI = [str(_BIN / "ekm-async")] if (_BIN / "ekm-async").exists() else [sys.executable, "-m", "ekm_async"]
"""The installed console script (``python -m ekm_async`` if there is none)."""

V4_POOL = [f"{300010000 + n:012d}" for n in range(60)]
V3_POOL = [f"{300020000 + n:012d}" for n in range(20)]
STABLE = [
    "Meter_Address",
    "CT_Ratio",
    "Max_Demand_Period",
    "Pulse_Ratio_1",
    "Pulse_Ratio_2",
    "Pulse_Ratio_3",
    "Pulse_Output_Ratio",
    "Max_Demand_Interval_Reset",
    "State_Out",
]
"""Fields of a V4 read that change only when written."""


@contextlib.contextmanager
def simulator(*meters: str, extra: tuple[str, ...] = ()) -> Iterator[str]:
    """``ekm-async simulate`` with ``meters`` (``v4:ADDRESS``…) on TCP; yields ``tcp://HOST:PORT``."""
    args = ["simulate", "--tcp", "127.0.0.1:0", "--baud", "0", "--turnaround", "0.005", *extra]
    for meter in meters:
        args += ["--meter", meter]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline() if ready else ""
        match = re.match(r"ready tcp=(\S+):(\d+) ", line)
        if match is None:
            proc.kill()
            raise AssertionError(f"simulator not ready: {line!r} {proc.communicate()[1]!r}")
        yield f"tcp://{match[1]}:{match[2]}"
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with simulator(*(f"v4:{a}" for a in V4_POOL), *(f"v3:{a}" for a in V3_POOL)) as where:
        yield where


_fresh_v4 = iter(V4_POOL)
_fresh_v3 = iter(V3_POOL)


@pytest.fixture
def v4() -> str:
    """A V4 meter of the simulator no other test has touched."""
    return next(_fresh_v4)


@pytest.fixture
def v3() -> str:
    return next(_fresh_v3)


def installed(*args: str) -> subprocess.CompletedProcess[str]:
    """``ekm-async ARGS…``: the installed command in a subprocess."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30, check=False)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``ekm-async ARGS…`` run by its ``main`` in this process (no interpreter start-up: fast)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(list(args), stdout=out)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def read(url: str, address: str, *flags: str) -> dict[str, Any]:
    fields: dict[str, Any] = json.loads(ok(cli("read", url, address, "--json", *flags)))
    return fields


def settings(url: str, address: str, *flags: str) -> dict[str, dict[str, Any]]:
    blocks: dict[str, dict[str, Any]] = json.loads(ok(cli("settings", url, address, "--json", *flags)))
    return blocks


def set_(url: str, address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("set", url, address, *args)


def acked(url: str, address: str, *args: str) -> None:
    out = ok(set_(url, address, *args))
    assert out == f"ok: {args[0]} acknowledged by {address}\n"


def closed_port() -> int:
    """A local TCP port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# ---------------------------------------------------------------------------------------------------
# read and settings


def test_read_json_is_one_object_with_json_numbers(url: str, v4: str) -> None:
    text = ok(installed("read", url, v4, "--json"))
    assert text.count("\n") == 1
    fields = json.loads(text)
    assert fields["Meter_Address"] == v4
    assert fields["Model"] == "1024"
    assert '"CT_Ratio": 200,' in text  # a number, not "200"
    assert isinstance(fields["kWh_Tot"], float)
    assert isinstance(fields["RMS_Watts_Tot"], int)
    assert isinstance(fields["RMS_Volts_Ln_1"], float)
    # A and B merged: fields only B carries are there, and the calculated ones.
    assert {"Pulse_Output_Ratio", "RMS_Watts_Max_Demand", "Power_Factor_Ln_1", "Net_Calc_Watts_Tot"} <= set(fields)
    for value in fields.values():
        assert isinstance(value, int | float | str)


def test_read_json_v3(url: str, v3: str) -> None:
    fields = read(url, v3, "--v3")
    assert fields["Meter_Address"] == v3
    assert fields["Model"] == "1012"
    assert isinstance(fields["kWh_Tot"], float)
    assert isinstance(fields["Max_Demand"], float)
    assert "Pulse_Output_Ratio" not in fields


TABLED = re.compile(r".*_(Ln_)?\d|.*_Tot|Model|Firmware|Meter_Address|Meter_Time")
"""Fields the heading and the tables of read's text show (by line, in total, by tariff)."""


@pytest.mark.parametrize("flags", [(), ("--v3",)], ids=["v4", "v3"])
def test_read_text_says_units_and_times_and_hides_no_field(url: str, v4: str, v3: str, flags: tuple[str, ...]) -> None:
    address = v3 if flags else v4
    text = ok(cli("read", url, address, *flags))
    fields = read(url, address, *flags)
    model = "V3 (model 1012, firmware 13)" if flags else "V4 (model 1024, firmware 14)"
    assert text.startswith(f"meter {address}: {model}\nmeter clock: ")
    assert re.search(r"^meter clock: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z][a-z]+day$", text, re.MULTILINE)
    assert re.search(r"^ +line 1 +line 2 +line 3 +total$", text, re.MULTILINE)
    assert re.search(r"^volts( +\d+\.\d V){3}$", text, re.MULTILINE)
    assert re.search(r"^watts( +\d+ W){4}$", text, re.MULTILINE)
    decimals = 1 if flags else 2  # the meter's kWh decimals, kept: 1234.50 stays 1234.50
    assert re.search(rf"^energy( +\d+\.\d{{{decimals}}} kWh){{4}}$", text, re.MULTILINE)
    assert re.search(r"^CT_Ratio +200 A$", text, re.MULTILINE)
    assert re.search(r"^Max_Demand_Period +15 min$", text, re.MULTILINE)
    if not flags:
        assert re.search(r"^Max_Demand_Interval_Reset +off$", text, re.MULTILINE)
        assert re.search(r"^Line_Freq +\d\d\.\d\d Hz$", text, re.MULTILINE)
        assert re.search(r"^State_Out +1 \(relay 1 open, relay 2 open\)$", text, re.MULTILINE)
    hidden = [n for n in fields if not TABLED.fullmatch(n) and not re.search(rf"^{n} ", text, re.MULTILINE)]
    assert hidden == []


def test_settings_json_has_every_block_with_json_numbers(url: str, v4: str) -> None:
    text = ok(installed("settings", url, v4, "--json"))
    blocks = json.loads(text)
    assert list(blocks) == ["months_forward", "months_reverse", "schedules", "schedules_5_8", "holidays"]
    assert isinstance(blocks["months_forward"]["Month_1_Tot"], float)
    assert blocks["holidays"]["Holiday_1_Mon"] == 1  # the simulator's default holidays: 1-1, 12-25
    assert blocks["holidays"]["Holiday_2_Day"] == 25
    assert blocks["schedules"]["Schedule_1_Period_2_Hour"] == 7
    assert "Season_1_Month" in blocks["schedules"]
    assert "Schedule_8_Period_4_Tariff" in blocks["schedules_5_8"]
    assert '"Weekend_Schd": 1' in text  # schedule 1: zeros on the wire
    assert blocks["schedules"]["Schedule_1_Period_4_Tariff"] == 4  # tariffs 1–4


def test_settings_v3_and_text(url: str, v3: str) -> None:
    assert settings(url, v3, "--v3")["holidays"]["Holiday_2_Mon"] == 12
    out = ok(cli("settings", url, v3, "--v3"))
    lines = out.splitlines()
    assert lines[0] == "schedules (each period from HH:MM on, its tariff T1–T4):"
    assert lines[1:9] == ["  1  00:00 T1  07:00 T2  17:00 T3  21:00 T4", *(f"  {n}  00:00 T1" for n in range(2, 9))]
    assert lines[9:12] == [
        "seasons: from 01-01 schedule 1",
        "weekends: schedule 1",
        "holidays: schedule 1 on 01-01, 12-25",
    ]
    assert re.search(r"^ +total +T1 +T2 +T3 +T4 +reverse$", out, re.MULTILINE)
    for month in range(1, 7):  # a V3 meter's tenths
        assert re.search(rf"^month {month}( +\d+\.\d){{6}}$", out, re.MULTILINE)
    assert len(lines) < 30  # compact: it was one line per field, ~200


def test_a_v4_read_of_a_v3_meter_fails_cleanly(url: str, v3: str) -> None:
    result = cli("read", url, v3, "--timeout-margin", "0.1")
    assert result.returncode == 1
    assert "error:" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------------
# set: each setting is acknowledged and shows in the next read or settings


@pytest.mark.parametrize("flags", [(), ("--v3",)], ids=["v4", "v3"])
def test_ct_ratio(url: str, v4: str, v3: str, flags: tuple[str, ...]) -> None:
    address = v3 if flags else v4
    result = installed("set", url, address, "ct-ratio", "800", *flags)  # the installed command, end to end
    assert ok(result) == f"ok: ct-ratio acknowledged by {address}\n"
    assert read(url, address, *flags)["CT_Ratio"] == 800


def test_relay_hold_and_timed(url: str, v4: str) -> None:
    acked(url, v4, "relay", "1", "close")
    assert read(url, v4)["State_Out"] == 3  # ON_OFF
    acked(url, v4, "relay", "2", "close", "--seconds", "1")
    assert read(url, v4)["State_Out"] == 4  # ON_ON
    time.sleep(1.2)
    assert read(url, v4)["State_Out"] == 3  # relay 2 went back after its second
    acked(url, v4, "relay", "1", "open")
    assert read(url, v4)["State_Out"] == 1


@pytest.mark.parametrize("flags", [(), ("--v3",)], ids=["v4", "v3"])
def test_max_demand_period(url: str, v4: str, v3: str, flags: tuple[str, ...]) -> None:
    address = v3 if flags else v4
    acked(url, address, "max-demand-period", "60", *flags)
    assert read(url, address, *flags)["Max_Demand_Period"] == 60  # minutes, as given (the wire's code is 3)
    acked(url, address, "max-demand-period", "30", *flags)
    assert read(url, address, *flags)["Max_Demand_Period"] == 30


def test_max_demand_reset_now_v3_is_acknowledged(url: str, v3: str) -> None:
    acked(url, v3, "max-demand-reset-now", "--v3")


def test_max_demand_reset_interval(url: str, v4: str) -> None:
    acked(url, v4, "max-demand-reset-interval", "weekly")
    assert read(url, v4)["Max_Demand_Interval_Reset"] == "weekly"  # in words, as given (the wire's code is 2)
    acked(url, v4, "max-demand-reset-interval", "HOURLY")
    assert read(url, v4)["Max_Demand_Interval_Reset"] == "hourly"


def test_max_demand_reset_now(url: str, v4: str) -> None:
    acked(url, v4, "max-demand-reset-now")
    after = read(url, v4)
    # The simulator's max demand is the highest total watts it has seen (not a demand-period average),
    # so right after a reset it is that of the last few requests: close to this read's watts.
    assert after["RMS_Watts_Max_Demand"] >= after["RMS_Watts_Tot"]
    assert after["RMS_Watts_Max_Demand"] == pytest.approx(after["RMS_Watts_Tot"], rel=0.25)


@pytest.mark.parametrize("flags", [(), ("--v3",)], ids=["v4", "v3"])
def test_time_given(url: str, v4: str, v3: str, flags: tuple[str, ...]) -> None:
    address = v3 if flags else v4
    acked(url, address, "time", "2024-02-29T23:59:30", *flags)
    meter_time = parse_meter_time(read(url, address, *flags)["Meter_Time"])
    assert meter_time is not None
    assert 0 <= (meter_time - datetime(2024, 2, 29, 23, 59, 30)).total_seconds() < 10


def test_time_now(url: str, v4: str) -> None:
    acked(url, v4, "time", "2030-01-01T00:00:00")
    acked(url, v4, "time")
    meter_time = parse_meter_time(read(url, v4)["Meter_Time"])
    assert meter_time is not None
    assert abs((meter_time - datetime.now()).total_seconds()) < 10


def test_pulse_input_ratio(url: str, v4: str) -> None:
    acked(url, v4, "pulse-input-ratio", "2", "77")
    acked(url, v4, "pulse-input-ratio", "3", "9999")
    fields = read(url, v4)
    assert [fields[f"Pulse_Ratio_{n}"] for n in (1, 2, 3)] == [1, 77, 9999]


def test_pulse_output_ratio(url: str, v4: str) -> None:
    acked(url, v4, "pulse-output-ratio", "40")
    assert read(url, v4)["Pulse_Output_Ratio"] == 40


def test_zero_resettable() -> None:
    # Its own simulator, 36000 times faster, so the resettable registers count visibly between reads.
    with simulator("v4:000300001184", extra=("--time-scale", "36000")) as fast:
        read(fast, "000300001184")  # starts the meter's clock
        time.sleep(0.3)
        before = read(fast, "000300001184")
        acked(fast, "000300001184", "zero-resettable")
        after = read(fast, "000300001184")
    assert before["Resettable_kWh_Tot"] > 0.1
    counted = after["kWh_Tot"] - before["kWh_Tot"]  # since the read before the reset
    assert after["kWh_Tot"] > before["kWh_Tot"] > 0  # the totals are not reset
    assert after["Resettable_kWh_Tot"] <= counted + 0.02  # not before's value plus what came since
    assert after["Resettable_kWh_Tot"] < before["Resettable_kWh_Tot"] + counted - 0.05


@pytest.mark.parametrize(
    "items",
    [
        ("kWh_Tot", "RMS_Watts_Tot"),
        ("28", "1", "39"),
        ("line_freq", "12", "Resettable_kWh_Tot"),
        tuple(["kWh_Tot"] * 40),
    ],
    ids=["names", "codes", "mixed", "forty"],
)
def test_lcd_names_and_codes_are_acknowledged(url: str, v4: str, items: tuple[str, ...]) -> None:
    # What the LCD shows cannot be read back over the protocol: the meter's ACK is the evidence.
    acked(url, v4, "lcd", *items)


def test_weekend_holiday_schedules(url: str, v4: str) -> None:
    acked(url, v4, "weekend-holiday-schedules", "3", "8")
    holidays = settings(url, v4)["holidays"]
    assert (holidays["Weekend_Schd"], holidays["Holiday_Schd"]) == (3, 8)


@pytest.mark.parametrize("flags", [(), ("--v3",)], ids=["v4", "v3"])
def test_password_then_writes_need_the_new_one(url: str, v4: str, v3: str, flags: tuple[str, ...]) -> None:
    address = v3 if flags else v4
    acked(url, address, "password", "12345678", *flags)
    refused = set_(url, address, "ct-ratio", "400", "--timeout-margin", "0.2", *flags)
    assert refused.returncode == 1
    assert "password not acknowledged" in refused.stdout + refused.stderr
    assert read(url, address, *flags)["CT_Ratio"] == 200
    acked(url, address, "ct-ratio", "400", "--password", "12345678", *flags)
    assert read(url, address, *flags)["CT_Ratio"] == 400
    acked(url, address, "password", "00000000", "--password", "12345678", *flags)
    acked(url, address, "ct-ratio", "600", *flags)


def test_address(url: str, v4: str) -> None:
    new = "000399990001"
    acked(url, v4, "address", new)
    assert read(url, new)["Meter_Address"] == new
    gone = cli("read", url, v4, "--timeout-margin", "0.1")
    assert gone.returncode == 1
    assert "no reply to the V4 A read within" in gone.stdout + gone.stderr


@pytest.mark.parametrize("flags", [(), ("--v3",)], ids=["v4", "v3"])
def test_schedule(url: str, v4: str, v3: str, flags: tuple[str, ...]) -> None:
    address = v3 if flags else v4
    acked(url, address, "schedule", "3", "06:30:1", "18:00:4", *flags)  # one numbering: written 3, read Schedule_3
    acked(url, address, "schedule", "7", "00:00:3", *flags)
    blocks = settings(url, address, *flags)
    first, second = blocks["schedules"], blocks["schedules_5_8"]
    periods = [tuple(first[f"Schedule_3_Period_{p}_{part}"] for part in ("Hour", "Min", "Tariff")) for p in range(1, 5)]
    assert periods == [(6, 30, 1), (18, 0, 4), (0, 0, 1), (0, 0, 1)]  # unused periods: zeros on the wire
    assert (second["Schedule_7_Period_1_Hour"], second["Schedule_7_Period_1_Tariff"]) == (0, 3)
    assert first["Schedule_1_Period_2_Hour"] == 7  # the others are untouched


def test_seasons(url: str, v4: str) -> None:
    acked(url, v4, "seasons", "03-21:1", "09-21:8")
    page = settings(url, v4)["schedules"]
    seasons = [tuple(page[f"Season_{n}_{part}"] for part in ("Month", "Day", "Schedule")) for n in range(1, 5)]
    assert seasons == [(3, 21, 1), (9, 21, 8), (0, 0, 1), (0, 0, 1)]


def test_holidays_and_clearing_them(url: str, v4: str) -> None:
    acked(url, v4, "holidays", "01-01", "07-04", "02-29")
    days = settings(url, v4)["holidays"]
    assert [(days[f"Holiday_{n}_Mon"], days[f"Holiday_{n}_Day"]) for n in range(1, 5)] == [
        (1, 1),
        (7, 4),
        (2, 29),
        (0, 0),
    ]
    acked(url, v4, "holidays")  # none: every slot cleared
    days = settings(url, v4)["holidays"]
    assert all(days[f"Holiday_{n}_Mon"] == days[f"Holiday_{n}_Day"] == 0 for n in range(1, 21))


def test_wrong_password_exits_1_and_changes_nothing(url: str, v4: str) -> None:
    result = installed("set", url, v4, "ct-ratio", "800", "--password", "11111111", "--timeout-margin", "0.2")
    assert result.returncode == 1
    assert "password not acknowledged" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert read(url, v4)["CT_Ratio"] == 200


# ---------------------------------------------------------------------------------------------------
# Bad input: exit status 2, a message, and nothing sent

BAD = [
    ("ct-ratio", "300"),
    ("ct-ratio", "many"),
    ("relay", "3", "close"),
    ("relay", "1", "shut"),
    ("relay", "1", "close", "--seconds", "10000"),
    ("max-demand-period", "45"),
    ("max-demand-period", "2"),  # a code, not minutes
    ("max-demand-reset-interval", "3"),  # a code, not a word
    ("max-demand-reset-interval", "yearly"),
    ("time", "yesterday"),
    ("time", "1999-12-31T23:59:59"),
    ("pulse-input-ratio", "4", "10"),
    ("pulse-input-ratio", "1", "0"),
    ("pulse-output-ratio", "3"),
    ("lcd", "Bogus"),
    ("lcd", "46"),
    ("lcd", *(["kWh_Tot"] * 41)),
    ("weekend-holiday-schedules", "9", "1"),
    ("weekend-holiday-schedules", "1", "0"),
    ("password", "1234"),
    ("address", "12345"),
    ("schedule", "9", "06:00:1"),
    ("schedule", "0", "06:00:1"),
    ("schedule", "1", "24:00:1"),
    ("schedule", "1", "06:00:5"),
    ("schedule", "1", "06:00:0"),
    ("schedule", "1", "6-00-1"),
    ("schedule", "1", "00:00:1", "06:00:2", "12:00:3", "18:00:4", "21:00:1"),  # 5 periods
    ("seasons", "13-01:1"),
    ("seasons", "03-21:9"),
    ("seasons", "03-21:0"),
    ("holidays", "02-30"),
    ("holidays", "0101"),
    ("ct-ratio", "800", "--password", "abc"),
    # wrong argument counts
    ("ct-ratio",),
    ("ct-ratio", "800", "400"),
    ("relay", "1"),
    ("max-demand-reset-now", "1"),
    ("zero-resettable", "now"),
    ("weekend-holiday-schedules", "1"),
    ("time", "2024-01-01", "12:00"),
    ("schedule",),
    ("lcd",),
    # V4-only settings on a V3 meter
    ("relay", "1", "close", "--v3"),
    ("pulse-input-ratio", "1", "5", "--v3"),
    ("pulse-output-ratio", "5", "--v3"),
    ("zero-resettable", "--v3"),
    ("max-demand-reset-interval", "daily", "--v3"),
    ("lcd", "kWh_Tot", "--v3"),
    # not a setting
    ("colour", "red"),
]


@pytest.mark.parametrize("args", BAD, ids=[" ".join(a)[:60] for a in BAD])
def test_bad_input_exits_2_before_opening_the_bus(args: tuple[str, ...]) -> None:
    # Nobody listens at this URL: had the command tried to open the bus, it would exit 1.
    result = cli("set", f"tcp://127.0.0.1:{closed_port()}", "000300001184", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip()
    assert result.stdout == ""


@pytest.mark.parametrize("args", [BAD[0], BAD[-2], ("relay", "1")], ids=["value", "v4-only", "count"])
def test_bad_input_exit_status_of_the_installed_command(args: tuple[str, ...]) -> None:
    result = installed("set", f"tcp://127.0.0.1:{closed_port()}", "000300001184", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(("ekm-async set", "usage:"))
    assert "Traceback" not in result.stderr


def test_bad_input_changes_nothing_on_a_live_meter(url: str, v4: str) -> None:
    fields, blocks = read(url, v4), settings(url, v4)
    for args in BAD:
        result = set_(url, v4, *args)
        assert result.returncode == 2, (args, result.stdout + result.stderr)
    assert {k: read(url, v4)[k] for k in STABLE} == {k: fields[k] for k in STABLE}
    assert settings(url, v4) == blocks


# ---------------------------------------------------------------------------------------------------
# Unreachable buses


@pytest.mark.parametrize("command", ["read", "settings", "set"])
def test_unreachable_tcp_url_exits_1_with_a_clear_message(command: str) -> None:
    args = ["ct-ratio", "800"] if command == "set" else []
    result = installed(command, f"tcp://127.0.0.1:{closed_port()}", "000300001184", *args)
    assert result.returncode == 1
    assert "error: cannot open the bus" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_missing_serial_device_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    result = installed("read", str(tmp_path / "ttyUSB9"), "000300001184")
    assert result.returncode == 1
    assert "error: cannot open the bus" in result.stdout + result.stderr
    assert "ttyUSB9" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_a_meter_that_does_not_answer_exits_1(url: str) -> None:
    result = cli("read", url, "000311112222", "--timeout-margin", "0.1")
    assert result.returncode == 1
    said = result.stdout + result.stderr
    assert (
        "error: meter 000311112222: no reply to the V4 A read within 0.4 s — check the address" in said
    )  # 0.1 s margin
    assert "and that it is a V4 meter (add --v3 for a V3 meter)" in said


def test_an_option_a_setting_does_not_take_is_said_with_that_settings_usage(url: str, v4: str) -> None:
    result = cli("set", url, v4, "ct-ratio", "800", "--seconds", "5")
    assert result.returncode == 2
    assert result.stderr == (  # one line (argparse's own printed its usage block first)
        "ekm-async set URL ADDRESS ct-ratio: unrecognized arguments: --seconds 5 (--help lists what it takes)\n"
    )


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["poll", "--count", "x"],
            "ekm-async poll: --count: must be a whole number; got 'x'",
        ),  # was 'invalid int value'
        (["simulate", "--turnaround", "y"], "ekm-async simulate: --turnaround: must be a number; got 'y'"),
        (["read", "tcp://127.0.0.1:1"], "ekm-async read: the following arguments are required: ADDRESS"),
        (["simulate", "--baud", "5"], "ekm-async simulate: --baud: invalid choice: 5 (choose from 9600, 0)"),
    ],
)
def test_a_bad_command_line_is_one_line_in_words(args: list[str], said: str) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert result.stderr == f"{said} (--help lists what it takes)\n"  # no usage block before it


@pytest.mark.parametrize("command", ["read", "set"])
def test_malformed_url_is_a_usage_error(command: str) -> None:
    args = ["ct-ratio", "800"] if command == "set" else []
    result = installed(command, "foo://somewhere", "000300001184", *args)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2


@pytest.mark.parametrize("command", ["read", "settings"])
def test_bad_address_for_read_is_a_usage_error(command: str) -> None:
    result = installed(command, f"tcp://127.0.0.1:{closed_port()}", "12345")
    assert "Traceback" not in result.stderr
    assert result.returncode == 2


def test_bad_bus_option_is_a_usage_error() -> None:
    result = installed("read", f"tcp://127.0.0.1:{closed_port()}", "000300001184", "--timeout-margin", "0")
    assert "Traceback" not in result.stderr
    assert result.returncode == 2


@pytest.mark.parametrize("command", ["read", "settings"])
def test_capture_option_writes_what_decode_replays(url: str, v4: str, tmp_path: Path, command: str) -> None:
    capture = tmp_path / f"{command}.jsonl"
    ok(cli(command, url, v4, "--json", "--capture", str(capture)))
    replayed = cli("decode", "--capture", str(capture))
    assert replayed.returncode == 0, replayed.stdout
    kinds = [json.loads(line).get("kind") for line in replayed.stdout.splitlines()]
    assert "v4a" in kinds
    assert command == "read" or "holidays" in kinds


def test_set_capture_redacts_the_password(url: str, v4: str, tmp_path: Path) -> None:
    capture = tmp_path / "set.jsonl"
    ok(cli("set", url, v4, "ct-ratio", "400", "--password", "00000000", "--capture", str(capture)))
    records = [json.loads(line) for line in capture.read_text().splitlines()[1:]]
    sent = [bytes.fromhex(r["hex"]) for r in records if r["dir"] == "tx"]
    assert any(b"(********)" in data for data in sent)  # the password request, redacted
    assert not any(b"(00000000)" in data for data in sent)


def test_poll_takes_several_v3_meters_after_one_v3_flag(url: str) -> None:
    """``poll URL ADDRESS… --v3 ADDRESS…`` as the README writes it: every address after --v3 is a V3's."""
    first, second = V3_POOL[-2:]
    result = cli("poll", url, V4_POOL[-1], "--v3", first, second, "--count", "3", "--json", "--interval", "0")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(row["Meter_Address"] for row in rows) == sorted([V4_POOL[-1], first, second])


def test_a_bad_reply_names_the_meter_and_shows_its_bytes_only_with_verbose() -> None:
    with simulator("v4:000300001184", extra=("--fault", "crc")) as faulty:
        brief = cli("read", faulty, "000300001184")
        verbose = cli("read", faulty, "000300001184", "--verbose")
    assert brief.returncode == verbose.returncode == 1
    assert brief.stderr == (
        "error: crc: meter 000300001184's reply to the V4 A read (255 bytes) — a damaged reply, after every "
        "retry: check the wiring, the line's termination and that no two meters share the address "
        "(--verbose shows the bytes)\n"
    )
    assert verbose.stderr.startswith("error: crc: meter 000300001184's reply to the V4 A read (255 bytes: 02 ")
    assert verbose.stderr.endswith(" and that no two meters share the address\n")
    assert len(verbose.stderr) > 700


def test_a_bus_that_cannot_be_opened_is_said_with_what_to_check(tmp_path: Path) -> None:
    refused = cli("read", f"tcp://127.0.0.1:{closed_port()}", "000300001184")
    missing = cli("read", str(tmp_path / "ttyNOPE"), "000300001184")
    assert (refused.returncode, missing.returncode) == (1, 1)
    assert "connection refused: is the gateway running, and is it that port?" in refused.stderr
    assert f"cannot open the bus at {tmp_path / 'ttyNOPE'}: no such device: is the adapter plugged in" in missing.stderr


@pytest.mark.parametrize("command", ["read", "settings"])
def test_a_reader_that_went_away_ends_the_command_quietly(url: str, v4: str, command: str) -> None:
    """``ekm-async read … | head -1``: the reader is gone before anything is written (its end of the
    pipe closed at once), so the first write fails — as Unix tools do, the command ends quietly."""
    proc = subprocess.Popen([*CLI, command, url, v4], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=30)
    assert err == b""
    assert proc.returncode == 0
