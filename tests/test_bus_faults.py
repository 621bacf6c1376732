"""The bus on a faulty wire (issue 4): corrupted and lost frames, a dead meter, frames from the wrong
meter, late replies, a bus closed while its gateway is down. Deterministic: the simulator draws its
faults from a seed, and every fault it applied is in its record, which the bus's counters must match.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

import pytest

from ekm_async import (
    BusClosed,
    ConnectionLost,
    FrameError,
    MeterUnavailable,
    Read,
    Refused,
    ReplyTimeout,
    Settings,
    UnexpectedReply,
    open_bus,
)
from ekm_async._protocol import MeterProtocol
from ekm_async.bus import BusHealth
from ekm_async.commands import LiveRead, live_read
from ekm_async.exchange import WireStats
from ekm_async.layouts import BlockKind
from ekm_async.sim import Fault, FaultKind, MeterModel, RequestKind, SimBus, SimServer
from ekm_async.wire import TRAILER_OFFSET, seal

from .test_bus import (
    CLOSE,
    TRANSPORTS,
    Rig,
    W,
    X,
    Y,
    Z,
    describe,
    rig,
    sessions,
    settings_session,
    v3,
    v3_read,
    v4,
    v4_read,
    v4_read_a,
    wait_for,
    write_session,
)

FAST = {"baud": 1_000_000, "timeout_margin": 0.05}
"""Bus options for quick timeouts: the simulator is unpaced, so the wire time is nothing."""


# ---------------------------------------------------------------------------------------------------
# One fault at a time: what each does to a call and to the counters


async def test_a_corrupted_frame_is_rejected_and_the_read_retried() -> None:
    async with rig([v4(X)], faults=[Fault.parse("crc#1")], **FAST) as r:
        read = await r.bus.v4(X).read()
        assert read.address == X
        assert await r.wire() == [("V4A", X), ("V4A", X), ("V4B", X), CLOSE]
        assert r.sim.transactions[0].faults == (FaultKind.CRC,)
        stats = r.bus.stats
        assert stats.rejected["crc"] + stats.rejected["trailer"] == 1
        assert stats.retries == 1
        assert stats.timeouts == 0
        assert stats.frames_ok == 2
        assert r.bus.meter_stats[X].consecutive_failures == 0


async def test_a_lost_reply_times_out_and_the_read_is_retried() -> None:
    async with rig([v4(X)], faults=[Fault.parse("drop#2")], **FAST) as r:
        read = await r.bus.v4(X).read()
        assert read.b is not None
        assert await r.wire() == [("V4A", X), ("V4B", X), ("V4B", X), CLOSE]
        stats = r.bus.stats
        assert (stats.timeouts, stats.retries, stats.frames_ok) == (1, 1, 2)
        assert sum(stats.rejected.values()) == 0


@pytest.mark.parametrize(
    ("spec", "seed", "retries"),
    [("truncate#1", 0, 1), ("truncate#1,2", 0, 2), ("garbage#1,2,3", 0, 0), ("garbage#1,2,3", 12, 2)],
)
async def test_truncated_frames_and_garbage_are_survived(spec: str, seed: int, retries: int) -> None:
    async with rig([v3(Z)], faults=[Fault.parse(spec)], seed=seed, **FAST) as r:
        assert (await r.bus.v3(Z).read()).address == Z
        assert await r.wire() == [("V3", Z)] * (retries + 1) + [CLOSE]
        faulted = [t for t in r.sim.transactions if t.faults]
        stats = r.bus.stats
        assert stats.frames_ok == 1
        assert stats.retries == retries
        if spec.startswith("truncate"):
            # a cut frame is waited for until the deadline, then reported when the request is repeated
            assert len(faulted) == retries
            assert stats.timeouts == stats.rejected["truncated"] == retries
        else:
            # noise before the frame is skipped, unless it holds an STX: then a false frame start
            # swallows the real frame, which is rejected, and the request is repeated
            prefixes = [t.reply[: len(t.reply) - 255] for t in faulted if t.reply is not None]
            assert len(prefixes) == len(faulted) == retries + 1
            assert [b"\x02" in prefix for prefix in prefixes] == [True] * retries + [False]
            assert stats.timeouts == 0
            assert stats.rejected["garbage"] >= 1


async def test_a_settings_page_is_retried_within_its_session() -> None:
    async with rig([v4(X)], faults=[Fault.parse("crc#4")], **FAST) as r:
        s = await r.bus.v4(X).read_settings()
        assert s.schedules.seasons() == tuple(r.model(X).seasons)
        wire = await r.wire()
        assert wire.count(("settings", "0012")) == 2  # the 4th frame: months reverse, asked twice
        assert wire.count(("V4A", X)) == 1  # in the same session
        assert r.bus.stats.retries == 1


async def test_a_meter_that_never_answers_gets_every_retry_then_reply_timeout() -> None:
    async with rig([v4(X)], faults=[Fault.parse(f"dead@{X}")], retries=3, **FAST) as r:
        with pytest.raises(ReplyTimeout) as info:
            await r.bus.v4(X).read()
        assert info.value.address == X
        assert await r.wire() == [("V4A", X)] * 4 + [CLOSE]
        assert (r.bus.stats.timeouts, r.bus.stats.retries) == (4, 3)
        stats = r.bus.meter_stats[X]
        assert (stats.failures, stats.consecutive_failures) == (1, 1)
        assert r.bus.available(X)  # one failure is not yet a back-off


# ---------------------------------------------------------------------------------------------------
# The acceptance run: 1 % corrupted frames, 5 % lost replies, one dead meter of four


HEALTHY = (X, Y, Z)
DEAD = W


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_healthy_meters_keep_reading_while_one_of_four_is_dead(transport: str) -> None:
    faults = [Fault.parse("crc=0.01"), Fault.parse("drop=0.05"), Fault.parse(f"dead@{DEAD}")]
    options: dict[str, Any] = FAST | {"retries": 2, "quarantine_after": 3, "backoff": 60.0, "backoff_max": 600.0}
    async with rig([v4(X), v4(Y), v3(Z), v4(DEAD)], transport, faults=faults, seed=4, **options) as r:
        x, y, z, d = r.bus.v4(X), r.bus.v4(Y), r.bus.v3(Z), r.bus.v4(DEAD)
        healthy_results: list[Any] = []
        dead_results: list[BaseException] = []
        for n in range(40):
            calls = [x.read(), y.read_settings() if n % 4 == 0 else y.read(), z.read(), d.read()]
            results = await asyncio.gather(*calls, return_exceptions=True)
            healthy_results += results[:3]
            outcome = results[3]
            assert isinstance(outcome, BaseException), outcome
            dead_results.append(outcome)

        # every call of a healthy meter returned a valid read of that meter
        for n, result in enumerate(healthy_results):
            assert isinstance(result, Read | Settings), result
            assert (result.read if isinstance(result, Settings) else result).address == HEALTHY[n % 3]
        for address in HEALTHY:
            stats = r.bus.meter_stats[address]
            assert (stats.failures, stats.consecutive_failures) == (0, 0)
            assert r.bus.available(address)

        await _check_backed_off(r, dead_results)
        with pytest.raises(MeterUnavailable):  # nothing is sent to it while backed off
            await d.read_a()
        before = await r.mark()
        with pytest.raises(MeterUnavailable):
            await d.set_relay(1, "close")
        assert await r.mark() == before
        _check_counters(r, calls=len(healthy_results) + 3)


async def _check_backed_off(r: Rig, dead_results: list[BaseException]) -> None:
    """The dead meter: three timeouts (each after every retry), then at once MeterUnavailable."""
    assert all(isinstance(e, ReplyTimeout) for e in dead_results[:3]), dead_results[:3]
    assert all(isinstance(e, MeterUnavailable) for e in dead_results[3:]), dead_results[3:]
    unavailable = dead_results[-1]
    assert isinstance(unavailable, MeterUnavailable)
    assert unavailable.address == DEAD
    assert unavailable.failures == 3
    stats = r.bus.meter_stats[DEAD]
    assert (stats.failures, stats.consecutive_failures) == (3, 3)
    assert stats.backed_off_until > asyncio.get_running_loop().time()
    assert unavailable.until == stats.backed_off_until
    assert not r.bus.available(DEAD)
    await r.sync()
    record = r.sim.transactions
    to_dead = [t.index for t in record if t.request.kind is RequestKind.SIGN_ON and t.request.address == DEAD]
    assert len(to_dead) == 3 * 3  # 3 calls × 3 attempts; none of the 37 later calls reached the wire
    assert all(record[i].meter is None for i in to_dead)


def _check_counters(r: Rig, calls: int) -> None:
    """The sessions are intact, and the bus's counters match the faults the simulator applied."""
    record = r.sim.transactions
    assert len(sessions(record)) == calls == r.bus.stats.transactions
    replies = [t for t in record if t.meter in HEALTHY and t.request.kind is not RequestKind.CLOSE]
    dropped = sum(FaultKind.DROP in t.faults for t in replies)
    corrupted = sum(t.faults == (FaultKind.CRC,) for t in replies)
    clean = sum(not t.faults for t in replies)
    assert dropped >= 5
    assert corrupted >= 1
    assert dropped + corrupted + clean == len(replies)
    wire = r.bus.stats
    # A reply slower than the margin (a loaded machine) times out, is retried, and arrives late: it is
    # let pass and dropped before the retry is sent (counted unexpected), so it adds one timeout and
    # one retry, and the simulator's clean reply is not a frame the bus took.
    late = wire.rejected["unexpected"]
    assert wire.timeouts == dropped + 9 + late
    assert wire.rejected["crc"] + wire.rejected["trailer"] == corrupted
    assert wire.retries == dropped + corrupted + late + 3 * 2
    assert wire.frames_ok == clean - late


