"""The simulator without I/O: meters on a SimBus, driven with the real request encoders and checked
with the real decoder. Addressing, session rules, every write, live values, settings reads, bad CRCs,
faults, wire timing and the transaction record."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ekm_async import (
    BlockKind,
    CTRatio,
    FrameError,
    LcdItem,
    MaxDemandPeriod,
    MaxDemandResetInterval,
    MonthDay,
    Period,
    PulseOutputRatio,
    Read,
    RejectReason,
    RelayState,
    Season,
    commands,
    decode,
)
from ekm_async.blocks import Block, HolidaysBlock, LiveBlock, SchedulesBlock
from ekm_async.commands import CLOSE, LiveRead, SettingsPage
from ekm_async.crc import crc16
from ekm_async.model import Relay, StateOut
from ekm_async.session import State
from ekm_async.sim import Emission, Fault, FaultKind, MeterModel, MeterType, RequestKind, SimBus
from ekm_async.wire import BITS_PER_CHAR

X = "000300001184"
Y = "000300001185"
ABSENT = "000999999999"
PASSWORD = "00000000"
ACK = b"\x06"
PAGE_KIND = {
    SettingsPage.MONTHS_FORWARD: BlockKind.MONTHS,
    SettingsPage.MONTHS_REVERSE: BlockKind.MONTHS,
    SettingsPage.SCHEDULES_1_4: BlockKind.SCHEDULES,
    SettingsPage.SCHEDULES_5_8: BlockKind.SCHEDULES_5_8,
    SettingsPage.HOLIDAYS: BlockKind.HOLIDAYS,
}
SIGN_ON_KIND = {LiveRead.V3: BlockKind.V3, LiveRead.V4A: BlockKind.V4A, LiveRead.V4B: BlockKind.V4B}
FEW = settings(max_examples=25)


def sign_on(address: str = X, read: LiveRead = LiveRead.V4A) -> bytes:
    return commands.live_read(address, read)


def short_settings_read(page: SettingsPage) -> bytes:
    """EKM's short form of a settings read: no ``28 29``, CRC over the rest."""
    covered = b"R1\x02" + page.value.encode() + b"\x03"
    return b"\x01" + covered + crc16(covered)


def with_crc(request: bytes, crc: bytes) -> bytes:
    return request[:-2] + crc


@dataclass
class Host:
    """A host on a SimBus: sends each request at ``now`` and returns what came back."""

    meters: list[MeterModel]
    bus_args: dict[str, Any] = field(default_factory=dict)
    now: float = 0.0

    def __post_init__(self) -> None:
        self.bus = SimBus(self.meters, **{"baud": 0, "turnaround": 0.0, **self.bus_args})
        self.emissions: list[Emission] = []

    def send(self, request: bytes, at: float | None = None) -> bytes:
        if at is not None:
            self.now = at
        out = self.bus.receive(request, self.now)
        self.emissions += out
        return b"".join(e.data for e in out)

    def live(
        self, address: str = X, read: LiveRead = LiveRead.V4A, kwh_scale: int | None = None, at: float | None = None
    ) -> LiveBlock:
        if at is not None:
            self.now = at
        block = decode(self.send(sign_on(address, read)), SIGN_ON_KIND[read], kwh_scale)
        assert isinstance(block, LiveBlock)
        assert block.address == address
        return block

    def read(self, address: str = X, at: float | None = None) -> Read:
        """A V4 A + B read (the A is the connect)."""
        if at is not None:
            self.now = at
        a = self.live(address)
        return Read.of(a, self.live(address, LiveRead.V4B, a.kwh_scale))

    def page(self, page: SettingsPage, address: str = X, sign: LiveRead = LiveRead.V4A, scale: int = 2) -> Block:
        """Connect, read a settings page, close."""
        assert self.send(sign_on(address, sign))
        raw = self.send(commands.settings_read(page))
        self.send(CLOSE)
        return decode(raw, PAGE_KIND[page], scale)

    def write(
        self, request: bytes, address: str = X, password: str = PASSWORD, sign: LiveRead = LiveRead.V4A
    ) -> tuple[bytes, bytes]:
        """Connect, password, the write, close: (reply to the password, reply to the write)."""
        assert len(self.send(sign_on(address, sign))) == 255
        pw = self.send(commands.password(password))
        reply = self.send(request)
        self.send(CLOSE)
        return pw, reply

    def write_ok(self, request: bytes, address: str = X, sign: LiveRead = LiveRead.V4A) -> None:
        assert self.write(request, address, sign=sign) == (ACK, ACK)


START = datetime(2026, 1, 5, 8)
"""The clock of the meters these tests make (by default a meter's clock starts at the host's time:
two meters made a moment apart would differ in their second)."""


def v4(address: str = X, **kwargs: Any) -> MeterModel:
    return MeterModel(address, MeterType.V4, **{"start": START} | kwargs)


def v3(address: str = X, **kwargs: Any) -> MeterModel:
    return MeterModel(address, MeterType.V3, **{"start": START} | kwargs)


# ---------------------------------------------------------------------------------------------------
# Addressing


def test_only_the_addressed_meter_answers() -> None:
    host = Host([v4(X), v4(Y)])
    assert host.live(X).address == X
    assert host.live(Y).address == Y
    assert host.send(sign_on(ABSENT)) == b""
    assert [t.meter for t in host.bus.transactions] == [X, Y, None]


@pytest.mark.parametrize("history", [1, 3, 50])
def test_the_record_keeps_the_latest_history_transactions_at_least_and_never_twice_as_many(history: int) -> None:
    bus = SimBus([v4(X)], baud=0, turnaround=0, history=history)
    for n in range(1, 200):
        bus.receive(sign_on(X), float(n))
        assert history <= len(bus.transactions) < 2 * history or len(bus.transactions) == n
        assert bus.served == n
        assert [t.index for t in bus.transactions] == list(range(n - len(bus.transactions), n))


