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

import functools
import re
from dataclasses import dataclass

from . import crc
from ._enum import TableKey
from .commands import Reply, expected_reply
from .errors import RejectReason
from .wire import ACK as _ACK
from .wire import CRC_COVERED, FRAME_LEN
from .wire import NAK as _NAK
from .wire import STX as _STX

__all__ = ["ACK", "ECHO_MAX", "NAK", "Ack", "Echo", "Echoed", "Event", "Frame", "FrameDecoder", "Nak", "Rejected"]


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
class Echoed:
    """The adapter's exact local echo of what was sent: dropped (it decides nothing)."""

    raw: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """Bytes that are not a valid frame or reply; ``raw`` holds them all."""

    reason: RejectReason
    raw: bytes


Event = Frame | Ack | Nak | Echoed | Rejected
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
_REPLY_STARTS = frozenset({_STX, _ACK, _NAK})
"""The bytes a reply starts with: no request does, so an echo is told apart by its first byte."""
ECHO_MAX = 512
"""The most bytes of echo awaited at once; an echo region holds at most twice as many (noise before it)."""
ECHO_FIRM = 2
"""On a line known to echo: bytes of an echo that, once they match what was sent, fix where it begins; a
later byte that differs is damage (the region keeps its length), not the sign of an echo beginning
further on."""
ECHO_DAMAGE_MAX = 2
"""Before a line is known to echo: bytes of what looks like an echo that may differ from what was sent,
in place, for it to be taken as a damaged echo; one more, and it was garbage that began like one."""
ECHO_NEAR = 4
"""Outside an echo region, until the echo came exact: an ACK or NAK that the request holds is taken for
its echo's where the bytes received right before it are, but for one, the bytes the request holds
before it (noise or a lost byte moved it off its place, and a byte next to it was damaged)."""


class Echo(TableKey):
    """What the decoder expects of the adapter's local echo of what the host sends."""

    AUTO = "auto"
    """An echo is dropped when it comes: the byte a request starts with (``/`` or SOH, never the start
    of a reply) where a reply should start opens it. Once an exact echo came, the line is known to echo
    (as ``ON``). Until then, bytes that open an echo but differ from the request in more than
    :data:`ECHO_DAMAGE_MAX` places were garbage: looked at again after their first byte, so garbage that
    happens to hold SOH never swallows the reply behind it.

    In every mode but ``OFF``, until an echo region of the request's whole length ended, an ACK or NAK
    is taken for a byte of its echo (garbage) where the request holds that byte at that place (counted
    in bytes since it was sent), or right after two bytes that, in what was sent, another byte follows,
    or where the request holds it right after :data:`ECHO_NEAR` bytes that differ from those received
    before it in at most one place: an echo whose first byte was damaged, that was damaged into an ACK
    or NAK or next to one, or that noise moved off its place and that was damaged next to its own ACK
    byte (its region, ended by the damage, was none), gives no acknowledgement. (An STX there still
    opens a frame: a frame's CRC guards it, and an echo cut short may be followed by the reply.) After
    an exact echo, an ACK or NAK is the meter's, whatever the echo's last two bytes were; after a
    damaged echo region of the whole length, it is taken for a byte of the echo only where the echo
    holds it right after the two bytes before it, or after bytes that but for one are those before it
    (the echo's tail, past a region that began too early: noise before an echo whose start was not
    found, a byte inserted)."""
    ON = "on"
    """The adapter always echoes: the first bytes after a request are its echo, whatever they hold."""
    OFF = "off"
    """No echo: bytes are taken as they come."""


