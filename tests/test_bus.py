"""The bus and the meter handles against the simulator, in memory and over TCP (issue 4).

Every read and every write of V3 and V4 meters, checked against the simulated meter and the next read;
many callers on one bus (transactions contiguous, FIFO, one per call); cancellation mid-frame; a gateway
restart; the session rules as seen from the host. The record of the simulated wire
(``SimBus.transactions``) is the witness: it shows every request and which meter answered it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from ekm_async import (
    BlockKind,
    Bus,
    BusClosed,
    ConnectionLost,
    CTRatio,
    LcdItem,
    LiveBlock,
    MaxDemandPeriod,
    MaxDemandResetInterval,
    MonthDay,
    Period,
    PulseOutputRatio,
    Read,
    Refused,
    RelayState,
    ReplyTimeout,
    Season,
    Settings,
    V3Meter,
    V4Meter,
    open_bus,
)
from ekm_async.model import Relay, StateOut
from ekm_async.sim import Fault, MeterModel, MeterType, RequestKind, SimBus, SimServer, Transaction

X = "000300001184"
Y = "000300001185"
Z = "000000000733"
W = "000000000734"
PASSWORD = "00000000"
TRANSPORTS = ["memory", "tcp"]
CLOSE = ("close", "")
GUARD = 20.0
"""Seconds after which a test is hung (asyncio.timeout around every rig)."""


# ---------------------------------------------------------------------------------------------------
# The rig: a simulated bus served in memory or over TCP, and a bus on it.


@dataclass
class Rig:
    sim: SimBus
    server: SimServer
    bus: Bus
    url: str

    def model(self, address: str) -> MeterModel:
        return self.sim.meter(address)

    async def sync(self) -> None:
        """Wait until the simulator has heard every byte the bus sent (over TCP that takes a moment)."""
        await wait_for(lambda: sum(len(t.request.raw) for t in self.sim.transactions) >= self.bus.stats.bytes_sent)

    async def mark(self) -> int:
        """Where the record stands now (once it has caught up with the bus)."""
        await self.sync()
        return len(self.sim.transactions)

    async def wire(self, start: int = 0) -> list[tuple[str, str]]:
        """The record from ``start`` on (once it has caught up with the bus), as :func:`describe` shows it."""
        await self.sync()
        return describe(self.sim.transactions[start:])


@contextlib.asynccontextmanager
async def rig(
    meters: list[MeterModel],
    transport: str = "memory",
    *,
    pace: int = 0,
    turnaround: float = 0.001,
    sim_echo: bool = False,
    faults: list[Fault] | None = None,
    seed: int = 0,
    **options: Any,
) -> AsyncIterator[Rig]:
    """A simulated bus (paced at ``pace`` baud, unpaced by default; echoing with ``sim_echo``) and an open bus on it;
    ``options`` go to ``open_bus``."""
    async with asyncio.timeout(GUARD):
        sim = SimBus(meters, baud=pace, turnaround=turnaround, echo=sim_echo, faults=faults or [], seed=seed)
        async with SimServer(sim) as server:
            if transport == "tcp":
                host, port = await server.start_tcp()
                url, connect = f"tcp://{host}:{port}", None
            else:
                url, connect = "memory://sim", server.memory_connector()
            async with open_bus(url, connect=connect, **({"timeout_margin": 0.2} | options)) as bus:
                yield Rig(sim, server, bus, url)


def v4(address: str = X, **kw: Any) -> MeterModel:
    return MeterModel(address, MeterType.V4, **kw)


def v3(address: str = Z, **kw: Any) -> MeterModel:
    return MeterModel(address, MeterType.V3, **kw)


def describe(record: list[Transaction]) -> list[tuple[str, str]]:
    """The wire as (request, detail) pairs: ("V4A", address), ("password", pwd), ("write", register) …"""
    out = []
    for t in record:
        r = t.request
        if r.kind is RequestKind.SIGN_ON:
            assert r.read is not None
            out.append((r.read.name, r.address))
        elif r.kind is RequestKind.CLOSE:
            out.append(CLOSE)
        elif r.kind is RequestKind.PASSWORD:
            out.append(("password", r.data))
        elif r.kind is RequestKind.WRITE:
            out.append(("write", r.register))
        else:
            out.append(("settings", r.register))
    return out


def sessions(record: list[Transaction]) -> list[list[Transaction]]:
    """The record cut into sessions, sign-on … close, checking that each is contiguous on the wire:
    it opens with a sign-on, no request addressed to another meter appears in it, nothing in it is
    answered by another meter, and it ends with the close string."""
    out: list[list[Transaction]] = []
    current: list[Transaction] = []
    for t in record:
        if not current:
            assert t.request.kind is RequestKind.SIGN_ON, f"#{t.index}: a session must open with a sign-on: {t}"
        current.append(t)
        owner = current[0].request.address
        if t.request.kind is RequestKind.SIGN_ON:
            assert t.request.address == owner, (
                f"#{t.index}: request for {t.request.address} inside a session of {owner}"
            )
        assert t.meter in (None, owner), f"#{t.index}: {t.meter} answered inside a session of {owner}"
        if t.request.kind is RequestKind.CLOSE:
            out.append(current)
            current = []
    assert not current, f"a session without its close: {describe(current)}"
    return out


def v4_read(address: str = X) -> list[tuple[str, str]]:
    return [("V4A", address), ("V4B", address), CLOSE]


def v4_read_a(address: str = X) -> list[tuple[str, str]]:
    return [("V4A", address), CLOSE]


def v3_read(address: str = Z) -> list[tuple[str, str]]:
    return [("V3", address), CLOSE]


def settings_session(sign_on: str, address: str) -> list[tuple[str, str]]:
    pages = ["00B0", "0011", "0012", "0070", "0071"]
    return [(sign_on, address), *(("settings", page) for page in pages), CLOSE]


def write_session(sign_on: str, address: str, register: str, password: str = PASSWORD) -> list[tuple[str, str]]:
    return [(sign_on, address), ("password", password), ("write", register), CLOSE]


async def wait_for(condition: Callable[[], bool], step: float = 0.002) -> None:
    """Poll ``condition`` (the rig's guard fails a test that waits forever)."""
    while not condition():
        await asyncio.sleep(step)


# ---------------------------------------------------------------------------------------------------
# Reads


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_v4_read_merges_a_and_b_of_the_addressed_meter(transport: str) -> None:
    async with rig([v4(X), v4(Y)], transport) as r:
        read = await r.bus.v4(X).read()
        assert isinstance(read, Read)
        assert not read.v3
        assert read.address == X
        assert read.a.kind is BlockKind.V4A
        assert read.b is not None
        assert read.b.kind is BlockKind.V4B
        assert read.b.address == X
        assert read.CT_Ratio == 200  # a B field
        assert read.State_Out == StateOut.OFF_OFF  # an A field
        assert read.time is not None
        assert await r.wire() == v4_read(X)
        assert [t.meter for t in r.sim.transactions] == [X, X, None]
        assert r.bus.stats.frames_ok == 2
        assert r.bus.stats.transactions == 1
        assert r.bus.meter_stats[X].transactions == 1
        assert r.bus.meter_stats[X].last_ok is not None
        assert r.bus.meter_stats[X].last_latency is not None


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_v4_read_a_reads_the_a_block_only(transport: str) -> None:
    async with rig([v4(X)], transport) as r:
        block = await r.bus.v4(X).read_a()
        assert isinstance(block, LiveBlock)
        assert block.kind is BlockKind.V4A
        assert block.address == X
        assert "CT_Ratio" not in block.fields
        assert await r.wire() == v4_read_a(X)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_v3_read(transport: str) -> None:
    async with rig([v3(Z), v4(X)], transport) as r:
        read = await r.bus.v3(Z).read()
        assert read.v3
        assert read.b is None
        assert read.address == Z
        assert read.a.kind is BlockKind.V3
        assert read.CT_Ratio == 200
        assert await r.wire() == v3_read(Z)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["v3", "v4"])
