"""One transaction's exchanges with one meter, as an object without I/O (in the manner of h11's
``Connection``): the caller says what it wants — a block, an acknowledged password or write, the
close — and the exchange says what to send and how long the reply may take; the caller then gives it
what the line brought (decoder events) or tells it the wait is over, and it decides: keep waiting,
send again, done, or failed.

The rules it keeps, each stated here once:

* **The session table** (:mod:`ekm_async.session`): a step the table does not allow raises
  :class:`~ekm_async.LocalProtocolError` before anything is sent; a write is only ever asked for after
  an acknowledged password.
* **What answers what**: a block must decode as the kind asked for and, for a live-data block, come
  from the meter asked (else it is counted and, for a read, asked again); only an ACK accepts a
  password or a write, a NAK or silence refuses it; anything else is counted as unexpected.
* **Retries**: reads are asked again after a timeout or a bad reply, ``retries`` times; a password or
  a write is never repeated.
* **Late replies**: after a wait ran out its reply may still come (a slow gateway, a line still busy
  with a reply nobody read). The connection's :class:`Line` counts such replies; while one is owed, the
  next request is sent only once the line was quiet for ``margin`` seconds (at most a block's wire
  time plus ``margin``), and a whole frame (its CRC good) that does not answer the request — another
  kind, another meter — is taken for the owed reply: dropped, counted ``late``, and the wait for the
  request's own reply goes on for a block's wire time more. Without it, one reply late by more than
  the quiet time would answer the next request, whose repeat is answered by the reply to the request
  before, and so on: every later exchange one reply behind.
* **Timing**: a reply may take the wire time of the request and the reply at the line speed, plus
  ``margin`` (the meter's turnaround and the adapter's or gateway's latency).

Counters go to a :class:`WireStats` the caller owns.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

from . import commands
from .blocks import Block, LiveBlock, decode
from .commands import LiveRead, SettingsPage
from .errors import FrameError, MeterError, Refused, ReplyTimeout, UnexpectedReply
from .frames import Ack, Event, Frame, Nak, Rejected
from .layouts import BlockKind
from .session import SessionEvent, State, next_state
from .wire import FRAME_LEN

__all__ = [
    "LATENCY_BUCKETS",
    "Accepted",
    "AckStep",
    "BlockStep",
    "Exchange",
    "Failed",
    "Line",
    "Send",
    "Step",
    "Timing",
    "Waiting",
    "WireStats",
    "password",
    "read_b",
    "settings",
    "sign_on",
    "write",
]

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 1.0, 2.0, 5.0)
"""Upper bounds (seconds) of the exchange latency histogram; a V4 block at 9600 baud takes ~0.3 s."""


@dataclass
class WireStats:
    """Counters of one wire (cumulative; read them, do not write them)."""

    bytes_sent: int = 0
    bytes_received: int = 0
    reads: int = 0
    """Pieces the host took from the line (one wakeup each): a paced reply is read in a few
    (docs/wire.md, "Reading a reply without waking for every byte")."""
    frames_ok: int = 0
    """Blocks accepted: valid, from the meter asked, of the kind asked for."""
    rejected: Counter[str] = field(default_factory=Counter)
    """Rejected bytes by reason (``RejectReason`` values, and ``unexpected``/``field``)."""
    anomalies: Counter[str] = field(default_factory=Counter)
    """Blocks delivered flagged, by check (``v4b trailer``, …): a byte only a guess expects was not there."""
    timeouts: int = 0
    retries: int = 0
    reconnects: int = 0
    naks: int = 0
    echoes: int = 0
    """The adapter's exact echoes of what was sent, dropped."""
    transactions: int = 0
    exchange_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    """Exchanges answered, by latency: one count per bucket of :data:`LATENCY_BUCKETS`, then the rest."""
    exchange_seconds: float = 0.0
    """Sum of the latencies of the exchanges answered."""

    def observe_exchange(self, seconds: float) -> None:
        """An exchange was answered ``seconds`` after its request was sent."""
        self.exchange_seconds += seconds
        self.exchange_buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1


@dataclass(frozen=True, slots=True)
class Timing:
    """How long replies may take on a line."""

    byte_time: float
    """Seconds a character takes on the line."""
    margin: float
    """Seconds allowed beyond the wire time of an exchange."""

    def wait(self, request_len: int, reply_len: int) -> float:
        """Seconds from sending a request until its reply is late."""
        return (request_len + reply_len) * self.byte_time + self.margin

    @property
    def settle_limit(self) -> float:
        """The longest wait for a quiet line before the next request: a block's wire time and the margin."""
        return FRAME_LEN * self.byte_time + self.margin


