"""The block layouts compiled for speed: a block's fields cut out by kind with one ``struct`` each and
converted by one C-level ``map`` per kind (:class:`Plan`), and one regular expression per layout that
accepts exactly the frames whose every checked byte is right (:func:`shape`). Built once, at import,
from the tables of :mod:`ekm_async.layouts`; :mod:`ekm_async.blocks` uses them.
"""

from __future__ import annotations

import itertools
import operator
import re
import struct
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from types import MappingProxyType

from .calculated import CALCULATED, Calculated, Value
from .errors import FrameError, RejectReason
from .layouts import LAYOUTS, BlockKind, FieldSpec, FieldType, Layout, Scale
from .model import from_wire
from .wire import FRAME_LEN, STX

__all__ = [
    "DIGITS",
    "KWH_SCALES",
    "KWH_SCALE_OFFSET",
    "MERGED_PLANS",
    "PLANS",
    "SHAPES",
    "Plan",
    "divisor",
    "struct_of",
]

KWH_SCALES = (0, 1, 2)
"""Decimal places a meter may give its kWh fields."""
KWH_SCALE_OFFSET = next(f.offset for f in LAYOUTS[BlockKind.V4A].fields if f.name == "kWh_Scale")


def struct_of(spans: Iterable[tuple[int, int]], size: int = FRAME_LEN) -> struct.Struct:
    """A Struct that unpacks the given (offset, end) spans, in order, from ``size`` bytes."""
    fmt, at = "", 0
    for lo, hi in spans:
        fmt += f"{lo - at}x{hi - lo}s" if lo > at else f"{hi - lo}s"
        at = hi
    return struct.Struct(fmt + f"{size - at}x")


_TEXT = (FieldType.STR, FieldType.HEX)


def _digit_spans(layout: Layout) -> list[tuple[FieldSpec, int]]:
    """(field, first digit) of every field of ``layout`` holding digits, by offset: INT and FLOAT
    fields whole, a PF field after its flag (which may be any character); its digits run to ``end``."""
    return [
        (f, f.offset + (f.type is FieldType.PF))
        for f in sorted(layout.fields, key=lambda f: f.offset)
        if f.type not in _TEXT
    ]


_FIXED_DIVISOR = {Scale.NONE: 1, Scale.DIV10: 10, Scale.DIV100: 100}
_TEXT_CONVERTER: dict[FieldType, Callable[[bytes], str]] = {
    FieldType.STR: bytes.decode,
    FieldType.PF: bytes.decode,
    FieldType.HEX: bytes.hex,
}


def divisor(spec: FieldSpec, kwh_scale: int) -> int:
    return 10**kwh_scale if spec.scale is Scale.KWH else _FIXED_DIVISOR[spec.scale]


class _Digits:
    """Every character of a layout that must be a digit (:func:`_digit_spans`): ``check`` raises
    :class:`FrameError` naming the first field that holds anything else."""

    def __init__(self, layout: Layout) -> None:
        spans = _digit_spans(layout)
        self._specs = [f for f, _ in spans]
        self._unpack = struct_of((first, f.end) for f, first in spans).unpack

    def check(self, raw: bytes) -> None:
        if not b"".join(self._unpack(raw)).isdigit():
            bad = next(f for f, c in zip(self._specs, self._unpack(raw), strict=True) if not c.isdigit())
            chunk = raw[bad.offset : bad.end]
            raise FrameError(RejectReason.FIELD, raw, f"{bad.name} = {chunk!r} at {bad.offset}")


DIGITS = {kind: _Digits(layout) for kind, layout in LAYOUTS.items()}


