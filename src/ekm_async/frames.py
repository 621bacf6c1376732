"""Incremental frame decoder: bytes in any chunking → :class:`Frame`, :class:`Ack`, :class:`Nak`,
:class:`Rejected` events. No I/O: feed it what arrived, act on what it returns.

What it checks as bytes arrive (protocol.md §3, §4): a frame starts at STX and is exactly 255 bytes;
every byte is 7-bit; the CRC is carried across chunks and compared when the 255th byte arrives. What a
frame holds besides (a trailer, a request type) is :func:`ekm_async.decode`'s to judge, with the evidence
behind each such byte. A rejected frame is reported with all its bytes and
decoding resumes at the next STX after them. Bytes outside a frame are reported as garbage in runs
of at most ``max_garbage`` bytes. Every byte is looked at once: the work is O(bytes received).

Tell it what was just sent (:meth:`FrameDecoder.sent`): it then knows what may come back (an ACK is
garbage while a block is awaited, and the other way round) and, when built with ``echo=True``, it
drops an exact local echo of the sent bytes (RS-485 adapters that hear themselves).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import crc
from .commands import Reply, expected_reply
from .errors import RejectReason
from .wire import ACK as _ACK
from .wire import CRC_COVERED, FRAME_LEN
from .wire import NAK as _NAK
from .wire import STX as _STX

__all__ = ["ACK", "NAK", "Ack", "Event", "Frame", "FrameDecoder", "Nak", "Rejected"]


@dataclass(frozen=True, slots=True)
class Frame:
    """A 255-byte block that passed every check as it arrived (decode it with ``decode``)."""

    raw: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    """A lone ACK (06): password or write accepted."""


@dataclass(frozen=True, slots=True)
class Nak:
    """A NAK (15). EKM does not document it; plain IEC 62056-21 would send it on refusal."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """Bytes that are not a valid frame or reply; ``raw`` holds them all."""

    reason: RejectReason
    raw: bytes


Event = Frame | Ack | Nak | Rejected
ACK = Ack()
NAK = Nak()


def _any_of(*bytes_: int) -> re.Pattern[bytes]:
    return re.compile(b"[" + b"".join(re.escape(bytes((b,))) for b in bytes_) + b"]" if bytes_ else b"(?!)")


# The bytes that begin something, per awaited reply (None: not told, anything may come).
_SYNC: dict[Reply | None, re.Pattern[bytes]] = {
    None: _any_of(_STX, _ACK, _NAK),
    Reply.LIVE: _any_of(_STX),
    Reply.BLOCK: _any_of(_STX),
    Reply.ACK: _any_of(_ACK, _NAK),
    Reply.NONE: _any_of(),
}
_SINGLE: dict[int, Event] = {_ACK: ACK, _NAK: NAK}
_ECHO_MAX = 512


class FrameDecoder:
    """Turns a byte stream from meters into events; see the module documentation."""

    def __init__(self, *, echo: bool = False, max_garbage: int = FRAME_LEN) -> None:
        if max_garbage < 1:
            raise ValueError(f"max_garbage must be at least 1; got {max_garbage}")
        self._echo_enabled = echo
        self._max_garbage = max_garbage
        self._awaited: Reply | None = None
        self._sync = _SYNC[None]
        self._frame = bytearray()
        self._crc = crc.INIT
        self._garbage = bytearray()
        self._echo = b""
        self._echo_pos = 0

    @property
    def awaited(self) -> Reply | None:
        """The reply awaited (from the last :meth:`sent`), None when anything may come."""
        return self._awaited

    @property
    def buffered(self) -> bytes:
        """Bytes held: a partial frame, or garbage not yet reported."""
        return bytes(self._frame or self._garbage)

    def sent(self, data: bytes) -> list[Event]:
        """Note that ``data`` was just sent: a new exchange begins.

        Returns the events for what was held from before (a partial frame is TRUNCATED).
        """
        pending = self._echo[self._echo_pos :]
        events = self.flush()
        self.expect(expected_reply(data))
        if self._echo_enabled:
            # An echo still on its way (the close string's, say) comes first; bounded by _ECHO_MAX.
            self._echo, self._echo_pos = (pending + bytes(data))[-_ECHO_MAX:], 0
        return events

    def expect(self, reply: Reply | None) -> None:
        """Await ``reply`` (None: anything) without a new exchange."""
        self._awaited = reply
        self._sync = _SYNC[reply]

    def flush(self) -> list[Event]:
        """Report what is held (end of stream, or a timeout) and start clean."""
        events: list[Event] = []
        if self._frame:
            events.append(Rejected(RejectReason.TRUNCATED, bytes(self._frame)))
            self._frame.clear()
        self._emit_garbage(events)
        self._echo = b""
        return events

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Decode the next bytes received; returns the events they complete, in order."""
        chunk = bytes(data)
        if self._echo:
            chunk = self._strip_echo(chunk)
        events: list[Event] = []
        i, n = 0, len(chunk)
        while i < n:
            if self._frame:
                i = self._feed_frame(chunk, i, events)
                continue
            found = self._sync.search(chunk, i)
            j = found.start() if found else n
            if j > i:
                self._add_garbage(chunk[i:j], events)
            if j == n:
                break
            self._emit_garbage(events)
            byte = chunk[j]
            if byte == _STX:
                self._frame.append(byte)
                self._crc = crc.INIT
            else:
                events.append(_SINGLE[byte])
            i = j + 1
        return events

    def _strip_echo(self, chunk: bytes) -> bytes:
        """Drop the echo of the sent bytes from the start of the stream; replay it if it is not one."""
        want = self._echo[self._echo_pos :]
        if chunk.startswith(want):
            self._echo = b""
            return chunk[len(want) :]
        if want.startswith(chunk):
            self._echo_pos += len(chunk)
            return b""
        replay = self._echo[: self._echo_pos]  # what was taken for echo in earlier chunks
        self._echo = b""
        return replay + chunk

    def _add_garbage(self, data: bytes, events: list[Event]) -> None:
        self._garbage += data
        limit = self._max_garbage
        while len(self._garbage) >= limit:
            events.append(Rejected(RejectReason.GARBAGE, bytes(self._garbage[:limit])))
            del self._garbage[:limit]

    def _emit_garbage(self, events: list[Event]) -> None:
        if self._garbage:
            events.append(Rejected(RejectReason.GARBAGE, bytes(self._garbage)))
            self._garbage.clear()

    def _reject(self, reason: RejectReason, tail: bytes, events: list[Event]) -> None:
        events.append(Rejected(reason, bytes(self._frame) + tail))
        self._frame.clear()

    def _feed_frame(self, chunk: bytes, i: int, events: list[Event]) -> int:
        """Take the next bytes of the frame in progress; returns where the chunk continues."""
        have = len(self._frame)
        take = chunk[i : i + FRAME_LEN - have]
        high = None if take.isascii() else next(k for k, b in enumerate(take) if b & 0x80)
        end = have + (len(take) if high is None else high)
        if high is not None:
            self._reject(RejectReason.NOT_7BIT, take[: high + 1], events)
            return i + high + 1
        lo, hi = max(have, CRC_COVERED.start), min(end, CRC_COVERED.stop)
        if lo < hi:
            self._crc = crc.update(self._crc, take[lo - have : hi - have])
        self._frame += take
        if end == FRAME_LEN:
            if crc.finish(self._crc) == self._frame[CRC_COVERED.stop :]:
                events.append(Frame(bytes(self._frame)))
                self._frame.clear()
            else:
                self._reject(RejectReason.CRC, b"", events)
        return i + len(take)