async def test_read_settings_matches_the_meter(transport: str, kind: str) -> None:
    model = v3(Z) if kind == "v3" else v4(X)
    async with rig([model], transport) as r:
        meter = r.bus.v3(Z) if kind == "v3" else r.bus.v4(X)
        s = await meter.read_settings()
        assert isinstance(s, Settings)
        assert s.read.address == model.address
        assert s.read.v3 is (kind == "v3")
        assert s.months_forward.kind is BlockKind.MONTHS
        for block, months in ((s.months_forward, model.months[0]), (s.months_reverse, model.months[1])):
            got = [(m.total, *m.tariffs) for m in block.months()]
            assert got == [pytest.approx(row, abs=0.11) for row in months]
        assert s.months_forward.months() != s.months_reverse.months()
        schedules = s.schedules.schedules() | s.schedules_5_8.schedules()
        assert schedules == {n + 1: tuple(periods) for n, periods in enumerate(model.schedules)}
        assert s.schedules.seasons() == tuple(model.seasons)
        assert s.schedules_5_8.seasons() == ()
        assert s.holidays.holidays() == tuple(model.holidays)
        assert set(s.blocks()) == {"months_forward", "months_reverse", "schedules", "schedules_5_8", "holidays"}
        sign_on = "V3" if kind == "v3" else "V4A"
        assert await r.wire() == settings_session(sign_on, model.address)


# ---------------------------------------------------------------------------------------------------
# Writes: each checked against the meter's state and the next read, and its session on the wire.


