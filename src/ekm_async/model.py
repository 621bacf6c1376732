"""Domain values shared by requests and blocks: enumerations and small value types.

Numbering and units — the rule everything a person sees follows (docs/numbering.md):

* Schedules are numbered 1–8 and tariffs 1–4, as the meter's display and the field names
  (``Schedule_1_…``, ``kWh_Tariff_1``) number them; seasons 1–4 and holidays 1–20 likewise. The wire
  carries schedule and tariff numbers 0-based: :func:`to_wire` and :func:`from_wire` are the only
  translation, used by the request encoders and the block layouts alone.
* An enumerated setting is given and shown in its real unit: the max-demand period in minutes (15, 30,
  60), ratios as ratios, relays and pulse lines by their numbers; the settings that are words (a relay
  state, the max-demand reset interval) by their words. Wire codes stay inside the encoders and the
  layouts.

Every enumeration takes, through :func:`coerce`, a member or what a person says (:data:`SAID`):
``"close"`` and ``RelayState.CLOSE`` are the same relay state, ``30`` the same period as
``MaxDemandPeriod.MINUTES_30``.
"""

from __future__ import annotations

import calendar
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

__all__ = [
    "FIRST",
    "SAID",
    "UNUSED_PERIOD",
    "UNUSED_SEASON",
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
    "Said",
    "Season",
    "StateOut",
    "coerce",
    "format_meter_time",
    "from_wire",
    "listed",
    "parse_meter_time",
    "require_month_day",
    "require_range",
    "to_wire",
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
    """The period max demand is averaged over, in minutes (``Max_Demand_Period`` reads the same).

    The wire carries a code (W6 and the read's byte: 1, 2, 3): :attr:`code`, :meth:`of_code`.
    """

    MINUTES_15 = 15
    MINUTES_30 = 30
    MINUTES_60 = 60

    @property
    def code(self) -> int:
        """The digit W6 sends and a read carries for this period."""
        return _PERIOD_CODES[self]

    @classmethod
    def of_code(cls, code: int) -> MaxDemandPeriod | None:
        """The period of a wire code; None for a code no document names."""
        return _PERIODS_BY_CODE.get(code)


_PERIOD_CODES = {MaxDemandPeriod.MINUTES_15: 1, MaxDemandPeriod.MINUTES_30: 2, MaxDemandPeriod.MINUTES_60: 3}
_PERIODS_BY_CODE = {code: period for period, code in _PERIOD_CODES.items()}


class MaxDemandResetInterval(enum.IntEnum):
    """Automatic max-demand reset (W5), said as its name in lower case (``"daily"``); the value is the
    wire code, which the V4 B block carries back (``Max_Demand_Interval_Reset`` reads ``"daily"``)."""

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

    @classmethod
    def of(cls, relay_1: bool, relay_2: bool) -> StateOut:
        """The state of relays 1 and 2 closed (on) or open."""
        return cls(1 + 2 * relay_1 + relay_2)

    def closed(self, relay: int) -> bool:
        """Whether relay 1 or 2 is closed (on) in this state."""
        return self.name.split("_")[relay - 1] == "ON"


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


class Said(enum.Flag):
    """How a person gives a member of an enumeration."""

    NUMBER = enum.auto()
    """By its value, a real number: minutes, a ratio, a relay's number (``30``, ``"800"``)."""
    NAME = enum.auto()
    """By its name in any case (``"close"``, ``"daily"``, ``"kWh_Tot"``)."""


SAID: dict[type[enum.IntEnum], Said] = {
    CTRatio: Said.NUMBER,
    PulseOutputRatio: Said.NUMBER,
    MaxDemandPeriod: Said.NUMBER,
    MaxDemandResetInterval: Said.NAME,
    Relay: Said.NUMBER,
    RelayState: Said.NAME,
    PulseInput: Said.NUMBER,
    LcdItem: Said.NAME | Said.NUMBER,  # EKM's list numbers the items: names or those numbers
}
"""What :func:`coerce` takes for each enumeration besides its members (and what its errors offer)."""
_UNITS: dict[type[enum.IntEnum], str] = {MaxDemandPeriod: " minutes"}


def _spoken(cls: type[enum.IntEnum], member: enum.IntEnum) -> str:
    said = SAID.get(cls, Said.NAME | Said.NUMBER)
    if said is Said.NUMBER:
        return str(member.value)
    return member.name.lower() if said is Said.NAME else f"{member.name} ({member.value})"


_LISTED = 20
"""Members an error lists in full; a longer enumeration (the LCD items) is shown by its ends."""


def listed(words: Sequence[str], last: str = "or") -> str:
    """``a, b or c`` (``last``: the word before the last one), as a person lists; a list longer than
    :data:`_LISTED` by its ends (``a, b, c … z``)."""
    if len(words) > _LISTED:
        return ", ".join(words[:3]) + " … " + words[-1]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" {last} " + words[-1]


def coerce(cls: type[E], value: object, name: str) -> E:
    """``value`` as a member of ``cls``: a member, or what a person says for it (:data:`SAID`) —
    its number, or its name in any case.

    Raises ``ValueError`` naming the argument ``name`` and listing what is allowed, in those words.
    """
    if isinstance(value, cls):
        return value
    said = SAID.get(cls, Said.NAME | Said.NUMBER)
    number: object = value
    if isinstance(value, str):
        text = value.strip()
        if Said.NAME in said:
            for member in cls:
                if member.name.lower() == text.lower():
                    return member
        number = int(text) if text.isdecimal() else None
    if Said.NUMBER in said and isinstance(number, int) and not isinstance(number, bool):
        try:
            return cls(number)
        except ValueError:
            pass
    allowed = listed([_spoken(cls, m) for m in cls]) + _UNITS.get(cls, "")
    raise ValueError(f"{name} must be {allowed}; got {value!r}")


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


FIRST = 1
"""The number of the first schedule and of the first tariff, wherever a person sees one."""


def to_wire(number: int) -> int:
    """A schedule (1–8) or tariff (1–4) number as the wire carries it: 0-based."""
    return number - FIRST


def from_wire(index: int) -> int:
    """A schedule or tariff number as the wire carries it (0-based) → as people number it."""
    return index + FIRST


@dataclass(frozen=True, slots=True)
class Period:
    """One period of a schedule: from ``hour``:``minute`` on, ``tariff`` 1–4 applies."""

    hour: int
    minute: int
    tariff: int


UNUSED_PERIOD = Period(0, 0, from_wire(0))
"""A period nobody set: zeros on the wire (00:00, the first tariff); after a schedule's first, unused."""


@dataclass(frozen=True, slots=True)
class Season:
    """A season starting on ``month``/``day`` that uses schedule ``schedule`` (1–8)."""

    month: int
    day: int
    schedule: int


UNUSED_SEASON = Season(0, 0, from_wire(0))
"""A season nobody set: zeros on the wire (month 0 marks it unused)."""


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
