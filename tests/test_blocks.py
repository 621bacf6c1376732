"""Block layouts and decoding: the captured frame, protocol.md's offsets, errors, calculated fields,
the A+B merge, and round trips of random values through every block kind at every kWh scale."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ekm_async import BlockKind, FrameDecoder, FrameError, Read, RejectReason, blocks, commands, decode, encode
from ekm_async.blocks import HolidaysBlock, MonthsBlock, SchedulesBlock
from ekm_async.calculated import CALCULATED, Value, power_factor
from ekm_async.commands import LiveRead
from ekm_async.crc import crc16
from ekm_async.frames import Frame
from ekm_async.layouts import LAYOUTS, FieldType
from ekm_async.model import MonthDay, Period, Season, parse_meter_time
from ekm_async.testing.strategies import block_fields
from ekm_async.testing.strategies import labelled_frames as frames
from ekm_async.wire import seal

# ---------------------------------------------------------------------------------------------------
# Offsets, transcribed by hand from protocol.md §4.2–§4.4 (name, offset, width) — not from layouts.py.

V3_TABLE = """
Model 1 2; Firmware 3 1; Meter_Address 4 12; kWh_Tot 16 8; kWh_Tariff_1 24 8; kWh_Tariff_2 32 8;
kWh_Tariff_3 40 8; kWh_Tariff_4 48 8; Rev_kWh_Tot 56 8; Rev_kWh_Tariff_1 64 8; Rev_kWh_Tariff_2 72 8;
Rev_kWh_Tariff_3 80 8; Rev_kWh_Tariff_4 88 8; RMS_Volts_Ln_1 96 4; RMS_Volts_Ln_2 100 4; RMS_Volts_Ln_3 104 4;
Amps_Ln_1 108 5; Amps_Ln_2 113 5; Amps_Ln_3 118 5; RMS_Watts_Ln_1 123 7; RMS_Watts_Ln_2 130 7;
RMS_Watts_Ln_3 137 7; RMS_Watts_Tot 144 7; Cos_Theta_Ln_1 151 4; Cos_Theta_Ln_2 155 4; Cos_Theta_Ln_3 159 4;
Max_Demand 163 8; Max_Demand_Period 171 1; Meter_Time 172 14; CT_Ratio 186 4; Pulse_Cnt_1 190 8;
Pulse_Cnt_2 198 8; Pulse_Cnt_3 206 8; Pulse_Ratio_1 214 4; Pulse_Ratio_2 218 4; Pulse_Ratio_3 222 4;
State_Inputs 226 3; Meter_Status_Code 248 1
"""
V4A_TABLE = """
Model 1 2; Firmware 3 1; Meter_Address 4 12; kWh_Tot 16 8; Reactive_Energy_Tot 24 8; Rev_kWh_Tot 32 8;
kWh_Ln_1 40 8; kWh_Ln_2 48 8; kWh_Ln_3 56 8; Rev_kWh_Ln_1 64 8; Rev_kWh_Ln_2 72 8; Rev_kWh_Ln_3 80 8;
Resettable_kWh_Tot 88 8; Resettable_Rev_kWh_Tot 96 8; RMS_Volts_Ln_1 104 4; RMS_Volts_Ln_2 108 4;
RMS_Volts_Ln_3 112 4; Amps_Ln_1 116 5; Amps_Ln_2 121 5; Amps_Ln_3 126 5; RMS_Watts_Ln_1 131 7;
RMS_Watts_Ln_2 138 7; RMS_Watts_Ln_3 145 7; RMS_Watts_Tot 152 7; Cos_Theta_Ln_1 159 4; Cos_Theta_Ln_2 163 4;
Cos_Theta_Ln_3 167 4; Reactive_Pwr_Ln_1 171 7; Reactive_Pwr_Ln_2 178 7; Reactive_Pwr_Ln_3 185 7;
Reactive_Pwr_Tot 192 7; Line_Freq 199 4; Pulse_Cnt_1 203 8; Pulse_Cnt_2 211 8; Pulse_Cnt_3 219 8;
State_Inputs 227 1; State_Watts_Dir 228 1; State_Out 229 1; kWh_Scale 230 1; Meter_Time 233 14
"""
V4B_TABLE = """
Model 1 2; Firmware 3 1; Meter_Address 4 12; kWh_Tariff_1 16 8; kWh_Tariff_2 24 8; kWh_Tariff_3 32 8;
kWh_Tariff_4 40 8; Rev_kWh_Tariff_1 48 8; Rev_kWh_Tariff_2 56 8; Rev_kWh_Tariff_3 64 8; Rev_kWh_Tariff_4 72 8;
RMS_Volts_Ln_1 80 4; RMS_Volts_Ln_2 84 4; RMS_Volts_Ln_3 88 4; Amps_Ln_1 92 5; Amps_Ln_2 97 5; Amps_Ln_3 102 5;
RMS_Watts_Ln_1 107 7; RMS_Watts_Ln_2 114 7; RMS_Watts_Ln_3 121 7; RMS_Watts_Tot 128 7; Cos_Theta_Ln_1 135 4;
Cos_Theta_Ln_2 139 4; Cos_Theta_Ln_3 143 4; RMS_Watts_Max_Demand 147 8; Max_Demand_Period 155 1;
Pulse_Ratio_1 156 4; Pulse_Ratio_2 160 4; Pulse_Ratio_3 164 4; CT_Ratio 168 4; Max_Demand_Interval_Reset 172 1;
Pulse_Output_Ratio 173 4; Status_A 230 1; Status_B 231 1; Status_C 232 1; Meter_Time 233 14
"""


def parse_table(text: str) -> dict[str, tuple[int, int]]:
    rows = [r.split() for r in text.replace("\n", " ").split(";")]
    return {name: (int(off), int(width)) for name, off, width in rows}


def settings_table(kind: BlockKind) -> dict[str, tuple[int, int]]:
    """protocol.md §4.5–§4.7 formulas."""
    out: dict[str, tuple[int, int]] = {}
    if kind is BlockKind.MONTHS:
        for m in range(1, 7):
            out[f"Month_{m}_Tot"] = (6 + 40 * (m - 1), 8)
            for t in range(1, 5):
                out[f"Month_{m}_Tariff_{t}"] = (14 + 40 * (m - 1) + 8 * (t - 1), 8)
    elif kind in (BlockKind.SCHEDULES, BlockKind.SCHEDULES_5_8):
        first = 1 if kind is BlockKind.SCHEDULES else 5
        for s in range(first, first + 4):
            for p in range(1, 5):
                base = 6 + 48 * (s - first) + 6 * (p - 1)
                out |= {
                    f"Schedule_{s}_Period_{p}_Hour": (base, 2),
                    f"Schedule_{s}_Period_{p}_Min": (base + 2, 2),
                    f"Schedule_{s}_Period_{p}_Tariff": (base + 4, 2),
                }
        if kind is BlockKind.SCHEDULES:
            for n in range(1, 5):
                out |= {
                    f"Season_{n}_Month": (198 + 6 * (n - 1), 2),
                    f"Season_{n}_Day": (200 + 6 * (n - 1), 2),
                    f"Season_{n}_Schedule": (202 + 6 * (n - 1), 2),
                }
    else:
        for n in range(1, 21):
            out |= {f"Holiday_{n}_Mon": (6 + 4 * (n - 1), 2), f"Holiday_{n}_Day": (8 + 4 * (n - 1), 2)}
        out |= {"Weekend_Schd": (86, 2), "Holiday_Schd": (88, 2)}
    return out


EXPECTED_LAYOUT = {
    BlockKind.V3: parse_table(V3_TABLE),
    BlockKind.V4A: parse_table(V4A_TABLE),
    BlockKind.V4B: parse_table(V4B_TABLE),
    **{
        k: settings_table(k)
        for k in (BlockKind.MONTHS, BlockKind.SCHEDULES, BlockKind.SCHEDULES_5_8, BlockKind.HOLIDAYS)
    },
}


@pytest.mark.parametrize("kind", list(BlockKind))
def test_layout_offsets_match_protocol_md(kind: BlockKind) -> None:
    got = {f.name: (f.offset, f.width) for f in LAYOUTS[kind].fields}
    assert got == EXPECTED_LAYOUT[kind]


# ---------------------------------------------------------------------------------------------------
# The captured frame


def test_captured_frame_decodes_to_every_expected_value(frame_a: bytes, captured: dict[str, Any]) -> None:
    block = decode(frame_a)
    assert block.kind is BlockKind.V4A
    assert block.raw == frame_a
    for name, value in captured["expected"].items():
        assert block.fields[name] == value, name
        assert type(block.fields[name]) is type(value), name
        assert getattr(block, name) == value
        assert block[name] == value


GOLDEN = sorted((Path(__file__).resolve().parent / "vectors").glob("captured_*.json"))
"""Frames captured from real meters: the only ground truth (the one of a meter, and one posted on EKM's forum)."""


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_every_captured_frame_decodes_to_its_values_and_back(path: Path) -> None:
    vector = json.loads(path.read_text())
    frame = bytes.fromhex(vector["frame_hex"])
    assert frame[253:].hex() == vector["crc"]
    assert crc16(frame[1:253]) == frame[253:]
    block = decode(frame)
    assert block.kind is BlockKind.V4A
    assert not getattr(block, "anomalies", ())
    for name, value in vector["expected"].items():
        assert block.fields[name] == value, name
        assert type(block.fields[name]) is type(value), name
    assert encode(BlockKind.V4A, block.fields) == frame
    assert commands.live_read(block.address, LiveRead.V4A).hex() == vector["request"]
    assert [type(e) for e in FrameDecoder().feed(frame)] == [Frame]


def test_both_captured_frames_are_golden() -> None:
    assert [p.stem for p in GOLDEN] == ["captured_v4a", "captured_v4a_forum5181"]


def with_scale(frame: bytes, digit: str) -> bytes:
    f = bytearray(frame)
    f[230] = ord(digit)
    f[253:] = crc16(f[1:253])
    return bytes(f)


@pytest.mark.parametrize(
    ("digit", "crc_hex", "expected"),
    [
        ("1", "4611", {"kWh_Tot": 1489240.3, "Resettable_kWh_Tot": 4.5}),
        ("2", "1274", {"kWh_Tot": 148924.03, "Resettable_Rev_kWh_Tot": 0.07}),
    ],
)
def test_captured_frame_kwh_scale_variants(
    frame_a: bytes, digit: str, crc_hex: str, expected: dict[str, float]
) -> None:
    frame = with_scale(frame_a, digit)
    assert frame[253:] == bytes.fromhex(crc_hex)
    block = decode(frame)
    assert block.kwh_scale == int(digit)
    for name, value in expected.items():
        assert block.fields[name] == value
    assert block.RMS_Volts_Ln_1 == 123.9  # fixed /10, not kWh-scaled
    assert block.Line_Freq == 60.05


def test_captured_frame_reencodes_exactly(frame_a: bytes) -> None:
    block = decode(frame_a)
    assert encode(BlockKind.V4A, block.fields) == frame_a
    assert encode("v4a", dict(block.fields)) == frame_a


def test_meter_time_as_datetime(frame_a: bytes) -> None:
    block = decode(frame_a)
    assert block.meter_datetime == datetime(2022, 2, 21, 23, 37, 1)
    assert block.address == "000300001184"


@pytest.mark.parametrize("text", ["22022101??3701", "??????????????", "22133101233701", "22023001233701", "2202"])
def test_unreadable_meter_time_gives_none(text: str) -> None:
    assert parse_meter_time(text) is None


def test_unreadable_meter_time_keeps_the_raw_string(frame_a: bytes) -> None:
    fields = dict(decode(frame_a).fields, Meter_Time="22??2101233701")
    block = decode(encode("v4a", fields))
    assert block.Meter_Time == "22??2101233701"
    assert block.meter_datetime is None


# ---------------------------------------------------------------------------------------------------
# Calculated fields


@pytest.mark.parametrize(
    ("cos_theta", "pf"),
    [("0100", 100), (" 100", 100), ("L099", 99), ("C000", 200), ("C095", 105), ("L050", 50), ("0095", 100)],
)
def test_power_factor(cos_theta: str, pf: int) -> None:
    assert power_factor(cos_theta) == pf


@pytest.mark.parametrize(
    ("direction", "signs"),
    [
        (1, (1, 1, 1)),
        (2, (1, 1, -1)),
        (3, (1, -1, 1)),
        (4, (-1, 1, 1)),
        (5, (1, -1, -1)),
        (6, (-1, 1, -1)),
        (7, (-1, -1, 1)),
        (8, (-1, -1, -1)),
        (0, (1, 1, 1)),
        (9, (1, 1, 1)),
    ],
)
def test_net_watts_follow_direction_table(frame_a: bytes, direction: int, signs: tuple[int, int, int]) -> None:
    fields = dict(
        decode(frame_a).fields,
        State_Watts_Dir=direction,
        RMS_Watts_Ln_1=100,
        RMS_Watts_Ln_2=20,
        RMS_Watts_Ln_3=3,
        RMS_Watts_Tot=123,
    )
    block = decode(encode("v4a", fields))
    lines = [s * w for s, w in zip(signs, (100, 20, 3), strict=True)]
    assert [block.Net_Calc_Watts_Ln_1, block.Net_Calc_Watts_Ln_2, block.Net_Calc_Watts_Ln_3] == lines
    assert block.Net_Calc_Watts_Tot == sum(lines)


# ---------------------------------------------------------------------------------------------------
# Errors


def test_errors_carry_reason_and_raw(frame_a: bytes) -> None:
    cases: list[tuple[bytes, RejectReason]] = [
        (frame_a[:-1], RejectReason.LENGTH),
        (frame_a + b"\x00", RejectReason.LENGTH),
        (b"\x03" + frame_a[1:], RejectReason.NO_STX),
        (frame_a[:100] + b"\xb0" + frame_a[101:], RejectReason.NOT_7BIT),
        (frame_a[:-1] + b"\x00", RejectReason.CRC),
    ]
    for frame, reason in cases:
        with pytest.raises(FrameError) as info:
            decode(frame)
        assert info.value.reason is reason
        assert info.value.raw == frame


def resealed(frame: bytes, offset: int, data: bytes) -> bytes:
    f = bytearray(frame)
    f[offset : offset + len(data)] = data
    f[253:] = crc16(f[1:253])
    return bytes(f)


@pytest.mark.parametrize(
    ("offset", "data", "kind", "reason"),
    [
        (249, b"!\r\n\x04", "v4a", RejectReason.TRAILER),
        (247, b"01", "v4a", RejectReason.REQUEST_TYPE),
        (247, b"00", "v4b", RejectReason.REQUEST_TYPE),
        (247, b"02", None, RejectReason.KIND),
        (16, b"1489?403", None, RejectReason.FIELD),
        (131, b"-000866", None, RejectReason.FIELD),
        (131, b"0000 66", None, RejectReason.FIELD),
        (163, b"L0?9", None, RejectReason.FIELD),
        (230, b"3", None, RejectReason.FIELD),
        (230, b"?", None, RejectReason.FIELD),
    ],
)
def test_crc_valid_but_invalid_content(
    frame_a: bytes, offset: int, data: bytes, kind: str | None, reason: RejectReason
) -> None:
    frame = resealed(frame_a, offset, data)
    with pytest.raises(FrameError) as info:
        decode(frame, kind)
    assert info.value.reason is reason
    assert info.value.raw == frame


def test_every_single_bit_flip_fails_decode(frame_a: bytes) -> None:
    for i in range(255):
        for bit in range(8):
            bad = bytearray(frame_a)
            bad[i] ^= 1 << bit
            with pytest.raises(FrameError):
                decode(bytes(bad))


EDGE_BYTES = b"/09:a?-!L C 0123\x00\x02\x03\r\n\x7f\x80\xff"
"""Bytes next to the edges of the checks: digits and their neighbours, flags, constants, 8-bit."""
EDGE_OFFSETS = (0, 1, 4, 15, 16, 230, 247, 248, 249, 250, 251, 252, 253, 254)
"""STX, the address, kWh_Scale, the request type, the trailer, the CRC."""


def _outcome(call: Any) -> tuple[Any, ...]:
    try:
        block = call()
    except FrameError as exc:
        return ("FrameError", exc.reason, exc.raw)
    except ValueError as exc:
        return ("ValueError", str(exc))
    return (type(block).__name__, block.kind, block.raw, block.kwh_scale, block.anomalies)


@given(
    frames(),
    st.lists(st.tuples(st.integers(0, 254) | st.sampled_from(EDGE_OFFSETS), st.sampled_from(EDGE_BYTES)), max_size=3),
    st.booleans(),
    st.sampled_from(["none", "member", "value", "other"]),
    st.sampled_from([None, 0, 1, 2]),
)
def test_the_fast_path_decides_as_the_strict_checks(
    case: tuple[BlockKind, int, bytes], changes: list[tuple[int, int]], reseal: bool, how: str, scale: int | None
) -> None:
    """decode's one-regex fast path gives the same block, or the same error, as the checks in order."""
    kind, _, frame = case
    damaged = bytearray(frame)
    for offset, value in changes:
        damaged[offset] = value
    if reseal:  # a valid CRC over damaged content: the content checks decide
        damaged[253:] = crc16(damaged[1:253])
    other = next(k for k in BlockKind if k is not kind)
    given_kind = {"none": None, "member": kind, "value": kind.value, "other": other}[how]
    raw = bytes(damaged)
    for strict in (False, True):
        fast = _outcome(lambda: decode(raw, given_kind, scale, strict=strict))  # noqa: B023
        assert fast == _outcome(lambda: blocks._strict(raw, given_kind, scale, strict))  # noqa: B023
    if not changes and how in ("member", "value"):
        assert fast[:2] == (blocks.BLOCK_CLASS[kind].__name__, kind)  # an undamaged frame decodes
        assert fast[4] == ()


def test_bad_kind_and_scale_arguments(frame_a: bytes) -> None:
    with pytest.raises(ValueError, match=r"^kind must be one of"):
        decode(frame_a, "v5")
    with pytest.raises(ValueError, match=r"^kwh_scale must be 0, 1 or 2"):
        decode(frame_a, "v3", kwh_scale=3)


def test_encode_rejects_unknown_fields_and_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="no field 'kWh_Total'"):
        encode("v4a", {"kWh_Total": 1.0})
    with pytest.raises(ValueError, match="does not fit"):
        encode("v4a", {"RMS_Watts_Tot": 10**7})
    with pytest.raises(ValueError, match="does not fit"):
        encode("v4b", {"kWh_Tariff_1": -1.0})
    with pytest.raises(ValueError, match="must be a number"):
        encode("v3", {"CT_Ratio": "200"})
    with pytest.raises(ValueError, match="not 12 7-bit bytes"):
        encode("v3", {"Meter_Address": "1184"})