async def test_back_off_grows_up_to_its_maximum_and_ends_with_a_success() -> None:
    options = FAST | {"retries": 0, "quarantine_after": 2, "backoff": 0.1, "backoff_max": 0.3}
    async with rig([v4(X), v4(Y)], faults=[Fault.parse(f"dead@{X}")], **options) as r:
        loop = asyncio.get_running_loop()
        meter, other = r.bus.v4(X), r.bus.v4(Y)
        stats = r.bus.meter_stats
        with pytest.raises(ReplyTimeout):
            await meter.read()
        assert r.bus.available(X)
        with pytest.raises(ReplyTimeout):
            await meter.read()
        left = stats[X].backed_off_until - loop.time()
        assert 0 < left <= 0.1
        with pytest.raises(MeterUnavailable):
            await meter.read()
        assert (await other.read()).address == Y  # others are served meanwhile
        await wait_for(lambda: r.bus.available(X))
        with pytest.raises(ReplyTimeout):  # one try after the back-off, which fails: twice as long
            await meter.read()
        left = stats[X].backed_off_until - loop.time()
        assert 0.1 < left <= 0.2
        await wait_for(lambda: r.bus.available(X))
        with pytest.raises(ReplyTimeout):  # 0.4 capped at 0.3
            await meter.read()
        left = stats[X].backed_off_until - loop.time()
        assert 0.2 < left <= 0.3
        assert stats[X].consecutive_failures == 4
        await wait_for(lambda: r.bus.available(X))
        r.sim.faults.clear()  # the meter comes back
        assert (await meter.read()).address == X
        assert stats[X].consecutive_failures == 0
        assert stats[X].backed_off_until == 0.0
        assert stats[X].failures == 4
        assert stats[X].last_ok is not None
        await r.sync()
        assert [s[0].request.address for s in sessions(r.sim.transactions)] == [X, X, Y, X, X, X]


