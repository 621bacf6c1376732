"""Hypothesis strategies for code that handles what EKM meters send (``pip install 'ekm-async[testing]'``).

Every strategy shrinks toward plain cases (small numbers, the first kind, no damage) and is cheap
enough for hundreds of examples per test::

    from hypothesis import given
    from ekm_async.testing import strategies as ekm

    @given(ekm.reads("v4"))
    def test_my_observer_takes_any_read(read): ...

    @given(ekm.splits(ekm.frames("v4a")))
    def test_my_protocol_takes_any_arrival(pieces): ...

* :func:`frames` — valid 255-byte frames (V3, V4 A, V4 B, the settings pages), each field drawn over
  the range the meter can send, totals the sums of their parts (:data:`TOTALS`); they decode to what
  was drawn.
* :func:`corrupted` — the same frames damaged as a real line damages them (:class:`Damage`).
* :func:`splits` — bytes cut into the pieces an adapter or gateway could hand them over in.
* :func:`reads` — decoded reads (a V4 A and B of one meter, or a V3 block), as a poller delivers them.
* :func:`requests` — valid request frames, as the bus sends them.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from hypothesis import strategies as st

from .. import commands
from .._plans import divisor
from ..blocks import Read, decode
from ..calculated import Value
from ..commands import LiveRead, SettingsPage
from ..encoding import encode
from ..layouts import ADDRESS_SPAN, LAYOUTS, BlockKind, FieldSpec, FieldType
from ..model import CTRatio, from_wire
from ..wire import FRAME_LEN, seal

__all__ = [
    "LIVE_KINDS",
    "TOTALS",
    "Damage",
    "LabelledFrame",
    "addresses",
    "block_fields",
    "corrupted",
    "field_value",
    "frames",
    "labelled_frames",
    "reads",
    "requests",
    "splits",
]

LIVE_KINDS = (BlockKind.V3, BlockKind.V4A, BlockKind.V4B)
"""The kinds that carry a meter's address (the others are settings pages)."""
_KINDS: dict[BlockKind | str, BlockKind] = {**{k: k for k in BlockKind}, **{k.value: k for k in BlockKind}}


def addresses() -> st.SearchStrategy[str]:
    """Meter addresses: 12 digits."""
    return st.integers(0, 10**12 - 1).map(lambda n: f"{n:012d}")


def _pf(spec: FieldSpec, by: int) -> st.SearchStrategy[Value]:
    return st.tuples(st.sampled_from("LC0 "), st.integers(0, 999)).map(lambda t: f"{t[0]}{t[1]:03d}")


def _text(spec: FieldSpec, by: int) -> st.SearchStrategy[Value]:
    # addresses are digits; the meter time may hold '?' when the meter's clock is corrupt
    alphabet = "0123456789?" if spec.name == "Meter_Time" else "0123456789"
    return st.text(alphabet, min_size=spec.width, max_size=spec.width)


_DRAWN: dict[FieldType, Callable[[FieldSpec, int], st.SearchStrategy[Value]]] = {
    FieldType.INT: lambda spec, by: st.integers(0, 10**spec.width - 1),
    FieldType.FLOAT: lambda spec, by: st.integers(0, 10**spec.width - 1).map(lambda n: n / by),
    # a schedule or tariff number: the wire's 0-based digits, counted from 1
    FieldType.NUMBER: lambda spec, by: st.integers(0, 10**spec.width - 1).map(from_wire),
    FieldType.CODE: lambda spec, by: st.sampled_from([said for _, said in spec.codes]),  # codes the documents name
    FieldType.HEX: lambda spec, by: st.binary(min_size=spec.width, max_size=spec.width).map(
        lambda b: bytes(x & 0x7F for x in b).hex()
    ),
    FieldType.PF: _pf,
    FieldType.STR: _text,
}
"""Field type → what a meter could send in such a field (given the field and its divisor)."""


def field_value(spec: FieldSpec, kwh_scale: int) -> st.SearchStrategy[Value]:
    """Any value a meter could send in the field ``spec``, as :func:`ekm_async.decode` returns it."""
    if spec.name == "kWh_Scale":
        return st.just(kwh_scale)
    return _DRAWN[spec.type](spec, divisor(spec, kwh_scale))


