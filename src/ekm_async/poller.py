"""Poll many meters on many buses: stream the reads to ``async for``, to async observers, to storage.

Each meter has its own interval. On each bus two workers take the meter that is due first (ties: the
one read longest ago), so one read is on the wire while the next waits behind it: the bus is kept
busy up to its wire limit and every meter gets its turn. A backed-off meter waits out its back-off.

Consumers never slow the buses. ``async for read in poller`` (or :meth:`Poller.events` for reads and
failures) takes from a bounded queue; when it is full the *oldest* event is dropped and counted in
``poller.dropped``. Every observer has its own bounded queue (same policy) and its own task: one that
raises or is slow affects only itself; its failures are counted and logged once per episode. Closing
the poller stops polling, lets every observer take what was queued for it, then ends the iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from .blocks import Read
from .errors import MeterUnavailable

__all__ = [
    "BaseObserver",
    "FailureEvent",
    "Meter",
    "MeterStatus",
    "Observer",
    "PollEvent",
    "Poller",
    "ReadEvent",
    "Wire",
    "poll",
]

log = logging.getLogger("ekm_async.poller")


class Wire(Protocol):
    """What the poller needs of a meter's bus: a name (buses are told apart as objects, not by name)."""

    @property
    def url(self) -> str: ...


class Meter(Protocol):
    """What the poller needs of a meter handle (a :class:`~ekm_async.V3Meter` or :class:`~ekm_async.V4Meter`)."""

    @property
    def address(self) -> str: ...

    @property
    def bus(self) -> Wire:
        """Its bus (a :class:`~ekm_async.Bus`)."""

    async def read(self) -> Read: ...


WORKERS_PER_BUS = 2
"""One read on the wire, one waiting behind it."""
_TAKEN = float("inf")
"""The ``due`` of a meter being read."""


@dataclass(frozen=True, slots=True)
class ReadEvent:
    """A meter was read."""

    read: Read
    bus: str
    latency: float
    """Seconds from asking to having the read (waiting for the bus included)."""


@dataclass(frozen=True, slots=True)
class FailureEvent:
    """A read of ``address`` failed (after the bus's retries)."""

    address: str
    bus: str
    error: Exception
    time: datetime


PollEvent = ReadEvent | FailureEvent


@runtime_checkable
class Observer(Protocol):
    """What a poller tells its observers (an :class:`ekm_async.SqliteStore` is one).

    An observer may also have ``async def on_close(self)``: called once, after the poller closed and
    the observer took everything queued for it (e.g. to report a last, partial interval).
    """

    async def on_read(self, read: Read) -> None: ...

    async def on_error(self, meter: str, error: Exception) -> None: ...


class BaseObserver:
    """An observer that does nothing: subclass it and override what you need."""

    async def on_read(self, read: Read) -> None:
        """A meter was read."""

    async def on_error(self, meter: str, error: Exception) -> None:
        """A read of ``meter`` failed."""

    async def on_close(self) -> None:
        """The poller closed; everything queued for this observer was given to it."""


@dataclass
class MeterStatus:
    """How polling one meter goes."""

    address: str
    bus: str
    interval: float
    ok: int = 0
    errors: int = 0
    last_read: Read | None = None
    last_error: str = ""
    last_latency: float | None = None
    due: float = 0.0
    """Loop time of the next read."""
    last_start: float = float("-inf")


class _Outbox:
    """A bounded queue that drops its oldest item when full (counting the drops)."""

    def __init__(self, size: int) -> None:
        self._items: deque[PollEvent] = deque()
        self._size = size
        self._ready = asyncio.Event()
        self.dropped = 0
        self.closed = False

    def put(self, item: PollEvent) -> None:
        if len(self._items) >= self._size:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def get(self) -> PollEvent | None:
        """The next item; None once closed and empty."""
        while not self._items:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class _ObserverRunner:
    observer: Observer
    outbox: _Outbox
    label: str
    task: asyncio.Task[None] | None = None
    failures: int = 0
    failing: bool = False

    async def run(self) -> None:
        name = self.label
        while (event := await self.outbox.get()) is not None:
            try:
                if isinstance(event, ReadEvent):
                    await self.observer.on_read(event.read)
                else:
                    await self.observer.on_error(event.address, event.error)
            except Exception as exc:  # noqa: BLE001 — an observer's failure is its own: counted, logged
                self.failures += 1
                if not self.failing:
                    self.failing = True
                    log.warning("observer %s failed (logged once until it recovers): %r", name, exc)
            else:
                if self.failing:
                    self.failing = False
                    log.info("observer %s recovered after %d failures", name, self.failures)
        on_close = getattr(self.observer, "on_close", None)
        if on_close is not None:
            try:
                await on_close()
            except Exception as exc:  # noqa: BLE001 — the observer's own failure
                self.failures += 1
                log.warning("observer %s failed to close: %r", name, exc)