def test_the_record_is_bounded_by_default_and_whole_on_request() -> None:
    assert SimBus([v4(X)]).history == 1000
    bus = SimBus([v4(X)], baud=0, turnaround=0, history=None)
    for n in range(2500):
        bus.receive(sign_on(X), float(n))
    assert len(bus.transactions) == bus.served == 2500
    with pytest.raises(ValueError, match="history"):
        SimBus([v4(X)], history=0)


def test_addressing_another_meter_ends_the_first_session() -> None:
    x, y = v4(X), v4(Y)
    host = Host([x, y])
    host.live(X)
    assert x.state is State.CONNECTED
    host.live(Y)
    assert x.state is State.IDLE
    assert host.send(commands.password(PASSWORD)) == ACK
    assert host.bus.transactions[-1].meter == Y
    assert host.send(commands.ct_ratio(CTRatio.AMPS_800)) == ACK
    assert (x.ct_ratio, y.ct_ratio) == (200, 800)


def test_a_sign_on_nobody_answers_leaves_no_session() -> None:
    x = v4(X)
    host = Host([x])
    host.live(X)
    assert host.send(sign_on(ABSENT)) == b""
    assert x.state is State.IDLE
    assert host.send(commands.password(PASSWORD)) == b""
    assert host.send(commands.settings_read(SettingsPage.HOLIDAYS)) == b""


def test_requests_split_into_single_bytes_and_noise_are_heard() -> None:
    host = Host([v4(X)])
    request = sign_on(X)
    for byte in request[:-1]:
        assert host.send(bytes([byte])) == b""
    reply = host.send(request[-1:])
    assert decode(reply, BlockKind.V4A).address == X
    noisy = host.send(b"\x7f\x00zz" + commands.password(PASSWORD))
    assert noisy == ACK


# ---------------------------------------------------------------------------------------------------
# Session rules on the meter


def test_write_without_connect_gets_no_ack_and_changes_nothing() -> None:
    m = v4()
    host = Host([m])
    assert host.send(commands.password(PASSWORD)) == b""
    assert host.send(commands.ct_ratio(800)) == b""
    assert m.ct_ratio == 200
    assert m.writes == []


def test_write_after_connect_without_password_gets_no_ack() -> None:
    m = v4()
    host = Host([m])
    host.live()
    assert host.send(commands.ct_ratio(800)) == b""
    assert m.ct_ratio == 200


def test_wrong_password_is_not_acknowledged_and_the_write_after_it_neither() -> None:
    m = v4()
    host = Host([m])
    assert host.write(commands.ct_ratio(800), password="11111111") == (b"", b"")
    assert m.ct_ratio == 200
    # In the same session a refused password may be followed by the right one.
    host.live()
    assert host.send(commands.password("11111111")) == b""
    assert host.send(commands.password(PASSWORD)) == ACK
    assert host.send(commands.ct_ratio(800)) == ACK
    assert m.ct_ratio == 800


def test_a_second_write_needs_connect_and_password_again() -> None:
    m = v4()
    host = Host([m])
    host.live()
    assert host.send(commands.password(PASSWORD)) == ACK
    assert host.send(commands.ct_ratio(800)) == ACK
    assert host.send(commands.ct_ratio(1200)) == b""
    assert host.send(commands.password(PASSWORD)) == b""
    assert host.send(commands.ct_ratio(1200)) == b""
    assert m.ct_ratio == 800
    host.live()
    assert host.send(commands.ct_ratio(1200)) == b""  # connect alone is not enough
    assert host.send(commands.password(PASSWORD)) == ACK
    assert host.send(commands.ct_ratio(1200)) == ACK
    assert m.ct_ratio == 1200


def test_reads_follow_a_write_without_reconnecting() -> None:
    m = v4()
    host = Host([m])
    host.live()
    host.send(commands.password(PASSWORD))
    assert host.send(commands.ct_ratio(800)) == ACK
    assert decode(host.send(commands.settings_read(SettingsPage.HOLIDAYS)), BlockKind.HOLIDAYS)
    assert decode(host.send(sign_on(X, LiveRead.V4B)), BlockKind.V4B, 2).fields["CT_Ratio"] == 800


def test_close_ends_the_session() -> None:
    m = v4()
    host = Host([m])
    host.live()
    assert host.send(commands.password(PASSWORD)) == ACK
    assert host.send(CLOSE) == b""
    assert m.state is State.IDLE
    assert host.send(commands.ct_ratio(800)) == b""
    assert host.send(commands.settings_read(SettingsPage.SCHEDULES_1_4)) == b""
    assert m.ct_ratio == 200


@pytest.mark.parametrize("page", list(SettingsPage))
def test_settings_reads_need_a_connection(page: SettingsPage) -> None:
    host = Host([v4()])
    assert host.send(commands.settings_read(page)) == b""
    host.live()
    assert len(host.send(commands.settings_read(page))) == 255


# ---------------------------------------------------------------------------------------------------
# Every write shows in later reads


@FEW
@given(st.sampled_from(list(CTRatio)))
def test_ct_ratio_shows_in_v4_b_and_v3(ratio: CTRatio) -> None:
    host = Host([v4(X), v3(Y)])
    host.write_ok(commands.ct_ratio(ratio), X)
    host.write_ok(commands.ct_ratio(ratio), Y, sign=LiveRead.V3)
    assert host.read(X).fields["CT_Ratio"] == ratio.value
    assert host.live(Y, LiveRead.V3).fields["CT_Ratio"] == ratio.value