# ---------------------------------------------------------------------------------------------------
# Round trips (hypothesis property d)


@settings(max_examples=300)  # ~15 of each kind and scale a run (21 cases × 100 took 11 s of the suite)
@given(kind=st.sampled_from(list(BlockKind)), scale=st.integers(0, 2), data=st.data())
def test_random_values_round_trip_every_kind_and_scale(kind: BlockKind, scale: int, data: st.DataObject) -> None:
    fields = data.draw(block_fields(kind, scale))
    frame = encode(kind, fields, kwh_scale=scale)
    block = decode(frame, kind, kwh_scale=scale)
    assert block.kind is kind
    assert block.kwh_scale == scale
    assert {name: block.fields[name] for name in fields} == fields
    assert encode(kind, block.fields, kwh_scale=scale) == frame
    if kind in (BlockKind.V4A, BlockKind.V4B):
        assert decode(frame).kind is kind  # told apart by the request type


@given(frames())
def test_decoded_types_follow_the_layout(case: tuple[BlockKind, int, bytes]) -> None:
    kind, scale, frame = case
    block = decode(frame, kind, kwh_scale=scale)
    native = {
        FieldType.INT: int,
        FieldType.FLOAT: float,
        FieldType.STR: str,
        FieldType.HEX: str,
        FieldType.PF: str,
        FieldType.NUMBER: int,
    }
    for spec in LAYOUTS[kind].fields:
        value = block.fields[spec.name]
        if spec.type is FieldType.CODE:
            assert value in dict(spec.codes).values(), spec.name
        else:
            assert type(value) is native[spec.type], spec.name


