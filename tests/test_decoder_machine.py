"""The frame decoder as a hypothesis state machine: whatever arrives, in whatever pieces, between
whatever requests, only well-formed events come out and every byte is accounted for.

An example starts a :class:`FrameDecoder` (``echo`` auto, on or off, any ``max_garbage``) and two twins, then
runs rules in any order: valid frames of every block kind (built with :func:`encode`), damaged frames
(bit flips, high bits, substitutions, insertions, deletions, truncations, lost heads, duplications,
STX/ACK/NAK injected, swaps, a field changed with the CRC made valid again, a CRC byte wrong),
garbage (random, 7-bit, dense in STX/ACK/NAK), lone ACKs and NAKs, requests on the line, each fed in
arbitrary chunks as bytes, bytearray or memoryview; ``sent(request)``, ``expect(reply)`` and
``flush()``; exchanges (``sent(request)``, then its echo, whole, partial or corrupted, with or without a
reply); and ``decode()`` of valid frames and of arbitrary inputs. ``benchmarks/fuzz_long.py`` runs the
same machine for as long as one likes.

Invariants, each stated once (checked after every step that could break it):

1. Nothing raises, and ``feed()``, ``sent()`` and ``flush()`` return lists of Frame, Ack, Nak and
   Rejected.
2. ``buffered`` is bytes, at most ``max(255, max_garbage, 2 × ECHO_MAX)`` of them (an echo region holds
   at most ``ECHO_MAX`` bytes of echo and as many of noise before it).
3. Conservation: the event bytes (``Frame.raw``, ``Echoed.raw``, ``Rejected.raw``, 06 for Ack, 15 for
   Nak) are, in order, exactly the bytes fed, and the bytes fed and not yet reported are
   ``buffered``; in total, bytes fed = event bytes + buffered. An ``Echoed`` is an exact echo of what
   ``sent()`` sent since the last ``flush()``, ending with the last request sent.
4. After ``flush()`` nothing is held; after ``sent()`` nothing but an echo still coming.
5. ``sent(request)`` awaits ``expected_reply(request)``; ``expect(reply)`` awaits ``reply``.
6. Chunking does not matter: twins fed each segment in one call and a byte at a time give the same
   events and hold the same bytes, and their ``sent()`` and ``flush()`` give the same events.
7. A Frame is 255 7-bit bytes from STX whose CRC holds, by the pure-Python CRC table (independently
   of ``fastcrc``) and by ``check_frame``.
8. A Rejected carries its bytes and a reason the stream decoder may give, of its shape: GARBAGE at
   most ``max_garbage`` bytes (noise before an echo too); ECHO an echo region
   (at most what was sent); TRUNCATED, NOT_7BIT and CRC a frame's bytes from its STX, 7-bit up to the
   last, and ending at the fault (TRUNCATED: short of 255, all 7-bit; NOT_7BIT: the last byte has
   bit 7; CRC: 255 bytes whose CRC does not hold). A trailer or request type is ``decode()``'s to
   judge, never the stream decoder's.
9. A clean decoder (nothing held, no echo awaited that would take whatever comes) fed an intact frame
   gives exactly that Frame when the reply awaited allows it (none told, a block, or a live block for
   V3/V4 A/V4 B) and only Rejected when no reply is awaited; fed a lone ACK or NAK it gives that Ack
   or Nak when none or an ACK is awaited, and never otherwise — except where it is taken for a byte of
   the request's echo (docs/wire.md, "Echo"). Before an echo region of the request's whole length
   ended, that is where the request holds that byte at that place (counted in bytes since it was
   sent), where the two bytes received before it are found in the request with another byte after
   them, or where the request holds it right after four bytes that differ from the four received
   before it in at most one place (noise moved the echo, and a byte next to it was damaged), and it is
   then never an Ack or Nak; after a damaged such region, where what was sent holds it right after
   those two bytes, or after such four bytes (the echo's tail); after an exact echo, nowhere.
10. ``decode()`` of anything (every Frame event as every kind; arbitrary 255-byte and other inputs
    with any kind and kWh scale) raises only ``FrameError`` carrying the input as ``raw``, or
    ``ValueError`` for a kind or kWh scale that is not one.
11. A valid frame decodes as its kind with its kWh scale.
12. A decoded block is of its kind's class (flagged, with ``anomalies``, exactly when a constant only a
    guess or ekmmeters' code expects is missing) and kind, holds the frame as ``raw`` (bytes), and its
    ``kwh_scale`` is V4 A's byte 230, else the one told, else 1 for V3 and 0 for the others.
13. Its fields are the layout's and the calculated ones (V3, V4 B: the power factors; V4 A: also the
    net watts); each wire field has its declared type (INT int, FLOAT float, STR/HEX/PF str) and the
    value its bytes say; the calculated ones are ints.
14. Its helpers do not raise and agree: a live block's ``address`` is bytes 4–15, ``meter_datetime``
    a datetime or None, ``Read.of(block).fields`` its fields (V3, V4 A); ``months()`` 6 months;
    ``schedules()`` 4 schedules and ``seasons()`` 4 seasons on page 1, none on page 2;
    ``holidays()`` 20 dates.
15. Round trip: ``encode(kind, its wire fields, kwh_scale=…, template=raw)`` gives ``raw`` back.
16. ``Read.of(a, b)`` of a V4 A and a V4 B block merges them when they are of one meter (fields: A's,
    B's and the calculated ones, each an int, float or str) and raises ``ValueError`` when not.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ekm_async import BlockKind, FrameDecoder, FrameError, Read, RejectReason, crc, decode, encode
from ekm_async import commands as cmd
from ekm_async._plans import divisor
from ekm_async.blocks import BLOCK_CLASS, Block, HolidaysBlock, LiveBlock, MonthsBlock, SchedulesBlock, check_frame
from ekm_async.calculated import Value
from ekm_async.commands import Reply, expected_reply
from ekm_async.frames import ECHO_MAX, Ack, Echo, Echoed, Event, Frame, Nak, Rejected
from ekm_async.layouts import LAYOUTS, REQUEST_TYPE_OFFSET, Evidence, FieldSpec, FieldType
from ekm_async.model import CTRatio, LcdItem, MaxDemandPeriod, MonthDay, Period, PulseOutputRatio, Season
from ekm_async.testing.strategies import LIVE_KINDS
from ekm_async.testing.strategies import labelled_frames as frames
from ekm_async.wire import CRC_OFFSET, FRAME_LEN, STX

ACK_BYTE, NAK_BYTE = 0x06, 0x15
KINDS = tuple(BlockKind)
ADDRESS = slice(4, 16)
KWH_SCALE_AT = next(f.offset for f in LAYOUTS[BlockKind.V4A].fields if f.name == "kWh_Scale")
STREAM_REASONS = frozenset(
    {RejectReason.GARBAGE, RejectReason.TRUNCATED, RejectReason.NOT_7BIT, RejectReason.CRC, RejectReason.ECHO}
)

PHASES = [phase for phase in Phase if phase is not Phase.explain]
"""Without the explain phase: on Python < 3.12 it traces every line of a failing example's replays,
which makes shrinking a failure of this machine take minutes instead of seconds."""
TOTALS: Counter[str] = Counter()
"""What the machine ran since the process started (examples, steps, bytes fed, events, decode calls):
``benchmarks/fuzz_long.py`` reports it."""

# ---------------------------------------------------------------------------------------------------
# Material

REQUESTS = (
    *(cmd.live_read(a, r) for a in ("000300001184", "999999999999", "000000000001") for r in cmd.LiveRead),
    *(cmd.settings_read(page) for page in cmd.SettingsPage),
    cmd.password("00000000"),
    cmd.relay(1, "close", 10),
    cmd.relay(2, "open"),
    cmd.pulse_input_ratio(2, 100),
    cmd.pulse_output_ratio(PulseOutputRatio.RATIO_4),
    cmd.zero_resettable(),
    cmd.max_demand_period(MaxDemandPeriod.MINUTES_15),
    cmd.max_demand_reset_now(),
    cmd.lcd(list(LcdItem)[:40]),
    cmd.set_time(datetime(2024, 2, 29, 23, 59, 58)),
    cmd.ct_ratio(CTRatio.AMPS_200),
    cmd.schedule(3, [Period(7, 0, 1), Period(17, 30, 2)]),
    cmd.seasons([Season(3, 1, 1), Season(11, 1, 2)]),
    cmd.holidays([MonthDay(1, 1), MonthDay(12, 25)]),
    cmd.weekend_holiday_schedules(1, 2),
    cmd.change_password("12345678"),
    cmd.change_address("000000000001"),
    cmd.CLOSE,
    b"",  # sent(b""): no known request, anything may come
    b"\x02\x06\x15",
)
requests = st.one_of(st.sampled_from(REQUESTS), st.binary(max_size=40))

# Bytes that mean something on the wire or to a parser: STX, ETX, ACK, NAK, the trailer, '?', signs, …
SPECIAL = b"\x02\x03\x06\x15!\r\n\x00\x7f\x80\xff? +-_.0159LCx"
byte_values = st.one_of(st.sampled_from(SPECIAL), st.integers(0, 255))

STR_ALPHABET = {"Meter_Time": "0123456789?"}
"""Addresses are digits; the meter time may hold '?' when the meter clock is corrupt."""


def _value(spec: FieldSpec, kwh_scale: int, rng: random.Random) -> Value:
    """Any value a meter could send in ``spec`` (as ``decode`` returns it), edge values favoured."""
    top = 10**spec.width - 1
    n = rng.choice((0, top, rng.randint(0, top), rng.randint(0, min(top, 999))))
    return {
        FieldType.INT: lambda: n,
        FieldType.FLOAT: lambda: n / divisor(spec, kwh_scale),
        FieldType.HEX: lambda: bytes(rng.randrange(128) for _ in range(spec.width)).hex(),
        FieldType.PF: lambda: f"{rng.choice('LC0 ?')}{n % 1000:03d}",
        FieldType.NUMBER: lambda: n + 1,  # a schedule or tariff number: the wire's 0-based digits, counted from 1
        FieldType.CODE: lambda: rng.choice([said for _, said in spec.codes]),
        FieldType.STR: lambda: "".join(
            rng.choice(STR_ALPHABET.get(spec.name, "0123456789")) for _ in range(spec.width)
        ),
    }[spec.type]()


SCALE_FIELD: dict[str, Callable[[FieldSpec, int, random.Random], Value]] = {
    "kWh_Scale": lambda spec, kwh_scale, rng: kwh_scale
}


def seeded_frame(kind: BlockKind, kwh_scale: int, seed: int) -> tuple[BlockKind, int, bytes]:
    """A valid frame of ``kind`` built with :func:`encode` from values a seeded generator draws: far
    cheaper for hypothesis than drawing every field, so the machine runs (and shrinks) many more steps."""
    rng = random.Random(seed)
    fields = {spec.name: SCALE_FIELD.get(spec.name, _value)(spec, kwh_scale, rng) for spec in LAYOUTS[kind].fields}
    return kind, kwh_scale, encode(kind, fields, kwh_scale=kwh_scale)


# (kind, kWh scale, a valid frame): mostly from a seeded generator; a quarter with every field drawn by
# hypothesis (tests/strategies.py), which shrinks to the simplest frame that shows a failure.
valid_frames = st.integers(0, 3).flatmap(
    lambda n: frames() if n == 0 else st.builds(seeded_frame, st.sampled_from(KINDS), st.integers(0, 2), st.integers())
)
cuts = st.lists(st.integers(0, 3000), max_size=8)  # where a segment is cut; a repeated cut: an empty chunk
Wrap = Callable[[bytes], bytes | bytearray | memoryview]
WRAPS: tuple[Wrap, ...] = (bytes, bytearray, memoryview)
wraps = st.sampled_from(WRAPS)


def near(byte: int, got: bytes, echo: bytes) -> bool:
    """Whether ``echo`` holds ``byte`` right after four bytes that differ in at most one place from the
    last four of ``got`` (invariant 9)."""
    tail = got[-4:]
    return len(tail) == 4 and any(
        echo[k] == byte and sum(a != b for a, b in zip(tail, echo[k - 4 : k], strict=True)) <= 1
        for k in range(4, len(echo))
    )


def split(data: bytes, at: list[int]) -> list[bytes]:
    points = sorted(min(c, len(data)) for c in at)
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def fix_crc(b: bytearray) -> None:
    if len(b) == FRAME_LEN:
        b[CRC_OFFSET:] = crc.crc16(b[1:CRC_OFFSET])


def with_crc(data: bytes) -> bytes:
    b = bytearray(data)
    fix_crc(b)
    return bytes(b)


# Damage: (name, where, value) applied to a bytearray that is not empty.
def _flip(b: bytearray, at: int, value: int) -> None:
    b[at % len(b)] ^= 1 << value % 8


def _high_bit(b: bytearray, at: int, value: int) -> None:
    b[at % len(b)] |= 0x80


def _substitute(b: bytearray, at: int, value: int) -> None:
    b[at % len(b)] = value


def _insert(b: bytearray, at: int, value: int) -> None:
    b.insert(at % (len(b) + 1), value)


def _delete(b: bytearray, at: int, value: int) -> None:
    del b[at % len(b) : at % len(b) + 1 + value % 64]


def _truncate(b: bytearray, at: int, value: int) -> None:
    del b[at % len(b) :]


def _lose_head(b: bytearray, at: int, value: int) -> None:
    del b[: at % len(b)]


def _duplicate(b: bytearray, at: int, value: int) -> None:
    i = at % len(b)
    j = min(len(b), i + 1 + value % 32)
    b[j:j] = b[i:j]


def _twice(b: bytearray, at: int, value: int) -> None:
    b.extend(bytes(b))


def _inject(b: bytearray, at: int, value: int) -> None:
    b.insert(at % (len(b) + 1), (STX, ACK_BYTE, NAK_BYTE)[value % 3])


def _swap(b: bytearray, at: int, value: int) -> None:
    i, j = at % len(b), value % len(b)
    b[i], b[j] = b[j], b[i]


def _field(b: bytearray, at: int, value: int) -> None:
    """A 7-bit byte changed and the CRC made valid again: reaches decode()'s field checks."""
    b[at % len(b)] = value & 0x7F
    fix_crc(b)