async def test_queued_calls_for_a_meter_that_gets_backed_off_fail_without_the_wire() -> None:
    options = FAST | {"retries": 0, "quarantine_after": 1, "backoff": 60.0}
    async with rig([v4(X), v3(Z)], faults=[Fault.parse(f"dead@{X}")], **options) as r:
        calls = [r.bus.v4(X).read(), r.bus.v4(X).read(), r.bus.v3(Z).read(), r.bus.v4(X).set_relay(1, "close")]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[0], ReplyTimeout)
        assert isinstance(results[1], MeterUnavailable)
        assert isinstance(results[2], Read)
        assert isinstance(results[3], MeterUnavailable)
        assert await r.wire() == [("V4A", X), CLOSE, *v3_read(Z)]


# ---------------------------------------------------------------------------------------------------
# A frame from another meter


async def test_a_frame_from_another_meter_is_not_accepted_the_retry_succeeds() -> None:
    async with rig([v4(X)], faults=[Fault.parse("wrong-address#1")], **FAST) as r:
        read = await r.bus.v4(X).read()
        assert read.address == X
        first = r.sim.transactions[0]
        assert first.faults == (FaultKind.WRONG_ADDRESS,)
        assert first.reply is not None
        assert first.reply[4:16].decode() != X
        assert await r.wire() == [("V4A", X), *v4_read(X)]
        assert r.bus.stats.rejected["unexpected"] == 1
        assert r.bus.stats.frames_ok == 2


