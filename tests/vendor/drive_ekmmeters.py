"""Drive the vendor's client, ekmmeters 0.2.5, against a serial port the way a user would.

Run with a Python that has ``ekmmeters==0.2.5`` and pyserial installed (not the project's venv)::

    python drive_ekmmeters.py PORT --v4 000300001184 --v3 000000001234 [--profile 1|2] [--reopen N]

For the V4 meter: ``request()``, ``readSettings()``, every V4 and base-class setter, a wrong password,
then a fresh ``request()`` and ``readSettings()`` to read back what was written. For the V3 meter the
same with the base-class setters. ``--profile`` picks one of two sets of values to write, so two
consecutive runs write different things (and the second one sees the first one's values first).
``--reopen N`` first opens the port, reads both meters and closes it N times in a row, each open right
after the last close (as a polling client does), then does the above on a port opened at once too.
``--reads-only`` stops after the first ``request()`` and ``readSettings()`` of each meter.

Prints one JSON object (``calls``: every vendor call with its result and what was expected;
``before``/``after``: fields read; ``readback``: wrote vs read) and exits 1 if anything differed from
what was expected.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import ekmmeters as ekm
import serial

NEW_PASSWORD = "12345678"
DEFAULT_PASSWORD = "00000000"

# What each profile writes. Tariffs and schedules are the vendor's 0-based numbers.
PROFILES: dict[int, dict[str, Any]] = {
    1: {
        "ct": ekm.CTRatio.Amps_400,
        "pulse_ratios": (55, 1234, 3),
        "pulse_output": ekm.PulseOutput.Ratio_40,
        "relays": (ekm.RelayState.RelayClose, ekm.RelayState.RelayOpen),
        "state_out": ekm.StateOut.OnOff,
        "reset_interval": ekm.MaxDemandResetInterval.Daily,
        "period": ekm.MaxDemandPeriod.At_30_Minutes,
        "time": (2024, 2, 29, 12, 34, 0),
        "meter_time": "240229041234",  # YYMMDD, ISO weekday (Thursday = 04), hhmm
        "lcd": [ekm.LCDItems.kWh_Tot, ekm.LCDItems.RMS_Watts_Tot, ekm.LCDItems.Line_Freq],
        "lcd_items": [ekm.LCDItems.RMS_Volts_Ln_1, ekm.LCDItems.Amps_Ln_1],
        "schedule": (ekm.Schedules.Schedule_2, [(6, 0, 1), (9, 30, 2), (18, 15, 3), (22, 45, 0)]),
        "schedule_dict": (ekm.Schedules.Schedule_3, [(0, 0, 0), (7, 0, 1), (12, 0, 2), (20, 0, 3)]),
        "seasons": [(3, 21, 1), (6, 21, 2), (9, 21, 3), (12, 21, 0)],
        "holidays": [(1, 1), (7, 4), (12, 25)],
        "weekend_holiday": (ekm.Schedules.Schedule_2, ekm.Schedules.Schedule_3),
        "v3_ct": ekm.CTRatio.Amps_800,
        "v3_period": ekm.MaxDemandPeriod.At_60_Minutes,
        "v3_time": (2025, 12, 31, 23, 45, 0),
        "v3_meter_time": "251231032345",
    },
    2: {
        "ct": ekm.CTRatio.Amps_1200,
        "pulse_ratios": (100, 20, 7),
        "pulse_output": ekm.PulseOutput.Ratio_100,
        "relays": (ekm.RelayState.RelayOpen, ekm.RelayState.RelayClose),
        "state_out": ekm.StateOut.OffOn,
        "reset_interval": ekm.MaxDemandResetInterval.Weekly,
        "period": ekm.MaxDemandPeriod.At_15_Minutes,
        "time": (2025, 7, 4, 8, 15, 0),
        "meter_time": "250704050815",
        "lcd": [ekm.LCDItems.kWh_Tot],
        "lcd_items": [ekm.LCDItems.Pulse_Cnt_1, ekm.LCDItems.kWh_Tariff_1, ekm.LCDItems.Rev_kWh_Tot],
        "schedule": (ekm.Schedules.Schedule_2, [(5, 5, 3), (10, 10, 2), (15, 15, 1), (20, 20, 0)]),
        "schedule_dict": (ekm.Schedules.Schedule_4, [(1, 0, 1), (2, 0, 2), (3, 0, 3), (4, 0, 0)]),
        "seasons": [(1, 1, 0), (4, 1, 1), (7, 1, 2), (10, 1, 3)],
        "holidays": [(2, 14), (10, 31), (11, 28)],
        "weekend_holiday": (ekm.Schedules.Schedule_4, ekm.Schedules.Schedule_1),
        "v3_ct": ekm.CTRatio.Amps_1500,
        "v3_period": ekm.MaxDemandPeriod.At_30_Minutes,
        "v3_time": (2024, 1, 1, 0, 0, 0),
        "v3_meter_time": "240101010000",
    },
}

V4_FIELDS = [
    ekm.Field.Meter_Address,
    ekm.Field.Model,
    ekm.Field.Firmware,
    ekm.Field.kWh_Tot,
    ekm.Field.kWh_Scale,
    ekm.Field.RMS_Volts_Ln_1,
    ekm.Field.Amps_Ln_1,
    ekm.Field.RMS_Watts_Tot,
    ekm.Field.Line_Freq,
    ekm.Field.Meter_Time,
    ekm.Field.CT_Ratio,
    ekm.Field.Pulse_Ratio_1,
    ekm.Field.Pulse_Ratio_2,
    ekm.Field.Pulse_Ratio_3,
    ekm.Field.Pulse_Output_Ratio,
    ekm.Field.State_Out,
    ekm.Field.Max_Demand_Period,
    ekm.Field.Max_Demand_Interval_Reset,
    ekm.Field.Resettable_kWh_Tot,
]
V3_FIELDS = [
    ekm.Field.Meter_Address,
    ekm.Field.Model,
    ekm.Field.Firmware,
    ekm.Field.kWh_Tot,
    ekm.Field.RMS_Volts_Ln_1,
    ekm.Field.Amps_Ln_1,
    ekm.Field.RMS_Watts_Tot,
    ekm.Field.Meter_Time,
    ekm.Field.CT_Ratio,
    ekm.Field.Pulse_Ratio_1,
    ekm.Field.Max_Demand_Period,
]


class Run:
    """Every vendor call made, its result and the result expected; read-backs; the vendor's log."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.readback: list[dict[str, Any]] = []
        self.log: list[str] = []

    def call(self, meter: str, fn: Callable[..., Any], *args: Any, expected: Any = True, **kw: Any) -> Any:
        """``fn(*args, **kw)``, recorded with its result. An exception escaping the vendor is recorded too."""
        name = f"{fn.__name__}({', '.join([*map(repr, args), *(f'{k}={v!r}' for k, v in kw.items())])})"
        started = time.monotonic()
        error = None
        try:
            result = fn(*args, **kw)
        except Exception as exc:  # noqa: BLE001 - record whatever escapes the vendor, see below
            result = None
            # 0.2.5 calls traceback.format_exc(sys.exc_info()) in its except blocks, which raises
            # TypeError on Python >= 3.10; the exception that got it there is the __context__.
            cause = exc.__context__
            error = repr(exc) + (f" while handling {cause!r}" if cause is not None else "")
        self.calls.append(
            {
                "meter": meter,
                "call": name,
                "result": result,
                "expected": expected,
                "ok": result is expected and error is None,
                "error": error,
                "seconds": round(time.monotonic() - started, 3),
            }
        )
        return result

    def check(self, meter: str, what: str, wrote: Any, read: Any) -> None:
        """Record a read-back: what the vendor client wrote and what it read afterwards."""
        self.readback.append({"meter": meter, "what": what, "wrote": wrote, "read": read, "ok": wrote == read})

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.calls) and all(r["ok"] for r in self.readback)


