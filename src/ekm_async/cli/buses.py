"""What ``poll`` and ``serve`` share: the bus and meters to use, from a URL or a simulation."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from typing import Any

from .._transport import open_hint
from ..bus import Bus, open_bus
from ..config import MqttConfig, read_secret
from ..meters import V3Meter, V4Meter
from ..poller import Poller
from ..sim import MeterModel, MeterType, SimBus, SimServer
from ..store import SqliteStore
from ..wire import require_address, require_password
from .service import CommandError

__all__ = [
    "PASSWORD_ENV",
    "add_bus_arguments",
    "add_password_options",
    "add_wire_options",
    "bus_options",
    "cannot_open",
    "check_bus_arguments",
    "enter_bridge",
    "meter_password",
    "meters_from_args",
    "mqtt_bridge",
    "open_meters",
    "open_store",
    "usage_error",
]

SIMULATED_FIRST = 300001184
PASSWORD_ENV = "EKM_PASSWORD"
"""The environment variable a meter password may come from."""
FACTORY_PASSWORD = "00000000"


def add_bus_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", nargs="?", metavar="URL", help="the bus (not with --simulate)")
    p.add_argument("addresses", nargs="*", metavar="ADDRESS", help="V4 meters (12 digits)")
    p.add_argument(
        "--v3", action="extend", nargs="+", default=[], metavar="ADDRESS", help="V3 meters (one or more; repeatable)"
    )
    p.add_argument(
        "--interval",
        type=float,
        metavar="S",
        help="seconds between reads of each meter (default 10; with --simulate 0: as fast as the wire)",
    )
    p.add_argument("--db", metavar="FILE", help="store every read in this SQLite file")
    p.add_argument("--simulate", type=int, metavar="N", help="N simulated V4 meters on a simulated bus (no hardware)")
    p.add_argument(
        "--sim-baud",
        type=int,
        choices=(9600, 0),
        default=9600,
        dest="sim_baud",
        help="pace the simulated wire at 9600 baud (default) or not at all (0)",
    )
    add_password_options(p)
    add_wire_options(p)


def add_wire_options(p: argparse.ArgumentParser, *, hidden: bool = False) -> None:
    """How the bus talks to the wire: the options every command that opens a bus takes. ``hidden``: again,
    after a subcommand's arguments (not shown, and not reset when left out there)."""

    def add(*names: str, help: str, **kwargs: Any) -> None:
        if hidden:
            kwargs["default"] = argparse.SUPPRESS
        p.add_argument(*names, help=argparse.SUPPRESS if hidden else help, **kwargs)

    add(
        "--echo",
        choices=("auto", "on", "off"),
        default="auto",
        help="the adapter's local echo: auto (default: dropped when it comes), on (always comes), off",
    )
    add("--backend", choices=("pyserial", "serialx"), default="pyserial", help="serial devices: pyserial or serialx")
    add(
        "--timeout-margin",
        type=float,
        default=0.5,
        dest="timeout_margin",
        metavar="S",
        help="seconds allowed beyond the wire time of each exchange (default 0.5)",
    )
    add("--capture", metavar="FILE", help="write every byte both ways to FILE (JSON lines, passwords redacted)")
    add(
        "--verbose",
        action="store_true",
        default=False,
        help="with an error, also the bytes the meter sent (for a bug report)",
    )
    add(
        "--strict",
        action="store_true",
        default=False,
        help="reject a frame that lacks a byte only a guess expects (default: deliver it flagged)",
    )


