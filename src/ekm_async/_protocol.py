"""The ``asyncio.Protocol`` under a bus: bytes in → :class:`FrameDecoder` → events for the exchange
in progress. It counts what the wire does (:class:`WireStats`) and logs raw traffic at DEBUG on the
``ekm_async.wire`` logger (the library never configures logging).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from ._capture import Capture
from .commands import redact
from .errors import ConnectionLost, RejectReason
from .exchange import Line, WireStats
from .frames import Echoed, Event, FrameDecoder, Nak, Rejected

__all__ = ["MeterProtocol"]

_UNDECISIVE = frozenset({RejectReason.GARBAGE, RejectReason.ECHO})
"""Rejected bytes that decide no exchange: counted, and waited past (a reply may still come)."""

wire_log = logging.getLogger("ekm_async.wire")


_RX_BUFFER = 65536
_PACED = 0.5
"""A piece of a frame came at the wire's pace if it took at least this share of its wire time."""
_COALESCE_MIN = 0.004
"""Reading pauses only for at least this long: four characters at 9600 baud (a shorter pause saves
less than it costs)."""
_COALESCE_SLACK = -0.0005
"""When reading resumes, against the time the frame's last byte is due. Negative: the event loop's
timers fire late — epoll waits in whole milliseconds, rounded up (CPython's selectors.EpollSelector),
so a resume asked for 0.5 ms early comes on average at the due time. Measured (bench_bus.py, 20 s):
+0.5 ms gave 98.8 % of the wire, −0.5 ms 99.2 %, at ~0.3–0.8 more wakeups per read (a last byte that
comes after the resume); −1.5 ms 99.4–99.7 % but two to three more wakeups per read."""


