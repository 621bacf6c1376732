"""``ekm-async poll``: poll meters until stopped or N reads; into SQLite, as JSON lines, or a live table."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..bus import Bus
from ..poller import FailureEvent, Poller, ReadEvent
from ..store import SqliteStore
from .buses import add_bus_arguments, check_bus_arguments, interval_of, meters_from_args, usage_error

__all__ = ["add_poll_command"]

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
    p.add_argument("--mqtt", metavar="URL", help="publish to this MQTT broker (mqtt://[user:pass@]host[:port])")
    p.add_argument("--mqtt-prefix", default="ekm", dest="mqtt_prefix", metavar="P", help="topic prefix (default ekm)")
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
        checks = (("--mqtt", check_url, args.mqtt), ("--mqtt-prefix", check_prefix, args.mqtt_prefix))
        for option, check, value in checks:
            try:
                check(value)
            except ValueError as exc:
                raise usage_error("poll", f"{option}: {exc}") from None


def _table(poller: Poller, bus: Bus, title: str) -> Table:
    """Each meter's last values, ok and error counts, and the latency of its last transaction on the wire."""
    table = Table(title=title, title_justify="left")
    for name in ("meter", *(label for _, label in LIVE_FIELDS), "ok", "errors", "latency", "last read"):
        table.add_column(name, justify="left" if name in ("meter", "last read") else "right", no_wrap=True)
    for address, status in poller.status().items():
        read = status.last_read
        values = [f"{read.fields.get(f, '')}" if read else "–" for f, _ in LIVE_FIELDS]
        wire = bus.meter_stats.get(address)
        latency = f"{wire.last_latency * 1000:.0f} ms" if wire and wire.last_latency is not None else "–"
        last = read.time.astimezone().strftime("%H:%M:%S") if read and read.time else "–"
        errors = f"[red]{status.errors}[/red]" if status.errors else "0"
        table.add_row(address, *values, str(status.ok), errors, latency, last)
    return table


def _on_commit(db: str) -> Any:
    def report(total: int) -> None:
        sys.stderr.write(f"committed {total} reads to {db}\n")
        sys.stderr.flush()

    return report


async def _poll(args: argparse.Namespace, out: TextIO) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    interval = interval_of(args)
    store = SqliteStore(args.db, on_commit=_on_commit(args.db)) if args.db else None
    async with contextlib.AsyncExitStack() as stack:
        if store is not None:
            await stack.enter_async_context(store)
        bus, meters = await stack.enter_async_context(meters_from_args(args))
        observers = [store] if store is not None else []
        poller = Poller(meters, interval=interval, count=args.count, observers=observers, drain_timeout=30.0)
        if args.mqtt is not None:
            from ..mqtt import MqttBridge  # noqa: PLC0415 — optional extra, checked in _check

            # Entered before the poller: on the way out the poller drains into it, then it publishes.
            await stack.enter_async_context(MqttBridge(poller, args.mqtt, prefix=args.mqtt_prefix))
        await stack.enter_async_context(poller)
        stopper = loop.create_task(_stop_on(stop, poller))
        title = f"ekm-async poll {bus.url} — {len(meters)} meters, interval {interval:g} s"
        live = (
            None
            if args.json
            else stack.enter_context(
                Live(
                    _table(poller, bus, title),
                    console=Console(file=out, width=None if out.isatty() else 120),
                    refresh_per_second=4,
                )
            )
        )
        shown = 0.0
        async for event in poller.events():
            if isinstance(event, ReadEvent) and args.json:
                when = (event.read.time or datetime.now(UTC)).isoformat()
                out.write(json.dumps({"time": when, **event.read.fields}) + "\n")
                out.flush()
            elif isinstance(event, FailureEvent):
                sys.stderr.write(f"error: {event.error}\n")
            if live is not None and time.monotonic() - shown > 0.25:
                live.update(_table(poller, bus, title))
                shown = time.monotonic()
        if live is not None:
            live.update(_table(poller, bus, title))
        stopper.cancel()
    if not args.json and not out.isatty():
        out.write("\n")  # a terminal gets its newline from rich; a file or pipe does not
    return 0


async def _stop_on(stop: asyncio.Event, poller: Poller) -> None:
    await stop.wait()
    await poller.aclose()


def _run_poll(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    _check(args)
    try:
        return asyncio.run(_poll(args, out))
    except BrokenPipeError:  # whoever read our output stopped reading: so do we
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 — nothing more may reach the closed pipe
        return 0
    except (OSError, TimeoutError) as exc:
        sys.stderr.write(f"error: cannot open the bus: {exc}\n")
        return 1