@dataclass
class Line:
    """What one connection's exchanges leave for the next ones (the bus keeps one per connection)."""

    owed: int = 0
    """Requests whose wait ran out: their replies may still arrive (see the module documentation)."""


_ASKED: dict[BlockKind, tuple[str, str]] = {
    BlockKind.V3: ("V3", ", and that it is a V3 meter"),
    BlockKind.V4A: ("V4 A", ", and that it is a V4 meter"),
    BlockKind.V4B: ("V4 B", ""),
}
"""A block's read in words, and what to check when it gets no reply (a V4 meter does not answer a V3
read, nor a V3 meter a V4 one)."""


# What a transaction asks for (tables of requests, replies and session events, not branches).


@dataclass(frozen=True, slots=True)
class BlockStep:
    """Ask for a block: ``request`` is answered by a ``kind`` block; ``event`` is its session event."""

    request: bytes
    kind: BlockKind
    kwh_scale: int | None
    event: SessionEvent


@dataclass(frozen=True, slots=True)
class AckStep:
    """Send a password or a write, answered by an ACK (``accepted``) or not (``refused``)."""

    request: bytes
    accepted: SessionEvent
    refused: SessionEvent
    what: str
    """What a refusal says (:class:`~ekm_async.Refused`)."""


Step = BlockStep | AckStep


def sign_on(address: str, read: LiveRead, kind: BlockKind) -> BlockStep:
    """Connect: the V3 or V4 A read (also the V4 B read, which carries the address)."""
    return BlockStep(commands.live_read(address, read), kind, None, SessionEvent.CONNECT)


def read_b(address: str, kwh_scale: int) -> BlockStep:
    return BlockStep(commands.live_read(address, LiveRead.V4B), BlockKind.V4B, kwh_scale, SessionEvent.CONNECT)


def settings(page: SettingsPage, kind: BlockKind, kwh_scale: int) -> BlockStep:
    return BlockStep(commands.settings_read(page), kind, kwh_scale, SessionEvent.READ)


def password(value: str) -> AckStep:
    accepted, refused = SessionEvent.PASSWORD_ACCEPTED, SessionEvent.PASSWORD_REFUSED
    return AckStep(commands.password(value), accepted, refused, "password not acknowledged")


def write(request: bytes) -> AckStep:
    return AckStep(
        request, SessionEvent.WRITE_ACCEPTED, SessionEvent.WRITE_REFUSED, f"write not acknowledged: {request!r}"
    )