def _digit_field(spec: FieldSpec) -> bool:
    """A field of digits only, drawn with the others as one number."""
    plain_str = spec.type is FieldType.STR and spec.name != "Meter_Time"
    return spec.name != "kWh_Scale" and (spec.type in (FieldType.INT, FieldType.FLOAT) or plain_str)


@st.composite
def block_fields(draw: st.DrawFn, kind: BlockKind | str, kwh_scale: int) -> dict[str, Value]:
    """Every field of a block of ``kind``, drawn (what :func:`frames` encodes). The fields of digits
    come from one big number (one draw per block instead of one per field; it shrinks toward zeros),
    the others (the meter's clock, power factors, hex fields) one draw each."""
    specs = LAYOUTS[_kind(kind)].fields
    numeric = [spec for spec in specs if _digit_field(spec)]
    width = sum(s.width for s in numeric)
    digits = f"{draw(st.integers(0, 10**width - 1)):0{width}d}"  # no more entropy than a draw per field
    texts: dict[str, str] = {}
    at = 0
    for spec in numeric:
        texts[spec.name], at = digits[at : at + spec.width], at + spec.width
    units = _consistent({s.name: s for s in numeric}, {n: int(t) for n, t in texts.items()})
    fields: dict[str, Value] = {}
    for spec in numeric:
        if spec.type is FieldType.INT:
            fields[spec.name] = units[spec.name]
        elif spec.type is FieldType.FLOAT:
            fields[spec.name] = units[spec.name] / divisor(spec, kwh_scale)
        else:
            fields[spec.name] = texts[spec.name]
    for spec in specs:
        if not _digit_field(spec):
            fields[spec.name] = draw(field_value(spec, kwh_scale))
    return {spec.name: fields[spec.name] for spec in specs}


TOTALS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("kWh_Tot", ("kWh_Ln_1", "kWh_Ln_2", "kWh_Ln_3")),
    ("Rev_kWh_Tot", ("Rev_kWh_Ln_1", "Rev_kWh_Ln_2", "Rev_kWh_Ln_3")),
    ("kWh_Tot", ("kWh_Tariff_1", "kWh_Tariff_2", "kWh_Tariff_3", "kWh_Tariff_4")),
    ("Rev_kWh_Tot", ("Rev_kWh_Tariff_1", "Rev_kWh_Tariff_2", "Rev_kWh_Tariff_3", "Rev_kWh_Tariff_4")),
    ("RMS_Watts_Tot", ("RMS_Watts_Ln_1", "RMS_Watts_Ln_2", "RMS_Watts_Ln_3")),
    ("Reactive_Pwr_Tot", ("Reactive_Pwr_Ln_1", "Reactive_Pwr_Ln_2", "Reactive_Pwr_Ln_3")),
)
"""Totals a meter sends with their parts (in one block): the total is the sum, as on a real meter."""


def _consistent(specs: dict[str, FieldSpec], units: dict[str, int]) -> dict[str, int]:
    """``units`` (fields in their least unit) with every total of :data:`TOTALS` the sum of its parts,
    the parts kept small enough for the sum to fit the total's width."""
    for total, parts in TOTALS:
        if total in specs and all(part in specs for part in parts):
            room = (10 ** specs[total].width - 1) // len(parts) + 1
            for part in parts:
                units[part] %= room
            units[total] = sum(units[part] for part in parts)
    return units


def _kind(kind: BlockKind | str) -> BlockKind:
    try:
        return _KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown block kind {kind!r}; kinds: {', '.join(k.value for k in BlockKind)}") from None


def _kinds(kind: BlockKind | str | Iterable[BlockKind | str] | None) -> list[BlockKind]:
    if kind is None:
        return list(BlockKind)
    if isinstance(kind, BlockKind | str):
        return [_kind(kind)]
    return [_kind(k) for k in kind]


class LabelledFrame(NamedTuple):
    """A frame with what it is: its kind and the kWh decimals its fields were drawn with."""

    kind: BlockKind
    kwh_scale: int
    raw: bytes


