"""The 255-byte blocks of protocol.md §4 as data: one table of fields per block kind.

Names follow protocol.md §0 (the ekmmeters documentation's ``Field`` names). Bytes that no field
covers are reserved: kept in the raw frame, not decoded. Offsets are 0-based, STX at offset 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ._enum import TableKey
from .errors import RejectReason
from .model import MaxDemandPeriod, MaxDemandResetInterval
from .wire import CRC_OFFSET, FRAME_LEN, TRAILER, TRAILER_OFFSET

__all__ = [
    "ADDRESS_SPAN",
    "LAYOUTS",
    "REQUEST_TYPE_OFFSET",
    "BlockKind",
    "Constant",
    "Evidence",
    "FieldSpec",
    "FieldType",
    "Layout",
    "Scale",
]

REQUEST_TYPE_OFFSET = 247
"""Where a V4 block echoes the type of the read that asked for it (``00`` A, ``01`` B)."""


class BlockKind(TableKey):
    """The kinds of 255-byte block; the value is the name used by ``decode(kind=…)`` and the CLI."""

    V3 = "v3"
    V4A = "v4a"
    V4B = "v4b"
    MONTHS = "months"
    """Month totals, forward (Q1) or reverse (Q2): the frames are alike."""
    SCHEDULES = "schedules"
    """Settings page 1 (Q3): schedules 1–4 and seasons 1–4."""
    SCHEDULES_5_8 = "schedules_5_8"
    """Settings page 2 (Q4): schedules 5–8."""
    HOLIDAYS = "holidays"
    """Holidays 1–20 with the weekend and holiday schedules (Q5)."""


class FieldType(TableKey):
    """How a field's ASCII bytes become a native value."""

    INT = "int"
    """ASCII digits → int."""
    FLOAT = "float"
    """ASCII digits → float, divided per :class:`Scale`."""
    STR = "str"
    """Text as received (addresses, meter time)."""
    HEX = "hex"
    """Raw bytes → lowercase hex text (model, firmware, status codes)."""
    PF = "pf"
    """Power factor text: a flag character (``L``, ``C`` or other) and 3 digits d.dd."""
    NUMBER = "number"
    """A schedule or tariff number, 0-based on the wire → numbered from 1 (:func:`ekm_async.model.from_wire`)."""
    CODE = "code"
    """A code → what it stands for (:attr:`FieldSpec.codes`: minutes, a word); None for a code no
    document names (the frame keeps the digit)."""


class Scale(TableKey):
    """The divisor of a float field."""

    NONE = "none"
    KWH = "kwh"
    """Per the block's kWh scale: 10 ** kWh_Scale (V4: from the A block; V3: always /10)."""
    DIV10 = "div10"
    DIV100 = "div100"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a block."""

    name: str
    offset: int
    width: int
    type: FieldType = FieldType.INT
    scale: Scale = Scale.NONE
    codes: tuple[tuple[int, int | str], ...] = ()
    """A :attr:`FieldType.CODE` field's codes and what each stands for."""

    @property
    def says_numbers(self) -> bool:
        """Whether a :attr:`FieldType.CODE` field's codes stand for numbers (minutes), not words."""
        return all(isinstance(said, int) for _, said in self.codes)

    @property
    def end(self) -> int:
        return self.offset + self.width


class Evidence(TableKey):
    """What backs a check of a byte (docs/checks.md)."""

    CAPTURED = "captured"
    """A frame captured from a real meter holds it: a frame without it is rejected."""
    VENDOR = "vendor"
    """The vendor's client checks it, but no captured frame shows it."""
    GUESS = "guess"
    """Inferred from the documents alone."""


@dataclass(frozen=True, slots=True)
class Constant:
    """Bytes every frame of a kind is expected to hold at ``offset``, and what backs that.

    Only a :attr:`Evidence.CAPTURED` constant rejects a frame without it; any other, when missing from a
    frame whose CRC, length, STX and fields hold, flags the block (``anomalies``) — unless the decoder
    is strict.
    """

    offset: int
    value: bytes
    what: str
    reason: RejectReason
    evidence: Evidence

    @property
    def end(self) -> int:
        return self.offset + len(self.value)


@dataclass(frozen=True, slots=True)
class Layout:
    """One block kind: its fields and the constant bytes a frame of it is expected to carry."""

    kind: BlockKind
    fields: tuple[FieldSpec, ...]
    live: bool
    """Live-data block: carries the meter address at 4–15 (and a trailer at 249–252)."""
    constants: tuple[Constant, ...] = ()
    """Checked bytes besides STX and the CRC, with their evidence."""


def _trailer(evidence: Evidence) -> Constant:
    return Constant(TRAILER_OFFSET, TRAILER, "trailer", RejectReason.TRAILER, evidence)


def _request_type(value: bytes, evidence: Evidence) -> Constant:
    return Constant(REQUEST_TYPE_OFFSET, value, "request type", RejectReason.REQUEST_TYPE, evidence)