async def test_frames_only_from_another_meter_raise_unexpected_reply() -> None:
    """BUG: the bus raises ReplyTimeout (and counts timeouts) although the meter answered every time.

    ``_Session._read`` (bus.py) keeps waiting after an UnexpectedReply until the deadline, and then its
    ``while … else`` replaces the error with ReplyTimeout: UnexpectedReply is never raised.
    """
    async with rig([v4(X)], faults=[Fault.parse("wrong-address")], retries=2, **FAST) as r:
        with pytest.raises(UnexpectedReply) as info:
            await r.bus.v4(X).read()
        assert info.value.address == X
        assert await r.wire() == [("V4A", X)] * 3 + [CLOSE]
        assert r.bus.stats.rejected["unexpected"] == 3
        assert r.bus.stats.frames_ok == 0


# ---------------------------------------------------------------------------------------------------
# A late reply


async def test_a_late_settings_block_is_not_taken_for_the_next_page() -> None:
    """BUG: a reply that arrives after its exchange timed out is accepted as the reply to a later request.

    The holidays block (2nd reply) is 0.15 s late; the bus times out (deadline ≈ 0.05 s), asks again and
    takes the late block as the answer. The answer to its second request then arrives while the bus
    waits for months-forward, and is decoded as months (settings blocks carry neither an address nor a
    request type): every later page is the previous page's block, and the last one is lost.
    """
    async with rig([v4(X)], faults=[Fault.parse("delay:0.15#2")], **FAST) as r:
        model = r.model(X)
        s = await r.bus.v4(X).read_settings()
        assert r.sim.transactions[1].faults == (FaultKind.DELAY,)
        assert s.holidays.holidays() == tuple(model.holidays)
        forward = [(m.total, *m.tariffs) for m in s.months_forward.months()]
        assert forward == [pytest.approx(row, abs=0.11) for row in model.months[0]]
        reverse = [(m.total, *m.tariffs) for m in s.months_reverse.months()]
        assert reverse == [pytest.approx(row, abs=0.11) for row in model.months[1]]
        schedules = s.schedules.schedules() | s.schedules_5_8.schedules()
        assert schedules == {n + 1: tuple(periods) for n, periods in enumerate(model.schedules)}
        assert s.schedules.seasons() == tuple(model.seasons)