def add_password_options(p: argparse.ArgumentParser, *, hidden: bool = False) -> None:
    """Where the meter password comes from: ``--password-file``, else ``$EKM_PASSWORD``, else the factory
    password; ``--password`` still works but shows in ``ps`` and the shell's history. ``hidden``: again,
    after a subcommand's arguments."""
    suppress: dict[str, Any] = {"default": argparse.SUPPRESS} if hidden else {}
    helps = {
        "--password-file": f"a file holding the meter password (else ${PASSWORD_ENV}, else 00000000)",
        "--password": "the meter password on the command line (shows in ps: prefer --password-file)",
    }
    for option, text in helps.items():
        dest = option.removeprefix("--").replace("-", "_")
        metavar = "F" if option == "--password-file" else "P"
        p.add_argument(option, dest=dest, metavar=metavar, help=argparse.SUPPRESS if hidden else text, **suppress)


def meter_password(args: argparse.Namespace, command: str) -> str:
    """The meter password of ``args`` (8 digits, checked; never repeated in an error)."""
    given, file = getattr(args, "password", None), getattr(args, "password_file", None)
    if given is not None and file is not None:
        raise usage_error(command, "give --password or --password-file, not both")
    if file is not None:
        try:
            password = read_secret(file)  # before any event loop runs: nothing to block
        except ValueError as exc:
            raise usage_error(command, f"--password-file: {exc}") from None
        source = f"the password in {file}"
    elif given is not None:
        sys.stderr.write(
            f"ekm-async {command}: warning: a password on the command line shows in ps and in the shell's "
            f"history; use --password-file or ${PASSWORD_ENV}\n"
        )
        password, source = given, "--password"
    elif PASSWORD_ENV in os.environ:
        password, source = os.environ[PASSWORD_ENV], f"${PASSWORD_ENV}"
    else:
        return FACTORY_PASSWORD
    try:
        return require_password(password, source)
    except ValueError as exc:
        raise usage_error(command, str(exc)) from None


def bus_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`~ekm_async.open_bus` options of the command line's wire options (``ValueError``,
    naming the option, for a value the bus cannot take)."""
    if not 0 < args.timeout_margin < math.inf:
        raise ValueError(f"--timeout-margin must be a number of seconds above 0, e.g. 0.5; got {args.timeout_margin:g}")
    return {
        "echo": args.echo,
        "backend": args.backend,
        "timeout_margin": args.timeout_margin,
        "capture": args.capture,
        "strict": args.strict,
    }


def cannot_open(url: str, exc: BaseException) -> str:
    """One line: the bus that could not be opened, and why, in the user's words."""
    return f"cannot open the bus at {url}: {open_hint(exc) or exc or type(exc).__name__}"


def usage_error(command: str, message: str) -> SystemExit:
    """Bad input: said on stderr, exit status 2, nothing opened."""
    sys.stderr.write(f"ekm-async {command}: {message}\n")
    return SystemExit(2)


def check_bus_arguments(args: argparse.Namespace, command: str) -> None:
    """Every bus argument, before anything is opened."""
    if args.simulate is not None:
        if args.url or args.addresses or args.v3:
            raise usage_error(command, "--simulate takes no URL or addresses")
        if not 1 <= args.simulate <= 999:
            raise usage_error(command, "--simulate N: N must be 1..999")
    elif not args.url or not (args.addresses or args.v3):
        raise usage_error(command, "give URL and at least one ADDRESS (or --simulate N)")
    if args.interval is not None and not 0 <= args.interval < math.inf:
        raise usage_error(command, f"--interval must be a number of seconds, 0 or more; got {args.interval:g}")
    args.meter_password = meter_password(args, command)
    try:
        for address in [*args.addresses, *args.v3]:
            require_address(address)
        options = bus_options(args)
        if args.url:
            open_bus(args.url, **options)
    except ValueError as exc:
        raise usage_error(command, str(exc)) from None


def interval_of(args: argparse.Namespace) -> float:
    """The polling interval: as given, else as fast as the wire for a simulation, else 10 s."""
    if args.interval is not None:
        return float(args.interval)
    return 0.0 if args.simulate else 10.0