INT, FLOAT, STR, HEX, PF = FieldType.INT, FieldType.FLOAT, FieldType.STR, FieldType.HEX, FieldType.PF
NUMBER = FieldType.NUMBER
KWH, DIV10, DIV100 = Scale.KWH, Scale.DIV10, Scale.DIV100


def _code(name: str, offset: int, codes: Mapping[int, int | str]) -> FieldSpec:
    return FieldSpec(name, offset, 1, FieldType.CODE, codes=tuple(codes.items()))


MINUTES = {p.code: p.value for p in MaxDemandPeriod}
"""``Max_Demand_Period``: code → minutes (1 → 15, 2 → 30, 3 → 60)."""
RESET_INTERVALS = {i.value: i.name.lower() for i in MaxDemandResetInterval}
"""``Max_Demand_Interval_Reset``: code → its word (0 → "off" … 4 → "hourly")."""


def _f(name: str, offset: int, width: int, type: FieldType = INT, scale: Scale = Scale.NONE) -> FieldSpec:
    return FieldSpec(name, offset, width, type, scale)


def _run(
    names: Iterable[str], offset: int, width: int, type: FieldType = INT, scale: Scale = Scale.NONE
) -> list[FieldSpec]:
    """Consecutive fields of one width starting at ``offset``."""
    return [FieldSpec(n, offset + i * width, width, type, scale) for i, n in enumerate(names)]


def _n(pattern: str, count: int) -> list[str]:
    return [pattern.format(i) for i in range(1, count + 1)]


_HEAD = [_f("Model", 1, 2, HEX), _f("Firmware", 3, 1, HEX), _f("Meter_Address", 4, 12, STR)]
_WATTS = [*_n("RMS_Watts_Ln_{}", 3), "RMS_Watts_Tot"]

V3 = Layout(
    BlockKind.V3,
    (
        *_HEAD,
        _f("kWh_Tot", 16, 8, FLOAT, KWH),
        *_run(_n("kWh_Tariff_{}", 4), 24, 8, FLOAT, KWH),
        _f("Rev_kWh_Tot", 56, 8, FLOAT, KWH),
        *_run(_n("Rev_kWh_Tariff_{}", 4), 64, 8, FLOAT, KWH),
        *_run(_n("RMS_Volts_Ln_{}", 3), 96, 4, FLOAT, DIV10),
        *_run(_n("Amps_Ln_{}", 3), 108, 5, FLOAT, DIV10),
        *_run(_WATTS, 123, 7),
        *_run(_n("Cos_Theta_Ln_{}", 3), 151, 4, PF),
        _f("Max_Demand", 163, 8, FLOAT, KWH),
        _code("Max_Demand_Period", 171, MINUTES),
        _f("Meter_Time", 172, 14, STR),
        _f("CT_Ratio", 186, 4),
        *_run(_n("Pulse_Cnt_{}", 3), 190, 8),
        *_run(_n("Pulse_Ratio_{}", 3), 214, 4),
        _f("State_Inputs", 226, 3),
        _f("Meter_Status_Code", 248, 1, HEX),
    ),
    live=True,
    constants=(_trailer(Evidence.GUESS),),  # no V3 frame was ever captured
)

V4A = Layout(
    BlockKind.V4A,
    (
        *_HEAD,
        _f("kWh_Tot", 16, 8, FLOAT, KWH),
        _f("Reactive_Energy_Tot", 24, 8, FLOAT, KWH),
        _f("Rev_kWh_Tot", 32, 8, FLOAT, KWH),
        *_run(_n("kWh_Ln_{}", 3), 40, 8, FLOAT, KWH),
        *_run(_n("Rev_kWh_Ln_{}", 3), 64, 8, FLOAT, KWH),
        _f("Resettable_kWh_Tot", 88, 8, FLOAT, KWH),
        _f("Resettable_Rev_kWh_Tot", 96, 8, FLOAT, KWH),
        *_run(_n("RMS_Volts_Ln_{}", 3), 104, 4, FLOAT, DIV10),
        *_run(_n("Amps_Ln_{}", 3), 116, 5, FLOAT, DIV10),
        *_run(_WATTS, 131, 7),
        *_run(_n("Cos_Theta_Ln_{}", 3), 159, 4, PF),
        *_run([*_n("Reactive_Pwr_Ln_{}", 3), "Reactive_Pwr_Tot"], 171, 7),
        _f("Line_Freq", 199, 4, FLOAT, DIV100),
        *_run(_n("Pulse_Cnt_{}", 3), 203, 8),
        _f("State_Inputs", 227, 1),
        _f("State_Watts_Dir", 228, 1),
        _f("State_Out", 229, 1),
        _f("kWh_Scale", 230, 1),
        _f("Meter_Time", 233, 14, STR),
    ),
    live=True,
    constants=(_request_type(b"00", Evidence.CAPTURED), _trailer(Evidence.CAPTURED)),  # both captured A frames
)

