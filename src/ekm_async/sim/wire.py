"""What meters hear: the host's byte stream parsed into requests (sans-I/O, the dual of FrameDecoder).

Recognises every request of protocol.md §2.2: sign-on ``/?`` address [type] ``! CR LF``, the close
string, and ``SOH cmd STX … ETX`` + CRC for password, write and settings read (settings reads in
both the ekmmeters form ``…()`` and EKM's short form). Bytes that are none of these are skipped as
noise; a request that never ends is dropped once it exceeds the longest request.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..commands import CLOSE, SIGN_ON_END, SIGN_ON_START, LiveRead
from ..wire import ADDRESS_DIGITS, ETX, SOH, STX, command_crc_ok

__all__ = ["Request", "RequestKind", "RequestParser"]

_LONGEST = 93  # the LCD and holiday writes
_TYPES = {member.value: member for member in LiveRead}


class RequestKind(enum.Enum):
    SIGN_ON = "sign-on"
    CLOSE = "close"
    PASSWORD = "password"
    WRITE = "write"
    SETTINGS_READ = "settings-read"


_COMMANDS = {b"P1": RequestKind.PASSWORD, b"W1": RequestKind.WRITE, b"R1": RequestKind.SETTINGS_READ}


@dataclass(frozen=True, slots=True)
class Request:
    """One request as a meter hears it."""

    kind: RequestKind
    raw: bytes
    address: str = ""
    """Sign-on: the addressed meter."""
    read: LiveRead | None = None
    """Sign-on: which block (V3, V4 A, V4 B)."""
    register: str = ""
    """Write and settings read: the 4-character register id."""
    data: str = ""
    """Password: the password; write: the data between the parentheses."""
    crc_ok: bool = True


def _parse_command(raw: bytes) -> Request | None:
    """``SOH cmd STX body ETX crc crc`` → a request, or None if malformed."""
    kind = _COMMANDS.get(raw[1:3])
    if kind is None or raw[3] != STX or raw[-3] != ETX or not raw[4:-3].isascii():
        return None
    crc_ok = command_crc_ok(raw)
    body = raw[4:-3].decode("ascii")
    register, rest = ("", body) if kind is RequestKind.PASSWORD else (body[:4], body[4:])
    if kind is RequestKind.SETTINGS_READ and rest == "":
        rest = "()"  # EKM's short form: no parentheses
    if not (rest.startswith("(") and rest.endswith(")")) or (kind is RequestKind.SETTINGS_READ and rest != "()"):
        return None
    return Request(kind, raw, register=register, data=rest[1:-1], crc_ok=crc_ok)


def _parse_sign_on(raw: bytes) -> Request | None:
    body = raw[len(SIGN_ON_START) : -len(SIGN_ON_END)]
    address, suffix = body[:ADDRESS_DIGITS], body[ADDRESS_DIGITS:]
    read = _TYPES.get(suffix)
    if len(address) != ADDRESS_DIGITS or not address.isdigit() or read is None:
        return None
    return Request(RequestKind.SIGN_ON, raw, address=address.decode(), read=read)


class RequestParser:
    """Feed the host's bytes; get back the requests they complete (malformed ones are dropped)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.noise = 0
        """Bytes skipped because they began no request."""

    def feed(self, data: bytes) -> list[Request]:
        self._buffer += data
        out: list[Request] = []
        while self._buffer:
            request, used = self._next()
            if used == 0:
                break
            if request is not None:
                out.append(request)
            del self._buffer[:used]
        return out

    def _next(self) -> tuple[Request | None, int]:
        """The next request and the bytes it used; (None, n) skips n bytes; (None, 0) needs more."""
        buf = self._buffer
        if buf[0] == SOH:
            if buf[: len(CLOSE)] == CLOSE[: len(buf)]:
                return (Request(RequestKind.CLOSE, bytes(CLOSE)), len(CLOSE)) if len(buf) >= len(CLOSE) else (None, 0)
            etx = buf.find(ETX)
            if etx < 0 or len(buf) < etx + 3:
                return (None, 1) if len(buf) > _LONGEST else (None, 0)
            request = _parse_command(bytes(buf[: etx + 3]))
            return (request, etx + 3) if request else self._skip(1)
        if buf[:2] == SIGN_ON_START[: len(buf[:2])]:
            end = buf.find(SIGN_ON_END)
            if end < 0:
                return (None, 1) if len(buf) > _LONGEST else (None, 0)
            request = _parse_sign_on(bytes(buf[: end + len(SIGN_ON_END)]))
            return (request, end + len(SIGN_ON_END)) if request else self._skip(1)
        starts = [i for i in (buf.find(SOH), buf.find(SIGN_ON_START[:1])) if i > 0]
        return self._skip(min(starts) if starts else len(buf))

    def _skip(self, n: int) -> tuple[None, int]:
        self.noise += n
        return None, n
