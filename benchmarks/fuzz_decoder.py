"""Long fuzz run of the frame decoder and of ``decode()`` (issue 8): only events, never an exception.

Three phases, all deterministic for a given ``--seed`` (``random.Random(seed)``):

1. **Stream fuzz.** Sessions of a few dozen operations on a fresh :class:`FrameDecoder` (``echo`` on or
   off, ``max_garbage`` from 1 to 10 000): segments of pure random bytes, 7-bit random bytes, bytes
   dense in STX/ACK/NAK, valid frames of every block kind (from the simulator and from
   :func:`encode` with random fields), bursts of frames, mutated frames (bit flips, byte
   substitutions, insertions, deletions, truncations, duplications, swaps, STX/ACK/NAK injection,
   field edits with the CRC fixed up), lone ACK/NAK, the echo of the last request (whole, partial,
   corrupted), fed in random chunks (1 byte to whole, sometimes empty, as bytes, bytearray or
   memoryview); between segments ``sent()`` with random requests, ``expect()`` and ``flush()``.
   Checked after every call:

   * nothing is raised; ``feed``/``sent``/``flush`` return a list of ``Frame``/``Ack``/``Nak``/``Rejected``;
   * ``len(decoder.buffered) <= max(255, max_garbage)``;
   * ordered conservation: the event bytes (``Frame.raw``, ``Rejected.raw``, 06 for ``Ack``, 15 for
     ``Nak``) are, in order, exactly the bytes fed minus the echo the decoder may drop, and what is
     not yet reported equals ``buffered``. The dropped echo is predicted by a model of the documented
     rule (an exact echo of what ``sent()`` sent, at the start of the stream; a partial match is held
     and dropped on ``sent``/``flush``, a mismatch is replayed), so ``echo=True`` decoders are
     checked too; the totals (fed = events + buffered + dropped echo) are checked as well;
   * every event is well formed: a ``Frame`` is 255 7-bit bytes from STX whose CRC holds (checked
     with ``check_frame`` and with the pure-Python CRC table, independently of ``fastcrc``); a
     ``Rejected`` carries its bytes and a reason the stream decoder may give (GARBAGE ≤
     ``max_garbage`` bytes; TRUNCATED, NOT_7BIT, TRAILER, CRC with the matching shape);
   * every ``Frame`` is decoded as every kind: only ``FrameError`` may come out; a frame this script
     built must decode as its kind; a block that decodes passes the block checks of phase 2;
   * chunking does not matter: a twin decoder fed each segment in one call gives the same events and
     the same ``buffered``;
   * a clean decoder (nothing held, no echo pending) fed an intact frame gives exactly that ``Frame``
     when the awaited reply allows it, and a lone ACK/NAK gives ``Ack``/``Nak`` when awaited.

2. **decode() fuzz.** Arbitrary 255-byte inputs (random, STX + random, 7-bit with a valid CRC), valid
   frames, mutated frames (CRC fixed up or not), other lengths, as bytes/bytearray/memoryview, for
   every kind (and ``None``) and kWh scale (and now and then an invalid kind or scale): only
   ``FrameError`` may come out (``ValueError`` only for an invalid argument); a valid frame decodes as
   its kind; a decoded block has the right class, kind, raw and kWh scale, and every field has its
   declared type (INT → int, FLOAT → float, STR/HEX/PF → str, calculated → int) and the value its
   bytes say; its helpers (``months()``, ``schedules()``, ``seasons()``, ``holidays()``,
   ``meter_datetime``, ``Read.of``) do not raise; ``encode(kind, fields, template=raw)`` gives ``raw``
   back.

3. **Throughput** of the decoder alone (no checks) on random bytes and on back-to-back valid frames.

The report gives bytes fed, frames fed, mutated frames, events by type and reason, bytes/s of the
decoder alone (only the ``feed`` calls are timed), ``decode()`` calls/s, and is written to
``benchmarks/results/fuzz.json`` (one entry per command line). Any invariant failure is printed with
the seed and a minimised reproducer, and the exit status is 1.

``--atheris`` runs a coverage-guided libFuzzer session (atheris, installed apart with
``pip install --target /tmp/atheris atheris``; see ``--atheris-path``) for ``--seconds`` over the same
checks: the fuzz input is read as a program of decoder operations, or as a frame for ``decode()``.
Arguments this script does not know are passed to libFuzzer (a corpus directory, a crash file to
replay); crash inputs are written to the temp directory (``-artifact_prefix``) unless told otherwise.

Run from the project root::

    .venv/bin/python benchmarks/fuzz_decoder.py [--bytes N] [--seconds S] [--seed N] [--decodes N]
    .venv/bin/python benchmarks/fuzz_decoder.py --atheris --seconds 300 [libFuzzer arguments]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ekm_async import BlockKind, FrameDecoder, FrameError, Read, RejectReason, crc, encode
from ekm_async import commands as cmd
from ekm_async.blocks import BLOCK_CLASS, Block, HolidaysBlock, LiveBlock, MonthsBlock, SchedulesBlock, check_frame
from ekm_async.blocks import decode as decode_frame
from ekm_async.commands import Reply, expected_reply
from ekm_async.frames import Ack, Event, Frame, Nak, Rejected
from ekm_async.layouts import LAYOUTS, REQUEST_TYPE_OFFSET, FieldSpec, FieldType, Scale
from ekm_async.model import (
    CTRatio,
    LcdItem,
    MaxDemandPeriod,
    MaxDemandResetInterval,
    MonthDay,
    Period,
    PulseOutputRatio,
    Season,
)
from ekm_async.sim import MeterModel, MeterType
from ekm_async.wire import CRC_OFFSET, FRAME_LEN, STX, TRAILER, TRAILER_OFFSET

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "fuzz.json"
CAPTURED_A = ROOT / "examples" / "captured_v4a.hex"

ACK_BYTE, NAK_BYTE = 0x06, 0x15
ECHO_MAX = 512
"""FrameDecoder keeps at most the last 512 bytes of echo still awaited (frames._ECHO_MAX, documented in sent())."""
KINDS = tuple(BlockKind)
LIVE_KINDS = frozenset({BlockKind.V3, BlockKind.V4A, BlockKind.V4B})
SCALES: tuple[int | None, ...] = (None, 0, 1, 2)
REPLIES: tuple[Reply | None, ...] = (None, *Reply)
MAX_GARBAGES = (1, 2, 3, 7, 16, 64, 128, 254, 255, 255, 255, 255, 256, 300, 1024, 10_000)
STREAM_REASONS = frozenset(
    {RejectReason.GARBAGE, RejectReason.TRUNCATED, RejectReason.NOT_7BIT, RejectReason.TRAILER, RejectReason.CRC}
)
# Bytes that mean something on the wire or to a parser: STX, ETX, ACK, NAK, the trailer, '?', signs, …
SPECIAL = b"\x02\x03\x06\x15!\r\n\x00\x7f\x80\xff? +-_.0159LCx"
SYNCY = b"\x02\x06\x15\x0301!\r\n"
NASTY_7BIT = b"?+-_. \x00\x02\x06\x15\x7fLCaZ"
DIVISOR = {Scale.NONE: 1, Scale.DIV10: 10, Scale.DIV100: 100}
_PF_NAMES = frozenset(f"Power_Factor_Ln_{n}" for n in (1, 2, 3))
_NET_NAMES = frozenset({*(f"Net_Calc_Watts_Ln_{n}" for n in (1, 2, 3)), "Net_Calc_Watts_Tot"})
CALC_NAMES: dict[BlockKind, frozenset[str]] = {
    BlockKind.V3: _PF_NAMES,
    BlockKind.V4A: _PF_NAMES | _NET_NAMES,
    BlockKind.V4B: _PF_NAMES,
}
"""Calculated fields per kind (protocol.md §5.3, §5.4): power factors; V4 A also the net watts."""
ADDRESS = slice(4, 16)
PROGRESS_EVERY = 10.0  # seconds between progress lines on stderr
MINIMISE_SECONDS = 30.0
MAX_FAILURES = 20


class InvariantFailure(Exception):
    """An invariant did not hold; ``invariant`` names it, ``detail`` says how."""

    def __init__(self, invariant: str, detail: str) -> None:
        self.invariant = invariant
        self.detail = detail
        super().__init__(f"{invariant}: {detail}")


def _short(data: bytes | bytearray, limit: int = 96) -> str:
    text = bytes(data[:limit]).hex()
    return f"{text}…(+{len(data) - limit} bytes)" if len(data) > limit else text


# ---------------------------------------------------------------------------------------------------
# Material: valid frames and requests


@dataclass(frozen=True, slots=True)
class KnownFrame:
    """A valid frame this script built, with the arguments it decodes with."""

    kind: BlockKind
    scale: int | None
    raw: bytes


@dataclass(slots=True)
class Pools:
    frames: list[KnownFrame]
    by_raw: dict[bytes, KnownFrame]
    requests: list[bytes]


def _random_value(spec: FieldSpec, kwh_scale: int, rng: random.Random) -> int | float | str:
    """Any value a meter could send in ``spec`` (as ``decode`` returns it), edge values favoured."""
    top = 10**spec.width - 1
    if spec.name == "kWh_Scale":
        return kwh_scale
    if spec.type in (FieldType.INT, FieldType.FLOAT):
        n = rng.choice((0, top, rng.randint(0, top), rng.randint(0, min(top, 999))))
        if spec.type is FieldType.INT:
            return n
        return n / (10**kwh_scale if spec.scale is Scale.KWH else DIVISOR[spec.scale])
    if spec.type is FieldType.HEX:
        return bytes(rng.randrange(128) for _ in range(spec.width)).hex()
    if spec.type is FieldType.PF:
        return f"{rng.choice('LC0 ?')}{rng.randint(0, 999):03d}"
    alphabet = "0123456789?" if spec.name == "Meter_Time" else "0123456789"
    return "".join(rng.choice(alphabet) for _ in range(spec.width))


def _sim_frames(rng: random.Random) -> list[KnownFrame]:
    out: list[KnownFrame] = []
    for n in range(6):
        address = f"{rng.randrange(10**12):012d}" if n else "000300001184"
        for scale in (0, 1, 2):
            meter = MeterModel(address, seed=n, kwh_scale=scale)
            meter.advance(0.0)
            meter.advance(rng.uniform(1, 86_400))
            out += [KnownFrame(k, scale, meter.frame(k)) for k in KINDS if k is not BlockKind.V3]
            out.append(KnownFrame(BlockKind.MONTHS, scale, meter.frame(BlockKind.MONTHS, reverse=True)))
        v3 = MeterModel(address, type=MeterType.V3, seed=n)
        out.append(KnownFrame(BlockKind.V3, None, v3.frame(BlockKind.V3)))
    return out


def build_pools(rng: random.Random, per_kind: int = 60) -> Pools:
    """Valid frames of every kind (simulator, captured, random fields) and a request of every family."""
    frames = _sim_frames(rng)
    if CAPTURED_A.exists():
        frames.append(KnownFrame(BlockKind.V4A, None, bytes.fromhex("".join(CAPTURED_A.read_text().split()))))
    for kind in KINDS:
        for i in range(per_kind):
            scale = i % 3
            fields = {spec.name: _random_value(spec, scale, rng) for spec in LAYOUTS[kind].fields}
            frames.append(KnownFrame(kind, scale, encode(kind, fields, kwh_scale=scale)))
    for f in frames:
        check_frame(f.raw)  # the material itself must be valid
    by_raw = {f.raw: f for f in frames}
    return Pools(frames, by_raw, build_requests(rng))


def build_requests(rng: random.Random) -> list[bytes]:
    addresses = ["000300001184", "999999999999", f"{rng.randrange(10**12):012d}"]
    reqs = [cmd.live_read(a, r) for a in addresses for r in cmd.LiveRead]
    reqs += [cmd.settings_read(p) for p in cmd.SettingsPage]
    reqs += [
        cmd.password("00000000"),
        cmd.relay(1, 1, 10),
        cmd.relay(2, 0),
        cmd.pulse_input_ratio(2, 100),
        cmd.pulse_output_ratio(PulseOutputRatio.RATIO_4),
        cmd.zero_resettable(),
        cmd.max_demand_reset_interval(MaxDemandResetInterval.DAILY),
        cmd.max_demand_period(MaxDemandPeriod.MINUTES_15),
        cmd.max_demand_reset_now(),
        cmd.lcd(list(LcdItem)[:40]),
        cmd.set_time(datetime(2024, 2, 29, 23, 59, 58)),
        cmd.ct_ratio(CTRatio.AMPS_200),
        cmd.schedule(3, [Period(7, 0, 1), Period(17, 30, 2)]),
        cmd.seasons([Season(3, 1, 1), Season(11, 1, 0)]),
        cmd.holidays([MonthDay(1, 1), MonthDay(12, 25)]),
        cmd.weekend_holiday_schedules(1, 2),
        cmd.change_password("12345678"),
        cmd.change_address("000000000001"),
        cmd.CLOSE,
        b"",  # sent(b""): a no-op request (anything may come)
        b"\x02\x06\x15",  # no known request: anything may come
        rng.randbytes(40),
    ]
    return reqs


# ---------------------------------------------------------------------------------------------------
# Mutations


def _fix_crc(b: bytearray) -> None:
    if len(b) == FRAME_LEN:
        b[CRC_OFFSET:] = crc.crc16(b[1:CRC_OFFSET])


def _special(rng: random.Random) -> int:
    return SPECIAL[rng.randrange(len(SPECIAL))] if rng.random() < 0.5 else rng.randrange(256)


def _m_bitflip(b: bytearray, rng: random.Random) -> None:
    b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)


def _m_bit7(b: bytearray, rng: random.Random) -> None:
    b[rng.randrange(len(b))] |= 0x80


def _m_substitute(b: bytearray, rng: random.Random) -> None:
    b[rng.randrange(len(b))] = _special(rng)


def _m_insert(b: bytearray, rng: random.Random) -> None:
    i = rng.randint(0, len(b))
    b[i:i] = bytes(_special(rng) for _ in range(rng.randint(1, 4)))


def _m_delete(b: bytearray, rng: random.Random) -> None:
    i = rng.randrange(len(b))
    del b[i : i + rng.choice((1, 1, 2, 4, 16, 64))]


def _m_truncate(b: bytearray, rng: random.Random) -> None:
    cut = rng.randrange(len(b))
    if rng.random() < 0.8:
        del b[cut:]  # the frame stops early
    else:
        del b[:cut]  # the frame's head was lost


def _m_duplicate(b: bytearray, rng: random.Random) -> None:
    if rng.random() < 0.3:
        b.extend(bytes(b))  # the whole frame twice
        return
    i = rng.randrange(len(b))
    j = min(len(b), i + rng.randint(1, 32))
    b[j:j] = b[i:j]


def _m_inject(b: bytearray, rng: random.Random) -> None:
    byte = rng.choice((STX, ACK_BYTE, NAK_BYTE))
    i = rng.randint(0, len(b))
    if rng.random() < 0.5 and i < len(b):
        b[i] = byte
    else:
        b.insert(i, byte)


def _m_swap(b: bytearray, rng: random.Random) -> None:
    i, j = rng.randrange(len(b)), rng.randrange(len(b))
    b[i], b[j] = b[j], b[i]


def _m_field(b: bytearray, rng: random.Random) -> None:
    """A 7-bit byte inside the frame changed and the CRC made valid again: reaches decode's field checks."""
    if len(b) != FRAME_LEN:
        return
    for _ in range(rng.choice((1, 1, 1, 2, 5))):
        i = rng.randrange(1, CRC_OFFSET)
        b[i] = NASTY_7BIT[rng.randrange(len(NASTY_7BIT))] if rng.random() < 0.7 else rng.randrange(128)
    _fix_crc(b)


