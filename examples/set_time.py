"""Set the meter's clock and read it back (ekmmeters: "Set Meter Time", ``setTime()``).

V3 and V4. The meter keeps local wall-clock time (it uses it for its time-of-use tariffs);
``set_time(when)`` sends the fields of ``when`` (weekday computed for you), and ``set_time()`` sends
this computer's local time now. ``read.meter_datetime`` is ``Meter_Time`` as a ``datetime``.
"""

from __future__ import annotations

import argparse
from datetime import datetime

from _common import arguments, example_bus, meter_of, run


async def main(args: argparse.Namespace) -> None:
    async with example_bus(args) as bus:
        meter = meter_of(bus, args)

        await meter.set_time(datetime(2023, 11, 22, 15, 39, 2))  # ekmmeters' example time
        read = await meter.read()
        print(f"meter time: {read.meter_datetime}")  # None if the meter's clock is unreadable

        await meter.set_time()  # back to this computer's clock
        read = await meter.read()
        print(f"meter time: {read.meter_datetime} (computer: {datetime.now():%Y-%m-%d %H:%M:%S})")


if __name__ == "__main__":
    run(main, arguments(__doc__))
