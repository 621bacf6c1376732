"""Reads and settings as text for people: every value with its unit, the meter's clock as a date,
settings as compact tables. ``ekm-async read`` and ``ekm-async settings`` print these, and so do the
examples. Machines take JSON instead (``read.fields``, every field in docs/fields.md).

Numbering and units follow :mod:`ekm_async.model`: schedules 1–8, tariffs T1–T4, the max-demand
period in minutes, the reset interval in words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Protocol

from .blocks import Block, HolidaysBlock, MonthsBlock, Read, SchedulesBlock
from .calculated import CALCULATED_NAMES, Value
from .layouts import LAYOUTS, FieldSpec, FieldType, Scale
from .model import FIRST, UNUSED_PERIOD, DirectionFlag, MonthDay, Period, StateOut, parse_meter_time

__all__ = [
    "DESCRIPTIONS",
    "UNITS",
    "SettingsLike",
    "description",
    "family",
    "number_text",
    "periods_text",
    "read_text",
    "settings_text",
    "unit",
    "value_text",
]

_UNIT_RULES: tuple[tuple[str, str], ...] = (
    (r"kWh_Scale", ""),
    (r"Reactive_Energy_Tot", "kvarh"),
    (r".*kWh.*|Month_\d_(Tot|Tariff_\d)", "kWh"),
    (r"RMS_Volts_Ln_\d", "V"),
    (r"Amps_Ln_\d", "A"),
    (r"(RMS|Net_Calc)_Watts_.*|Max_Demand", "W"),  # V3's Max_Demand is watts, as V4 B's RMS_Watts_Max_Demand
    (r"Reactive_Pwr_.*", "var"),
    (r"Line_Freq", "Hz"),
    (r"Max_Demand_Period", "min"),
    (r"CT_Ratio", "A"),  # the current transformers' primary current (200 means 200:5)
)
"""Field name pattern → unit, the first that matches; fields without one are counts, codes or text."""

_SPECS: dict[str, FieldSpec] = {}
for _layout in LAYOUTS.values():
    for _spec in _layout.fields:
        _SPECS.setdefault(_spec.name, _spec)


def _unit_of(name: str) -> str:
    return next((unit for pattern, unit in _UNIT_RULES if re.fullmatch(pattern, name)), "")


UNITS: Mapping[str, str] = {name: _unit_of(name) for name in [*_SPECS, *sorted(CALCULATED_NAMES)] if _unit_of(name)}
"""Field name → unit, for every field that has one (kWh, V, A, W, var, kvarh, Hz, min)."""

DESCRIPTIONS: Mapping[str, str] = {
    "Model": "the meter's model, as hex: 1024 a V4 meter, 1012 a V3",
    "Firmware": "the firmware version, as hex",
    "Meter_Address": "the meter's 12-digit address",
    "Meter_Time": "the meter's clock, YYMMDDWWhhmmss (WW the weekday, Monday 01); '?' where it is unreadable",
    "kWh_Scale": "V4: the decimals of the kWh fields (0, 1 or 2)",
    "kWh_Tot": "energy drawn, in total",
    "Rev_kWh_Tot": "energy delivered (reverse), in total",
    "kWh_Ln_{}": "energy drawn on line n",
    "Rev_kWh_Ln_{}": "energy delivered on line n",
    "kWh_Tariff_{}": "energy drawn under tariff n (1–4)",
    "Rev_kWh_Tariff_{}": "energy delivered under tariff n (1–4)",
    "Resettable_kWh_Tot": "energy drawn since the resettable registers were last zeroed",
    "Resettable_Rev_kWh_Tot": "energy delivered since the resettable registers were last zeroed",
    "Reactive_Energy_Tot": "reactive energy, in total",
    "RMS_Volts_Ln_{}": "voltage of line n",
    "Amps_Ln_{}": "current of line n",
    "RMS_Watts_Ln_{}": "power of line n, unsigned",
    "RMS_Watts_Tot": "power, in total, unsigned",
    "Net_Calc_Watts_Ln_{}": "V4: power of line n signed by State_Watts_Dir (negative: delivered); calculated",
    "Net_Calc_Watts_Tot": "V4: the signed powers' sum; calculated",
    "Cos_Theta_Ln_{}": "power factor of line n as sent: C (capacitive) or L (inductive), then d.dd",
    "Power_Factor_Ln_{}": "power factor of line n, 0–200 (100 unity; below, inductive; above, capacitive); calculated",
    "Reactive_Pwr_Ln_{}": "V4: reactive power of line n",
    "Reactive_Pwr_Tot": "V4: reactive power, in total",
    "Line_Freq": "V4: line frequency",
    "Pulse_Cnt_{}": "pulses counted on input n",
    "Pulse_Ratio_{}": "input n's pulse ratio: closures per pulse counted",
    "Pulse_Output_Ratio": "V4: the pulse output's ratio",
    "CT_Ratio": "the current transformers' ratio: their primary amps (200 means 200:5)",
    "Max_Demand": "V3: the highest demand since max demand was last reset",
    "RMS_Watts_Max_Demand": "V4: the highest demand since max demand was last reset",
    "Max_Demand_Period": "the period max demand is averaged over, in minutes: 15, 30 or 60 (null: a code no "
    "document names)",
    "Max_Demand_Interval_Reset": 'V4: when max demand resets by itself: "off", "monthly", "weekly", "daily" or '
    '"hourly" (null: a code no document names)',
    "State_Inputs": "the pulse inputs' states, one bit each",
    "State_Watts_Dir": "V4: which lines draw (F) and deliver (R): 1 FFF, 2 FFR, 3 FRF, 4 RFF, 5 FRR, 6 RFR, "
    "7 RRF, 8 RRR",
    "State_Out": "V4: the relays: 1 both open, 2 relay 2 closed, 3 relay 1 closed, 4 both closed",
    "Meter_Status_Code": "V3: a diagnostic byte, as hex",
    "Status_A": "V4: a status byte, as hex (undocumented)",
    "Status_B": "V4: a status byte, as hex (undocumented)",
    "Status_C": "V4: a status byte, as hex (undocumented)",
    "Month_{}_Tot": "energy of month n in total, forward or reverse as the block was asked",
    "Month_{}_Tariff_{}": "energy of month n under tariff m (1–4)",
    "Schedule_{}_Period_{}_Hour": "schedule n (1–8), period m (1–4): the hour it starts",
    "Schedule_{}_Period_{}_Min": "schedule n, period m: the minute it starts",
    "Schedule_{}_Period_{}_Tariff": "schedule n, period m: the tariff (1–4) from its start",
    "Season_{}_Month": "season n (1–4): the month it starts (0: unused)",
    "Season_{}_Day": "season n: the day it starts",
    "Season_{}_Schedule": "season n: the schedule (1–8) from its start",
    "Holiday_{}_Mon": "holiday n (1–20): its month (0: unused)",
    "Holiday_{}_Day": "holiday n: its day",
    "Weekend_Schd": "the schedule (1–8) used on weekends",
    "Holiday_Schd": "the schedule (1–8) used on holidays",
}
"""What every field means, by family: ``{}`` stands for the numbers in a name (``RMS_Volts_Ln_{}``)."""


def family(name: str) -> str:
    """A field's family: its name with every number ``{}`` (``Schedule_{}_Period_{}_Hour``)."""
    return re.sub(r"\d+", "{}", name)