def _m_recrc(b: bytearray, rng: random.Random) -> None:
    """The CRC made valid for whatever the frame holds now (all mutators take an ``rng``)."""
    _fix_crc(b)


MUTATIONS: dict[str, Callable[[bytearray, random.Random], None]] = {
    "bitflip": _m_bitflip,
    "bit7": _m_bit7,
    "substitute": _m_substitute,
    "insert": _m_insert,
    "delete": _m_delete,
    "truncate": _m_truncate,
    "duplicate": _m_duplicate,
    "inject": _m_inject,
    "swap": _m_swap,
    "field": _m_field,
    "recrc": _m_recrc,
}
_MUTATION_NAMES = tuple(MUTATIONS)


def mutate(frame: bytes, rng: random.Random, counts: Counter[str]) -> bytes:
    """``frame`` with 1–4 random mutations (counted by name in ``counts``)."""
    b = bytearray(frame)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        if not b:
            break
        name = _MUTATION_NAMES[rng.randrange(len(_MUTATION_NAMES))]
        MUTATIONS[name](b, rng)
        counts[name] += 1
    return bytes(b)


# ---------------------------------------------------------------------------------------------------
# Decoded blocks: types, values, helpers, round trip


def _expected_value(spec: FieldSpec, chunk: bytes, kwh_scale: int) -> tuple[type, int | float | str]:
    if spec.type is FieldType.INT:
        return int, int(chunk)
    if spec.type is FieldType.FLOAT:
        return float, int(chunk) / (10**kwh_scale if spec.scale is Scale.KWH else DIVISOR[spec.scale])
    if spec.type is FieldType.HEX:
        return str, chunk.hex()
    return str, chunk.decode("ascii")