def _recrc(b: bytearray, at: int, value: int) -> None:
    fix_crc(b)


def _crc_byte(b: bytearray, at: int, value: int) -> None:
    """One CRC byte of a whole frame made wrong (still 7-bit): only the CRC check can catch it."""
    if len(b) == FRAME_LEN:
        i = CRC_OFFSET + at % 2
        b[i] = (b[i] + 1 + value % 127) % 128


DAMAGE: dict[str, Callable[[bytearray, int, int], None]] = {
    "flip": _flip,
    "high-bit": _high_bit,
    "substitute": _substitute,
    "insert": _insert,
    "delete": _delete,
    "truncate": _truncate,
    "lose-head": _lose_head,
    "duplicate": _duplicate,
    "twice": _twice,
    "inject": _inject,
    "swap": _swap,
    "field": _field,
    "recrc": _recrc,
    "crc-byte": _crc_byte,
}
# Where damage goes: anywhere, often where the decoder looks hardest (STX, the kWh scale, the request type,
# the trailer, the CRC).
positions = st.one_of(
    st.integers(0, 2 * FRAME_LEN), st.sampled_from([0, KWH_SCALE_AT, *range(REQUEST_TYPE_OFFSET, FRAME_LEN)])
)
edits = st.lists(st.tuples(st.sampled_from(sorted(DAMAGE)), positions, byte_values), min_size=1, max_size=4)


