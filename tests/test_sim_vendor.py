"""Interop with the vendor's client: ekmmeters 0.2.5 drives ``ekm-async simulate --pty`` (issue 3).

A throwaway virtualenv gets ``ekmmeters==0.2.5`` and pyserial from PyPI; ``tests/vendor/drive_ekmmeters.py``
runs in it as a separate client process and prints one JSON report of every vendor call. For a V4 and a
V3 meter: ``request()``, ``readSettings()`` and every setter return True (the few deliberate refusals
are listed in the driver), and what the vendor wrote (CT ratio, pulse input ratios, relays, …) is in
its next read. Consecutive clients on the same pty work (docs/architecture.md, "Traps").
"""

from __future__ import annotations

import contextlib
import json
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import EarlyRuns, early

pytestmark = pytest.mark.timeout(300)

EKM_ASYNC = Path(sys.executable).with_name("ekm-async")
DRIVER = Path(__file__).resolve().parent / "vendor" / "drive_ekmmeters.py"
V4 = "000300001184"
V3 = "000000001234"
V4_SETTERS = {
    "setCTRatio",
    "setHolidayDates",
    "setLCD",
    "setLCDCmd",
    "setMaxDemandPeriod",
    "setMaxDemandResetInterval",
    "setMaxDemandResetNow",
    "setMeterPassword",
    "setPulseInputRatio",
    "setPulseOutputRatio",
    "setRelay",
    "setSchedule",
    "setSeasonSchedules",
    "setTime",
    "setWeekendHolidaySchedules",
    "setZeroResettableKWH",
}
V3_SETTERS = V4_SETTERS - {
    "setLCD",
    "setLCDCmd",
    "setPulseInputRatio",
    "setPulseOutputRatio",
    "setRelay",
    "setZeroResettableKWH",
}
# The only calls whose expected result is not True (see the driver): a write with a password that is no
# longer valid, and the max-demand auto-reset interval sent to a V3 meter: ekmmeters offers it on the base
# class, but it is a V4 register (protocol.md §2.2 W5) and the simulated V3 does not acknowledge it.
REFUSED = {
    ("v4", "setCTRatio(100)"),
    ("v3", "setCTRatio(100)"),
    ("v3", "setMaxDemandResetInterval(3)"),
}
# What the driver's profile 1 writes, as ekmmeters shows it on its next read.
PROFILE_1 = {
    "v4": {
        "CT_Ratio": "400",
        "Pulse_Ratio_1": "55",
        "Pulse_Ratio_2": "1234",
        "Pulse_Ratio_3": "3",
        "State_Out": "3",  # relay 1 closed, relay 2 open
        "Pulse_Output_Ratio": "40",
        "Max_Demand_Period": "2",
        "Max_Demand_Interval_Reset": "3",
    },
    "v3": {"CT_Ratio": "800", "Max_Demand_Period": "3"},
}
PROFILE_2 = {
    "v4": {
        "CT_Ratio": "1200",
        "Pulse_Ratio_1": "100",
        "Pulse_Ratio_2": "20",
        "Pulse_Ratio_3": "7",
        "State_Out": "2",  # relay 1 open, relay 2 closed
        "Pulse_Output_Ratio": "100",
        "Max_Demand_Period": "1",
        "Max_Demand_Interval_Reset": "2",
    },
    "v3": {"CT_Ratio": "1500", "Max_Demand_Period": "2"},
}


# ---------------------------------------------------------------------------------------------------
# The vendor's client and the simulator