@FEW
@given(st.lists(st.integers(1, 9999), min_size=3, max_size=3))
def test_pulse_input_ratios_show_in_b_per_line(ratios: list[int]) -> None:
    host = Host([v4()])
    for line, ratio in enumerate(ratios, 1):
        host.write_ok(commands.pulse_input_ratio(line, ratio))
    fields = host.read().fields
    assert [fields[f"Pulse_Ratio_{n}"] for n in (1, 2, 3)] == ratios


@FEW
@given(st.sampled_from(list(PulseOutputRatio)))
def test_pulse_output_ratio_shows_in_b(ratio: PulseOutputRatio) -> None:
    host = Host([v4()])
    host.write_ok(commands.pulse_output_ratio(ratio))
    assert host.read().fields["Pulse_Output_Ratio"] == ratio.value


@pytest.mark.parametrize(
    ("closed", "expected"),
    [((), StateOut.OFF_OFF), ((1,), StateOut.ON_OFF), ((2,), StateOut.OFF_ON), ((1, 2), StateOut.ON_ON)],
)
def test_relays_show_in_state_out(closed: tuple[int, ...], expected: StateOut) -> None:
    host = Host([v4()])
    for relay in closed:
        host.write_ok(commands.relay(relay, RelayState.CLOSE, 0))
    assert host.read(at=10_000.0).fields["State_Out"] == expected.value  # held: 0 seconds = indefinitely
    for relay in closed:
        host.write_ok(commands.relay(relay, RelayState.OPEN, 0))
    assert host.read().fields["State_Out"] == StateOut.OFF_OFF.value


@pytest.mark.parametrize("relay", list(Relay))
def test_a_timed_relay_close_reverts_to_open_after_its_seconds(relay: Relay) -> None:
    host = Host([v4()])
    host.live(at=10.0)
    host.write_ok(commands.relay(relay, RelayState.CLOSE, 5))
    closed = StateOut.ON_OFF if relay is Relay.RELAY_1 else StateOut.OFF_ON
    assert host.live(at=14.5).fields["State_Out"] == closed.value
    assert host.live(at=15.5).fields["State_Out"] == StateOut.OFF_OFF.value
    assert host.live(at=100.0).fields["State_Out"] == StateOut.OFF_OFF.value


@FEW
@given(st.lists(st.sampled_from(list(LcdItem)), min_size=1, max_size=40))
def test_lcd_items_are_stored_in_order(items: list[LcdItem]) -> None:
    m = v4()
    Host([m]).write_ok(commands.lcd(items))
    assert m.lcd == [item.value for item in items]


@FEW
@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31, 23, 0)).map(
        lambda d: d.replace(microsecond=0)
    ),
    st.integers(0, 100_000),
    st.sampled_from([MeterType.V3, MeterType.V4]),
)
def test_time_is_set_and_the_clock_runs_on(when: datetime, later: int, kind: MeterType) -> None:
    m = MeterModel(X, kind)
    host = Host([m])
    sign = LiveRead.V3 if kind is MeterType.V3 else LiveRead.V4A
    host.live(X, sign, at=5.0)
    host.write_ok(commands.set_time(when), sign=sign)
    now = host.live(X, sign)
    assert now.meter_datetime == when
    assert now.fields["Meter_Time"] == when.strftime("%y%m%d") + f"{when.isoweekday():02d}" + when.strftime("%H%M%S")
    assert host.live(X, sign, at=5.0 + later).meter_datetime == when + timedelta(seconds=later)


periods = st.builds(Period, st.integers(0, 23), st.integers(0, 59), st.integers(1, 4))
UNUSED_PERIOD = Period(0, 0, 1)  # zeros on the wire: 00:00, the first tariff
UNUSED_SEASON = Season(0, 0, 1)  # zeros on the wire: month 0, the first schedule


@FEW
@given(st.integers(1, 8), st.lists(periods, max_size=4))
def test_each_of_the_eight_schedules_shows_on_its_page(number: int, written: list[Period]) -> None:
    host = Host([v4()])

    def all_schedules() -> dict[int, tuple[Period, ...]]:
        pages = [host.page(SettingsPage.SCHEDULES_1_4), host.page(SettingsPage.SCHEDULES_5_8)]
        assert all(isinstance(p, SchedulesBlock) for p in pages)
        return {n: s for p in pages if isinstance(p, SchedulesBlock) for n, s in p.schedules().items()}

    before = all_schedules()
    assert sorted(before) == list(range(1, 9))
    host.write_ok(commands.schedule(number, written))
    after = all_schedules()
    expected = {**before, number: tuple(written) + (UNUSED_PERIOD,) * (4 - len(written))}
    assert after == expected


month_days = st.integers(1, 12).flatmap(
    lambda m: st.tuples(st.just(m), st.integers(1, [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1]))
)


@FEW
@given(st.lists(st.builds(lambda md, s: Season(md[0], md[1], s), month_days, st.integers(1, 8)), max_size=4))
def test_seasons_show_on_page_one(seasons: list[Season]) -> None:
    host = Host([v4()])
    host.write_ok(commands.seasons(seasons))
    page = host.page(SettingsPage.SCHEDULES_1_4)
    assert isinstance(page, SchedulesBlock)
    assert page.seasons() == tuple(seasons) + (UNUSED_SEASON,) * (4 - len(seasons))


