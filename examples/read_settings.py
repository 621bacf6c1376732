"""Read all the settings of a meter and walk them (ekmmeters: "Read Settings", ``readSettings()``).

One call reads five blocks in one session: months forward and reverse, schedules 1–4 with the
seasons, schedules 5–8, and the holidays with the weekend and holiday schedules.
"""

from __future__ import annotations

import argparse

from _common import arguments, example_bus, meter_of, run
from ekm_async.text import settings_text


async def main(args: argparse.Namespace) -> None:
    async with example_bus(args) as bus:
        settings = await meter_of(bus, args).read_settings()

    # All of it as `ekm-async settings` prints it: schedules, seasons, weekends, holidays, months.
    print(settings_text(settings))

    # Walking it yourself. Schedules are numbered 1–8 and tariffs 1–4, as in the field names
    # (Schedule_1_Period_1_Tariff, kWh_Tariff_1) and on the meter's display.
    schedules = settings.schedules.schedules() | settings.schedules_5_8.schedules()
    first = schedules[1][0]
    print(f"Schedule 1 starts at {first.hour:02d}:{first.minute:02d} with tariff {first.tariff}")
    season = settings.schedules.seasons()[0]
    print(f"Season 1 starts on {season.month:02d}-{season.day:02d} with schedule {season.schedule}")
    month = settings.months_forward.months()[0]
    print(f"Month 1: {month.total} kWh, of which tariff 1 {month.tariffs[0]} kWh")
    print(f"Weekend schedule = {settings.holidays.Weekend_Schd}, holiday schedule = {settings.holidays.Holiday_Schd}")


if __name__ == "__main__":
    run(main, arguments(__doc__))
