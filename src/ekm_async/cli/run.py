"""``ekm-async run --config FILE``: one process polls every bus of a config file, stores, serves and
publishes; ``ekm-async config example|check``: a config to start from, and a check that starts nothing."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
from typing import Any, TextIO

from ..bus import Bus, open_bus
from ..config import BusConfig, Config, ConfigError, example, load
from ..meters import V3Meter, V4Meter
from ..poller import Poller
from ..sim import MeterModel, MeterType, SimBus, SimServer
from ..store import SqliteStore
from .buses import cannot_open, enter_bridge, usage_error
from .serve import serve_until_stopped, start_web, web_app
from .service import CommandError, Output, Stopper, run_service

__all__ = ["add_config_commands", "add_run_command"]

SIM_TURNAROUND = 0.02
"""The built-in simulator's meters answer after 20 ms (as ``ekm-async simulate``'s)."""


def add_run_command(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="poll, store, serve and publish as a config file says",
        description=(
            "Poll every meter of every bus in the config file, store the reads, serve them over HTTP and "
            "publish them to MQTT, as the file says (docs/config.md). A bad file is one line naming the key, "
            "exit status 2, nothing started. Runs until stopped (SIGTERM, Ctrl-C)."
        ),
    )
    p.add_argument("--config", required=True, metavar="FILE", help="the TOML config file")
    p.set_defaults(run=_run)


def add_config_commands(sub: Any) -> None:
    p = sub.add_parser("config", help="a config file to start from, or check one", description="Config files.")
    what = p.add_subparsers(dest="config_command", required=True, metavar="WHAT")
    e = what.add_parser(
        "example",
        help="print a commented config that runs as it is (against the built-in simulator)",
        description="Print a commented config: ekm-async config example > ekm.toml && ekm-async run --config ekm.toml",
    )
    e.set_defaults(run=_example)
    c = what.add_parser(
        "check",
        help="check a config file (secrets included) without starting anything",
        description="Check FILE completely, secrets and certificate files included; exit 0 if it can be run.",
    )
    c.add_argument("file", metavar="FILE")
    c.set_defaults(run=_check)


def _example(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    stdout.write(example())
    return 0


def _load(command: str, path: str) -> Config:
    try:
        config = load(path)
    except ConfigError as exc:
        raise usage_error(command, str(exc)) from None
    if config.mqtt is not None and importlib.util.find_spec("aiomqtt") is None:
        raise usage_error(command, f"{config.path}: mqtt: needs aiomqtt: pip install 'ekm-async[mqtt]'")
    return config


def _check(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    config = _load("config check", args.file)
    stdout.write(f"{config.path}: ok — {_summary(config)}\n")
    return 0


def _summary(config: Config, served: str | None = None) -> str:
    """What a config runs, in one line (``served``: the URL the web service listens at, once it does)."""
    buses = len(config.buses)
    parts = [f"{config.meters} meter{'s' * (config.meters != 1)} on {buses} bus{'es' * (buses != 1)}"]
    if config.store is not None:
        parts.append(f"store {config.store.path}")
    if config.web is not None:
        scheme = "https" if config.web.tls_cert else "http"
        url = served or f"{scheme}://{config.web.host}:{config.web.port}/"
        writes = "writes need a token" if config.web.tokens else "no token: writes refused"
        parts.append(f"{'serving' if served else 'web'} {url} ({writes})")
    if config.mqtt is not None:
        commands = "relay commands on" if config.mqtt.commands else "no commands"
        parts.append(f"MQTT {config.mqtt.url} ({commands})")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------------
# Running


@contextlib.asynccontextmanager
async def _open(bus: BusConfig) -> Any:
    """The bus of ``bus``: at its URL, or the built-in simulator serving its meters."""
    if not bus.simulated:
        async with open_bus(bus.url, **bus.options) as opened:
            yield opened
        return
    models = [
        MeterModel(m.address, MeterType.V4 if m.version == "v4" else MeterType.V3, seed=n, password=m.password)
        for n, m in enumerate(bus.meters)
    ]
    options = {**bus.options, "baud": 9600}
    async with (
        SimServer(SimBus(models, baud=9600, turnaround=SIM_TURNAROUND)) as server,
        open_bus("sim://memory", connect=server.memory_connector(), **options) as opened,
    ):
        yield opened


def _handles(bus: Bus, config: BusConfig) -> list[tuple[V3Meter | V4Meter, float]]:
    return [
        (
            bus.v4(m.address, password=m.password, b_every=m.b_every)
            if m.version == "v4"
            else bus.v3(m.address, password=m.password),
            m.interval,
        )
        for m in config.meters
    ]


async def _serve(config: Config, stdout: Output, stderr: Output, stoppers: list[Stopper]) -> int:
    store = SqliteStore(config.store.path) if config.store is not None else None

    async def start(stack: contextlib.AsyncExitStack) -> list[Bus]:
        buses: list[Bus] = []
        poller = Poller(observers=[store] if store is not None else [], drain_timeout=5.0)
        for bus_config in config.buses:
            try:
                bus = await stack.enter_async_context(_open(bus_config))
            except (OSError, TimeoutError) as exc:
                raise CommandError(cannot_open(bus_config.url, exc)) from None
            buses.append(bus)
            if store is not None:
                bus.add_write_listener(store.record_write)  # the audit trail, in the writes table
            for meter, interval in _handles(bus, bus_config):
                poller.add(meter, interval=interval)
        if config.mqtt is not None:
            await enter_bridge(stack, config.mqtt, poller, f"{config.path}: mqtt")
        await stack.enter_async_context(poller)
        served = None
        if config.web is not None:
            web_config = config.web
            tls = (web_config.tls_cert, web_config.tls_key) if web_config.tls_cert is not None else None
            app = web_app(
                poller,
                store,
                web_config.tokens,
                host=web_config.host,
                allowed_hosts=web_config.allowed_hosts,
                max_streams=web_config.max_streams,
            )
            served = await start_web(stack, app, web_config.host, web_config.port, tls)
        stdout.write(f"running {config.path}: {_summary(config, served)}\n")
        return buses

    return await serve_until_stopped("run", store, stderr, stoppers, start)


def _run(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    config = _load("run", args.config)

    def main(stdout: Output, stderr: Output, stoppers: list[Stopper]) -> Any:
        return _serve(config, stdout, stderr, stoppers)

    return run_service(main, out, stored=config.store is not None)
