"""Every setting a meter takes, stated once: its name, its arguments (as a Python keyword, a word on
the command line and a JSON value), the request encoder that validates them, which meters have it,
and what it replaces in ekmmeters. The meter handles (:meth:`ekm_async.V4Meter.apply` and the named
``set_…`` methods), ``ekm-async set``, the web service's ``POST`` bodies, the MQTT relay commands, the
README's table and the tests all read this table.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import commands
from .model import MonthDay, Period, Season, listed

__all__ = ["BODY_EXAMPLES", "SETTINGS", "Argument", "Effect", "SettingSpec", "json_object", "setting"]


def _integer(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{name} must be a whole number; got {text!r}") from None

    return parse


def _word(text: str) -> str:
    return text


def _code_or_name(text: str) -> int | str:
    return int(text) if text.isdecimal() else text


def _when(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"when must be a date and time like 2026-01-31T14:30:00; got {text!r}") from None


def _numbers(pattern: str, shape: str, name: str) -> Callable[[str], tuple[int, ...]]:
    """A parser of ``text`` written as ``pattern`` (its groups: the numbers), e.g. ``HH:MM:TARIFF``."""
    compiled = re.compile(pattern)

    def parse(text: str) -> tuple[int, ...]:
        match = compiled.fullmatch(text)
        if match is None:
            raise ValueError(f"{name} must look like {shape}; got {text!r}")
        return tuple(int(group) for group in match.groups())

    return parse


_PERIOD = _numbers(r"(\d{1,2}):(\d{1,2}):(\d+)", "HH:MM:TARIFF, tariff 1–4 (e.g. 07:00:2)", "a period")
_SEASON = _numbers(r"(\d{1,2})-(\d{1,2}):(\d+)", "MM-DD:SCHEDULE, schedule 1–8 (e.g. 06-01:2)", "a season")
_MONTH_DAY = _numbers(r"(\d{1,2})-(\d{1,2})", "MM-DD (e.g. 12-25)", "a holiday")


def _period(text: str) -> Period:
    return Period(*_PERIOD(text))


def _season(text: str) -> Season:
    return Season(*_SEASON(text))


def _month_day(text: str) -> MonthDay:
    return MonthDay(*_MONTH_DAY(text))


def _when_json(value: Any) -> Any:
    return _when(value) if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class Argument:
    """One argument of a setting."""

    name: str
    """The keyword of the meter method and the key of the JSON body."""
    usage: str
    """How it is written on the command line (``RELAY``, ``HH:MM:TARIFF…``)."""
    parse: Callable[[str], Any] = _word
    """A command-line word → the value the encoder takes (``ValueError`` in the user's words)."""
    many: bool = False
    """Takes every remaining word (a list in JSON)."""
    option: str | None = None
    """Given on the command line as this option (``--seconds``) rather than in place; then optional."""
    optional: bool = False
    """May be left out (then the encoder's default applies); an option always is."""
    default: Any = None
    """The value of an option left out."""
    from_json: Callable[[Any], Any] = lambda value: value
    """A JSON value → the value the encoder takes."""


class Effect(enum.Enum):
    """What an acknowledged write changes in the meter handle that sent it."""

    NONE = "none"
    PASSWORD = "password"
    """The handle uses the new password from now on."""
    ADDRESS = "address"
    """The handle (and the bus's health record) follows the meter to its new address."""


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """One setting: see the module documentation."""

    name: str
    """The name on the command line, in the web service's path, in MQTT and in the docs."""
    method: str
    """The meter handle's method."""
    arguments: tuple[Argument, ...]
    encode: Callable[..., bytes]
    """The request encoder: validates the arguments (``ValueError``) and builds the write."""
    summary: str
    ekmmeters: str
    """The ekmmeters call it replaces."""
    v4_only: bool = False
    effect: Effect = Effect.NONE

    @property
    def usage(self) -> str:
        """The arguments as the command line takes them."""
        return " ".join(
            f"[{a.option} {a.usage}]" if a.option else f"[{a.usage}]" if a.optional else a.usage for a in self.arguments
        )

    def parse(self, words: Sequence[str], options: dict[str, str | None] | None = None) -> dict[str, Any]:
        """The keyword arguments from command-line words (and the values of its options); ``ValueError``
        in the user's words for too few or too many words, or a word that is not what it should be."""
        options = options or {}
        out: dict[str, Any] = {}
        rest = list(words)
        for argument in self.arguments:
            if argument.option is not None:
                text = options.get(argument.option)
                out[argument.name] = argument.default if text is None else argument.parse(text)
            elif argument.many:
                out[argument.name] = [argument.parse(w) for w in rest]
                rest = []
            elif rest:
                out[argument.name] = argument.parse(rest.pop(0))
            elif not argument.optional:
                raise ValueError(f"{self.name} needs {argument.usage}: {self.name} {self.usage}")
        if rest:
            raise ValueError(f"{self.name} takes {self.usage or 'no arguments'}; {' '.join(rest)!r} is too much")
        return out

    def from_json(self, body: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments from a JSON body; ``ValueError`` in words naming a key that is missing
        or one the setting does not take."""
        names = [a.name for a in self.arguments]
        required = [a.name for a in self.arguments if not (a.optional or a.option or a.many)]
        missing = [key for key in required if key not in body]
        unknown = sorted(set(body) - set(names))
        if unknown:
            takes = f"takes {_keys(names)}" if names else "takes nothing but the password"
            raise ValueError(f"{self.name} {takes}; {json.dumps(unknown[0])} is not one of them")
        if missing:
            raise ValueError(f"{self.name} needs {_keys(missing)}, like {_body_example(self)}")
        return {a.name: a.from_json(body[a.name]) for a in self.arguments if a.name in body}

    def request(self, **arguments: Any) -> bytes:
        """The write request for these arguments (every check made; nothing sent)."""
        return self.encode(**arguments)


MAX_JSON_DEPTH = 8
"""Nesting a JSON body may have (settings take flat objects, and lists of flat objects)."""
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def json_object(text: str | bytes) -> dict[str, Any]:
    """The JSON object of a setting's body (the web service's and MQTT's alike), else ``ValueError``
    saying what is wrong. Nesting deeper than :data:`MAX_JSON_DEPTH` is refused before parsing
    (CPython's parser recurses per level: a deep body would raise ``RecursionError``)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # UnicodeDecodeError is a ValueError
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:  # Python's own limit on the digits of an integer (4300)
        raise ValueError("a number has too many digits") from None
    if not isinstance(value, dict):
        raise ValueError(f"a JSON object is needed ({{…}}); got {_JSON_KIND.get(type(value), 'something else')}")
    return value


_JSON_KIND = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false"}
_JSON_KIND[type(None)] = "null"


def _keys(names: Sequence[str]) -> str:
    """``"a", "b" and "c"``: JSON keys as a person lists them."""
    return listed([json.dumps(name) for name in names], "and")


def _body_example(spec: SettingSpec) -> str:
    return BODY_EXAMPLES[spec.name]


BODY_EXAMPLES = {
    "relay": '{"relay": 1, "state": "close", "seconds": 5}',
    "ct-ratio": '{"ratio": 800}',
    "max-demand-period": '{"period": 30}',
    "max-demand-reset-interval": '{"interval": "daily"}',
    "max-demand-reset-now": "{}",
    "time": '{"when": "2026-01-31T14:30:00+01:00"}',
    "pulse-input-ratio": '{"line": 1, "ratio": 100}',
    "pulse-output-ratio": '{"ratio": 800}',
    "zero-resettable": "{}",
    "lcd": '{"items": ["kWh_Tot", "RMS_Watts_Tot", 33]}',
    "weekend-holiday-schedules": '{"weekend": 2, "holiday": 3}',
    "password": '{"new_password": "12345678"}',
    "address": '{"new_address": "000300001185"}',
    "schedule": '{"schedule": 1, "periods": [[6, 0, 1], [18, 30, 2]]}',
    "seasons": '{"seasons": [[1, 1, 1], [6, 1, 2]]}',
    "holidays": '{"dates": [[1, 1], [12, 25]]}',
}
"""A JSON body of every setting (the web service's ``POST``; docs/settings.md shows them, a test posts each)."""


def _set_time(when: datetime | None = None) -> bytes:
    """The meter keeps wall-clock time without a zone: an aware ``when`` is converted to this
    computer's local time first; None is now."""
    if when is None:
        when = datetime.now()
    elif isinstance(when, datetime) and when.tzinfo is not None:
        when = when.astimezone().replace(tzinfo=None)
    return commands.set_time(when)


_SETTINGS = (
    SettingSpec(
        "relay",
        "set_relay",
        (
            Argument("relay", "RELAY", _integer("relay")),
            Argument("state", "open|close"),
            Argument("seconds", "N", _integer("seconds"), option="--seconds", default=0),
        ),
        commands.relay,
        "open or close relay 1 or 2, for N seconds (0: until told otherwise)",
        "setRelay",
        v4_only=True,
    ),
    SettingSpec(
        "ct-ratio",
        "set_ct_ratio",
        (Argument("ratio", "N", _integer("ratio")),),
        commands.ct_ratio,
        "the current transformers' ratio",
        "setCTRatio",
    ),
    SettingSpec(
        "max-demand-period",
        "set_max_demand_period",
        (Argument("period", "15|30|60", _integer("period")),),
        commands.max_demand_period,
        "the period max demand is averaged over: 15, 30 or 60 minutes",
        "setMaxDemandPeriod",
    ),
    SettingSpec(
        "max-demand-reset-interval",
        "set_max_demand_reset_interval",
        (Argument("interval", "off|monthly|weekly|daily|hourly"),),
        commands.max_demand_reset_interval,
        "when max demand is reset by itself",
        "setMaxDemandResetInterval",
        v4_only=True,
    ),
    SettingSpec(
        "max-demand-reset-now",
        "reset_max_demand",
        (),
        commands.max_demand_reset_now,
        "reset max demand now",
        "setMaxDemandResetNow",
    ),
    SettingSpec(
        "time",
        "set_time",
        (Argument("when", "ISO-DATETIME", _when, optional=True, from_json=_when_json),),
        _set_time,
        "set the meter's clock (default: now; a time with a zone is converted to local time)",
        "setTime",
    ),
    SettingSpec(
        "pulse-input-ratio",
        "set_pulse_input_ratio",
        (Argument("line", "LINE", _integer("line")), Argument("ratio", "N", _integer("ratio"))),
        commands.pulse_input_ratio,
        "pulses per unit on pulse input line 1–3 (1–9999)",
        "setPulseInputRatio",
        v4_only=True,
    ),
    SettingSpec(
        "pulse-output-ratio",
        "set_pulse_output_ratio",
        (Argument("ratio", "N", _integer("ratio")),),
        commands.pulse_output_ratio,
        "the pulse output's ratio",
        "setPulseOutputRatio",
        v4_only=True,
    ),
    SettingSpec(
        "zero-resettable",
        "zero_resettable",
        (),
        commands.zero_resettable,
        "zero the resettable kWh registers",
        "setZeroResettableKWH",
        v4_only=True,
    ),
    SettingSpec(
        "lcd",
        "set_lcd",
        (Argument("items", "ITEM…", _code_or_name, many=True),),
        commands.lcd,
        "what the display shows, 1–40 items (names or codes)",
        "setLCDCmd",
        v4_only=True,
    ),
    SettingSpec(
        "weekend-holiday-schedules",
        "set_weekend_holiday_schedules",
        (Argument("weekend", "WEEKEND", _integer("weekend")), Argument("holiday", "HOLIDAY", _integer("holiday"))),
        commands.weekend_holiday_schedules,
        "the schedules (1–8) used on weekends and on holidays",
        "setWeekendHolidaySchedules",
    ),
    SettingSpec(
        "password",
        "set_password",
        (Argument("new_password", "NEW"),),
        commands.change_password,
        "a new 8-digit password (the handle uses it from then on)",
        "setMeterPassword",
        effect=Effect.PASSWORD,
    ),
    SettingSpec(
        "address",
        "set_address",
        (Argument("new_address", "NEW"),),
        commands.change_address,
        "a new 12-digit address (the handle follows the meter)",
        "— (EKM's document only)",
        effect=Effect.ADDRESS,
    ),
    SettingSpec(
        "schedule",
        "set_schedule",
        (
            Argument("schedule", "N", _integer("schedule")),
            Argument("periods", "HH:MM:TARIFF…", _period, many=True),
        ),
        commands.schedule,
        "schedule N (1–8): up to 4 periods, each from HH:MM on, tariff 1–4",
        "setSchedule",
    ),
    SettingSpec(
        "seasons",
        "set_seasons",
        (Argument("seasons", "MM-DD:SCHEDULE…", _season, many=True),),
        commands.seasons,
        "up to 4 seasons, each from MM-DD on, schedule 1–8",
        "setSeasonSchedules",
    ),
    SettingSpec(
        "holidays",
        "set_holidays",
        (Argument("dates", "MM-DD…", _month_day, many=True),),
        commands.holidays,
        "up to 20 holidays",
        "setHolidayDates",
    ),
)

SETTINGS: dict[str, SettingSpec] = {spec.name: spec for spec in _SETTINGS}
"""Every setting, by name, in the order the docs list them."""


def setting(name: str) -> SettingSpec:
    """The setting ``name``; ``ValueError`` listing the settings for an unknown name."""
    try:
        return SETTINGS[name]
    except KeyError:
        raise ValueError(f"no setting {name!r}; settings: {', '.join(SETTINGS)}") from None