def damage(frame: bytes, changes: list[tuple[str, int, int]]) -> bytes:
    b = bytearray(frame)
    for name, at, value in changes:
        if b:
            DAMAGE[name](b, at, value)
    return bytes(b)


damaged_frames = st.builds(damage, valid_frames.map(lambda case: case[2]), edits)
seven_bit = st.binary(min_size=FRAME_LEN - 1, max_size=FRAME_LEN - 1).map(lambda b: bytes(x & 0x7F for x in b))
garbage = st.one_of(
    st.binary(min_size=1, max_size=2000),
    st.binary(min_size=1, max_size=1000).map(lambda b: bytes(x & 0x7F for x in b)),
    st.binary(min_size=1, max_size=1000).map(lambda b: b"\x02" + bytes(x & 0x7F for x in b)),
    st.lists(st.sampled_from(b"\x02\x06\x15\x0301!\r\n"), min_size=1, max_size=600).map(bytes),
)
decode_inputs = st.one_of(
    st.binary(min_size=FRAME_LEN, max_size=FRAME_LEN),
    st.binary(min_size=FRAME_LEN - 1, max_size=FRAME_LEN - 1).map(lambda b: b"\x02" + b),
    seven_bit.map(lambda b: with_crc(b"\x02" + b)),
    damaged_frames,
    damaged_frames.map(with_crc),
    st.binary(max_size=600),
)
KIND_ARGUMENTS = (None, *KINDS, *(k.value for k in KINDS))
SCALE_ARGUMENTS = (None, 0, 1, 2)
VALID_KINDS, VALID_SCALES = frozenset(KIND_ARGUMENTS), frozenset(SCALE_ARGUMENTS)
decode_kinds = st.sampled_from([*KIND_ARGUMENTS, "bogus", "V4A", 7])
decode_scales = st.sampled_from([*SCALE_ARGUMENTS, 3, -1, "1"])

