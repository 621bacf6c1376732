"""Request encoders for every request of protocol.md §2.2 (R1–R5, W1–W16, Q1–Q5), byte-exact.

Each encoder validates its arguments and raises ``ValueError`` naming the bad one before any byte
exists. Templates are data: the frame families, the write registers and the settings pages are tables.
Arguments are numbered and measured as people do (:mod:`ekm_async.model`: schedules 1–8, tariffs 1–4,
the max-demand period in minutes); the 0-based numbers and the codes of the wire exist only here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from ._enum import TableKey
from .layouts import BlockKind
from .model import (
    CTRatio,
    LcdItem,
    MaxDemandPeriod,
    MaxDemandResetInterval,
    MonthDay,
    Period,
    PulseInput,
    PulseOutputRatio,
    Relay,
    RelayState,
    Season,
    coerce,
    format_meter_time,
    require_month_day,
    require_range,
    to_wire,
)
from .wire import ADDRESS_DIGITS, ETX, SOH, command_frame, require_address, require_password

__all__ = [
    "CLOSE",
    "LIVE_BLOCK",
    "PAGE_BLOCK",
    "SIGN_ON_END",
    "SIGN_ON_START",
    "LiveRead",
    "Register",
    "Reply",
    "SettingsPage",
    "block_asked",
    "change_address",
    "change_password",
    "ct_ratio",
    "expected_reply",
    "holidays",
    "lcd",
    "live_read",
    "max_demand_period",
    "max_demand_reset_interval",
    "max_demand_reset_now",
    "password",
    "pulse_input_ratio",
    "pulse_output_ratio",
    "redact",
    "relay",
    "schedule",
    "seasons",
    "set_time",
    "settings_read",
    "weekend_holiday_schedules",
    "write",
    "zero_resettable",
]

T = TypeVar("T", Period, Season, MonthDay)

SIGN_ON_START, SIGN_ON_END = b"/?", b"!\r\n"
"""A live-data read (R1–R3): ``/?``, the address, the read type, ``! CR LF``; no CRC."""
CLOSE = bytes((SOH,)) + b"B0" + bytes((ETX,)) + b"\x75"
"""R4: end the session; no CRC, no reply (0x75 is a constant, protocol.md §2.1)."""


class Reply(TableKey):
    """What a meter sends back to a request."""

    LIVE = "live"
    """A 255-byte live-data block (V3, V4 A, V4 B) ending in ``21 0D 0A 03``."""
    BLOCK = "block"
    """A 255-byte settings block."""
    ACK = "ack"
    """A lone ACK (06) when accepted."""
    NONE = "none"
    """Nothing at all."""


# Frame family (first two bytes of a request) → the reply it gets (protocol.md §2.1, §4.8).
_FAMILY_REPLY: dict[bytes, Reply] = {
    SIGN_ON_START: Reply.LIVE,
    bytes((SOH,)) + b"R": Reply.BLOCK,
    bytes((SOH,)) + b"P": Reply.ACK,
    bytes((SOH,)) + b"W": Reply.ACK,
    bytes((SOH,)) + b"B": Reply.NONE,
}


def expected_reply(request: bytes) -> Reply | None:
    """The reply ``request`` asks for, or None for bytes that are no known request."""
    return _FAMILY_REPLY.get(bytes(request[:2]))


_SECRET = re.compile(rb"(\x01P1\x02\(|\x01W1\x020020\()(\d{8})(\)\x03)")
"""A password request (R5) or a change of password (W15): the 8 digits are the secret."""


def redact(data: bytes) -> bytes:
    """``data`` with every password it holds (R5, W15) replaced by ``*``: for logs and captures."""
    return _SECRET.sub(lambda m: m[1] + b"********" + m[3], bytes(data))


class LiveRead(TableKey):
    """Live-data reads (R1–R3): the value is the type suffix sent after the address."""

    V3 = b""
    V4A = b"00"
    V4B = b"01"


class SettingsPage(TableKey):
    """Settings reads (Q1–Q5): the value is the register id sent."""

    MONTHS_FORWARD = "0011"
    MONTHS_REVERSE = "0012"
    SCHEDULES_1_4 = "0070"
    SCHEDULES_5_8 = "0071"
    HOLIDAYS = "00B0"


LIVE_BLOCK: dict[LiveRead, BlockKind] = {
    LiveRead.V3: BlockKind.V3,
    LiveRead.V4A: BlockKind.V4A,
    LiveRead.V4B: BlockKind.V4B,
}
"""The block each live-data read asks for."""
PAGE_BLOCK: dict[SettingsPage, BlockKind] = {
    SettingsPage.MONTHS_FORWARD: BlockKind.MONTHS,
    SettingsPage.MONTHS_REVERSE: BlockKind.MONTHS,
    SettingsPage.SCHEDULES_1_4: BlockKind.SCHEDULES,
    SettingsPage.SCHEDULES_5_8: BlockKind.SCHEDULES_5_8,
    SettingsPage.HOLIDAYS: BlockKind.HOLIDAYS,
}
"""The block each settings read asks for."""


def block_asked(request: bytes) -> BlockKind | None:
    """The kind of block ``request`` asks for (a live-data or a settings read), else None."""
    request = bytes(request)
    if request.startswith(SIGN_ON_START) and request.endswith(SIGN_ON_END):
        suffix = request[len(SIGN_ON_START) + ADDRESS_DIGITS : -len(SIGN_ON_END)]
        return next((kind for read, kind in LIVE_BLOCK.items() if read.value == suffix), None)
    return next((kind for page, kind in PAGE_BLOCK.items() if request == settings_read(page)), None)


class Register(TableKey):
    """Write registers (W1–W16); a 3-character value is completed by an index character."""

    ADDRESS = "0010"
    PASSWORD = "0020"
    MAX_DEMAND_RESET_NOW = "0040"
    MAX_DEMAND_PERIOD = "0050"
    TIME = "0060"
    SCHEDULE = "007"
    SEASONS = "0080"
    RELAY = "008"
    PULSE_INPUT_RATIO = "00A"
    HOLIDAYS = "00B0"
    WEEKEND_HOLIDAY_SCHEDULES = "00C0"
    CT_RATIO = "00D0"
    LCD = "00D2"
    ZERO_RESETTABLE = "00D3"
    PULSE_OUTPUT_RATIO = "00D4"
    MAX_DEMAND_RESET_INTERVAL = "00D5"


@dataclass(frozen=True, slots=True)
class _Shape:
    """Sizes of the table-driven data areas."""

    lcd_slots: int = 40
    schedule_periods: int = 4
    schedule_pad: int = 24
    seasons: int = 4
    seasons_pad: int = 24
    holidays: int = 20
    schedules: int = 8
    tariffs: int = 4


SHAPE = _Shape()


def live_read(address: str, read: LiveRead) -> bytes:
    """R1–R3: connect to ``address`` (V3 / V4 A) or read the V4 B block; no CRC."""
    return SIGN_ON_START + require_address(address).encode() + read.value + SIGN_ON_END


def password(value: str) -> bytes:
    """R5: the password that must be acknowledged before a write."""
    return command_frame(b"P1", b"(" + require_password(value).encode() + b")")


def settings_read(page: SettingsPage) -> bytes:
    """Q1–Q5, in the ``… 28 29 03`` form ekmmeters sends (protocol.md §2.4)."""
    return command_frame(b"R1", page.value.encode() + b"()")


def write(register: Register, data: str, index: int | None = None) -> bytes:
    """A write frame; ``index`` completes the 3-character registers (relay, pulse line, schedule)."""
    reg = register.value
    if (len(reg) == 3) != (index is not None):
        raise ValueError(f"register {register.name} {'needs' if len(reg) == 3 else 'takes no'} index")
    if index is not None:
        reg += str(require_range(index, 0, 9, "index"))
    return command_frame(b"W1", reg.encode() + b"(" + data.encode("ascii") + b")")


def _num(value: int, width: int) -> str:
    return str(value).zfill(width)


def relay(relay: Relay | int | str, state: RelayState | int | str, seconds: int = 0) -> bytes:
    """W1: set ``relay`` (1–2) open or closed for ``seconds`` (0–9999, 0 = hold)."""
    r = coerce(Relay, relay, "relay")
    s = coerce(RelayState, state, "state")
    t = require_range(seconds, 0, 9999, "seconds")
    return write(Register.RELAY, f"{s.value}{_num(t, 4)}", index=r.value)


def pulse_input_ratio(line: PulseInput | int | str, ratio: int) -> bytes:
    """W2: pulse input ratio (1–9999) of ``line`` 1–3 (sent 0-based, as ekmmeters does)."""
    li = coerce(PulseInput, line, "line")
    n = require_range(ratio, 1, 9999, "ratio")
    return write(Register.PULSE_INPUT_RATIO, _num(n, 4), index=li.value - 1)


def pulse_output_ratio(ratio: PulseOutputRatio | int | str) -> bytes:
    """W3: pulse output ratio, one of :class:`PulseOutputRatio`."""
    return write(Register.PULSE_OUTPUT_RATIO, _num(coerce(PulseOutputRatio, ratio, "ratio").value, 4))


def zero_resettable() -> bytes:
    """W4: zero ``Resettable_kWh_Tot`` and ``Resettable_Rev_kWh_Tot``."""
    return write(Register.ZERO_RESETTABLE, "")


def max_demand_reset_interval(interval: MaxDemandResetInterval | int | str) -> bytes:
    """W5: automatic max-demand reset: off, monthly, weekly, daily, hourly."""
    i = coerce(MaxDemandResetInterval, interval, "interval")
    return write(Register.MAX_DEMAND_RESET_INTERVAL, str(i.value))


def max_demand_period(period: MaxDemandPeriod | int | str) -> bytes:
    """W6: max-demand period: 15, 30 or 60 minutes (sent as its code 1, 2, 3)."""
    p = coerce(MaxDemandPeriod, period, "period")
    return write(Register.MAX_DEMAND_PERIOD, str(p.code))


def max_demand_reset_now() -> bytes:
    """W7: reset max demand now."""
    return write(Register.MAX_DEMAND_RESET_NOW, "000000")


def lcd(items: Sequence[LcdItem | int | str]) -> bytes:
    """W8: 1–40 LCD items (members, codes or field names), shown in order."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not 1 <= len(items) <= SHAPE.lcd_slots:
        raise ValueError(f"items must be a sequence of 1..{SHAPE.lcd_slots} LCD items; got {items!r}")
    codes = [coerce(LcdItem, item, f"items[{n}]").value for n, item in enumerate(items)]
    codes += [0] * (SHAPE.lcd_slots - len(codes))
    return write(Register.LCD, "".join(_num(c, 2) for c in codes))