def make_vendor_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv's python with ekmmeters 0.2.5 and pyserial from PyPI."""
    venv = tmp_path_factory.mktemp("ekmmeters-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    packages = ["ekmmeters==0.2.5", "pyserial"]
    installed = subprocess.run([*pip, *packages], check=False, capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, f"pip install failed:\n{installed.stdout}\n{installed.stderr}"
    return python


@dataclass
class Simulator:
    link: Path
    process: subprocess.Popen[str]
    stderr: Path

    def tail(self) -> str:
        return self.stderr.read_text()[-3000:]


@contextlib.contextmanager
def running_simulator(directory: Path) -> Iterator[Simulator]:
    """``ekm-async simulate --pty`` with a V4 and a V3 meter, unpaced; SIGTERM and wait when done."""
    link = directory / "ekm-pty"
    stderr_path = directory / "simulator.stderr"
    command = [
        str(EKM_ASYNC),
        "simulate",
        "--pty",
        str(link),
        "--meter",
        f"v4:{V4}",
        "--meter",
        f"v3:{V3}",
        "--baud",
        "0",
        "--turnaround",
        "0.01",
    ]
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert process.stdout is not None
    sim = Simulator(link, process, stderr_path)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 20)
        line = process.stdout.readline() if ready else ""
        assert line.startswith(f"ready pty={link} "), f"no ready line: {line!r}\n{sim.tail()}"
        assert f"meters=v4:{V4},v3:{V3}" in line
        yield sim
        assert process.poll() is None, f"the simulator died during the test:\n{sim.tail()}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
    assert process.returncode == 0, f"simulator exit status {process.returncode}:\n{sim.tail()}"
    assert not link.exists(), "the simulator left its pty link behind"


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    with running_simulator(tmp_path) as sim:
        yield sim


def drive(python: Path, sim: Simulator, *args: str) -> dict[str, Any]:
    """Run the driver as a separate client process against the simulator's pty; its JSON report."""
    done = subprocess.run(
        [str(python), str(DRIVER), str(sim.link), "--v4", V4, "--v3", V3, "--force-wait", "0.02", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"driver exit {done.returncode}, no JSON:\n{done.stdout}\n{done.stderr}\n{sim.tail()}")
    assert (done.returncode == 0) is report["ok"], done.stderr
    report["simulator_stderr"] = sim.tail()
    return report


def explain(report: dict[str, Any]) -> str:
    keys = ("failures", "log_tail", "simulator_stderr")
    return json.dumps({k: report.get(k) for k in keys}, indent=1, default=str)


def assert_calls(report: dict[str, Any], meter: str, setters: set[str]) -> None:
    """Every call of ``meter`` returned what was expected (True but for REFUSED) and nothing raised."""
    assert meter in report, f"the driver never got to the {meter} meter:\n{explain(report)}"
    calls = [c for c in report["calls"] if c["meter"] == meter]
    for c in calls:
        assert c["expected"] is ((meter, c["call"]) not in REFUSED), f"driver and test disagree on {c}"
    wrong = [c for c in calls if c["error"] is not None or c["result"] is not c["expected"]]
    assert not wrong, f"{meter} calls that did not return what was expected:\n{explain(report)}"
    assert set(report[meter]["setters"]) == setters, "ekmmeters 0.2.5's setters changed?"
    called = {c["call"].split("(")[0] for c in calls}
    assert setters <= called, f"setters never called: {setters - called}"
    for name in ("request", "readSettings"):
        assert sum(c["call"] == f"{name}()" for c in calls) == 2  # before and after the writes
    assert {(m, c) for m, c in REFUSED if m == meter} <= {(meter, c["call"]) for c in calls}


def assert_readback(report: dict[str, Any], meter: str, written: dict[str, str]) -> None:
    """What the vendor wrote is in its next read (and in what ``readSettings()`` read)."""
    checks = [r for r in report["readback"] if r["meter"] == meter]
    assert checks, f"no read-backs for {meter}"
    wrong = [r for r in checks if r["wrote"] != r["read"]]
    assert not wrong, f"{meter} read-backs that differ:\n{json.dumps(wrong, indent=1)}"
    after = report[meter]["after"]
    assert {name: after[name] for name in written} == written
    checked = {r["what"] for r in checks}
    assert {"CT_Ratio", "Meter_Time[:12]", "holidays", "weekend/holiday schedules"} <= checked
    if meter == "v4":
        assert {"Pulse_Ratio_1", "Pulse_Ratio_2", "Pulse_Ratio_3", "State_Out"} <= checked


# ---------------------------------------------------------------------------------------------------
# Two consecutive vendor client processes on one simulator: profile 1, then profile 2


@early("vendor")
def vendor_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """The vendor's virtualenv, and two consecutive runs of its client (started with the session: the
    vendor sleeps 0.2 s after every write and read, some 25 s in all)."""
    python = make_vendor_python(tmp_path_factory)
    with running_simulator(tmp_path_factory.mktemp("sim")) as sim:
        return python, [drive(python, sim, "--profile", str(profile)) for profile in (1, 2)]


@pytest.fixture(scope="module")
def vendor_python(early_runs: EarlyRuns) -> Path:
    python: Path = early_runs.result("vendor")[0]
    return python


@pytest.fixture(scope="module")
def two_runs(early_runs: EarlyRuns) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = early_runs.result("vendor")[1]
    return runs


def test_v4_request_settings_and_every_setter(two_runs: list[dict[str, Any]]) -> None:
    report = two_runs[0]
    assert report["ekmmeters"] == "0.2.5"
    assert_calls(report, "v4", V4_SETTERS)
    before = report["v4"]["before"]
    assert before["Meter_Address"] == V4
    assert before["Model"] == "1024"
    assert before["kWh_Scale"] in {"0", "1", "2"}
    assert float(before["kWh_Tot"]) > 0
    assert 100 < float(before["RMS_Volts_Ln_1"]) < 140
    assert 59 < float(before["Line_Freq"]) < 61
    assert len(before["Meter_Time"]) == 14
    assert before["Meter_Time"].isdigit()
    # A fresh simulator: the defaults, not what profile 1 is about to write.
    assert {k: before[k] for k in ("CT_Ratio", "State_Out")} == {"CT_Ratio": "200", "State_Out": "1"}


def test_v4_values_written_by_the_vendor_are_read_back(two_runs: list[dict[str, Any]]) -> None:
    report = two_runs[0]
    assert_readback(report, "v4", PROFILE_1["v4"])
    assert report["v4"]["after"]["Meter_Time"].startswith("240229041234")  # setTime(2024, 2, 29, 12, 34, 0)


def test_v3_request_settings_and_every_base_setter(two_runs: list[dict[str, Any]]) -> None:
    report = two_runs[0]
    assert_calls(report, "v3", V3_SETTERS)
    before = report["v3"]["before"]
    assert before["Meter_Address"] == V3
    assert before["Model"] == "1012"
    assert float(before["kWh_Tot"]) > 0
    assert 100 < float(before["RMS_Volts_Ln_1"]) < 140
    assert before["CT_Ratio"] == "200"


def test_v3_values_written_by_the_vendor_are_read_back(two_runs: list[dict[str, Any]]) -> None:
    report = two_runs[0]
    assert_readback(report, "v3", PROFILE_1["v3"])
    assert report["v3"]["after"]["Meter_Time"].startswith("251231032345")  # setTime(2025, 12, 31, 23, 45, 0)


def test_second_client_process_on_the_same_pty(two_runs: list[dict[str, Any]]) -> None:
    """The pty works for the next client, which first reads what the previous client wrote."""
    report = two_runs[1]
    assert report["ok"], explain(report)
    assert_calls(report, "v4", V4_SETTERS)
    assert_calls(report, "v3", V3_SETTERS)
    for meter in ("v4", "v3"):
        before = report[meter]["before"]
        assert {name: before[name] for name in PROFILE_1[meter]} == PROFILE_1[meter]
        assert_readback(report, meter, PROFILE_2[meter])


# ---------------------------------------------------------------------------------------------------
# Clients that come and go quickly


def test_port_closed_and_reopened_at_once_in_one_client(vendor_python: Path, simulator: Simulator) -> None:
    """closePort() then a new SerialPort(...).initPort() straight away, as a polling loop does, 10 times."""
    report = drive(vendor_python, simulator, "--reopen", "10", "--reads-only")
    assert report["opens"] == 11
    assert report["failed_opens"] == 0, explain(report)
    assert report["ok"], explain(report)
    assert_reads(report, cycles=10)


def test_short_lived_client_leaves_the_pty_usable(vendor_python: Path, simulator: Simulator) -> None:
    """A client that opens the port 7E1 and closes it at once (a port probe), then the vendor's client."""
    probe = (
        "import serial, sys, time\n"
        "serial.Serial(sys.argv[1], 9600, bytesize=7, parity='E', stopbits=1, timeout=0).close()\n"
        "time.sleep(0.5)\n"
    )
    subprocess.run([str(vendor_python), "-c", probe, str(simulator.link)], check=True, timeout=60)
    report = drive(vendor_python, simulator, "--reads-only")
    assert report["ok"], explain(report)
    assert_reads(report, cycles=0)


def assert_reads(report: dict[str, Any], cycles: int) -> None:
    """Each reopen cycle read both meters, then request() and readSettings() worked for both."""
    calls = [(c["meter"], c["call"], c["result"]) for c in report["calls"] if c["call"] != "closePort()"]
    cycle = [("port", "initPort()", True), ("cycle", "request()", True), ("cycle", "request()", True)]
    run = [("port", "initPort()", True)] + [
        (m, f"{name}()", True) for m in ("v4", "v3") for name in ("request", "readSettings")
    ]
    assert calls == cycle * cycles + run
    assert report["v4"]["before"]["Meter_Address"] == V4
    assert report["v3"]["before"]["Meter_Address"] == V3