def fields(meter: ekm.Meter, names: list[str]) -> dict[str, str]:
    """The vendor's display strings of ``names`` after the last read."""
    return {name: meter.getField(name) for name in names}


def setters(cls: type) -> list[str]:
    """The public setters a meter class offers (``setContext`` is internal bookkeeping)."""
    return sorted(name for name in dir(cls) if name.startswith("set") and name != "setContext")


def open_port(run: Run, link: str, force_wait: float) -> ekm.SerialPort | None:
    port = ekm.SerialPort(link, force_wait=force_wait)
    return port if run.call("port", port.initPort) else None


def change_password(run: Run, meter: str, m: ekm.Meter, ct: int) -> None:
    """Change the password, see the old one refused and the new one work, then set it back."""
    run.call(meter, m.setMeterPassword, NEW_PASSWORD, DEFAULT_PASSWORD)
    run.call(meter, m.setCTRatio, ekm.CTRatio.Amps_100, expected=False)  # the default (old) password
    run.call(meter, m.setCTRatio, ct, password=NEW_PASSWORD)
    run.call(meter, m.setMeterPassword, DEFAULT_PASSWORD, NEW_PASSWORD)


def write_tables(run: Run, meter: str, m: ekm.Meter, p: dict[str, Any]) -> None:
    """The base-class table setters, through the assign* buffers and through dictionaries."""
    schedule, periods = p["schedule"]
    for period, (hour, minute, tariff) in enumerate(periods):
        run.call(meter, m.assignSchedule, schedule, period, hour, minute, tariff)
    run.call(meter, m.setSchedule)  # from the assignSchedule buffer
    schedule, periods = p["schedule_dict"]
    table: dict[str, int] = {"Schedule": schedule}
    for n, (hour, minute, tariff) in enumerate(periods, 1):
        table |= {f"Hour_{n}": hour, f"Min_{n}": minute, f"Tariff_{n}": tariff}
    run.call(meter, m.setSchedule, table)
    # assignSeasonSchedule stores the month under the day key and adds 1 to the schedule (protocol.md
    # §10.1.11), so the dictionary form is the one that writes what it says.
    seasons: dict[str, int] = {}
    for n, (month, day, sched) in enumerate(p["seasons"], 1):
        seasons |= {f"Season_{n}_Start_Month": month, f"Season_{n}_Start_Day": day, f"Season_{n}_Schedule": sched}
    run.call(meter, m.setSeasonSchedules, seasons)
    for n, (month, day) in enumerate(p["holidays"]):
        run.call(meter, m.assignHolidayDate, n, month, day)
    run.call(meter, m.setHolidayDates)  # from the assignHolidayDate buffer
    run.call(meter, m.setWeekendHolidaySchedules, *p["weekend_holiday"])