@contextlib.asynccontextmanager
async def meters_from_args(args: argparse.Namespace) -> AsyncIterator[tuple[Bus, list[V3Meter | V4Meter]]]:
    """The bus (opened) and its meter handles: at URL, or N simulated meters on an in-process bus."""
    if args.simulate is None:
        password = args.meter_password
        async with open_bus(args.url, **bus_options(args)) as bus:
            v4 = [bus.v4(a, password=password) for a in args.addresses]
            yield bus, [*v4, *(bus.v3(a, password=password) for a in args.v3)]
        return
    models = [MeterModel(f"{SIMULATED_FIRST + n:012d}", MeterType.V4, seed=n) for n in range(args.simulate)]
    turnaround = 0.02 if args.sim_baud else 0.001
    async with (
        SimServer(SimBus(models, baud=args.sim_baud, turnaround=turnaround)) as server,
        open_bus("sim://memory", connect=server.memory_connector(), **bus_options(args)) as bus,
    ):
        yield bus, [bus.v4(m.address) for m in models]


async def open_meters(
    stack: contextlib.AsyncExitStack, args: argparse.Namespace
) -> tuple[Bus, list[V3Meter | V4Meter]]:
    """:func:`meters_from_args` entered on ``stack``; a bus that cannot be opened is a :class:`CommandError`."""
    try:
        return await stack.enter_async_context(meters_from_args(args))
    except (OSError, TimeoutError) as exc:
        raise CommandError(cannot_open(args.url, exc)) from None


def mqtt_bridge(mqtt: MqttConfig, poller: Poller) -> Any:
    """The :class:`~ekm_async.mqtt.MqttBridge` of ``mqtt`` for ``poller``, not started (aiomqtt is an
    optional extra: its caller has checked that it is there). ``ValueError`` for what it cannot use."""
    from ..mqtt import MqttBridge  # noqa: PLC0415 — optional extra

    return MqttBridge(
        poller,
        mqtt.url,
        prefix=mqtt.prefix,
        discovery_prefix=mqtt.discovery_prefix,
        username=mqtt.username,
        password=mqtt.password,
        ca_file=mqtt.ca_file,
        client_cert=mqtt.client_cert,
        client_key=mqtt.client_key,
        commands=mqtt.commands,
    )


async def enter_bridge(stack: contextlib.AsyncExitStack, mqtt: MqttConfig, poller: Poller, where: str) -> Any:
    """:func:`mqtt_bridge` started on ``stack``; TLS files it cannot use are a :class:`CommandError`
    (status 2) that begins with ``where``. Enter it before the poller: on the way out the poller drains
    into it, then it publishes."""
    try:
        return await stack.enter_async_context(mqtt_bridge(mqtt, poller))
    except ValueError as exc:
        raise CommandError(f"{where}: {exc}", 2) from None


async def open_store(stack: contextlib.AsyncExitStack, store: SqliteStore, command: str) -> None:
    """``store`` opened on ``stack``; a file that cannot be used is a :class:`CommandError` (status 2)."""
    try:
        await stack.enter_async_context(store)
    except (sqlite3.Error, RuntimeError, OSError) as exc:
        raise CommandError(f"cannot use {store.path} as the database: {_unusable(store.path, exc)}", 2) from None


def _unusable(path: str | os.PathLike[str], exc: BaseException) -> str:
    """Why ``path`` cannot be the database, and what to try, in the user's words."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"the directory {folder} does not exist: make it, or give a file in a directory that does"
    if os.path.isdir(path):
        return "that is a directory: give a file name in it, e.g. " + os.path.join(path, "reads.db")
    if os.path.exists(path) and not os.path.isfile(path):
        return "that is not a regular file: give the name of a new file, or of a database --db made before"
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return "it is not an SQLite database: give the name of a new file, or of a database --db made before"
    if isinstance(exc, sqlite3.OperationalError | PermissionError) and not os.access(path, os.W_OK):
        return "this user may not write it"
    return str(exc) or "it cannot be opened"