@contextlib.asynccontextmanager
async def one_write(r: Rig, address: str, register: str, sign_on: str) -> AsyncIterator[None]:
    """The block must put exactly one write session on the wire: A, password, write, close."""
    start = await r.mark()
    yield
    assert await r.wire(start) == write_session(sign_on, address, register)
    assert r.sim.transactions[-2].reply == b"\x06"  # the write was acknowledged


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_set_relay_shows_in_state_out(transport: str) -> None:
    async with rig([v4(X)], transport) as r:
        meter = r.bus.v4(X)
        async with one_write(r, X, "0081", "V4A"):
            await meter.set_relay(1, "close")
        assert (await meter.read()).State_Out == StateOut.ON_OFF
        async with one_write(r, X, "0082", "V4A"):
            await meter.set_relay(2, RelayState.CLOSE)
        assert (await meter.read_a()).State_Out == StateOut.ON_ON
        async with one_write(r, X, "0081", "V4A"):
            await meter.set_relay(Relay.RELAY_1, "open")
        assert (await meter.read()).State_Out == StateOut.OFF_ON
        async with one_write(r, X, "0082", "V4A"):
            await meter.set_relay(2, "close", 30)
        relay = r.model(X).relays[1]
        assert relay.closed
        assert relay.until is not None
        assert r.model(X).writes[-1] == ("0082", "10030")
        assert (await meter.read()).State_Out == StateOut.OFF_ON


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_set_pulse_input_ratio_shows_in_the_next_read(transport: str) -> None:
    async with rig([v4(X)], transport) as r:
        meter = r.bus.v4(X)
        async with one_write(r, X, "00A1", "V4A"):
            await meter.set_pulse_input_ratio(2, 250)
        async with one_write(r, X, "00A2", "V4A"):
            await meter.set_pulse_input_ratio("3", 9999)
        assert r.model(X).pulse_ratios == [1, 250, 9999]
        read = await meter.read()
        assert (read.Pulse_Ratio_1, read.Pulse_Ratio_2, read.Pulse_Ratio_3) == (1, 250, 9999)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_set_pulse_output_ratio_shows_in_the_next_read(transport: str) -> None:
    async with rig([v4(X)], transport) as r:
        meter = r.bus.v4(X)
        assert (await meter.read()).Pulse_Output_Ratio == 1
        async with one_write(r, X, "00D4", "V4A"):
            await meter.set_pulse_output_ratio(PulseOutputRatio.RATIO_40)
        assert (await meter.read()).Pulse_Output_Ratio == 40


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_zero_resettable_zeroes_the_resettable_registers(transport: str) -> None:
    async with rig([v4(X)], transport) as r:
        r.model(X).resettable = [1234.56, 78.9]
        meter = r.bus.v4(X)
        before = await meter.read_a()
        assert before.Resettable_kWh_Tot == pytest.approx(1234.56, abs=0.02)
        assert before.Resettable_Rev_kWh_Tot == pytest.approx(78.9, abs=0.02)
        async with one_write(r, X, "00D3", "V4A"):
            await meter.zero_resettable()
        after = await meter.read()
        assert after.Resettable_kWh_Tot < 1
        assert after.Resettable_Rev_kWh_Tot < 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_set_max_demand_reset_interval_shows_in_the_next_read(transport: str) -> None:
    async with rig([v4(X)], transport) as r:
        meter = r.bus.v4(X)
        assert (await meter.read()).Max_Demand_Interval_Reset == "off"
        async with one_write(r, X, "00D5", "V4A"):
            await meter.set_max_demand_reset_interval(MaxDemandResetInterval.WEEKLY)
        assert (await meter.read()).Max_Demand_Interval_Reset == "weekly"  # in words, as it was given


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_set_lcd_reaches_the_meter(transport: str) -> None:
    async with rig([v4(X)], transport) as r:
        async with one_write(r, X, "00D2", "V4A"):
            await r.bus.v4(X).set_lcd(["kWh_Tot", LcdItem.CT_Ratio, 12, "rms_volts_ln_1"])
        assert r.model(X).lcd == [1, 47, 12, 3]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["v3", "v4"])
async def test_set_max_demand_period_shows_in_the_next_read(transport: str, kind: str) -> None:
    async with rig([v3(Z), v4(X)], transport) as r:
        meter: V3Meter | V4Meter = r.bus.v3(Z) if kind == "v3" else r.bus.v4(X)
        sign_on = "V3" if kind == "v3" else "V4A"
        assert (await meter.read()).Max_Demand_Period == MaxDemandPeriod.MINUTES_15
        async with one_write(r, meter.address, "0050", sign_on):
            await meter.set_max_demand_period(60)
        assert (await meter.read()).Max_Demand_Period == MaxDemandPeriod.MINUTES_60
        async with one_write(r, meter.address, "0050", sign_on):
            await meter.set_max_demand_period(MaxDemandPeriod.MINUTES_30)
        assert (await meter.read()).Max_Demand_Period == MaxDemandPeriod.MINUTES_30


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["v3", "v4"])
async def test_reset_max_demand(transport: str, kind: str) -> None:
    async with rig([v3(Z), v4(X)], transport) as r:
        meter: V3Meter | V4Meter = r.bus.v3(Z) if kind == "v3" else r.bus.v4(X)
        sign_on = "V3" if kind == "v3" else "V4A"
        r.model(meter.address).max_demand = 99_999.0
        field = "Max_Demand" if kind == "v3" else "RMS_Watts_Max_Demand"
        high = 99.9 if kind == "v3" else 99_999.0  # V3: kW in tenths (truncated), V4 B: watts
        assert (await meter.read())[field] == pytest.approx(high, abs=0.1)
        async with one_write(r, meter.address, "0040", sign_on):
            await meter.reset_max_demand()
        after = await meter.read()
        assert after[field] < high / 2  # back to about the present load
        assert after[field] == pytest.approx(after.RMS_Watts_Tot / (1000 if kind == "v3" else 1), rel=0.2, abs=0.2)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["v3", "v4"])
async def test_set_time_sets_the_meter_clock(transport: str, kind: str) -> None:
    async with rig([v3(Z), v4(X)], transport) as r:
        meter: V3Meter | V4Meter = r.bus.v3(Z) if kind == "v3" else r.bus.v4(X)
        sign_on = "V3" if kind == "v3" else "V4A"
        when = datetime(2031, 7, 4, 12, 30, 15)
        async with one_write(r, meter.address, "0060", sign_on):
            await meter.set_time(when)
        clock = (await meter.read()).meter_datetime
        assert clock is not None
        assert when <= clock <= when + timedelta(seconds=5)
        async with one_write(r, meter.address, "0060", sign_on):
            await meter.set_time()  # this computer's local time
        clock = (await meter.read()).meter_datetime
        assert clock is not None
        assert abs(clock - datetime.now()) < timedelta(seconds=5)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["v3", "v4"])
