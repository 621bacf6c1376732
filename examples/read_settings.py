"""Read all the settings of a meter and walk them (ekmmeters: "Read Settings", ``readSettings()``).

One call reads five blocks in one session: months forward and reverse, schedules 1–4 with the
seasons, schedules 5–8, and the holidays with the weekend and holiday schedules.
"""

from __future__ import annotations

import argparse

from _common import arguments, example_bus, meter_of, run


async def main(args: argparse.Namespace) -> None:
    async with example_bus(args) as bus:
        settings = await meter_of(bus, args).read_settings()

    # Schedules are numbered 1–8 as in their field names (Schedule_1_Period_1_Hour …); each has four
    # periods: from HH:MM on, tariff T (0–3) counts the energy.
    schedules = settings.schedules.schedules() | settings.schedules_5_8.schedules()
    for number, periods in schedules.items():
        print(f"Schedule {number}: " + "  ".join(f"{p.hour:02d}:{p.minute:02d} T{p.tariff}" for p in periods))

    # Season, weekend and holiday schedule numbers are shown as the meter stores them (0–7).
    print(f"\n{'Season':<8}{'Starts':<8}Schedule")
    for n, season in enumerate(settings.schedules.seasons(), 1):
        print(f"{n:<8}{season.month:02d}-{season.day:02d}   {season.schedule}")

    print(f"\n{'Month':<7}{'kWh_Tot':>10}{'Tariff_1':>10}{'Tariff_2':>10}{'Tariff_3':>10}{'Tariff_4':>10}   reverse")
    for fwd, rev in zip(settings.months_forward.months(), settings.months_reverse.months(), strict=True):
        tariffs = "".join(f"{kwh:>10}" for kwh in fwd.tariffs)
        print(f"{fwd.month:<7}{fwd.total:>10}{tariffs}   {rev.total}")

    holidays = [f"{day.month:02d}-{day.day:02d}" for day in settings.holidays.holidays() if day.month]
    print(f"\nHolidays: {', '.join(holidays) or 'none'}")
    print(f"Holiday schedule = {settings.holidays.Holiday_Schd}")
    print(f"Weekend schedule = {settings.holidays.Weekend_Schd}")


if __name__ == "__main__":
    run(main, arguments(__doc__))