class FrameDecoder:
    """Turns a byte stream from meters into events; see the module documentation.

    ``echo`` (an :class:`Echo`, or its value; True and False mean on and off): an echo region is exactly
    as long as what was sent. Its bytes are never a reply — an ACK byte inside it (a password whose CRC
    holds 06) is not an acknowledgement — and an echo that is not exactly what was sent (damaged, cut
    short) is reported as ``Rejected(ECHO, …)``.
    """

    def __init__(self, *, echo: Echo | str | bool = Echo.AUTO, max_garbage: int = FRAME_LEN) -> None:
        if max_garbage < 1:
            raise ValueError(f"max_garbage must be at least 1; got {max_garbage}")
        self._echo_mode = _echo_mode(echo)
        self._max_garbage = max_garbage
        self._awaited: Reply | None = None
        self._sync = _SYNC[None]
        self._frame = bytearray()
        self._crc = crc.INIT
        self._garbage = bytearray()
        self._echo = b""
        """The echo expected of what was sent (empty: none)."""
        self._echo_got = bytearray()
        """The bytes of the echo region so far (its length: how far the region has come)."""
        self._echo_start = 0
        """Where the echo begins in the region (after noise that came first)."""
        self._echo_open = False
        self._echo_bad = False
        self._echo_firm = False
        """The echo's first :data:`ECHO_FIRM` bytes matched where it begins: it begins there."""
        self._echo_misses = 0
        """Bytes of the region that differ from what was sent, in place (``AUTO``)."""
        self._again = b""
        """Bytes taken into an echo region that was none, to be looked at again."""
        self._again_prev = b""
        """The :data:`ECHO_NEAR` bytes received before :attr:`_again`."""
        self._prev = b""
        """The last :data:`ECHO_NEAR` bytes received since :meth:`sent`, before the present :meth:`feed`."""
        self._echoed = b""
        """The echo awaited when the request was sent, until it came exact: an ACK or NAK where it holds
        one, or right after two bytes of it that another byte of it follows, is taken for a byte of the
        echo."""
        self._echo_spill = False
        """A damaged echo region of the whole length ended since :meth:`sent`: only the echo's tail may
        still come (an ACK or NAK where :attr:`_echoed` holds it after the two bytes before it)."""
        self._received = 0
        """Bytes received since :meth:`sent`, before the present :meth:`feed`."""
        self._region_at = 0
        """Where (bytes since :meth:`sent`) the echo region began."""
        self._region_prev = b""
        """The :data:`ECHO_NEAR` bytes received before the echo region began."""
        self._heard = True
        """Bytes were received since the last :meth:`sent`."""
        self.echoes = 0
        """Exact echoes dropped."""

    @property
    def awaited(self) -> Reply | None:
        """The reply awaited (from the last :meth:`sent`), None when anything may come."""
        return self._awaited

    @property
    def echo(self) -> Echo:
        """The echo expected: :attr:`Echo.AUTO` becomes :attr:`Echo.ON` once an echo came."""
        return self._echo_mode

    @property
    def buffered(self) -> bytes:
        """Bytes held: a partial frame, garbage not yet reported, or an echo not yet whole."""
        return bytes(self._frame or self._garbage or self._echo_got)

    @property
    def pending(self) -> int:
        """Bytes that must still come before the frame in progress can be decided (0: no frame begun).

        What a reader may wait for and take in one go: nothing is decided before they are all there
        (unless a byte breaks the frame, and the rest of it is then still on the wire)."""
        return FRAME_LEN - len(self._frame) if self._frame else 0

    @property
    def echo_awaited(self) -> bytes:
        """The echo still expected of what was sent (empty: none)."""
        return self._echo[len(self._echo_got) - self._echo_start :] if self._echo else b""

    def sent(self, data: bytes) -> list[Event]:
        """Note that ``data`` was just sent: a new exchange begins.

        Returns the events for what was held from before (a partial frame is TRUNCATED). An echo coming
        now goes on, and the echo of ``data`` is expected after it.
        """
        if self._echo_open:  # an echo is coming (the close string's): what is sent now is echoed after it
            events = self._flush_held()
            self._echo += data
        else:
            # An echo not yet begun (the close string's, sent in the same write) comes first.
            before = self._echo if not self._heard else b""
            events = self.flush()
            if self._echo_mode is not Echo.OFF:
                expected = before + bytes(data)
                self._echo = expected if len(expected) <= ECHO_MAX else bytes(data)
        self.expect(expected_reply(data))
        self._echoed = self._echo
        self._heard, self._prev, self._received, self._echo_spill = False, b"", 0, False
        return events

    def expect(self, reply: Reply | None) -> None:
        """Await ``reply`` (None: anything) without a new exchange."""
        self._awaited = reply
        known = self._echo and self._echo[0] not in _REPLY_STARTS  # an echo that can be told from a reply
        self._sync = _echo_sync(reply, self._echo[0]) if known else _SYNC[reply]

    def flush(self) -> list[Event]:
        """Report what is held (end of stream, or a timeout) and start clean."""
        events = self._flush_held()
        self._end_echo(events, whole=False)
        self._prev, self._received, self._echoed, self._echo_spill = b"", 0, b"", False
        return events

    def _flush_held(self) -> list[Event]:
        """A partial frame (TRUNCATED) and garbage held."""
        events: list[Event] = []
        if self._frame:
            events.append(Rejected(RejectReason.TRUNCATED, bytes(self._frame)))
            self._frame.clear()
        self._emit_garbage(events)
        return events

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Decode the next bytes received; returns the events they complete, in order."""
        chunk = bytes(data)
        events: list[Event] = []
        if chunk and not self._heard:
            self._heard = True
            if self._echo and self._echo_mode is Echo.ON and not self._frame:
                self._echo_open = True  # the first bytes after a request are its echo, whatever they hold
        self._scan(chunk, self._prev, self._received, events)
        self._prev = (self._prev + chunk)[-ECHO_NEAR:]
        self._received += len(chunk)
        return events

    def _scan(self, chunk: bytes, prev: bytes, at: int, events: list[Event]) -> None:
        """Decode ``chunk`` (``prev``: the :data:`ECHO_NEAR` bytes received before it; ``at``: bytes received since the
        request before it). Bytes an echo region took that were no echo are looked at again before the
        chunk goes on."""
        returns: list[tuple[bytes, bytes, int, int]] = []
        i, n = 0, len(chunk)
        while True:
            if i >= n:
                if not returns:
                    return
                chunk, prev, at, i = returns.pop()
                n = len(chunk)
                continue
            if self._echo_open:
                i = self._feed_echo(chunk, i, events)
                if self._again:  # an echo region that was none: what it took is looked at again first
                    returns.append((chunk, prev, at, i))
                    chunk, prev, at, i = self._again, self._again_prev, self._region_at + 1, 0
                    self._again = b""
                    n = len(chunk)
                continue
            if self._frame:
                i = self._feed_frame(chunk, i, events)
                continue
            found = self._sync.search(chunk, i)
            j = found.start() if found else n
            if j > i:
                self._add_garbage(chunk[i:j], events)
            if j == n:
                i = n
                continue
            self._emit_garbage(events)
            byte = chunk[j]
            before = (prev + chunk[max(0, j - ECHO_NEAR) : j])[-ECHO_NEAR:]
            if self._echo and byte == self._echo[0] and byte not in _REPLY_STARTS:
                self._echo_open = True  # an echo, where a reply should start
                self._region_prev, self._region_at = before, at + j
                i = j
                continue
            if byte != _STX and self._of_echo(byte, before, at + j):
                self._add_garbage(chunk[j : j + 1], events)  # where the request holds it, or continuing it: echo
            elif byte == _STX:
                self._frame.append(byte)
                self._crc = crc.INIT
            else:
                events.append(_SINGLE[byte])
            i = j + 1

    def _of_echo(self, byte: int, before: bytes, at: int) -> bool:
        """Whether ``byte`` (an ACK or NAK ``at`` bytes after the request, after ``before``: the last
        :data:`ECHO_NEAR` bytes received) may be a byte of the request's echo: the request holds it there,
        or the two bytes before it continue it, or the request holds it after bytes that, but for one, are
        those before it. After a damaged echo region of the whole length, only where the echo holds it:
        after the two bytes before it, or after bytes that, but for one, are those before it."""
        echo = self._echoed
        if _near(byte, before, echo):
            return True
        two = before[-2:]
        if self._echo_spill:
            return len(two) == 2 and two + bytes((byte,)) in echo
        return (at < len(echo) and echo[at] == byte) or (len(two) == 2 and two in echo[:-1])

    def _feed_echo(self, chunk: bytes, i: int, events: list[Event]) -> int:
        """Take the next bytes of the echo region; returns where the chunk continues.

        The region ends once it holds as many bytes as were sent, counted from where the echo begins.
        Decided byte by byte, so that the pieces bytes come in change nothing.

        * On a line known to echo (``ON``) the first bytes after a request are its echo: noise before
          it moves its start to where :data:`ECHO_FIRM` bytes of the echo begin, until that many
          matched from the start; an echo that differs from what was sent after that (a byte changed,
          bytes lost) is damaged and taken whole, never searched for a reply.
        * In ``AUTO`` the region was opened by the request's first byte: it is the echo, damaged, if at
          most :data:`ECHO_DAMAGE_MAX` of its bytes differ in place from what was sent, none of them
          into the start of a reply (STX, ACK, NAK). Else it was none: its first byte is garbage and the
          bytes after it are looked at again (a reply, or the echo itself, may be among them).
        """
        echo, got = self._echo, self._echo_got
        take = chunk[i : i + self._echo_start + len(echo) - len(got)]
        at = len(got) - self._echo_start
        auto = self._echo_mode is Echo.AUTO
        if (auto or not self._echo_bad) and take == echo[at : at + len(take)]:  # the common case: as sent
            got += take
            i += len(take)
        elif auto:
            for byte in take:
                got.append(byte)
                i += 1
                if echo[len(got) - 1] == byte:
                    continue
                self._echo_bad = True
                self._echo_misses += 1
                if self._echo_misses > ECHO_DAMAGE_MAX or byte in _REPLY_STARTS:  # no echo: its first byte was garbage
                    self._again, self._again_prev = bytes(got[1:]), (self._region_prev + got[:1])[-ECHO_NEAR:]
                    self._not_echo(got[:1], events)
                    return i
        else:
            for byte in take:
                got.append(byte)
                i += 1
                if not self._echo_bad and echo[len(got) - 1 - self._echo_start] == byte:
                    self._echo_firm = self._echo_firm or len(got) - self._echo_start >= ECHO_FIRM
                    continue
                if self._echo_firm:
                    self._echo_bad = True  # damaged: the region keeps its length
                    continue
                later = next(  # where ECHO_FIRM bytes or more of the echo begin, after noise
                    (
                        p
                        for p in range(self._echo_start + 1, min(len(got) - ECHO_FIRM + 1, ECHO_MAX))
                        if got[p] == echo[0] and echo.startswith(got[p:])
                    ),
                    None,
                )
                if later is not None:  # noise came first: the echo begins here (and needs more bytes)
                    self._echo_start, self._echo_bad, self._echo_firm = later, False, True
                    break
                self._echo_bad = True  # damaged, so far: the region keeps its length
        if not self._echo_bad and len(got) - self._echo_start >= ECHO_FIRM:
            self._echo_firm = True
        if len(got) - self._echo_start >= len(echo):
            self._end_echo(events, whole=True)
        return i

    def _end_echo(self, events: list[Event], *, whole: bool) -> None:
        """The echo region ends (``whole``: all of it came): noise before it is garbage; an exact echo is
        :class:`Echoed`, any other (damaged, cut short) ``Rejected(ECHO)`` — never a reply. After an exact
        one an ACK or NAK is the meter's, even where the two bytes before it (the echo's last two) are
        found earlier in what was sent; after a damaged whole one, only the echo's tail may still come."""
        if not self._echo_got:  # no region (the common case after an exchange): nothing to report
            self._echo = b""
            self._echo_open = False
            self._sync = _SYNC[self._awaited]
            return
        got, start = bytes(self._echo_got), self._echo_start
        if got[:start]:  # noise before the echo: garbage, as any
            self._add_garbage(got[:start], events)
            self._emit_garbage(events)
        if got[start:]:
            if whole and not self._echo_bad:
                events.append(Echoed(got[start:]))
                self.echoes += 1
                self._echoed = b""  # all of the echo came: an ACK or NAK now is no byte of it
                if self._echo_mode is Echo.AUTO:
                    self._echo_mode = Echo.ON  # the line echoes: the next echo is expected, whatever it holds
            else:
                events.append(Rejected(RejectReason.ECHO, got[start:]))  # accounted for: what follows counts
                self._echo_spill = whole  # it may have begun too early: the echo's tail may still come
        self._echo = b""
        self._clear_region()
        self._sync = _SYNC[self._awaited]

    def _not_echo(self, garbage: bytes | bytearray, events: list[Event]) -> None:
        """What opened an echo region was no echo: ``garbage`` is; the echo is still awaited."""
        self._add_garbage(bytes(garbage), events)
        self._clear_region()

    def _clear_region(self) -> None:
        self._echo_got.clear()
        self._echo_start = 0
        self._echo_open = self._echo_bad = self._echo_firm = False
        self._echo_misses = 0

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


