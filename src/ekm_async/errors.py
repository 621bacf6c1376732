"""Exceptions. Every error about bytes carries those bytes (``raw``)."""

from __future__ import annotations

import enum

__all__ = ["EkmError", "FrameError", "RejectReason"]


class RejectReason(enum.Enum):
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


class EkmError(Exception):
    """Base class of every error raised by ekm-async."""


class FrameError(EkmError):
    """Bytes from a meter that are not a valid block; ``raw`` holds them all."""

    def __init__(self, reason: RejectReason, raw: bytes, detail: str = "") -> None:
        self.reason = reason
        self.raw = bytes(raw)
        self.detail = detail
        text = f"{reason.value}: {detail}" if detail else reason.value
        super().__init__(f"{text} ({len(self.raw)} bytes: {self.raw.hex(' ')})")
