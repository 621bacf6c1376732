"""The EKM CRC (protocol.md §3): known values, fastcrc against the pure table, incremental use."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ekm_async import crc16
from ekm_async.crc import HAVE_FASTCRC, INIT, fast_update, finish, py_update, update


def bitwise(data: bytes) -> bytes:
    """protocol.md §3.1's bitwise statement, independent of the module's table."""
    r = 0xFFFF
    for b in data:
        r ^= b
        for _ in range(8):
            r = (r >> 1) ^ 0xA001 if r & 1 else r >> 1
    return bytes((r & 0x7F, (r >> 8) & 0x7F))


def test_modbus_check_value() -> None:
    assert py_update(INIT, b"123456789") == 0x4B37
    assert update(INIT, b"123456789") == 0x4B37


def test_captured_frame_crc(frame_a: bytes) -> None:
    assert crc16(frame_a[1:253]) == bytes.fromhex("0b0d") == frame_a[253:]


def test_ekm_request_example() -> None:
    # protocol.md §3.3: EKM's own worked example (short settings-read form).
    assert crc16(bytes.fromhex("5231023030313203")) == bytes.fromhex("2e65")


def test_uses_fastcrc_when_installed() -> None:
    assert HAVE_FASTCRC
    assert update is fast_update


@given(st.binary(max_size=600))
def test_crc16_matches_bitwise_statement(data: bytes) -> None:
    assert crc16(data) == bitwise(data)


@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8))
def test_fast_and_pure_agree_at_any_split(data: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(data)) for c in cuts})
    fast = pure = INIT
    start = 0
    for end in [*points, len(data)]:
        fast = fast_update(fast, data[start:end])
        pure = py_update(pure, data[start:end])
        assert fast == pure
        start = end
    assert finish(fast) == finish(pure) == crc16(data)


def test_pure_fallback_without_fastcrc(frame_a: bytes) -> None:
    code = (
        "import sys; sys.modules['fastcrc'] = None; sys.modules['fastcrc.crc16'] = None\n"
        "from ekm_async import crc\n"
        "assert not crc.HAVE_FASTCRC and crc.update is crc.py_update\n"
        f"print(crc.crc16(bytes.fromhex('{frame_a[1:253].hex()}')).hex())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0b0d"


@pytest.mark.parametrize("mask_bit", [7, 15])
def test_crc_bytes_are_seven_bit(mask_bit: int) -> None:
    # Find data whose MODBUS register has the bit set; the sent byte must still be 7-bit.
    data = next(bytes([n]) for n in range(256) if py_update(INIT, bytes([n])) >> mask_bit & 1)
    assert all(b < 0x80 for b in crc16(data))
