"""Every setter of a meter, one step each: set a value, read it back (ekmmeters: every ``set…()``).

Each step prints what it set and what a read then shows. The steps come in the order a user meets
them; the V4-only ones (relays, max demand reset interval, pulse ratios, zero resettable, LCD) say so
on a V3 meter (``--v3``) and are skipped. ``ekm-async set`` does each of them from the command line.

Every setter is one transaction (connect → password → write → close) and takes ``password=``; without
it the handle's password is sent (``bus.v4(address, password=…)``, default ``00000000``). A bad
argument raises ``ValueError`` before anything is sent. A meter that does not acknowledge the password
or the write raises ``Refused``.

Careful on a real meter: the example leaves the meter with the settings it shows (relays open, CT ratio
800, its schedules …); only the password and the address are put back.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime

from _common import arguments, example_bus, meter_of, run
from ekm_async import (
    CTRatio,
    LcdItem,
    MaxDemandPeriod,
    MaxDemandResetInterval,
    MonthDay,
    Period,
    PulseOutputRatio,
    Refused,
    RelayState,
    Season,
    V3Meter,
    V4Meter,
)
from ekm_async.model import PulseInput, Relay, StateOut
from ekm_async.text import periods_text

Meter = V3Meter | V4Meter


def show(what: str, result: object) -> None:
    """One line: what a step set, then what the meter shows."""
    print(f"{what:<32}{result}")


def v4_only(what: str) -> None:
    show(what, "V4 only: a V3 meter has no such setting")


async def relays(meter: Meter) -> None:
    """``set_relay(relay, state, seconds=0)``: relay 1 or 2, ``RelayState.CLOSE`` or ``OPEN`` (``"close"``,
    ``1`` … work as well); 0 seconds holds the state, 1–9999 seconds is how long until the relay goes
    back. ``State_Out`` in every V4 read shows both relays."""
    if not isinstance(meter, V4Meter):
        v4_only("relays")
        return

    async def state_out() -> str:
        return StateOut(int((await meter.read()).State_Out)).name

    await meter.set_relay(Relay.RELAY_1, RelayState.CLOSE)  # held until told otherwise
    show("relay 1 closed", f"State_Out = {await state_out()} (relay 1, relay 2)")
    await meter.set_relay(2, "close", seconds=2)  # closed for 2 s, then open again
    show("relay 2 closed for 2 s", f"State_Out = {await state_out()}")
    await asyncio.sleep(2.5)
    show("2.5 s later", f"State_Out = {await state_out()}")
    await meter.set_relay(Relay.RELAY_1, RelayState.OPEN)
    show("relay 1 opened", f"State_Out = {await state_out()}")


async def ct_ratio(meter: Meter) -> None:
    """``set_ct_ratio``: one of ``CTRatio`` (``800`` as well). Every read has ``CT_Ratio``."""
    await meter.set_ct_ratio(CTRatio.AMPS_800)
    show("CT ratio 800", f"CT_Ratio = {(await meter.read()).CT_Ratio}")


async def max_demand(meter: Meter) -> None:
    """Max demand is measured over a period of 15, 30 or 60 minutes; a V4 meter can also reset it by
    itself (off, monthly, weekly, daily, hourly)."""
    await meter.set_max_demand_period(MaxDemandPeriod.MINUTES_30)  # 30 works as well
    show("max demand period 30 min", f"Max_Demand_Period = {(await meter.read()).Max_Demand_Period} minutes")

    try:  # a bad argument: checked here, nothing is sent
        await meter.set_max_demand_period(45)
    except ValueError as exc:
        show("max demand period 45 min", f"ValueError: {exc}")

    if not isinstance(meter, V4Meter):
        v4_only("max demand reset interval")
        return
    await meter.set_max_demand_reset_interval(MaxDemandResetInterval.DAILY)  # "daily" as well
    show("max demand reset daily", f"Max_Demand_Interval_Reset = {(await meter.read()).Max_Demand_Interval_Reset}")


async def reset_max_demand(meter: Meter) -> None:
    """``reset_max_demand``: start measuring max demand again now."""
    field = "Max_Demand" if isinstance(meter, V3Meter) else "RMS_Watts_Max_Demand"
    before = (await meter.read())[field]
    await meter.reset_max_demand()
    show("max demand reset now", f"{field} {before} → {(await meter.read())[field]}")


async def clock(meter: Meter) -> None:
    """``set_time(when)``: the meter keeps local wall-clock time (for its time-of-use tariffs); the weekday
    is computed for you, and ``set_time()`` sends this computer's local time now. ``read.meter_datetime``
    is ``Meter_Time`` as a ``datetime`` (``None`` if the meter's clock is unreadable)."""
    await meter.set_time(datetime(2023, 11, 22, 15, 39, 2))  # ekmmeters' example time
    show("time 2023-11-22 15:39:02", f"meter_datetime = {(await meter.read()).meter_datetime}")
    await meter.set_time()
    now = f"{datetime.now():%Y-%m-%d %H:%M:%S}"
    show("time now", f"meter_datetime = {(await meter.read()).meter_datetime} (computer: {now})")


async def pulse_ratios(meter: Meter) -> None:
    """A pulse input ratio (1–9999) is how many closures of an input count as one pulse; the pulse output
    ratio (one of ``PulseOutputRatio``) is how many pulses the meter's pulse output gives per kWh."""
    if not isinstance(meter, V4Meter):
        v4_only("pulse ratios")
        return
    await meter.set_pulse_input_ratio(PulseInput.LINE_1, 55)
    await meter.set_pulse_input_ratio(2, 100)  # plain numbers work as well
    read = await meter.read()
    show(
        "pulse input ratios 55, 100",
        f"Pulse_Ratio_1..3 = {read.Pulse_Ratio_1}, {read.Pulse_Ratio_2}, {read.Pulse_Ratio_3}",
    )
    await meter.set_pulse_output_ratio(PulseOutputRatio.RATIO_5)
    show("pulse output ratio 5", f"Pulse_Output_Ratio = {(await meter.read()).Pulse_Output_Ratio}")


async def zero_resettable(meter: Meter) -> None:
    """``Resettable_kWh_Tot`` and ``Resettable_Rev_kWh_Tot`` count like ``kWh_Tot`` and ``Rev_kWh_Tot``
    but can be zeroed, e.g. at the start of each billing period."""
    if not isinstance(meter, V4Meter):
        v4_only("zero resettable")
        return
    before = await meter.read()
    await meter.zero_resettable()
    after = await meter.read()
    show(
        "zero resettable",
        f"Resettable_kWh_Tot {before.Resettable_kWh_Tot} → {after.Resettable_kWh_Tot}, "
        f"Resettable_Rev_kWh_Tot {before.Resettable_Rev_kWh_Tot} → {after.Resettable_Rev_kWh_Tot}",
    )


async def lcd(meter: Meter) -> None:
    """The LCD cycles through 1–40 items, in order: ``LcdItem`` members, their names (so a list from
    JSON needs no translation) or their codes. A meter cannot tell what it shows: look at it."""
    if not isinstance(meter, V4Meter):
        v4_only("LCD")
        return
    await meter.set_lcd([LcdItem.kWh_Tot, "RMS_Watts_Tot", 28])  # 28 is Line_Freq
    show("LCD kWh, watts, frequency", "not readable: look at the meter")


WINTER, SUMMER, WEEKENDS = 1, 2, 3  # schedules are numbered 1–8, as the meter's display and the reads do


async def time_of_use(meter: Meter) -> None:
    """Time-of-use tariffs. A meter has 8 schedules (1–8) of up to 4 periods: from ``Period(hour,
    minute, tariff)`` on, tariff 1–4 counts the energy (into ``kWh_Tariff_1`` … ``kWh_Tariff_4``).
    Seasons say from which date on a schedule applies; holidays and weekends have a schedule of their
    own. ``read_settings`` reads it all back, schedule n as ``Schedule_n``."""
    # ekmmeters' example: tariff 1 from midnight, 2 from 5:30, 3 from noon, 1 again from 17:30.
    await meter.set_schedule(WINTER, [Period(0, 0, 1), Period(5, 30, 2), Period(12, 0, 3), Period(17, 30, 1)])
    await meter.set_schedule(SUMMER, [(0, 0, 1), (11, 0, 3), (19, 0, 1)])  # tuples work too
    await meter.set_schedule(WEEKENDS, [Period(0, 0, 1)])  # unused periods are sent as zeros
    await meter.set_seasons([Season(1, 1, WINTER), Season(6, 1, SUMMER), Season(9, 15, WINTER)])
    await meter.set_holidays([MonthDay(1, 1), MonthDay(7, 4), MonthDay(12, 25), (12, 26)])
    await meter.set_weekend_holiday_schedules(weekend=WEEKENDS, holiday=WEEKENDS)

    settings = await meter.read_settings()
    schedules = settings.schedules.schedules()
    for name, number in (("winter", WINTER), ("summer", SUMMER), ("weekends", WEEKENDS)):
        show(f"schedule {number} ({name})", f"Schedule_{number}: {periods_text(schedules[number])}")
    seasons = [f"{s.month:02d}-{s.day:02d} → {s.schedule}" for s in settings.schedules.seasons() if s.month]
    show("seasons", ", ".join(seasons))
    holidays = settings.holidays
    show("holidays", ", ".join(f"{d.month:02d}-{d.day:02d}" for d in holidays.holidays() if d.month))
    show("weekend/holiday schedules", f"Weekend_Schd = {holidays.Weekend_Schd}, Holiday_Schd = {holidays.Holiday_Schd}")


async def password(meter: Meter) -> None:
    """``set_password(new)``: from then on the handle sends the new password. EKM has no back door: a
    lost password is gone, so this step puts the old one back whatever happens."""
    old, new = meter.password, "12345678"
    await meter.set_password(new)
    try:
        show(f"password {new}", f"the handle now sends {meter.password}")
        try:
            await meter.set_time(password=old)  # any setter: the old password is not acknowledged
        except Refused as exc:
            show("  a write with the old one", f"Refused: {exc}")
        await meter.set_time()
        show("  a write with the new one", "acknowledged")
    finally:
        await meter.set_password(old)
    show(f"password back to {old}", f"the handle now sends {meter.password}")


async def address(meter: Meter) -> None:
    """``set_address(new)``: the handle follows the meter to its new address (which is also printed on
    the meter: note where you moved it). This step moves it back whatever happens."""
    old, new = meter.address, "000399999999"
    await meter.set_address(new)
    try:
        show(f"address {new}", f"the meter answers at {(await meter.read()).address}")
    finally:
        await meter.set_address(old)
    show(f"address back to {old}", f"the meter answers at {(await meter.read()).address}")


async def main(args: argparse.Namespace) -> None:
    # A simulated meter starts with energy on its resettable registers (a real bus ignores this).
    async with example_bus(args, resettable=[123.45, 6.78]) as bus:
        meter = meter_of(bus, args)
        show("set", "read back")
        await relays(meter)
        await ct_ratio(meter)
        await max_demand(meter)
        await reset_max_demand(meter)
        await clock(meter)
        await pulse_ratios(meter)
        await zero_resettable(meter)
        await lcd(meter)
        await time_of_use(meter)
        await password(meter)  # … and back
        await address(meter)  # … and back


if __name__ == "__main__":
    run(main, arguments(__doc__))
