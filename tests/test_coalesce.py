"""Coalesced reading (docs/wire.md, "Reading a reply without waking for every byte").

The decisions, on a clock the test moves (a fake loop under the protocol): when reading pauses, for how
long, and when it does not; then the whole bus against the simulator handing bytes over one by one at
9600 baud, counting the reads the host took (``bus.stats.reads``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from ekm_async import commands, open_bus
from ekm_async._protocol import _COALESCE_SLACK, MeterProtocol
from ekm_async.commands import LiveRead
from ekm_async.exchange import WireStats
from ekm_async.sim import ARRIVALS, MeterModel, SimBus, SimServer
from ekm_async.wire import ACK, FRAME_LEN, char_time

from .test_bus import GUARD

V4 = "000300001184"
REQUEST = commands.live_read(V4, LiveRead.V4A)
BT = char_time(9600)


class Clock:
    """The loop's clock and timers, as the protocol uses them (``time``, ``call_at``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.now = 1000.0
        self.timers: list[tuple[float, Callable[[], None], asyncio.TimerHandle]] = []
        self._loop = loop

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, args, self._loop)
        self.timers.append((when, lambda: callback(*args), handle))
        return handle

    def advance(self, seconds: float) -> None:
        """Move the clock on, firing the timers that fall due."""
        self.now += seconds
        for when, fire, handle in list(self.timers):
            if when <= self.now and not handle.cancelled():
                self.timers.remove((when, fire, handle))
                fire()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


class Line(asyncio.Transport):
    """A transport that records pauses; ``pausable=False``: one that cannot pause."""

    def __init__(self, *, pausable: bool = True) -> None:
        super().__init__()
        self.pausable = pausable
        self.paused = False
        self.pauses = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def pause_reading(self) -> None:
        if not self.pausable:
            raise NotImplementedError
        assert not self.paused
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def is_reading(self) -> bool:
        return not self.paused

    def is_closing(self) -> bool:
        return False


async def protocol_on(line: Line) -> tuple[MeterProtocol, Clock]:
    protocol = MeterProtocol(WireStats(), echo="off", byte_time=BT)
    clock = Clock(asyncio.get_running_loop())
    protocol._loop = clock  # type: ignore[assignment]  # the clock the test moves
    protocol.connection_made(line)
    protocol.send(REQUEST)
    return protocol, clock


def arrive(protocol: MeterProtocol, clock: Clock, data: bytes, *, after: float) -> None:
    clock.advance(after)
    protocol.data_received(data)


async def test_a_paced_frame_pauses_reading_until_its_last_byte_is_due(frame_a: bytes) -> None:
    line = Line()
    protocol, clock = await protocol_on(line)
    arrive(protocol, clock, frame_a[:1], after=0.02)
    assert not line.paused  # the line's pace is not known yet
    arrive(protocol, clock, frame_a[1:2], after=BT)  # a byte a character time later: the line is paced
    assert line.paused
    due = clock.timers[-1][0]
    assert due == pytest.approx(clock.now - BT + (FRAME_LEN - 1) * BT + _COALESCE_SLACK)  # reckoned at the first piece
    clock.advance(due - clock.now - 1e-6)
    assert line.paused
    clock.advance(2e-6)
    assert not line.paused
    arrive(protocol, clock, frame_a[2:], after=0)
    assert line.pauses == 1
    assert protocol.stats.reads == 3


async def test_a_later_frame_pauses_at_its_first_piece_and_a_late_piece_pauses_nothing_more(frame_a: bytes) -> None:
    line = Line()
    protocol, clock = await protocol_on(line)
    for i in range(3):  # a first frame, byte by byte at the wire's pace
        arrive(protocol, clock, frame_a[i : i + 1], after=BT)
    clock.advance(1.0)
    arrive(protocol, clock, frame_a[3:], after=0)
    assert protocol._decoder.pending == 0
    protocol.send(REQUEST)
    arrive(protocol, clock, frame_a[:20], after=0.02)  # the next frame: paused at once, the line is known
    assert line.paused
    assert line.pauses == 2
    clock.advance(1.0)  # the pause ends; a gateway holding bytes back delivers the rest later than due
    assert not line.paused
    arrive(protocol, clock, frame_a[20:100], after=0)
    assert not line.paused  # late: what comes now is read as it comes
    arrive(protocol, clock, frame_a[100:], after=0.05)
    assert line.pauses == 2


async def test_replies_that_open_no_frame_never_pause() -> None:
    line = Line()
    protocol, clock = await protocol_on(line)
    arrive(protocol, clock, b"\x02\x30", after=BT)  # teach the line's pace on a frame's start …
    arrive(protocol, clock, b"\x30", after=BT)
    pauses = line.pauses
    clock.advance(1.0)
    protocol.send(REQUEST)
    arrive(protocol, clock, bytes([ACK]), after=0.02)
    assert line.pauses == pauses  # … an ACK is seen when it comes
    assert not line.paused


async def test_an_unpaced_line_is_read_as_it_comes(frame_a: bytes) -> None:
    line = Line()
    protocol, clock = await protocol_on(line)
    for i in range(0, 250, 50):  # pieces faster than the wire: a buffered gateway
        arrive(protocol, clock, frame_a[i : i + 50], after=0.001)
    assert line.pauses == 0


async def test_a_transport_that_cannot_pause_reads_every_piece(frame_a: bytes) -> None:
    line = Line(pausable=False)
    protocol, clock = await protocol_on(line)
    for i in range(FRAME_LEN):
        arrive(protocol, clock, frame_a[i : i + 1], after=BT)
    assert protocol.stats.reads == FRAME_LEN
    assert protocol._decoder.pending == 0


@pytest.mark.parametrize("arrival", ["bytes", "ftdi"])
async def test_the_bus_reads_a_paced_reply_in_few_pieces(arrival: str) -> None:
    """A full V4 read (A, B, close) on a 9600-baud line that hands over bytes one by one (or as an FTDI
    adapter does) takes a handful of reads, not one per byte."""
    sim = SimBus([MeterModel(V4)], baud=9600, arrival=ARRIVALS[arrival])
    async with (
        asyncio.timeout(GUARD),
        SimServer(sim) as server,
        open_bus("memory://sim", connect=server.memory_connector()) as bus,
    ):
        await bus.v4(V4).read()  # the line's pace is learnt
        before = bus.stats.reads, bus.stats.bytes_received
        for _ in range(2):
            await bus.v4(V4).read()
        reads, received = bus.stats.reads - before[0], bus.stats.bytes_received - before[1]
    assert received == 2 * 2 * FRAME_LEN
    # Per frame: its first piece, then the rest once due (a piece on the edge of the due time may split
    # it, and a loaded machine's late turn of the loop once more): a handful, where byte by byte was 255.
    assert reads <= 2 * 2 * 5, reads