def _with(kind: str, at: int, digits: bytes, kwh_scale: int = 0) -> bytes:
    """An all-zero frame of ``kind`` (its constants in place) with ``digits`` at ``at``, sealed."""
    frame = bytearray(encode(kind, {}, kwh_scale=kwh_scale))
    frame[at : at + len(digits)] = digits
    return seal(frame)


@pytest.mark.parametrize(
    ("kind", "at", "digits", "field", "value"),
    [
        # schedule and tariff numbers: 0-based on the wire, counted from 1 (docs/numbering.md)
        ("schedules", 10, b"00", "Schedule_1_Period_1_Tariff", 1),
        ("schedules", 10, b"03", "Schedule_1_Period_1_Tariff", 4),
        ("schedules", 202, b"07", "Season_1_Schedule", 8),
        ("schedules_5_8", 10 + 48 * 3 + 6 * 3, b"02", "Schedule_8_Period_4_Tariff", 3),
        ("holidays", 86, b"00", "Weekend_Schd", 1),
        ("holidays", 88, b"05", "Holiday_Schd", 6),
        ("holidays", 88, b"99", "Holiday_Schd", 100),  # beyond 8: shown, not hidden
        # codes: what they stand for
        ("v4b", 155, b"1", "Max_Demand_Period", 15),
        ("v4b", 155, b"2", "Max_Demand_Period", 30),
        ("v4b", 155, b"3", "Max_Demand_Period", 60),
        ("v4b", 155, b"7", "Max_Demand_Period", None),  # no document names code 7: None, the frame keeps it
        ("v3", 171, b"2", "Max_Demand_Period", 30),
        ("v4b", 172, b"0", "Max_Demand_Interval_Reset", "off"),
        ("v4b", 172, b"3", "Max_Demand_Interval_Reset", "daily"),
        ("v4b", 172, b"4", "Max_Demand_Interval_Reset", "hourly"),
        ("v4b", 172, b"9", "Max_Demand_Interval_Reset", None),
    ],
)
def test_numbers_and_codes_as_people_say_them(kind: str, at: int, digits: bytes, field: str, value: object) -> None:
    block = decode(_with(kind, at, digits), kind)
    assert block.fields[field] == value
    assert type(block.fields[field]) is type(value)


