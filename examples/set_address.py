"""Give a meter a new address, read it there, and give it its old address back.

V3 and V4 (EKM's protocol document; ekmmeters has no such call). After ``set_address`` the handle
talks to the new address. The address is also printed on the meter: note where you moved it.
"""

from __future__ import annotations

import argparse

from _common import arguments, example_bus, meter_of, run

NEW_ADDRESS = "000399999999"


async def main(args: argparse.Namespace) -> None:
    async with example_bus(args) as bus:
        meter = meter_of(bus, args)

        await meter.set_address(NEW_ADDRESS)
        read = await meter.read()
        print(f"the meter now answers at {read.address}")

        await meter.set_address(args.address)
        read = await meter.read()
        print(f"and back at {read.address}")


if __name__ == "__main__":
    run(main, arguments(__doc__))