def set_time(when: datetime) -> bytes:
    """W9: set the meter clock to the wall-clock fields of ``when`` (years 2000–2099).

    The weekday is sent as ekmmeters sends it: ISO, Monday = 01 … Sunday = 07 (protocol.md §6.6).
    """
    if not isinstance(when, datetime):
        raise ValueError(f"when must be a datetime; got {when!r}")
    require_range(when.year, 2000, 2099, "when.year")
    return write(Register.TIME, format_meter_time(when))


def ct_ratio(ratio: CTRatio | int | str) -> bytes:
    """W10: current-transformer ratio, one of :class:`CTRatio`."""
    return write(Register.CT_RATIO, _num(coerce(CTRatio, ratio, "ratio").value, 4))


def _as(cls: type[T], item: object, size: int, name: str, shape: str) -> T:
    """``item`` as a ``cls`` value: itself, or built from a tuple of ``size`` parts."""
    if isinstance(item, cls):
        return item
    if isinstance(item, (str, bytes)) or not (isinstance(item, Sequence) and len(item) == size):
        raise ValueError(f"{name} must be a {cls.__name__} or {shape}; got {item!r}")
    return cls(*item)


def _period(item: object, name: str) -> str:
    p = _as(Period, item, 3, name, "(hour, minute, tariff)")
    h = require_range(p.hour, 0, 23, f"{name} hour")
    m = require_range(p.minute, 0, 59, f"{name} minute")
    t = require_range(p.tariff, 1, SHAPE.tariffs, f"{name} tariff")
    return _num(h, 2) + _num(m, 2) + _num(to_wire(t), 2)