@FEW
@given(st.lists(month_days.map(lambda md: MonthDay(*md)), max_size=20), st.integers(1, 8), st.integers(1, 8))
def test_holidays_and_weekend_holiday_schedules_show_in_the_holidays_block(
    days: list[MonthDay], weekend: int, holiday: int
) -> None:
    host = Host([v4()])
    host.write_ok(commands.holidays(days))
    host.write_ok(commands.weekend_holiday_schedules(weekend, holiday))
    block = host.page(SettingsPage.HOLIDAYS)
    assert isinstance(block, HolidaysBlock)
    assert block.holidays() == tuple(days) + (MonthDay(0, 0),) * (20 - len(days))
    assert (block.fields["Weekend_Schd"], block.fields["Holiday_Schd"]) == (weekend, holiday)


@FEW
@given(st.text("0123456789", min_size=8, max_size=8).filter(lambda p: p != PASSWORD))
def test_password_change_refuses_the_old_and_accepts_the_new(new: str) -> None:
    m = v4()
    host = Host([m])
    host.write_ok(commands.change_password(new))
    assert host.write(commands.ct_ratio(800)) == (b"", b"")
    assert m.ct_ratio == 200
    assert host.write(commands.ct_ratio(800), password=new) == (ACK, ACK)
    assert m.ct_ratio == 800


def test_address_change_makes_the_meter_answer_to_the_new_address_only() -> None:
    m = v4(X)
    host = Host([m])
    host.write_ok(commands.change_address(Y))
    assert host.send(sign_on(X)) == b""
    assert host.read(Y).fields["Meter_Address"] == Y
    assert host.bus.meter(Y) is m


def test_zero_resettable_zeroes_both_resettable_registers_only() -> None:
    m = v4()
    m.set_line_direction(2, reverse=True)
    host = Host([m])
    host.live(at=0.0)
    before = host.live(at=7200.0).fields
    assert before["Resettable_kWh_Tot"] > 0
    assert before["Resettable_Rev_kWh_Tot"] > 0
    host.write_ok(commands.zero_resettable())
    after = host.live().fields
    assert after["Resettable_kWh_Tot"] == 0
    assert after["Resettable_Rev_kWh_Tot"] == 0
    assert after["kWh_Tot"] == before["kWh_Tot"]
    assert after["Rev_kWh_Tot"] == before["Rev_kWh_Tot"]
    later = host.live(at=10_800.0).fields  # they count again from zero
    assert 0 < later["Resettable_kWh_Tot"] < before["Resettable_kWh_Tot"]


@pytest.mark.parametrize("period", list(MaxDemandPeriod))
def test_max_demand_period_shows_in_v4_b_and_v3(period: MaxDemandPeriod) -> None:
    host = Host([v4(X), v3(Y)])
    host.write_ok(commands.max_demand_period(period), X)
    host.write_ok(commands.max_demand_period(period), Y, sign=LiveRead.V3)
    assert host.read(X).fields["Max_Demand_Period"] == period.value
    assert host.live(Y, LiveRead.V3).fields["Max_Demand_Period"] == period.value


@pytest.mark.parametrize("interval", list(MaxDemandResetInterval))
def test_max_demand_reset_interval_shows_in_b(interval: MaxDemandResetInterval) -> None:
    host = Host([v4()])
    host.write_ok(commands.max_demand_reset_interval(interval))
    assert host.read().fields["Max_Demand_Interval_Reset"] == interval.name.lower()  # "daily", not its code


def test_max_demand_reset_now_clears_the_max_demand() -> None:
    host = Host([v4()])
    host.live(at=0.0)
    before = host.read(at=600.0).fields
    assert before["RMS_Watts_Max_Demand"] >= before["RMS_Watts_Tot"] > 0
    host.write_ok(commands.max_demand_reset_now())
    assert host.read().fields["RMS_Watts_Max_Demand"] == 0


def test_a_schedule_write_decides_which_tariff_register_counts() -> None:
    """The default clock starts on a Monday at 08:00; schedule 1 is then used. Make it tariff 4 all day."""
    host = Host([v4()])
    host.write_ok(commands.schedule(1, [Period(0, 0, 4)]))
    start = host.read(at=0.0).fields
    end = host.read(at=3600.0).fields
    grew = [end[f"kWh_Tariff_{t}"] > start[f"kWh_Tariff_{t}"] for t in (1, 2, 3, 4)]
    assert grew == [False, False, False, True]


# ---------------------------------------------------------------------------------------------------
# V3 and V4


V4_ONLY_WRITES = [
    commands.relay(1, RelayState.CLOSE, 0),
    commands.relay(2, RelayState.CLOSE, 10),
    commands.pulse_input_ratio(1, 5),
    commands.pulse_input_ratio(2, 5),
    commands.pulse_input_ratio(3, 5),
    commands.pulse_output_ratio(5),
    commands.zero_resettable(),
    commands.lcd([LcdItem.kWh_Tot, LcdItem.Line_Freq]),
    commands.max_demand_reset_interval(MaxDemandResetInterval.DAILY),
]


@pytest.mark.parametrize("request_", V4_ONLY_WRITES, ids=lambda r: r[4:8].decode())
def test_v4_only_writes_are_refused_by_a_v3_meter(request_: bytes) -> None:
    m = v3()
    host = Host([m])
    before = host.live(X, LiveRead.V3).raw
    assert host.write(request_, sign=LiveRead.V3) == (ACK, b"")
    assert m.writes == []
    assert host.live(X, LiveRead.V3).raw == before


@pytest.mark.parametrize("request_", V4_ONLY_WRITES, ids=lambda r: r[4:8].decode())
def test_v4_only_writes_are_accepted_by_a_v4_meter(request_: bytes) -> None:
    m = v4()
    assert Host([m]).write(request_) == (ACK, ACK)
    assert len(m.writes) == 1