# ---------------------------------------------------------------------------------------------------
# Settings blocks and the merged read


def test_settings_helpers() -> None:
    months = decode(
        encode("months", {"Month_2_Tot": 12.5, "Month_2_Tariff_3": 2.25}, kwh_scale=2), "months", kwh_scale=2
    )
    assert isinstance(months, MonthsBlock)
    assert months.months()[1].total == 12.5
    assert months.months()[1].tariffs == (0.0, 0.0, 2.25, 0.0)

    page1 = decode(
        encode(
            "schedules",
            {
                "Schedule_3_Period_2_Hour": 7,
                "Schedule_3_Period_2_Min": 30,
                "Schedule_3_Period_2_Tariff": 2,
                "Season_4_Month": 9,
                "Season_4_Day": 21,
                "Season_4_Schedule": 3,
            },
        ),
        "schedules",
    )
    assert isinstance(page1, SchedulesBlock)
    assert page1.schedules()[3][1] == Period(7, 30, 2)
    assert sorted(page1.schedules()) == [1, 2, 3, 4]
    assert page1.seasons()[3] == Season(9, 21, 3)
    page2 = decode(encode("schedules_5_8", {"Schedule_8_Period_4_Tariff": 3}), "schedules_5_8")
    assert sorted(page2.schedules()) == [5, 6, 7, 8]
    assert page2.schedules()[8][3] == Period(0, 0, 3)
    assert page2.seasons() == ()

    holidays = decode(encode("holidays", {"Holiday_20_Mon": 12, "Holiday_20_Day": 25, "Weekend_Schd": 1}), "holidays")
    assert isinstance(holidays, HolidaysBlock)
    assert holidays.holidays()[19] == MonthDay(12, 25)
    assert holidays.Weekend_Schd == 1


