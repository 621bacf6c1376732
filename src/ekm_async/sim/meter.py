"""A simulated V3 or V4 meter (sans-I/O): hears every request on its bus, answers as a meter does.

It keeps the session rules of :mod:`ekm_async.session`, applies every write of protocol.md §2.2 to its
state (shown in later reads and settings), and its live values evolve plausibly and deterministically
from a seed and the times it is given. Its frames are built with :func:`ekm_async.encode` and its
writes are understood through the same register table the host's encoders use.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .. import session
from ..calculated import Value
from ..commands import PAGE_BLOCK, SHAPE, LiveRead, Register, SettingsPage
from ..encoding import encode
from ..layouts import RESET_INTERVALS, BlockKind
from ..model import (
    UNUSED_PERIOD,
    UNUSED_SEASON,
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
    StateOut,
    from_wire,
    require_month_day,
    require_range,
    to_wire,
)
from .wire import Request, RequestKind

__all__ = ["ACK", "MeterModel", "MeterType"]

ACK = b"\x06"
DEFAULT_PASSWORD = "00000000"


class MeterType(enum.Enum):
    V3 = "v3"
    V4 = "v4"


# The sign-on each meter type answers, and the block it sends for it.
_SIGN_ON_BLOCK: dict[tuple[MeterType, LiveRead], BlockKind] = {
    (MeterType.V3, LiveRead.V3): BlockKind.V3,
    (MeterType.V4, LiveRead.V4A): BlockKind.V4A,
    (MeterType.V4, LiveRead.V4B): BlockKind.V4B,
}
_PAGE_BLOCK = {page.value: kind for page, kind in PAGE_BLOCK.items()}
_MODEL = {MeterType.V3: ("1012", "13"), MeterType.V4: ("1024", "14")}


@dataclass
class _Line:
    """One phase: wandering volts and amps, a power factor, and its energy registers (kWh)."""

    volts: float
    amps: float
    pf: float
    inductive: bool
    forward_kwh: float = 0.0
    reverse_kwh: float = 0.0
    reactive_kvarh: float = 0.0
    reverse: bool = False

    @property
    def watts(self) -> int:
        return round(self.volts * self.amps * self.pf)

    @property
    def vars(self) -> int:
        return round(self.volts * self.amps * math.sqrt(max(0.0, 1 - self.pf**2)))

    @property
    def cos_theta(self) -> str:
        if self.pf >= 0.995:
            return "0100"
        return ("L" if self.inductive else "C") + f"{round(self.pf * 100):03d}"


def _month(rng: random.Random) -> list[float]:
    """A month's [total, tariff 1, …, tariff 4] kWh, in tenths (the total adds the tariffs up)."""
    tariffs = [rng.randint(250, 2250) for _ in range(4)]
    return [sum(tariffs) / 10, *(t / 10 for t in tariffs)]


@dataclass
class _Relay:
    closed: bool = False
    until: float | None = None
    """Loop time at which a timed close reverts to open."""


