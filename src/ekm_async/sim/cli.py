"""``ekm-async simulate``: serve a simulated bus until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import math
import os
import signal
import sys
from typing import TextIO

from .._transport import listen_hint
from .arrival import Arrival
from .bus import MAX_TURNAROUND, LocalEcho, SimBus
from .faults import Fault
from .meter import MeterModel, MeterType
from .servers import SimServer

__all__ = ["build_bus", "run_simulator"]

DEFAULT_METERS = [("v4", "000300001184")]


def build_bus(args: argparse.Namespace) -> SimBus:
    """The bus the ``simulate`` arguments describe (``ValueError``, naming the option, for a bad one)."""
    if not 0 <= args.turnaround <= MAX_TURNAROUND:
        raise ValueError(f"--turnaround must be from 0 to {MAX_TURNAROUND:g} seconds; got {args.turnaround:g}")
    if not 0 <= args.time_scale < math.inf:
        raise ValueError(
            f"--time-scale must be a number of simulated seconds per second, 0 or more (0: values stand still); "
            f"got {args.time_scale:g}"
        )
    meters = [
        MeterModel(address, MeterType(kind), seed=args.seed, time_scale=args.time_scale)
        for kind, address in (args.meter or DEFAULT_METERS)
    ]
    faults = [Fault.parse(spec, option="--fault") for spec in args.fault]
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
            host, port = args.tcp
            try:
                host, port = await server.start_tcp(host, port)
            except OSError as exc:
                raise _CannotServe(_cannot_listen(host, port, exc)) from None
            where.append(f"tcp={host}:{port}")
        if args.pty:
            try:
                where.append(f"pty={await server.start_pty(args.pty)}")
            except OSError as exc:
                raise _CannotServe(_cannot_link(args.pty, exc)) from None
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


def _bad_input(message: str) -> SystemExit:
    """Bad input: one line on stderr, exit status 2 (as every command), nothing served."""
    sys.stderr.write(f"ekm-async simulate: {message}\n")
    return SystemExit(2)


def run_simulator(args: argparse.Namespace, out: TextIO) -> int:
    if not args.tcp and not args.pty:
        raise _bad_input("give --tcp HOST:PORT and/or --pty LINK")
    try:
        bus = build_bus(args)
    except ValueError as exc:
        raise _bad_input(str(exc)) from None
    try:
        asyncio.run(_serve(bus, args, out))
    except _CannotServe as exc:  # the port is taken, the pty link cannot be made, …
        raise SystemExit(f"ekm-async simulate: {exc}") from None
    return 0


class _CannotServe(Exception):
    """The simulator cannot listen where it was asked to: the one line that says why."""


def _cannot_listen(host: str, port: int, exc: OSError) -> str:
    return f"cannot listen on --tcp {host}:{port}: {listen_hint(exc)}"


def _cannot_link(link: str, exc: OSError) -> str:
    folder = os.path.dirname(os.path.abspath(link))
    hints = {
        errno.ENOENT: f"the directory {folder} does not exist",
        errno.EISDIR: "that is a directory: give the name of the link to make in it",
        errno.EACCES: f"this user may not write in {folder}",
    }
    return f"cannot make the pty link --pty {link}: {hints.get(exc.errno or 0) or exc.strerror or exc}"