@pytest.mark.parametrize(
    ("kind", "answered"),
    [(MeterType.V3, {LiveRead.V3}), (MeterType.V4, {LiveRead.V4A, LiveRead.V4B})],
)
def test_each_meter_type_answers_only_its_sign_ons(kind: MeterType, answered: set[LiveRead]) -> None:
    m = MeterModel(X, kind)
    host = Host([m])
    for read in LiveRead:
        reply = host.send(sign_on(X, read))
        if read in answered:
            assert decode(reply, SIGN_ON_KIND[read], 2).address == X
            assert m.state is State.CONNECTED
        else:
            assert reply == b""
            assert m.state is State.IDLE
            assert host.send(commands.password(PASSWORD)) == b""


# ---------------------------------------------------------------------------------------------------
# Live values

ENERGY_A = [
    "kWh_Tot",
    "Rev_kWh_Tot",
    *(f"kWh_Ln_{n}" for n in (1, 2, 3)),
    *(f"Rev_kWh_Ln_{n}" for n in (1, 2, 3)),
    "Resettable_kWh_Tot",
    "Resettable_Rev_kWh_Tot",
]
ENERGY_B = [*(f"kWh_Tariff_{t}" for t in (1, 2, 3, 4)), *(f"Rev_kWh_Tariff_{t}" for t in (1, 2, 3, 4))]
PULSES = [f"Pulse_Cnt_{n}" for n in (1, 2, 3)]


def transcript(seed: int, steps: list[tuple[float, int]]) -> list[tuple[float, bytes]]:
    """Everything that came back for one request/time sequence, at 9600 baud."""
    requests = [
        sign_on(X),
        sign_on(X, LiveRead.V4B),
        commands.settings_read(SettingsPage.MONTHS_FORWARD),
        commands.password(PASSWORD),
        commands.relay(1, RelayState.CLOSE, 3),
        sign_on(Y),
        CLOSE,
    ]
    host = Host([v4(X, seed=seed), v4(Y, seed=seed)], {"baud": 9600, "turnaround": 0.02})
    t = 0.0
    for gap, which in steps:
        t += gap
        host.send(requests[which], at=t)
    return [(e.start, e.data) for e in host.emissions]


@FEW
@given(st.integers(0, 2**32), st.lists(st.tuples(st.floats(0, 500), st.integers(0, 6)), min_size=1, max_size=15))
def test_same_seed_and_sequence_give_identical_bytes(seed: int, steps: list[tuple[float, int]]) -> None:
    assert transcript(seed, steps) == transcript(seed, steps)


@FEW
@given(st.integers(0, 2**32), st.integers(0, 2**32))
def test_different_seeds_give_different_values(seed_1: int, seed_2: int) -> None:
    if seed_1 == seed_2:
        seed_2 += 1
    frames = [Host([v4(seed=s)]).live() for s in (seed_1, seed_2)]
    volts_amps = [tuple(f.fields[f"{k}_Ln_{n}"] for k in ("RMS_Volts", "Amps") for n in (1, 2, 3)) for f in frames]
    assert volts_amps[0] != volts_amps[1]
    assert frames[0].raw != frames[1].raw