async def test_replies_later_than_the_settle_put_no_later_exchange_one_behind() -> None:
    """The A block's reply is 0.08 s late and its repeat's 0.15 s (deadlines ≈ 0.05 s). The first reply
    answers the repeat; the repeat's own comes after the bus has settled and sent the B request, which
    timed out and was sent again. Taken as a wrong reply and asked again at once, every later request
    would be answered by the reply to the one before (the fault matrix's gateway restarts did that).
    It is the owed late reply: dropped, counted ``late``, and the B block that follows it answers."""
    async with rig([v4(X), v4(Y)], faults=[Fault.parse("delay:0.08#1"), Fault.parse("delay:0.15#2")], **FAST) as r:
        reads = [await r.bus.v4(address).read() for address in (X, Y, X, Y, X)]
        assert [read.address for read in reads] == [X, Y, X, Y, X]
        sent = {(t.request.address, t.request.read, t.reply) for t in r.sim.transactions if t.reply}
        for read in reads:
            assert read.b is not None
            assert (read.address, LiveRead.V4A, read.a.raw) in sent
            assert (read.address, LiveRead.V4B, read.b.raw) in sent
        wire = r.bus.stats
        assert wire.rejected["late"] >= 1
        assert wire.rejected["request-type"] == 0
        assert wire.retries == wire.timeouts  # asked again only where a wait ran out
        assert wire.frames_ok == 2 * len(reads)


class _Wire(asyncio.WriteTransport):
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


async def test_settle_counts_silence_from_the_request_or_the_last_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a timeout the bus settles before asking again. A line silent since the request has been
    silent longer than the reply would take: no more waiting. Bytes still arriving are waited out."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(seconds)

    protocol, wire = MeterProtocol(WireStats()), _Wire()
    protocol.connection_made(wire)
    loop = asyncio.get_running_loop()
    protocol.send(live_read(X, LiveRead.V4A))
    assert wire.written == live_read(X, LiveRead.V4A)
    assert await protocol.next_event(loop.time() + 0.05) is None  # the exchange times out: nothing came
    monkeypatch.setattr(asyncio, "sleep", sleep)
    await protocol.settle(0.04, 1.0)
    assert slept == []  # silent since the request, for longer than the quiet asked for

    protocol.data_received(b"\x02\x10$")  # a late reply begins
    await protocol.settle(0.04, 1.0)
    assert slept[0] == pytest.approx(0.04, abs=0.005)  # waited until quiet for 0.04 s
    assert protocol.stats.rejected["truncated"] == 1  # and the late bytes were dropped


# ---------------------------------------------------------------------------------------------------
# Writes that get no ACK


async def test_a_write_without_its_ack_is_refused_not_retried_and_invalidates_the_cached_b() -> None:
    """The meter applied the write but its ACK was lost (the 5th reply: A, B, then A, password ACK, write ACK).

    BUG (meters.py, ``_Meter._write``): ``_written()`` runs only after an acknowledged write, so a V4
    handle with ``b_every > 1`` keeps serving the B block from before a write it cannot know failed.
    """
    async with rig([v4(X)], faults=[Fault.parse("drop#5")], **FAST) as r:
        meter = r.bus.v4(X, b_every=5)
        assert (await meter.read()).CT_Ratio == 200
        with pytest.raises(Refused):
            await meter.set_ct_ratio(400)
        assert r.model(X).ct_ratio == 400  # applied
        assert (await r.wire())[-4:] == write_session("V4A", X, "00D0")  # sent once
        start = await r.mark()
        read = await meter.read()
        assert await r.wire(start) == v4_read(X)  # the B block may be stale: fetched again
        assert read.CT_Ratio == 400


# ---------------------------------------------------------------------------------------------------
# Closing a bus whose gateway is down


async def _down_bus(reconnect_delay: float) -> tuple[SimServer, Any]:
    sim = SimBus([v4(X), v3(Z)], baud=0, turnaround=0.001)
    server = SimServer(sim)
    await server.__aenter__()
    host, port = await server.start_tcp()
    bus = await open_bus(
        f"tcp://{host}:{port}", timeout_margin=0.05, reconnect_delay=reconnect_delay, reconnect_max=reconnect_delay
    )
    await bus.v4(X).read()
    await server.stop_tcp()
    await wait_for(lambda: not bus.connected)
    return server, bus