def _check_fields(kind: BlockKind, raw: bytes, kwh_scale: int, fields: Mapping[str, object]) -> None:
    layout = LAYOUTS[kind]
    calc = CALC_NAMES.get(kind, frozenset())
    wire = {spec.name for spec in layout.fields}
    if set(fields) != wire | calc:
        raise InvariantFailure("block-fields", f"{kind.value}: fields {sorted(set(fields) ^ (wire | calc))} differ")
    for spec in layout.fields:
        value = fields[spec.name]
        want_type, want = _expected_value(spec, raw[spec.offset : spec.end], kwh_scale)
        if type(value) is not want_type or value != want:
            raise InvariantFailure(
                "block-field-value",
                f"{kind.value} {spec.name} ({spec.type.value}) = {value!r} ({type(value).__name__}), "
                f"bytes {raw[spec.offset : spec.end]!r} say {want!r}",
            )
    for name in calc:
        if type(fields[name]) is not int:
            raise InvariantFailure("block-field-type", f"{kind.value} {name} = {fields[name]!r} is not an int")


def _check_helpers(block: Block, stats: Counter[str]) -> None:
    if isinstance(block, LiveBlock):
        if block.address != block.raw[ADDRESS].decode("ascii"):
            raise InvariantFailure("block-helper", f"address {block.address!r}")
        when = block.meter_datetime
        if when is not None and not isinstance(when, datetime):
            raise InvariantFailure("block-helper", f"meter_datetime {when!r}")
        stats["meter_datetime_none" if when is None else "meter_datetime_ok"] += 1
        for name in _PF_NAMES:
            pf = block.fields[name]
            if not (isinstance(pf, int) and 0 <= pf <= 200):
                stats["power_factor_outside_0_200"] += 1  # only possible for a Cos_Theta above 1.00
        if block.kind is not BlockKind.V4B:
            read = Read.of(block)
            if read.fields is not block.fields and dict(read.fields) != dict(block.fields):
                raise InvariantFailure("block-helper", "Read.of(a).fields differs from a.fields")
    elif isinstance(block, MonthsBlock):
        if len(block.months()) != 6:
            raise InvariantFailure("block-helper", "months() is not 6 months")
    elif isinstance(block, SchedulesBlock):
        if len(block.schedules()) != 4 or len(block.seasons()) != (4 if block.kind is BlockKind.SCHEDULES else 0):
            raise InvariantFailure("block-helper", "schedules()/seasons() of the wrong size")
    elif isinstance(block, HolidaysBlock) and len(block.holidays()) != 20:
        raise InvariantFailure("block-helper", "holidays() is not 20 dates")


def check_block(
    block: Block, raw: bytes, kind: BlockKind, kwh_scale: int | None, stats: Counter[str], *, roundtrip: bool = True
) -> None:
    """Everything a decoded block must satisfy (see the module documentation, phase 2)."""
    if kind is BlockKind.V4A:
        scale = raw[230] - 0x30
    elif kwh_scale is None:
        scale = 1 if kind is BlockKind.V3 else 0
    else:
        scale = kwh_scale
    if type(block) is not BLOCK_CLASS[kind] or block.kind is not kind:
        raise InvariantFailure("block-class", f"{type(block).__name__} {block.kind} for {kind.value}")
    if block.raw != raw or type(block.raw) is not bytes:
        raise InvariantFailure("block-raw", "block.raw is not the frame decoded")
    if block.kwh_scale != scale:
        raise InvariantFailure("block-scale", f"{kind.value} kwh_scale {block.kwh_scale!r}, expected {scale}")
    _check_fields(kind, raw, scale, block.fields)
    _check_helpers(block, stats)
    if roundtrip:
        wire = {spec.name: block.fields[spec.name] for spec in LAYOUTS[kind].fields}
        again = encode(kind, wire, kwh_scale=scale, template=raw)
        if again != raw:
            diff = [i for i in range(FRAME_LEN) if again[i] != raw[i]]
            raise InvariantFailure("roundtrip", f"encode(decode(raw)) differs at {diff[:16]}")


def _check_pair(a: Block, b: Block) -> None:
    """``Read.of(a, b)``: a merged read of the same meter, ValueError for two meters."""
    if not (isinstance(a, LiveBlock) and isinstance(b, LiveBlock)):
        return
    same = a.raw[ADDRESS] == b.raw[ADDRESS]
    try:
        read = Read.of(a, b)
    except ValueError:
        if same:
            raise
        return
    if not same:
        raise InvariantFailure("read-pair", "Read.of merged blocks of two meters")
    names = {s.name for s in LAYOUTS[BlockKind.V4A].fields} | {s.name for s in LAYOUTS[BlockKind.V4B].fields}
    fields = read.fields
    if set(fields) != names | CALC_NAMES[BlockKind.V4A]:
        raise InvariantFailure("read-pair", "merged read has the wrong field names")
    bad = [n for n, v in fields.items() if type(v) not in (int, float, str)]
    if bad:
        raise InvariantFailure("read-pair", f"merged read fields of other types: {bad}")


# ---------------------------------------------------------------------------------------------------
# Phase 2: decode() fuzz


@dataclass(slots=True)
class DecodeStats:
    calls: int = 0
    seconds: float = 0.0
    inputs: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    ok_by_kind: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    mutations: Counter[str] = field(default_factory=Counter)
    last_a: Block | None = None


def _resolved_kind(raw: bytes, kind: object) -> BlockKind:
    if kind is None:
        return BlockKind.V4A if raw[REQUEST_TYPE_OFFSET : REQUEST_TYPE_OFFSET + 2] == b"00" else BlockKind.V4B
    return BlockKind(kind)


def decode_case(data: bytes | bytearray | memoryview, kind: object, kwh_scale: object, stats: DecodeStats) -> None:
    """One ``decode()`` call and its checks; raises :class:`InvariantFailure`."""
    valid_kind = kind is None or kind in KINDS or kind in {k.value for k in KINDS}
    valid_scale = kwh_scale is None or (type(kwh_scale) is int and kwh_scale in (0, 1, 2))
    raw = bytes(data)
    stats.calls += 1
    t0 = time.perf_counter()
    try:
        block = decode_frame(data, kind, kwh_scale)  # type: ignore[arg-type]
    except FrameError as exc:
        stats.seconds += time.perf_counter() - t0
        stats.outcomes[f"FrameError:{exc.reason.value}"] += 1
        if exc.raw != raw:
            raise InvariantFailure("decode-error-raw", "FrameError.raw is not the input") from exc
        return
    except ValueError as exc:
        stats.seconds += time.perf_counter() - t0
        stats.outcomes["ValueError"] += 1
        if valid_kind and valid_scale:
            raise InvariantFailure("decode-raised", f"ValueError for valid arguments: {exc}") from exc
        return
    except Exception as exc:  # a fuzz harness records whatever escapes
        raise InvariantFailure("decode-raised", f"{type(exc).__name__}: {exc}") from exc
    stats.seconds += time.perf_counter() - t0
    stats.outcomes["ok"] += 1
    resolved = _resolved_kind(raw, kind)
    stats.ok_by_kind[resolved.value] += 1
    _checked(lambda: check_block(block, raw, resolved, kwh_scale if valid_scale else None, stats.notes))  # type: ignore[arg-type]
    if resolved is BlockKind.V4A:
        stats.last_a = block
    elif resolved is BlockKind.V4B and stats.last_a is not None:
        last_a = stats.last_a
        _checked(lambda: _check_pair(last_a, block))


def _checked(check: Callable[[], None]) -> None:
    """Run ``check``; anything but an :class:`InvariantFailure` escaping it is a failure too."""
    try:
        check()
    except InvariantFailure:
        raise
    except Exception as exc:  # a fuzz harness records whatever escapes
        raise InvariantFailure("block-raised", f"{type(exc).__name__}: {exc}") from exc


def _in_random(rng: random.Random, frame: KnownFrame, stats: DecodeStats) -> tuple[bytes, KnownFrame | None]:
    return rng.randbytes(FRAME_LEN), None


def _in_stx_random(rng: random.Random, frame: KnownFrame, stats: DecodeStats) -> tuple[bytes, KnownFrame | None]:
    return b"\x02" + rng.randbytes(FRAME_LEN - 1), None


def _in_7bit_crc(rng: random.Random, frame: KnownFrame, stats: DecodeStats) -> tuple[bytes, KnownFrame | None]:
    b = bytearray(b"\x02" + bytes(rng.randrange(128) for _ in range(FRAME_LEN - 1)))
    _fix_crc(b)
    return bytes(b), None