@FEW
@given(
    st.integers(0, 1000),
    st.lists(st.floats(0, 4000), min_size=2, max_size=12),
    st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_live_values_evolve_plausibly(seed: int, gaps: list[float], reverse: list[bool]) -> None:
    m = v4(seed=seed)
    for line, rev in enumerate(reverse, 1):
        m.set_line_direction(line, reverse=rev)
    host = Host([m])
    t, reads = 0.0, []
    for gap in gaps:
        t += gap
        reads.append(host.read(at=t).fields)
    for prev, cur in itertools.pairwise(reads):
        for name in ENERGY_A + ENERGY_B + PULSES:
            assert cur[name] >= prev[name], name
    first, last = reads[0], reads[-1]
    for f in reads:
        for n in (1, 2, 3):
            assert 108 <= f[f"RMS_Volts_Ln_{n}"] <= 132
            assert f[f"Amps_Ln_{n}"] > 0
        assert 59.5 <= f["Line_Freq"] <= 60.5
        assert f["RMS_Watts_Tot"] == sum(f[f"RMS_Watts_Ln_{n}"] for n in (1, 2, 3))
        assert abs(sum(f[f"kWh_Tariff_{t}"] for t in (1, 2, 3, 4)) - f["kWh_Tot"]) <= 0.06
        assert abs(sum(f[f"kWh_Ln_{n}"] for n in (1, 2, 3)) - f["kWh_Tot"]) <= 0.04
    elapsed = sum(gaps[1:])
    if elapsed >= 600:
        grown = "Rev_kWh_Tot" if any(reverse) else "kWh_Tot"
        assert last[grown] > first[grown]
    if elapsed >= 10:
        for name in PULSES:
            assert last[name] > first[name]


@pytest.mark.parametrize("scale", [0, 1, 2])
def test_kwh_registers_have_the_meters_kwh_scale(scale: int) -> None:
    host = Host([v4(kwh_scale=scale)])
    host.live(at=0.0)
    fields = host.read(at=1000.0).fields
    assert fields["kWh_Scale"] == scale
    for name in ENERGY_A + ENERGY_B:
        value = float(fields[name]) * 10**scale
        assert value == pytest.approx(round(value), abs=1e-6), name
    assert float(fields["kWh_Tot"]) > 100


def test_reactive_energy_is_a_register_that_grows_with_time() -> None:
    """Reactive_Energy_Tot is the kvarh total (protocol.md §4.3): after an hour of reactive load it
    has grown by about the reactive power times one hour, as kWh_Tot does with the real power."""
    host = Host([v4()])
    readings = [host.live(at=t).fields for t in (0.0, 3600.0, 7200.0)]
    for before, after in itertools.pairwise(readings):
        kvar = min(before["Reactive_Pwr_Tot"], after["Reactive_Pwr_Tot"]) / 1000
        assert kvar > 0
        assert after["Reactive_Energy_Tot"] - before["Reactive_Energy_Tot"] >= 0.5 * kvar


# ---------------------------------------------------------------------------------------------------
# Settings reads


@pytest.mark.parametrize("page", list(SettingsPage))
def test_settings_reads_are_answered_in_both_forms(page: SettingsPage) -> None:
    host = Host([v4()])
    host.live()
    long_form = host.send(commands.settings_read(page))
    short_form = host.send(short_settings_read(page))
    assert decode(long_form, PAGE_KIND[page], 2).kind is PAGE_KIND[page]
    assert short_form == long_form


def test_forward_and_reverse_months_differ() -> None:
    host = Host([v4()])
    host.live()
    forward = host.send(commands.settings_read(SettingsPage.MONTHS_FORWARD))
    reverse = host.send(commands.settings_read(SettingsPage.MONTHS_REVERSE))
    assert decode(forward, BlockKind.MONTHS, 2).fields != decode(reverse, BlockKind.MONTHS, 2).fields


# ---------------------------------------------------------------------------------------------------
# Bad CRC


crc_pairs = st.tuples(st.integers(0, 0x7F), st.integers(0, 0x7F)).map(bytes)


@given(crc_pairs)
def test_requests_with_a_bad_crc_get_no_answer_and_change_nothing(crc: bytes) -> None:
    password = commands.password(PASSWORD)
    write = commands.ct_ratio(800)
    read = commands.settings_read(SettingsPage.HOLIDAYS)
    m = v4()
    host = Host([m])
    host.live()
    if crc != read[-2:]:
        assert host.send(with_crc(read, crc)) == b""
    if crc != password[-2:]:
        assert host.send(with_crc(password, crc)) == b""
        assert m.state is State.CONNECTED  # not even a refused password
    assert host.send(password) == ACK
    if crc != write[-2:]:
        assert host.send(with_crc(write, crc)) == b""
        assert m.ct_ratio == 200
        assert m.state is State.AUTHORIZED
    assert host.send(write) == ACK
    assert m.ct_ratio == 800


# ---------------------------------------------------------------------------------------------------
# Faults


def pair(*faults: Fault, seed: int = 0, **bus_args: Any) -> tuple[Host, Host]:
    """A clean host and a faulted one with identical meters."""
    clean = Host([v4(X), v4(Y)], dict(bus_args))
    return clean, Host([v4(X), v4(Y)], {"faults": list(faults), "seed": seed, **bus_args})


@given(st.integers(0, 10_000))
def test_crc_fault_makes_the_frame_fail_its_crc(seed: int) -> None:
    clean, faulty = pair(Fault(FaultKind.CRC), seed=seed)
    good, bad = clean.send(sign_on(X)), faulty.send(sign_on(X))
    assert len(bad) == 255
    assert sum(a != b for a, b in zip(good, bad, strict=True)) == 1
    with pytest.raises(FrameError) as info:
        decode(bad)
    assert info.value.reason is RejectReason.CRC
    assert faulty.bus.transactions[-1].faults == (FaultKind.CRC,)


def test_crc_fault_leaves_acks_alone() -> None:
    _, faulty = pair(Fault(FaultKind.CRC))
    faulty.send(sign_on(X))
    assert faulty.send(commands.password(PASSWORD)) == ACK


@given(st.integers(0, 10_000))
def test_truncate_fault_cuts_the_frame_short(seed: int) -> None:
    clean, faulty = pair(Fault(FaultKind.TRUNCATE), seed=seed)
    good, cut = clean.send(sign_on(X)), faulty.send(sign_on(X))
    assert 0 < len(cut) < 255
    assert good.startswith(cut)


@given(st.integers(0, 10_000))
def test_garbage_fault_puts_bytes_before_the_stx(seed: int) -> None:
    clean, faulty = pair(Fault(FaultKind.GARBAGE), seed=seed)
    good, noisy = clean.send(sign_on(X)), faulty.send(sign_on(X))
    assert len(noisy) > 255
    assert noisy.endswith(good)
    assert noisy.isascii()


def test_garbage_fault_applies_to_acks_too() -> None:
    _, faulty = pair(Fault(FaultKind.GARBAGE))
    faulty.send(sign_on(X))
    reply = faulty.send(commands.password(PASSWORD))
    assert len(reply) > 1
    assert reply.endswith(ACK)


def test_delay_fault_starts_the_reply_later() -> None:
    clean, faulty = pair(Fault(FaultKind.DELAY, seconds=2.5), baud=9600, turnaround=0.02)
    clean.send(sign_on(X), at=1.0)
    faulty.send(sign_on(X), at=1.0)
    [good], [late] = clean.emissions, faulty.emissions
    assert late.data == good.data
    assert late.start == pytest.approx(good.start + 2.5)


@given(st.integers(0, 10_000))
def test_wrong_address_fault_gives_a_valid_frame_of_another_address(seed: int) -> None:
    clean, faulty = pair(Fault(FaultKind.WRONG_ADDRESS), seed=seed)
    good, wrong = clean.send(sign_on(X)), faulty.send(sign_on(X))
    block = decode(wrong, BlockKind.V4A)
    assert block.address != X
    assert wrong[16:253] == good[16:253]
    assert wrong[:4] == good[:4]


@pytest.mark.parametrize("page", list(SettingsPage))
def test_wrong_address_fault_does_not_corrupt_settings_blocks(page: SettingsPage) -> None:
    """A settings block carries no address: the fault may only change live-data frames."""
    clean, faulty = pair(Fault(FaultKind.WRONG_ADDRESS))
    good, got = clean.page(page), faulty.page(page)
    assert got.raw == good.raw


def test_drop_fault_loses_the_reply_but_the_meter_acted() -> None:
    _, faulty = pair(Fault(FaultKind.DROP, nth=frozenset({3})))
    m = faulty.bus.meter(X)
    assert faulty.write(commands.ct_ratio(800)) == (ACK, b"")  # the 3rd reply: the write's ACK
    assert m.ct_ratio == 800
    last_write = faulty.bus.transactions[2]
    assert last_write.request.kind is RequestKind.WRITE
    assert last_write.meter == X
    assert last_write.reply is None
    assert last_write.faults == (FaultKind.DROP,)


def test_dead_meter_hears_nothing_and_its_state_does_not_change() -> None:
    _, faulty = pair(Fault(FaultKind.DEAD, address=X, nth=frozenset({3, 4})))
    m = faulty.bus.meter(X)
    assert len(faulty.send(sign_on(X))) == 255
    assert faulty.send(commands.password(PASSWORD)) == ACK
    assert faulty.send(commands.ct_ratio(800)) == b""  # dead for the 3rd request it could hear
    assert faulty.send(CLOSE) == b""  # and the 4th
    assert m.ct_ratio == 200
    assert m.state is State.AUTHORIZED  # the write and the close never reached it
    assert faulty.send(commands.ct_ratio(800)) == ACK
    assert m.ct_ratio == 800


def test_dead_fault_silences_every_request() -> None:
    _, faulty = pair(Fault(FaultKind.DEAD))
    assert faulty.send(sign_on(X)) == b""
    assert faulty.send(sign_on(Y)) == b""
    assert faulty.bus.meter(X).state is State.IDLE
    assert [t.meter for t in faulty.bus.transactions] == [None, None]


def test_nth_counts_only_the_replies_a_fault_can_affect() -> None:
    _, faulty = pair(Fault(FaultKind.TRUNCATE, nth=frozenset({2})))
    assert len(faulty.send(sign_on(X))) == 255  # frame 1
    assert faulty.send(commands.password(PASSWORD)) == ACK  # an ACK: not a frame, not counted
    assert len(faulty.send(sign_on(X, LiveRead.V4B))) < 255  # frame 2
    assert len(faulty.send(sign_on(X))) == 255  # frame 3


def test_nth_of_a_dead_fault_counts_requests_whatever_the_number_of_meters() -> None:
    """``dead#2`` silences the second request, as ``truncate#2`` cuts the second frame; adding a
    meter to the bus must not move it to another request."""
    for meters in ([v4(X)], [v4(X), v4(Y)]):
        host = Host(meters, {"faults": [Fault.parse("dead#2")]})
        replies = [len(host.send(sign_on(X))) for _ in range(3)]
        assert replies == [255, 0, 255], f"{len(meters)} meter(s)"


def test_address_trigger_limits_a_fault_to_one_meter() -> None:
    _, faulty = pair(Fault(FaultKind.CRC, address=Y))
    for _ in range(3):
        assert decode(faulty.send(sign_on(X))).address == X
        with pytest.raises(FrameError, match="crc"):
            decode(faulty.send(sign_on(Y)))


def test_probability_zero_never_applies() -> None:
    clean, faulty = pair(*(Fault(kind, probability=0.0) for kind in FaultKind))
    for request in [sign_on(X), commands.password(PASSWORD), sign_on(Y), sign_on(X, LiveRead.V4B)]:
        assert faulty.send(request) == clean.send(request)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("crc=0.01", Fault(FaultKind.CRC, 0.01)),
        ("drop", Fault(FaultKind.DROP)),
        ("dead@000300001184", Fault(FaultKind.DEAD, address="000300001184")),
        ("delay=0.1:2.5", Fault(FaultKind.DELAY, 0.1, seconds=2.5)),
        ("truncate#3", Fault(FaultKind.TRUNCATE, nth=frozenset({3}))),
        ("garbage=0.5@000300001185#1,4", Fault(FaultKind.GARBAGE, 0.5, Y, frozenset({1, 4}))),
        ("WRONG-ADDRESS", Fault(FaultKind.WRONG_ADDRESS)),
        ("delay:0", Fault(FaultKind.DELAY, seconds=0.0)),
    ],
)
def test_fault_parse(spec: str, expected: Fault) -> None:
    assert Fault.parse(spec) == expected


