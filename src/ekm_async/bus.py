"""One RS-485 bus: one owner of one wire, many callers.

Every request is a *transaction* — connect … close — run by the bus's one worker task, in the order
callers asked (FIFO). In a transaction the session rules of :mod:`ekm_async.session` are kept: a
write is only ever sent after an acknowledged password, and the close string is always sent, also
when the caller was cancelled (the exchange on the wire is finished first, then the rest is dropped).

Each exchange waits for the wire time of its request and expected reply plus ``timeout_margin``.
Reads are retried after a timeout or a bad frame (``retries`` times). A meter whose transactions keep
failing is backed off: calls for it fail at once with :class:`MeterUnavailable` until its (growing)
back-off ends, so it never delays healthy meters. When the port or gateway goes away the bus
reconnects with exponential back-off; queued requests wait, nothing is lost. The back-off grows with
every connection that fails or is lost before a transaction succeeds on it (a gateway that accepts
and at once drops connections is not hammered), and starts over after a successful transaction.
:meth:`Bus.health` tells since when, and why, the wire has been gone. :meth:`Bus.close` interrupts a
connect or a reconnect wait at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, TypeVar

from . import commands, exchange
from ._capture import Capture
from ._protocol import MeterProtocol
from ._transport import BACKENDS, Connector, connector_for, open_hint
from ._version import __version__
from .audit import WriteRecord
from .blocks import Block, LiveBlock
from .commands import CLOSE, LiveRead, SettingsPage
from .errors import BusClosed, ConnectionLost, EkmError, FrameError, MeterError, MeterUnavailable, Refused
from .exchange import Accepted, Decision, Exchange, Failed, Send, Step, Timing, Waiting, WireStats
from .layouts import BlockKind
from .meters import Transaction, V3Meter, V4Meter
from .wire import FRAME_LEN, char_time

__all__ = ["Bus", "BusHealth", "BusOpening", "BusOptions", "Connector", "MeterStats", "WireStats", "open_bus"]

T = TypeVar("T")
log = logging.getLogger("ekm_async.bus")
_READ_BYTES = 2 * (len(commands.live_read("0" * 12, LiveRead.V4A)) + FRAME_LEN) + len(CLOSE)
"""A full V4 read on the wire: A and B requests and replies, and the close string."""


def _reason(exc: BaseException) -> str:
    """Why a connect failed, in words: what to check, then the system's own text (a bare
    ``TimeoutError`` has none)."""
    text = str(exc)
    hint = open_hint(exc)
    if hint is None:
        return text or type(exc).__name__
    return f"{hint} ({text})" if text else hint


@dataclass(frozen=True, slots=True)
class BusOptions:
    """How a bus behaves; every field is a keyword of :func:`open_bus`."""

    baud: int = 9600
    """Line speed, for the exchange timeouts (9600 baud 7E1: 1.0417 ms per byte)."""
    timeout_margin: float = 0.5
    """Seconds allowed beyond the wire time of an exchange (meter turnaround, gateway latency)."""
    retries: int = 2
    """Further attempts of a read after a timeout or a bad frame."""
    gap: float = 0.0
    """Idle seconds between transactions."""
    echo: str | bool = "auto"
    """The adapter's local echo of what is sent: ``auto`` (dropped when it comes, and only then),
    ``on`` (it always comes), ``off`` (never: bytes are taken as they come). True and False mean on, off."""
    backend: str = "pyserial"
    """Serial devices: ``pyserial`` (pyserial-asyncio) or ``serialx``."""
    quarantine_after: int = 3
    """Failed transactions in a row after which a meter is backed off."""
    backoff: float = 5.0
    """The first back-off, doubled for every further failure, up to ``backoff_max``."""
    backoff_max: float = 300.0
    reconnect_delay: float = 0.1
    """First wait before reconnecting, doubled per failed attempt up to ``reconnect_max``."""
    reconnect_max: float = 30.0
    connect_timeout: float = 10.0
    capture: str | None = None
    """A file to write every byte both ways to, with timestamps (JSON lines, passwords redacted): for a
    bug report, ``ekm-async decode --capture FILE`` replays it."""
    strict: bool = False
    """Reject a frame that lacks a byte only a guess expects, instead of delivering it flagged
    (``block.anomalies``, counted in ``stats.anomalies``, logged once per meter)."""
    name: str | None = None
    """What the web service, its metrics and MQTT call the bus where its URL must not show (a gateway's
    address is not for anyone who can reach the page); default ``bus1``, ``bus2``… in polling order."""

    def __post_init__(self) -> None:
        checks = {
            "baud": self.baud > 0,
            "timeout_margin": self.timeout_margin > 0,
            "retries": self.retries >= 0,
            "gap": self.gap >= 0,
            "quarantine_after": self.quarantine_after >= 1,
            "backoff": 0 < self.backoff <= self.backoff_max,
            "reconnect_delay": 0 < self.reconnect_delay <= self.reconnect_max,
            "connect_timeout": self.connect_timeout > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name} out of range: {getattr(self, name)!r}")
        echo = {True: "on", False: "off"}.get(self.echo, self.echo) if isinstance(self.echo, bool) else self.echo
        if echo not in ("auto", "on", "off"):
            raise ValueError(f"echo must be auto, on or off; got {self.echo!r}")
        object.__setattr__(self, "echo", echo)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}")

    @property
    def byte_time(self) -> float:
        return char_time(self.baud)

    @property
    def timing(self) -> Timing:
        return Timing(self.byte_time, self.timeout_margin)


@dataclass(frozen=True, slots=True)
class BusHealth:
    """Whether a bus has its wire, and since when it has not (:meth:`Bus.health`)."""

    connected: bool
    down_since: datetime | None
    """When the wire was lost, or the first attempt to open it failed (None while connected)."""
    down_seconds: float
    """Seconds since ``down_since`` (0 while connected)."""
    reason: str
    """Why it is down: the last error of a connect, or how the connection ended."""
    outage: bool
    """Down for longer than a full read takes on the wire: whoever polls should be told."""


@dataclass
class MeterStats:
    """How one meter has been doing on this bus."""

    transactions: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    backed_off_until: float = 0.0
    """Loop time until which calls for the meter fail at once."""
    last_ok: datetime | None = None
    last_error: str = ""
    last_latency: float | None = None
    """Seconds of the last successful transaction on the wire."""


@dataclass(eq=False)
class _Job(Generic[T]):
    address: str
    run: Callable[[Transaction], Awaitable[T]]
    future: asyncio.Future[T]
    idempotent: bool
    attempts: int = 0


class _Abandoned(Exception):
    """The caller went away: stop after the exchange in progress (internal)."""


class Bus:
    """One wire. Make it with :func:`open_bus`; get meter handles with :meth:`v3` and :meth:`v4`."""

    def __init__(self, url: str, connect: Connector, options: BusOptions) -> None:
        self.url = url
        self.options = options
        self.stats = WireStats()
        self.meter_stats: dict[str, MeterStats] = {}
        self._connect = connect
        self._protocol: MeterProtocol | None = None
        self._jobs: deque[_Job[Any]] = deque()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._reconnecting = False
        """The worker is (re)connecting or waiting to: no transaction is in progress, close() may cancel it."""
        self._losses = 0
        """Connections that failed or were lost since the last successful transaction: the reconnect back-off."""
        self._down_since: tuple[float, datetime] | None = None
        """(loop time, wall time) the wire went away; None while it is there."""
        self._down_reason = ""
        self.timing = options.timing
        self._write_listeners: list[Callable[[WriteRecord], None]] = []
        self._flagged: set[tuple[str, BlockKind, str]] = set()
        """(meter, kind, check) of the anomalies logged already."""
        self._capture = (
            Capture(options.capture, {"url": url, "baud": options.baud, "version": __version__})
            if options.capture
            else None
        )

    # -----------------------------------------------------------------------------------------------
    # Lifecycle

    async def start(self) -> Bus:
        """Connect (an error here is raised: nothing to reconnect to yet) and start serving."""
        await self._open()
        self._worker = asyncio.get_running_loop().create_task(self._serve(), name=f"ekm-bus {self.url}")
        return self

    async def close(self) -> None:
        """Finish the transaction in progress, fail the queued ones with :class:`BusClosed`, disconnect."""
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()
        while self._jobs:
            job = self._jobs.popleft()
            if not job.future.done():
                job.future.set_exception(BusClosed(f"{self.url} closed"))
        if self._worker is not None:
            if self._reconnecting:
                self._worker.cancel()  # no transaction in progress: a connect or its back-off is cut short
            await asyncio.wait([self._worker])  # a transaction in progress finishes, even if we are cancelled
        protocol = self._protocol
        self._protocol = None
        if protocol is not None and protocol.connected:
            # The close string the last transaction sent reaches the wire: at most its wire time and the margin.
            await protocol.close(len(CLOSE) * self.options.byte_time + self.options.timeout_margin)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(protocol.closed), 5)
        if self._capture is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._capture.close)

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.connected

    @property
    def outage_after(self) -> float:
        """Seconds without the wire after which it is an outage: the wire time of a full V4 read."""
        return _READ_BYTES * self.options.byte_time

    def health(self) -> BusHealth:
        """Whether the wire is there; if not, since when and why."""
        if self._down_since is None or self.connected:
            return BusHealth(True, None, 0.0, "", False)
        since, wall = self._down_since
        seconds = asyncio.get_running_loop().time() - since
        return BusHealth(False, wall, seconds, self._down_reason, seconds > self.outage_after)

    # -----------------------------------------------------------------------------------------------
    # Meters

    def v3(self, address: str, *, password: str = "00000000") -> V3Meter:
        """A handle for the V3 meter ``address`` (12 digits); nothing is sent."""
        return V3Meter(self, address, password=password)

    def v4(self, address: str, *, password: str = "00000000", b_every: int = 1) -> V4Meter:
        """A handle for the V4 meter ``address``; ``b_every=N`` reads the B block on every N-th read only."""
        return V4Meter(self, address, password=password, b_every=b_every)

    def flagged(self, address: str, block: Block) -> None:
        """A block of ``address`` came flagged: logged once per meter and check, with its frame."""
        for anomaly in block.anomalies:
            key = (address, anomaly.kind, anomaly.what)
            if key not in self._flagged:
                self._flagged.add(key)
                log.warning(
                    "meter %s: %s — the block is delivered, flagged (logged once); please send this frame to the "
                    "maintainers, it tells what the meter really sends: %s",
                    address,
                    anomaly,
                    block.raw.hex(),
                )

    def readdress(self, old: str, new: str) -> None:
        """Meter ``old`` now answers at ``new`` (its address was changed): its health moves with it, and
        the transactions queued for it (a poller's next read, asked for by the old address) go to ``new``."""
        stats = self.meter_stats.pop(old, None)
        if stats is not None:
            self.meter_stats[new] = stats
        for job in self._jobs:
            if job.address == old:
                job.address = new

    def add_write_listener(self, listener: Callable[[WriteRecord], None]) -> None:
        """Call ``listener`` with the :class:`~ekm_async.audit.WriteRecord` of every write asked of a
        meter on this bus (acknowledged or not), in the order asked, as it ends."""
        self._write_listeners.append(listener)

    def remove_write_listener(self, listener: Callable[[WriteRecord], None]) -> None:
        with contextlib.suppress(ValueError):
            self._write_listeners.remove(listener)

    def wrote(self, record: WriteRecord) -> None:
        for listener in list(self._write_listeners):
            try:
                listener(record)
            except Exception:  # a listener's bug must not turn a write's outcome into another
                log.exception("write listener %r failed on %s", listener, record.message())

    def available(self, address: str) -> bool:
        """False while ``address`` is backed off."""
        stats = self.meter_stats.get(address)
        return stats is None or asyncio.get_running_loop().time() >= stats.backed_off_until

    # -----------------------------------------------------------------------------------------------
    # Transactions

    async def transact(self, address: str, run: Callable[[Transaction], Awaitable[T]], *, idempotent: bool) -> T:
        """Run ``run`` as one transaction with meter ``address``, in turn with every other caller.

        ``idempotent`` transactions (reads) are run again after a lost connection.
        """
        if self._closing:
            raise BusClosed(f"{self.url} closed")
        self._check_available(address)
        job: _Job[T] = _Job(address, run, asyncio.get_running_loop().create_future(), idempotent)
        self._jobs.append(job)
        self._wakeup.set()
        return await job.future

    def _check_available(self, address: str) -> None:
        stats = self.meter_stats.get(address)
        if stats is not None and asyncio.get_running_loop().time() < stats.backed_off_until:
            raise MeterUnavailable(address, stats.backed_off_until, stats.consecutive_failures)

    async def _serve(self) -> None:
        try:
            await self._serve_jobs()
        except asyncio.CancelledError:
            if not self._closing:
                raise
        while self._jobs:  # closing: whoever still waits hears of it
            job = self._jobs.popleft()
            if not job.future.done():
                job.future.set_exception(BusClosed(f"{self.url} closed"))

    async def _serve_jobs(self) -> None:
        while not self._closing:
            if not self._jobs:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not await self._ensure_connected() or not self._jobs:  # the jobs stay queued meanwhile
                continue
            job = self._jobs.popleft()
            if job.future.done():
                continue  # the caller went away while it waited
            try:
                self._check_available(job.address)
            except MeterUnavailable as exc:
                job.future.set_exception(exc)
                continue
            assert self._protocol is not None
            await self._run(job, self._protocol)
            if self.options.gap:
                await asyncio.sleep(self.options.gap)

    async def _run(self, job: _Job[Any], protocol: MeterProtocol) -> None:
        """One transaction; its outcome goes to the caller's future (and the meter's health)."""
        started = asyncio.get_running_loop().time()
        outcome: BaseException | None = None
        try:
            result = await _Transaction(self, protocol, job).run()
        except _Abandoned:
            return
        except ConnectionLost as exc:
            job.attempts += 1
            if job.idempotent and job.attempts <= self.options.retries:
                self.stats.retries += 1
                self._jobs.appendleft(job)  # first again once reconnected
                return
            outcome = exc
        except (MeterError, FrameError) as exc:
            self._failed(job.address, exc)
            outcome = exc
        except Exception as exc:  # noqa: BLE001 — EkmError, or a bug: the caller hears of it, the bus serves on
            outcome = exc
        else:
            self._succeeded(job.address, asyncio.get_running_loop().time() - started)
        if job.future.done():
            return
        if outcome is None:
            job.future.set_result(result)
        else:
            job.future.set_exception(outcome)

    def _stats_of(self, address: str) -> MeterStats:
        return self.meter_stats.setdefault(address, MeterStats())

    def _succeeded(self, address: str, seconds: float) -> None:
        self._losses = 0  # the wire carried a whole transaction: a later loss reconnects at once
        stats = self._stats_of(address)
        stats.transactions += 1
        stats.consecutive_failures = 0
        stats.backed_off_until = 0.0
        stats.last_ok = datetime.now(UTC)
        stats.last_latency = seconds

    def _failed(self, address: str, exc: MeterError | FrameError) -> None:
        stats = self._stats_of(address)
        stats.transactions += 1
        stats.last_error = str(exc)
        if isinstance(exc, Refused):
            return  # the meter answered: it is alive
        stats.failures += 1
        stats.consecutive_failures += 1
        over = stats.consecutive_failures - self.options.quarantine_after
        if over >= 0:
            delay = min(self.options.backoff_max, self.options.backoff * 2 ** min(over, 30))
            stats.backed_off_until = asyncio.get_running_loop().time() + delay

    # -----------------------------------------------------------------------------------------------
    # The connection

    async def _open(self) -> None:
        protocol = MeterProtocol(
            self.stats,
            echo=self.options.echo,
            byte_time=self.options.byte_time,
            on_lost=self._lost,
            capture=self._capture,
        )
        try:
            await self._connect(protocol)
        except (OSError, TimeoutError, EkmError) as exc:
            self._went_down(_reason(exc))
            raise
        self._protocol = protocol
        self._down_since = None

    def _lost(self, reason: str) -> None:
        """The protocol's connection ended (called from its ``connection_lost``)."""
        if not self._closing:
            self._losses += 1
            self._went_down(reason)

    def _went_down(self, reason: str) -> None:
        if self._down_since is None:
            self._down_since = (asyncio.get_running_loop().time(), datetime.now(UTC))
        self._down_reason = reason

    async def _ensure_connected(self) -> bool:
        """Reconnect until connected (True) or the bus closes (False). Before each attempt, wait
        ``reconnect_delay`` doubled per connection failed or lost since the last successful transaction
        (none after the first loss following one), up to ``reconnect_max``."""
        self._reconnecting = True
        try:
            while not self.connected:
                if self._closing:
                    return False
                if self._losses > 1:
                    backoff = self.options.reconnect_delay * 2 ** min(self._losses - 2, 30)
                    await asyncio.sleep(min(self.options.reconnect_max, backoff))  # close() cancels the worker here
                try:
                    await self._open()
                except (OSError, TimeoutError, EkmError):
                    self._losses += 1
                    continue
                self.stats.reconnects += 1
            return True
        finally:
            self._reconnecting = False


class _Transaction:
    """One transaction on the wire: drives an :class:`~ekm_async.exchange.Exchange` with the protocol's
    events and the loop's clock (the :class:`~ekm_async.meters.Transaction` a meter handle runs on)."""

    def __init__(self, bus: Bus, protocol: MeterProtocol, job: _Job[Any]) -> None:
        self.bus = bus
        self.protocol = protocol
        self.job = job
        self.exchange = Exchange(
            job.address, bus.timing, bus.options.retries, bus.stats, strict=bus.options.strict, line=protocol.line
        )

    async def run(self) -> Any:
        self.bus.stats.transactions += 1
        try:
            return await self.job.run(self)
        finally:
            if self.protocol.connected:
                self.protocol.send(self.exchange.close(), soon=True)  # one write with the next request

    async def sign_on(self, read: LiveRead, kind: BlockKind) -> LiveBlock:
        block = await self._step(exchange.sign_on(self.job.address, read, kind))
        assert isinstance(block, LiveBlock)
        return block

    async def read_b(self, kwh_scale: int) -> LiveBlock:
        block = await self._step(exchange.read_b(self.job.address, kwh_scale))
        assert isinstance(block, LiveBlock)
        return block

    async def settings(self, page: SettingsPage, kind: BlockKind, kwh_scale: int) -> Block:
        block = await self._step(exchange.settings(page, kind, kwh_scale))
        assert block is not None
        return block

    async def password(self, password: str) -> None:
        await self._step(exchange.password(password))

    async def write(self, request: bytes) -> None:
        await self._step(exchange.write(request))

    async def _step(self, step: Step) -> Block | None:
        """Run ``step`` to its end: send, wait, and do what the exchange decides."""
        self._check_caller()
        decision: Decision = self.exchange.begin(step)  # LocalProtocolError: nothing sent
        protocol, loop = self.protocol, asyncio.get_running_loop()
        while True:
            if isinstance(decision, Send):
                if decision.settle_first:
                    await protocol.settle(self.bus.timing.margin, self.bus.timing.settle_limit)
                protocol.send(decision.request)
                self.exchange.sent(loop.time())
                deadline = loop.time() + decision.wait
            elif isinstance(decision, Accepted):
                if decision.block is not None and decision.block.anomalies:
                    self.bus.flagged(self.job.address, decision.block)
                return decision.block
            elif isinstance(decision, Failed):
                raise decision.error
            event = await protocol.next_event(deadline)
            decision = (
                self.exchange.expire(protocol.buffered) if event is None else self.exchange.receive(event, loop.time())
            )
            if isinstance(decision, Send):
                self._check_caller()  # a read asked again: only while its caller waits
            elif isinstance(decision, Waiting) and decision.wait is not None:
                deadline = max(deadline, loop.time() + decision.wait)

    def _check_caller(self) -> None:
        if self.job.future.done():
            raise _Abandoned


class BusOpening:
    """``await open_bus(…)`` or ``async with open_bus(…) as bus``."""

    def __init__(self, url: str, connect: Connector, options: BusOptions) -> None:
        self._bus = Bus(url, connect, options)

    def __await__(self) -> Generator[Any, None, Bus]:
        return self._bus.start().__await__()

    async def __aenter__(self) -> Bus:
        return await self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._bus.close()


def open_bus(url: str, *, connect: Connector | None = None, **options: Any) -> BusOpening:
    """Open the bus at ``url`` (docs/architecture.md): ``"/dev/ttyUSB0"``, ``"COM3"``, ``"tcp://h:p"``,
    ``"socket://h:p"``, ``"rfc2217://h:p"``. ``options`` are the fields of :class:`BusOptions`; a bad
    one, or a URL that cannot be opened, raises ``ValueError`` before anything is opened. ``connect``
    replaces the URL's way of opening the wire (e.g. a simulator's in-memory transport).

    Awaitable (``bus = await open_bus(url)``, later ``await bus.close()``) and an async context manager.
    """
    try:
        opts = BusOptions(**options)
    except TypeError as exc:
        known = ", ".join(BusOptions.__dataclass_fields__)
        raise ValueError(f"unknown option: {exc}; options are {known}") from None
    connector = connect or connector_for(
        url, baud=opts.baud, backend=opts.backend, connect_timeout=opts.connect_timeout
    )
    return BusOpening(url, connector, opts)
