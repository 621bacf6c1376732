"""A simulated RS-485 bus (sans-I/O): meters, wire timing, local echo, faults, a record of the wire.

Give it the host's bytes and the time they arrived; it returns what comes back, as timed emissions:
each starts when the wire carries its first byte and takes ``byte_time`` per byte (10 bits per
character: 1.0417 ms at 9600 baud; 0 when unpaced). Requests and replies share the one wire: a
request goes out when the wire is free, the meter answers ``turnaround`` seconds after its last byte.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..layouts import ADDRESS_SPAN
from ..wire import CRC_COVERED, FRAME_LEN, char_time, seal
from .arrival import ARRIVALS, Arrival, pieces
from .faults import FRAME_ONLY, Fault, FaultKind
from .meter import MeterModel
from .wire import Request, RequestKind, RequestParser

__all__ = ["MAX_TURNAROUND", "Emission", "LocalEcho", "SimBus", "Transaction"]

MAX_TURNAROUND = 1.5
"""The longest meter turnaround the simulator takes (seconds)."""


class LocalEcho(enum.Enum):
    """What the host's adapter makes of its own request: RS-485 adapters that hear themselves."""

    OFF = "off"
    """No echo."""
    EXACT = "exact"
    """Every byte sent comes back as it goes out on the line."""
    DELAYED = "delayed"
    """The echo is handed over late, all at once, just before the reply (a buffering adapter)."""
    DAMAGED = "damaged"
    """As exact, with one bit of one byte changed (the driver enabling while the first bit goes out)."""

    @classmethod
    def of(cls, value: LocalEcho | str | bool) -> LocalEcho:
        if isinstance(value, bool):
            return cls.EXACT if value else cls.OFF
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"echo must be one of {', '.join(m.value for m in cls)}; got {value!r}") from None


def _collide(replies: list[bytes]) -> bytes:
    """What the host hears when several meters answer at once: the replies OR-ed, byte by byte."""
    out = bytearray(max(map(len, replies)))
    for reply in replies:
        for i, b in enumerate(reply):
            out[i] |= b
    return bytes(out)


_ORDER = [
    FaultKind.DEAD,
    FaultKind.DROP,
    FaultKind.WRONG_ADDRESS,
    FaultKind.CRC,
    FaultKind.TRUNCATE,
    FaultKind.GARBAGE,
    FaultKind.DELAY,
]
"""The order faults change a reply in: content first, then what the line does to it."""


@dataclass(frozen=True, slots=True)
class Emission:
    """Bytes sent back to the host: from ``start`` on, one every ``byte_time`` seconds."""

    start: float
    data: bytes
    byte_time: float

    @property
    def end(self) -> float:
        """When the last byte has been received."""
        return self.start + len(self.data) * self.byte_time


@dataclass(frozen=True, slots=True)
class Transaction:
    """One request on the wire and what answered it (after faults)."""

    index: int
    time: float
    """When the request's last byte was on the wire."""
    request: Request
    meter: str | None
    """The address of the meter that answered (before any fault), None if none did."""
    reply: bytes | None
    faults: tuple[FaultKind, ...] = ()