def _in_valid(rng: random.Random, frame: KnownFrame, stats: DecodeStats) -> tuple[bytes, KnownFrame | None]:
    return frame.raw, frame


def _in_field_crc(rng: random.Random, frame: KnownFrame, stats: DecodeStats) -> tuple[bytes, KnownFrame | None]:
    b = bytearray(frame.raw)
    _m_field(b, rng)
    stats.mutations["field"] += 1
    return bytes(b), None


def _in_mutated(rng: random.Random, frame: KnownFrame, stats: DecodeStats) -> tuple[bytes, KnownFrame | None]:
    mutated = bytearray(mutate(frame.raw, rng, stats.mutations))
    if rng.random() < 0.5:
        _fix_crc(mutated)
    return bytes(mutated), None


def _in_length(rng: random.Random, frame: KnownFrame, stats: DecodeStats) -> tuple[bytes, KnownFrame | None]:
    n = rng.choice((0, 1, 254, 256, 510, rng.randrange(600)))
    return ((frame.raw * 3)[:n] if rng.random() < 0.5 else rng.randbytes(n)), None


DECODE_INPUTS: tuple[
    tuple[str, float, Callable[[random.Random, KnownFrame, DecodeStats], tuple[bytes, KnownFrame | None]]], ...
] = (
    ("random", 0.10, _in_random),
    ("stx+random", 0.15, _in_stx_random),
    ("7bit+crc", 0.25, _in_7bit_crc),
    ("valid", 0.40, _in_valid),
    ("field+crc", 0.70, _in_field_crc),
    ("mutated", 0.95, _in_mutated),
    ("length", 1.00, _in_length),
)
"""decode() inputs: (category, cumulative probability, maker)."""


def _decode_input(rng: random.Random, pools: Pools, stats: DecodeStats) -> tuple[str, bytes, KnownFrame | None]:
    """A random decode() input: (category, bytes, the valid frame it is, if it is one)."""
    r = rng.random()
    frame = pools.frames[rng.randrange(len(pools.frames))]
    category, _, make = next(entry for entry in DECODE_INPUTS if r < entry[1])
    data, known = make(rng, frame, stats)
    return category, data, known


def _decode_args(rng: random.Random) -> Iterator[tuple[object, object]]:
    """(kind, kwh_scale) for one input: every kind and None, as member or string; sometimes invalid."""
    for kind in (None, *KINDS):
        k: object = kind.value if kind is not None and rng.random() < 0.3 else kind
        yield k, SCALES[rng.randrange(4)]
    if rng.random() < 0.05:
        yield rng.choice(("bogus", "V4A", 7, None, BlockKind.MONTHS)), rng.choice((3, -1, "1", None, 0))


def _wrap(data: bytes, rng: random.Random) -> bytes | bytearray | memoryview:
    r = rng.random()
    return data if r < 0.8 else bytearray(data) if r < 0.9 else memoryview(data)


def run_decode_phase(
    rng: random.Random, pools: Pools, calls: int, deadline: float, failures: list[Failure]
) -> DecodeStats:
    stats = DecodeStats()
    next_progress = time.monotonic() + PROGRESS_EVERY
    while stats.calls < calls and time.monotonic() < deadline and len(failures) < MAX_FAILURES:
        category, data, known = _decode_input(rng, pools, stats)
        stats.inputs[category] += 1
        cases = list(_decode_args(rng))
        if known is not None:
            cases.append((known.kind, known.scale))
        for kind, scale in cases:
            ok_before = stats.outcomes["ok"]
            try:
                decode_case(_wrap(data, rng), kind, scale, stats)
                if (
                    known is not None
                    and (kind, scale) == (known.kind, known.scale)
                    and stats.outcomes["ok"] == ok_before
                ):
                    raise InvariantFailure("valid-frame-rejected", f"a valid {known.kind.value} frame did not decode")
            except InvariantFailure as failure:
                failures.append(Failure("decode", failure, decode_repro(data, kind, scale, failure)))
                break
        if time.monotonic() > next_progress:
            next_progress += PROGRESS_EVERY
            print(f"  decode: {stats.calls:,} calls", file=sys.stderr, flush=True)
    return stats


def decode_repro(data: bytes, kind: object, scale: object, failure: InvariantFailure) -> str:
    kind_text = repr(kind.value) if isinstance(kind, BlockKind) else repr(kind)
    return (
        "from ekm_async import decode\n"
        f"raw = bytes.fromhex({data.hex()!r})\n"
        f"block = decode(raw, {kind_text}, {scale!r})  # {failure}\n"
        "print(dict(block.fields))\n"
    )


# ---------------------------------------------------------------------------------------------------
# Phase 1: stream fuzz


@dataclass(frozen=True, slots=True)
class Feed:
    """``feed()`` each chunk (wrapped as ``wrap``); ``clean``: what a clean decoder must make of it."""

    chunks: tuple[bytes, ...]
    wrap: str = "bytes"
    clean: str | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    request: bytes


@dataclass(frozen=True, slots=True)
class Expect:
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class Flush:
    pass


Op = Feed | Sent | Expect | Flush


@dataclass(slots=True)
class StreamStats:
    bytes_fed: int = 0
    feed_calls: int = 0
    feed_seconds: float = 0.0
    sessions: int = 0
    frames_fed: int = 0
    mutated_frames: int = 0
    random_bytes: int = 0
    segments: Counter[str] = field(default_factory=Counter)
    segment_bytes: Counter[str] = field(default_factory=Counter)
    ops: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    mutations: Counter[str] = field(default_factory=Counter)
    frame_events: int = 0
    frame_events_decodable: Counter[str] = field(default_factory=Counter)
    frame_events_known: int = 0
    clean_checks: Counter[str] = field(default_factory=Counter)
    echo_dropped: int = 0
    echo_partial_dropped: int = 0
    notes: Counter[str] = field(default_factory=Counter)


def _wrap_as(chunk: bytes, wrap: str) -> bytes | bytearray | memoryview:
    return bytearray(chunk) if wrap == "bytearray" else memoryview(chunk) if wrap == "memoryview" else chunk


