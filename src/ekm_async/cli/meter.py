"""``ekm-async read``, ``settings`` and ``set``: one meter, one command."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

from ..bus import Bus, BusOpening, open_bus
from ..catalogue import SETTINGS, Effect, SettingSpec
from ..errors import EkmError, FrameError, ReplyTimeout
from ..meters import V3Meter, V4Meter
from ..text import read_text, settings_text
from ..wire import require_address
from .buses import PASSWORD_ENV, add_password_options, add_wire_options, bus_options, cannot_open, meter_password

__all__ = ["add_meter_commands"]

Meter = V3Meter | V4Meter


def add_meter_commands(sub: Any) -> None:
    """Add ``read``, ``settings`` and ``set`` to the ``ekm-async`` subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("url", metavar="URL", help="/dev/ttyUSB0, COM3, tcp://HOST:PORT, socket://…, rfc2217://…")
    common.add_argument("address", metavar="ADDRESS", help="the meter's 12-digit address")
    common.add_argument("--v3", action="store_true", help="a V3 meter (default V4)")
    add_wire_options(common)

    p = sub.add_parser(
        "read",
        parents=[common],
        help="one full read of a meter",
        description="One full read: a table per line with units, then every other field. With --json, one "
        "JSON object: field → value (every field: docs/fields.md).",
    )
    p.add_argument("--json", action="store_true", help="one JSON object: field → value")
    p.set_defaults(run=_run_read)

    p = sub.add_parser(
        "settings",
        parents=[common],
        help="all settings of a meter",
        description="Every setting of a meter, read in one session: schedules, seasons, weekends and "
        "holidays, and six months of totals. With --json, one JSON object: block → field → value.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object: settings block → field → value")
    p.set_defaults(run=_run_settings)

    usage = "\n".join(
        f"  {spec.name} {spec.usage}".rstrip() + ("   (V4)" if spec.v4_only else "") for spec in SETTINGS.values()
    )
    p = sub.add_parser(
        "set",
        parents=[common],
        help="change one setting of a meter",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"Change one setting; exit status 0 only when the meter acknowledged it.\nSETTINGs:\n{usage}",
    )
    options = _setting_options()
    add_password_options(p)
    settings = p.add_subparsers(dest="setting", metavar="SETTING", required=True)
    for spec in SETTINGS.values():
        stdin_note = (
            " NEW may be -: read from stdin (then it shows in no process list)."
            if spec.effect is Effect.PASSWORD
            else ""
        )
        q = settings.add_parser(
            spec.name,
            parents=[options],
            help=spec.summary + (" (V4 only)" if spec.v4_only else ""),
            description=f"{spec.summary}.{stdin_note}",
        )
        positional = " ".join(a.usage for a in spec.arguments if a.option is None)
        if positional:
            q.add_argument("words", nargs="*", metavar=positional)
        for argument in spec.arguments:
            if argument.option is not None:
                q.add_argument(argument.option, dest=argument.name, metavar=argument.usage, default=None)
        q.set_defaults(run=_run_set, spec=spec)


def _setting_options() -> argparse.ArgumentParser:
    """The options of ``set`` also after the SETTING's arguments, where users put them (not reset there
    when left out)."""
    options = argparse.ArgumentParser(add_help=False)
    add_password_options(options, hidden=True)
    options.add_argument("--v3", action="store_true", default=argparse.SUPPRESS, help="a V3 meter")
    add_wire_options(options, hidden=True)
    return options


def _meter_of(bus: Bus, args: argparse.Namespace, password: str = "00000000") -> Meter:
    return bus.v3(args.address, password=password) if args.v3 else bus.v4(args.address, password=password)


def _user() -> str:
    """Who runs the command (for the audit trail)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (a container)
        return f"uid {os.getuid()}"


def _guard(run: Callable[[], Coroutine[Any, Any, int]], args: argparse.Namespace) -> int:
    """Run the command; a meter or bus failure is one line on stderr and exit status 1 (the bytes the
    meter sent only with ``--verbose``)."""
    try:
        return asyncio.run(run())
    except EkmError as exc:
        said = str(exc) if args.verbose else exc.brief
        if isinstance(exc, ReplyTimeout):
            said += " (leave out --v3 for a V4 meter)" if args.v3 else " (add --v3 for a V3 meter)"
        elif isinstance(exc, FrameError):
            said += " — a damaged reply, after every retry: check the wiring, the line's termination and that "
            said += "no two meters share the address" + ("" if args.verbose else " (--verbose shows the bytes)")
        sys.stderr.write(f"error: {said}\n")
    except BrokenPipeError:
        raise  # whoever read our output stopped reading (`… | head`): main() ends quietly
    except (OSError, TimeoutError) as exc:
        sys.stderr.write(f"error: {cannot_open(args.url, exc)}\n")
    return 1


def _usage_error(command: str, message: str) -> SystemExit:
    """Bad input: said on stderr, exit status 2, nothing opened or sent."""
    sys.stderr.write(f"ekm-async {command}: {message}\n")
    return SystemExit(2)


def _opening(args: argparse.Namespace, command: str) -> BusOpening:
    """The bus to open, with the address, URL and options checked first (nothing opened yet)."""
    try:
        require_address(args.address)
        return open_bus(args.url, **bus_options(args))
    except ValueError as exc:
        raise _usage_error(command, str(exc)) from None


def _run_read(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    opening = _opening(args, "read")

    async def run() -> int:
        async with opening as bus:
            read = await _meter_of(bus, args).read()
        out.write(json.dumps(dict(read.fields)) + "\n" if args.json else read_text(read))
        return 0

    return _guard(run, args)


def _run_settings(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    opening = _opening(args, "settings")

    async def run() -> int:
        async with opening as bus:
            settings = await _meter_of(bus, args).read_settings()
        if args.json:
            out.write(json.dumps({name: dict(block.fields) for name, block in settings.blocks().items()}) + "\n")
        else:
            out.write(settings_text(settings))
        return 0

    return _guard(run, args)


def _run_set(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    spec: SettingSpec = args.spec
    command = f"set {spec.name}"
    if spec.v4_only and args.v3:
        raise _usage_error(command, f"{spec.name} is a V4 setting: a V3 meter has none")
    try:
        options = {a.option: getattr(args, a.name) for a in spec.arguments if a.option is not None}
        words = getattr(args, "words", [])
        if spec.effect is Effect.PASSWORD and words == ["-"]:  # the new password from stdin: not in ps
            words = [stdin.readline().strip("\r\n")]
        arguments = spec.parse(words, options)
        spec.request(**arguments)  # every check, before the bus is opened
    except ValueError as exc:
        raise _usage_error(command, str(exc)) from None
    password = meter_password(args, command)
    opening = _opening(args, command)

    async def run() -> int:
        async with opening as bus:
            await _meter_of(bus, args, password).apply(spec, actor=f"cli {_user()}", **arguments)
        out.write(f"ok: {spec.name} acknowledged by {args.address}\n")
        if spec.effect is Effect.PASSWORD:
            sys.stderr.write(
                f"note: meter {args.address} has a new password: update its password file, ${PASSWORD_ENV} or "
                "its password_file/password_env in the config of ekm-async run, which still hold the old one\n"
            )
        return 0

    return _guard(run, args)
