"""Every script in ``examples/`` runs out of the box (no URL: its in-process simulator) and shows what it
did; with a URL it talks to that bus instead."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.test_cli_meter import simulator

from .conftest import EarlyRuns, early

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SIMULATED = "(no URL given: talking to a simulated v4 bus)\n"

EXPECTED: dict[str, list[str]] = {
    "read": [
        r"^meter 000300001184 \(model 1024, firmware 14\)$",
        r"^kWh_Tot +\d+\.\d+ kWh$",
        r"^RMS_Watts_Tot +\d+ W$",
        r"^line 3 +\d+\.\d V +\d+\.\d A +\d+ W +power factor \d+$",
        r'^\{"Model": "1024", .*"CT_Ratio": 200, .*\}$',
    ],
    "read_settings": [
        r"^  1  00:00 T1  07:00 T2  17:00 T3  21:00 T4$",  # schedules and tariffs counted from 1
        r"^  8  00:00 T1$",
        r"^seasons: from 01-01 schedule 1$",
        r"^month 6 +\d+\.\d\d( +\d+\.\d\d){4} +\d+\.\d\d$",  # the meter's two decimals, kept
        r"^holidays: schedule 1 on 01-01, 12-25$",
        r"^Schedule 1 starts at 00:00 with tariff 1$",
        r"^Weekend schedule = 1, holiday schedule = 1$",
    ],
    "settings": [
        r"^set +read back$",
        r"^relay 1 closed +State_Out = ON_OFF \(relay 1, relay 2\)$",
        r"^relay 2 closed for 2 s +State_Out = ON_ON$",
        r"^2\.5 s later +State_Out = ON_OFF$",
        r"^relay 1 opened +State_Out = OFF_OFF$",
        r"^CT ratio 800 +CT_Ratio = 800$",
        r"^max demand period 30 min +Max_Demand_Period = 30 minutes$",
        r"^max demand period 45 min +ValueError: period must be 15, 30 or 60 minutes; got 45$",
        r"^max demand reset daily +Max_Demand_Interval_Reset = daily$",
        r"^max demand reset now +RMS_Watts_Max_Demand \d+\.\d → \d+\.\d$",
        r"^time 2023-11-22 15:39:02 +meter_datetime = 2023-11-22 15:39:0\d$",
        r"^time now +meter_datetime = (\S+ \d\d:\d\d):\d\d \(computer: \1:\d\d\)$",
        r"^pulse input ratios 55, 100 +Pulse_Ratio_1\.\.3 = 55, 100, 1$",
        r"^pulse output ratio 5 +Pulse_Output_Ratio = 5$",
        r"^zero resettable +Resettable_kWh_Tot 123\.\d\d → 0\.0, Resettable_Rev_kWh_Tot 6\.\d\d → 0\.0$",
        r"^LCD kWh, watts, frequency +not readable: look at the meter$",
        r"^schedule 1 \(winter\) +Schedule_1: 00:00 T1  05:30 T2  12:00 T3  17:30 T1$",
        r"^schedule 2 \(summer\) +Schedule_2: 00:00 T1  11:00 T3  19:00 T1$",
        r"^schedule 3 \(weekends\) +Schedule_3: 00:00 T1$",
        r"^seasons +01-01 → 1, 06-01 → 2, 09-15 → 1$",
        r"^holidays +01-01, 07-04, 12-25, 12-26$",
        r"^weekend/holiday schedules +Weekend_Schd = 3, Holiday_Schd = 3$",
        r"^password 12345678 +the handle now sends 12345678$",
        r"^  a write with the old one +Refused: meter 000300001184: password not acknowledged$",
        r"^  a write with the new one +acknowledged$",
        r"^password back to 00000000 +the handle now sends 00000000$",
        r"^address 000399999999 +the meter answers at 000399999999$",
        r"^address back to 000300001184 +the meter answers at 000300001184$",
    ],
    "poll_many": [
        r"^round 3 \(\d+\.\d{3} s\)$",
        *(rf"^  00030000118{n} +\d+\.\d+ kWh +\d+ W +\d+\.\d V$" for n in (4, 5, 6)),
    ],
    "notify_pulse": [
        r"^000300001184: pulse counts \d+, \d+, \d+; watching for changes$",
        r"^Bells! Alarms! 000300001184: Pulse_Cnt_[123] \d+ → \d+",
        r"^12 reads, 0 failures; \d+ reads rang the bell$",
    ],
    "summarize_volts": [
        r"^min/mean/max volts of each line, per meter, every 0\.25 s \(UTC\)$",
        *(
            rf"^00030000118{n} \S+ \+0\.25 s +\d+ reads  Ln_1 [\d./]+ V  Ln_2 [\d./]+ V  Ln_3 [\d./]+ V$"
            for n in (4, 5, 6)
        ),
    ],
    "poll_to_sqlite": [
        r"^15 reads stored in \S+reads\.db$",
        r"^newest read of each meter:$",
        *(
            rf"^  00030000118{n} \d\d:\d\d:\d\d\.\d{{3}} +\d+\.\d+ kWh +\d+ W +\d+\.\d V  Pulse_Cnt_1 \d+$"
            for n in (4, 5, 6)
        ),
        r"^\d+ reads of 000300001184; the first 3 since \d\d:\d\d:\d\d:$",
    ],
}
"""Each example (no URL) → lines its output must have (regular expressions, one per line)."""

V3_EXPECTED: dict[str, list[str]] = {
    "read": [r"^meter 000300001184 \(model 1012, firmware 13\)$", r"^kWh_Tot +\d+\.\d kWh$"],
    "read_settings": [r"^holidays: schedule 1 on 01-01, 12-25$", r"^month 1 +\d+\.\d( +\d+\.\d){5}$"],
    "settings": [
        r"^relays +V4 only: a V3 meter has no such setting$",
        r"^CT ratio 800 +CT_Ratio = 800$",
        r"^max demand period 30 min +Max_Demand_Period = 30 minutes$",
        r"^max demand period 45 min +ValueError: ",
        r"^max demand reset interval +V4 only: ",
        r"^max demand reset now +Max_Demand \d+\.\d → \d+\.\d$",
        r"^time 2023-11-22 15:39:02 +meter_datetime = 2023-11-22 15:39:0\d$",
        r"^pulse ratios +V4 only: ",
        r"^zero resettable +V4 only: ",
        r"^LCD +V4 only: ",
        r"^schedule 1 \(winter\) +Schedule_1: 00:00 T1  05:30 T2  12:00 T3  17:30 T1$",
        r"^seasons +01-01 → 1, 06-01 → 2, 09-15 → 1$",
        r"^weekend/holiday schedules +Weekend_Schd = 3, Holiday_Schd = 3$",
        r"^  a write with the old one +Refused: meter 000300001184: password not acknowledged$",
        r"^password back to 00000000 +the handle now sends 00000000$",
        r"^address back to 000300001184 +the meter answers at 000300001184$",
    ],
    "poll_many": [r"^  000300001186 +\d+\.\d kWh"],
    "notify_pulse": [r"^Bells! Alarms! 000300001184: Pulse_Cnt_[123] \d+ → \d+", r"^12 reads, 0 failures; "],
    "summarize_volts": [r"^000300001186 \S+ \+0\.25 s +\d+ reads  Ln_1 [\d./]+ V  Ln_2 [\d./]+ V  Ln_3 [\d./]+ V$"],
    "poll_to_sqlite": [r"^15 reads stored in ", r"^  000300001186 \S+ +\d+\.\d kWh "],
}


def run_example(name: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=EXAMPLES.parent,
    )


def assert_lines(output: str, patterns: list[str]) -> None:
    for pattern in patterns:
        assert re.search(pattern, output, re.MULTILINE), f"no line matches {pattern!r} in:\n{output}"


RUNS = [*((name,) for name in EXPECTED), *((name, "--v3") for name in V3_EXPECTED)]


@pytest.fixture(scope="module")
def ran() -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    """Every run of :data:`RUNS`, side by side (most of an example's time is start-up or waiting)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(RUNS, pool.map(lambda run: run_example(*run), RUNS), strict=True))


SERVERS = {"aiohttp_app", "starlette_app"}
"""Examples that serve until stopped: tests/test_embedding.py runs them, in process and with --run-for."""


def test_every_example_is_tested() -> None:
    scripts = {p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_")}
    assert scripts == set(EXPECTED) | SERVERS


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_on_its_simulator(ran: dict[tuple[str, ...], subprocess.CompletedProcess[str]], name: str) -> None:
    result = ran[(name,)]
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(SIMULATED)
    assert_lines(result.stdout, EXPECTED[name])


@pytest.mark.parametrize("name", sorted(V3_EXPECTED))
def test_example_runs_on_a_simulated_v3_meter(
    ran: dict[tuple[str, ...], subprocess.CompletedProcess[str]], name: str
) -> None:
    result = ran[(name, "--v3")]
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(SIMULATED.replace("v4", "v3"))
    assert_lines(result.stdout, V3_EXPECTED[name])


@pytest.mark.parametrize("v3", [(), ("--v3",)], ids=["v4", "v3"])
def test_notify_pulse_rings_for_each_change(
    ran: dict[tuple[str, ...], subprocess.CompletedProcess[str]], v3: tuple[str, ...]
) -> None:
    """Every bell names counts that moved on from the ones seen before it; the total agrees."""
    out = ran[("notify_pulse", *v3)].stdout
    first = re.search(r"^000300001184: pulse counts (\d+), (\d+), (\d+); watching for changes$", out, re.MULTILINE)
    assert first, out
    last = {n: int(count) for n, count in enumerate(first.groups(), 1)}
    bells = re.findall(r"^Bells! Alarms! 000300001184: (.+)$", out, re.MULTILINE)
    assert bells, out
    for bell in bells:
        changes = re.findall(r"Pulse_Cnt_([123]) (\d+) → (\d+)", bell)
        assert changes, bell
        for n, old, new in changes:
            assert last[int(n)] == int(old) < int(new), (bell, last)
            last[int(n)] = int(new)
    assert re.search(rf"^12 reads, 0 failures; {len(bells)} reads rang the bell$", out, re.MULTILINE), out


SUMMARY = re.compile(r"^(\d{12}) \d\d:\d\d:\d\d\.\d\d \+0\.25 s +(\d+) reads  (.+?)(  \(partial\))?$", re.MULTILINE)


@pytest.mark.parametrize("v3", [(), ("--v3",)], ids=["v4", "v3"])
def test_summarize_volts_gives_min_mean_max_per_meter_and_interval(
    ran: dict[tuple[str, ...], subprocess.CompletedProcess[str]], v3: tuple[str, ...]
) -> None:
    out = ran[("summarize_volts", *v3)].stdout
    lines = SUMMARY.findall(out)
    by_meter: dict[str, list[bool]] = {}
    for address, reads, volts, partial in lines:
        by_meter.setdefault(address, []).append(bool(partial))
        assert int(reads) >= 1
        stats = re.findall(r"Ln_([123]) (\d+\.\d)/(\d+\.\d\d)/(\d+\.\d) V", volts)
        assert [n for n, *_ in stats] == ["1", "2", "3"], volts
        for _, low, mean, high in stats:
            assert 100 < float(low) <= float(mean) <= float(high) < 140, volts
    assert set(by_meter) == {"000300001184", "000300001185", "000300001186"}, out
    for partials in by_meter.values():
        assert not partials[0], out  # at least one whole interval of each meter
        assert not any(partials[:-1]), out  # only the last can be partial


@pytest.mark.parametrize("v3", [(), ("--v3",)], ids=["v4", "v3"])
def test_poll_to_sqlite_queries_what_it_stored(
    ran: dict[tuple[str, ...], subprocess.CompletedProcess[str]], v3: tuple[str, ...]
) -> None:
    out = ran[("poll_to_sqlite", *v3)].stdout
    newest = dict(re.findall(r"^  (\d{12}) \S+ +(\d+\.\d+) kWh ", out, re.MULTILINE))
    assert set(newest) == {"000300001184", "000300001185", "000300001186"}, out
    stored = re.search(r"^(\d+) reads of 000300001184; the first 3 since ", out, re.MULTILINE)
    assert stored, out
    assert 3 <= int(stored[1]) <= 15
    rows = [float(kwh) for kwh in re.findall(r"^  \d\d:\d\d:\d\d\.\d{3} +(\d+\.\d+) kWh ", out, re.MULTILINE)]
    assert len(rows) == 3, out  # the loop broke out after 3 rows
    assert rows == sorted(rows), out  # oldest first: the energy register only grows
    assert rows[-1] <= float(newest["000300001184"]), out


Ran = subprocess.CompletedProcess[str]


@early("examples-by-url")
def examples_by_url(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ran, Ran, Ran, Ran]:
    """Examples given a URL, on one simulator (started with the session: they mostly wait on the bus)."""
    meters = ("v4:000300005555", "v4:000300005556", "v4:000300005557")
    with simulator(*meters) as url, ThreadPoolExecutor() as pool:
        polling = pool.submit(run_example, "poll_many", url, "000300005555", "000300005556")
        read = run_example("read", url, "000300005555")
        settings = run_example("settings", url, "000300005557")
        again = run_example("read", url, "000300005557")
        return read, settings, polling.result(), again


def test_examples_talk_to_the_bus_given_by_url(early_runs: EarlyRuns) -> None:
    read, settings, poll, again = early_runs.result("examples-by-url")
    assert_lines(again.stdout, [r'"CT_Ratio": 800,'])  # still at its address, with the CT ratio the example set
    for result in (read, settings, poll):
        assert result.returncode == 0, result.stdout + result.stderr
        assert "simulated" not in result.stdout
    assert_lines(read.stdout, [r"^meter 000300005555 \(model 1024"])
    assert_lines(
        settings.stdout,
        [
            r"^CT ratio 800 +CT_Ratio = 800$",
            r"^  a write with the old one +Refused: meter 000300005557: password not acknowledged$",
            r"^address back to 000300005557 +the meter answers at 000300005557$",
        ],
    )
    assert_lines(poll.stdout, [r"^  000300005555 ", r"^  000300005556 "])


def test_an_unreachable_bus_is_one_line_of_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_example("read", f"tcp://127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1


def test_help_shows_the_docstring_and_arguments() -> None:
    result = run_example("settings", "--help")
    assert result.returncode == 0
    assert "usage: settings.py [-h] [--v3] [url] [ADDRESS]" in result.stdout
    assert "Every setter of a meter, one step each" in result.stdout


def test_a_bad_address_is_a_usage_error() -> None:
    result = run_example("read", "tcp://127.0.0.1:9", "12345")
    assert result.returncode == 2
    assert "a meter address is 12 digits; got '12345'" in result.stderr
