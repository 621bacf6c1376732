"""Encode values into 255-byte frames: the inverse of :func:`ekm_async.decode`, for the simulator's
meters and for tests (``ekm_async.testing`` builds its frames with it).
"""

from __future__ import annotations

from collections.abc import Mapping

from ._plans import KWH_SCALE_OFFSET, KWH_SCALES, divisor
from .blocks import kwh_scale_of
from .calculated import CALCULATED_NAMES, Value
from .layouts import LAYOUTS, BlockKind, FieldSpec, FieldType, Layout
from .model import to_wire
from .wire import FRAME_LEN, STX, seal

__all__ = ["encode"]


def _template(layout: Layout) -> bytearray:
    frame = bytearray(b"0" * FRAME_LEN)
    frame[0] = STX
    for const in layout.constants:
        frame[const.offset : const.end] = const.value
    return frame


def _digits(spec: FieldSpec, number: int, value: Value) -> bytes:
    if not 0 <= number < 10**spec.width:
        raise ValueError(f"{spec.name} = {value!r} does not fit {spec.width} digits")
    return str(number).zfill(spec.width).encode()


def _encode_value(spec: FieldSpec, value: Value, kwh_scale: int) -> bytes:
    t = spec.type
    if t is FieldType.CODE:
        code = next((c for c, said in spec.codes if said == value and type(said) is type(value)), None)
        if code is None:
            raise ValueError(f"{spec.name} must be one of {[said for _, said in spec.codes]}; got {value!r}")
        return _digits(spec, code, value)
    if t in (FieldType.INT, FieldType.FLOAT, FieldType.NUMBER):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{spec.name} must be a number; got {value!r}")
        if t is FieldType.FLOAT:
            by = divisor(spec, kwh_scale)
            number = round(value * by)
            if abs(number - value * by) > 1e-6 * max(1.0, abs(value * by)):  # more decimals than the field has
                raise ValueError(f"{spec.name} = {value!r} has more decimals than {len(str(by)) - 1} (its scale here)")
            return _digits(spec, number, value)
        if not isinstance(value, int):
            raise ValueError(f"{spec.name} must be an int; got {value!r}")
        return _digits(spec, to_wire(value) if t is FieldType.NUMBER else value, value)
    if not isinstance(value, str):
        raise ValueError(f"{spec.name} must be a str; got {value!r}")
    data = bytes.fromhex(value) if t is FieldType.HEX else value.encode("ascii")
    if len(data) != spec.width or not data.isascii():
        raise ValueError(f"{spec.name} = {value!r} is not {spec.width} 7-bit bytes")
    if t is FieldType.PF and not data[1:].isdigit():
        raise ValueError(f"{spec.name} = {value!r} is not a flag and 3 digits")
    return data


_SPECS = {kind: {spec.name: spec for spec in layout.fields} for kind, layout in LAYOUTS.items()}


def encode(
    kind: BlockKind | str, fields: Mapping[str, Value], *, kwh_scale: int | None = None, template: bytes | None = None
) -> bytes:
    """The 255-byte frame of ``kind`` carrying ``fields`` (the inverse of :func:`decode`).

    Fields not given keep the ``template``'s bytes (default: ``0`` digits and the kind's constants), and
    so does a code field given as None (a code no document names, as :func:`decode` gives it);
    calculated fields are ignored; an unknown name or a value that does not fit raises ``ValueError``.
    The kWh scale follows :func:`decode`: a V4 A block uses its ``kWh_Scale`` field.
    """
    k = BlockKind(kind)
    layout = LAYOUTS[k]
    specs = _SPECS[k]
    frame = bytearray(template) if template is not None else _template(layout)
    if len(frame) != FRAME_LEN:
        raise ValueError(f"template must be {FRAME_LEN} bytes; got {len(frame)}")
    for name, value in fields.items():
        spec = specs.get(name)
        if spec is None and name not in CALCULATED_NAMES:
            raise ValueError(f"{k.value} blocks have no field {name!r}")
        if spec is not None and spec.name == "kWh_Scale":
            frame[spec.offset : spec.end] = _encode_value(spec, value, 0)
    if k is BlockKind.V4A:
        scale = frame[KWH_SCALE_OFFSET] - 0x30
        if scale not in KWH_SCALES:
            raise ValueError(f"kWh_Scale must be 0, 1 or 2; got {chr(frame[KWH_SCALE_OFFSET])!r}")
    else:
        scale = kwh_scale_of(bytes(frame), k, kwh_scale)
    for name, value in fields.items():
        spec = specs.get(name)
        if spec is not None and not (value is None and spec.type is FieldType.CODE):
            frame[spec.offset : spec.end] = _encode_value(spec, value, scale)
    return seal(frame)
