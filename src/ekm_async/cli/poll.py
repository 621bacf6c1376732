"""``ekm-async poll``: poll meters until stopped or N reads; into SQLite, as JSON lines, or a live table."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from rich.markup import escape
from rich.table import Table

from ..blocks import Read
from ..bus import Bus
from ..config import MqttConfig, read_secret
from ..errors import EkmError, StoreError
from ..poller import Poller, ReadEvent
from ..store import SqliteStore
from ..text import number_text
from .buses import (
    add_bus_arguments,
    check_bus_arguments,
    enter_bridge,
    interval_of,
    mqtt_bridge,
    open_meters,
    open_store,
    usage_error,
)
from .service import Output, Stopper, Watch, counted, run_service

__all__ = ["add_poll_command"]

MQTT_PASSWORD_ENV = "EKM_MQTT_PASSWORD"
"""The environment variable the broker password may come from."""
LIVE_FIELDS = (("kWh_Tot", "kWh"), ("RMS_Watts_Tot", "W"), ("RMS_Volts_Ln_1", "V L1"), ("Amps_Ln_1", "A L1"))


def add_poll_command(sub: Any) -> None:
    p = sub.add_parser(
        "poll",
        help="poll meters: a live table, JSON lines, and/or SQLite",
        description=(
            "Poll V4 meters (and V3 meters given with --v3) on the bus at URL until stopped (Ctrl-C) or "
            "--count reads. With --simulate N, poll N simulated V4 meters on a simulated bus instead."
        ),
    )
    add_bus_arguments(p)
    p.add_argument("--count", type=int, metavar="N", help="stop after N reads")
    p.add_argument("--json", action="store_true", help="one JSON line per read on stdout")
    p.add_argument("--mqtt", metavar="URL", help="publish to this MQTT broker: mqtt://host[:port] or mqtts://… (TLS)")
    p.add_argument("--mqtt-prefix", default="ekm", dest="mqtt_prefix", metavar="P", help="topic prefix (default ekm)")
    p.add_argument("--mqtt-username", dest="mqtt_username", metavar="U", help="the broker's login")
    p.add_argument(
        "--mqtt-password-file",
        dest="mqtt_password_file",
        metavar="F",
        help=f"a file holding the broker password (else ${MQTT_PASSWORD_ENV})",
    )
    p.add_argument(
        "--mqtt-ca-file", dest="mqtt_ca_file", metavar="F", help="mqtts: the broker's CA (default: the system's)"
    )
    p.add_argument("--mqtt-client-cert", dest="mqtt_client_cert", metavar="F", help="mqtts: a client certificate")
    p.add_argument("--mqtt-client-key", dest="mqtt_client_key", metavar="F", help="mqtts: its private key")
    p.add_argument(
        "--mqtt-commands",
        dest="mqtt_commands",
        action="store_true",
        help="take relay commands from {prefix}/{meter}/relay/{n}/set (off by default: anyone who may publish "
        "to the broker could switch the relays)",
    )
    p.set_defaults(run=_run_poll)


def _check(args: argparse.Namespace) -> None:
    """Every argument, before anything is opened."""
    check_bus_arguments(args, "poll")
    if args.count is not None and args.count < 1:
        raise usage_error("poll", "--count must be ≥ 1")
    if args.mqtt is not None:
        try:
            from ..mqtt import check_prefix, check_url  # noqa: PLC0415 — aiomqtt is an optional extra
        except ImportError:
            raise usage_error("poll", "--mqtt needs aiomqtt: pip install 'ekm-async[mqtt]'") from None
        if urlsplit(args.mqtt).password:
            sys.stderr.write(
                "ekm-async poll: warning: a password in --mqtt shows in ps and in the shell's history; "
                f"use --mqtt-username with --mqtt-password-file or ${MQTT_PASSWORD_ENV}\n"
            )
        checks = (("--mqtt", check_url, args.mqtt), ("--mqtt-prefix", check_prefix, args.mqtt_prefix))
        for option, check, value in checks:
            try:
                check(value)
            except ValueError as exc:
                raise usage_error("poll", f"{option}: {exc}") from None
        args.mqtt_config = MqttConfig(
            args.mqtt,
            prefix=args.mqtt_prefix,
            ca_file=_path(args.mqtt_ca_file),
            client_cert=_path(args.mqtt_client_cert),
            client_key=_path(args.mqtt_client_key),
            username=args.mqtt_username,
            password=_mqtt_password(args),
            commands=args.mqtt_commands,
        )
        try:  # every other check of the bridge (TLS files with mqtts://, a key with its certificate)
            mqtt_bridge(args.mqtt_config, Poller())  # a poller of its own: nothing starts
        except ValueError as exc:
            raise usage_error("poll", f"--mqtt: {exc}") from None


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _mqtt_password(args: argparse.Namespace) -> str | None:
    """The broker password: from ``--mqtt-password-file``, else ``$EKM_MQTT_PASSWORD``, else none."""
    if args.mqtt_password_file is not None:
        try:
            password = read_secret(args.mqtt_password_file)  # before any event loop runs
        except ValueError as exc:
            raise usage_error("poll", f"--mqtt-password-file: {exc}") from None
    else:
        password = os.environ.get(MQTT_PASSWORD_ENV, "")
    if password and not args.mqtt_username:
        raise usage_error("poll", "an MQTT password needs --mqtt-username")
    return password or None


def _table(
    poller: Poller, bus: Bus, title: str, *, count: int | None = None, store: SqliteStore | None = None
) -> Table:
    """Each meter's last values, ok and error counts, and the latency of its last transaction on the wire;
    below, how far toward ``count`` reads, how many reads ``store`` committed, and an outage of the bus."""
    table = Table(title=title, title_justify="left")
    for name in ("meter", *(label for _, label in LIVE_FIELDS), "ok", "errors", "latency", "last read"):
        table.add_column(name, justify="left" if name in ("meter", "last read") else "right", no_wrap=True)
    statuses = poller.status()
    for address, status in statuses.items():
        read = status.last_read
        values = [_value(read, f) if read else "–" for f, _ in LIVE_FIELDS]
        wire = bus.meter_stats.get(address)
        latency = f"{wire.last_latency * 1000:.0f} ms" if wire and wire.last_latency is not None else "–"
        last = read.time.astimezone().strftime("%H:%M:%S") if read and read.time else "–"
        errors = f"[red]{status.errors}[/red]" if status.errors else "0"
        table.add_row(address, *values, str(status.ok), errors, latency, last)
    below = []
    if count is not None:
        below.append(escape(_progress(sum(status.ok for status in statuses.values()), count)))
    if store is not None:
        below.append(f"{escape(store.path)}: {counted(store.committed, 'read')} committed")
    health = bus.health()
    if health.outage:
        below.append(f"[red]bus unreachable for {health.down_seconds:.0f} s: {escape(health.reason)}[/red]")
    if below:
        table.caption = "\n".join(below)
        table.caption_justify = "left"
    return table


def _value(read: Read, field: str) -> str:
    """A field of ``read`` as the table shows it: with the decimals the meter gives it (1234.50, not
    1234.5 next to 1234.56)."""
    value = read.fields.get(field)
    return "" if value is None else number_text(field, value, read.a.kwh_scale)


def _progress(done: int, count: int, width: int = 20) -> str:
    """``[#####---------------] 10/40 reads``."""
    filled = min(width, done * width // count)
    return f"[{'#' * filled}{'-' * (width - filled)}] {min(done, count)}/{count} reads"


class _Failures:
    """A meter's failed reads as lines: the first of an episode (and any new reason), then one line when
    it is read again — not a line per failed read of a meter that stays down."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self._report = report
        self._failing: dict[str, tuple[str, int]] = {}

    def failed(self, address: str, error: Exception, verbose: bool = False) -> None:
        said = error.brief if isinstance(error, EkmError) and not verbose else str(error)
        message, count = self._failing.get(address, ("", 0))
        if said != message:
            self._report(f"error: {said}")
        self._failing[address] = (said, count + 1)

    def read(self, address: str) -> None:
        if address in self._failing:
            _, count = self._failing.pop(address)
            self._report(f"meter {address} read again after {counted(count, 'failed read')}")


async def _poll(args: argparse.Namespace, stdout: Output, stderr: Output, stopping: list[Stopper]) -> int:
    live = not args.json
    said = stdout if live and stdout.is_terminal and sys.stderr.isatty() else stderr  # lines above the table
    store = _store(args, stderr, lines=said is stderr)
    stopper = Stopper(stderr, pending=lambda: store.pending if store is not None else 0)
    stopping.append(stopper)
    stdout.bind(asyncio.get_running_loop(), stopper.event.set)  # whoever read our output stopped: so do we

    def report(line: str) -> None:
        said.write(line + "\n")

    interval = interval_of(args)
    bridge: Any = None
    code = 0
    try:
        async with contextlib.AsyncExitStack() as stack:
            if store is not None:
                await open_store(stack, store, "poll")
            bus, meters = await _open_meters(stack, args, store)
            observers = [store] if store is not None else []
            poller = Poller(meters, interval=interval, count=args.count, observers=observers, drain_timeout=5.0)
            if args.mqtt is not None:
                bridge = await enter_bridge(stack, args.mqtt_config, poller, "--mqtt")
            await stack.enter_async_context(poller)
            stopper.started()
            stop = asyncio.get_running_loop().create_task(_stop_on(stopper.event, poller))
            stack.callback(stop.cancel)
            title = f"ekm-async poll {escape(bus.url)} — {counted(len(meters), 'meter')}, interval {interval:g} s"
            table = functools.partial(_table, poller, bus, title, count=args.count, store=store)
            redraw = (lambda: stdout.show(table())) if live else None
            watch = Watch(report, [bus], store).start(stack, also=redraw)
            failures = _Failures(report)
            async for event in poller.events():
                if isinstance(event, ReadEvent):
                    failures.read(event.read.address)
                    if args.json:
                        when = (event.read.time or datetime.now(UTC)).isoformat()
                        stdout.write(json.dumps({"time": when, **event.read.fields}) + "\n")
                else:
                    failures.failed(event.address, event.error, args.verbose)
            watch.check()
        if live:
            stdout.show(table())  # the last: the store is closed, every read committed and counted
    except StoreError as exc:
        report(f"error: {exc}")
        code = 1
    except asyncio.CancelledError as exc:
        if not stopper.took_over(exc):
            raise
        return 0
    if bridge is not None and bridge.undelivered:
        report(
            f"error: {bridge.undelivered} MQTT states were not delivered to {bridge.host}:{bridge.port}"
            + (f" ({bridge.last_error})" if bridge.last_error else "")
        )
        code = 1
    return code


async def _open_meters(
    stack: contextlib.AsyncExitStack, args: argparse.Namespace, store: SqliteStore | None
) -> tuple[Bus, list[Any]]:
    bus, meters = await open_meters(stack, args)
    if store is not None:
        bus.add_write_listener(store.record_write)  # MQTT's relay commands, in the writes table
    return bus, meters


async def _stop_on(stop: asyncio.Event, poller: Poller) -> None:
    await stop.wait()
    await poller.aclose()


def _store(args: argparse.Namespace, stderr: Output, *, lines: bool) -> SqliteStore | None:
    """The store of ``--db``; ``lines``: a line on stderr for each commit (not where the table counts them,
    on the terminal stderr shares with it: the lines would scroll it)."""
    if args.db is None:
        return None
    return SqliteStore(args.db, on_commit=_on_commit(stderr, args.db) if lines else None)


def _on_commit(stderr: Output, db: str) -> Callable[[int], None]:
    """A line per commit: the reads it committed, and how many in all."""
    before = 0

    def report(total: int) -> None:
        nonlocal before
        stderr.write(f"committed {counted(total - before, 'read')} to {db} ({total:,} in all)\n")
        before = total

    return report


def _run_poll(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    _check(args)

    def main(stdout: Output, stderr: Output, stoppers: list[Stopper]) -> Any:
        return _poll(args, stdout, stderr, stoppers)

    return run_service(main, out, live=not args.json, stored=bool(args.db))