@dataclass
class MeterModel:
    """A V3 or V4 meter on a simulated bus. ``handle`` one request at time ``now`` (seconds)."""

    address: str
    type: MeterType = MeterType.V4
    seed: int = 0
    password: str = DEFAULT_PASSWORD
    start: datetime = field(default_factory=lambda: datetime.now().replace(microsecond=0))
    """The meter's clock at the first ``now`` it sees: the host's local time when the meter is made
    (a real meter's clock is set to local time), unless given."""
    kwh_scale: int = 2
    """V4 only: decimal places of kWh registers (0, 1, 2); a V3 meter always counts tenths."""
    time_scale: float = 1.0
    """How many simulated seconds pass per second of ``now`` (energy, pulses, the clock)."""

    state: session.State = session.State.IDLE
    ct_ratio: int = 200
    pulse_ratios: list[int] = field(default_factory=lambda: [1, 1, 1])
    pulse_output_ratio: int = 1
    max_demand_period: MaxDemandPeriod = MaxDemandPeriod.MINUTES_15
    max_demand_reset_interval: MaxDemandResetInterval = MaxDemandResetInterval.OFF
    max_demand: float = 0.0
    relays: list[_Relay] = field(default_factory=lambda: [_Relay(), _Relay()])
    lcd: list[int] = field(default_factory=lambda: [LcdItem.kWh_Tot.value, LcdItem.RMS_Watts_Tot.value])
    schedules: list[list[Period]] = field(default_factory=list)
    """Schedules 1–8, four periods each (tariffs 1–4, as everywhere but on the wire)."""
    seasons: list[Season] = field(default_factory=list)
    holidays: list[MonthDay] = field(default_factory=list)
    weekend_schedule: int = 1
    holiday_schedule: int = 1
    pulse_counts: list[int] = field(default_factory=lambda: [0, 0, 0])
    resettable: list[float] = field(default_factory=lambda: [0.0, 0.0])
    """Resettable forward and reverse kWh."""
    tariffs: list[list[float]] = field(default_factory=lambda: [[0.0] * 4, [0.0] * 4])
    """Forward and reverse kWh per tariff 1..4."""
    months: list[list[list[float]]] = field(default_factory=list)
    """Forward, reverse → 6 months → [total, tariff 1..4] kWh."""
    state_inputs: int = 0
    writes: list[tuple[str, str]] = field(default_factory=list)
    """Every write applied: (register, data)."""

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.seed}:{self.address}")
        rng = self._rng
        self._lines = [
            _Line(
                volts=rng.uniform(118, 122),
                amps=rng.uniform(2, 12),
                pf=rng.uniform(0.85, 1.0),
                inductive=rng.random() < 0.7,
                forward_kwh=rng.uniform(500, 5000),
                reverse_kwh=rng.uniform(0, 50),
                reactive_kvarh=rng.uniform(50, 500),
            )
            for _ in range(3)
        ]
        for direction in (0, 1):
            total = sum(line.reverse_kwh if direction else line.forward_kwh for line in self._lines)
            self.tariffs[direction] = [total * share for share in (0.5, 0.3, 0.15, 0.05)]
        if not self.schedules:
            self.schedules = [[Period(0, 0, 1), Period(7, 0, 2), Period(17, 0, 3), Period(21, 0, 4)]] + [
                [UNUSED_PERIOD] * SHAPE.schedule_periods for _ in range(SHAPE.schedules - 1)
            ]
        if not self.seasons:
            self.seasons = [Season(1, 1, 1)] + [UNUSED_SEASON] * (SHAPE.seasons - 1)
        if not self.holidays:
            self.holidays = [MonthDay(1, 1), MonthDay(12, 25)] + [MonthDay(0, 0)] * (SHAPE.holidays - 2)
        if not self.months:  # per direction, 6 months of [total, tariffs 1–4]: the total is their sum
            self.months = [[_month(rng) for _ in range(6)] for _ in range(2)]
        if self.type is MeterType.V3:
            self.kwh_scale = 1
        self._now: float | None = None
        self._clock = self.start

    # -----------------------------------------------------------------------------------------------
    # Time

    def advance(self, now: float) -> None:
        """Let time pass up to ``now``: the clock runs, energy accumulates, values wander, relays time out."""
        if self._now is None:
            self._now = now
            return
        dt = (now - self._now) * self.time_scale
        if dt <= 0:
            return
        self._now = now
        self._clock += timedelta(seconds=dt)
        rng = self._rng
        tariff = self.current_tariff()
        for n, line in enumerate(self._lines):
            line.volts = min(126.0, max(114.0, line.volts + rng.gauss(0, 0.3)))
            line.amps = min(40.0, max(0.5, line.amps + rng.gauss(0, 0.2)))
            line.pf = min(1.0, max(0.7, line.pf + rng.gauss(0, 0.01)))
            kwh = line.watts * dt / 3_600_000
            line.reactive_kvarh += line.vars * dt / 3_600_000
            if line.reverse:
                line.reverse_kwh += kwh
                self.tariffs[1][tariff] += kwh
                self.resettable[1] += kwh
            else:
                line.forward_kwh += kwh
                self.tariffs[0][tariff] += kwh
                self.resettable[0] += kwh
            self.pulse_counts[n] += int(dt * rng.uniform(0.5, 2.0) + rng.random())
        self.max_demand = max(self.max_demand, float(sum(line.watts for line in self._lines)))
        for relay in self.relays:
            if relay.until is not None and now >= relay.until:
                relay.closed, relay.until = False, None

    def set_values(
        self,
        *,
        line: int | None = None,
        volts: float | None = None,
        amps: float | None = None,
        pf: float | None = None,
        kwh: float | None = None,
    ) -> None:
        """Set what the meter measures, on ``line`` (1–3) or on every line: volts, amps, power factor
        (0.7–1), and forward kWh (per line; the tariffs are scaled to keep adding up to the total).
        Values then wander from there as time passes, unless ``time_scale`` is 0."""
        lines = self._lines if line is None else [self._lines[line - 1]]
        if line is not None and not 1 <= line <= len(self._lines):
            raise ValueError(f"line must be 1..{len(self._lines)}; got {line}")
        if pf is not None and not 0.0 < pf <= 1.0:
            raise ValueError(f"pf must be in (0, 1]; got {pf}")
        for chosen in lines:
            chosen.volts = chosen.volts if volts is None else float(volts)
            chosen.amps = chosen.amps if amps is None else float(amps)
            chosen.pf = chosen.pf if pf is None else float(pf)
            if kwh is not None:
                if kwh < 0:
                    raise ValueError(f"kwh must be ≥ 0; got {kwh}")
                chosen.forward_kwh = float(kwh)
        if kwh is not None:
            total, before = sum(x.forward_kwh for x in self._lines), sum(self.tariffs[0])
            shares = [t / before for t in self.tariffs[0]] if before else [0.5, 0.3, 0.15, 0.05]
            self.tariffs[0] = [total * share for share in shares]

    @property
    def clock(self) -> datetime:
        """The meter's clock (set by W9, running with ``now``)."""
        return self._clock

    def set_clock(self, when: datetime) -> None:
        self._clock = when

    def current_tariff(self) -> int:
        """The index (0–3) of the tariff of the current period of the schedule in use today."""
        minute = self._clock.hour * 60 + self._clock.minute
        started = sorted((p.hour * 60 + p.minute, p.tariff) for p in self.schedules[self._schedule_today()])
        current = [tariff for start, tariff in started if start <= minute]
        return to_wire(current[-1]) % SHAPE.tariffs if current else 0

    def _schedule_today(self) -> int:
        """The index (0–7) of the schedule in use today."""
        today = MonthDay(self._clock.month, self._clock.day)
        if today in self.holidays:
            return to_wire(self.holiday_schedule) % SHAPE.schedules
        if self._clock.isoweekday() >= 6:
            return to_wire(self.weekend_schedule) % SHAPE.schedules
        started = [s for s in self.seasons if s.month and (s.month, s.day) <= (today.month, today.day)]
        return to_wire(started[-1].schedule) % SHAPE.schedules if started else 0

    # -----------------------------------------------------------------------------------------------
    # Requests

    def handle(self, request: Request, now: float) -> bytes | None:
        """The meter's answer to ``request`` heard at ``now``, or None for silence.

        Time passes for a meter when a request concerns it (its sign-on, or anything while it is
        selected): a bus of many meters costs one meter's work per request, and what a meter shows is
        the same, its values having wandered since it was last asked."""
        if request.address == self.address or self.state is not session.State.IDLE:
            self.advance(now)
        if not request.crc_ok:
            return None
        return _HANDLERS[request.kind](self, request, now)

    def _close(self, request: Request, now: float) -> bytes | None:
        self.state = session.next_state(self.state, session.SessionEvent.CLOSE)
        return None

    def _sign_on(self, request: Request, now: float) -> bytes | None:
        block = _SIGN_ON_BLOCK.get((self.type, request.read)) if request.read else None
        if request.address != self.address or block is None:
            self.state = session.State.IDLE  # another meter is being addressed
            return None
        self.state = session.next_state(self.state, session.SessionEvent.CONNECT)
        return self.frame(block)

    def _settings_read(self, request: Request, now: float) -> bytes | None:
        block = _PAGE_BLOCK.get(request.register)
        if block is None or not session.allowed(self.state, session.SessionEvent.READ):
            return None
        self.state = session.next_state(self.state, session.SessionEvent.READ)
        return self.frame(block, reverse=request.register == SettingsPage.MONTHS_REVERSE.value)

    def _password(self, request: Request, now: float) -> bytes | None:
        if not session.allowed(self.state, session.SessionEvent.PASSWORD_ACCEPTED):
            return None
        accepted = request.data == self.password
        self.state = session.next_state(
            self.state, session.SessionEvent.PASSWORD_ACCEPTED if accepted else session.SessionEvent.PASSWORD_REFUSED
        )
        return ACK if accepted else None

    def _write(self, request: Request, now: float) -> bytes | None:
        if not session.allowed(self.state, session.SessionEvent.WRITE_ACCEPTED):
            return None
        try:
            self._apply(request.register, request.data, now)
        except ValueError:
            self.state = session.next_state(self.state, session.SessionEvent.WRITE_REFUSED)
            return None
        self.writes.append((request.register, request.data))
        self.state = session.next_state(self.state, session.SessionEvent.WRITE_ACCEPTED)
        return ACK

    def _apply(self, register: str, data: str, now: float) -> None:
        handler = _WRITES.get(register)
        if handler is None or (self.type is MeterType.V3 and register in _V4_ONLY):
            raise ValueError(f"register {register} not writable on this meter")
        handler(self, data, now)

    # -----------------------------------------------------------------------------------------------
    # Frames

    def live_fields(self, kind: BlockKind) -> dict[str, Value]:
        """The fields of a V3, V4 A or V4 B block as this meter would send them now."""
        model, firmware = _MODEL[self.type]
        lines = self._lines
        fields: dict[str, Value] = {
            "Model": model,
            "Firmware": firmware,
            "Meter_Address": self.address,
            "Meter_Time": self._clock.strftime("%y%m%d")
            + f"{self._clock.isoweekday():02d}"
            + self._clock.strftime("%H%M%S"),
        }
        for n, line in enumerate(lines, 1):
            fields[f"RMS_Volts_Ln_{n}"] = round(line.volts, 1)
            fields[f"Amps_Ln_{n}"] = round(line.amps, 1)
            fields[f"RMS_Watts_Ln_{n}"] = line.watts
            fields[f"Cos_Theta_Ln_{n}"] = line.cos_theta
        fields["RMS_Watts_Tot"] = sum(line.watts for line in lines)
        forward = sum(line.forward_kwh for line in lines)
        reverse = sum(line.reverse_kwh for line in lines)
        if kind in (BlockKind.V3, BlockKind.V4B):
            for t in range(4):
                fields[f"kWh_Tariff_{t + 1}"] = self._kwh(self.tariffs[0][t])
                fields[f"Rev_kWh_Tariff_{t + 1}"] = self._kwh(self.tariffs[1][t])
            for n in range(3):
                fields[f"Pulse_Ratio_{n + 1}"] = self.pulse_ratios[n]
            fields["CT_Ratio"] = self.ct_ratio
            fields["Max_Demand_Period"] = self.max_demand_period.value
        if kind is BlockKind.V3:
            fields |= {
                "kWh_Tot": self._kwh(forward),
                "Rev_kWh_Tot": self._kwh(reverse),
                "Max_Demand": self._kwh(self.max_demand / 1000),
                "State_Inputs": self.state_inputs,
                "Meter_Status_Code": "00",
            }
            fields |= {f"Pulse_Cnt_{n + 1}": self.pulse_counts[n] % 10**8 for n in range(3)}
        elif kind is BlockKind.V4A:
            fields |= {
                "kWh_Tot": self._kwh(forward),
                "Reactive_Energy_Tot": self._kwh(sum(line.reactive_kvarh for line in lines)),
                "Rev_kWh_Tot": self._kwh(reverse),
                "Resettable_kWh_Tot": self._kwh(self.resettable[0]),
                "Resettable_Rev_kWh_Tot": self._kwh(self.resettable[1]),
                "Reactive_Pwr_Tot": sum(line.vars for line in lines),
                "Line_Freq": round(60 + self._rng.gauss(0, 0.02), 2),
                "State_Inputs": self.state_inputs,
                "State_Watts_Dir": self._direction(),
                "State_Out": StateOut.of(self.relays[0].closed, self.relays[1].closed).value,
                "kWh_Scale": self.kwh_scale,
            }
            for n, line in enumerate(lines, 1):
                fields[f"kWh_Ln_{n}"] = self._kwh(line.forward_kwh)
                fields[f"Rev_kWh_Ln_{n}"] = self._kwh(line.reverse_kwh)
                fields[f"Reactive_Pwr_Ln_{n}"] = line.vars
                fields[f"Pulse_Cnt_{n}"] = self.pulse_counts[n - 1] % 10**8
        else:
            fields |= {
                "RMS_Watts_Max_Demand": round(self.max_demand, 1),
                "Max_Demand_Interval_Reset": RESET_INTERVALS[self.max_demand_reset_interval.value],
                "Pulse_Output_Ratio": self.pulse_output_ratio,
                "Status_A": "00",
                "Status_B": "00",
                "Status_C": "00",
            }
        return fields

    def settings_fields(self, kind: BlockKind, *, reverse: bool = False) -> dict[str, Value]:
        """The fields of a settings block (months, schedules pages, holidays)."""
        fields: dict[str, Value] = {}
        if kind is BlockKind.MONTHS:
            for m, (total, *tariffs) in enumerate(self.months[reverse], 1):
                fields[f"Month_{m}_Tot"] = self._kwh(total)
                fields |= {f"Month_{m}_Tariff_{t}": self._kwh(v) for t, v in enumerate(tariffs, 1)}
        elif kind in (BlockKind.SCHEDULES, BlockKind.SCHEDULES_5_8):
            first = 1 if kind is BlockKind.SCHEDULES else 5
            for s in range(first, first + 4):
                for p, period in enumerate(self.schedules[s - 1], 1):
                    stem = f"Schedule_{s}_Period_{p}_"
                    fields |= {stem + "Hour": period.hour, stem + "Min": period.minute, stem + "Tariff": period.tariff}
            if kind is BlockKind.SCHEDULES:
                for n, season in enumerate(self.seasons, 1):
                    fields |= {
                        f"Season_{n}_Month": season.month,
                        f"Season_{n}_Day": season.day,
                        f"Season_{n}_Schedule": season.schedule,
                    }
        else:
            for n, day in enumerate(self.holidays, 1):
                fields |= {f"Holiday_{n}_Mon": day.month, f"Holiday_{n}_Day": day.day}
            fields |= {"Weekend_Schd": self.weekend_schedule, "Holiday_Schd": self.holiday_schedule}
        return fields

    def frame(self, kind: BlockKind, *, reverse: bool = False) -> bytes:
        """The 255-byte block of ``kind`` this meter sends now."""
        if kind in (BlockKind.V3, BlockKind.V4A, BlockKind.V4B):
            fields = self.live_fields(kind)
        else:
            fields = self.settings_fields(kind, reverse=reverse)
        scale = None if kind is BlockKind.V4A else self.kwh_scale
        return encode(kind, fields, kwh_scale=scale)

    def _kwh(self, value: float) -> float:
        """A kWh register as the meter counts it: truncated to its resolution, wrapped at 8 digits."""
        factor: int = 10**self.kwh_scale
        # round() first: 316.9 * 100 is 31689.999…, which a register showing 316.90 must not floor
        return (math.floor(round(value * factor, 6)) % 10**8) / factor

    def _direction(self) -> int:
        signs = "".join("R" if line.reverse else "F" for line in self._lines)
        return {"FFF": 1, "FFR": 2, "FRF": 3, "RFF": 4, "FRR": 5, "RFR": 6, "RRF": 7, "RRR": 8}[signs]

    def set_line_direction(self, line: int, *, reverse: bool) -> None:
        """Make line 1–3 deliver (reverse) or draw (forward) energy."""
        self._lines[line - 1].reverse = reverse