class StreamChecker:
    """One decoder (and its twin, fed whole segments) under test; :meth:`apply` runs and checks an op."""

    def __init__(self, echo: bool, max_garbage: int, pools: Pools, stats: StreamStats) -> None:
        self.echo, self.max_garbage = echo, max_garbage
        self.pools, self.stats = pools, stats
        self.dec = FrameDecoder(echo=echo, max_garbage=max_garbage)
        self.twin = FrameDecoder(echo=echo, max_garbage=max_garbage)
        self.bound = max(FRAME_LEN, max_garbage)
        self.pending = bytearray()  # bytes fed, not echo, not yet reported: must equal buffered
        self.echo_want = b""  # the echo model: what the decoder may still drop …
        self.echo_got = bytearray()  # … and how much of it has arrived (held)
        self.fed = self.reported = self.dropped = 0
        self.awaited: Reply | None = None
        self.expected = False  # expect() was called since the last sent()/flush(): mid-frame, maybe

    # The echo model (module documentation): an exact echo of what was sent, at the start of the stream.
    def _model_feed(self, chunk: bytes) -> None:
        if self.echo_want:
            got = self.echo_got + chunk
            want = self.echo_want
            if got.startswith(want):
                self.dropped += len(want)
                self.stats.echo_dropped += len(want)
                self.echo_want, self.echo_got = b"", bytearray()
                self.pending += got[len(want) :]
            elif want.startswith(got):
                self.echo_got = got
            else:
                self.echo_want, self.echo_got = b"", bytearray()
                self.pending += got
        else:
            self.pending += chunk

    def _model_end_exchange(self, request: bytes | None) -> None:
        """``flush()`` (request None) or ``sent(request)``: held echo is dropped; a new echo is armed."""
        rest = self.echo_want[len(self.echo_got) :]
        self.dropped += len(self.echo_got)
        self.stats.echo_partial_dropped += len(self.echo_got)
        self.echo_got = bytearray()
        self.echo_want = (rest + request)[-ECHO_MAX:] if self.echo and request is not None else b""

    def _call(self, what: str, call: Callable[[], list[Event]]) -> list[Event]:
        try:
            events = call()
        except Exception as exc:  # a fuzz harness records whatever escapes
            raise InvariantFailure("raised", f"{what} raised {type(exc).__name__}: {exc}") from exc
        if type(events) is not list:
            raise InvariantFailure("not-a-list", f"{what} returned {type(events).__name__}")
        return events

    def apply(self, op: Op) -> None:
        self.stats.ops[type(op).__name__] += 1
        if isinstance(op, Feed):
            self._feed(op)
        elif isinstance(op, Sent):
            self._sent(op.request)
        elif isinstance(op, Expect):
            self._expect(op.reply)
        else:
            self._flush()

    def _feed(self, op: Feed) -> None:
        clean = op.clean is not None and not self.pending and not self.echo_want and self.dec.buffered == b""
        events: list[Event] = []
        stats = self.stats
        for chunk in op.chunks:
            arg = _wrap_as(chunk, op.wrap)
            t0 = time.perf_counter()
            try:
                got = self.dec.feed(arg)
            except Exception as exc:  # a fuzz harness records whatever escapes
                raise InvariantFailure("raised", f"feed raised {type(exc).__name__}: {exc}") from exc
            stats.feed_seconds += time.perf_counter() - t0
            stats.feed_calls += 1
            stats.bytes_fed += len(chunk)
            self.fed += len(chunk)
            if type(got) is not list:
                raise InvariantFailure("not-a-list", f"feed returned {type(got).__name__}")
            self._model_feed(chunk)
            self._take(got)
            self._check_held()
            events += got
        whole = b"".join(op.chunks)
        twin = self._call("twin feed", lambda: self.twin.feed(whole))
        if twin != events:
            sizes = [len(c) for c in op.chunks]
            shown = sizes if len(sizes) <= 8 else f"{len(sizes)} chunks of {min(sizes)}–{max(sizes)} bytes"
            raise InvariantFailure("chunking", f"chunks {shown} gave {_brief(events)}, one call {_brief(twin)}")
        if self.twin.buffered != self.dec.buffered:
            raise InvariantFailure("chunking", "twin decoder holds other bytes")
        if clean:
            self._check_clean(op.clean, whole, events)

    def _sent(self, request: bytes) -> None:
        events = self._call("sent", lambda: self.dec.sent(request))
        self._model_end_exchange(request)
        self._take(events)
        self._check_held()
        if self.pending or self.dec.buffered:
            raise InvariantFailure("sent-holds", f"after sent() the decoder holds {_short(self.dec.buffered)}")
        self.awaited, self.expected = expected_reply(request), False
        if self.dec.awaited is not self.awaited:
            raise InvariantFailure("awaited", f"sent({request!r}) awaits {self.dec.awaited}, not {self.awaited}")
        if self._call("twin sent", lambda: self.twin.sent(request)) != events:
            raise InvariantFailure("chunking", "twin decoder's sent() gave other events")

    def _expect(self, reply: Reply | None) -> None:
        try:
            self.dec.expect(reply)
            self.twin.expect(reply)
        except Exception as exc:  # a fuzz harness records whatever escapes
            raise InvariantFailure("raised", f"expect raised {type(exc).__name__}: {exc}") from exc
        self.awaited, self.expected = reply, True
        if self.dec.awaited is not reply:
            raise InvariantFailure("awaited", f"expect({reply}) left awaited = {self.dec.awaited}")

    def _flush(self) -> None:
        events = self._call("flush", self.dec.flush)
        self._model_end_exchange(None)
        self._take(events)
        self._check_held()
        if self.pending or self.dec.buffered:
            raise InvariantFailure("flush-holds", f"after flush() the decoder holds {_short(self.dec.buffered)}")
        if self._call("twin flush", self.twin.flush) != events:
            raise InvariantFailure("chunking", "twin decoder's flush() gave other events")
        self.expected = False

    def _take(self, events: list[Event]) -> None:
        """Check each event and match its bytes against the bytes fed, in order."""
        pending = self.pending
        for event in events:
            raw = self._event_bytes(event)
            if pending[: len(raw)] != raw:
                raise InvariantFailure(
                    "conservation",
                    f"event {_brief([event])} bytes {_short(raw)} are not the next bytes fed {_short(pending)}",
                )
            del pending[: len(raw)]
            self.reported += len(raw)

    def _check_held(self) -> None:
        held = self.dec.buffered
        if type(held) is not bytes or len(held) > self.bound:
            raise InvariantFailure("buffered-bound", f"buffered holds {len(held)} bytes > {self.bound}")
        if held != self.pending:
            raise InvariantFailure(
                "conservation", f"buffered {_short(held)} is not the bytes fed and not reported {_short(self.pending)}"
            )
        if self.fed != self.reported + len(held) + self.dropped + len(self.echo_got):
            raise InvariantFailure(
                "conservation-total",
                f"fed {self.fed} != events {self.reported} + buffered {len(held)} + echo "
                f"{self.dropped} + held echo {len(self.echo_got)}",
            )

    def _event_bytes(self, event: object) -> bytes:
        kind = type(event)
        if kind is Ack:
            self.stats.events["Ack"] += 1
            return b"\x06"
        if kind is Nak:
            self.stats.events["Nak"] += 1
            return b"\x15"
        if kind is Frame:
            assert isinstance(event, Frame)
            self.stats.events["Frame"] += 1
            self._check_frame_event(event.raw)
            return event.raw
        if kind is not Rejected:
            raise InvariantFailure("event-type", f"{event!r} is not an Event")
        assert isinstance(event, Rejected)
        self.stats.events[f"Rejected:{event.reason.value}"] += 1
        self._check_rejected(event.reason, event.raw)
        return event.raw

    def _check_rejected(self, reason: RejectReason, raw: bytes) -> None:
        if type(raw) is not bytes or not raw:
            raise InvariantFailure("rejected-shape", f"Rejected({reason}) raw {raw!r}")
        if reason is RejectReason.GARBAGE:
            if len(raw) > self.max_garbage:
                raise InvariantFailure("rejected-shape", f"GARBAGE of {len(raw)} bytes > max_garbage")
            return
        n = len(raw)
        body_ok = raw[0] == STX and n <= FRAME_LEN and raw[:-1].isascii()
        shape = {
            RejectReason.TRUNCATED: n < FRAME_LEN and raw.isascii(),
            RejectReason.NOT_7BIT: raw[-1] >= 0x80,
            RejectReason.TRAILER: TRAILER_OFFSET < n <= TRAILER_OFFSET + len(TRAILER)
            and raw[-1] != TRAILER[n - 1 - TRAILER_OFFSET]
            # trailer bytes that arrived before an expect(LIVE) were never checked
            and (self.expected or raw[TRAILER_OFFSET : n - 1] == TRAILER[: n - 1 - TRAILER_OFFSET]),
            RejectReason.CRC: n == FRAME_LEN and raw.isascii() and crc.crc16(raw[1:CRC_OFFSET]) != raw[CRC_OFFSET:],
        }.get(reason)
        if shape is None:
            raise InvariantFailure("rejected-reason", f"the stream decoder gave reason {reason}")
        if not (body_ok and shape):
            raise InvariantFailure("rejected-shape", f"Rejected({reason.value}) of {n} bytes: {_short(raw)}")

    def _check_frame_event(self, raw: bytes) -> None:
        stats = self.stats
        stats.frame_events += 1
        if type(raw) is not bytes or len(raw) != FRAME_LEN or raw[0] != STX or not raw.isascii():
            raise InvariantFailure("frame-shape", f"Frame of {len(raw)} bytes: {_short(raw)}")
        if crc.finish(crc.py_update(crc.INIT, raw[1:CRC_OFFSET])) != raw[CRC_OFFSET:]:
            raise InvariantFailure("frame-crc", f"Frame with a bad CRC: {_short(raw)}")
        try:
            check_frame(raw)
        except FrameError as exc:
            raise InvariantFailure("frame-crc", f"check_frame refuses a Frame: {exc.reason.value}") from exc
        decodable: list[str] = []
        dstats = DecodeStats()
        for kind in KINDS:
            decode_case(raw, kind, None, dstats)  # only FrameError may come out; blocks checked
            if dstats.outcomes["ok"] > len(decodable):
                decodable.append(kind.value)
        stats.frame_events_decodable[" ".join(decodable) or "none"] += 1
        stats.notes.update(dstats.notes)
        known = self.pools.by_raw.get(raw)
        if known is not None:
            stats.frame_events_known += 1
            decode_case(raw, known.kind, known.scale, dstats)
            if dstats.outcomes["ok"] <= len(decodable):
                raise InvariantFailure("valid-frame-rejected", f"a valid {known.kind.value} frame did not decode")

    def _check_clean(self, what: str | None, whole: bytes, events: list[Event]) -> None:
        awaited = self.awaited
        if what == "frame":
            known = self.pools.by_raw[whole]
            if awaited in (None, Reply.BLOCK) or (awaited is Reply.LIVE and known.kind in LIVE_KINDS):
                self.stats.clean_checks["frame"] += 1
                if events != [Frame(whole)]:
                    raise InvariantFailure(
                        "clean-frame", f"a valid {known.kind.value} frame (awaiting {awaited}) gave {_brief(events)}"
                    )
            elif awaited is Reply.NONE and any(type(e) is not Rejected for e in events):
                raise InvariantFailure("clean-frame", f"awaiting nothing, a frame gave {_brief(events)}")
        elif what in ("ack", "nak"):
            single: Event = Ack() if what == "ack" else Nak()
            if awaited in (None, Reply.ACK):
                self.stats.clean_checks[what] += 1
                if events != [single]:
                    raise InvariantFailure("clean-ack", f"a lone {what} (awaiting {awaited}) gave {_brief(events)}")
            elif any(type(e) is type(single) for e in events):
                raise InvariantFailure("clean-ack", f"a lone {what} awaiting {awaited} gave {_brief(events)}")


