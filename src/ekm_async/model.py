"""Domain values shared by requests and blocks: enumerations and small value types.

Every enumeration accepts, through :func:`coerce`, a member, its plain value, or its name in any case
(``"close"``, ``1`` and ``RelayState.CLOSE`` are the same relay state).
"""

from __future__ import annotations

import calendar
import enum
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

__all__ = [
    "CTRatio",
    "DirectionFlag",
    "LcdItem",
    "MaxDemandPeriod",
    "MaxDemandResetInterval",
    "MonthDay",
    "Period",
    "PulseInput",
    "PulseOutputRatio",
    "Relay",
    "RelayState",
    "Season",
    "StateOut",
    "coerce",
    "format_meter_time",
    "parse_meter_time",
    "require_month_day",
    "require_range",
]

E = TypeVar("E", bound=enum.IntEnum)


class CTRatio(enum.IntEnum):
    """Current-transformer ratios a meter accepts (W10; 1200 per ekmmeters, not in EKM's list)."""

    AMPS_100 = 100
    AMPS_200 = 200
    AMPS_400 = 400
    AMPS_600 = 600
    AMPS_800 = 800
    AMPS_1000 = 1000
    AMPS_1200 = 1200
    AMPS_1500 = 1500
    AMPS_2000 = 2000
    AMPS_3000 = 3000
    AMPS_4000 = 4000
    AMPS_5000 = 5000


class PulseOutputRatio(enum.IntEnum):
    """Pulse output ratios (W3). 800 and 1600 come from ekmmeters, not EKM's list (UNVERIFIED)."""

    RATIO_1 = 1
    RATIO_2 = 2
    RATIO_4 = 4
    RATIO_5 = 5
    RATIO_8 = 8
    RATIO_10 = 10
    RATIO_16 = 16
    RATIO_20 = 20
    RATIO_25 = 25
    RATIO_40 = 40
    RATIO_50 = 50
    RATIO_80 = 80
    RATIO_100 = 100
    RATIO_200 = 200
    RATIO_400 = 400
    RATIO_800 = 800
    RATIO_1600 = 1600


class MaxDemandPeriod(enum.IntEnum):
    """Max-demand integration period; the value is the wire code (also ``Max_Demand_Period``).

    Minutes are accepted as well: ``MaxDemandPeriod(30) is MaxDemandPeriod.MINUTES_30``.
    """

    MINUTES_15 = 1
    MINUTES_30 = 2
    MINUTES_60 = 3

    @property
    def minutes(self) -> int:
        return {1: 15, 2: 30, 3: 60}[self.value]

    @classmethod
    def _missing_(cls, value: object) -> MaxDemandPeriod | None:
        by_minutes = {15: cls.MINUTES_15, 30: cls.MINUTES_30, 60: cls.MINUTES_60}
        return by_minutes.get(value) if isinstance(value, int) else None


class MaxDemandResetInterval(enum.IntEnum):
    """Automatic max-demand reset (W5; read back as ``Max_Demand_Interval_Reset`` in the V4 B block)."""

    OFF = 0
    MONTHLY = 1
    WEEKLY = 2
    DAILY = 3
    HOURLY = 4


class Relay(enum.IntEnum):
    """The two relays of a V4 meter."""

    RELAY_1 = 1
    RELAY_2 = 2


class RelayState(enum.IntEnum):
    """Relay command state (W1): 0 = open, 1 = close, as EKM's table and ekmmeters send them."""

    OPEN = 0
    CLOSE = 1


class PulseInput(enum.IntEnum):
    """Pulse input lines 1–3 (sent as ``30``–``32``, as ekmmeters does; protocol.md §2.4)."""

    LINE_1 = 1
    LINE_2 = 2
    LINE_3 = 3


class StateOut(enum.IntEnum):
    """``State_Out`` of the V4 A block: relay 1 / relay 2 on or off."""

    OFF_OFF = 1
    OFF_ON = 2
    ON_OFF = 3
    ON_ON = 4


class DirectionFlag(enum.IntEnum):
    """``State_Watts_Dir``: the sign of lines 1, 2 and 3 (F forward, R reverse)."""

    FFF = 1
    FFR = 2
    FRF = 3
    RFF = 4
    FRR = 5
    RFR = 6
    RRF = 7
    RRR = 8