# ---------------------------------------------------------------------------------------------------
# Decoded blocks (invariants 10–16)

_PF_NAMES = frozenset(f"Power_Factor_Ln_{n}" for n in (1, 2, 3))
_NET_NAMES = frozenset({*(f"Net_Calc_Watts_Ln_{n}" for n in (1, 2, 3)), "Net_Calc_Watts_Tot"})
CALCULATED_NAMES: dict[BlockKind, frozenset[str]] = {
    BlockKind.V3: _PF_NAMES,
    BlockKind.V4A: _PF_NAMES | _NET_NAMES,
    BlockKind.V4B: _PF_NAMES,
}
"""Calculated fields per kind (protocol.md §5.3, §5.4), stated here apart from the code under test."""
DEFAULT_SCALE = {BlockKind.V3: 1}
FRAME_WHEN_AWAITING: dict[Reply | None, frozenset[BlockKind]] = {
    None: frozenset(KINDS),
    Reply.BLOCK: frozenset(KINDS),
    Reply.LIVE: frozenset(LIVE_KINDS),
}
"""The kinds of frame a clean decoder gives as a Frame, by the reply awaited (invariant 9)."""


WIRE_VALUE: dict[FieldType, Callable[[FieldSpec, bytes, int], object]] = {
    FieldType.INT: lambda spec, chunk, scale: int(chunk),
    FieldType.FLOAT: lambda spec, chunk, scale: int(chunk) / divisor(spec, scale),
    FieldType.HEX: lambda spec, chunk, scale: chunk.hex(),
    FieldType.STR: lambda spec, chunk, scale: chunk.decode("ascii"),
    FieldType.PF: lambda spec, chunk, scale: chunk.decode("ascii"),
    FieldType.NUMBER: lambda spec, chunk, scale: int(chunk) + 1,  # 0-based on the wire, counted from 1
    FieldType.CODE: lambda spec, chunk, scale: dict(spec.codes).get(int(chunk)),  # None: a code no document names
}