async def _finishes(awaitable: Any, within: float) -> tuple[bool, asyncio.Task[Any]]:
    """Run ``awaitable`` as a task; whether it finished within ``within`` seconds (it is not cancelled:
    a cancellation could be swallowed and look like success)."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=within)
    return bool(done), task


async def test_closing_a_bus_while_it_reconnects_fails_every_waiting_call() -> None:
    """BUG: the call the worker holds while it reconnects is never answered after ``close()``.

    ``Bus._serve`` (bus.py) puts the job back with ``appendleft`` when ``_ensure_connected`` returns
    False because the bus is closing — after ``close()`` has already failed the queue — and exits:
    that caller waits forever.
    """
    server, bus = await _down_bus(reconnect_delay=0.01)
    tasks = [asyncio.create_task(c) for c in (bus.v4(X).read(), bus.v3(Z).read(), bus.v4(X).read_a())]
    try:
        await asyncio.sleep(0.05)  # the worker holds the first call, trying to reconnect
        assert not any(t.done() for t in tasks)
        closed, _ = await _finishes(bus.close(), 1)
        assert closed
        done, pending = await asyncio.wait(tasks, timeout=1)
        assert not pending, "a caller was left waiting after close()"
        for task in done:
            assert isinstance(task.exception(), BusClosed)
    finally:
        for task in tasks:
            task.cancel()
        await server.close()


async def test_closing_a_bus_while_it_reconnects_does_not_wait_out_the_reconnect_delay() -> None:
    """BUG: ``close()`` waits for the worker, which sleeps the whole reconnect delay (up to
    ``reconnect_max``, default 30 s) in ``Bus._ensure_connected`` before it looks at ``_closing``."""
    server, bus = await _down_bus(reconnect_delay=60.0)
    task = asyncio.create_task(bus.v4(X).read())
    closing: asyncio.Task[Any] | None = None
    try:
        await asyncio.sleep(0.05)
        assert not task.done()
        closed, closing = await _finishes(bus.close(), 1)  # a 60 s wait is a hang
        assert closed, "close() hung while the bus waited to reconnect"
    finally:
        for t in (task, closing):
            if t is not None:
                t.cancel()
        await server.close()


async def test_cancelling_close_is_not_swallowed() -> None:
    """BUG: ``Bus.close()`` awaits its worker inside ``contextlib.suppress(asyncio.CancelledError)``
    (bus.py): a cancellation of the task that closes (a ``Task.cancel()``, an ``asyncio.timeout``
    around ``close()``) is swallowed, and close() returns as if it had finished."""
    async with rig([v4(X)], pace=9600, turnaround=0.002) as r:
        read = asyncio.create_task(r.bus.v4(X).read())
        await wait_for(lambda: r.bus.stats.bytes_received > 0)  # the worker is in a transaction
        closing = asyncio.create_task(r.bus.close())
        await asyncio.sleep(0.02)
        assert not closing.done()
        closing.cancel()
        await asyncio.wait({closing}, timeout=2)
        assert closing.cancelled()
        read.cancel()


async def test_cancelling_close_does_not_strand_the_caller_in_progress() -> None:
    """BUG: cancelling ``close()`` cancels the worker through ``await self._worker`` (bus.py) in the
    middle of a transaction; ``Bus._run`` does not catch CancelledError, the worker dies, and the
    caller whose transaction was on the wire is never answered."""
    async with rig([v4(X)], pace=9600, turnaround=0.002) as r:
        read = asyncio.create_task(r.bus.v4(X).read())
        await wait_for(lambda: r.bus.stats.bytes_received > 0)
        closing = asyncio.create_task(r.bus.close())
        await asyncio.sleep(0.02)
        closing.cancel()
        await asyncio.wait({closing}, timeout=2)
        done, _ = await asyncio.wait({read}, timeout=2)  # the read needs < 0.6 s of wire
        read.cancel()
        assert done, "the caller of the transaction in progress was never answered"
        assert not read.cancelled()
        outcome = read.exception()
        assert outcome is None or isinstance(outcome, BusClosed), outcome


# ---------------------------------------------------------------------------------------------------
# Faults under concurrency: many callers, faults everywhere, sessions still contiguous


async def test_concurrent_callers_on_a_faulty_wire_keep_sessions_contiguous() -> None:
    faults = [Fault.parse(spec) for spec in ("crc=0.03", "drop=0.03", "garbage=0.05", "truncate=0.02")]
    async with rig([v4(X), v4(Y), v3(Z)], faults=faults, seed=11, retries=4, **FAST) as r:
        x, y, z = r.bus.v4(X), r.bus.v4(Y), r.bus.v3(Z)
        calls = []
        for n in range(30):
            calls += [x.read(), z.read(), y.read_settings() if n % 5 == 0 else y.read_a()]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert not [e for e in results if isinstance(e, BaseException)]
        await r.sync()
        found = sessions(r.sim.transactions)
        assert [s[0].request.address for s in found] == [X, Z, Y] * 30
        assert sum(bool(t.faults) for t in r.sim.transactions) > 10
        # a session holds what it was asked for, however often each request had to be repeated
        for session, expected in zip(found, [v4_read(X), v3_read(Z), None] * 30, strict=True):
            kinds = list(dict.fromkeys(describe(session)))
            if expected is not None:
                assert kinds == expected
            else:
                assert kinds in (v4_read_a(Y), settings_session("V4A", Y))


# ---------------------------------------------------------------------------------------------------
# Gateways that hang, or drop every connection: close() interrupts, back-off grows, health tells


def _hanging_connector(attempts: list[float]) -> Any:
    """A gateway whose connects never finish (its SYNs dropped)."""

    async def connect(protocol: asyncio.Protocol) -> asyncio.BaseTransport:
        attempts.append(asyncio.get_running_loop().time())
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return connect


async def test_close_interrupts_a_reconnect_that_hangs_and_fails_the_callers() -> None:
    server, bus = await _down_bus(reconnect_delay=0.01)
    attempts: list[float] = []
    bus._connect = _hanging_connector(attempts)  # the gateway now drops SYNs
    task = asyncio.create_task(bus.v4(X).read())
    try:
        await wait_for(lambda: bool(attempts))
        closed, _ = await _finishes(bus.close(), 1)
        assert closed, "close() waited for a connect that never ends"
        with pytest.raises(BusClosed):
            await task
    finally:
        task.cancel()
        await server.close()


class _Dropping(asyncio.Transport):
    """A connection the gateway closes as soon as anything is written to it."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._protocol = protocol
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.close()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing


async def test_a_gateway_that_drops_every_connection_is_reconnected_with_growing_back_off() -> None:
    """Every connect succeeds and every connection is lost at the first write: without a transaction
    that succeeds, each reconnect waits twice as long as the last (none after the first loss)."""
    connects: list[float] = []

    async def connect(protocol: asyncio.Protocol) -> asyncio.BaseTransport:
        connects.append(asyncio.get_running_loop().time())
        transport = _Dropping(protocol)
        protocol.connection_made(transport)
        return transport

    bus = await open_bus("tcp://gateway:1", connect=connect, reconnect_delay=0.02, reconnect_max=0.16, retries=0)
    try:
        deadline = asyncio.get_running_loop().time() + 1.5
        while asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(ConnectionLost, BusClosed):
                await bus.v4(X).read()
        gaps = [b - a for a, b in itertools.pairwise(connects)]
        wanted = [0.0, 0.02, 0.04, 0.08, 0.16] + [0.16] * (len(gaps) - 5)  # then reconnect_max
        assert len(gaps) >= 5, gaps
        assert all(g >= w - 0.001 for g, w in zip(gaps, wanted, strict=True)), gaps  # a sleep is never short
        assert gaps[0] < 0.1, gaps  # the first loss after a success: at once (however loaded the machine)
        assert len(connects) <= 14  # 1.5 s of it (without back-off: thousands)
        health = bus.health()
        assert not health.connected
        assert health.reason == "connection closed"
    finally:
        await bus.close()