class LcdItem(enum.IntEnum):
    """Items a V4 meter can show on its LCD (W8, protocol.md §2.5); member names are field names.

    Codes 43–45, 47 and 51 exist only in ekmmeters HEAD and are UNVERIFIED on hardware.
    """

    kWh_Tot = 1
    Rev_kWh_Tot = 2
    RMS_Volts_Ln_1 = 3
    RMS_Volts_Ln_2 = 4
    RMS_Volts_Ln_3 = 5
    Amps_Ln_1 = 6
    Amps_Ln_2 = 7
    Amps_Ln_3 = 8
    RMS_Watts_Ln_1 = 9
    RMS_Watts_Ln_2 = 10
    RMS_Watts_Ln_3 = 11
    RMS_Watts_Tot = 12
    Power_Factor_Ln_1 = 13
    Power_Factor_Ln_2 = 14
    Power_Factor_Ln_3 = 15
    kWh_Tariff_1 = 16
    kWh_Tariff_2 = 17
    kWh_Tariff_3 = 18
    kWh_Tariff_4 = 19
    Rev_kWh_Tariff_1 = 20
    Rev_kWh_Tariff_2 = 21
    Rev_kWh_Tariff_3 = 22
    Rev_kWh_Tariff_4 = 23
    Reactive_Pwr_Ln_1 = 24
    Reactive_Pwr_Ln_2 = 25
    Reactive_Pwr_Ln_3 = 26
    Reactive_Pwr_Tot = 27
    Line_Freq = 28
    Pulse_Cnt_1 = 29
    Pulse_Cnt_2 = 30
    Pulse_Cnt_3 = 31
    kWh_Ln_1 = 32
    Rev_kWh_Ln_1 = 33
    kWh_Ln_2 = 34
    Rev_kWh_Ln_2 = 35
    kWh_Ln_3 = 36
    Rev_kWh_Ln_3 = 37
    Reactive_Energy_Tot = 38
    Resettable_kWh_Tot = 39
    Resettable_Rev_kWh_Tot = 40
    State_Inputs = 41
    Max_Demand = 42
    Raw_Pulse_1 = 43
    Raw_Pulse_2 = 44
    Raw_Pulse_3 = 45
    CT_Ratio = 47
    Calc_Fwd_kWh = 51


def coerce(cls: type[E], value: object, name: str) -> E:
    """``value`` as a member of ``cls``: a member, its plain value, or its name (any case).

    Raises ``ValueError`` naming the argument ``name`` and listing what is allowed.
    """
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        text = value.strip()
        for member in cls:
            if member.name.lower() == text.lower():
                return member
        if text.isdecimal():
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return cls(value)
        except ValueError:
            pass
    allowed = ", ".join(f"{m.value} ({m.name})" for m in cls)
    raise ValueError(f"{name} must be one of {allowed}; got {value!r}")


def require_range(value: object, low: int, high: int, name: str) -> int:
    """``value`` as an int within ``low``..``high``, else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer {low}..{high}; got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be {low}..{high}; got {value}")
    return value


def require_month_day(month: object, day: object, name: str) -> tuple[int, int]:
    """A month and day that exist in some year (29 February allowed), else ``ValueError``."""
    m = require_range(month, 1, 12, f"{name} month")
    d = require_range(day, 1, calendar.monthrange(2000, m)[1], f"{name} day")
    return m, d


@dataclass(frozen=True, slots=True)
class Period:
    """One period of a schedule: from ``hour``:``minute`` on, ``tariff`` 0–3 applies."""

    hour: int
    minute: int
    tariff: int


@dataclass(frozen=True, slots=True)
class Season:
    """A season starting on ``month``/``day`` that uses schedule ``schedule`` (0–7)."""

    month: int
    day: int
    schedule: int


@dataclass(frozen=True, slots=True)
class MonthDay:
    """A yearly date (holidays)."""

    month: int
    day: int


def format_meter_time(when: datetime) -> str:
    """A datetime as ``Meter_Time`` and W9 send it: YYMMDDWWhhmmss, ISO weekday (Monday = 01)."""
    return when.strftime("%y%m%d") + f"{when.isoweekday():02d}" + when.strftime("%H%M%S")


def parse_meter_time(text: str) -> datetime | None:
    """``Meter_Time`` (YYMMDDWWhhmmss) as a datetime, or None when the meter's clock is unreadable.

    A meter with a corrupt clock sends ``?`` characters; such a time, or any impossible date, gives
    None (the raw text stays in the field). The weekday digits are not checked.
    """
    if len(text) != 14 or not text.isdigit():
        return None
    yy, mo, dd, _wd, hh, mi, ss = (int(text[i : i + 2]) for i in range(0, 14, 2))
    try:
        return datetime(2000 + yy, mo, dd, hh, mi, ss)
    except ValueError:
        return None