def _brief(events: Sequence[object]) -> str:
    parts = []
    for e in events[:8]:
        if isinstance(e, Rejected):
            parts.append(f"Rejected({e.reason.value}, {len(e.raw)}B)")
        elif isinstance(e, Frame):
            parts.append(f"Frame({len(e.raw)}B)")
        else:
            parts.append(type(e).__name__)
    more = f", … {len(events) - 8} more" if len(events) > 8 else ""
    return "[" + ", ".join(parts) + more + "]"


class StreamFuzzer:
    """Generates sessions of ops (module documentation, phase 1) from one ``random.Random``."""

    SEGMENTS = (
        ("random", 22),
        ("random7", 6),
        ("syncy", 5),
        ("frame", 22),
        ("burst", 6),
        ("mutated", 22),
        ("ack", 3),
        ("nak", 2),
        ("echo", 8),
        ("request", 2),
    )

    def __init__(self, rng: random.Random, pools: Pools, stats: StreamStats) -> None:
        self.rng, self.pools, self.stats = rng, pools, stats
        names, weights = zip(*self.SEGMENTS, strict=True)
        self._names = names
        self._cum = [sum(weights[: i + 1]) for i in range(len(weights))]
        self.last_request = b""

    def config(self) -> tuple[bool, int]:
        rng = self.rng
        return rng.random() < 0.5, MAX_GARBAGES[rng.randrange(len(MAX_GARBAGES))]

    def session(self) -> Iterator[Op]:
        rng = self.rng
        self.last_request = b""
        if rng.random() < 0.7:
            yield self._sent()
            if rng.random() < 0.5:
                yield from self._echo()  # the adapter hears itself (or not, or in part)
        for _ in range(rng.randint(1, 60)):
            yield from self._segment()
            r = rng.random()
            if r < 0.12:
                yield self._sent()
                if rng.random() < 0.5:
                    yield from self._echo()
            elif r < 0.18:
                yield Expect(REPLIES[rng.randrange(len(REPLIES))])
            elif r < 0.24:
                yield Flush()
        if rng.random() < 0.8:
            yield Flush()

    def _sent(self) -> Sent:
        self.last_request = self.pools.requests[self.rng.randrange(len(self.pools.requests))]
        return Sent(self.last_request)

    def _frame(self) -> bytes:
        self.stats.frames_fed += 1
        return self.pools.frames[self.rng.randrange(len(self.pools.frames))].raw

    def _segment(self) -> Iterator[Op]:
        rng = self.rng
        x = rng.random() * self._cum[-1]
        name = self._names[next(i for i, c in enumerate(self._cum) if c > x)]
        if name == "echo":
            yield from self._echo()
            return
        self.stats.segments[name] += 1
        clean: str | None = None
        if name == "random":
            data = rng.randbytes(int(math.exp(rng.uniform(0, math.log(8192)))))
            self.stats.random_bytes += len(data)
        elif name == "random7":
            data = bytes(b & 0x7F for b in rng.randbytes(rng.randint(1, 1024)))
            if rng.random() < 0.5:
                data = b"\x02" + data
        elif name == "syncy":
            data = bytes(SYNCY[rng.randrange(len(SYNCY))] for _ in range(rng.randint(1, 600)))
        elif name == "frame":
            data, clean = self._frame(), "frame"
        elif name == "burst":
            parts = [self._frame() if rng.random() < 0.85 else rng.choice((b"\x06", b"\x15")) for _ in range(8)]
            data = b"".join(parts[: rng.randint(2, 8)])
        elif name == "mutated":
            self.stats.mutated_frames += 1
            data = mutate(self._frame(), rng, self.stats.mutations)
        elif name in ("ack", "nak"):
            data, clean = (b"\x06" if name == "ack" else b"\x15"), name
        else:
            data = self.pools.requests[rng.randrange(len(self.pools.requests))]
        self.stats.segment_bytes[name] += len(data)
        yield self._feed(data, clean)

    def _echo(self) -> Iterator[Op]:
        """The echo of the last request: whole, partial, corrupted; often followed by a reply frame."""
        rng = self.rng
        self.stats.segments["echo"] += 1
        echo = self.last_request or self.pools.requests[0]
        r = rng.random()
        if r < 0.5:
            data = echo
        elif r < 0.75:
            data = echo[: rng.randrange(len(echo) + 1)]
        else:
            b = bytearray(echo)
            if b:
                b[rng.randrange(len(b))] = _special(rng)
            data = bytes(b)
        self.stats.segment_bytes["echo"] += len(data)
        if rng.random() < 0.6:
            reply = self._frame() if rng.random() < 0.8 else b"\x06"
            self.stats.segment_bytes["echo"] += len(reply)
            if rng.random() < 0.5:
                yield self._feed(data + reply, None)
                return
            yield self._feed(data, None)
            yield self._feed(reply, None)
            return
        yield self._feed(data, None)
        r = rng.random()
        if r < 0.25:
            yield Flush()  # a timeout: what was held (part of an echo, say) is given up
        elif r < 0.5:
            yield self._sent()  # the next request while the echo is still on its way

    def _feed(self, data: bytes, clean: str | None) -> Feed:
        rng = self.rng
        r = rng.random()
        if r < 0.3 or not data:
            chunks = [data]
        elif r < 0.4 and len(data) <= 600:
            chunks = [data[i : i + 1] for i in range(len(data))]
        else:
            top = rng.choice((2, 8, 64, 256, 1024))
            chunks, i = [], 0
            while i < len(data):
                n = rng.randint(1, top)
                chunks.append(data[i : i + n])
                i += n
        if rng.random() < 0.05:
            chunks.insert(rng.randint(0, len(chunks)), b"")
        w = rng.random()
        wrap = "bytes" if w < 0.9 else "bytearray" if w < 0.95 else "memoryview"
        return Feed(tuple(chunks), wrap, clean)


@dataclass(slots=True)
class Failure:
    phase: str
    error: InvariantFailure
    reproducer: str


def replay(echo: bool, max_garbage: int, ops: Sequence[Op], pools: Pools) -> InvariantFailure | None:
    """Run ``ops`` on a fresh checker; the first failure, or None."""
    checker = StreamChecker(echo, max_garbage, pools, StreamStats())
    try:
        for op in ops:
            checker.apply(op)
    except InvariantFailure as failure:
        return failure
    return None


