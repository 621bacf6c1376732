"""Max demand: its period, its automatic reset interval, and a reset now (ekmmeters: "Max Demand
Period", "Max Demand Reset Interval", "Max Demand Reset Now").

The period and the reset now work on V3 and V4; the automatic reset interval is V4 only.
"""

from __future__ import annotations

import argparse

from _common import arguments, example_bus, meter_of, run
from ekm_async import MaxDemandPeriod, MaxDemandResetInterval, V4Meter


async def main(args: argparse.Namespace) -> None:
    async with example_bus(args) as bus:
        meter = meter_of(bus, args)

        await meter.set_max_demand_period(MaxDemandPeriod.MINUTES_30)  # 30 works as well
        read = await meter.read()
        period = MaxDemandPeriod(int(read.Max_Demand_Period))  # the field holds the code: 1, 2 or 3
        print(f"max demand period: {period.minutes} minutes")

        if isinstance(meter, V4Meter):
            await meter.set_max_demand_reset_interval(MaxDemandResetInterval.DAILY)
            read = await meter.read()
            print(f"max demand reset interval: {MaxDemandResetInterval(int(read.Max_Demand_Reset_Interval)).name}")

        demand = "Max_Demand" if read.v3 else "RMS_Watts_Max_Demand"
        print(f"max demand before the reset: {read[demand]}")
        await meter.reset_max_demand()
        read = await meter.read()
        print(f"max demand after the reset: {read[demand]}")


if __name__ == "__main__":
    run(main, arguments(__doc__))