def _up_to(items: object, most: int, name: str) -> list[object]:
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise ValueError(f"{name} must be a sequence of at most {most}; got {items!r}")
    seq = list(items)
    if len(seq) > most:
        raise ValueError(f"{name} must hold at most {most}; got {len(seq)}")
    return seq


def schedule(schedule: int, periods: Sequence[Period | tuple[int, int, int]]) -> bytes:
    """W11: ``schedule`` 1–8 with up to 4 periods (from hour:minute, tariff 1–4); unused periods are zeros."""
    n = to_wire(require_range(schedule, 1, SHAPE.schedules, "schedule"))
    seq = _up_to(periods, SHAPE.schedule_periods, "periods")
    data = "".join(_period(p, f"periods[{i}]") for i, p in enumerate(seq))
    data = data.ljust(6 * SHAPE.schedule_periods + SHAPE.schedule_pad, "0")
    return write(Register.SCHEDULE, data, index=n)


def seasons(seasons: Sequence[Season | tuple[int, int, int]]) -> bytes:
    """W12: up to 4 seasons (start month, start day, schedule 1–8); unused seasons are zeros."""
    parts = []
    for i, item in enumerate(_up_to(seasons, SHAPE.seasons, "seasons")):
        s = _as(Season, item, 3, f"seasons[{i}]", "(month, day, schedule)")
        m, d = require_month_day(s.month, s.day, f"seasons[{i}]")
        sch = require_range(s.schedule, 1, SHAPE.schedules, f"seasons[{i}] schedule")
        parts.append(_num(m, 2) + _num(d, 2) + _num(to_wire(sch), 2))
    return write(Register.SEASONS, "".join(parts).ljust(6 * SHAPE.seasons + SHAPE.seasons_pad, "0"))