# ---------------------------------------------------------------------------------------------------
# Writes: register → how the meter applies its data (ValueError: refused, no ACK).


def _int(data: str, width: int, name: str) -> int:
    if len(data) != width or not data.isdigit():
        raise ValueError(f"{name}: {data!r} is not {width} digits")
    return int(data)


def _pairs(data: str, width: int) -> list[int]:
    if len(data) != width or not data.isdigit():
        raise ValueError(f"{data!r} is not {width} digits")
    return [int(data[i : i + 2]) for i in range(0, width, 2)]


def _relay(index: int) -> Callable[[MeterModel, str, float], None]:
    def apply(m: MeterModel, data: str, now: float) -> None:
        state = RelayState(_int(data[:1], 1, "state"))
        seconds = _int(data[1:], 4, "seconds")
        relay = m.relays[Relay(index).value - 1]
        relay.closed = state is RelayState.CLOSE
        timed = relay.closed and seconds and m.time_scale > 0  # time standing still: no end
        relay.until = now + seconds / m.time_scale if timed else None

    return apply


def _pulse_input(line: int) -> Callable[[MeterModel, str, float], None]:
    def apply(m: MeterModel, data: str, now: float) -> None:
        m.pulse_ratios[PulseInput(line).value - 1] = require_range(_int(data, 4, "ratio"), 1, 9999, "ratio")

    return apply