def description(name: str) -> str:
    """What the field ``name`` means (:data:`DESCRIPTIONS`)."""
    return DESCRIPTIONS.get(name) or DESCRIPTIONS[family(name)]


_FIXED_DECIMALS = {Scale.NONE: 0, Scale.DIV10: 1, Scale.DIV100: 2}
_SAID: dict[str, dict[Value, str]] = {
    "State_Out": {
        s.value: ", ".join(f"relay {n} {'closed' if s.closed(n) else 'open'}" for n in (1, 2)) for s in StateOut
    },
    "State_Watts_Dir": {
        d.value: ", ".join(f"line {n} {'reverse' if c == 'R' else 'forward'}" for n, c in enumerate(d.name, 1))
        for d in DirectionFlag
    },
}
"""Codes a read carries, in words (``State_Out`` 3: relay 1 closed, relay 2 open)."""


def unit(name: str) -> str:
    """The unit of the field ``name`` ("" for counts, codes and text)."""
    return UNITS.get(name, "")


def number_text(name: str, value: Value, kwh_scale: int = 0) -> str:
    """A field's value with the decimals the meter gives it (``kwh_scale`` for kWh fields: 1234.50, not
    1234.5 beside 1234.56), without its unit."""
    spec = _SPECS.get(name)
    if spec is not None and spec.type is FieldType.FLOAT and isinstance(value, float):
        decimals = kwh_scale if spec.scale is Scale.KWH else _FIXED_DECIMALS[spec.scale]
        return f"{value:.{decimals}f}"
    return str(value)