@st.composite
def _frame(draw: st.DrawFn, kinds: Sequence[BlockKind], kwh_scale: int | None, address: str | None) -> LabelledFrame:
    kind = draw(st.sampled_from(kinds))
    scale = draw(st.integers(0, 2)) if kwh_scale is None else kwh_scale
    fields = draw(block_fields(kind, scale))
    if address is not None and kind in LIVE_KINDS:
        fields["Meter_Address"] = address
    return LabelledFrame(kind, scale, encode(kind, fields, kwh_scale=scale))


def labelled_frames(
    kind: BlockKind | str | Iterable[BlockKind | str] | None = None,
    *,
    kwh_scale: int | None = None,
    address: str | None = None,
) -> st.SearchStrategy[LabelledFrame]:
    """:func:`frames`, each with its kind and kWh scale (``kind, kwh_scale, raw = …``)."""
    if kwh_scale is not None and kwh_scale not in (0, 1, 2):
        raise ValueError(f"kwh_scale must be 0, 1 or 2; got {kwh_scale}")
    return _frame(_kinds(kind), kwh_scale, address)


def frames(
    kind: BlockKind | str | Iterable[BlockKind | str] | None = None,
    *,
    kwh_scale: int | None = None,
    address: str | None = None,
) -> st.SearchStrategy[bytes]:
    """Valid 255-byte frames of ``kind`` (a :class:`~ekm_async.BlockKind` or its value — ``"v3"``,
    ``"v4a"``, ``"v4b"``, ``"months"``, …; several; or None: every kind). ``kwh_scale``: the kWh
    decimals (0–2; drawn if None); ``address``: the meter's, for the kinds that carry one."""
    return labelled_frames(kind, kwh_scale=kwh_scale, address=address).map(lambda f: f.raw)


class Damage(enum.Enum):
    """What a real line does to a frame."""

    BIT_FLIP = "bit-flip"
    """One bit of one byte flipped (noise): the CRC no longer holds."""
    TRUNCATED = "truncated"
    """Cut short (the meter or the line stopped)."""
    GARBAGE_BEFORE = "garbage-before"
    """Noise before the frame (a line turning around)."""
    GARBAGE_AFTER = "garbage-after"
    """Noise after it."""
    WRONG_ADDRESS = "wrong-address"
    """Whole and sound, but another meter's (its CRC holds): a reply that is not the one asked for."""
    ECHO = "echo"
    """The request's echo before it, as adapters that hear themselves deliver it."""


@st.composite
def _damaged(draw: st.DrawFn, frames: st.SearchStrategy[bytes], damages: Sequence[Damage]) -> bytes:
    frame = draw(frames)
    damage = draw(st.sampled_from(damages))
    live = len(frame) == FRAME_LEN and _live(frame)
    if damage is Damage.WRONG_ADDRESS and not live:
        damage = Damage.BIT_FLIP  # a settings page carries no address
    if damage is Damage.BIT_FLIP:
        at = draw(st.integers(1, FRAME_LEN - 1))
        bit = draw(st.integers(0, 6))
        return frame[:at] + bytes([frame[at] ^ (1 << bit)]) + frame[at + 1 :]
    if damage is Damage.TRUNCATED:
        return frame[: draw(st.integers(1, len(frame) - 1))]
    if damage is Damage.WRONG_ADDRESS:
        own = frame[ADDRESS_SPAN]
        other = draw(addresses().map(str.encode).filter(lambda a: a != own))
        return seal(frame[: ADDRESS_SPAN.start] + other + frame[ADDRESS_SPAN.stop :])
    if damage is Damage.ECHO:
        address = frame[ADDRESS_SPAN].decode() if live else None
        request = (
            commands.live_read(address, LiveRead.V4A)
            if address
            else commands.settings_read(SettingsPage.MONTHS_FORWARD)
        )
        return request + frame
    noise = draw(st.binary(min_size=1, max_size=16))
    return noise + frame if damage is Damage.GARBAGE_BEFORE else frame + noise


def _live(frame: bytes) -> bool:
    return frame[ADDRESS_SPAN].isdigit()


def corrupted(
    frames: st.SearchStrategy[bytes], damage: Damage | Iterable[Damage] | None = None
) -> st.SearchStrategy[bytes]:
    """``frames`` as a real line damages them: one :class:`Damage` each (``damage``: which ones; None:
    any). A wrong address only damages a block that carries one (a settings page gets a bit flip)."""
    chosen = list(Damage) if damage is None else [damage] if isinstance(damage, Damage) else list(damage)
    if not chosen:
        raise ValueError("damage: give at least one Damage, or None for any")
    return _damaged(frames, chosen)


