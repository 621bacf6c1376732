"""The application's own tests, written with ekm-async's testing kit: hypothesis strategies for any
read a meter can send, and the ``ekm_sim``/``ekm_bus`` fixtures for a simulated bus. Run them with
``pytest examples/testing`` (``pip install 'ekm-async[testing]'``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from daily_kwh import DailyKwh, NaiveDailyKwh
from hypothesis import find, given
from hypothesis import strategies as st

from ekm_async import Poller, Read
from ekm_async.testing import strategies as ekm


def take(observer: DailyKwh, *reads: Read) -> None:
    async def feed() -> None:
        for read in reads:
            await observer.on_read(read)

    asyncio.run(feed())


@given(ekm.reads("v4") | ekm.reads("v3"))
def test_any_read_a_meter_can_send_is_taken(read: Read) -> None:
    daily = DailyKwh()
    take(daily, read)
    assert all(daily.kwh(read.address, day) == 0 for day in daily.days(read.address))


@given(
    st.lists(
        ekm.reads("v4", address="000300001184", times=st.just(datetime(2026, 12, 6, tzinfo=UTC))),
        min_size=1,
        max_size=10,
    )
)
def test_a_day_is_its_last_total_minus_its_first(reads: list[Read]) -> None:
    daily = DailyKwh()
    take(daily, *reads)
    by_day: dict[object, list[float]] = {}
    for read in reads:
        day = (read.meter_datetime or read.time).date()  # type: ignore[union-attr]
        by_day.setdefault(day, []).append(float(read.fields["kWh_Tot"]))
    for day, totals in by_day.items():
        assert daily.kwh("000300001184", day) == round(totals[-1] - totals[0], 3)  # type: ignore[arg-type]


def test_the_strategies_find_the_naive_observers_bug() -> None:
    """The naive observer works on every read a hand-written test would think of; the strategies find
    the one it fails on — and shrink it to its cause: a meter whose clock cannot be read."""

    def crashes(read: Read) -> bool:
        try:
            take(NaiveDailyKwh(), read)
        except AttributeError:
            return True
        return False

    found = find(ekm.reads("v4"), crashes)
    assert found.meter_datetime is None  # a clock showing '?' or no real date (shrunk: all zeros)


@pytest.mark.ekm_sim(meters=["v4:000300001184"], time_scale=0)  # values stay as set
async def test_on_a_simulated_bus(ekm_sim, ekm_bus) -> None:  # type: ignore[no-untyped-def]
    """Through a real bus and poller: the meter's energy is set between two reads."""
    daily = DailyKwh()
    meter = ekm_bus.v4("000300001184")
    ekm_sim.set("000300001184", kwh=100.0)  # per line: 300 kWh in all
    async with Poller([meter], interval=0, count=1, observers=[daily]) as poller:
        await poller.wait()
    ekm_sim.set("000300001184", kwh=110.0)
    async with Poller([meter], interval=0, count=1, observers=[daily]) as poller:
        await poller.wait()
    (day,) = daily.days("000300001184")
    assert daily.kwh("000300001184", day) == 30.0
