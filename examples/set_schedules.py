"""Time-of-use tariffs: schedules, seasons, holidays, weekend and holiday schedules (ekmmeters:
"Set Schedule Tariffs", "Season Schedules", "Holiday Dates", ``setWeekendHolidaySchedules()``).

V3 and V4. A meter has 8 schedules (0–7 when written, ``Schedule_1``…``Schedule_8`` when read), each
of up to 4 periods: from ``Period(hour, minute, tariff)`` on, tariff 0–3 counts the energy. Seasons
say from which date on a schedule applies; holidays and weekends have a schedule of their own.
Every value is checked before anything is sent (``ValueError``).
"""

from __future__ import annotations

import argparse

from _common import arguments, example_bus, meter_of, run
from ekm_async import MonthDay, Period, Season

WINTER, SUMMER, WEEKENDS = 0, 1, 2  # schedule numbers as written


async def main(args: argparse.Namespace) -> None:
    async with example_bus(args) as bus:
        meter = meter_of(bus, args)

        # ekmmeters' example: rate 1 from midnight, 2 from 5:30, 3 from noon, 1 again from 17:30.
        await meter.set_schedule(WINTER, [Period(0, 0, 1), Period(5, 30, 2), Period(12, 0, 3), Period(17, 30, 1)])
        await meter.set_schedule(SUMMER, [(0, 0, 1), (11, 0, 3), (19, 0, 1)])  # tuples work too
        await meter.set_schedule(WEEKENDS, [Period(0, 0, 1)])  # unused periods are sent as zeros
        await meter.set_seasons([Season(1, 1, WINTER), Season(6, 1, SUMMER), Season(9, 15, WINTER)])
        await meter.set_holidays([MonthDay(1, 1), MonthDay(7, 4), MonthDay(12, 25), (12, 26)])
        await meter.set_weekend_holiday_schedules(weekend=WEEKENDS, holiday=WEEKENDS)

        settings = await meter.read_settings()  # read it all back

    for number, periods in settings.schedules.schedules().items():
        if number - 1 in (WINTER, SUMMER, WEEKENDS):  # schedule n is read back as Schedule_{n+1}
            print(f"Schedule_{number}: " + "  ".join(f"{p.hour:02d}:{p.minute:02d} T{p.tariff}" for p in periods))
    seasons = [f"{s.month:02d}-{s.day:02d} → {s.schedule}" for s in settings.schedules.seasons() if s.month]
    print("seasons: " + ", ".join(seasons))
    print("holidays: " + ", ".join(f"{d.month:02d}-{d.day:02d}" for d in settings.holidays.holidays() if d.month))
    print(f"weekend schedule {settings.holidays.Weekend_Schd}, holiday schedule {settings.holidays.Holiday_Schd}")


if __name__ == "__main__":
    run(main, arguments(__doc__))