@st.composite
def _split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """Whole (what it shrinks to), in pieces of one size (a USB packet, a gateway's buffer: 1 is byte by
    byte), or cut anywhere."""
    if len(data) <= 1:
        return [data]
    how = draw(st.sampled_from(["whole", "sized", "anywhere"]))
    if how == "whole":
        return [data]
    if how == "sized":
        size = draw(st.integers(1, 64))
        return [data[at : at + size] for at in range(0, len(data), size)]
    cuts = draw(st.lists(st.integers(1, len(data) - 1), min_size=1, max_size=32, unique=True))
    edges = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def splits(data: bytes | st.SearchStrategy[bytes]) -> st.SearchStrategy[list[bytes]]:
    """``data`` (bytes, or what a strategy draws) cut into the pieces a host could receive it in: one
    piece, a byte at a time, or anything between. The pieces join to ``data``, none empty (but an empty
    ``data``, which is one empty piece)."""
    source = st.just(data) if isinstance(data, bytes | bytearray) else data
    return source.flatmap(lambda d: _split(bytes(d)))


_TIMES = st.datetimes(datetime(2020, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC))


@st.composite
def _read(draw: st.DrawFn, version: str, address: str | None, times: st.SearchStrategy[datetime]) -> Read:
    meter = address if address is not None else draw(addresses())
    when = draw(times)
    if version == "v3":
        return Read.of(decode(draw(frames(BlockKind.V3, kwh_scale=1, address=meter)), BlockKind.V3), time=when)
    scale = draw(st.integers(0, 2))
    a = decode(draw(frames(BlockKind.V4A, kwh_scale=scale, address=meter)), BlockKind.V4A)
    fields = draw(block_fields(BlockKind.V4B, scale)) | {"Meter_Address": meter}
    for total, tariffs in TOTALS[2:4]:  # B's tariffs add up to A's total, as the meter's do
        units = round(float(a.fields[total]) * 10**scale)
        cuts = sorted(draw(st.lists(st.integers(0, units), min_size=len(tariffs) - 1, max_size=len(tariffs) - 1)))
        for tariff, low, high in zip(tariffs, [0, *cuts], [*cuts, units], strict=True):
            fields[tariff] = (high - low) / 10**scale
    b = decode(encode(BlockKind.V4B, fields, kwh_scale=scale), BlockKind.V4B, scale)
    return Read.of(a, b, time=when)


def reads(
    version: str = "v4", *, address: str | None = None, times: st.SearchStrategy[datetime] | None = None
) -> st.SearchStrategy[Read]:
    """Reads as a poller delivers them: ``"v4"`` (an A and a B block of one meter, one kWh scale, the B
    block's tariffs adding up to the A block's totals) or ``"v3"``; of ``address`` if given; taken at
    ``times`` (aware datetimes; default: any UTC time of 2020–2039). Every field is drawn over its
    range — the meter's clock may be unreadable (``?`` in ``Meter_Time``: ``meter_datetime`` is None),
    as a real meter's can be."""
    if version not in ("v3", "v4"):
        raise ValueError(f"version must be 'v3' or 'v4'; got {version!r}")
    return _read(version, address, _TIMES if times is None else times)


def requests() -> st.SearchStrategy[bytes]:
    """Valid request frames, as the bus sends them: live reads, settings reads, a password, the close
    string and writes (relay, CT ratio)."""
    return st.one_of(
        st.tuples(addresses(), st.sampled_from(list(LiveRead))).map(lambda t: commands.live_read(*t)),
        st.sampled_from(list(SettingsPage)).map(commands.settings_read),
        st.integers(0, 10**8 - 1).map(lambda n: commands.password(f"{n:08d}")),
        st.just(commands.CLOSE),
        st.tuples(st.sampled_from([1, 2]), st.sampled_from(["open", "close"]), st.integers(0, 9999)).map(
            lambda t: commands.relay(*t)
        ),
        st.sampled_from(sorted(int(v) for v in CTRatio)).map(commands.ct_ratio),
    )