V4B = Layout(
    BlockKind.V4B,
    (
        *_HEAD,
        *_run(_n("kWh_Tariff_{}", 4), 16, 8, FLOAT, KWH),
        *_run(_n("Rev_kWh_Tariff_{}", 4), 48, 8, FLOAT, KWH),
        *_run(_n("RMS_Volts_Ln_{}", 3), 80, 4, FLOAT, DIV10),
        *_run(_n("Amps_Ln_{}", 3), 92, 5, FLOAT, DIV10),
        *_run(_WATTS, 107, 7),
        *_run(_n("Cos_Theta_Ln_{}", 3), 135, 4, PF),
        _f("RMS_Watts_Max_Demand", 147, 8, FLOAT, DIV10),
        _code("Max_Demand_Period", 155, MINUTES),
        *_run(_n("Pulse_Ratio_{}", 3), 156, 4),
        _f("CT_Ratio", 168, 4),
        # Offset 172 has no documented name (EKM: "Reserved_b2"); it holds the W5 setting.
        _code("Max_Demand_Interval_Reset", 172, RESET_INTERVALS),
        _f("Pulse_Output_Ratio", 173, 4),
        *_run(["Status_A", "Status_B", "Status_C"], 230, 1, HEX),
        _f("Meter_Time", 233, 14, STR),
    ),
    live=True,
    # ekmmeters' HEAD checks "01"; no B frame was ever captured, nor its trailer.
    constants=(_request_type(b"01", Evidence.VENDOR), _trailer(Evidence.GUESS)),
)


def _month_fields() -> list[FieldSpec]:
    out = []
    for m in range(1, 7):
        base = 6 + 40 * (m - 1)
        out.append(_f(f"Month_{m}_Tot", base, 8, FLOAT, KWH))
        out += _run(_n(f"Month_{m}_Tariff_{{}}", 4), base + 8, 8, FLOAT, KWH)
    return out


def _schedule_fields(first: int, count: int) -> list[FieldSpec]:
    """Periods 1–4 of each 48-character schedule record (periods 5–8 are left reserved)."""
    out = []
    for i in range(count):
        s = first + i
        for p in range(1, 5):
            base = 6 + 48 * i + 6 * (p - 1)
            stem = f"Schedule_{s}_Period_{p}_"
            out += [*_run([stem + "Hour", stem + "Min"], base, 2), _f(stem + "Tariff", base + 4, 2, NUMBER)]
    return out


def _season_fields() -> list[FieldSpec]:
    out = []
    for n in range(1, 5):
        base, stem = 198 + 6 * (n - 1), f"Season_{n}_"
        out += [*_run([stem + "Month", stem + "Day"], base, 2), _f(stem + "Schedule", base + 4, 2, NUMBER)]
    return out


def _holiday_fields() -> list[FieldSpec]:
    out = []
    for n in range(1, 21):
        out += _run([f"Holiday_{n}_Mon", f"Holiday_{n}_Day"], 6 + 4 * (n - 1), 2)
    return [*out, _f("Weekend_Schd", 86, 2, NUMBER), _f("Holiday_Schd", 88, 2, NUMBER)]


MONTHS = Layout(BlockKind.MONTHS, tuple(_month_fields()), live=False)
SCHEDULES = Layout(BlockKind.SCHEDULES, (*_schedule_fields(1, 4), *_season_fields()), live=False)
SCHEDULES_5_8 = Layout(BlockKind.SCHEDULES_5_8, tuple(_schedule_fields(5, 4)), live=False)
HOLIDAYS = Layout(BlockKind.HOLIDAYS, tuple(_holiday_fields()), live=False)

LAYOUTS: dict[BlockKind, Layout] = {
    layout.kind: layout for layout in (V3, V4A, V4B, MONTHS, SCHEDULES, SCHEDULES_5_8, HOLIDAYS)
}


def _check(layout: Layout) -> None:
    """Fields must not overlap each other, STX, the constants or the CRC (checked at import)."""
    taken = bytearray(FRAME_LEN)
    spans = [(0, 1), (CRC_OFFSET, FRAME_LEN), *((c.offset, c.end) for c in layout.constants)]
    spans += [(f.offset, f.end) for f in layout.fields]
    for lo, hi in spans:
        if hi > FRAME_LEN or any(taken[lo:hi]):
            raise AssertionError(f"{layout.kind}: span {lo}..{hi} overlaps or overflows")
        taken[lo:hi] = b"\x01" * (hi - lo)


for _layout in LAYOUTS.values():
    _check(_layout)


def _address_span() -> slice:
    """Where every live-data block (V3, V4 A, V4 B) carries ``Meter_Address``: one place in all three."""
    spans = {
        (f.offset, f.end)
        for layout in LAYOUTS.values()
        if layout.live
        for f in layout.fields
        if f.name == "Meter_Address"
    }
    (span,) = spans
    return slice(*span)


ADDRESS_SPAN = _address_span()
"""``Meter_Address`` in every live-data block: offsets 4–15."""
