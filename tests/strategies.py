"""Hypothesis strategies: random field values for every block kind, and frames built from them."""

from __future__ import annotations

from hypothesis import strategies as st

from ekm_async import encode
from ekm_async.calculated import Value
from ekm_async.layouts import LAYOUTS, BlockKind, FieldSpec, FieldType, Scale

DIVISOR = {Scale.NONE: 1, Scale.DIV10: 10, Scale.DIV100: 100}
LIVE_KINDS = [BlockKind.V3, BlockKind.V4A, BlockKind.V4B]


def field_value(spec: FieldSpec, kwh_scale: int) -> st.SearchStrategy[Value]:
    """Any value a meter could send in ``spec``, as ``decode`` returns it."""
    top = 10**spec.width - 1
    if spec.name == "kWh_Scale":
        return st.just(kwh_scale)
    if spec.type is FieldType.INT:
        return st.integers(0, top)
    if spec.type is FieldType.FLOAT:
        divisor = 10**kwh_scale if spec.scale is Scale.KWH else DIVISOR[spec.scale]
        return st.integers(0, top).map(lambda n: n / divisor)
    if spec.type is FieldType.HEX:
        return st.binary(min_size=spec.width, max_size=spec.width).map(lambda b: bytes(x & 0x7F for x in b).hex())
    if spec.type is FieldType.PF:
        return st.tuples(st.sampled_from("LC0 "), st.integers(0, 999)).map(lambda t: f"{t[0]}{t[1]:03d}")
    # STR: addresses are digits; the meter time may hold '?' when the meter clock is corrupt
    alphabet = "0123456789?" if spec.name == "Meter_Time" else "0123456789"
    return st.text(alphabet, min_size=spec.width, max_size=spec.width)


@st.composite
def block_fields(draw: st.DrawFn, kind: BlockKind, kwh_scale: int) -> dict[str, Value]:
    return {spec.name: draw(field_value(spec, kwh_scale)) for spec in LAYOUTS[kind].fields}


@st.composite
def frames(draw: st.DrawFn, kinds: list[BlockKind] | None = None) -> tuple[BlockKind, int, bytes]:
    """(kind, kWh scale, a valid 255-byte frame of that kind)."""
    kind = draw(st.sampled_from(kinds or list(BlockKind)))
    scale = draw(st.integers(0, 2))
    return kind, scale, encode(kind, draw(block_fields(kind, scale)), kwh_scale=scale)