def b_frame(address: str = "000300001184", scale: int = 1, **fields: Any) -> bytes:
    base = {
        "Model": "1024",
        "Firmware": "14",
        "Meter_Address": address,
        "RMS_Volts_Ln_1": 120.1,
        "kWh_Tariff_1": 1234.5,
        "CT_Ratio": 200,
        "Cos_Theta_Ln_1": "L095",
        "Meter_Time": "22022101233705",
    }
    return encode("v4b", base | fields, kwh_scale=scale)


def test_merge_a_wins_for_duplicates(frame_a: bytes) -> None:
    a = decode(frame_a)
    b = decode(b_frame(scale=1), kwh_scale=1)
    read = Read.of(a, b)
    assert read.RMS_Volts_Ln_1 == 123.9  # A's snapshot, not B's 120.1
    assert read.Power_Factor_Ln_1 == 100
    assert b.Power_Factor_Ln_1 == 95
    assert read.Meter_Time == "22022101233701"
    assert read.kWh_Tariff_1 == 1234.5
    assert read.CT_Ratio == 200
    assert read.kWh_Tot == 14892403.0
    assert read.Net_Calc_Watts_Tot == 2726
    assert set(read.fields) == set(a.fields) | set(b.fields)
    assert read.a.raw == frame_a
    assert read.b is b
    assert not read.v3
    assert read.address == "000300001184"