class Poller:
    """Polls meters and streams what comes of it. Use as ``async with Poller(...) as poller:``.

    ``meters``: handles from ``bus.v3()`` / ``bus.v4()``, on any number of buses; ``interval``: seconds
    between reads of each meter (``add`` sets one per meter; 0: as often as the bus allows);
    ``count``: stop after this many successful reads; ``queue_size``: bound of the ``async for``
    queue and of each observer's queue.
    """

    def __init__(
        self,
        meters: Iterable[Meter] = (),
        *,
        interval: float = 10.0,
        observers: Iterable[Observer] = (),
        count: int | None = None,
        queue_size: int = 1000,
        drain_timeout: float | None = None,
    ) -> None:
        if interval < 0:
            raise ValueError(f"interval must be ≥ 0; got {interval}")
        if count is not None and count < 1:
            raise ValueError(f"count must be ≥ 1; got {count}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be ≥ 1; got {queue_size}")
        self.interval = interval
        self.drain_timeout = drain_timeout
        """Seconds :meth:`aclose` gives observers to take what is queued (None: as long as they need)."""
        self._meters: list[tuple[Meter, MeterStatus]] = []
        """Each polled handle with its status. Keyed by handle, not address: a handle whose meter was
        given a new address (``set_address``) is followed to it."""
        self._by_bus: dict[Wire, list[tuple[Meter, MeterStatus]]] = {}
        """The same, per bus (a worker looks only at its own bus's meters)."""
        self._stream = _Outbox(queue_size)
        self._runners: list[_ObserverRunner] = []
        self._remaining = count
        self._in_flight = 0
        self._workers: list[asyncio.Task[None]] = []
        self._wakeup: dict[Wire, asyncio.Event] = {}
        """Per bus (the object: URLs need not be unique): set when its workers should look again."""
        self._done = asyncio.Event()
        self._started = False
        self._closed = False
        self._queue_size = queue_size
        for meter in meters:
            self.add(meter)
        for observer in observers:
            self.add_observer(observer)

    def add(self, meter: Meter, *, interval: float | None = None) -> None:
        """Poll ``meter`` too, every ``interval`` seconds (default: the poller's)."""
        if any(m.address == meter.address for m, _ in self._meters):
            raise ValueError(f"meter {meter.address} is polled already")
        every = self.interval if interval is None else interval
        if every < 0:
            raise ValueError(f"interval must be ≥ 0; got {every}")
        entry = (meter, MeterStatus(meter.address, meter.bus.url, every))
        self._meters.append(entry)
        self._by_bus.setdefault(meter.bus, []).append(entry)
        if self._started:
            self._start_bus(meter.bus)
            self._wake(meter.bus)

    def meter(self, address: str) -> Meter:
        """The handle of a polled meter (``KeyError`` if it is not polled)."""
        for meter, _ in self._meters:
            if meter.address == address:
                return meter
        raise KeyError(address)

    def meters(self) -> list[Meter]:
        return [meter for meter, _ in self._meters]

    def add_observer(self, observer: Observer) -> None:
        """Tell ``observer`` of every event from now on (before or after the poller started)."""
        if self._closed:
            raise RuntimeError("the poller is closed")
        name = type(observer).__name__
        same = sum(type(r.observer).__name__ == name for r in self._runners)
        runner = _ObserverRunner(observer, _Outbox(self._queue_size), f"{name}#{same + 1}" if same else name)
        self._runners.append(runner)
        if self._started:
            runner.task = asyncio.get_running_loop().create_task(runner.run(), name=f"ekm-observer {runner.label}")

    # -----------------------------------------------------------------------------------------------
    # Lifecycle

    async def start(self) -> Poller:
        if self._started:
            return self
        self._started = True
        loop = asyncio.get_running_loop()
        for runner in self._runners:
            runner.task = loop.create_task(runner.run(), name=f"ekm-observer {runner.label}")
        for meter, _ in self._meters:
            self._start_bus(meter.bus)
        return self

    def _start_bus(self, bus: Wire) -> None:
        """The workers of ``bus``, unless it has them already."""
        if bus in self._wakeup or self._closed:
            return
        self._wakeup[bus] = asyncio.Event()
        loop = asyncio.get_running_loop()
        for n in range(WORKERS_PER_BUS):
            self._workers.append(loop.create_task(self._work(bus), name=f"ekm-poll {bus.url} #{n}"))

    async def aclose(self) -> None:
        """Stop polling (a read in progress is abandoned), let observers take what is queued, end iteration."""
        if self._closed:
            return
        self._closed = True
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drain()
        self._stream.close()
        self._done.set()

    async def _drain(self) -> None:
        """No more events: every observer takes what is queued for it (within ``drain_timeout``)."""
        for runner in self._runners:
            runner.outbox.close()
        tasks = [r.task for r in self._runners if r.task is not None]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=self.drain_timeout)  # asyncio.wait cancels nothing
        for task in late:
            log.warning("observer %s did not finish in %s s: cancelled", task.get_name(), self.drain_timeout)
            task.cancel()

    async def __aenter__(self) -> Poller:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def wait(self) -> None:
        """Until ``count`` reads were made and every observer took them (or the poller is closed)."""
        await self._done.wait()
        await asyncio.gather(*(asyncio.shield(r.task) for r in self._runners if r.task is not None))

    # -----------------------------------------------------------------------------------------------
    # What consumers see

    def __aiter__(self) -> AsyncGenerator[Read, None]:
        return self._reads()

    async def _reads(self) -> AsyncGenerator[Read, None]:
        await self.start()
        async for event in self.events():
            if isinstance(event, ReadEvent):
                yield event.read

    async def events(self) -> AsyncGenerator[PollEvent, None]:
        """Every read and every failure, in the order they happened; ends when the poller closes."""
        await self.start()
        while (event := await self._stream.get()) is not None:
            yield event

    @property
    def dropped(self) -> int:
        """Events dropped from the ``async for`` queue because nobody took them in time."""
        return self._stream.dropped

    def status(self) -> dict[str, MeterStatus]:
        """Each meter's polling status, by address."""
        for meter, status in self._meters:
            status.address = meter.address  # follows an address change
        return {status.address: status for _, status in self._meters}

    def observer_failures(self) -> dict[str, int]:
        """Failures of each observer, by label (its class name; ``Name#2`` … for more of one class)."""
        return {r.label: r.failures for r in self._runners}

    def observer_dropped(self) -> dict[str, int]:
        """Events each observer's queue dropped because it was full, by label."""
        return {r.label: r.outbox.dropped for r in self._runners}

    # -----------------------------------------------------------------------------------------------
    # Polling

    def _wake(self, bus: Wire) -> None:
        if bus in self._wakeup:
            self._wakeup[bus].set()

    def _next(self, bus: Wire) -> tuple[Meter, MeterStatus] | None:
        """The meter of ``bus`` due first (ties: the one started longest ago), not being read."""
        candidates = [(m, s) for m, s in self._by_bus.get(bus, ()) if s.due != _TAKEN]
        if not candidates:
            return None
        return min(candidates, key=lambda ms: (ms[1].due, ms[1].last_start))

    async def _work(self, bus: Wire) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._remaining is not None and self._remaining <= 0:
                if self._in_flight == 0:
                    self._finish()
                return
            chosen = self._next(bus)
            wait = None if chosen is None else chosen[1].due - loop.time()
            if wait is None or wait > 0:
                event = self._wakeup[bus]
                event.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await event.wait()
                continue
            assert chosen is not None
            meter, status = chosen
            started = loop.time()
            status.last_start = started
            status.due = _TAKEN  # the other worker picks another meter
            if self._remaining is not None:
                self._remaining -= 1
            self._in_flight += 1
            try:
                await self._read_one(meter, status, started)
            finally:
                self._in_flight -= 1
                self._wake(bus)

    async def _read_one(self, meter: Meter, status: MeterStatus, started: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            read = await meter.read()
        except MeterUnavailable as exc:
            status.due = exc.until
            self._failed(meter, status, exc)
        except Exception as exc:  # noqa: BLE001 — every failure of a read becomes a FailureEvent
            status.due = started + status.interval
            self._failed(meter, status, exc)
        else:
            now = loop.time()
            status.due = max(started + status.interval, now) if status.interval else now
            status.ok += 1
            status.last_read = read
            status.last_latency = now - started
            self._publish(ReadEvent(read, meter.bus.url, now - started))

    def _failed(self, meter: Meter, status: MeterStatus, exc: Exception) -> None:
        if self._remaining is not None:
            self._remaining += 1  # count is of reads made
        status.errors += 1
        status.last_error = str(exc)
        self._publish(FailureEvent(meter.address, meter.bus.url, exc, datetime.now(UTC)))

    def _publish(self, event: PollEvent) -> None:
        self._stream.put(event)
        for runner in self._runners:
            runner.outbox.put(event)

    def _finish(self) -> None:
        """``count`` reached: no more events; iteration and observers end once they took what is queued."""
        self._stream.close()
        for runner in self._runners:
            runner.outbox.close()
        self._done.set()


async def poll(meters: Iterable[Meter], interval: float = 10.0, **options: Any) -> AsyncGenerator[Read, None]:
    """Read ``meters`` every ``interval`` seconds for as long as the caller iterates; ``options`` go to
    :class:`Poller` (``count``, ``observers``, ``queue_size``). ``async for read in poll(meters):``"""
    async with Poller(meters, interval=interval, **options) as poller:
        async for read in poller:
            yield read