async def test_set_ct_ratio_shows_in_the_next_read(transport: str, kind: str) -> None:
    async with rig([v3(Z), v4(X)], transport) as r:
        meter: V3Meter | V4Meter = r.bus.v3(Z) if kind == "v3" else r.bus.v4(X)
        sign_on = "V3" if kind == "v3" else "V4A"
        assert (await meter.read()).CT_Ratio == 200
        async with one_write(r, meter.address, "00D0", sign_on):
            await meter.set_ct_ratio(CTRatio.AMPS_400)
        assert (await meter.read()).CT_Ratio == 400
        async with one_write(r, meter.address, "00D0", sign_on):
            await meter.set_ct_ratio("5000")
        assert (await meter.read()).CT_Ratio == 5000
        assert r.model(meter.address).ct_ratio == 5000


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["v3", "v4"])
async def test_set_schedule_seasons_holidays_show_in_read_settings(transport: str, kind: str) -> None:
    async with rig([v3(Z), v4(X)], transport) as r:
        meter: V3Meter | V4Meter = r.bus.v3(Z) if kind == "v3" else r.bus.v4(X)
        sign_on = "V3" if kind == "v3" else "V4A"
        async with one_write(r, meter.address, "0072", sign_on):  # schedule 3 is the wire's 2
            await meter.set_schedule(3, [(6, 30, 1), Period(18, 0, 2)])
        async with one_write(r, meter.address, "0076", sign_on):
            await meter.set_schedule(7, [(0, 0, 4), (12, 15, 1), (13, 45, 2), (23, 59, 3)])
        async with one_write(r, meter.address, "0080", sign_on):
            await meter.set_seasons([(3, 1, 1), Season(6, 15, 2), (9, 1, 8)])
        async with one_write(r, meter.address, "00B0", sign_on):
            await meter.set_holidays([(1, 1), MonthDay(7, 4), (2, 29), (12, 25)])
        async with one_write(r, meter.address, "00C0", sign_on):
            await meter.set_weekend_holiday_schedules(4, 5)
        s = await meter.read_settings()
        unused = Period(0, 0, 1)  # zeros on the wire
        assert s.schedules.schedules()[3] == (Period(6, 30, 1), Period(18, 0, 2), unused, unused)
        assert s.schedules_5_8.schedules()[7] == (
            Period(0, 0, 4),
            Period(12, 15, 1),
            Period(13, 45, 2),
            Period(23, 59, 3),
        )
        assert s.schedules.schedules()[1] == tuple(r.model(meter.address).schedules[0])  # untouched
        assert s.schedules.seasons() == (Season(3, 1, 1), Season(6, 15, 2), Season(9, 1, 8), Season(0, 0, 1))
        assert s.holidays.holidays() == (
            MonthDay(1, 1),
            MonthDay(7, 4),
            MonthDay(2, 29),
            MonthDay(12, 25),
            *[MonthDay(0, 0)] * 16,
        )
        assert (s.holidays.Weekend_Schd, s.holidays.Holiday_Schd) == (4, 5)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["v3", "v4"])
async def test_set_password_new_one_works_old_one_is_refused(transport: str, kind: str) -> None:
    async with rig([v3(Z), v4(X)], transport) as r:
        meter: V3Meter | V4Meter = r.bus.v3(Z) if kind == "v3" else r.bus.v4(X)
        address = meter.address
        sign_on = "V3" if kind == "v3" else "V4A"
        async with one_write(r, address, "0020", sign_on):
            await meter.set_password("13572468")
        assert meter.password == "13572468"
        assert r.model(address).password == "13572468"
        # the handle now signs in with the new password
        start = await r.mark()
        await meter.set_ct_ratio(600)
        assert await r.wire(start) == write_session(sign_on, address, "00D0", "13572468")
        assert (await meter.read()).CT_Ratio == 600
        # a handle with the old password is refused, and its write never reaches the wire
        old = r.bus.v3(address) if kind == "v3" else r.bus.v4(address)
        start = await r.mark()
        with pytest.raises(Refused):
            await old.set_ct_ratio(800)
        assert await r.wire(start) == [(sign_on, address), ("password", PASSWORD), CLOSE]
        assert r.model(address).ct_ratio == 600
        # so is an explicit old password on the good handle
        with pytest.raises(Refused):
            await meter.set_ct_ratio(800, password=PASSWORD)
        assert r.model(address).ct_ratio == 600


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["v3", "v4"])
async def test_set_address_the_meter_answers_at_its_new_address(transport: str, kind: str) -> None:
    new = "000444555666"
    async with rig([v3(Z), v4(X)], transport, retries=0, timeout_margin=0.05) as r:
        meter: V3Meter | V4Meter = r.bus.v3(Z) if kind == "v3" else r.bus.v4(X)
        old_address = meter.address
        model = r.model(old_address)
        sign_on = "V3" if kind == "v3" else "V4A"
        async with one_write(r, old_address, "0010", sign_on):
            await meter.set_address(new)
        assert meter.address == new
        assert model.address == new
        start = await r.mark()
        read = await meter.read()
        assert read.address == new
        assert r.sim.transactions[start].request.address == new
        assert r.sim.transactions[start].meter == new
        # nobody answers at the old address any more
        stale = r.bus.v3(old_address) if kind == "v3" else r.bus.v4(old_address)
        start = await r.mark()
        with pytest.raises(ReplyTimeout):
            await stale.read()
        assert await r.wire(start) == [(sign_on, old_address), CLOSE]
        assert r.sim.transactions[start].meter is None


# ---------------------------------------------------------------------------------------------------
# Many callers, one wire


