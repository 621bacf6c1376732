"""Poll several meters on one bus, concurrently, a few rounds (ekmmeters' polling loop, many meters).

    python examples/poll_many.py [URL] [ADDRESS…] [--v3]

One bus has one wire: it runs the reads one after another, in the order they were asked for, so
``asyncio.gather`` is simply the way to ask for all of them at once. A meter that fails does not stop
the others (``return_exceptions=True``: a ``ReplyTimeout``, say, in its place). After a few failures
in a row the bus backs a meter off: its reads fail at once with ``MeterUnavailable`` for a while.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _common import arguments, example_bus, run
from ekm_async import Read

ROUNDS = 3
INTERVAL = 1.0  # seconds from the start of one round to the next (on a real bus)


def row(read: Read) -> str:
    return f"{read.kWh_Tot:>10} kWh  {read.RMS_Watts_Tot:>6} W  {read.RMS_Volts_Ln_1} V"


async def main(args: argparse.Namespace) -> None:
    interval = INTERVAL if args.url else 0.0
    async with example_bus(args) as bus:
        meters = [bus.v3(a) if args.v3 else bus.v4(a) for a in args.addresses]
        for n in range(1, ROUNDS + 1):
            started = time.monotonic()
            results = await asyncio.gather(*(m.read() for m in meters), return_exceptions=True)
            print(f"round {n} ({time.monotonic() - started:.3f} s)")
            for meter, result in zip(meters, results, strict=True):
                if isinstance(result, BaseException):  # this meter failed; the others' reads are still here
                    print(f"  {meter.address}  failed: {result!r}")
                else:
                    print(f"  {meter.address}  {row(result)}")
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


if __name__ == "__main__":
    run(main, arguments(__doc__, many=True))
