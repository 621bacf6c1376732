"""The rig of the fault matrix: complete polling systems on simulated gateways, and what their wires did.

A *system* is what runs in the field: a simulated RS-485 bus of V4 meters behind a TCP gateway
(:class:`SimServer`), a :class:`Bus` on it, a :class:`Poller` reading every meter as often as the bus
allows, a :class:`SqliteStore` and a :class:`Tally` as its observers. Several systems run side by side
on one event loop, so a fault-free one measures, at the same moment and under the same load, what the
faulty one should reach.

Timing. The simulated wire is paced at 20 × 9600 baud (a V4 block takes 13 ms instead of 0.27 s) and
the meters answer 1 ms after a request, so an exchange is mostly wire time, which the bus knows from
its ``baud``; its ``timeout_margin`` (5 ms: the turnaround and the event loop's latency) is small next
to it, as on a tightly configured real bus (0.1 s at 9600 baud). An unpaced wire (``baud=0``) would
not keep these proportions: its whole exchange is turnaround, which the margin must then cover, so
the margin is several exchanges long and every silent reply costs it on top of its repeat — 5 %
silent replies alone would take more than 10 % of the throughput, whatever the bus did right.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ekm_async import Bus, Poller, Read, SqliteStore, decode, open_bus
from ekm_async.commands import LiveRead
from ekm_async.sim import Fault, FaultKind, MeterModel, MeterType, RequestKind, SimBus, SimServer
from ekm_async.sim import Transaction as Tx
from ekm_async.wire import FRAME_LEN

METERS = [f"{300008000 + n:012d}" for n in range(1, 11)]
"""One bus of ten V4 meters."""

BAUD = 20 * 9600
"""Speed of the simulated wire, and what the bus is told it is."""
TURNAROUND = 0.001
"""Seconds from the end of a request to the start of its reply."""

BUS_OPTIONS: dict[str, Any] = {
    "baud": BAUD,
    "timeout_margin": 0.005,
    "retries": 2,
    "quarantine_after": 3,
    "backoff": 2.0,
    "backoff_max": 4.0,
    "reconnect_delay": 0.005,
    "reconnect_max": 0.05,
}

INTACT = frozenset({FaultKind.GARBAGE, FaultKind.DELAY})
"""Faults that leave the frame itself as the meter sent it (garbage comes before it, delay only delays it)."""
DAMAGING = frozenset({FaultKind.CRC, FaultKind.TRUNCATE, FaultKind.WRONG_ADDRESS})


@dataclass
class Tally:
    """An observer that counts what the poller tells it."""

    reads: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, Exception]] = field(default_factory=list)

    async def on_read(self, read: Read) -> None:
        self.reads[read.address] = self.reads.get(read.address, 0) + 1

    async def on_error(self, meter: str, error: Exception) -> None:
        self.failures.append((meter, error))

    @property
    def total(self) -> int:
        return sum(self.reads.values())


@dataclass
class System:
    """One simulated gateway, its bus, poller, store and tally."""

    name: str
    meters: list[str]
    sim: SimBus
    server: SimServer
    bus: Bus
    poller: Poller
    store: SqliteStore
    tally: Tally
    path: Path
    started: float = 0.0
    stopped: float = 0.0
    restarts: list[float] = field(default_factory=list)
    """Wall-clock times (epoch seconds) at which the gateway was back after a restart."""

    @property
    def seconds(self) -> float:
        return self.stopped - self.started


@contextlib.asynccontextmanager
async def system(
    name: str, directory: Path, meters: list[str], faults: Iterable[Fault] = (), seed: int = 0
) -> AsyncIterator[System]:
    """A system polling ``meters`` (not yet started); on exit everything is closed, in order: poller,
    store, bus, gateway. ``faults`` apply on its simulated wire, drawn from ``seed``."""
    models = [MeterModel(address, MeterType.V4, seed=n) for n, address in enumerate(meters)]
    sim = SimBus(models, baud=BAUD, turnaround=TURNAROUND, faults=list(faults), seed=seed, history=None)
    path = directory / f"{name}.db"
    async with SimServer(sim) as server:
        host, port = await server.start_tcp()
        async with open_bus(f"tcp://{host}:{port}", **BUS_OPTIONS) as bus, SqliteStore(path) as store:
            tally = Tally()
            poller = Poller([bus.v4(address) for address in meters], interval=0, observers=[store, tally])
            run = System(name, meters, sim, server, bus, poller, store, tally, path)
            try:
                yield run
            finally:
                await poller.aclose()


# ---------------------------------------------------------------------------------------------------
# The store, read back


def stored_rows(path: Path) -> list[sqlite3.Row]:
    """Every row of ``reads``, in the order stored, through a connection of the test's own."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM reads ORDER BY id").fetchall()


