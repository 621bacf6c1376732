"""Request encoders: byte-exact against protocol.md §2.2/§2.3; bad arguments raise before any byte."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from ekm_async import commands as c
from ekm_async.commands import LiveRead, Reply, SettingsPage
from ekm_async.crc import crc16
from ekm_async.model import (
    CTRatio,
    LcdItem,
    MaxDemandPeriod,
    MaxDemandResetInterval,
    MonthDay,
    Period,
    Relay,
    RelayState,
    Season,
)

ADDRESS = "000300001184"


def ascii_frame(cmd: str, body: str, crc_hex: str) -> bytes:
    """protocol.md's ASCII notation: SOH cmd STX body ETX + CRC."""
    return b"\x01" + cmd.encode() + b"\x02" + body.encode() + b"\x03" + bytes.fromhex(crc_hex)


# protocol.md §2.3, every row: (call, frame sent).
SECTION_2_3: list[tuple[str, Callable[[], bytes], bytes]] = [
    (
        "password 00000000",
        lambda: c.password("00000000"),
        bytes.fromhex("01 50 31 02 28 30 30 30 30 30 30 30 30 29 03 32 44"),
    ),
    (
        "setRelay(5, Relay1, RelayClose)",
        lambda: c.relay(1, "close", 5),
        bytes.fromhex("01 57 31 02 30 30 38 31 28 31 30 30 30 35 29 03 21 60"),
    ),
    (
        "setRelay(0, Relay2, RelayOpen)",
        lambda: c.relay(2, RelayState.OPEN, 0),
        bytes.fromhex("01 57 31 02 30 30 38 32 28 30 30 30 30 30 29 03 35 51"),
    ),
    (
        "setPulseInputRatio(In1, 55)",
        lambda: c.pulse_input_ratio(1, 55),
        bytes.fromhex("01 57 31 02 30 30 41 30 28 30 30 35 35 29 03 2A 3D"),
    ),
    (
        "setPulseInputRatio(In3, 1234)",
        lambda: c.pulse_input_ratio(3, 1234),
        bytes.fromhex("01 57 31 02 30 30 41 32 28 31 32 33 34 29 03 02 3D"),
    ),
    (
        "setPulseOutputRatio(5)",
        lambda: c.pulse_output_ratio(5),
        bytes.fromhex("01 57 31 02 30 30 44 34 28 30 30 30 35 29 03 14 52"),
    ),
    (
        "setPulseOutputRatio(1600)",
        lambda: c.pulse_output_ratio(1600),
        bytes.fromhex("01 57 31 02 30 30 44 34 28 31 36 30 30 29 03 0D 02"),
    ),
    ("setZeroResettableKWH()", c.zero_resettable, bytes.fromhex("01 57 31 02 30 30 44 33 28 29 03 0F 75")),
    (
        "setMaxDemandResetInterval(Daily)",
        lambda: c.max_demand_reset_interval("daily"),
        bytes.fromhex("01 57 31 02 30 30 44 35 28 33 29 03 43 22"),
    ),
    (
        "setMaxDemandPeriod(30 min)",
        lambda: c.max_demand_period(30),
        bytes.fromhex("01 57 31 02 30 30 35 30 28 32 29 03 54 03"),
    ),
    (
        "setMaxDemandResetNow()",
        c.max_demand_reset_now,
        bytes.fromhex("01 57 31 02 30 30 34 30 28 30 30 30 30 30 30 29 03 01 2B"),
    ),
    (
        "setLCDCmd([3, 28])",
        lambda: c.lcd([3, LcdItem.Line_Freq]),
        ascii_frame("W1", "00D2(0328" + "0" * 76 + ")", "58 0A"),
    ),
    (
        "setTime(2023, 11, 22, 15, 39, 2)",
        lambda: c.set_time(datetime(2023, 11, 22, 15, 39, 2)),
        bytes.fromhex("01 57 31 02 30 30 36 30 28 32 33 31 31 32 32 30 33 31 35 33 39 30 32 29 03 5B 51"),
    ),
    ("setCTRatio(800)", lambda: c.ct_ratio(800), bytes.fromhex("01 57 31 02 30 30 44 30 28 30 38 30 30 29 03 64 61")),
    (
        # ekmmeters' schedule 0 and tariffs 1, 2, 3, 0 as sent: schedule 1, tariffs 2, 3, 4, 1 (docs/numbering.md)
        "setSchedule(S=0, 01:11 t1, 02:21 t2, 03:31 t3, 04:41 t0)",
        lambda: c.schedule(1, [Period(1, 11, 2), (2, 21, 3), (3, 31, 4), (4, 41, 1)]),
        ascii_frame("W1", "0070(011101022102033103044100" + "0" * 24 + ")", "0B 4F"),
    ),
    (
        # schedules 01–04 as sent are schedules 2–5 counted from 1 (docs/numbering.md)
        "setSeasonSchedules(1/1 s1, 3/21 s2, 6/20 s3, 9/21 s4)",
        lambda: c.seasons([Season(1, 1, 2), (3, 21, 3), (6, 20, 4), (9, 21, 5)]),
        ascii_frame("W1", "0080(010101032102062003092104" + "0" * 24 + ")", "08 57"),
    ),
    (
        "setHolidayDates(1/1, 12/25)",
        lambda: c.holidays([MonthDay(1, 1), (12, 25)]),
        ascii_frame("W1", "00B0(01011225" + "0" * 72 + ")", "55 32"),
    ),
    (
        "setWeekendHolidaySchedules(1, 2)",  # 01 and 02 as sent: schedules 2 and 3
        lambda: c.weekend_holiday_schedules(2, 3),
        bytes.fromhex("01 57 31 02 30 30 43 30 28 30 31 30 32 29 03 3F 10"),
    ),
    (
        "setMeterPassword(12345678)",
        lambda: c.change_password("12345678"),
        bytes.fromhex("01 57 31 02 30 30 32 30 28 31 32 33 34 35 36 37 38 29 03 25 18"),
    ),
    (
        "change address to 000300001185",
        lambda: c.change_address("000300001185"),
        bytes.fromhex("01 57 31 02 30 30 31 30 28 30 30 30 33 30 30 30 30 31 31 38 35 29 03 40 3D"),
    ),
]