def value_text(name: str, value: Value | None, kwh_scale: int = 0) -> str:
    """A field's value as a person reads it: the decimals the meter gives (``kwh_scale`` for kWh
    fields), its unit, the meter's clock as a date and weekday; an unknown code says so."""
    if value is None:
        return "unknown code (see the raw frame)"
    if name == "Meter_Time":
        when = parse_meter_time(str(value))
        return f"{when:%Y-%m-%d %H:%M:%S %A}" if when else f"unreadable ({value})"
    text = number_text(name, value, kwh_scale)
    said = _SAID.get(name, {}).get(value)
    if said is not None:
        return f"{text} ({said})"
    u = unit(name)
    return f"{text} {u}" if u else text


# ---------------------------------------------------------------------------------------------------
# A read

_LINE_ROWS: tuple[tuple[str, str, str | None], ...] = (
    ("volts", "RMS_Volts_Ln_{}", None),
    ("amps", "Amps_Ln_{}", None),
    ("watts", "RMS_Watts_Ln_{}", "RMS_Watts_Tot"),
    ("net watts", "Net_Calc_Watts_Ln_{}", "Net_Calc_Watts_Tot"),
    ("power factor", "Power_Factor_Ln_{}", None),
    ("reactive power", "Reactive_Pwr_Ln_{}", "Reactive_Pwr_Tot"),
    ("energy", "kWh_Ln_{}", "kWh_Tot"),
    ("energy, reverse", "Rev_kWh_Ln_{}", "Rev_kWh_Tot"),
    ("pulse count", "Pulse_Cnt_{}", None),
    ("pulse ratio", "Pulse_Ratio_{}", None),
)
"""Rows of the per-line table: label, the field of line n, the total's field (if any)."""
_TARIFF_ROWS = (("energy", "kWh_Tariff_{}"), ("energy, reverse", "Rev_kWh_Tariff_{}"))
_HEAD = ("Model", "Firmware", "Meter_Address", "Meter_Time", "Cos_Theta_Ln_1", "Cos_Theta_Ln_2", "Cos_Theta_Ln_3")
"""Fields the heading says, or the table says better (the power factors)."""


