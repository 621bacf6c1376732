"""A small application built on ekm-async: the energy each meter used per day, from the reads a
poller delivers — and, for contrast, a naive version with the kind of bug property tests find.

    async with ekm_async.Poller(meters, interval=60, observers=[daily := DailyKwh()]) as poller: ...
    daily.kwh("000300001184", date(2026, 12, 6))
"""

from __future__ import annotations

from datetime import date, datetime

from ekm_async import BaseObserver, Read


class DailyKwh(BaseObserver):
    """kWh used per meter and day: the last ``kWh_Tot`` of the day minus the first. A day is the
    meter's own (its clock), or the host's when the meter's clock cannot be read."""

    def __init__(self) -> None:
        self._days: dict[tuple[str, date], tuple[float, float]] = {}

    async def on_read(self, read: Read) -> None:
        total = read.fields.get("kWh_Tot")
        if not isinstance(total, int | float):
            return
        when: datetime | None = read.meter_datetime or read.time
        if when is None:
            return
        key = (read.address, when.date())
        first, _ = self._days.get(key, (float(total), float(total)))
        self._days[key] = (first, float(total))

    def kwh(self, address: str, day: date) -> float:
        first, last = self._days.get((address, day), (0.0, 0.0))
        return round(last - first, 3)

    def days(self, address: str) -> list[date]:
        return sorted(day for meter, day in self._days if meter == address)


class NaiveDailyKwh(DailyKwh):
    """The same, written as if every meter's clock could always be read: it takes the day from
    ``meter_datetime`` alone — and fails on the read of a meter whose clock shows ``?``."""

    async def on_read(self, read: Read) -> None:
        total = float(read.fields["kWh_Tot"])
        key = (read.address, read.meter_datetime.date())  # type: ignore[union-attr]  # the seeded bug
        first, _ = self._days.get(key, (total, total))
        self._days[key] = (first, total)