def _schedule(index: int) -> Callable[[MeterModel, str, float], None]:
    def apply(m: MeterModel, data: str, now: float) -> None:
        values = _pairs(data, 6 * SHAPE.schedule_periods + SHAPE.schedule_pad)
        periods = []
        for i in range(0, 3 * SHAPE.schedule_periods, 3):
            hour, minute, tariff = values[i : i + 3]
            require_range(hour, 0, 23, "hour")
            require_range(minute, 0, 59, "minute")
            require_range(tariff, 0, SHAPE.tariffs - 1, "tariff")
            periods.append(Period(hour, minute, from_wire(tariff)))
        m.schedules[index] = periods

    return apply


def _time(m: MeterModel, data: str, now: float) -> None:
    yy, mo, dd, _wd, hh, mi, ss = _pairs(data, 14)
    m.set_clock(datetime(2000 + yy, mo, dd, hh, mi, ss))


def _seasons(m: MeterModel, data: str, now: float) -> None:
    values = _pairs(data, 6 * SHAPE.seasons + SHAPE.seasons_pad)
    seasons = []
    for i in range(0, 3 * SHAPE.seasons, 3):
        month, day, schedule = values[i : i + 3]
        if (month, day, schedule) != (0, 0, 0):
            require_month_day(month, day, "season")
            require_range(schedule, 0, SHAPE.schedules - 1, "schedule")
        seasons.append(Season(month, day, from_wire(schedule)))
    m.seasons = seasons