class MeterProtocol(asyncio.Protocol, asyncio.BufferedProtocol):
    """Feeds the decoder; ``send`` a request, then take ``next_event`` until the exchange is decided.

    Buffered where the transport can be (asyncio's sockets receive into one buffer of its own: no
    allocation of ``max_size`` bytes per receive); ``data_received`` for the others (serial ports).
    """

    def __init__(
        self,
        stats: WireStats,
        *,
        echo: str | bool = "auto",
        byte_time: float = 0.0,
        on_lost: Callable[[str], None] | None = None,
        capture: Capture | None = None,
    ) -> None:
        """``byte_time``: a character's time on the line, to take a frame in few reads (0: read every
        piece as it comes); ``on_lost(reason)`` is called when the connection ends, from
        ``connection_lost``; ``capture`` gets every byte both ways."""
        self.stats = stats
        self.line = Line()
        """What this connection's exchanges leave for the next: replies still owed."""
        self._byte_time = byte_time
        self._paused = False
        self._resume_timer: asyncio.TimerHandle | None = None
        self._last_piece = 0.0
        """Loop time of the last piece of the frame in progress (0: no frame in progress)."""
        self._due = 0.0
        """Loop time at which the frame in progress is whole on the line, reckoned at its first piece."""
        self._paced = False
        """The last frame's pieces came at the wire's pace."""
        self._on_lost = on_lost
        self._capture = capture
        self._decoder = FrameDecoder(echo=echo)
        self._transport: asyncio.WriteTransport | None = None
        self._events: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._lost: Exception | None = None
        self._last_rx = 0.0
        self._last_tx = 0.0
        """Loop time of the last :meth:`send`."""
        self._secret_sent = False
        """The last request held a password (what comes back is not logged: an echo would repeat it)."""
        self._held = bytearray()
        """Bytes sent ``soon``, written at the end of this turn of the loop or with the next send."""
        self._rx = memoryview(bytearray(_RX_BUFFER))
        self._loop = asyncio.get_running_loop()
        self.closed = self._loop.create_future()
        """Resolved when the connection is gone."""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self._transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rx

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._rx[:nbytes])  # the decoder copies what it keeps

    def data_received(self, data: bytes | memoryview) -> None:
        self._last_rx = self._loop.time()
        self.stats.bytes_received += len(data)
        self.stats.reads += 1
        if self._capture is not None:
            self._capture.rx(data)
        if wire_log.isEnabledFor(logging.DEBUG):
            if self._secret_sent:  # an echoing adapter repeats the password: its reply is not shown
                wire_log.debug("rx %d bytes (not shown: the request held a password)", len(data))
            else:
                wire_log.debug("rx %s", data.hex(" "))
        self._take(self._decoder.feed(data))
        if self._byte_time:
            self._coalesce(len(data))

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_pause()
        self._lost = ConnectionLost(f"connection lost: {exc}" if exc else "connection closed")
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake()
        if self._on_lost is not None:
            self._on_lost(str(self._lost))

    # Exchanges

    @property
    def buffered(self) -> bytes:
        """Bytes of an unfinished frame (or garbage) held by the decoder."""
        return self._decoder.buffered

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._lost is None

    def send(self, request: bytes, *, soon: bool = False) -> None:
        """Send ``request``; events from before it are dropped (counted as unexpected).

        ``soon``: at the end of this turn of the event loop, with whatever else is sent before then, in
        one write — a close string and the next transaction's first request cost one system call. The
        bytes on the wire, and their order, are the same.
        """
        if self._lost is not None or self._transport is None:
            raise self._lost or ConnectionLost("not connected")
        self._take(self._decoder.sent(request), queue=False)  # what was held from before: counted only
        if self._events:
            self.stats.rejected["unexpected"] += len(self._events)
            self._events.clear()
        if self._capture is not None:
            self._capture.tx(request)
        shown = redact(request)
        self._secret_sent = shown != request
        if wire_log.isEnabledFor(logging.DEBUG):
            wire_log.debug("tx %s", shown.hex(" "))  # never a password
        self.stats.bytes_sent += len(request)
        self._last_tx = self._loop.time()
        if soon:
            if not self._held:
                self._loop.call_soon(self._write_held)
            self._held += request
        elif self._held:
            self._held += request
            self._write_held()
        else:
            self._transport.write(request)

    def _write_held(self) -> None:
        held, self._held = bytes(self._held), bytearray()
        if held and self._transport is not None:
            self._transport.write(held)

    async def next_event(self, deadline: float) -> Event | None:
        """The next decisive event (a frame, ACK, NAK or rejected frame), or None at ``deadline``.

        Garbage does not decide anything: it is counted and waited past.
        """
        loop = self._loop
        late = False
        while not self._events:
            if self._lost is not None:
                raise self._lost
            if loop.time() >= deadline:
                if late or not self._paused:
                    return None
                # Reading was paused for a frame's last bytes: take what the transport holds first.
                late = True
                self._resume()
                for _ in range(2):  # the read is scheduled in the next turn of the loop and done in it
                    await asyncio.sleep(0)
                continue
            waiter = self._waiter = loop.create_future()
            timer = loop.call_at(deadline, _release, waiter)  # lighter than asyncio.timeout_at, per exchange
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        return self._events.popleft()

    async def settle(self, quiet: float, limit: float) -> None:
        """Wait until the line has been silent for ``quiet`` seconds (at most ``limit`` seconds), then
        drop whatever came: after an exchange timed out, a late reply must not answer the next one.

        Silence counts from the last byte received or the last request sent, whichever is later: after
        a timeout with nothing received since the request, the line has been silent for longer than
        the reply would take, and nothing is waited for.
        """
        loop = self._loop
        start = loop.time()
        if self._paused:  # bytes held back for a frame's end are the line's too: take them first
            self._resume()
            for _ in range(2):  # the read is scheduled in the next turn of the loop and done in it
                await asyncio.sleep(0)
        while (wait := min(max(self._last_rx, self._last_tx) + quiet, start + limit) - loop.time()) > 0:
            await asyncio.sleep(wait)
        self._take(self._decoder.flush(), queue=False)
        self.stats.rejected["unexpected"] += len(self._events)
        self._events.clear()

    def abort(self) -> None:
        """Close the connection at once (what :meth:`send` holds for this turn is written first)."""
        if self._transport is not None:
            self._stop_pause()
            self._write_held()
            self._transport.abort()

    async def close(self, wait: float) -> None:
        """Close the connection once what was sent reached the wire: what :meth:`send` holds is written,
        the transport sends what it buffers (a serial transport writes from the loop, later) and then
        closes; after ``wait`` seconds it is aborted. The close string sent last is not lost."""
        transport = self._transport
        if transport is None:
            return
        self._stop_pause()
        self._write_held()
        transport.close()  # asyncio's transports flush their buffer first, then close
        try:
            async with asyncio.timeout(wait):
                await asyncio.shield(self.closed)
        except TimeoutError:
            transport.abort()

    # Coalesced reading

    def _coalesce(self, piece: int) -> None:
        """A frame's bytes are coming at the wire's pace: stop reading until the rest of it is there.

        A paced line hands bytes over in pieces (one by one from an adapter in low-latency mode): each
        read costs a wakeup of the process, a system call and a call of the decoder. Once a piece of a
        frame came no faster than the wire carries it, the line is known to be paced: from then on, at
        a frame's first piece, reading pauses for the wire time of the bytes the frame still needs, and
        they are taken in one read — two wakeups per frame. A line seen to deliver faster (a buffered
        gateway, an unpaced link) is read as it comes. Bytes that are not a frame's (an ACK, a NAK,
        garbage) never pause reading: they are seen when they come.

        The frame is due whole at the time reckoned at its first piece; a piece that comes after that
        (a gateway holding bytes back, a slower line than the bus was told) pauses nothing more.
        """
        pending = self._decoder.pending
        now = self._loop.time()
        last, self._last_piece = self._last_piece, now if pending else 0.0
        if last:  # a later piece of a frame: did it come at the wire's pace?
            self._paced = now - last >= _PACED * piece * self._byte_time
        elif pending:  # a frame's first piece: when will the rest of it be on the line?
            self._due = now + pending * self._byte_time
        if not pending or not self._paced:
            return  # no frame in progress, or a line not (yet) seen to deliver at the wire's pace
        wait = self._due - now
        transport = self._transport
        if wait < _COALESCE_MIN or self._paused or not isinstance(transport, asyncio.ReadTransport):
            return
        try:
            transport.pause_reading()
        except NotImplementedError:
            self._byte_time = 0.0  # a transport that cannot pause: read every piece
            return
        self._paused = True
        self._resume_timer = self._loop.call_at(self._due + _COALESCE_SLACK, self._resume)

    def _resume(self) -> None:
        paused = self._paused
        self._stop_pause()
        transport = self._transport
        if paused and isinstance(transport, asyncio.ReadTransport) and not transport.is_closing():
            transport.resume_reading()

    def _stop_pause(self) -> None:
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        self._paused = False

    # Internals

    def _take(self, events: list[Event], *, queue: bool = True) -> None:
        for event in events:
            if isinstance(event, Echoed):
                self.stats.echoes += 1
                continue  # the adapter hearing itself decides nothing
            if isinstance(event, Rejected):
                self.stats.rejected[event.reason.value] += 1
                if event.reason in _UNDECISIVE:
                    continue
            elif isinstance(event, Nak):
                self.stats.naks += 1
            if queue:
                self._events.append(event)
        if self._events:
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _release(waiter: asyncio.Future[None]) -> None:
    """An exchange's deadline: wake its waiter (it then finds no event)."""
    if not waiter.done():
        waiter.set_result(None)
