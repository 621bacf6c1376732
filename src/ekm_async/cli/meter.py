"""``ekm-async read``, ``settings`` and ``set`` (DESIGN.md §4): one meter, one command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from .. import commands
from ..bus import Bus, BusOpening, open_bus
from ..calculated import Value
from ..errors import EkmError
from ..meters import V3Meter, V4Meter
from ..model import MonthDay, Period, Season
from ..wire import require_address, require_password

__all__ = ["SETTINGS", "add_meter_commands"]

Meter = V3Meter | V4Meter


@dataclass(frozen=True, slots=True)
class Setting:
    """One ``set`` SETTING: how its arguments parse, which request checks them, which method sends it."""

    usage: str
    nargs: tuple[int, int | None]
    """Fewest and most arguments (None: any number)."""
    parse: Callable[[list[str], argparse.Namespace], tuple[Any, ...]]
    encode: Callable[..., bytes]
    """The request encoder: validates the parsed arguments before the bus is opened."""
    method: str
    v4_only: bool = False


def _ints(args: list[str], _: argparse.Namespace) -> tuple[Any, ...]:
    return tuple(int(a) for a in args)


def _words(args: list[str], _: argparse.Namespace) -> tuple[Any, ...]:
    return tuple(args)


def _none(args: list[str], _: argparse.Namespace) -> tuple[Any, ...]:
    return ()


def _relay(args: list[str], opts: argparse.Namespace) -> tuple[Any, ...]:
    return int(args[0]), args[1], opts.seconds


def _time(args: list[str], _: argparse.Namespace) -> tuple[Any, ...]:
    return (datetime.fromisoformat(args[0]) if args else datetime.now(),)


def _lcd(args: list[str], _: argparse.Namespace) -> tuple[Any, ...]:
    return ([int(a) if a.isdigit() else a for a in args],)


def _schedule(args: list[str], _: argparse.Namespace) -> tuple[Any, ...]:
    periods = []
    for text in args[1:]:
        hh, mm, tariff = text.split(":")
        periods.append(Period(int(hh), int(mm), int(tariff)))
    return int(args[0]), periods


def _month_day(text: str) -> tuple[int, int]:
    month, day = text.split("-")
    return int(month), int(day)


def _seasons(args: list[str], _: argparse.Namespace) -> tuple[Any, ...]:
    seasons = []
    for text in args:
        date, schedule = text.split(":")
        seasons.append(Season(*_month_day(date), int(schedule)))
    return (seasons,)


def _holidays(args: list[str], _: argparse.Namespace) -> tuple[Any, ...]:
    return ([MonthDay(*_month_day(text)) for text in args],)


SETTINGS: dict[str, Setting] = {
    "relay": Setting("RELAY open|close [--seconds N]", (2, 2), _relay, commands.relay, "set_relay", v4_only=True),
    "ct-ratio": Setting("N", (1, 1), _ints, commands.ct_ratio, "set_ct_ratio"),
    "max-demand-period": Setting("15|30|60", (1, 1), _ints, commands.max_demand_period, "set_max_demand_period"),
    "max-demand-reset-interval": Setting(
        "off|monthly|weekly|daily|hourly",
        (1, 1),
        _words,
        commands.max_demand_reset_interval,
        "set_max_demand_reset_interval",
        v4_only=True,
    ),
    "max-demand-reset-now": Setting("", (0, 0), _none, commands.max_demand_reset_now, "reset_max_demand"),
    "time": Setting("[ISO-DATETIME]", (0, 1), _time, commands.set_time, "set_time"),
    "pulse-input-ratio": Setting(
        "LINE N", (2, 2), _ints, commands.pulse_input_ratio, "set_pulse_input_ratio", v4_only=True
    ),
    "pulse-output-ratio": Setting(
        "N", (1, 1), _ints, commands.pulse_output_ratio, "set_pulse_output_ratio", v4_only=True
    ),
    "zero-resettable": Setting("", (0, 0), _none, commands.zero_resettable, "zero_resettable", v4_only=True),
    "lcd": Setting("ITEM… (names or codes)", (1, None), _lcd, commands.lcd, "set_lcd", v4_only=True),
    "weekend-holiday-schedules": Setting(
        "WEEKEND HOLIDAY", (2, 2), _ints, commands.weekend_holiday_schedules, "set_weekend_holiday_schedules"
    ),
    "password": Setting("NEW", (1, 1), _words, commands.change_password, "set_password"),
    "address": Setting("NEW", (1, 1), _words, commands.change_address, "set_address"),
    "schedule": Setting("N HH:MM:TARIFF…", (1, None), _schedule, commands.schedule, "set_schedule"),
    "seasons": Setting("MM-DD:SCHEDULE…", (0, None), _seasons, commands.seasons, "set_seasons"),
    "holidays": Setting("MM-DD…", (0, None), _holidays, commands.holidays, "set_holidays"),
}
"""Every ``set`` SETTING (DESIGN.md §4)."""


def add_meter_commands(sub: Any) -> None:
    """Add ``read``, ``settings`` and ``set`` to the ``ekm-async`` subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("url", metavar="URL", help="/dev/ttyUSB0, COM3, tcp://HOST:PORT, socket://…, rfc2217://…")
    common.add_argument("address", metavar="ADDRESS", help="the meter's 12-digit address")
    common.add_argument("--v3", action="store_true", help="a V3 meter (default V4)")
    common.add_argument("--echo", action="store_true", help="the adapter echoes what it sends")
    common.add_argument("--backend", choices=("pyserial", "serialx"), default="pyserial")
    common.add_argument(
        "--timeout-margin",
        type=float,
        default=0.5,
        dest="timeout_margin",
        metavar="S",
        help="seconds allowed beyond the wire time of each exchange (default 0.5)",
    )

    p = sub.add_parser("read", parents=[common], help="one full read of a meter")
    p.add_argument("--json", action="store_true", help="one JSON object: field → value")
    p.set_defaults(run=_run_read)

    p = sub.add_parser("settings", parents=[common], help="all settings of a meter")
    p.add_argument("--json", action="store_true", help="one JSON object per settings block")
    p.set_defaults(run=_run_settings)

    usage = "\n".join(f"  {name} {s.usage}" + ("   (V4)" if s.v4_only else "") for name, s in SETTINGS.items())
    p = sub.add_parser(
        "set",
        parents=[common],
        help="change one setting of a meter",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"Change one setting; exit status 0 only when the meter acknowledged it.\nSETTINGs:\n{usage}",
    )
    p.add_argument("setting", choices=sorted(SETTINGS), metavar="SETTING")
    p.add_argument("values", nargs="*", metavar="ARG")
    p.add_argument("--password", default="00000000", help="the meter password (default 00000000)")
    p.add_argument("--seconds", type=int, default=0, help="relay: seconds to hold (0: until told)")
    p.set_defaults(run=_run_set)