def _holidays(m: MeterModel, data: str, now: float) -> None:
    values = _pairs(data, 4 * SHAPE.holidays)
    days = [MonthDay(values[i], values[i + 1]) for i in range(0, 2 * SHAPE.holidays, 2)]
    for d in days:
        if d != MonthDay(0, 0):
            require_month_day(d.month, d.day, "holiday")
    m.holidays = days


def _weekend_holiday(m: MeterModel, data: str, now: float) -> None:
    weekend, holiday = _pairs(data, 4)
    m.weekend_schedule = from_wire(require_range(weekend, 0, SHAPE.schedules - 1, "weekend"))
    m.holiday_schedule = from_wire(require_range(holiday, 0, SHAPE.schedules - 1, "holiday"))


def _lcd(m: MeterModel, data: str, now: float) -> None:
    codes = [c for c in _pairs(data, 2 * SHAPE.lcd_slots) if c]
    m.lcd = [LcdItem(c).value for c in codes]


def _password(m: MeterModel, data: str, now: float) -> None:
    _int(data, 8, "password")
    m.password = data


def _address(m: MeterModel, data: str, now: float) -> None:
    _int(data, 12, "address")
    m.address = data


def _zero_resettable(m: MeterModel, data: str, now: float) -> None:
    if data:
        raise ValueError("zero-resettable takes no data")
    m.resettable = [0.0, 0.0]


