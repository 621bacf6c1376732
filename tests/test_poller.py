"""The poller against simulated buses (issue 5): many buses and meters, scheduling, observers, storage.

Every rig is a simulator per bus, served in memory, each bus with a URL of its own. The simulator's
record of the wire (``SimBus.transactions``) shows what the poller made the bus do; a SQLite file
written by a :class:`SqliteStore` observer is read back with :mod:`sqlite3` and every row decoded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ekm_async import (
    Bus,
    BusOptions,
    FailureEvent,
    FrameError,
    MeterUnavailable,
    Poller,
    Read,
    ReadEvent,
    ReplyTimeout,
    SqliteStore,
    V3Meter,
    V4Meter,
    decode,
    open_bus,
    poll,
)
from ekm_async.sim import Fault, FaultKind, MeterModel, MeterType, RequestKind, SimBus, SimServer
from ekm_async.store import FIELD_COLUMNS

GUARD = 30.0
"""Seconds after which a test is hung."""
X, Y, Z = "000300002001", "000300002002", "000300002003"


# ---------------------------------------------------------------------------------------------------
# Rigs and observers


@dataclass
class Rig:
    sim: SimBus
    bus: Bus

    def v4(self, address: str, **kw: Any) -> V4Meter:
        return self.bus.v4(address, **kw)


@contextlib.asynccontextmanager
async def buses(
    *layouts: list[MeterModel],
    pace: int = 0,
    turnaround: float = 0.001,
    faults: list[Fault] | None = None,
    url: str | None = None,
    **options: Any,
) -> AsyncIterator[list[Rig]]:
    """One simulated bus per layout (a list of meters), each opened as a bus of its own URL (or all with
    ``url``); ``faults`` apply to every simulated bus, ``options`` go to ``open_bus``. The bus's timeouts
    assume a fast wire (``baud``) unless told: the simulated wire is unpaced by default."""
    options = {"timeout_margin": 0.2, "baud": pace or 1_000_000} | options
    async with contextlib.AsyncExitStack() as stack:
        rigs = []
        for n, meters in enumerate(layouts):
            sim = SimBus(meters, baud=pace, turnaround=turnaround, faults=list(faults or []), seed=n)
            server = await stack.enter_async_context(SimServer(sim))
            bus = await stack.enter_async_context(
                open_bus(url or f"memory://bus-{n}", connect=server.memory_connector(), **options)
            )
            rigs.append(Rig(sim, bus))
        yield rigs


def v4(address: str, seed: int = 0) -> MeterModel:
    return MeterModel(address, MeterType.V4, seed=seed)


def v3(address: str, seed: int = 0) -> MeterModel:
    return MeterModel(address, MeterType.V3, seed=seed)


def handles(rig: Rig) -> list[V3Meter | V4Meter]:
    """A handle of the right kind for every simulated meter of ``rig``."""
    return [rig.bus.v3(m.address) if m.type is MeterType.V3 else rig.bus.v4(m.address) for m in rig.sim.meters]


@dataclass
class Recorder:
    """Keeps every read and every error it is told about (with the loop time it was told)."""

    reads: list[Read] = field(default_factory=list)
    errors: list[tuple[float, str, Exception]] = field(default_factory=list)

    async def on_read(self, read: Read) -> None:
        self.reads.append(read)

    async def on_error(self, meter: str, error: Exception) -> None:
        self.errors.append((asyncio.get_running_loop().time(), meter, error))


@dataclass
class Raising:
    """Raises on every read (and every error)."""

    calls: int = 0

    async def on_read(self, read: Read) -> None:
        self.calls += 1
        raise RuntimeError(f"observer bug #{self.calls}")

    async def on_error(self, meter: str, error: Exception) -> None:
        raise RuntimeError("observer bug in on_error")


@dataclass
class Sleeping:
    """Takes ``delay`` seconds over every read (set ``delay`` to 0 to let it catch up)."""

    delay: float
    reads: list[Read] = field(default_factory=list)

    async def on_read(self, read: Read) -> None:
        await asyncio.sleep(self.delay)
        self.reads.append(read)

    async def on_error(self, meter: str, error: Exception) -> None:
        await asyncio.sleep(self.delay)


@dataclass
class Flapping:
    """Raises on the reads numbered in ``fail_on`` (1-based), takes the others."""

    fail_on: set[int]
    calls: int = 0

    async def on_read(self, read: Read) -> None:
        self.calls += 1
        if self.calls in self.fail_on:
            raise ValueError(f"flap at read {self.calls}")

    async def on_error(self, meter: str, error: Exception) -> None:
        pass


async def wait_for(condition: Callable[[], bool], step: float = 0.002) -> None:
    """Until ``condition`` holds (the test's guard fails a wait that never ends)."""
    while not condition():
        await asyncio.sleep(step)


def rows(path: Path) -> list[sqlite3.Row]:
    """Every row of ``reads`` in ``path``, read by a connection of its own."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM reads ORDER BY id").fetchall()


def read_of_row(row: sqlite3.Row) -> Read:
    """The read the raw frames of ``row`` decode to, as the bus decodes them."""
    if row["kind"] == "v3":
        assert row["raw_b"] is None
        return Read.of(decode(row["raw_a"], "v3"))
    a = decode(row["raw_a"], "v4a")
    b = decode(row["raw_b"], "v4b", a.kwh_scale) if row["raw_b"] is not None else None
    return Read.of(a, b)


def total_ok(poller: Poller) -> int:
    return sum(status.ok for status in poller.status().values())


# ---------------------------------------------------------------------------------------------------
# Integration: 3 buses × 4 meters, 200 reads, 200 rows that decode again to their columns


async def test_three_buses_of_four_meters_200_reads_200_rows_that_decode_to_their_columns(tmp_path: Path) -> None:
    db = tmp_path / "reads.db"
    layouts = [
        [v4(f"{300003000 + 10 * b + n:012d}", seed=n) for n in range(3)] + [v3(f"{300003000 + 10 * b + 9:012d}")]
        for b in range(3)
    ]
    addresses = {m.address for layout in layouts for m in layout}
    async with asyncio.timeout(GUARD), buses(*layouts) as rigs:
        store = SqliteStore(db)
        async with store:
            meters = [h for rig in rigs for h in handles(rig)]
            async with Poller(meters, interval=0, count=200, observers=[store]) as poller:
                reads = [read async for read in poller]
            assert store.accepted == 200
        assert store.committed == 200
        status = poller.status()
    assert len(reads) == 200
    assert poller.dropped == 0
    assert sum(s.ok for s in status.values()) == 200
    assert all(s.errors == 0 for s in status.values())
    assert {s.bus for s in status.values()} == {rig.bus.url for rig in rigs}
    for rig in rigs:  # every meter of every bus was read, and each bus carried its own meters only
        on_bus = {t.request.address for t in rig.sim.transactions if t.request.kind is RequestKind.SIGN_ON}
        assert on_bus == {m.address for m in rig.sim.meters}
    stored = rows(db)
    assert len(stored) == 200
    assert {row["Meter_Address"] for row in stored} == addresses
    assert sorted((row["Meter_Address"], row["time_utc"]) for row in stored) == sorted(
        (r.address, r.time.timestamp()) for r in reads if r.time is not None
    )
    kinds = {row["kind"] for row in stored}
    assert kinds == {"v3", "v4"}
    for row in stored:
        again = read_of_row(row)
        assert again.address == row["Meter_Address"]
        assert row["kind"] == ("v3" if again.v3 else "v4")
        for column in FIELD_COLUMNS:
            expected = again.fields.get(column)
            assert row[column] == expected, (row["id"], column)
            assert type(row[column]) is type(expected), (row["id"], column, row[column])
        if row["kind"] == "v4":
            assert row["raw_b"] is not None
            assert row["Line_Freq"] is not None  # a V4 A field
            assert row["Max_Demand"] is None  # V3 only
        else:
            assert row["Reactive_Energy_Tot"] is None  # V4 only
            assert row["Max_Demand"] is not None


# ---------------------------------------------------------------------------------------------------
# Scheduling


@pytest.mark.parametrize("count", [100, 101, 143])
async def test_interval_zero_every_meter_of_a_bus_gets_its_turn(count: int) -> None:
    layouts = [[v4(f"{300004000 + 10 * b + n:012d}", seed=n) for n in range(4 if b else 3)] for b in range(2)]
    async with (
        asyncio.timeout(GUARD),
        buses(*layouts) as rigs,
        Poller([h for rig in rigs for h in handles(rig)], interval=0, count=count) as poller,
    ):
        await poller.wait()
    assert total_ok(poller) == count
    for rig in rigs:
        counts = [poller.status()[m.address].ok for m in rig.sim.meters]
        assert max(counts) - min(counts) <= 1, counts
        assert min(counts) > 0


async def test_each_meter_is_read_at_its_own_interval() -> None:
    fast, slow = 0.05, 0.2
    async with asyncio.timeout(GUARD), buses([v4(X), v4(Y, seed=1)]) as [rig]:
        times: dict[str, list[float]] = {X: [], Y: []}
        poller = Poller(interval=fast)
        poller.add(rig.v4(X))
        poller.add(rig.v4(Y), interval=slow)
        assert poller.status()[X].interval == fast
        assert poller.status()[Y].interval == slow
        async with poller:
            loop = asyncio.get_running_loop()
            async for read in poller:
                times[read.address].append(loop.time())
                if len(times[Y]) >= 6:
                    break
    n_fast, n_slow = len(times[X]), len(times[Y])
    # Over five slow intervals (1 s) the fast meter has about 20 intervals: 21 reads against 6.
    assert 2.5 <= n_fast / n_slow <= 4.5, (n_fast, n_slow)
    for address, every in ((X, fast), (Y, slow)):
        t = times[address]
        mean = (t[-1] - t[0]) / (len(t) - 1)
        assert mean >= every * 0.95, (address, mean)
        assert mean <= every * 1.5, (address, mean)  # not starved: about its interval, unpaced wire


async def test_a_paced_bus_is_kept_busy_up_to_its_wire_limit() -> None:
    """At 9600 baud each request starts on the wire right when the previous exchange ended."""
    async with (
        asyncio.timeout(GUARD),
        buses([v4(X), v4(Y, seed=1)], pace=9600, turnaround=0.02) as [rig],
        Poller([rig.v4(X), rig.v4(Y)], interval=0, count=3) as poller,
    ):
        await poller.wait()
    record = rig.sim.transactions
    bt = rig.sim.byte_time
    assert [t.request.kind for t in record].count(RequestKind.CLOSE) == 3
    gaps = []  # (request, next request, idle wire between the end of the first exchange and the next request)
    for prev, nxt in itertools.pairwise(record):
        prev_end = prev.time + (rig.sim.turnaround + len(prev.reply) * bt if prev.reply else 0.0)
        nxt_start = nxt.time - len(nxt.request.raw) * bt
        gaps.append((prev.request.kind, nxt.request.kind, nxt_start - prev_end))
    between = [gap for first, then, gap in gaps if first is RequestKind.CLOSE]
    assert len(between) == 2  # close → the next read's sign-on, twice
    assert all(then is RequestKind.SIGN_ON for first, then, _ in gaps if first is RequestKind.CLOSE)
    assert all(0 <= gap < 0.003 for gap in between), gaps  # the next read waited right behind the close
    assert all(gap < 0.02 for _, _, gap in gaps), gaps  # within a read: the host answers at once too
    span = record[-1].time - (record[0].time - len(record[0].request.raw) * bt)
    idle = sum(max(0.0, gap) for _, _, gap in gaps)
    assert idle / span < 0.05, (idle, span)
    assert {t.request.address for t in record if t.request.address} == {X, Y}


def busy_spans(sim: SimBus) -> list[tuple[float, float]]:
    """When each transaction of ``sim`` was on the wire: from its sign-on to its close."""
    spans, start = [], None
    for t in sim.transactions:
        if t.request.kind is RequestKind.SIGN_ON and start is None:
            start = t.time
        elif t.request.kind is RequestKind.CLOSE and start is not None:
            spans.append((start, t.time))
            start = None
    return spans


@pytest.mark.parametrize("same_url", [False, True], ids=["own-urls", "one-url"])
async def test_every_bus_is_polled_at_once_even_when_buses_share_a_url(same_url: bool) -> None:
    """Three buses, one meter each, each read taking 40 ms of meter turnaround: all three are in a
    transaction at the same time. The poller keys buses by URL (poller.py ``start``, ``_next``), so
    buses opened with the same URL (every in-memory simulator is ``sim://memory``) share two workers
    and one of them always waits."""
    layouts = [[v4(f"{300007000 + b:012d}", seed=b)] for b in range(3)]
    url = "sim://memory" if same_url else None
    async with (
        asyncio.timeout(GUARD),
        buses(*layouts, turnaround=0.02, url=url) as rigs,
        Poller([h for rig in rigs for h in handles(rig)], interval=0, count=15) as poller,
    ):
        await poller.wait()
    spans = [busy_spans(rig.sim) for rig in rigs]
    assert all(len(s) == 5 for s in spans), spans
    moments = sorted(t for bus in spans for span in bus for t in span)
    busy_at_once = max(sum(any(a <= t < b for a, b in bus) for bus in spans) for t in moments)
    assert busy_at_once == 3


# ---------------------------------------------------------------------------------------------------
# Observers


async def _timed_poll(count: int, path: Path, observers: list[Any]) -> tuple[float, SqliteStore, Poller]:
    """Poll 4 meters for ``count`` reads into a store at ``path`` (besides ``observers``): the seconds
    until ``count`` reads were made, the store (closed), the poller (closed)."""
    layout = [v4(f"{300005000 + n:012d}", seed=n) for n in range(4)]
    async with buses(layout, turnaround=0.005) as [rig]:
        store = SqliteStore(path, flush_interval=0.05)
        async with store:
            poller = Poller(handles(rig), interval=0, count=count, observers=[store, *observers])
            loop = asyncio.get_running_loop()
            async with poller:
                start = loop.time()
                # Polling is done at the count-th read event (wait() also waits for the observers).
                reads = [event async for event in poller.events() if isinstance(event, ReadEvent)]
                elapsed = loop.time() - start
                assert len(reads) == count
                await asyncio.sleep(0.02)  # the store's task takes what was published last
                assert store.accepted == count  # storage kept up with polling
                for observer in observers:
                    if isinstance(observer, Sleeping):
                        assert len(observer.reads) <= elapsed / observer.delay + 1  # it did lag behind
                        observer.delay = 0.0  # let it catch up on close
    return elapsed, store, poller


async def test_a_raising_and_a_sleeping_observer_do_not_slow_polling_or_storage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ekm_async.poller")
    count, delay = 30, 0.2
    async with asyncio.timeout(GUARD):
        base, base_store, base_poller = await _timed_poll(count, tmp_path / "base.db", [])
        raising, sleeping = Raising(), Sleeping(delay)
        elapsed, store, poller = await _timed_poll(count, tmp_path / "with.db", [raising, sleeping])
    # Had polling waited for the sleeper, it would have taken count × delay = 6 s.
    assert elapsed < count * delay / 4, (elapsed, base)
    assert elapsed < 3 * base + 0.5, (elapsed, base)
    assert total_ok(poller) == total_ok(base_poller) == count
    assert len(rows(tmp_path / "with.db")) == len(rows(tmp_path / "base.db")) == count
    assert store.committed == base_store.committed == count
    assert raising.calls == count
    assert len(sleeping.reads) == count  # nothing dropped, all taken by the end
    assert poller.observer_failures() == {"SqliteStore": 0, "Raising": count, "Sleeping": 0}
    assert poller.observer_dropped() == {"SqliteStore": 0, "Raising": 0, "Sleeping": 0}
    warnings = [r for r in caplog.records if r.name == "ekm_async.poller" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once per episode, not once per read
    assert "Raising" in warnings[0].getMessage()
    assert "observer bug #1" in warnings[0].getMessage()


async def test_observer_failures_are_logged_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ekm_async.poller")
    flapping = Flapping({1, 2, 3, 7, 8})
    async with (
        asyncio.timeout(GUARD),
        buses([v4(X)]) as [rig],
        Poller([rig.v4(X)], interval=0, count=12, observers=[flapping]) as poller,
    ):
        await poller.wait()
    assert flapping.calls == 12
    assert poller.observer_failures() == {"Flapping": 5}
    mine = [r for r in caplog.records if r.name == "ekm_async.poller"]
    assert [(r.levelno, "Flapping" in r.getMessage()) for r in mine] == [
        (logging.WARNING, True),
        (logging.INFO, True),  # recovered at read 4
        (logging.WARNING, True),
        (logging.INFO, True),  # recovered at read 9
    ]
    assert "flap at read 1" in mine[0].getMessage()
    assert "flap at read 7" in mine[2].getMessage()


async def test_failures_of_two_observers_of_one_class_are_both_counted() -> None:
    """``observer_failures()`` is keyed by class name: a second observer of the same class (two stores,
    two webhooks) must not hide the first one's failures."""
    first, second = Raising(), Raising()
    async with (
        asyncio.timeout(GUARD),
        buses([v4(X)]) as [rig],
        Poller([rig.v4(X)], interval=0, count=10, observers=[first, second]) as poller,
    ):
        await poller.wait()
    assert first.calls == second.calls == 10
    assert sum(poller.observer_failures().values()) == 20, poller.observer_failures()


async def test_the_async_for_queue_drops_its_oldest_reads_when_nobody_takes_them() -> None:
    recorder = Recorder()
    async with (
        asyncio.timeout(GUARD),
        buses([v4(X), v4(Y, seed=1)]) as [rig],
        Poller([rig.v4(X), rig.v4(Y)], interval=0, count=20, queue_size=5, observers=[recorder]) as poller,
    ):
        await poller.wait()  # nobody iterates while the 20 reads are made
        assert poller.dropped == 15
        kept = [read async for read in poller]
    assert len(kept) == 5
    assert poller.observer_dropped() == {"Recorder": 0}  # it kept up: it saw all 20, in order
    assert len(recorder.reads) == 20
    assert kept == recorder.reads[-5:]  # the newest five


async def test_a_consumer_that_keeps_up_loses_nothing() -> None:
    async with (
        asyncio.timeout(GUARD),
        buses([v4(X), v4(Y, seed=1)]) as [rig],
        Poller([rig.v4(X), rig.v4(Y)], interval=0, count=50, queue_size=2) as poller,
    ):
        got = [event async for event in poller.events()]
    assert poller.dropped == 0
    assert len(got) == 50
    assert all(isinstance(e, ReadEvent) and e.bus == rig.bus.url and e.latency >= 0 for e in got)


# ---------------------------------------------------------------------------------------------------
# Failures


async def test_a_dead_meter_gives_failure_events_and_is_asked_again_after_its_back_off() -> None:
    recorder = Recorder()
    options = {"timeout_margin": 0.03, "retries": 1, "quarantine_after": 2, "backoff": 0.2, "backoff_max": 0.2}
    async with (
        asyncio.timeout(GUARD),
        buses([v4(X), v4(Y, seed=1), v4(Z, seed=2)], faults=[Fault(FaultKind.DEAD, address=X)], **options) as [rig],
    ):
        async with Poller([rig.v4(X), rig.v4(Y), rig.v4(Z)], interval=0, observers=[recorder]) as poller:
            events = []
            async for event in poller.events():
                events.append(event)
                if sum(isinstance(e, FailureEvent) and isinstance(e.error, MeterUnavailable) for e in events) >= 3:
                    break
        status = poller.status()
    failures = [e for e in events if isinstance(e, FailureEvent)]
    assert {e.address for e in failures} == {X}
    assert all(e.bus == rig.bus.url and e.time.tzinfo is not None for e in failures)
    assert all(isinstance(e.error, ReplyTimeout | MeterUnavailable) for e in failures)
    # the observers heard of the same failures, in the same order (everything published was delivered)
    told = [(meter, error) for _, meter, error in recorder.errors]
    assert told[: len(failures)] == [(e.address, e.error) for e in failures]
    # healthy meters went on, taking turns
    assert status[X].ok == 0
    assert status[X].errors >= len(failures)
    ok = [e.read.address for e in events if isinstance(e, ReadEvent)]
    assert {Y, Z} == set(ok)
    assert abs(ok.count(Y) - ok.count(Z)) <= 1
    assert status[X].last_error
    # a backed-off meter is not asked again (nor reported) before its back-off ends
    kinds = [type(error) for _, _, error in recorder.errors]
    assert kinds[:3] == [ReplyTimeout, ReplyTimeout, MeterUnavailable]
    for (_, _, error), (later, _, after) in zip(recorder.errors, recorder.errors[1:], strict=False):
        if isinstance(error, MeterUnavailable):
            assert isinstance(after, ReplyTimeout)  # no second MeterUnavailable: it waited out `until`
            assert later >= error.until


async def test_count_is_of_successful_reads_even_when_reads_fail() -> None:
    recorder = Recorder()
    async with (
        asyncio.timeout(GUARD),
        buses([v4(X), v4(Y, seed=1)], faults=[Fault(FaultKind.CRC, 0.3)], retries=0, quarantine_after=1000) as [rig],
        Poller([rig.v4(X), rig.v4(Y)], interval=0, count=40, observers=[recorder]) as poller,
    ):
        events = [event async for event in poller.events()]
    reads = [e for e in events if isinstance(e, ReadEvent)]
    failures = [e for e in events if isinstance(e, FailureEvent)]
    assert len(reads) == 40
    assert failures
    assert all(isinstance(e.error, FrameError) for e in failures)
    assert total_ok(poller) == 40
    assert sum(s.errors for s in poller.status().values()) == len(failures)
    assert len(recorder.reads) == 40
    assert len(recorder.errors) == len(failures)


# ---------------------------------------------------------------------------------------------------
# Shutdown, poll(), adding meters, arguments


async def test_closing_drains_every_observer_queue(tmp_path: Path) -> None:
    recorder, sleeping = Recorder(), Sleeping(0.005)
    db = tmp_path / "reads.db"
    async with asyncio.timeout(GUARD), buses([v4(X), v4(Y, seed=1), v4(Z, seed=2)]) as [rig]:
        store = SqliteStore(db, flush_interval=10.0)  # nothing committed on time: only close commits
        async with store:
            async with Poller(handles(rig), interval=0, observers=[store, recorder, sleeping]) as poller:
                taken = 0
                async for _ in poller:
                    taken += 1
                    if taken == 40:
                        break
            published = total_ok(poller)
            assert published >= 40
            assert len(recorder.reads) == len(sleeping.reads) == store.accepted == published
            assert sleeping.reads == recorder.reads
            assert poller.observer_dropped() == {"SqliteStore": 0, "Recorder": 0, "Sleeping": 0}
    assert len(rows(db)) == published


async def test_poll_yields_reads_of_its_meters_on_any_bus() -> None:
    async with asyncio.timeout(GUARD), buses([v4(X), v4(Y, seed=1)], [v4(Z)]) as [rig, other]:
        recorder = Recorder()
        reads = [read async for read in poll([rig.v4(X), rig.v4(Y)], 0, count=10, observers=[recorder])]
        assert len(reads) == 10
        assert {r.address for r in reads} == {X, Y}
        assert len(recorder.reads) == 10
        both = [read async for read in poll([rig.v4(X), other.v4(Z)], 0, count=6)]
        assert {r.address for r in both} == {X, Z}


async def test_a_meter_added_after_start_on_a_bus_not_yet_polled_is_polled() -> None:
    """``add`` after ``start``: a meter on a bus the poller had no worker for must be read too."""
    seen: set[str] = set()
    async with (
        asyncio.timeout(GUARD),
        buses([v4(X)], [v4(Y, seed=1)]) as [first, second],
        Poller([first.v4(X)], interval=0) as poller,
    ):
        poller.add(second.v4(Y))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async for read in poller:
                    seen.add(read.address)
                    if Y in seen:
                        break
    assert Y in seen, f"{Y} (added on {second.bus.url}) was never read; reads seen: {sorted(seen)}"


def _unstarted_bus(url: str = "memory://args") -> Bus:
    async def never(protocol: asyncio.Protocol) -> asyncio.BaseTransport:
        raise AssertionError("nothing is opened")

    return Bus(url, never, BusOptions())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda bus: Poller([bus.v4(X)], interval=-0.5), "interval"),
        (lambda bus: Poller([bus.v4(X)], count=0), "count"),
        (lambda bus: Poller([bus.v4(X)], count=-3), "count"),
        (lambda bus: Poller([bus.v4(X)], queue_size=0), "queue_size"),
        (lambda bus: Poller([bus.v4(X), bus.v4(X)]), "polled already"),
        (lambda bus: Poller([bus.v4(X), bus.v3(X)]), "polled already"),
        (lambda bus: Poller([bus.v4(X)]).add(bus.v4(X), interval=1.0), "polled already"),
        (lambda bus: Poller().add(bus.v4(X), interval=-1.0), "interval"),
    ],
)
def test_bad_arguments_raise_value_error(make: Callable[[Bus], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(_unstarted_bus())


async def test_bad_poll_arguments_raise_before_anything_is_sent() -> None:
    async with asyncio.timeout(GUARD), buses([v4(X)]) as [rig]:
        for kwargs in ({"interval": -1.0}, {"count": 0}, {"queue_size": 0}):
            with pytest.raises(ValueError, match="must be"):
                async for _ in poll([rig.v4(X)], **kwargs):
                    pass
        assert rig.sim.transactions == []


async def test_an_empty_poller_polls_meters_added_later_and_ends_when_closed() -> None:
    async with asyncio.timeout(GUARD), buses([v4(X)]) as [rig], Poller(interval=0, count=3) as poller:
        assert poller.status() == {}
        poller.add(rig.v4(X))
        reads = [read async for read in poller]
        await poller.wait()
    assert [read.address for read in reads] == [X, X, X]
    idle = Poller()
    async with asyncio.timeout(GUARD):
        await idle.start()
        closing = asyncio.get_running_loop().create_task(idle.aclose())
        assert [read async for read in idle] == []  # nothing to poll: iteration ends when it closes
        await closing


async def test_status_tracks_reads_latency_and_next_due() -> None:
    async with asyncio.timeout(GUARD), buses([v4(X)]) as [rig]:
        loop = asyncio.get_running_loop()
        async with Poller([rig.v4(X)], interval=0.3, count=2) as poller:
            reads = [read async for read in poller]
            status = poller.status()[X]
            assert status.ok == 2
            assert status.errors == 0
            assert status.last_read is reads[-1]
            assert status.last_latency is not None
            assert status.last_latency >= 0
            assert status.bus == rig.bus.url
            assert status.due >= status.last_start + 0.3
            assert status.due > loop.time() - 0.3