async def test_health_says_since_when_and_why_the_wire_is_gone_and_calls_it_an_outage_after_a_read() -> None:
    server, bus = await _down_bus(reconnect_delay=0.01)
    task: asyncio.Task[Any] = asyncio.create_task(asyncio.sleep(0))
    try:
        health = bus.health()
        assert not health.connected
        assert health.down_since is not None
        assert health.reason.startswith("connection lost") or health.reason == "connection closed"
        assert bus.outage_after == pytest.approx((2 * (19 + 255) + 5) * 10 / 9600)  # a full V4 read on the wire
        task = asyncio.create_task(bus.v4(X).read())  # reconnects are tried, and refused
        await wait_for(lambda: "refused" in bus.health().reason.lower() or "connect" in bus.health().reason.lower())
        # in words first, what to check; the system's text after it (it was "[Errno 111] Connect call failed …")
        refused = "connection refused: is the gateway running, and is it that port? ("
        await wait_for(lambda: bus.health().reason.startswith(refused))
        assert not bus.health().outage
        await wait_for(lambda: bus.health().outage)
        assert bus.health().down_seconds > bus.outage_after
        host, port = bus.url.removeprefix("tcp://").split(":")
        await server.start_tcp(host, int(port))
        assert isinstance(await task, Read)
        assert bus.health() == BusHealth(True, None, 0.0, "", False)
    finally:
        task.cancel()
        await bus.close()
        await server.close()


# ---------------------------------------------------------------------------------------------------
# Bytes only a guess expects: flagged, counted, logged once — or rejected when strict


def _b_trailer(model: MeterModel, trailer: bytes) -> None:
    """The simulated meter's V4 B blocks end with ``trailer`` instead of the guessed ``21 0D 0A 03``."""
    original = model.frame

    def frame(kind: BlockKind, *, reverse: bool = False) -> bytes:
        raw = original(kind, reverse=reverse)
        return seal(raw[:TRAILER_OFFSET] + trailer + raw[TRAILER_OFFSET + 4 :]) if kind is BlockKind.V4B else raw

    model.frame = frame  # type: ignore[method-assign]


async def test_a_b_block_without_the_guessed_trailer_is_delivered_flagged_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    meter = v4(X)
    _b_trailer(meter, b"\r\n\x03\x00")
    async with rig([meter]) as r:
        with caplog.at_level(logging.WARNING, logger="ekm_async.bus"):
            reads = [await r.bus.v4(X).read() for _ in range(3)]
        assert all(read.b is not None for read in reads)
        (anomaly,) = reads[0].anomalies
        assert (anomaly.kind, anomaly.what, anomaly.got) == (BlockKind.V4B, "trailer", b"\r\n\x03\x00")
        assert "only a guess expects it" in str(anomaly)
        assert r.bus.stats.anomalies == {"v4b trailer": 3}
        assert r.bus.stats.rejected.total() == 0
        logged = [rec for rec in caplog.records if "flagged" in rec.getMessage()]
        assert len(logged) == 1
        assert reads[0].b.raw.hex() in logged[0].getMessage()  # type: ignore[union-attr]


async def test_strict_rejects_what_only_a_guess_expects() -> None:
    meter = v4(X)
    _b_trailer(meter, b"\r\n\x03\x00")
    async with rig([meter], strict=True, retries=1, timeout_margin=0.05) as r:
        with pytest.raises(FrameError, match="trailer 0d0a0300 at 249"):
            await r.bus.v4(X).read()
        assert r.bus.stats.rejected["trailer"] == 2


async def test_an_a_block_where_b_was_asked_is_rejected_not_flagged() -> None:
    meter = v4(X)
    original = meter.frame
    meter.frame = lambda kind, *, reverse=False: original(BlockKind.V4A if kind is BlockKind.V4B else kind)  # type: ignore[method-assign]
    async with rig([meter], retries=0, timeout_margin=0.05) as r:
        with pytest.raises(FrameError, match="request type 3030 at 247, expected 3031: a v4a block"):
            await r.bus.v4(X).read()
        assert r.bus.stats.anomalies == {}