def _wire_names(kind: BlockKind) -> list[str]:
    return [spec.name for spec in sorted(LAYOUTS[kind].fields, key=lambda spec: spec.offset)]


@given(frames())
def test_fields_are_in_wire_order_then_the_calculated_ones(case: tuple[BlockKind, int, bytes]) -> None:
    kind, scale, frame = case
    calculated = [name for calc in CALCULATED.get(kind, ()) for name in calc.names]
    assert list(decode(frame, kind, kwh_scale=scale).fields) == _wire_names(kind) + calculated


@given(frames([BlockKind.V4A]), frames([BlockKind.V4B]), st.integers(0, 2))
def test_the_merged_read_is_a_then_what_only_b_carries_then_the_calculated_fields(
    a_case: tuple[BlockKind, int, bytes], b_case: tuple[BlockKind, int, bytes], b_scale: int
) -> None:
    """Order and values; each block's kWh fields at its own scale, B's read at any scale (A's or not)."""
    a = decode(a_case[2])
    same_meter: dict[str, Value] = {"Meter_Address": a["Meter_Address"]}
    b = decode(encode("v4b", same_meter, template=b_case[2]), kwh_scale=b_scale)
    read = Read.of(a, b)
    only_b = [name for name in _wire_names(BlockKind.V4B) if name not in a.fields]
    calculated = [name for calc in CALCULATED[BlockKind.V4A] for name in calc.names]
    expected = [(name, a.fields[name]) for name in _wire_names(BlockKind.V4A)]
    expected += [(name, b.fields[name]) for name in only_b] + [(name, a.fields[name]) for name in calculated]
    assert list(read.fields.items()) == expected