@pytest.mark.parametrize(
    "spec", ["bogus", "crc=2", "crc=-0.1", "crc=abc", "dead@123", "dead@00030000118x", "delay:-1", "truncate#x", ""]
)
def test_fault_parse_errors_name_the_spec_and_the_syntax(spec: str) -> None:
    with pytest.raises(ValueError, match=r"KIND\[=P\]") as info:
        Fault.parse(spec)
    assert repr(spec) in str(info.value)
    if spec in ("bogus", ""):  # no kind: the kinds are listed
        assert "wrong-address" in str(info.value)
    for python in ("FaultKind", "invalid literal", "could not convert"):
        assert python not in str(info.value)


@given(
    st.sampled_from(list(FaultKind)),
    st.floats(0, 1),
    st.none() | st.text("0123456789", min_size=12, max_size=12),
    st.frozensets(st.integers(1, 1000), max_size=4),
    st.floats(0, 100),
)
def test_fault_parse_round_trips_the_cli_syntax(
    kind: FaultKind, probability: float, address: str | None, nth: frozenset[int], seconds: float
) -> None:
    spec = f"{kind.value}={probability!r}:{seconds!r}"
    spec += f"@{address}" if address else ""
    spec += "#" + ",".join(map(str, sorted(nth))) if nth else ""
    assert Fault.parse(spec) == Fault(kind, probability, address, nth, seconds)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"probability": 1.5}, "probability"), ({"seconds": -1.0}, "seconds"), ({"address": "12"}, "address")],
)
def test_fault_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Fault(FaultKind.CRC, **kwargs)