def expected_scale(kind: BlockKind, raw: bytes, told: int | None) -> int:
    if kind is BlockKind.V4A:
        return raw[KWH_SCALE_AT] - 0x30
    return DEFAULT_SCALE.get(kind, 0) if told is None else told


def check_fields(kind: BlockKind, raw: bytes, kwh_scale: int, fields: Mapping[str, object]) -> None:
    calculated = CALCULATED_NAMES.get(kind, frozenset())
    wire = {spec.name for spec in LAYOUTS[kind].fields}
    assert set(fields) == wire | calculated, f"{kind.value}: fields {sorted(set(fields) ^ (wire | calculated))}"
    for spec in LAYOUTS[kind].fields:
        chunk = raw[spec.offset : spec.end]
        value, want = fields[spec.name], WIRE_VALUE[spec.type](spec, chunk, kwh_scale)
        assert type(value) is type(want), f"{kind.value} {spec.name} = {value!r}, {chunk!r} says {want!r}"
        assert value == want, f"{kind.value} {spec.name} = {value!r}, {chunk!r} says {want!r}"
    for name in calculated:
        assert type(fields[name]) is int, f"{kind.value} {name} = {fields[name]!r}"


def _live_helpers(block: Any) -> None:
    assert block.address == block.raw[ADDRESS].decode("ascii")
    when = block.meter_datetime
    assert when is None or isinstance(when, datetime), when
    if block.kind is not BlockKind.V4B:
        assert dict(Read.of(block).fields) == dict(block.fields)


def _months_helpers(block: Any) -> None:
    assert len(block.months()) == 6


def _schedules_helpers(block: Any) -> None:
    assert len(block.schedules()) == 4
    assert len(block.seasons()) == (4 if block.kind is BlockKind.SCHEDULES else 0)


def _holidays_helpers(block: Any) -> None:
    assert len(block.holidays()) == 20


HELPERS: dict[type[Block], Callable[[Any], None]] = {
    LiveBlock: _live_helpers,
    MonthsBlock: _months_helpers,
    SchedulesBlock: _schedules_helpers,
    HolidaysBlock: _holidays_helpers,
}


def check_block(block: Block, raw: bytes, kind: BlockKind, told: int | None) -> None:
    assert isinstance(block, BLOCK_CLASS[kind]), f"a {type(block).__name__} for {kind}"
    assert type(block).__name__ == BLOCK_CLASS[kind].__name__
    missing = [c for c in LAYOUTS[kind].constants if raw[c.offset : c.end] != c.value]
    assert bool(block.anomalies) == bool(missing), f"anomalies {block.anomalies} for missing {missing}"
    assert all(c.evidence is not Evidence.CAPTURED for c in missing), "a captured constant missing, not rejected"
    assert block.kind is kind, f"a {block.kind} block for {kind}"
    assert type(block.raw) is bytes, f"block.raw is a {type(block.raw).__name__}"
    assert block.raw == raw, "block.raw is not the frame decoded"
    scale = expected_scale(kind, raw, told)
    assert block.kwh_scale == scale, f"{kind.value}: kwh_scale {block.kwh_scale}, expected {scale}"
    check_fields(kind, raw, scale, block.fields)
    HELPERS[BLOCK_CLASS[kind]](block)
    wire = {spec.name: block.fields[spec.name] for spec in LAYOUTS[kind].fields}
    again = encode(kind, wire, kwh_scale=scale, template=raw)
    assert again == raw, f"encode(decode(raw)) differs at {[i for i in range(FRAME_LEN) if again[i] != raw[i]][:16]}"


def check_pair(a: Block, b: Block) -> None:
    assert isinstance(a, LiveBlock)
    assert isinstance(b, LiveBlock)
    same = a.raw[ADDRESS] == b.raw[ADDRESS]
    try:
        read = Read.of(a, b)
    except ValueError:
        assert not same, "Read.of refused the A and B blocks of one meter"
        return
    assert same, "Read.of merged the blocks of two meters"
    names = {s.name for s in LAYOUTS[BlockKind.V4A].fields} | {s.name for s in LAYOUTS[BlockKind.V4B].fields}
    assert set(read.fields) == names | CALCULATED_NAMES[BlockKind.V4A]
    assert all(type(v) in (int, float, str) for v in read.fields.values())


# ---------------------------------------------------------------------------------------------------
# The machine


class DecoderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.last_a: Block | None = None
        self.known: dict[bytes, tuple[BlockKind, int]] = {}
        self.reset(echo=Echo.OFF, max_garbage=FRAME_LEN)

    @initialize(
        echo=st.sampled_from(list(Echo)),
        max_garbage=st.one_of(st.sampled_from([1, 254, 255, 256]), st.integers(1, 10_000)),
    )
    def start(self, echo: Echo, max_garbage: int) -> None:
        TOTALS["examples"] += 1
        self.reset(echo, max_garbage)

    def reset(self, echo: Echo, max_garbage: int) -> None:
        self.echo, self.max_garbage = echo, max_garbage
        self.dec = FrameDecoder(echo=echo, max_garbage=max_garbage)
        self.twins = {name: FrameDecoder(echo=echo, max_garbage=max_garbage) for name in TWIN_CHUNKS}
        self.pending = bytearray()  # bytes fed, not yet reported: must equal buffered
        self.sent_since_flush = b""  # what an Echoed may be an echo of
        self.last_sent = b""
        self.since_sent = bytearray()  # bytes fed since the last sent() (none after flush())
        self.echo_came: type | None = None  # since the last sent(): Echoed, or Rejected (a damaged echo)
        self.fed = self.reported = 0

    # -- rules: what arrives ------------------------------------------------------------------------

    @rule(case=valid_frames, at=cuts, wrap=wraps)
    def valid_frame(self, case: tuple[BlockKind, int, bytes], at: list[int], wrap: Wrap) -> None:
        TOTALS["steps"] += 1
        kind, scale, raw = case
        self.known[raw] = (kind, scale)
        clean = self.clean
        events = self.feed(raw, at, wrap)
        if clean and kind in FRAME_WHEN_AWAITING.get(self.dec.awaited, ()):
            assert events == [Frame(raw)], f"a valid {kind.value} frame, awaiting {self.dec.awaited}: {brief(events)}"
        if clean and self.dec.awaited is Reply.NONE:
            assert all(type(e) is Rejected for e in events), f"nothing awaited, a frame gave {brief(events)}"

    @rule(data=damaged_frames, at=cuts, wrap=wraps)
    def damaged_frame(self, data: bytes, at: list[int], wrap: Wrap) -> None:
        TOTALS["steps"] += 1
        self.feed(data, at, wrap)

    @rule(data=garbage, at=cuts, wrap=wraps)
    def garbage(self, data: bytes, at: list[int], wrap: Wrap) -> None:
        TOTALS["steps"] += 1
        self.feed(data, at, wrap)

    @rule(byte=st.sampled_from([ACK_BYTE, NAK_BYTE]))
    def lone_ack_or_nak(self, byte: int) -> None:
        TOTALS["steps"] += 1
        clean, of_echo = self.clean, self.may_be_echo(byte)
        events = self.feed(bytes([byte]), [], bytes)
        single = {ACK_BYTE: Ack, NAK_BYTE: Nak}[byte]
        said = f"a lone {single.__name__}, awaiting {self.dec.awaited}{', maybe of the echo' * of_echo}"
        if clean and self.dec.awaited in (None, Reply.ACK) and not of_echo:
            assert events == [single()], f"{said}: {brief(events)}"
        if clean and (self.dec.awaited not in (None, Reply.ACK) or (of_echo and self.echo_came is None)):
            assert single() not in events, f"{said}: {brief(events)}"

    @rule(request=requests, at=cuts, wrap=wraps)
    def request_on_the_line(self, request: bytes, at: list[int], wrap: Wrap) -> None:
        TOTALS["steps"] += 1
        self.feed(request, at, wrap)

    @rule(
        request=requests,
        how=st.sampled_from(["whole", "part", "corrupt"]),
        where=st.integers(0, 600),
        value=byte_values,
        reply=st.one_of(st.none(), st.just(b"\x06"), valid_frames.map(lambda case: case[2])),
        together=st.booleans(),
        at=cuts,
        wrap=wraps,
    )
    def exchange(
        self,
        *,
        request: bytes,
        how: str,
        where: int,
        value: int,
        reply: bytes | None,
        together: bool,
        at: list[int],
        wrap: Wrap,
    ) -> None:
        """``sent(request)``; the adapter hears the request (whole, in part, corrupted), then maybe a reply."""
        TOTALS["steps"] += 1
        self.send(request)
        echo = {
            "whole": request,
            "part": request[: where % (len(request) + 1)],
            "corrupt": damage(request, [("substitute", where, value)]),
        }[how]
        pieces = [echo + (reply or b"")] if together else [echo, reply or b""]
        for piece in pieces:
            self.feed(piece, at, wrap)

    # -- rules: what the host does ------------------------------------------------------------------

    @rule(request=requests)
    def sent(self, request: bytes) -> None:
        TOTALS["steps"] += 1
        self.send(request)

    def send(self, request: bytes) -> None:
        events = self.dec.sent(request)
        self.end_exchange(request)
        self.take(events)
        self.check_held()
        held = self.dec.buffered
        assert held == b"" or self.dec.echo_awaited, f"after sent() it holds {held!r}, and no echo is coming"
        assert self.dec.awaited is expected_reply(request), f"sent({request!r}) awaits {self.dec.awaited}"
        for name, twin in self.twins.items():
            assert twin.sent(request) == events, f"the twin fed {name}: sent() gave other events"

    @rule(reply=st.sampled_from([None, *Reply]))
    def expect(self, reply: Reply | None) -> None:
        TOTALS["steps"] += 1
        for decoder in (self.dec, *self.twins.values()):
            decoder.expect(reply)
        assert self.dec.awaited is reply, f"expect({reply}) left awaited = {self.dec.awaited}"

    @rule()
    def flush(self) -> None:
        TOTALS["steps"] += 1
        events = self.dec.flush()
        self.take(events)
        self.end_exchange(None)
        self.check_held()
        assert self.dec.buffered == b"", f"after flush() it holds {self.dec.buffered!r}"
        for name, twin in self.twins.items():
            assert twin.flush() == events, f"the twin fed {name}: flush() gave other events"

    # -- rules: decode() ----------------------------------------------------------------------------

    @rule(case=valid_frames, wrap=wraps)
    def decode_valid(self, case: tuple[BlockKind, int, bytes], wrap: Wrap) -> None:
        TOTALS["steps"] += 1
        kind, scale, raw = case
        assert self.decode(wrap(raw), kind, scale) is not None, f"a valid {kind.value} frame did not decode"

    @rule(data=decode_inputs, kind=decode_kinds, scale=decode_scales, wrap=wraps)
    def decode_anything(self, data: bytes, kind: object, scale: object, wrap: Wrap) -> None:
        TOTALS["steps"] += 1
        self.decode(wrap(data), kind, scale)

    # -- checks -------------------------------------------------------------------------------------

    @invariant()
    def held(self) -> None:
        self.check_held()

    @property
    def clean(self) -> bool:
        """Nothing held, and no echo awaited that would take whatever comes (on a line known to echo)."""
        return (
            not self.pending and self.dec.buffered == b"" and not (self.dec.echo is Echo.ON and self.dec.echo_awaited)
        )

    def may_be_echo(self, byte: int) -> bool:
        """Whether ``byte`` (an ACK or NAK), fed to a clean decoder now, may be taken for a byte of the
        request's echo (invariant 9)."""
        got = bytes(self.since_sent)
        if self.echo_came is Echoed:
            return False
        if self.echo_came is Rejected:  # a damaged echo region of the whole length: its tail may come
            # The echo awaited ends what was sent since the last flush(): a superset, so only exempts.
            sent = self.sent_since_flush
            return (len(got) >= 2 and got[-2:] + bytes([byte]) in sent) or near(byte, got, sent)
        # Clean, no echo region open: what the decoder awaits is the whole echo awaited since the request.
        echo = self.dec.echo_awaited
        return (
            echo[len(got) : len(got) + 1] == bytes([byte])
            or (len(got) >= 2 and got[-2:] in echo[:-1])
            or near(byte, got, echo)
        )

    def feed(self, data: bytes, at: list[int], wrap: Wrap) -> list[Event]:
        """``data`` fed in the chunks ``at`` cuts it into, checked; the twins take it in one call and a byte
        at a time."""
        events: list[Event] = []
        for chunk in split(data, at):
            got = self.dec.feed(wrap(chunk))
            assert type(got) is list, f"feed() returned {type(got).__name__}"
            self.fed += len(chunk)
            TOTALS["bytes"] += len(chunk)
            self.pending += chunk
            self.since_sent += chunk
            self.take(got)
            for event in got:
                if isinstance(event, Echoed) or getattr(event, "reason", None) is RejectReason.ECHO:
                    self.echo_came = self.echo_came or type(event)
            self.check_held()
            events += got
        for name, twin in self.twins.items():
            got = [event for chunk in TWIN_CHUNKS[name](data) for event in twin.feed(chunk)]
            sizes = [len(c) for c in split(data, at)]
            assert got == events, f"chunks {sizes} gave {brief(events)}, {name} {brief(got)}"
            assert twin.buffered == self.dec.buffered, f"the twin fed {name} holds other bytes"
        return events

    def end_exchange(self, request: bytes | None) -> None:
        """``flush()`` (None) or ``sent(request)``: what an echo may now be of."""
        if request is None:
            self.sent_since_flush = self.last_sent = b""
        else:
            self.sent_since_flush += request
            self.last_sent = request
        self.since_sent.clear()
        self.echo_came = None

    def take(self, events: list[Event]) -> None:
        """Each event checked, and its bytes matched against the next bytes fed."""
        for event in events:
            assert type(event) in EVENT_CHECKS, f"{event!r} is not an event"
            raw = EVENT_CHECKS[type(event)](self, event)
            assert self.pending[: len(raw)] == raw, f"{brief([event])} {raw!r} are not the next bytes fed"
            del self.pending[: len(raw)]
            self.reported += len(raw)
            TOTALS[f"events {type(event).__name__}"] += 1

    def check_held(self) -> None:
        held = self.dec.buffered
        assert type(held) is bytes, f"buffered is a {type(held).__name__}"
        assert len(held) <= max(FRAME_LEN, self.max_garbage, 2 * ECHO_MAX), f"holds {len(held)} bytes"
        assert held == self.pending, f"holds {held!r}, not the bytes fed and not reported {bytes(self.pending)!r}"
        total = self.reported + len(held)
        assert self.fed == total, f"fed {self.fed} != events + buffered {total}"

    def frame_event(self, event: Frame) -> bytes:
        raw = event.raw
        assert type(raw) is bytes, f"Frame.raw is a {type(raw).__name__}"
        assert len(raw) == FRAME_LEN, f"a Frame of {len(raw)} bytes: {raw!r}"
        assert raw[0] == STX, f"a Frame without STX: {raw!r}"
        assert raw.isascii(), f"a Frame with a high bit: {raw!r}"
        assert crc.finish(crc.py_update(crc.INIT, raw[1:CRC_OFFSET])) == raw[CRC_OFFSET:], f"bad CRC: {raw!r}"
        check_frame(raw)
        for kind in KINDS:
            self.decode(raw, kind, None)
        if raw in self.known:
            kind, scale = self.known[raw]
            assert self.decode(raw, kind, scale) is not None, f"a valid {kind.value} frame did not decode"
        return raw

    def rejected_event(self, event: Rejected) -> bytes:
        reason, raw = event.reason, event.raw
        assert type(raw) is bytes, f"Rejected.raw is a {type(raw).__name__}"
        assert raw, f"Rejected({reason}) with no bytes"
        assert reason in STREAM_REASONS, f"the stream decoder gave reason {reason}"
        n = len(raw)
        from_stx = raw[0] == STX and n <= FRAME_LEN and raw[:-1].isascii()
        sent = len(self.sent_since_flush)
        shape = {
            RejectReason.GARBAGE: lambda: n <= self.max_garbage,
            RejectReason.ECHO: lambda: n <= sent,
            RejectReason.TRUNCATED: lambda: from_stx and n < FRAME_LEN and raw.isascii(),
            RejectReason.NOT_7BIT: lambda: from_stx and raw[-1] >= 0x80,
            RejectReason.CRC: lambda: (
                from_stx and n == FRAME_LEN and raw.isascii() and crc.crc16(raw[1:CRC_OFFSET]) != raw[CRC_OFFSET:]
            ),
        }[reason]
        assert shape(), f"Rejected({reason.value}) of {n} bytes: {raw!r}"
        return raw

    def echoed_event(self, event: Echoed) -> bytes:
        raw = event.raw
        assert self.echo is not Echo.OFF, "an echo dropped with echo off"
        assert raw.endswith(self.last_sent), f"an echo of other bytes than the last request: {raw!r}"
        assert raw in self.sent_since_flush, f"an echo of bytes never sent: {raw!r}"
        return raw

    def decode(self, data: bytes | bytearray | memoryview, kind: object, scale: object) -> Block | None:
        """``decode(data, kind, scale)`` and the checks of invariants 10 and 12–16; the block, or None."""
        TOTALS["decode calls"] += 1
        raw = bytes(data)
        try:
            block = decode(data, kind, scale)  # type: ignore[arg-type]
        except FrameError as exc:
            error: FrameError | None = exc
        except ValueError:
            assert kind not in VALID_KINDS or scale not in VALID_SCALES, "ValueError for valid arguments"
            return None
        else:
            error = None
        if error is not None:
            assert error.raw == raw, "FrameError.raw is not the input"
            return None
        resolved = (
            BlockKind(kind)
            if kind is not None
            else RESOLVED.get(raw[REQUEST_TYPE_OFFSET : REQUEST_TYPE_OFFSET + 2], BlockKind.V4B)
        )
        check_block(block, raw, resolved, scale if scale in VALID_SCALES else None)  # type: ignore[arg-type]
        if resolved is BlockKind.V4A:
            self.last_a = block
        elif resolved is BlockKind.V4B and self.last_a is not None:
            check_pair(self.last_a, block)
        return block


TWIN_CHUNKS: dict[str, Callable[[bytes], list[bytes]]] = {
    "in one call": lambda data: [data],
    "a byte at a time": lambda data: [data[i : i + 1] for i in range(len(data))],
}
"""How the twins of the decoder under test take each segment (invariant 6)."""
RESOLVED = {b"00": BlockKind.V4A}
"""``decode(raw)`` with no kind: V4 A by its request type, else V4 B."""

EVENT_CHECKS: dict[type, Callable[[DecoderMachine, Any], bytes]] = {
    Ack: lambda machine, event: b"\x06",
    Nak: lambda machine, event: b"\x15",
    Frame: DecoderMachine.frame_event,
    Rejected: DecoderMachine.rejected_event,
    Echoed: DecoderMachine.echoed_event,
}


def brief(events: list[Event]) -> str:
    return "[" + ", ".join(f"{type(e).__name__}({len(getattr(e, 'raw', b'x'))}B)" for e in events[:8]) + "]"


SUITE = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestDecoderMachine = DecoderMachine.TestCase
TestDecoderMachine.settings = SUITE