def _meter_of(bus: Bus, args: argparse.Namespace, password: str = "00000000") -> Meter:
    return bus.v3(args.address, password=password) if args.v3 else bus.v4(args.address, password=password)


def _bus_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"echo": args.echo, "backend": args.backend, "timeout_margin": args.timeout_margin}


def _print_fields(fields: dict[str, Value], out: TextIO) -> None:
    width = max(map(len, fields), default=0)
    for name, value in fields.items():
        out.write(f"{name:<{width}}  {value}\n")


def _guard(run: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run the command; a meter or bus failure is one line on stderr and exit status 1."""
    try:
        return asyncio.run(run())
    except EkmError as exc:
        sys.stderr.write(f"error: {exc}\n")
    except (OSError, TimeoutError) as exc:
        sys.stderr.write(f"error: cannot open the bus: {exc}\n")
    return 1


def _usage_error(command: str, message: str) -> SystemExit:
    """Bad input: said on stderr, exit status 2, nothing opened or sent."""
    sys.stderr.write(f"ekm-async {command}: {message}\n")
    return SystemExit(2)


def _opening(args: argparse.Namespace, command: str) -> BusOpening:
    """The bus to open, with the address, URL and options checked first (nothing opened yet)."""
    try:
        require_address(args.address)
        return open_bus(args.url, **_bus_options(args))
    except ValueError as exc:
        raise _usage_error(command, str(exc)) from None


def _run_read(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    opening = _opening(args, "read")

    async def run() -> int:
        async with opening as bus:
            read = await _meter_of(bus, args).read()
        fields = dict(read.fields)
        out.write(json.dumps(fields) + "\n") if args.json else _print_fields(fields, out)
        return 0

    return _guard(run)


def _run_settings(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    opening = _opening(args, "settings")

    async def run() -> int:
        async with opening as bus:
            settings = await _meter_of(bus, args).read_settings()
        blocks = {name: dict(block.fields) for name, block in settings.blocks().items()}
        if args.json:
            out.write(json.dumps(blocks) + "\n")
        else:
            for name, fields in blocks.items():
                out.write(f"[{name}]\n")
                _print_fields(fields, out)
        return 0

    return _guard(run)


def _run_set(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    setting = SETTINGS[args.setting]
    command = f"set {args.setting}"
    fewest, most = setting.nargs
    if len(args.values) < fewest or (most is not None and len(args.values) > most):
        raise _usage_error(command, f"usage: {args.setting} {setting.usage}")
    if setting.v4_only and args.v3:
        raise _usage_error(command, "V4 meters only")
    try:
        values = setting.parse(args.values, args)
        setting.encode(*values)  # every check, before the bus is opened
        require_password(args.password)
    except ValueError as exc:
        raise _usage_error(command, str(exc)) from None
    opening = _opening(args, command)

    async def run() -> int:
        async with opening as bus:
            meter = _meter_of(bus, args, args.password)
            await getattr(meter, setting.method)(*values)
        out.write(f"ok: {args.setting} acknowledged by {args.address}\n")
        return 0

    return _guard(run)