def _echo_mode(echo: Echo | str | bool) -> Echo:
    if isinstance(echo, bool):
        return Echo.ON if echo else Echo.OFF
    try:
        return Echo(echo)
    except ValueError:
        raise ValueError(f"echo must be auto, on or off; got {echo!r}") from None


def _near(byte: int, before: bytes, echo: bytes) -> bool:
    """Whether ``echo`` holds ``byte`` right after :data:`ECHO_NEAR` bytes that differ from ``before`` (the
    bytes received before it) in at most one place: a byte of the echo, moved off its place (noise before
    the echo, a byte lost) with a byte next to it damaged."""
    if len(before) < ECHO_NEAR:
        return False
    k = echo.find(byte, ECHO_NEAR)
    while k >= 0:
        if sum(a != b for a, b in zip(before, echo[k - ECHO_NEAR : k], strict=True)) <= 1:
            return True
        k = echo.find(byte, k + 1)
    return False


@functools.cache
def _echo_sync(reply: Reply | None, first: int) -> re.Pattern[bytes]:
    """The bytes that begin something while an echo starting with ``first`` may come."""
    starts = {None: (_STX, _ACK, _NAK), Reply.LIVE: (_STX,), Reply.BLOCK: (_STX,), Reply.ACK: (_ACK, _NAK)}
    return _any_of(*starts.get(reply, ()), first)