class Plan:
    """The fields of a frame, or of a V4 A and B frame end to end, compiled.

    ``parts``: per frame, its layout, the names taken from it (None: all) and its kWh scale. The
    fields are cut out by kind, one Struct each, and each kind converted by one C-level ``map``: whole
    numbers by ``int``; scaled numbers by ``int`` then a true division by the field's divisor; text by
    the field's converter; schedule and tariff numbers by ``int`` then :func:`~ekm_async.model.from_wire`;
    codes by the field's table (None for an unknown code). The values fill a copy of a template dict
    whose keys are the fields in wire order, then the names of ``calculated``, whose values come last:
    the mapping keeps the wire order whatever the grouping. Only frames whose digits were checked may
    be given (:func:`decode`).
    """

    def __init__(
        self, parts: Sequence[tuple[Layout, Collection[str] | None, int]], calculated: Sequence[Calculated]
    ) -> None:
        at_specs = sorted(
            (
                (n * FRAME_LEN + f.offset, f, kwh_scale)
                for n, (layout, names, kwh_scale) in enumerate(parts)
                for f in layout.fields
                if names is None or f.name in names
            ),
            key=lambda at_spec: at_spec[0],
        )
        size = len(parts) * FRAME_LEN

        def group(*types: FieldType) -> tuple[list[tuple[FieldSpec, int]], Callable[[bytes], tuple[bytes, ...]]]:
            chosen = [(at, f, scale) for at, f, scale in at_specs if f.type in types]
            unpack = struct_of(((at, at + f.width) for at, f, _ in chosen), size).unpack
            return [(f, scale) for _, f, scale in chosen], unpack

        ints, self._ints = group(FieldType.INT)
        floats, self._floats = group(FieldType.FLOAT)
        texts, self._texts = group(*_TEXT_CONVERTER)
        numbers, self._numbers = group(FieldType.NUMBER)
        codes, self._codes = group(FieldType.CODE)
        self._number_names = tuple(f.name for f, _ in numbers)
        self._code_names = tuple(f.name for f, _ in codes)
        self._code_tables = tuple({str(code).encode(): value for code, value in f.codes} for f, _ in codes)
        self._int_names = tuple(f.name for f, _ in ints)
        self._float_names = tuple(f.name for f, _ in floats)
        self._divisors = tuple(divisor(f, scale) for f, scale in floats)
        self._text_names = tuple(f.name for f, _ in texts)
        self._text_converters = tuple(_TEXT_CONVERTER[f.type] for f, _ in texts)
        assert all(len(calc.inputs) > 1 for calc in calculated)  # itemgetter of 2+ names gives a tuple
        self._calculated = tuple((operator.itemgetter(*calc.inputs), calc.names, calc.compute) for calc in calculated)
        names = [f.name for _, f, _ in at_specs] + [name for calc in calculated for name in calc.names]
        self._template: dict[str, Value | None] = dict.fromkeys(names)

    def fields(self, raw: bytes) -> Mapping[str, Value]:
        # Names and values are of equal lengths by construction (zip's strict=True costs ~0.1 µs a call).
        fields = self._template.copy()
        fields.update(zip(self._int_names, map(int, self._ints(raw)), strict=False))
        floats = map(operator.truediv, map(int, self._floats(raw)), self._divisors)
        fields.update(zip(self._float_names, floats, strict=False))
        fields.update(zip(self._text_names, map(operator.call, self._text_converters, self._texts(raw)), strict=False))
        if self._number_names:
            fields.update(zip(self._number_names, map(from_wire, map(int, self._numbers(raw))), strict=False))
        if self._code_names:
            fields.update(zip(self._code_names, map(dict.get, self._code_tables, self._codes(raw)), strict=False))
        for inputs, names, compute in self._calculated:
            fields.update(zip(names, compute(*inputs(fields)), strict=False))
        return MappingProxyType(fields)  # type: ignore[arg-type]  # every value is set: no None is left


PLANS = {
    (kind, scale): Plan([(layout, None, scale)], CALCULATED.get(kind, ()))
    for kind, layout in LAYOUTS.items()
    for scale in KWH_SCALES
}
# A merged V4 read: A's fields, then those only B carries (A's snapshot wins), then the calculated
# ones; each block's kWh fields at its own scale (the same, when B was decoded with A's).
_B_ONLY = {f.name for f in LAYOUTS[BlockKind.V4B].fields} - {f.name for f in LAYOUTS[BlockKind.V4A].fields}
MERGED_PLANS = {
    (a_scale, b_scale): Plan(
        [(LAYOUTS[BlockKind.V4A], None, a_scale), (LAYOUTS[BlockKind.V4B], _B_ONLY, b_scale)],
        CALCULATED[BlockKind.V4A],
    )
    for a_scale in KWH_SCALES
    for b_scale in KWH_SCALES
}


def shape(layout: Layout) -> Callable[[bytes], object]:
    """One regular expression for everything :func:`ekm_async.blocks.decode` checks of a ``layout`` but the CRC.

    255 bytes; STX; 7-bit everywhere; the constants; a digit wherever a field must hold one; a V4 A
    block's kWh_Scale 0–2. A match means every such check passes; no match, :func:`ekm_async.blocks.decode` says why.
    """
    byte = [b"[\\x00-\\x7f]"] * FRAME_LEN
    byte[0] = re.escape(bytes([STX]))
    for f, first in _digit_spans(layout):
        byte[first : f.end] = [b"[0-9]"] * (f.end - first)
    for const in layout.constants:
        byte[const.offset : const.end] = [re.escape(bytes([c])) for c in const.value]
    if layout.kind is BlockKind.V4A:
        byte[KWH_SCALE_OFFSET] = b"[0-2]"
    runs = (b"(?:%s){%d}" % (b, len(list(same))) for b, same in itertools.groupby(byte))
    return re.compile(b"".join(runs), re.DOTALL).fullmatch


SHAPES = {kind: shape(layout) for kind, layout in LAYOUTS.items()}
