"""The EKM CRC-16 (protocol.md §3): CRC-16/MODBUS, sent low byte first, each byte masked to 7 bits.

The register is the plain MODBUS register (init 0xFFFF, reflected poly 0xA001, no final XOR), so a
CRC can be carried across chunks: ``finish(update(update(INIT, a), b)) == crc16(a + b)``.
``fastcrc`` computes it when importable; the pure-Python table gives the same answer without it.
"""

from __future__ import annotations

from collections.abc import Callable

try:
    from fastcrc.crc16 import modbus as _fast_modbus

    HAVE_FASTCRC = True
except ImportError:  # the pure-Python table serves
    HAVE_FASTCRC = False

__all__ = ["HAVE_FASTCRC", "INIT", "crc16", "fast_update", "finish", "py_update", "update"]

INIT = 0xFFFF
"""The MODBUS register before any byte."""


def _table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        r = n
        for _ in range(8):
            r = (r >> 1) ^ 0xA001 if r & 1 else r >> 1
        table.append(r)
    return tuple(table)


_TABLE = _table()


def py_update(register: int, data: bytes | bytearray | memoryview) -> int:
    """Advance a MODBUS CRC register over ``data`` (pure Python)."""
    table = _TABLE
    for b in bytes(data):
        register = (register >> 8) ^ table[(register ^ b) & 0xFF]
    return register


def fast_update(register: int, data: bytes | bytearray | memoryview) -> int:
    """Advance a MODBUS CRC register over ``data`` with ``fastcrc`` (only when ``HAVE_FASTCRC``)."""
    return _fast_modbus(data, initial=register)


update: Callable[[int, bytes | bytearray | memoryview], int] = fast_update if HAVE_FASTCRC else py_update
"""Advance a MODBUS CRC register over ``data`` (``fastcrc`` when importable)."""


def finish(register: int) -> bytes:
    """The two CRC bytes as sent on the wire for a finished register."""
    return bytes((register & 0x7F, (register >> 8) & 0x7F))


def crc16(data: bytes | bytearray | memoryview) -> bytes:
    """The two EKM CRC bytes of ``data``, as sent on the wire."""
    return finish(update(INIT, data))