def _table(header: Iterable[str], rows: Iterable[tuple[str, list[str]]]) -> list[str]:
    head = ["", *header]
    body = [[label, *cells] for label, cells in rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

    def line(row: list[str]) -> str:
        return "  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])

    return [line(head).rstrip(), *(line(row).rstrip() for row in body)]


def read_text(read: Read) -> str:
    """A read for people: a heading (meter, model, clock), a table per line and in total, the tariffs,
    then every other field with its unit."""
    fields = read.fields
    scale = read.a.kwh_scale
    used = set(_HEAD)

    def cell(name: str | None) -> str:
        if name is None or name not in fields:
            return ""
        used.add(name)
        return value_text(name, fields[name], scale)

    kind = "V3" if read.v3 else "V4"
    lines = [
        f"meter {read.address}: {kind} (model {fields['Model']}, firmware {fields['Firmware']})",
        f"meter clock: {value_text('Meter_Time', fields['Meter_Time'])}",
        "",
    ]
    rows = [
        (label, [cell(per_line.format(n)) for n in (1, 2, 3)] + [cell(total)])
        for label, per_line, total in _LINE_ROWS
        if per_line.format(1) in fields
    ]
    lines += _table(["line 1", "line 2", "line 3", "total"], rows)
    tariffs = [
        (label, [cell(pattern.format(t)) for t in range(FIRST, FIRST + 4)])
        for label, pattern in _TARIFF_ROWS
        if pattern.format(FIRST) in fields
    ]
    if tariffs:
        lines += ["", *_table([f"T{t}" for t in range(FIRST, FIRST + 4)], tariffs)]
    rest = [name for name in fields if name not in used]
    if rest:
        width = max(map(len, rest))
        lines += ["", *(f"{name:<{width}}  {value_text(name, fields[name], scale)}" for name in rest)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# Settings


class SettingsLike(Protocol):
    """What :func:`settings_text` takes: :class:`ekm_async.Settings` (every block of ``read_settings``)."""

    @property
    def months_forward(self) -> MonthsBlock: ...
    @property
    def months_reverse(self) -> MonthsBlock: ...
    @property
    def schedules(self) -> SchedulesBlock: ...
    @property
    def schedules_5_8(self) -> SchedulesBlock: ...
    @property
    def holidays(self) -> HolidaysBlock: ...


def periods_text(periods: Iterable[Period]) -> str:
    """A schedule's periods as ``00:00 T1  07:00 T2``; unused periods (zeros on the wire) left out."""
    kept = [p for i, p in enumerate(periods) if i == 0 or p != UNUSED_PERIOD]
    return "  ".join(f"{p.hour:02d}:{p.minute:02d} T{p.tariff}" for p in kept)


def _day(day: MonthDay) -> str:
    return f"{day.month:02d}-{day.day:02d}"


def _kwh(block: Block, value: float) -> str:
    return f"{value:.{block.kwh_scale}f}"


def settings_text(settings: SettingsLike) -> str:
    """Every setting for people: the schedules (from HH:MM, tariff T), the seasons, weekends and
    holidays, and six months of totals (kWh) forward and reverse."""
    schedules = settings.schedules.schedules() | settings.schedules_5_8.schedules()
    lines = ["schedules (each period from HH:MM on, its tariff T1–T4):"]
    lines += [f"  {number}  {periods_text(periods)}" for number, periods in sorted(schedules.items())]
    seasons = [
        f"from {_day(MonthDay(s.month, s.day))} schedule {s.schedule}" for s in settings.schedules.seasons() if s.month
    ]
    lines.append(f"seasons: {'; '.join(seasons) if seasons else 'none'}")
    holidays = settings.holidays
    days = [_day(day) for day in holidays.holidays() if day.month]
    lines.append(f"weekends: schedule {holidays.Weekend_Schd}")
    lines.append(f"holidays: schedule {holidays.Holiday_Schd} on {', '.join(days) if days else 'none'}")
    forward, reverse = settings.months_forward, settings.months_reverse
    rows = [
        (
            f"month {fwd.month}",
            [_kwh(forward, fwd.total), *(_kwh(forward, t) for t in fwd.tariffs), _kwh(reverse, rev.total)],
        )
        for fwd, rev in zip(forward.months(), reverse.months(), strict=True)
    ]
    lines += ["", "months (kWh):", *_table(["total", "T1", "T2", "T3", "T4", "reverse"], rows)]
    return "\n".join(lines) + "\n"
