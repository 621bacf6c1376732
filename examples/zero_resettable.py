"""Zero the resettable kWh registers (ekmmeters: "Zero Resettable", ``setZeroResettableKWH()``).

V4 only. ``Resettable_kWh_Tot`` and ``Resettable_Rev_kWh_Tot`` count like ``kWh_Tot`` and
``Rev_kWh_Tot`` but can be zeroed, e.g. at the start of each billing period.
"""

from __future__ import annotations

import argparse

from _common import arguments, example_bus, run
from ekm_async import Read


def resettable(read: Read) -> str:
    return f"Resettable_kWh_Tot = {read.Resettable_kWh_Tot}, Resettable_Rev_kWh_Tot = {read.Resettable_Rev_kWh_Tot}"


async def main(args: argparse.Namespace) -> None:
    # A simulated meter starts with some energy on its resettable registers (a real bus ignores this).
    async with example_bus(args, resettable=[123.45, 6.78]) as bus:
        meter = bus.v4(args.address)

        print("before:", resettable(await meter.read()))
        await meter.zero_resettable()
        print("after: ", resettable(await meter.read()))


if __name__ == "__main__":
    run(main, arguments(__doc__, v3=False))
