"""Exceptions. Every error about bytes carries those bytes (``raw``)."""

from __future__ import annotations

from ._enum import TableKey

__all__ = [
    "BusClosed",
    "ConnectionLost",
    "EkmError",
    "FrameError",
    "LocalProtocolError",
    "MeterError",
    "MeterUnavailable",
    "Refused",
    "RejectReason",
    "ReplyTimeout",
    "StoreError",
    "UnexpectedReply",
]


class RejectReason(TableKey):
    """Why bytes from a meter were not accepted."""

    GARBAGE = "garbage"
    """Bytes outside any frame (no STX, ACK or NAK where one was expected)."""
    NOT_7BIT = "not-7bit"
    """A byte with bit 7 set inside a frame: the line is 7-bit, so the byte was corrupted."""
    TRAILER = "trailer"
    """A live-data block without ``21 0D 0A 03`` at offsets 249–252."""
    CRC = "crc"
    """The two CRC bytes do not match offsets 1–252."""
    TRUNCATED = "truncated"
    """A frame that stopped before its 255th byte."""
    LENGTH = "length"
    """A whole frame handed to :func:`ekm_async.decode` that is not 255 bytes long."""
    NO_STX = "no-stx"
    """A whole frame that does not start with STX (02)."""
    REQUEST_TYPE = "request-type"
    """A V4 block whose request type (offsets 247–248) is not that of the kind asked for."""
    KIND = "kind"
    """No kind was given and the frame is not recognisably a V4 A or B block."""
    FIELD = "field"
    """A field holds characters its type does not allow (e.g. '?' in a number)."""
    ECHO = "echo"
    """The adapter's local echo of a request, but not exactly the request (damaged, or cut short)."""


class EkmError(Exception):
    """Base class of every error raised by ekm-async. ``brief``: the message without the bytes a meter
    sent (what a person reads; ``str(error)`` and ``.raw`` keep them, for a bug report)."""

    @property
    def brief(self) -> str:
        return str(self)


class FrameError(EkmError):
    """Bytes from a meter that are not a valid block; ``raw`` holds them all."""

    def __init__(self, reason: RejectReason, raw: bytes, detail: str = "") -> None:
        self.reason = reason
        self.raw = bytes(raw)
        self.detail = detail
        text = f"{reason.value}: {detail}" if detail else reason.value
        self._brief = f"{text} ({len(self.raw)} bytes)"
        super().__init__(f"{text} ({len(self.raw)} bytes: {self.raw.hex(' ')})")

    @property
    def brief(self) -> str:
        return self._brief


class MeterError(EkmError):
    """A meter did not answer as it should; ``address`` is the meter's, ``raw`` what came back (if any)."""

    def __init__(self, address: str, message: str, raw: bytes = b"") -> None:
        self.address = address
        self.raw = bytes(raw)
        self._brief = f"meter {address}: {message}" + (f" ({len(self.raw)} bytes came back)" if self.raw else "")
        super().__init__(f"meter {address}: {message}" + (f" ({self.raw.hex(' ')})" if self.raw else ""))

    @property
    def brief(self) -> str:
        return self._brief


class ReplyTimeout(MeterError, TimeoutError):
    """No (valid) reply within the exchange's time."""


class Refused(MeterError):
    """The meter did not acknowledge a password or a write (silence or NAK)."""


class UnexpectedReply(MeterError):
    """A valid block came back, but from another meter or of another kind than asked for."""


class MeterUnavailable(MeterError):
    """The meter failed repeatedly and is backed off until ``until`` (loop time); nothing was sent."""

    def __init__(self, address: str, until: float, failures: int) -> None:
        self.until = until
        self.failures = failures
        super().__init__(address, f"backed off after {failures} failed transactions")


class LocalProtocolError(EkmError):
    """This side was about to break the session rules (e.g. a write without an acknowledged password);
    nothing was sent. ``state`` and ``event``: the session state and the event refused
    (:class:`ekm_async.session.State`, :class:`ekm_async.session.SessionEvent`)."""

    def __init__(self, state: TableKey, event: TableKey) -> None:
        self.state = state
        self.event = event
        super().__init__(f"{event.value} is not allowed in a {state.value} session")


class BusClosed(EkmError):
    """The bus was closed before the request could be served."""


class ConnectionLost(EkmError):
    """The port or gateway went away during an exchange."""


class StoreError(EkmError):
    """Reads a store accepted could not be committed; ``lost`` counts them, ``cause`` says why."""

    def __init__(self, path: str, lost: int, cause: str) -> None:
        self.path = path
        self.lost = lost
        self.cause = cause
        super().__init__(f"{lost} reads could not be committed to {path}: {cause}")