def read_of_row(row: sqlite3.Row) -> Read:
    """What the raw frames of a V4 row decode to (raises on a frame that is not valid)."""
    a = decode(row["raw_a"], "v4a")
    b = decode(row["raw_b"], "v4b", a.kwh_scale)
    return Read.of(a, b)


# ---------------------------------------------------------------------------------------------------
# The simulated wire


@dataclass
class Session:
    """The transactions of one meter's session on the simulated wire: sign-ons … close."""

    address: str
    transactions: list[Tx] = field(default_factory=list)

    def _frames(self, read: LiveRead, allowed: frozenset[FaultKind]) -> list[bytes]:
        """The frames the meter sent for ``read`` that reached the line with only ``allowed`` faults."""
        out = []
        for t in self.transactions:
            if t.request.read is not read or t.meter != self.address or t.reply is None:
                continue
            if set(t.faults) <= allowed and len(t.reply) >= FRAME_LEN:
                out.append(t.reply[-FRAME_LEN:])
        return out

    def intact(self, read: LiveRead) -> list[bytes]:
        """Frames as the meter sent them (perhaps behind garbage)."""
        return self._frames(read, INTACT)

    def clean_last(self) -> tuple[bytes, bytes] | None:
        """(A, B) if the session's last A request and its last B request, in that order, were answered
        without any fault: the host cannot but have received that read (or been cancelled)."""
        last: dict[LiveRead, Tx] = {}
        for t in self.transactions:
            if t.request.read is not None:
                last[t.request.read] = t
        a, b = last.get(LiveRead.V4A), last.get(LiveRead.V4B)
        if a is None or b is None or a.index > b.index:
            return None
        if any(t.faults or t.meter != self.address or t.reply is None for t in (a, b)):
            return None
        assert a.reply is not None
        assert b.reply is not None
        return a.reply, b.reply


def sessions(record: list[Tx]) -> list[Session]:
    """The record cut into sessions: a session ends with its close, or when a sign-on for another
    meter begins one (after a lost connection no close was sent). A read repeated after a lost
    connection stays in its session: the bus asks the same meter again before anyone else."""
    out: list[Session] = []
    current: Session | None = None
    for t in record:
        if t.request.kind is RequestKind.SIGN_ON and (current is None or t.request.address != current.address):
            current = Session(t.request.address)
            out.append(current)
        if current is not None:
            current.transactions.append(t)
        if t.request.kind is RequestKind.CLOSE:
            current = None
    return out


def wire_share(record: list[Tx], address: str) -> float:
    """The share of the wire's time taken by ``address``'s sessions: each request holds the wire until
    the next one is sent."""
    if len(record) < 2:
        return 0.0
    owner = ""
    taken = 0.0
    for t, following in itertools.pairwise(record):
        if t.request.kind is RequestKind.SIGN_ON:
            owner = t.request.address
        if owner == address:
            taken += following.time - t.time
    return taken / (record[-1].time - record[0].time)


def replies(record: list[Tx], meters: Iterable[str]) -> list[Tx]:
    """The sign-on requests to ``meters`` that a meter answered (the replies faults could hit)."""
    wanted = set(meters)
    return [t for t in record if t.request.kind is RequestKind.SIGN_ON and t.meter in wanted]


async def wait_for(condition: Any, step: float = 0.005) -> None:
    while not condition():
        await asyncio.sleep(step)