MIXED = [
    Fault(FaultKind.CRC, 0.3),
    Fault(FaultKind.TRUNCATE, 0.2),
    Fault(FaultKind.GARBAGE, 0.2),
    Fault(FaultKind.DROP, 0.1),
    Fault(FaultKind.DELAY, 0.2, seconds=0.5),
    Fault(FaultKind.WRONG_ADDRESS, 0.2),
    Fault(FaultKind.DEAD, 0.05),
]


def faulted_transcript(seed: int) -> list[tuple[object, ...]]:
    host = Host([v4(X), v4(Y)], {"faults": MIXED, "seed": seed, "baud": 9600, "turnaround": 0.02})
    for n in range(40):
        address = X if n % 3 else Y
        host.send(sign_on(address), at=n * 2.0)
        host.send(sign_on(address, LiveRead.V4B))
        host.send(commands.password(PASSWORD))
    return [(t.meter, t.reply, t.faults) for t in host.bus.transactions] + [(e.start, e.data) for e in host.emissions]


def test_faults_are_deterministic_per_seed() -> None:
    first = faulted_transcript(7)
    assert faulted_transcript(7) == first
    assert faulted_transcript(8) != first
    assert any(faults for _, _, faults in first[:120])  # some faults did happen


# ---------------------------------------------------------------------------------------------------
# Wire timing

BYTE = BITS_PER_CHAR / 9600


def test_a_reply_starts_after_the_request_and_turnaround_and_lasts_255_bytes() -> None:
    bus = SimBus([v4()], baud=9600, turnaround=0.02)
    assert bus.byte_time == pytest.approx(10 / 9600)
    request = sign_on(X)
    [reply] = bus.receive(request, 1.0)
    assert reply.start == pytest.approx(1.0 + len(request) * 10 / 9600 + 0.02)
    assert reply.end - reply.start == pytest.approx(255 * 10 / 9600)
    assert reply.byte_time == pytest.approx(BYTE)
    assert bus.transactions[0].time == pytest.approx(1.0 + 19 * BYTE)


def test_requests_queue_behind_a_reply_on_the_wire() -> None:
    bus = SimBus([v4()], baud=9600, turnaround=0.02)
    a, b = sign_on(X), sign_on(X, LiveRead.V4B)
    [first, second] = bus.receive(a + b, 0.0)
    assert second.start == pytest.approx(first.end + len(b) * BYTE + 0.02)
    [third] = bus.receive(a, second.start + 0.01)  # sent while the second reply is still on the wire
    assert third.start == pytest.approx(second.end + len(a) * BYTE + 0.02)
    [fourth] = bus.receive(a, third.end + 5.0)  # a free wire: no waiting
    assert fourth.start == pytest.approx(third.end + 5.0 + len(a) * BYTE + 0.02)


def test_echo_sends_the_request_back_first() -> None:
    bus = SimBus([v4()], baud=9600, turnaround=0.02, echo=True)
    request = sign_on(X)
    echo, reply = bus.receive(request, 2.0)
    assert echo.data == request
    assert echo.start == pytest.approx(2.0)
    assert reply.start == pytest.approx(echo.end + 0.02)
    assert decode(reply.data).address == X
    assert [e.data for e in bus.receive(CLOSE, 10.0)] == [CLOSE]


def test_baud_zero_means_no_byte_time() -> None:
    bus = SimBus([v4()], baud=0, turnaround=0.05)
    assert bus.byte_time == 0
    [reply] = bus.receive(sign_on(X), 3.0)
    assert reply.start == pytest.approx(3.05)
    assert reply.end == reply.start


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"baud": -1}, "≥ 0"), ({"turnaround": -0.1}, "0 to 1.5 s"), ({"turnaround": 1.6}, "0 to 1.5 s")],
)
def test_bus_rejects_timing_out_of_range(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimBus([v4()], **kwargs)


# ---------------------------------------------------------------------------------------------------
# The transaction record


def test_transactions_list_every_request_with_who_answered_and_the_reply() -> None:
    host = Host([v4(X), v4(Y)])
    requests = [
        sign_on(X),
        commands.password(PASSWORD),
        commands.ct_ratio(800),
        sign_on(ABSENT),
        with_crc(commands.password(PASSWORD), b"\x00\x00"),
        sign_on(Y, LiveRead.V4B),
        CLOSE,
    ]
    replies = [host.send(r, at=float(n)) for n, r in enumerate(requests)]
    record = host.bus.transactions
    assert [t.index for t in record] == list(range(len(requests)))
    assert [t.request.raw for t in record] == requests
    assert [t.time for t in record] == [float(n) for n in range(len(requests))]
    assert [t.meter for t in record] == [X, X, X, None, None, Y, None]
    assert [t.reply or b"" for t in record] == replies
    assert [t.request.kind for t in record] == [
        RequestKind.SIGN_ON,
        RequestKind.PASSWORD,
        RequestKind.WRITE,
        RequestKind.SIGN_ON,
        RequestKind.PASSWORD,
        RequestKind.SIGN_ON,
        RequestKind.CLOSE,
    ]
    assert record[4].request.crc_ok is False
    assert record[2].request.register == "00D0"
    assert record[2].request.data == "0800"
    assert all(t.faults == () for t in record)