@pytest.mark.parametrize(("call", "make", "expected"), SECTION_2_3, ids=[row[0] for row in SECTION_2_3])
def test_section_2_3_byte_exact(call: str, make: Callable[[], bytes], expected: bytes) -> None:
    assert make() == expected


# protocol.md §2.2 templates without CRC, and the settings reads with their CRCs.
def test_live_reads_r1_r2_r3() -> None:
    addr = ADDRESS.encode().hex(" ")
    assert c.live_read(ADDRESS, LiveRead.V3) == bytes.fromhex(f"2F 3F {addr} 21 0D 0A")
    assert c.live_read(ADDRESS, LiveRead.V4A) == bytes.fromhex(f"2F 3F {addr} 30 30 21 0D 0A")
    assert c.live_read(ADDRESS, LiveRead.V4B) == bytes.fromhex(f"2F 3F {addr} 30 31 21 0D 0A")


def test_captured_request_is_r2(captured: dict[str, str]) -> None:
    assert c.live_read(ADDRESS, LiveRead.V4A) == bytes.fromhex(captured["request"])


def test_close_r4() -> None:
    assert bytes.fromhex("01 42 30 03 75") == c.CLOSE


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (SettingsPage.MONTHS_FORWARD, "01 52 31 02 30 30 31 31 28 29 03 13 16"),
        (SettingsPage.MONTHS_REVERSE, "01 52 31 02 30 30 31 32 28 29 03 13 52"),
        (SettingsPage.SCHEDULES_1_4, "01 52 31 02 30 30 37 30 28 29 03 1A 6A"),
        (SettingsPage.SCHEDULES_5_8, "01 52 31 02 30 30 37 31 28 29 03 1B 16"),
        (SettingsPage.HOLIDAYS, "01 52 31 02 30 30 42 30 28 29 03 17 21"),
    ],
)
def test_settings_reads_q1_to_q5(page: SettingsPage, expected: str) -> None:
    assert c.settings_read(page) == bytes.fromhex(expected)