def minimise(
    echo: bool, max_garbage: int, ops: list[Op], pools: Pools, *, invariant: str, seconds: float = MINIMISE_SECONDS
) -> list[Op]:
    """Greedy delta debugging: drop ops, merge and drop chunks, shorten chunks, while ``invariant`` fails."""
    deadline = time.monotonic() + seconds

    def fails(candidate: list[Op]) -> bool:
        got = replay(echo, max_garbage, candidate, pools)
        return got is not None and got.invariant == invariant

    step = max(1, len(ops) // 2)
    while step >= 1 and time.monotonic() < deadline:
        i = 0
        while i < len(ops) and time.monotonic() < deadline:
            candidate = ops[:i] + ops[i + step :]
            if candidate and fails(candidate):
                ops = candidate
            else:
                i += step
        step //= 2
    for i in range(len(ops)):
        op = ops[i]
        if not isinstance(op, Feed) or time.monotonic() > deadline:
            continue
        for candidate_op in (
            Feed((b"".join(op.chunks),), "bytes", op.clean),
            Feed(op.chunks, "bytes", op.clean),
            Feed(op.chunks, op.wrap, None),
        ):
            if candidate_op != op and fails([*ops[:i], candidate_op, *ops[i + 1 :]]):
                ops[i] = op = candidate_op
        before, after = ops[:i], ops[i + 1 :]

        def fails_with(candidate: Feed, before: list[Op] = before, after: list[Op] = after) -> bool:
            return fails([*before, candidate, *after])

        ops[i] = _shrink_feed(_coalesce(op, fails_with, deadline), fails_with, deadline)
    return ops


def _coalesce(op: Feed, fails: Callable[[Feed], bool], deadline: float) -> Feed:
    """Merge neighbouring chunks while the failure stays: the fewest ``feed()`` calls that show it."""
    chunks = list(op.chunks)
    i = 0
    while i < len(chunks) - 1 and time.monotonic() < deadline:
        trial = [*chunks[:i], chunks[i] + chunks[i + 1], *chunks[i + 2 :]]
        if fails(Feed(tuple(trial), op.wrap, op.clean)):
            chunks = trial
        else:
            i += 1
    return Feed(tuple(chunks), op.wrap, op.clean)


def _shrink_feed(op: Feed, fails: Callable[[Feed], bool], deadline: float) -> Feed:
    chunks = list(op.chunks)
    for c in range(len(chunks)):
        size = max(1, len(chunks[c]) // 2)
        while size >= 1 and time.monotonic() < deadline:
            j = 0
            while j < len(chunks[c]) and time.monotonic() < deadline:
                trial = [*chunks[:c], chunks[c][:j] + chunks[c][j + size :], *chunks[c + 1 :]]
                candidate = Feed(tuple(trial), op.wrap, op.clean)
                if fails(candidate):
                    chunks = trial
                else:
                    j += size
            size //= 2
    nonempty = Feed(tuple(c for c in chunks if c) or (b"",), op.wrap, op.clean)
    return nonempty if fails(nonempty) else Feed(tuple(chunks), op.wrap, op.clean)


def stream_repro(echo: bool, max_garbage: int, ops: Sequence[Op], failure: InvariantFailure) -> str:
    lines = [
        "from ekm_async import FrameDecoder",
        "from ekm_async.commands import Reply  # noqa: F401",
        f"d = FrameDecoder(echo={echo}, max_garbage={max_garbage})",
    ]
    for op in ops:
        if isinstance(op, Feed):
            for chunk in op.chunks:
                arg = f"bytes.fromhex({chunk.hex()!r})"
                arg = arg if op.wrap == "bytes" else f"{op.wrap}({arg})"
                lines.append(f"print(d.feed({arg}), d.buffered)")
            if len(op.chunks) > 1:
                lines.append(f"# the same bytes in one feed() call: {b''.join(op.chunks).hex()}")
        elif isinstance(op, Sent):
            lines.append(f"print(d.sent({op.request!r}))")
        elif isinstance(op, Expect):
            lines.append(f"d.expect({'None' if op.reply is None else 'Reply.' + op.reply.name})")
        else:
            lines.append("print(d.flush())")
    lines.append(f"# fails: {failure}")
    return "\n".join(lines) + "\n"


def run_stream_phase(
    rng: random.Random, pools: Pools, total_bytes: int, deadline: float, failures: list[Failure]
) -> StreamStats:
    stats = StreamStats()
    fuzzer = StreamFuzzer(rng, pools, stats)
    next_progress = time.monotonic() + PROGRESS_EVERY
    started = time.monotonic()
    minimised: set[str] = set()
    while stats.bytes_fed < total_bytes and time.monotonic() < deadline and len(failures) < MAX_FAILURES:
        echo, max_garbage = fuzzer.config()
        stats.sessions += 1
        checker = StreamChecker(echo, max_garbage, pools, stats)
        ops: list[Op] = []
        try:
            for op in fuzzer.session():
                ops.append(op)
                checker.apply(op)
        except InvariantFailure as failure:
            if failure.invariant not in minimised:
                minimised.add(failure.invariant)
                ops = minimise(echo, max_garbage, ops, pools, invariant=failure.invariant)
                failure = replay(echo, max_garbage, ops, pools) or failure
            failures.append(Failure("stream", failure, stream_repro(echo, max_garbage, ops, failure)))
        now = time.monotonic()
        if now > next_progress:
            next_progress = now + PROGRESS_EVERY
            rate = stats.bytes_fed / max(now - started, 1e-9)
            print(
                f"  stream: {stats.bytes_fed:,} / {total_bytes:,} bytes ({rate / 1e6:.2f} MB/s with checks)",
                file=sys.stderr,
                flush=True,
            )
    return stats


# ---------------------------------------------------------------------------------------------------
# Phase 3: throughput of the decoder alone


def _throughput(stream: bytes, chunk: int, seconds: float, awaited: Reply | None) -> float:
    chunks = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    fed, spent = 0, 0.0
    while spent < seconds:
        decoder = FrameDecoder()
        decoder.expect(awaited)
        t0 = time.perf_counter()
        for c in chunks:
            decoder.feed(c)
        spent += time.perf_counter() - t0
        fed += len(stream)
    return fed / spent


def run_throughput(rng: random.Random, pools: Pools, seconds: float) -> dict[str, float]:
    frames = b"".join(pools.frames[rng.randrange(len(pools.frames))].raw for _ in range(4096))
    noise = rng.randbytes(len(frames))
    return {
        "random_bytes_chunk_4096": _throughput(noise, 4096, seconds, None),
        "random_bytes_chunk_64": _throughput(noise, 64, seconds, None),
        "valid_frames_chunk_4096": _throughput(frames, 4096, seconds, None),
        "valid_frames_chunk_255": _throughput(frames, 255, seconds, Reply.BLOCK),
        "valid_frames_chunk_16": _throughput(frames, 16, seconds, None),
    }


def run_decode_throughput(pools: Pools, seconds: float) -> dict[str, float]:
    """decode() calls/s on valid frames: decode alone, and decode plus every field materialised."""
    out: dict[str, float] = {}
    for label, fields in (("decode_only", False), ("decode_and_fields", True)):
        calls, spent = 0, 0.0
        while spent < seconds:
            t0 = time.perf_counter()
            for f in pools.frames:
                block = decode_frame(f.raw, f.kind, f.scale)
                if fields:
                    dict(block.fields)
            spent += time.perf_counter() - t0
            calls += len(pools.frames)
        out[label] = calls / spent
    return out


# ---------------------------------------------------------------------------------------------------
# atheris (coverage-guided) mode


def atheris_input(data: bytes, pools: Pools, sstats: StreamStats, dstats: DecodeStats, atheris: Any) -> None:
    """Read ``data`` as a program of decoder ops (or a decode() case) and run it with every check."""
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeIntInRange(0, 3) == 0:
        raw = bytearray(fdp.ConsumeBytes(FRAME_LEN))
        if raw and raw[0] & 1:
            base = bytearray(pools.frames[raw[0] % len(pools.frames)].raw)
            for i in range(1, len(raw) - 1, 2):  # (position, byte) pairs over a valid frame
                base[1 + raw[i] % (CRC_OFFSET - 1)] = raw[i + 1] & 0x7F
            _fix_crc(base)
            raw = base
        kind = (None, *KINDS)[fdp.ConsumeIntInRange(0, len(KINDS))]
        decode_case(bytes(raw), kind, SCALES[fdp.ConsumeIntInRange(0, 3)], dstats)
        return
    echo = fdp.ConsumeBool()
    max_garbage = MAX_GARBAGES[fdp.ConsumeIntInRange(0, len(MAX_GARBAGES) - 1)]
    checker = StreamChecker(echo, max_garbage, pools, sstats)
    ops: list[Op] = []
    try:
        while fdp.remaining_bytes() > 0 and len(ops) < 64:
            op = _atheris_op(fdp, pools, ops)
            ops.append(op)
            checker.apply(op)
        ops.append(Flush())
        checker.apply(ops[-1])
    except InvariantFailure as failure:
        print(stream_repro(echo, max_garbage, ops, failure), file=sys.stderr, flush=True)
        raise


def _atheris_op(fdp: Any, pools: Pools, before: list[Op]) -> Op:
    """The next op of an atheris program; ``before``: the ops so far (an echo repeats the last request)."""
    choice = fdp.ConsumeIntInRange(0, 9)
    clean: str | None = None
    if choice <= 2:
        data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600))
    elif choice <= 4:
        b = bytearray(pools.frames[fdp.ConsumeIntInRange(0, len(pools.frames) - 1)].raw)
        if choice == 4:  # mutated: (position, byte) pairs, CRC fixed up or not
            for _ in range(fdp.ConsumeIntInRange(0, 4)):
                b[fdp.ConsumeIntInRange(0, FRAME_LEN - 1)] = fdp.ConsumeIntInRange(0, 255)
            if fdp.ConsumeBool():
                _fix_crc(b)
            cut = fdp.ConsumeIntInRange(0, FRAME_LEN)
            b = b[:cut] if fdp.ConsumeBool() else b
        else:
            clean = "frame"
        data = bytes(b)
    elif choice == 5:
        return Sent(pools.requests[fdp.ConsumeIntInRange(0, len(pools.requests) - 1)])
    elif choice == 6:
        return Expect(REPLIES[fdp.ConsumeIntInRange(0, len(REPLIES) - 1)])
    elif choice == 7:
        return Flush()
    elif choice == 8:  # (part of) the echo of the last request, maybe followed by more bytes
        req = next((op.request for op in reversed(before) if isinstance(op, Sent)), pools.requests[0])
        echo = req if fdp.ConsumeBool() else req[: fdp.ConsumeIntInRange(0, len(req))]
        data = echo + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))
    else:
        byte = fdp.PickValueInList([ACK_BYTE, NAK_BYTE, STX])
        data, clean = bytes([byte]), {ACK_BYTE: "ack", NAK_BYTE: "nak"}.get(byte)
    cuts = sorted(fdp.ConsumeIntInRange(0, len(data)) for _ in range(fdp.ConsumeIntInRange(0, 3)))
    bounds = [0, *cuts, len(data)]
    return Feed(tuple(data[a:b] for a, b in itertools.pairwise(bounds)), "bytes", clean)


