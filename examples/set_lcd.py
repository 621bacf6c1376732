"""Choose what the meter's LCD shows (ekmmeters: "LCD Display", ``setLCDCmd()``). V4 only.

The display cycles through 1–40 items, in order. Items are ``LcdItem`` members, their codes, or their
names (``"RMS_Volts_Ln_1"``), so a list from JSON or a form needs no translation. The LCD items
cannot be read back from a meter: look at it.
"""

from __future__ import annotations

import argparse

from _common import arguments, example_bus, run
from ekm_async import LcdItem


async def main(args: argparse.Namespace) -> None:
    async with example_bus(args) as bus:
        meter = bus.v4(args.address)

        await meter.set_lcd([LcdItem.RMS_Volts_Ln_1, LcdItem.Line_Freq])
        print("The meter should now show line 1 volts and the frequency.")

        await meter.set_lcd(["kWh_Tot", "RMS_Watts_Tot", 28])  # names and codes: 28 is Line_Freq
        print("Now it shows total kWh, total watts and the frequency.")


if __name__ == "__main__":
    run(main, arguments(__doc__, v3=False))