def test_merge_refuses_mismatched_blocks(frame_a: bytes) -> None:
    a = decode(frame_a)
    with pytest.raises(ValueError, match="different meters"):
        Read.of(a, decode(b_frame(address="000300001185")))
    with pytest.raises(ValueError, match="must be a V4 B block"):
        Read.of(a, a)
    with pytest.raises(ValueError, match="must be a V3 or V4 A block"):
        Read.of(decode(b_frame()))


def test_v3_read_is_the_block_with_tenths() -> None:
    frame = encode(
        "v3",
        {
            "Meter_Address": "000000000042",
            "kWh_Tot": 12.3,
            "Max_Demand": 4.5,
            "Cos_Theta_Ln_2": "C010",
            "Meter_Time": "23010102030405",
        },
    )
    read = Read.of(decode(frame, "v3"))
    assert read.v3
    assert read.b is None
    assert read.kWh_Tot == 12.3
    assert read.Max_Demand == 4.5
    assert frame[16:24] == b"00000123"
    assert read.Power_Factor_Ln_2 == 190
    assert "Net_Calc_Watts_Tot" not in read.fields
    assert decode(frame, "v3", kwh_scale=0).kWh_Tot == 123.0  # EKM's doc says V3 is unscaled: selectable


def test_values_are_converted_once_and_kept(frame_a: bytes) -> None:
    block = decode(frame_a)
    assert block.fields is block.fields
    read = Read.of(block, decode(b_frame()))
    assert read.fields is read.fields
    assert hash(block) == hash(decode(frame_a))
    assert block == decode(frame_a)
    assert block != decode(with_scale(frame_a, "1"))


def test_blocks_are_frozen(frame_a: bytes) -> None:
    block = decode(frame_a)
    with pytest.raises(AttributeError):
        block.raw = b""  # type: ignore[misc]
    with pytest.raises(TypeError):
        block.fields["kWh_Tot"] = 0.0  # type: ignore[index]
    with pytest.raises(AttributeError):
        _ = block.No_Such_Field