@dataclass
class SimBus:
    """Meters on one simulated RS-485 wire."""

    meters: list[MeterModel]
    baud: int = 9600
    """Wire speed for pacing; 0 sends everything at once."""
    turnaround: float = 0.02
    """Seconds between the end of a request and the start of the reply."""
    echo: LocalEcho | str | bool = LocalEcho.OFF
    """Send the host its own bytes back, as an RS-485 adapter that hears itself does (True: exact)."""
    arrival: Arrival | None = None
    """How the host receives the line's bytes (:mod:`ekm_async.sim.arrival`); None: 5 ms slices on a
    paced bus, each emission whole on an unpaced one."""
    faults: list[Fault] = field(default_factory=list)
    seed: int = 0
    history: int | None = 1000
    """How many of the latest transactions ``transactions`` keeps at least (up to twice as many are
    kept, so that trimming costs nothing per request); None: all, for tests that look at everything."""
    transactions: list[Transaction] = field(default_factory=list)
    """The transactions served, in order (the latest ``history`` of them, at least)."""
    served: int = 0
    """Transactions served in all."""

    def __post_init__(self) -> None:
        if self.baud < 0:
            raise ValueError("baud must be ≥ 0")
        if not 0 <= self.turnaround <= MAX_TURNAROUND:
            raise ValueError(f"turnaround must be 0 to {MAX_TURNAROUND} s; got {self.turnaround}")
        self.echo = LocalEcho.of(self.echo)
        if self.history is not None and self.history < 1:
            raise ValueError("history must be ≥ 1 (or None: keep everything)")
        self._parser = RequestParser()
        self._rng = random.Random(self.seed)
        self._counts = [0] * len(self.faults)
        self._free_at = 0.0

    @property
    def byte_time(self) -> float:
        return char_time(self.baud) if self.baud else 0.0

    def meter(self, address: str) -> MeterModel:
        for m in self.meters:
            if m.address == address:
                return m
        raise KeyError(address)

    def add_fault(self, fault: Fault) -> None:
        """Apply ``fault`` from now on (its ``#N`` counts the replies from now)."""
        self.faults.append(fault)
        self._counts.append(0)

    def clear_faults(self) -> None:
        """No faults from now on."""
        self.faults.clear()
        self._counts.clear()

    def receive(self, data: bytes, now: float) -> list[Emission]:
        """The host sent ``data`` at ``now``: what comes back, in order."""
        out: list[Emission] = []
        for request in self._parser.feed(data):
            out += self._serve(request, now)
        return out

    def deliveries(self, emissions: list[Emission]) -> list[tuple[float, bytes]]:
        """The pieces the host receives of ``emissions`` (in order), as (time, bytes), under ``arrival``."""
        arrival = self.arrival
        if arrival is None:
            if not self.baud:
                return [(e.start, e.data) for e in emissions]
            arrival = ARRIVALS["slices"]
        timeline = ((e.start + (i + 1) * e.byte_time, b) for e in emissions for i, b in enumerate(e.data))
        return pieces(arrival, timeline, self.byte_time)

    def _serve(self, request: Request, now: float) -> list[Emission]:
        bt = self.byte_time
        start = max(now, self._free_at)
        end = start + len(request.raw) * bt
        echo = self._echo(request.raw, start, end)
        out = [echo] if echo is not None else []
        deaf = self._deaf()
        answers: list[tuple[str, bytes]] = []
        for m in self.meters:
            if deaf is not None and (not deaf or m.address in deaf):
                continue  # a dead meter hears nothing: its state does not change
            address = m.address  # before the request: an address change answers from the old one
            reply = m.handle(request, end)
            if reply is not None:
                answers.append((address, reply))
        meter, reply = answers[0] if answers else (None, None)
        if len(answers) > 1:  # two meters drive the line at once: what arrives is neither
            reply = _collide([r for _, r in answers])
        applied: list[FaultKind] = []
        delay = 0.0
        if reply is not None and meter is not None:
            reply, delay = self._inject(meter, request, reply, applied)
        self._free_at = end
        if reply:
            emission = Emission(end + self.turnaround + delay, reply, bt)
            out.append(emission)
            self._free_at = emission.end
        if echo is not None and self.echo is LocalEcho.DELAYED:  # handed over just before the reply
            out[0] = Emission(out[1].start if len(out) > 1 else end + self.turnaround, echo.data, 0.0)
        self._record(Transaction(self.served, end, request, meter, reply, tuple(applied)))
        return out

    def _echo(self, raw: bytes, start: float, end: float) -> Emission | None:
        """The adapter's echo of a request on the line from ``start`` to ``end``."""
        if self.echo is LocalEcho.OFF:
            return None
        if self.echo is LocalEcho.DAMAGED:
            at = self._rng.randrange(len(raw))
            raw = raw[:at] + bytes([raw[at] ^ (1 << self._rng.randrange(7))]) + raw[at + 1 :]
        return Emission(start, raw, self.byte_time)

    def _record(self, transaction: Transaction) -> None:
        self.served += 1
        self.transactions.append(transaction)
        if self.history is not None and len(self.transactions) >= 2 * self.history:
            del self.transactions[: -self.history]

    def _matching(self, meter: str, kinds: Iterable[FaultKind]) -> list[Fault]:
        """The rules of these kinds that apply to this reply of ``meter`` (counted, then drawn)."""
        chosen = []
        for i, rule in enumerate(self.faults):
            if rule.kind not in kinds or (rule.address is not None and rule.address != meter):
                continue
            self._counts[i] += 1
            if rule.nth and self._counts[i] not in rule.nth:
                continue
            if self._rng.random() < rule.probability:
                chosen.append(rule)
        return chosen

    def _deaf(self) -> set[str] | None:
        """The meters a DEAD fault silences for this request: None for none, an empty set for all.

        Each DEAD rule is counted (for ``nth``) and drawn once per request.
        """
        deaf: set[str] | None = None
        for i, rule in enumerate(self.faults):
            if rule.kind is not FaultKind.DEAD:
                continue
            self._counts[i] += 1
            if rule.nth and self._counts[i] not in rule.nth:
                continue
            if self._rng.random() < rule.probability:
                if rule.address is None:
                    return set()
                deaf = (deaf or set()) | {rule.address}
        return deaf

    def _inject(
        self, meter: str, request: Request, reply: bytes, applied: list[FaultKind]
    ) -> tuple[bytes | None, float]:
        kinds = {k for k in FaultKind if k is not FaultKind.DEAD}
        if len(reply) != FRAME_LEN:
            kinds -= FRAME_ONLY
        if request.kind is not RequestKind.SIGN_ON:
            kinds.discard(FaultKind.WRONG_ADDRESS)  # only live-data blocks carry an address
        delay = 0.0
        rng = self._rng
        for rule in sorted(self._matching(meter, kinds), key=lambda r: _ORDER.index(r.kind)):
            applied.append(rule.kind)
            if rule.kind is FaultKind.DROP:
                return None, 0.0
            if rule.kind is FaultKind.DELAY:
                delay += rule.seconds
            elif rule.kind is FaultKind.CRC:
                at = rng.randrange(CRC_COVERED.start, CRC_COVERED.stop)
                reply = reply[:at] + bytes([reply[at] ^ (1 << rng.randrange(7))]) + reply[at + 1 :]
            elif rule.kind is FaultKind.WRONG_ADDRESS:
                other = f"{(int(reply[ADDRESS_SPAN]) + rng.randrange(1, 10**6)) % 10**12:012d}".encode()
                reply = seal(reply[: ADDRESS_SPAN.start] + other + reply[ADDRESS_SPAN.stop :])
            elif rule.kind is FaultKind.TRUNCATE:
                reply = reply[: rng.randrange(1, len(reply))]
            elif rule.kind is FaultKind.GARBAGE:
                reply = bytes(rng.randrange(0x80) for _ in range(rng.randrange(1, 65))) + reply
        return reply, delay