def _reset_max_demand(m: MeterModel, data: str, now: float) -> None:
    if data != "000000":
        raise ValueError(f"max-demand reset data {data!r}")
    m.max_demand = 0.0


def _period_of_code(code: int) -> MaxDemandPeriod:
    period = MaxDemandPeriod.of_code(code)
    if period is None:
        raise ValueError(f"max-demand period code {code}")
    return period


def _set(attribute: str, width: int, value_of: Callable[[int], object]) -> Callable[[MeterModel, str, float], None]:
    """A write of ``width`` digits whose value (``value_of`` them; ValueError: refused) the meter keeps."""

    def apply(m: MeterModel, data: str, now: float) -> None:
        setattr(m, attribute, value_of(_int(data, width, attribute)))

    return apply


_WRITES: dict[str, Callable[[MeterModel, str, float], None]] = {
    Register.ADDRESS.value: _address,
    Register.PASSWORD.value: _password,
    Register.MAX_DEMAND_RESET_NOW.value: _reset_max_demand,
    Register.MAX_DEMAND_PERIOD.value: _set("max_demand_period", 1, _period_of_code),
    Register.TIME.value: _time,
    **{Register.SCHEDULE.value + str(n): _schedule(n) for n in range(SHAPE.schedules)},
    Register.SEASONS.value: _seasons,
    **{Register.RELAY.value + str(r.value): _relay(r.value) for r in Relay},
    **{Register.PULSE_INPUT_RATIO.value + str(p.value - 1): _pulse_input(p.value) for p in PulseInput},
    Register.HOLIDAYS.value: _holidays,
    Register.WEEKEND_HOLIDAY_SCHEDULES.value: _weekend_holiday,
    Register.CT_RATIO.value: _set("ct_ratio", 4, CTRatio),
    Register.LCD.value: _lcd,
    Register.ZERO_RESETTABLE.value: _zero_resettable,
    Register.PULSE_OUTPUT_RATIO.value: _set("pulse_output_ratio", 4, PulseOutputRatio),
    Register.MAX_DEMAND_RESET_INTERVAL.value: _set("max_demand_reset_interval", 1, MaxDemandResetInterval),
}
"""Every write register of protocol.md §2.2 → how a meter applies it."""

_HANDLERS: dict[RequestKind, Callable[[MeterModel, Request, float], bytes | None]] = {
    RequestKind.CLOSE: MeterModel._close,
    RequestKind.SIGN_ON: MeterModel._sign_on,
    RequestKind.SETTINGS_READ: MeterModel._settings_read,
    RequestKind.PASSWORD: MeterModel._password,
    RequestKind.WRITE: MeterModel._write,
}
"""Request kind → how the meter answers it."""

_V4_ONLY = {
    *(Register.RELAY.value + str(r.value) for r in Relay),
    *(Register.PULSE_INPUT_RATIO.value + str(p.value - 1) for p in PulseInput),
    Register.PULSE_OUTPUT_RATIO.value,
    Register.ZERO_RESETTABLE.value,
    Register.LCD.value,
    Register.MAX_DEMAND_RESET_INTERVAL.value,
}
"""W1–W5 and W8 exist on V4 meters only (protocol.md §2.2)."""