def _mixed_calls(bus: Bus) -> list[tuple[str, Callable[[], Awaitable[Any]], list[tuple[str, str]]]]:
    """20 calls on four meters: (address, the call, the requests it must put on the wire)."""
    a, b = bus.v4(X), bus.v4(Y)
    c, d = bus.v3(Z), bus.v3(W)
    return [
        (X, a.read, v4_read(X)),
        (Z, c.read, v3_read(Z)),
        (Y, lambda: b.set_ct_ratio(400), write_session("V4A", Y, "00D0")),
        (W, d.read_settings, settings_session("V3", W)),
        (X, a.read_a, v4_read_a(X)),
        (Y, b.read, v4_read(Y)),
        (Z, lambda: c.set_ct_ratio(800), write_session("V3", Z, "00D0")),
        (W, d.read, v3_read(W)),
        (X, lambda: a.set_relay(1, "close"), write_session("V4A", X, "0081")),
        (Y, b.read_settings, settings_session("V4A", Y)),
        (Z, c.read, v3_read(Z)),
        (X, a.read, v4_read(X)),
        (W, lambda: d.set_max_demand_period(30), write_session("V3", W, "0050")),
        (Y, lambda: b.set_ct_ratio(1000), write_session("V4A", Y, "00D0")),
        (X, a.read_settings, settings_session("V4A", X)),
        (Z, c.read_settings, settings_session("V3", Z)),
        (W, d.read, v3_read(W)),
        (Y, b.read, v4_read(Y)),
        (X, lambda: a.set_pulse_output_ratio(8), write_session("V4A", X, "00D4")),
        (Z, c.read, v3_read(Z)),
    ]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_twenty_concurrent_callers_get_contiguous_fifo_transactions(transport: str) -> None:
    async with rig([v4(X), v4(Y), v3(Z), v3(W)], transport) as r:
        calls = _mixed_calls(r.bus)
        assert len(calls) == 20
        results = await asyncio.gather(*(call() for _, call, _ in calls), return_exceptions=True)
        errors = [res for res in results if isinstance(res, BaseException)]
        assert errors == []
        for (address, _, _), result in zip(calls, results, strict=True):
            if isinstance(result, Read | LiveBlock):
                assert result.address == address
            elif isinstance(result, Settings):
                assert result.read.address == address
            else:
                assert result is None  # a write
        await r.sync()
        found = sessions(r.sim.transactions)
        assert len(found) == len(calls) == r.bus.stats.transactions
        assert [s[0].request.address for s in found] == [address for address, _, _ in calls]  # FIFO
        assert await r.wire() == [request for _, _, expected in calls for request in expected]
        # the writes reached the right meters, in call order
        assert r.model(Y).ct_ratio == 1000
        assert r.model(Z).ct_ratio == 800
        assert r.model(X).ct_ratio == 200
        assert r.model(W).max_demand_period == MaxDemandPeriod.MINUTES_30
        assert r.model(X).relays[0].closed
        assert r.model(X).pulse_output_ratio == 8
        # and show in the reads that came after them
        after = [
            res for (address, _, _), res in zip(calls, results, strict=True) if address == Y and isinstance(res, Read)
        ]
        assert after[-1].CT_Ratio == 1000
        assert r.bus.stats.retries == r.bus.stats.timeouts == 0
        assert sum(r.bus.stats.rejected.values()) == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_two_hundred_concurrent_reads_one_transaction_each(transport: str) -> None:
    meters = [v4(X), v4(Y), v3(Z), v3(W)]
    async with rig(meters, transport) as r:
        handles = [r.bus.v4(X), r.bus.v4(Y), r.bus.v3(Z), r.bus.v3(W)]
        order = [handles[(n * 7) % 4] for n in range(200)]
        reads = await asyncio.gather(*(h.read() for h in order))
        assert [read.address for read in reads] == [h.address for h in order]
        await r.sync()
        found = sessions(r.sim.transactions)
        assert [s[0].request.address for s in found] == [h.address for h in order]
        assert r.bus.stats.transactions == 200


# ---------------------------------------------------------------------------------------------------
# Cancellation


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_read_cancelled_mid_frame_then_the_next_read_succeeds(transport: str) -> None:
    async with rig([v4(X)], transport, pace=9600, turnaround=0.005, timeout_margin=0.3) as r:
        meter = r.bus.v4(X)
        task = asyncio.create_task(meter.read())
        await wait_for(lambda: r.bus.stats.bytes_received > 0)  # the A frame is arriving
        assert r.bus.stats.bytes_received < 255  # mid-frame
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        read = await meter.read()
        assert read.address == X
        assert read.b is not None
        # the cancelled read: its A exchange finished, no B, then the close; then the next read
        assert await r.wire() == [("V4A", X), CLOSE, *v4_read(X)]
        assert r.bus.stats.frames_ok == 3
        assert r.bus.stats.rejected["truncated"] == 0


async def test_read_cancelled_during_b_still_closes() -> None:
    async with rig([v4(X)], pace=9600, turnaround=0.005, timeout_margin=0.3) as r:
        meter = r.bus.v4(X)
        task = asyncio.create_task(meter.read())
        await wait_for(lambda: r.bus.stats.bytes_received > 255)  # B is arriving
        assert r.bus.stats.bytes_received < 510
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await meter.read()
        assert await r.wire() == [*v4_read(X), *v4_read(X)]
        sessions(r.sim.transactions)


