"""ekm_async.text: reads and settings for people (units, decimals, the meter's clock, tables), and the
meaning of every field (docs/fields.md is rendered from it)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given

from ekm_async import Read, decode, encode
from ekm_async.calculated import CALCULATED_NAMES
from ekm_async.layouts import LAYOUTS
from ekm_async.model import Period
from ekm_async.testing import strategies as ekm
from ekm_async.text import DESCRIPTIONS, description, family, periods_text, read_text, unit, value_text

EVERY_FIELD = sorted({f.name for layout in LAYOUTS.values() for f in layout.fields} | set(CALCULATED_NAMES))


@pytest.mark.parametrize("name", EVERY_FIELD)
def test_every_field_has_a_meaning(name: str) -> None:
    assert description(name)


def test_every_meaning_belongs_to_a_field() -> None:
    assert set(DESCRIPTIONS) == {name if name in DESCRIPTIONS else family(name) for name in EVERY_FIELD}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("kWh_Tot", "kWh"),
        ("Rev_kWh_Tariff_4", "kWh"),
        ("Month_6_Tariff_2", "kWh"),
        ("Reactive_Energy_Tot", "kvarh"),
        ("RMS_Volts_Ln_2", "V"),
        ("Amps_Ln_3", "A"),
        ("RMS_Watts_Tot", "W"),
        ("Net_Calc_Watts_Ln_1", "W"),
        ("RMS_Watts_Max_Demand", "W"),
        ("Max_Demand", "W"),
        ("Reactive_Pwr_Tot", "var"),
        ("Line_Freq", "Hz"),
        ("Max_Demand_Period", "min"),
        ("CT_Ratio", "A"),
        ("kWh_Scale", ""),
        ("Pulse_Cnt_1", ""),
        ("Power_Factor_Ln_1", ""),
        ("Schedule_1_Period_1_Tariff", ""),
    ],
)
def test_units(name: str, expected: str) -> None:
    assert unit(name) == expected


@pytest.mark.parametrize(
    ("name", "value", "scale", "expected"),
    [
        ("kWh_Tot", 1234.5, 2, "1234.50 kWh"),  # the meter's decimals kept: no lost trailing zero
        ("kWh_Tot", 1234.0, 0, "1234 kWh"),
        ("RMS_Volts_Ln_1", 120.0, 2, "120.0 V"),  # volts are tenths whatever the kWh scale
        ("Line_Freq", 60.0, 0, "60.00 Hz"),
        ("Max_Demand_Period", 30, 0, "30 min"),
        ("Max_Demand_Period", None, 0, "unknown code (see the raw frame)"),
        ("Max_Demand_Interval_Reset", "daily", 0, "daily"),
        ("Meter_Time", "26120607050102", 0, "2026-12-06 05:01:02 Sunday"),
        ("Meter_Time", "2612??07050102", 0, "unreadable (2612??07050102)"),
        ("State_Out", 3, 0, "3 (relay 1 closed, relay 2 open)"),
        ("State_Watts_Dir", 2, 0, "2 (line 1 forward, line 2 forward, line 3 reverse)"),
        ("Schedule_2_Period_1_Tariff", 4, 0, "4"),
    ],
)
def test_value_text(name: str, value: object, scale: int, expected: str) -> None:
    assert value_text(name, value, scale) == expected  # type: ignore[arg-type]


def test_periods_text_leaves_unused_periods_out_after_the_first() -> None:
    unused = Period(0, 0, 1)  # zeros on the wire
    assert periods_text([unused, unused, unused, unused]) == "00:00 T1"
    assert periods_text([Period(0, 0, 2), Period(7, 30, 4), unused, unused]) == "00:00 T2  07:30 T4"


TABLED = re.compile(r".*_(Ln_)?\d|.*_Tot|Model|Firmware|Meter_Address|Meter_Time")


@given(ekm.reads("v4") | ekm.reads("v3"))
def test_any_read_reads_for_people_and_hides_no_field(read: Read) -> None:
    text = read_text(read)
    assert text.startswith(f"meter {read.address}: {'V3' if read.v3 else 'V4'} (model ")
    for name, value in read.fields.items():
        if not TABLED.fullmatch(name):  # the rest, one line each, with its unit
            assert re.search(rf"^{name} +{re.escape(value_text(name, value, read.a.kwh_scale))}$", text, re.MULTILINE)


def test_a_read_shows_each_line_and_the_total() -> None:
    a = decode(
        encode(
            "v4a",
            {"kWh_Scale": 2, "RMS_Volts_Ln_1": 120.5, "RMS_Watts_Ln_1": 900, "RMS_Watts_Tot": 1200, "kWh_Tot": 10.5},
        )
    )
    text = read_text(Read.of(a))
    assert re.search(r"^ +line 1 +line 2 +line 3 +total$", text, re.MULTILINE)
    assert re.search(r"^volts +120\.5 V +0\.0 V +0\.0 V$", text, re.MULTILINE)
    assert re.search(r"^watts +900 W +0 W +0 W +1200 W$", text, re.MULTILINE)
    assert re.search(r"^energy( +0\.00 kWh){3} +10\.50 kWh$", text, re.MULTILINE)
