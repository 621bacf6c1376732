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
from .exchange import WireStats
from .frames import Echoed, Event, FrameDecoder, Nak, Rejected

__all__ = ["MeterProtocol"]

_UNDECISIVE = frozenset({RejectReason.GARBAGE, RejectReason.ECHO})
"""Rejected bytes that decide no exchange: counted, and waited past (a reply may still come)."""

wire_log = logging.getLogger("ekm_async.wire")


_RX_BUFFER = 65536


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
        on_lost: Callable[[str], None] | None = None,
        capture: Capture | None = None,
    ) -> None:
        """``on_lost(reason)`` is called when the connection ends, from ``connection_lost``; ``capture``
        gets every byte both ways."""
        self.stats = stats
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
        if self._capture is not None:
            self._capture.rx(data)
        if wire_log.isEnabledFor(logging.DEBUG):
            wire_log.debug("rx %s", data.hex(" "))
        self._take(self._decoder.feed(data))

    def connection_lost(self, exc: Exception | None) -> None:
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
        if wire_log.isEnabledFor(logging.DEBUG):
            wire_log.debug("tx %s", redact(request).hex(" "))  # never a password
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
        while not self._events:
            if self._lost is not None:
                raise self._lost
            if loop.time() >= deadline:
                return None
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
        while (wait := min(max(self._last_rx, self._last_tx) + quiet, start + limit) - loop.time()) > 0:
            await asyncio.sleep(wait)
        self._take(self._decoder.flush(), queue=False)
        self.stats.rejected["unexpected"] += len(self._events)
        self._events.clear()

    def abort(self) -> None:
        """Close the connection at once (what :meth:`send` holds for this turn is written first)."""
        if self._transport is not None:
            self._write_held()
            self._transport.abort()

    async def close(self, wait: float) -> None:
        """Close the connection once what was sent reached the wire: what :meth:`send` holds is written,
        the transport sends what it buffers (a serial transport writes from the loop, later) and then
        closes; after ``wait`` seconds it is aborted. The close string sent last is not lost."""
        transport = self._transport
        if transport is None:
            return
        self._write_held()
        transport.close()  # asyncio's transports flush their buffer first, then close
        try:
            async with asyncio.timeout(wait):
                await asyncio.shield(self.closed)
        except TimeoutError:
            transport.abort()

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