async def test_write_cancelled_during_sign_on_sends_no_password_and_no_write() -> None:
    async with rig([v4(X)], pace=9600, turnaround=0.005, timeout_margin=0.3) as r:
        meter = r.bus.v4(X)
        task = asyncio.create_task(meter.set_ct_ratio(400))
        await wait_for(lambda: r.bus.stats.bytes_received > 0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await meter.read()).CT_Ratio == 200
        assert await r.wire() == [("V4A", X), CLOSE, *v4_read(X)]
        assert r.model(X).writes == []


async def test_a_call_cancelled_while_queued_never_reaches_the_wire() -> None:
    async with rig([v4(X), v3(Z)], pace=9600, turnaround=0.005, timeout_margin=0.3) as r:
        first = asyncio.create_task(r.bus.v4(X).read_a())
        queued = asyncio.create_task(r.bus.v3(Z).set_ct_ratio(800))
        last = asyncio.create_task(r.bus.v3(Z).read())
        await wait_for(lambda: r.bus.stats.bytes_sent > 0)
        queued.cancel()
        assert (await first).address == X
        assert (await last).CT_Ratio == 200
        assert queued.cancelled()
        assert await r.wire() == [*v4_read_a(X), *v3_read(Z)]


# ---------------------------------------------------------------------------------------------------
# The gateway goes away


async def test_gateway_restart_the_next_read_reconnects() -> None:
    opts = {"reconnect_delay": 0.005, "reconnect_max": 0.05}
    async with rig([v4(X)], "tcp", **opts) as r:
        meter = r.bus.v4(X)
        await meter.read()
        assert r.bus.stats.reconnects == 0
        await r.sync()
        await r.server.restart_tcp()
        await wait_for(lambda: not r.bus.connected)
        read = await meter.read()
        assert read.address == X
        assert r.bus.stats.reconnects == 1
        assert r.bus.connected
        await meter.read()
        assert r.bus.stats.reconnects == 1
        assert await r.wire() == v4_read(X) * 3


async def test_requests_queued_while_the_gateway_is_down_are_not_lost() -> None:
    opts = {"reconnect_delay": 0.005, "reconnect_max": 0.02}
    async with rig([v4(X), v3(Z)], "tcp", **opts) as r:
        await r.bus.v4(X).read()
        await r.sync()
        where = urlsplit(r.url)
        await r.server.stop_tcp()
        await wait_for(lambda: not r.bus.connected)
        calls = [r.bus.v4(X).read(), r.bus.v3(Z).read(), r.bus.v4(X).read_settings(), r.bus.v3(Z).set_ct_ratio(400)]
        tasks = [asyncio.create_task(c) for c in calls]
        await asyncio.sleep(0.1)  # several failed attempts to reconnect
        assert not any(t.done() for t in tasks)
        assert len(r.sim.transactions) == 3
        await r.server.start_tcp(where.hostname or "", where.port or 0)
        results = await asyncio.gather(*tasks)
        assert results[0].address == X
        assert results[1].address == Z
        assert results[2].read.address == X
        assert r.model(Z).ct_ratio == 400
        assert r.bus.stats.reconnects == 1
        assert await r.wire() == [
            *v4_read(X),
            *v4_read(X),
            *v3_read(Z),
            *settings_session("V4A", X),
            *write_session("V3", Z, "00D0"),
        ]


async def test_connection_lost_mid_read_is_retried_after_reconnecting() -> None:
    opts = {"reconnect_delay": 0.005, "reconnect_max": 0.02, "timeout_margin": 0.3}
    async with rig([v4(X)], "tcp", pace=9600, turnaround=0.005, **opts) as r:
        task = asyncio.create_task(r.bus.v4(X).read())
        await wait_for(lambda: r.bus.stats.bytes_received > 0)
        await r.server.restart_tcp()
        read = await task
        assert read.address == X
        assert r.bus.stats.reconnects == 1
        assert r.bus.stats.retries >= 1
        assert (await r.wire())[-3:] == v4_read(X)


async def test_connection_lost_mid_write_fails_the_write_without_retrying_it() -> None:
    opts = {"reconnect_delay": 0.005, "reconnect_max": 0.02, "timeout_margin": 0.3}
    async with rig([v4(X)], "tcp", pace=9600, turnaround=0.005, **opts) as r:
        task = asyncio.create_task(r.bus.v4(X).set_ct_ratio(400))
        await wait_for(lambda: r.bus.stats.bytes_received > 0)
        await r.server.restart_tcp()
        with pytest.raises(ConnectionLost):
            await task
        assert await r.wire() == [("V4A", X)]  # neither password nor write: the sign-on's reply was cut
        assert (await r.bus.v4(X).read()).CT_Ratio == 200
        assert r.model(X).writes == []


# ---------------------------------------------------------------------------------------------------
# Session rules from the host's side


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_no_write_after_an_unacknowledged_password(transport: str) -> None:
    async with rig([v4(X)], transport, timeout_margin=0.05) as r:
        meter = r.bus.v4(X, password="87654321")
        with pytest.raises(Refused) as info:
            await meter.set_ct_ratio(400)
        assert info.value.address == X
        assert await r.wire() == [("V4A", X), ("password", "87654321"), CLOSE]
        assert not any(t.request.kind is RequestKind.WRITE for t in r.sim.transactions)
        assert r.model(X).ct_ratio == 200
        # a refusal is not a dead meter
        assert r.bus.meter_stats[X].consecutive_failures == 0
        assert r.bus.available(X)