def read_tables(run: Run, meter: str, m: ekm.Meter, p: dict[str, Any]) -> dict[str, Any]:
    """Check the tables written by :func:`write_tables` in what ``readSettings()`` read."""
    got: dict[str, Any] = {}
    for key in ("schedule", "schedule_dict"):
        schedule, periods = p[key]
        read = []
        for period in range(ekm.Extents.Periods):
            r = m.extractSchedule(schedule, period)
            read.append([int(r.Hour), int(r.Min), int(r.Tariff)])
        run.check(meter, f"Schedule_{schedule + 1}", [list(x) for x in periods], read)
        got[f"Schedule_{schedule + 1}"] = read
    holidays = []
    for n in range(len(p["holidays"])):
        r = m.extractHolidayDate(n)
        holidays.append([int(r.Month), int(r.Day)])
    run.check(meter, "holidays", [list(h) for h in p["holidays"]], holidays)
    r = m.extractHolidayWeekendSchedules()
    weekend_holiday = [int(r.Weekend), int(r.Holiday)]
    run.check(meter, "weekend/holiday schedules", list(p["weekend_holiday"]), weekend_holiday)
    return got | {"holidays": holidays, "weekend_holiday": weekend_holiday}


def drive_v4(run: Run, port: ekm.SerialPort, address: str, p: dict[str, Any], *, reads_only: bool) -> dict[str, Any]:
    m = ekm.V4Meter(address)
    m.attachPort(port)
    out: dict[str, Any] = {"setters": setters(ekm.V4Meter)}
    run.call("v4", m.request)
    out["before"] = fields(m, V4_FIELDS)
    run.call("v4", m.readSettings)
    if reads_only:
        return out

    run.call("v4", m.setCTRatio, p["ct"])
    for line, ratio in zip((ekm.Pulse.In1, ekm.Pulse.In2, ekm.Pulse.In3), p["pulse_ratios"], strict=True):
        run.call("v4", m.setPulseInputRatio, line, ratio)
    run.call("v4", m.setPulseOutputRatio, p["pulse_output"])
    for relay, state in zip((ekm.Relay.Relay1, ekm.Relay.Relay2), p["relays"], strict=True):
        run.call("v4", m.setRelay, ekm.RelayInterval.Hold, relay, state)
    run.call("v4", m.setZeroResettableKWH)
    run.call("v4", m.setLCDCmd, p["lcd"])
    m.initLcd()
    for item in p["lcd_items"]:
        m.addLcdItem(item)
    run.call("v4", m.setLCD)  # from the initLcd/addLcdItem buffer
    run.call("v4", m.setMaxDemandResetInterval, p["reset_interval"])
    run.call("v4", m.setMaxDemandPeriod, p["period"])
    run.call("v4", m.setMaxDemandResetNow)
    run.call("v4", m.setTime, *p["time"])
    write_tables(run, "v4", m, p)
    change_password(run, "v4", m, p["ct"])

    run.call("v4", m.request)  # 0.2.5 reads A and B on every request()
    out["after"] = after = fields(m, V4_FIELDS)
    run.check("v4", "CT_Ratio", str(p["ct"]), after[ekm.Field.CT_Ratio])
    for n, ratio in enumerate(p["pulse_ratios"], 1):
        run.check("v4", f"Pulse_Ratio_{n}", str(ratio), after[f"Pulse_Ratio_{n}"])
    run.check("v4", "State_Out", str(p["state_out"]), after[ekm.Field.State_Out])
    run.check("v4", "Pulse_Output_Ratio", str(p["pulse_output"]), after[ekm.Field.Pulse_Output_Ratio])
    run.check("v4", "Max_Demand_Period", str(p["period"]), after[ekm.Field.Max_Demand_Period])
    run.check("v4", "Max_Demand_Interval_Reset", str(p["reset_interval"]), after[ekm.Field.Max_Demand_Interval_Reset])
    run.check("v4", "Meter_Time[:12]", p["meter_time"], after[ekm.Field.Meter_Time][:12])
    run.call("v4", m.readSettings)
    out["settings"] = read_tables(run, "v4", m, p)
    return out