def run_atheris(args: argparse.Namespace, extra: list[str]) -> int:
    sys.path.insert(0, args.atheris_path)
    try:
        import atheris  # type: ignore[import-untyped]  # noqa: PLC0415 - optional, installed apart
    except ImportError as exc:
        print(f"atheris is not importable from {args.atheris_path}: {exc}", file=sys.stderr)
        return 2
    pools = build_pools(random.Random(args.seed))
    sstats, dstats = StreamStats(), DecodeStats()
    seconds = args.seconds or 60.0
    started = time.monotonic()
    execs = [0]

    def finish(failure: InvariantFailure | None) -> None:
        elapsed = time.monotonic() - started
        result = {
            "mode": "atheris",
            "atheris_version": _version("atheris"),
            "seconds": round(elapsed, 1),
            "executions": execs[0],
            "executions_per_s": round(execs[0] / elapsed, 1),
            "stream": _stream_json(sstats),
            "decode": _decode_json(dstats),
            "failure": None if failure is None else str(failure),
        }
        _write_result(args, result)
        print(json.dumps(result, indent=2), flush=True)

    def one_input(data: bytes) -> None:
        if time.monotonic() - started > seconds:
            finish(None)
            os._exit(0)  # libFuzzer's own exit skips Python's clean-up; the results are written
        execs[0] += 1
        try:
            atheris_input(data, pools, sstats, dstats, atheris)
        except InvariantFailure as failure:
            finish(failure)
            raise

    if not any(a.startswith("-artifact_prefix=") for a in extra):  # crash inputs go to the temp dir
        extra = [f"-artifact_prefix={tempfile.gettempdir()}/fuzz_decoder-", *extra]
    atheris.instrument_all()
    atheris.Setup([sys.argv[0], f"-max_total_time={int(seconds) + 60}", *extra], one_input)
    atheris.Fuzz()
    return 0


# ---------------------------------------------------------------------------------------------------
# Report


def _rate(n: float, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


def _stream_json(s: StreamStats) -> dict[str, Any]:
    return {
        "bytes_fed": s.bytes_fed,
        "feed_calls": s.feed_calls,
        "feed_seconds": round(s.feed_seconds, 3),
        "decoder_bytes_per_s": _rate(s.bytes_fed, s.feed_seconds),
        "sessions": s.sessions,
        "frames_fed": s.frames_fed,
        "mutated_frames": s.mutated_frames,
        "random_bytes": s.random_bytes,
        "segments": dict(s.segments.most_common()),
        "segment_bytes": dict(s.segment_bytes.most_common()),
        "ops": dict(s.ops.most_common()),
        "mutations": dict(s.mutations.most_common()),
        "events": dict(s.events.most_common()),
        "frame_events": s.frame_events,
        "frame_events_known": s.frame_events_known,
        "frame_events_decodable_as": dict(s.frame_events_decodable.most_common()),
        "clean_checks": dict(s.clean_checks),
        "echo_bytes_dropped": s.echo_dropped,
        "echo_bytes_held_then_dropped": s.echo_partial_dropped,
        "notes": dict(s.notes),
    }


def _decode_json(d: DecodeStats) -> dict[str, Any]:
    return {
        "calls": d.calls,
        "decode_seconds": round(d.seconds, 3),
        "calls_per_s": _rate(d.calls, d.seconds),
        "inputs": dict(d.inputs.most_common()),
        "outcomes": dict(d.outcomes.most_common()),
        "ok_by_kind": dict(d.ok_by_kind.most_common()),
        "mutations": dict(d.mutations.most_common()),
        "notes": dict(d.notes),
    }


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _git_head() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return done.stdout.strip()


def _write_result(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Add ``result`` to the results file under this command line (other runs' entries are kept)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        runs = json.loads(RESULTS.read_text()).get("runs", {})
    except (OSError, ValueError):
        runs = {}
    key = " ".join(["fuzz_decoder.py", *args.argv]) if args.argv else "fuzz_decoder.py (defaults)"
    runs[key] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_head": _git_head(),
        "python": platform.python_version(),
        "fastcrc": crc.HAVE_FASTCRC,
        "seed": args.seed,
        **result,
    }
    RESULTS.write_text(json.dumps({"runs": runs}, indent=2) + "\n")


def _print_report(result: dict[str, Any], failures: list[Failure], seed: int) -> None:
    s, d = result["stream"], result["decode"]
    print(f"seed {seed}; {result['seconds']} s wall")
    print(
        f"stream: {s['bytes_fed']:,} bytes fed in {s['feed_calls']:,} feed() calls over {s['sessions']:,} sessions; "
        f"{s['random_bytes']:,} pure random bytes; {s['frames_fed']:,} valid frames used, "
        f"{s['mutated_frames']:,} of them mutated"
    )
    print(f"  decoder alone (feed calls timed): {s['decoder_bytes_per_s'] / 1e6:.2f} MB/s")
    print(f"  events: {s['events']}")
    print(f"  Frame events: {s['frame_events']:,} ({s['frame_events_known']:,} known-valid); decodable as:")
    print(f"    {s['frame_events_decodable_as']}")
    print(
        f"  clean checks: {s['clean_checks']}; echo dropped {s['echo_bytes_dropped']:,} B, "
        f"held then dropped {s['echo_bytes_held_then_dropped']:,} B"
    )
    print(f"  mutations: {s['mutations']}")
    print(f"decode(): {d['calls']:,} calls, {d['calls_per_s']:,.0f} calls/s (decode calls timed)")
    print(f"  inputs: {d['inputs']}")
    print(f"  outcomes: {d['outcomes']}")
    print(f"  notes: {d['notes']}")
    print(f"throughput, decoder alone: { {k: f'{v / 1e6:.2f} MB/s' for k, v in result['throughput'].items()} }")
    print(f"throughput, decode(): { {k: f'{v:,.0f}/s' for k, v in result['decode_throughput'].items()} }")
    if not failures:
        print("invariants: all held")
        return
    print(f"INVARIANT FAILURES: {len(failures)} (seed {seed})")
    for f in failures:
        print(f"--- {f.phase}: {f.error}")
    shown: set[str] = set()
    for f in failures:
        if f.error.invariant in shown:
            continue
        shown.add(f.error.invariant)
        print(f"--- reproducer ({f.phase}, {f.error.invariant}):")
        print(f.reproducer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--bytes", type=int, default=10_000_000, help="bytes to feed the stream decoder")
    parser.add_argument("--decodes", type=int, default=1_000_000, help="decode() calls in phase 2")
    parser.add_argument("--seconds", type=float, default=None, help="wall-clock limit (atheris: its run time)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--throughput-seconds", type=float, default=1.0, help="per throughput measurement")
    parser.add_argument("--atheris", action="store_true", help="coverage-guided run with atheris for --seconds")
    parser.add_argument("--atheris-path", default="/tmp/atheris", help="where atheris was pip-installed --target")
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.atheris:
        return run_atheris(args, extra)
    if extra:
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    rng = random.Random(args.seed)
    started = time.monotonic()
    limit = math.inf if args.seconds is None else args.seconds
    pools = build_pools(rng)
    failures: list[Failure] = []
    print(f"fuzz_decoder: seed {args.seed}, {args.bytes:,} bytes, {args.decodes:,} decode() calls", file=sys.stderr)
    sstats = run_stream_phase(rng, pools, args.bytes, started + 0.75 * limit, failures)
    dstats = run_decode_phase(rng, pools, args.decodes, started + limit, failures)
    result = {
        "mode": "random",
        "seconds": round(time.monotonic() - started, 1),
        "stream": _stream_json(sstats),
        "decode": _decode_json(dstats),
        "throughput": run_throughput(rng, pools, args.throughput_seconds),
        "decode_throughput": run_decode_throughput(pools, args.throughput_seconds),
        "failures": [{"phase": f.phase, "invariant": f.error.invariant, "detail": f.error.detail} for f in failures],
        "reproducers": {f.error.invariant: f.reproducer for f in reversed(failures)},
    }
    _write_result(args, result)
    _print_report(result, failures, args.seed)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