@pytest.mark.parametrize(
    ("make", "length"),
    [
        (lambda: c.relay(1, "open", 0), 18),
        (lambda: c.pulse_input_ratio(2, 1), 17),
        (lambda: c.pulse_output_ratio(1), 17),
        (c.zero_resettable, 13),
        (lambda: c.max_demand_reset_interval("off"), 14),
        (lambda: c.max_demand_period(15), 14),
        (c.max_demand_reset_now, 19),
        (lambda: c.lcd(list(range(1, 41))), 93),
        (lambda: c.set_time(datetime(2030, 1, 1)), 27),
        (lambda: c.ct_ratio(100), 17),
        (lambda: c.schedule(8, []), 61),
        (lambda: c.seasons([]), 61),
        (lambda: c.holidays([(2, 29)] * 20), 93),
        (lambda: c.weekend_holiday_schedules(1, 8), 17),
        (lambda: c.change_password("00000000"), 21),
        (lambda: c.change_address(ADDRESS), 25),
        (lambda: c.password("99999999"), 17),
    ],
)
def test_lengths_of_section_2_2(make: Callable[[], bytes], length: int) -> None:
    frame = make()
    assert len(frame) == length
    assert frame[0] == 0x01
    assert frame[-3] == 0x03
    assert frame[-2:] == crc16(frame[1:-2])


def test_set_time_sends_iso_weekday() -> None:
    monday = datetime(2022, 2, 21, 23, 37, 1)  # the captured meter's time, a Monday
    for days in range(7):
        when = monday + timedelta(days=days)
        data = c.set_time(when)[9:23].decode()
        assert data[6:8] == f"{days + 1:02d}"
        assert data == when.strftime("%y%m%d") + f"{days + 1:02d}" + when.strftime("%H%M%S")


