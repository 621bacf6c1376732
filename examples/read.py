"""Read a meter once and print a few fields (ekmmeters: "Read", ``request()``).

A V4 read is two blocks (A and B) merged into one ``Read``; a V3 read is one block. Every field is a
native value (``int``, ``float`` or ``str``), by attribute (``read.kWh_Tot``) or in ``read.fields``.
"""

from __future__ import annotations

import argparse
import json

from _common import arguments, example_bus, meter_of, run


async def main(args: argparse.Namespace) -> None:
    async with example_bus(args) as bus:
        meter = meter_of(bus, args)
        read = await meter.read()

    print(f"meter {read.address} (model {read.Model}, firmware {read.Firmware})")
    print(f"meter clock   {read.meter_datetime}")
    print(f"kWh_Tot       {read.kWh_Tot} kWh")
    print(f"Rev_kWh_Tot   {read.Rev_kWh_Tot} kWh")
    print(f"RMS_Watts_Tot {read.RMS_Watts_Tot} W")
    for line in (1, 2, 3):
        volts, amps, watts = (read[f"{name}_Ln_{line}"] for name in ("RMS_Volts", "Amps", "RMS_Watts"))
        print(f"line {line}        {volts} V  {amps} A  {watts} W  power factor {read[f'Power_Factor_Ln_{line}']}")
    print(f"CT_Ratio      {read.CT_Ratio}")
    # Everything, as ekmmeters' jsonRender() would (but with JSON numbers):
    print(json.dumps(dict(read.fields)))


if __name__ == "__main__":
    run(main, arguments(__doc__))
