"""Simulated RS-485 gateways for ``bench_scale.py``: many simulated buses served from one process.

Each bus is a :class:`~ekm_async.sim.SimBus` of ``--meters`` V4 meters behind its own
:class:`~ekm_async.sim.SimServer` TCP listener on 127.0.0.1 (an RS-485 to Ethernet gateway per bus), so a
process can stand in for many gateways. ``bench_scale.py`` spreads its buses over several such
processes and starts each as

    python benchmarks/_scale_sim.py --first-bus I --buses K --meters M --baud B --turnaround T --watch-stdin

Once every listener is up it prints one JSON line, ``{"pid": …, "ports": [port of bus I, I+1, …],
"pty": …}``, and serves until SIGTERM or SIGINT (or, with ``--watch-stdin``, until its stdin reaches end
of file: the benchmark holds the pipe, so the simulators go when it goes, however it ends). With
``--pty LINK`` the first bus is also served on a pty, for serial clients (the vendor's).

Meter addresses come from :func:`meter_address` (bus, meter): unique over all buses, as one poller
needs. A simulated bus records every transaction it serves (``SimBus.transactions``); for a run of
hundreds of thousands of reads that record is cleared every ``--trim-every`` seconds so the simulators'
memory stays bounded (the poller's memory is what the benchmark measures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys

from _harness import parser
from ekm_async.sim import Arrival, MeterModel, MeterType, SimBus, SimServer

ADDRESS_BASE = 300_000_000_000


def meter_address(bus: int, meter: int) -> str:
    """The 12-digit address of meter ``meter`` (0-based) on bus ``bus`` (0-based): unique over all buses."""
    return f"{ADDRESS_BASE + bus * 1000 + meter:012d}"


def build_buses(
    first: int, count: int, *, meters: int, baud: int, turnaround: float, seed: int, arrival: Arrival | None = None
) -> list[SimBus]:
    """Buses ``first`` … ``first + count - 1``, each with ``meters`` V4 meters, handing bytes over as ``arrival``."""
    return [
        SimBus(
            [MeterModel(meter_address(b, m), MeterType.V4, seed=seed) for m in range(meters)],
            baud=baud,
            turnaround=turnaround,
            seed=seed,
            arrival=arrival,
        )
        for b in range(first, first + count)
    ]


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.watch_stdin:
        fd = sys.stdin.fileno()
        os.set_blocking(fd, False)

        def readable() -> None:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return
            if not data:  # the benchmark is gone (or closed the pipe): stop
                loop.remove_reader(fd)
                stop.set()

        loop.add_reader(fd, readable)
    buses = build_buses(
        args.first_bus,
        args.buses,
        meters=args.meters,
        baud=args.baud,
        turnaround=args.turnaround,
        seed=args.seed,
        arrival=Arrival.parse(args.arrival) if args.arrival else None,
    )
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(SimServer(bus)) for bus in buses]
        ports = [(await server.start_tcp("127.0.0.1", 0))[1] for server in servers]
        pty = await servers[0].start_pty(args.pty) if args.pty else None
        print(json.dumps({"pid": os.getpid(), "ports": ports, "pty": pty}), flush=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.trim_every):
                    await stop.wait()
            for bus in buses:
                bus.transactions.clear()


def main(argv: list[str] | None = None) -> int:
    options = parser(__doc__, json_help=None)
    options.add_argument("--first-bus", type=int, default=0, help="index of the first bus served (default 0)")
    options.add_argument("--buses", type=int, required=True, help="how many buses to serve")
    options.add_argument("--meters", type=int, default=10, help="V4 meters per bus (default 10)")
    options.add_argument("--baud", type=int, default=9600, help="wire speed for pacing; 0: unpaced (default 9600)")
    options.add_argument("--turnaround", type=float, default=0.02, help="meter turnaround, seconds (default 0.02)")
    options.add_argument("--seed", type=int, default=0)
    options.add_argument("--arrival", help="how the buses hand over bytes: bytes, slices (default), ftdi, …")
    options.add_argument("--trim-every", type=float, default=1.0, help="seconds between clearing transaction records")
    options.add_argument("--pty", metavar="LINK", help="serve the first bus on a pty too, LINK a symlink to it")
    options.add_argument("--watch-stdin", action="store_true", help="stop when stdin reaches end of file")
    args = options.parse_args(argv)
    if args.buses < 1 or args.meters < 1 or args.meters > 1000 or args.first_bus < 0 or args.trim_every <= 0:
        options.error("--buses ≥ 1, 1 ≤ --meters ≤ 1000, --first-bus ≥ 0 and --trim-every > 0")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