def test_enums_take_members_and_what_people_say() -> None:
    assert c.ct_ratio(CTRatio.AMPS_800) == c.ct_ratio(800) == c.ct_ratio("800")
    assert c.max_demand_period(MaxDemandPeriod.MINUTES_30) == c.max_demand_period(30) == c.max_demand_period("30")
    assert c.max_demand_period(30)[9:10] == b"2"  # the wire's code, and only there
    assert c.max_demand_reset_interval("Daily") == c.max_demand_reset_interval(MaxDemandResetInterval.DAILY)
    assert c.relay(1, "CLOSE", 5) == c.relay(Relay.RELAY_1, RelayState.CLOSE, 5)
    assert c.lcd(["kwh_tot", "Line_Freq"]) == c.lcd([1, 28])  # EKM's list numbers the LCD items


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: c.max_demand_period(2), "period must be 15, 30 or 60 minutes; got 2"),  # a code, not minutes
        (lambda: c.max_demand_period("MINUTES_30"), "period must be 15, 30 or 60 minutes; got 'MINUTES_30'"),
        (lambda: c.max_demand_reset_interval(3), "interval must be off, monthly, weekly, daily or hourly; got 3"),
        (lambda: c.relay(1, 1, 5), "state must be open or close; got 1"),
        (lambda: c.relay("relay_1", "close", 5), "relay must be 1 or 2; got 'relay_1'"),
        (
            lambda: c.ct_ratio("amps_800"),
            "ratio must be 100, 200, 400, 600, 800, 1000, 1200, 1500, 2000, 3000, 4000 or 5000; got 'amps_800'",
        ),
    ],
)
def test_codes_and_member_names_are_refused_in_the_users_words(make: Callable[[], bytes], message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        make()


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: c.live_read("30000118", LiveRead.V4A), "address"),
        (lambda: c.live_read("0003000011845", LiveRead.V4A), "address"),
        (lambda: c.live_read("00030000118x", LiveRead.V3), "address"),
        (lambda: c.password("0000000"), "password"),
        (lambda: c.password("abcdefgh"), "password"),
        (lambda: c.relay(3, "close", 5), "relay"),
        (lambda: c.relay(0, "close", 5), "relay"),
        (lambda: c.relay(1, "ajar", 5), "state"),
        (lambda: c.relay(1, "open", 10000), "seconds"),
        (lambda: c.relay(1, "open", -1), "seconds"),
        (lambda: c.relay(1, "open", 1.5), "seconds"),  # type: ignore[arg-type]
        (lambda: c.pulse_input_ratio(0, 1), "line"),
        (lambda: c.pulse_input_ratio(4, 1), "line"),
        (lambda: c.pulse_input_ratio(1, 0), "ratio"),
        (lambda: c.pulse_input_ratio(1, 10000), "ratio"),
        (lambda: c.pulse_output_ratio(3), "ratio"),
        (lambda: c.pulse_output_ratio(3200), "ratio"),
        (lambda: c.ct_ratio(300), "ratio"),
        (lambda: c.ct_ratio(True), "ratio"),
        (lambda: c.max_demand_period(45), "period"),
        (lambda: c.max_demand_period(0), "period"),
        (lambda: c.max_demand_reset_interval(5), "interval"),
        (lambda: c.max_demand_reset_interval("yearly"), "interval"),
        (lambda: c.lcd([]), "items"),
        (lambda: c.lcd([1] * 41), "items"),
        (lambda: c.lcd([46]), "items[0]"),
        (lambda: c.lcd([1, 0]), "items[1]"),
        (lambda: c.lcd("12"), "items"),  # type: ignore[arg-type]
        (lambda: c.set_time(datetime(1999, 12, 31)), "when.year"),
        (lambda: c.set_time(datetime(2100, 1, 1)), "when.year"),
        (lambda: c.set_time("2023-01-01"), "when"),  # type: ignore[arg-type]
        (lambda: c.schedule(9, []), "schedule"),
        (lambda: c.schedule(0, []), "schedule"),  # schedules are 1–8
        (lambda: c.schedule(1, [(24, 0, 1)]), "periods[0] hour"),
        (lambda: c.schedule(1, [(0, 0, 1), (0, 60, 1)]), "periods[1] minute"),
        (lambda: c.schedule(1, [(0, 0, 5)]), "periods[0] tariff"),
        (lambda: c.schedule(1, [(0, 0, 0)]), "periods[0] tariff"),  # tariffs are 1–4
        (lambda: c.schedule(1, [(0, 0, 1)] * 5), "periods"),
        (lambda: c.schedule(1, [(0, 0)]), "periods[0]"),  # type: ignore[list-item]
        (lambda: c.seasons([(13, 1, 1)]), "seasons[0] month"),
        (lambda: c.seasons([(2, 30, 1)]), "seasons[0] day"),
        (lambda: c.seasons([(4, 31, 1)]), "seasons[0] day"),
        (lambda: c.seasons([(1, 1, 9)]), "seasons[0] schedule"),
        (lambda: c.seasons([(1, 1, 0)]), "seasons[0] schedule"),
        (lambda: c.seasons([(1, 1, 1)] * 5), "seasons"),
        (lambda: c.holidays([(1, 1), (0, 1)]), "dates[1] month"),
        (lambda: c.holidays([(6, 31)]), "dates[0] day"),
        (lambda: c.holidays([(1, 1)] * 21), "dates"),
        (lambda: c.weekend_holiday_schedules(9, 1), "weekend"),
        (lambda: c.weekend_holiday_schedules(0, 1), "weekend"),
        (lambda: c.weekend_holiday_schedules(1, 0), "holiday"),
        (lambda: c.change_password("1234"), "new_password"),
        (lambda: c.change_address("1185"), "new_address"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(make: Callable[[], bytes], argument: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(argument) + " "):
        make()


def test_expected_reply_table() -> None:
    assert c.expected_reply(c.live_read(ADDRESS, LiveRead.V3)) is Reply.LIVE
    assert c.expected_reply(c.settings_read(SettingsPage.HOLIDAYS)) is Reply.BLOCK
    assert c.expected_reply(c.password("00000000")) is Reply.ACK
    assert c.expected_reply(c.ct_ratio(100)) is Reply.ACK
    assert c.expected_reply(c.CLOSE) is Reply.NONE
    assert c.expected_reply(b"hello") is None