async def test_no_write_after_a_lost_password_ack() -> None:
    # the meter accepts the password but its ACK is lost (the 2nd reply: after the sign-on's block)
    async with rig([v4(X)], faults=[Fault.parse("drop#2")], timeout_margin=0.05) as r:
        with pytest.raises(Refused):
            await r.bus.v4(X).set_relay(1, "close")
        assert await r.wire() == [("V4A", X), ("password", PASSWORD), CLOSE]
        assert r.model(X).writes == []


BAD_CALLS: list[tuple[str, Callable[[Bus], Any]]] = [
    ("address must be exactly 12 digits", lambda b: b.v4("123")),
    ("address must be exactly 12 digits", lambda b: b.v3("00030000118x")),
    ("password must be exactly 8 digits", lambda b: b.v4(X, password="1234")),
    ("b_every must be", lambda b: b.v4(X, b_every=0)),
    ("ratio must be 100, 200, 400,", lambda b: b.v4(X).set_ct_ratio(300)),
    ("ratio must be 100, 200, 400,", lambda b: b.v3(Z).set_ct_ratio("lots")),
    ("relay must be 1 or 2; got 3", lambda b: b.v4(X).set_relay(3, "close")),
    ("state must be open or close; got 'ajar'", lambda b: b.v4(X).set_relay(1, "ajar")),
    ("seconds must be 0..9999", lambda b: b.v4(X).set_relay(1, "close", 10_000)),
    ("line must be 1, 2 or 3; got 4", lambda b: b.v4(X).set_pulse_input_ratio(4, 10)),
    ("ratio must be 1..9999", lambda b: b.v4(X).set_pulse_input_ratio(1, 0)),
    ("ratio must be 1, 2, 4, 5, 8,", lambda b: b.v4(X).set_pulse_output_ratio(3)),
    (
        "interval must be off, monthly, weekly, daily or hourly",
        lambda b: b.v4(X).set_max_demand_reset_interval("yearly"),
    ),
    ("items must be a sequence", lambda b: b.v4(X).set_lcd([])),
    (
        r"items\[0\] must be kWh_Tot \(1\), Rev_kWh_Tot \(2\), RMS_Volts_Ln_1 \(3\) … Calc_Fwd_kWh \(51\); got 'no",
        lambda b: b.v4(X).set_lcd(["no_such_item"]),
    ),
    ("period must be 15, 30 or 60 minutes", lambda b: b.v4(X).set_max_demand_period(45)),
    ("when.year must be", lambda b: b.v3(Z).set_time(datetime(1999, 12, 31, 23, 59, 59))),
    ("schedule must be 1..8", lambda b: b.v3(Z).set_schedule(0, [])),
    (r"periods\[0\] hour must be", lambda b: b.v3(Z).set_schedule(1, [(24, 0, 1)])),
    ("periods must hold at most 4", lambda b: b.v3(Z).set_schedule(1, [(1, 0, 1)] * 5)),
    (r"seasons\[0\] month must be", lambda b: b.v3(Z).set_seasons([(13, 1, 1)])),
    (r"dates\[0\] day must be", lambda b: b.v3(Z).set_holidays([(2, 30)])),
    ("weekend must be 1..8", lambda b: b.v3(Z).set_weekend_holiday_schedules(9, 1)),
    ("new_password must be exactly 8 digits", lambda b: b.v4(X).set_password("1234567")),
    ("new_address must be exactly 12 digits", lambda b: b.v4(X).set_address("12345")),
    ("password must be exactly 8 digits", lambda b: b.v4(X).set_ct_ratio(400, password="secret")),
]


async def test_reads_queued_behind_an_address_change_go_to_the_new_address() -> None:
    """A poller's next read of a meter may be queued while its address is being changed: it must sign
    on at the new address (it signed on at the old one, timed out, and counted a failure)."""
    new = "000444555666"
    async with rig([v4(X)], retries=0, timeout_margin=0.05) as r:
        meter = r.bus.v4(X)
        start = await r.mark()
        change = asyncio.create_task(meter.set_address(new))
        await asyncio.sleep(0)  # the change holds the bus now
        queued = [asyncio.create_task(r.bus.v4(X).read()) for _ in range(2)]  # asked for by the old address
        await change
        reads = await asyncio.gather(*queued)
        assert [read.address for read in reads] == [new, new]
        signed_on = [t.request.address for t in r.sim.transactions[start:] if t.request.kind is RequestKind.SIGN_ON]
        assert signed_on == [X, new, new, new, new]  # the change's own session, then A and B of both reads
        assert r.bus.meter_stats[new].consecutive_failures == 0


async def test_a_write_queued_behind_a_password_change_sends_the_new_password() -> None:
    async with rig([v4(X)]) as r:
        meter = r.bus.v4(X)
        change = asyncio.create_task(meter.set_password("12345678"))
        await asyncio.sleep(0)  # the change holds the bus now
        queued = asyncio.create_task(meter.set_ct_ratio(400))  # asked for while the old password held
        await change
        await queued  # it was refused when the old password went with it
        assert r.model(X).ct_ratio == 400


@pytest.mark.parametrize(("match", "call"), BAD_CALLS, ids=[str(n) for n in range(len(BAD_CALLS))])
async def test_bad_arguments_raise_value_error_before_the_bus_is_touched(
    match: str, call: Callable[[Bus], Any]
) -> None:
    async with rig([v4(X), v3(Z)]) as r:
        with pytest.raises(ValueError, match=match):  # noqa: PT012 — a handle's constructor or its call may raise
            result = call(r.bus)
            if asyncio.iscoroutine(result):
                await result
        assert r.sim.transactions == []
        assert r.bus.stats.transactions == 0
        assert r.bus.stats.bytes_sent == 0
        assert r.bus.meter_stats == {}
        assert r.model(X).writes == r.model(Z).writes == []


