"""``ekm-async simulate``: serve a simulated bus until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import TextIO

from .arrival import Arrival
from .bus import LocalEcho, SimBus
from .faults import Fault
from .meter import MeterModel, MeterType
from .servers import SimServer

__all__ = ["build_bus", "run_simulator"]

DEFAULT_METERS = [("v4", "000300001184")]


def build_bus(args: argparse.Namespace) -> SimBus:
    """The bus the ``simulate`` arguments describe (``ValueError`` for a bad fault spec)."""
    meters = [
        MeterModel(address, MeterType(kind), seed=args.seed, time_scale=args.time_scale)
        for kind, address in (args.meter or DEFAULT_METERS)
    ]
    faults = [Fault.parse(spec) for spec in args.fault]
    return SimBus(
        meters,
        baud=args.baud,
        turnaround=args.turnaround,
        echo=args.echo,
        arrival=Arrival.parse(args.arrival) if args.arrival else None,
        faults=faults,
        seed=args.seed,
    )


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def _serve(bus: SimBus, args: argparse.Namespace, out: TextIO) -> None:
    """Serve until SIGINT, SIGTERM or SIGHUP (unless ignored, as under ``nohup``): it stops at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = [sig for sig in _STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    async with SimServer(bus) as server:
        where = []
        if args.tcp:
            host, port = await server.start_tcp(*args.tcp)
            where.append(f"tcp={host}:{port}")
        if args.pty:
            where.append(f"pty={await server.start_pty(args.pty)}")
        meters = ",".join(f"{m.type.value}:{m.address}" for m in bus.meters)
        arrival = bus.arrival.name if bus.arrival else "default"
        out.write(
            f"ready {' '.join(where)} meters={meters} baud={bus.baud} seed={bus.seed} arrival={arrival}"
            f" echo={LocalEcho.of(bus.echo).value}\n"
        )
        out.flush()
        await stop.wait()
    for sig in signals:
        with contextlib.suppress(ValueError, RuntimeError):
            loop.remove_signal_handler(sig)


def run_simulator(args: argparse.Namespace, out: TextIO) -> int:
    if not args.tcp and not args.pty:
        raise SystemExit("ekm-async simulate: give --tcp HOST:PORT and/or --pty LINK")
    try:
        bus = build_bus(args)
    except ValueError as exc:
        raise SystemExit(f"ekm-async simulate: {exc}") from None
    try:
        asyncio.run(_serve(bus, args, out))
    except OSError as exc:  # the port is taken, the pty link cannot be made, …
        raise SystemExit(f"ekm-async simulate: {exc.strerror or exc}") from None
    return 0