def holidays(dates: Sequence[MonthDay | tuple[int, int]]) -> bytes:
    """W13: up to 20 holidays (month, day); unused slots are ``0000``."""
    parts = []
    for i, item in enumerate(_up_to(dates, SHAPE.holidays, "dates")):
        h = _as(MonthDay, item, 2, f"dates[{i}]", "(month, day)")
        m, d = require_month_day(h.month, h.day, f"dates[{i}]")
        parts.append(_num(m, 2) + _num(d, 2))
    return write(Register.HOLIDAYS, "".join(parts).ljust(4 * SHAPE.holidays, "0"))


def weekend_holiday_schedules(weekend: int, holiday: int) -> bytes:
    """W14: the schedules (1–8) used on weekends and on holidays."""
    w = require_range(weekend, 1, SHAPE.schedules, "weekend")
    h = require_range(holiday, 1, SHAPE.schedules, "holiday")
    return write(Register.WEEKEND_HOLIDAY_SCHEDULES, _num(to_wire(w), 2) + _num(to_wire(h), 2))


def change_password(new_password: str) -> bytes:
    """W15: set a new 8-digit password."""
    return write(Register.PASSWORD, require_password(new_password, "new_password"))


def change_address(new_address: str) -> bytes:
    """W16: give the meter a new 12-digit address (from EKM's doc; ekmmeters lacks it)."""
    return write(Register.ADDRESS, require_address(new_address, "new_address"))
