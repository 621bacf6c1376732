"""What the RS-485 line carries, stated once: control bytes, the 255-byte frame, what its CRC covers,
the time a character takes, the shape of an address (docs/protocol.md §1–§3).

Every other module takes these from here: the request encoders, the frame decoder, the block decoder
and encoder, the exchange's timing, and the simulator that plays the meters.
"""

from __future__ import annotations

from . import crc

__all__ = [
    "ACK",
    "ADDRESS_DIGITS",
    "BITS_PER_CHAR",
    "COMMAND_CRC_COVERED",
    "CRC_COVERED",
    "CRC_OFFSET",
    "ETX",
    "FRAME_LEN",
    "NAK",
    "PASSWORD_DIGITS",
    "SOH",
    "STX",
    "TRAILER",
    "TRAILER_OFFSET",
    "char_time",
    "command_crc_ok",
    "command_frame",
    "crc_fault",
    "require_address",
    "require_digits",
    "require_password",
    "seal",
]

SOH = 0x01
"""Starts a command request (password, write, settings read) and the close string."""
STX = 0x02
"""Starts every 255-byte block a meter sends, and the body of a command request."""
ETX = 0x03
"""Ends the body of a command request, and a live-data block's trailer."""
ACK = 0x06
"""A meter's lone answer to an accepted password or write."""
NAK = 0x15
"""Not documented by EKM; IEC 62056-21, which the protocol follows, sends it for a refusal."""

FRAME_LEN = 255
"""Every block a meter sends: STX, 250 bytes of data, then two CRC bytes."""
CRC_OFFSET = 253
"""Where a block's two CRC bytes are."""
CRC_COVERED = slice(1, CRC_OFFSET)
"""The bytes a block's CRC covers: everything after STX, up to the CRC."""
COMMAND_CRC_COVERED = slice(1, -2)
"""The bytes a command request's CRC (its last two bytes) covers: everything after SOH."""
TRAILER = b"!\r\n\x03"
"""``21 0D 0A 03``: the end of every live-data block, at :data:`TRAILER_OFFSET`."""
TRAILER_OFFSET = 249

BITS_PER_CHAR = 10
"""A character on the line at 7E1: start bit, 7 data bits, even parity, stop bit."""

ADDRESS_DIGITS = 12
PASSWORD_DIGITS = 8


def char_time(baud: int) -> float:
    """Seconds one character takes on the line at ``baud`` (9600: 1.0417 ms)."""
    return BITS_PER_CHAR / baud


def crc_fault(frame: bytes) -> str | None:
    """None when the CRC at the end of the 255-byte ``frame`` is that of the bytes it covers; else what
    was received against what was computed."""
    got, want = frame[CRC_OFFSET:], crc.crc16(frame[CRC_COVERED])
    return None if got == want else f"received {got.hex()}, computed {want.hex()}"


def seal(frame: bytes | bytearray) -> bytes:
    """The 255-byte ``frame`` with the CRC of the bytes it covers in its last two bytes."""
    return bytes(frame[:CRC_OFFSET]) + crc.crc16(frame[CRC_COVERED])


def command_frame(command: bytes, body: bytes) -> bytes:
    """``SOH command STX body ETX`` and the CRC of everything after SOH: the password, write and
    settings-read requests."""
    frame = bytes((SOH,)) + command + bytes((STX,)) + body + bytes((ETX,))
    return frame + crc.crc16(frame[COMMAND_CRC_COVERED.start :])


def command_crc_ok(request: bytes) -> bool:
    """Whether a command request's last two bytes are the CRC of what they cover."""
    return crc.crc16(request[COMMAND_CRC_COVERED]) == request[COMMAND_CRC_COVERED.stop :]


def require_digits(value: object, width: int, name: str, *, secret: bool = False) -> str:
    """``value`` as exactly ``width`` ASCII digits, else ``ValueError`` naming ``name`` (and showing
    the value unless it is ``secret``: then only its length)."""
    if not (isinstance(value, str) and len(value) == width and value.isascii() and value.isdigit()):
        if secret:
            got = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
            raise ValueError(f"{name} must be exactly {width} digits; got {got} (not shown: it is a secret)")
        raise ValueError(f"{name} must be exactly {width} digits; got {value!r}")
    return value


def require_address(address: object, name: str = "address") -> str:
    """A meter address: exactly 12 digits (pad a short number with ``str.zfill(12)``)."""
    return require_digits(address, ADDRESS_DIGITS, name)


def require_password(value: object, name: str = "password") -> str:
    """A meter password: exactly 8 digits (a wrong one is not repeated in the error)."""
    return require_digits(value, PASSWORD_DIGITS, name, secret=True)