async def test_v4_b_every_3_reads_b_on_reads_1_4_7_and_after_any_write() -> None:
    async with rig([v4(X)]) as r:
        meter = r.bus.v4(X, b_every=3)
        with_b = []
        for n in range(1, 8):
            start = await r.mark()
            read = await meter.read()
            assert read.b is not None  # the last B block is merged in every read
            assert read.CT_Ratio == 200
            wire = await r.wire(start)
            assert wire in (v4_read(X), v4_read_a(X))
            if wire == v4_read(X):
                with_b.append(n)
        assert with_b == [1, 4, 7]
        await meter.read()  # read 8: cached B
        assert (await r.wire())[-2:] == v4_read_a(X)
        await meter.set_ct_ratio(1500)
        start = await r.mark()
        read = await meter.read()
        assert await r.wire(start) == v4_read(X)  # the write made B stale: fetched again
        assert read.CT_Ratio == 1500
        pattern = []
        for _ in range(4):
            start = await r.mark()
            await meter.read()
            pattern.append(await r.wire(start) == v4_read(X))
        assert pattern == [False, False, True, False]
        start = await r.mark()
        await meter.read(fresh_b=True)
        assert await r.wire(start) == v4_read(X)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_echo_on_simulator_and_bus(transport: str) -> None:
    async with rig([v4(X), v3(Z)], transport, sim_echo=True, echo=True) as r:
        a, c = r.bus.v4(X), r.bus.v3(Z)
        assert (await a.read()).address == X
        assert (await c.read()).address == Z
        s = await a.read_settings()
        assert s.holidays.holidays() == tuple(r.model(X).holidays)
        await a.set_ct_ratio(800)
        await c.set_ct_ratio(100)
        assert (await a.read()).CT_Ratio == 800
        assert (await c.read()).CT_Ratio == 100
        assert await r.wire() == [
            *v4_read(X),
            *v3_read(Z),
            *settings_session("V4A", X),
            *write_session("V4A", X, "00D0"),
            *write_session("V3", Z, "00D0"),
            *v4_read(X),
            *v3_read(Z),
        ]
        stats = r.bus.stats
        assert stats.frames_ok == 2 + 1 + 6 + 1 + 1 + 2 + 1
        assert stats.timeouts == stats.retries == 0
        for reason in ("crc", "truncated", "trailer", "not-7bit", "unexpected"):
            assert stats.rejected[reason] == 0, stats.rejected


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_echo_on_a_paced_wire(transport: str) -> None:
    """At 9600 baud the echo arrives byte by byte, in slices, before the reply."""
    async with rig([v4(X), v3(Z)], transport, pace=9600, turnaround=0.002, sim_echo=True, echo=True) as r:
        await r.bus.v3(Z).set_ct_ratio(400)
        read = await r.bus.v3(Z).read()
        assert read.CT_Ratio == 400
        assert await r.wire() == [*write_session("V3", Z, "00D0"), *v3_read(Z)]
        stats = r.bus.stats
        assert stats.frames_ok == 2
        assert stats.timeouts == stats.retries == 0
        for reason in ("crc", "truncated", "trailer", "not-7bit", "unexpected"):
            assert stats.rejected[reason] == 0, stats.rejected


@pytest.mark.parametrize("echo", ["auto", "on"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_echoing_adapters_with_default_options_read_settings_and_keep_the_session_rule(
    transport: str, echo: str
) -> None:
    """With an echoing adapter: the settings request's echo (STX at its 4th byte) opens no fake frame, and
    a password whose CRC holds 06 is not acknowledged by its own echo: no write follows a password the
    meter refused."""
    options = {} if echo == "auto" else {"echo": "on"}
    async with rig([v4(X)], transport, pace=9600, turnaround=0.002, sim_echo=True, timeout_margin=0.2, **options) as r:
        settings = await r.bus.v4(X).read_settings()
        assert settings.holidays.holidays() == tuple(r.model(X).holidays)
        start = await r.mark()
        with pytest.raises(Refused, match="password not acknowledged"):
            await r.bus.v4(X).set_ct_ratio(800, password="00049865")  # wrong: the meter's is 00000000
        kinds = [t.request.kind for t in r.sim.transactions[start:]]
        assert RequestKind.WRITE not in kinds, kinds
        assert r.model(X).ct_ratio != 800
        assert r.bus.stats.rejected["crc"] == r.bus.stats.rejected["echo"] == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_closed_bus_fails_queued_calls_with_bus_closed(transport: str) -> None:
    async with rig([v4(X), v3(Z)], transport, pace=9600, turnaround=0.005, timeout_margin=0.3) as r:
        tasks = [
            asyncio.create_task(c) for c in (r.bus.v4(X).read(), r.bus.v3(Z).read(), r.bus.v4(X).set_relay(1, "close"))
        ]
        await wait_for(lambda: r.bus.stats.bytes_received > 0)  # the first is on the wire
        await r.bus.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], Read)  # the transaction in progress is finished
        assert isinstance(results[1], BusClosed)
        assert isinstance(results[2], BusClosed)
        assert await r.wire() == v4_read(X)
        assert not r.bus.connected
        with pytest.raises(BusClosed):
            await r.bus.v4(X).read()
        await r.bus.close()  # twice is fine
        assert await r.wire() == v4_read(X)