# What the exchange tells its caller.


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``request``; its reply is late ``wait`` seconds after. ``settle_first``: a late reply to an
    earlier request may still come — let the line be quiet first (:attr:`Timing.margin`, at most
    :attr:`Timing.settle_limit`), and drop what came."""

    request: bytes
    wait: float
    settle_first: bool


@dataclass(frozen=True, slots=True)
class Waiting:
    """Nothing decided yet: keep waiting for the reply — at least ``wait`` seconds more, if given (a
    late reply to an earlier request took the line; the one awaited follows it)."""

    wait: float | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """The step is done: ``block`` for a block step, None for an acknowledged password or write."""

    block: Block | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    error: MeterError | FrameError


Decision = Waiting | Send | Accepted | Failed
WAITING = Waiting()


class Exchange:
    """The exchanges of one transaction with meter ``address``; see the module documentation.

    Use: ``send = exchange.begin(step)``; send ``send.request`` (after settling, if asked) and call
    :meth:`sent` with the time; then give it :meth:`receive` every decoder event, or :meth:`expire` when
    ``send.wait`` ran out, until the decision is :class:`Accepted` or :class:`Failed` — or a
    :class:`Send` (ask again), which is sent as the first was. :meth:`close` ends the session.
    """

    def __init__(
        self,
        address: str,
        timing: Timing,
        retries: int,
        stats: WireStats,
        *,
        strict: bool = False,
        line: Line | None = None,
    ) -> None:
        """``strict``: a frame that lacks a byte only a guess expects is rejected, not flagged. ``line``:
        the connection's, shared with the exchanges before and after this one."""
        self.address = address
        self.strict = strict
        self.timing = timing
        self.retries = retries
        self.stats = stats
        self.state = State.IDLE
        self._step: Step | None = None
        self._attempt = 0
        self.line = line if line is not None else Line()
        self._timed_out = False
        """The current step's wait ran out once, or took a late reply: the reply it accepts may be an
        earlier request's, and its own may still come."""
        self._error: MeterError | FrameError | None = None
        self._sent_at = 0.0

    @property
    def step(self) -> Step | None:
        return self._step

    def begin(self, step: Step) -> Send:
        """Start ``step``; :class:`LocalProtocolError` if the session rules do not allow it (nothing to send)."""
        next_state(self.state, step.event if isinstance(step, BlockStep) else step.accepted)
        self._step, self._attempt, self._timed_out, self._error = step, 0, False, None
        return self._send()

    def sent(self, at: float) -> None:
        """The request went out at ``at`` (the caller's clock)."""
        self._sent_at = at

    def receive(self, event: Event, at: float) -> Decision:
        """What ``event``, received at ``at``, decides."""
        step = self._step
        if isinstance(step, BlockStep) and isinstance(event, Frame | Rejected):
            return self._block(step, event, at)
        if isinstance(step, AckStep) and isinstance(event, Ack | Nak):
            if isinstance(event, Ack):
                self.stats.observe_exchange(at - self._sent_at)
                self._done(step.accepted)
                return Accepted()
            return self._refused(step)
        self.stats.rejected["unexpected"] += 1
        return WAITING

    def expire(self, buffered: bytes = b"") -> Decision:
        """The wait ran out; ``buffered``: what the decoder holds of an unfinished reply, if anything."""
        step = self._step
        assert step is not None, "no step in progress"
        self.stats.timeouts += 1
        self._timed_out = True
        self.line.owed = min(self.line.owed + 1, self.retries + 1)
        if isinstance(step, AckStep):
            return self._refused(step)
        wait = self.timing.wait(len(step.request), FRAME_LEN)
        what, hint = _ASKED.get(step.kind, (f"settings ({step.kind.value})", ""))
        said = f"no reply to the {what} read within {wait:.1f} s — check the address{hint}"
        return self._again(ReplyTimeout(self.address, said, buffered))

    def close(self) -> bytes:
        """The close string; the session ends."""
        self.state = next_state(self.state, SessionEvent.CLOSE)
        self._step = None
        return commands.CLOSE

    # Internals

    def _send(self) -> Send:
        step = self._step
        assert step is not None
        reply = FRAME_LEN if isinstance(step, BlockStep) else 1
        return Send(step.request, self.timing.wait(len(step.request), reply), self.line.owed > 0)

    def _block(self, step: BlockStep, event: Frame | Rejected, at: float) -> Decision:
        if isinstance(event, Rejected):
            what = _ASKED.get(step.kind, (f"settings ({step.kind.value})", ""))[0]
            return self._again(FrameError(event.reason, event.raw, f"meter {self.address}'s reply to the {what} read"))
        try:
            block = decode(event.raw, step.kind, step.kwh_scale, strict=self.strict)
        except FrameError as exc:
            return self._other(exc.reason.value, exc)
        if isinstance(block, LiveBlock) and block.address != self.address:
            error = UnexpectedReply(self.address, f"{step.kind.value} block from meter {block.address}", event.raw)
            return self._other("unexpected", error)
        self.stats.frames_ok += 1
        for anomaly in block.anomalies:
            self.stats.anomalies[f"{anomaly.kind.value} {anomaly.what}"] += 1
        self.stats.observe_exchange(at - self._sent_at)
        if not self._timed_out:
            self.line.owed = 0  # answered in time: nothing earlier is still on its way
        # else this may be the late reply, and the repeat's may still follow: it stays owed
        self._done(step.event)
        return Accepted(block)

    def _other(self, reason: str, error: MeterError | FrameError) -> Decision:
        """A whole frame that does not answer the request: while a reply is owed, it is that one (the
        request's own follows it); else it is counted as ``reason`` and the read is asked again."""
        if self.line.owed:
            self.line.owed -= 1
            self._timed_out = True
            self.stats.rejected["late"] += 1
            return Waiting(self.timing.settle_limit)
        self.stats.rejected[reason] += 1
        return self._again(error)

    def _again(self, error: MeterError | FrameError) -> Send | Failed:
        """A read not answered as asked: ask again while retries are left, else fail with ``error``."""
        self._error = error
        if self._attempt >= self.retries:
            self._step = None
            return Failed(error)
        self._attempt += 1
        self.stats.retries += 1
        return self._send()

    def _refused(self, step: AckStep) -> Failed:
        self._done(step.refused)
        return Failed(Refused(self.address, step.what))

    def _done(self, event: SessionEvent) -> None:
        self.state = next_state(self.state, event)
        self._step = None