def drive_v3(run: Run, port: ekm.SerialPort, address: str, p: dict[str, Any], *, reads_only: bool) -> dict[str, Any]:
    m = ekm.V3Meter(address)
    m.attachPort(port)
    out: dict[str, Any] = {"setters": setters(ekm.V3Meter)}
    run.call("v3", m.request)
    out["before"] = fields(m, V3_FIELDS)
    run.call("v3", m.readSettings)
    if reads_only:
        return out

    run.call("v3", m.setCTRatio, p["v3_ct"])
    run.call("v3", m.setMaxDemandPeriod, p["v3_period"])
    # ekmmeters puts W5 on the base class, but it is a V4 register (protocol.md §2.2; a V3 block has no
    # field for it): the simulated V3 meter does not acknowledge it, so False is the right answer.
    run.call("v3", m.setMaxDemandResetInterval, ekm.MaxDemandResetInterval.Daily, expected=False)
    run.call("v3", m.setMaxDemandResetNow)
    run.call("v3", m.setTime, *p["v3_time"])
    write_tables(run, "v3", m, p)
    change_password(run, "v3", m, p["v3_ct"])

    run.call("v3", m.request)
    out["after"] = after = fields(m, V3_FIELDS)
    run.check("v3", "CT_Ratio", str(p["v3_ct"]), after[ekm.Field.CT_Ratio])
    run.check("v3", "Max_Demand_Period", str(p["v3_period"]), after[ekm.Field.Max_Demand_Period])
    run.check("v3", "Meter_Time[:12]", p["v3_meter_time"], after[ekm.Field.Meter_Time][:12])
    run.call("v3", m.readSettings)
    out["settings"] = read_tables(run, "v3", m, p)
    return out


def reopen_cycle(run: Run, args: argparse.Namespace) -> None:
    """Open the port, read both meters, close it: what a client polling now and then does."""
    port = open_port(run, args.port, args.force_wait)
    if port is not None:
        for meter in (ekm.V4Meter(args.v4), ekm.V3Meter(args.v3)):
            meter.attachPort(port)
            run.call("cycle", meter.request)
        run.call("port", port.closePort, expected=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port")
    parser.add_argument("--v4", default="000300001184")
    parser.add_argument("--v3", default="000000001234")
    parser.add_argument("--profile", type=int, choices=sorted(PROFILES), default=1)
    parser.add_argument("--force-wait", type=float, default=0.02, help="ekmmeters' sleep after each write/read")
    parser.add_argument(
        "--reopen", type=int, default=0, metavar="N", help="first open, read and close the port N times, at once"
    )
    parser.add_argument("--reads-only", action="store_true", help="only request() and readSettings(), no writes")
    args = parser.parse_args(argv)
    p = PROFILES[args.profile]

    run = Run()
    ekm.ekm_set_log(run.log.append)
    report: dict[str, Any] = {
        "ekmmeters": metadata.version("ekmmeters"),
        "pyserial": serial.VERSION,
        "python": sys.version.split()[0],
        "profile": args.profile,
    }
    started = time.monotonic()
    for _ in range(args.reopen):
        reopen_cycle(run, args)
    port = open_port(run, args.port, args.force_wait)
    if port is not None:
        report["v4"] = drive_v4(run, port, args.v4, p, reads_only=args.reads_only)
        report["v3"] = drive_v3(run, port, args.v3, p, reads_only=args.reads_only)
        run.call("port", port.closePort, expected=None)
    report |= {
        "ok": run.ok,
        "opens": sum(c["call"] == "initPort()" for c in run.calls),
        "failed_opens": sum(c["call"] == "initPort()" and not c["ok"] for c in run.calls),
        "seconds": round(time.monotonic() - started, 2),
        "failures": [c for c in run.calls if not c["ok"]] + [r for r in run.readback if not r["ok"]],
        "calls": run.calls,
        "readback": run.readback,
        "log_tail": run.log[-40:] if not run.ok else [],
    }
    print(json.dumps(report, indent=1, default=str))
    return 0 if run.ok else 1


if __name__ == "__main__":
    sys.exit(main())
