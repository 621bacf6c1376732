"""Pulse input ratios (lines 1–3) and the pulse output ratio (ekmmeters: "Pulse Input Ratio",
"Pulse Output Ratio"). V4 only.

An input ratio (1–9999) is how many closures of a pulse input count as one pulse; the output ratio
(one of ``PulseOutputRatio``) is how many pulses the meter's pulse output gives per kWh.
"""

from __future__ import annotations

import argparse

from _common import arguments, example_bus, run
from ekm_async import PulseOutputRatio
from ekm_async.model import PulseInput


async def main(args: argparse.Namespace) -> None:
    async with example_bus(args) as bus:
        meter = bus.v4(args.address)

        await meter.set_pulse_input_ratio(PulseInput.LINE_1, 55)  # as ekmmeters' example: line 1, ratio 55
        await meter.set_pulse_input_ratio(2, 100)  # plain numbers work as well
        await meter.set_pulse_output_ratio(PulseOutputRatio.RATIO_5)

        read = await meter.read()
        print("pulse input ratios:", read.Pulse_Ratio_1, read.Pulse_Ratio_2, read.Pulse_Ratio_3)
        print("pulse output ratio:", read.Pulse_Output_Ratio)


if __name__ == "__main__":
    run(main, arguments(__doc__, v3=False))
