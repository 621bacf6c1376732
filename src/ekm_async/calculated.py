"""The calculated fields (docs/protocol.md §5.3, §5.4) as a table: each names its outputs, the wire
fields it takes, and the function from the one to the other. A block's fields end with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .layouts import BlockKind
from .model import DirectionFlag

__all__ = ["CALCULATED", "CALCULATED_NAMES", "NET_WATTS", "POWER_FACTORS", "Calculated", "Value", "power_factor"]

Value = int | float | str
"""A field's native value (a code field holds None for a code no document names: :attr:`FieldType.CODE`)."""


def power_factor(cos_theta: str) -> int:
    """``Power_Factor_Ln_x`` from ``Cos_Theta_Ln_x`` (0–200, 100 = unity; protocol.md §5.3)."""
    rule = _PF_FLAG.get(cos_theta[0])
    return rule(int(cos_theta[1:])) if rule else 100


_PF_FLAG: dict[str, Callable[[int], int]] = {"C": lambda d: 200 - d, "L": lambda d: d}


class _PowerFactors(dict[str, int]):
    """:func:`power_factor`, remembered: a meter sends few distinct Cos_Theta texts (bounded)."""

    def __missing__(self, cos_theta: str) -> int:
        pf = power_factor(cos_theta)
        if len(self) < 8192:
            self[cos_theta] = pf
        return pf


_PF = _PowerFactors()
# State_Watts_Dir → sign of lines 1..3, read off the DirectionFlag names (F forward, R reverse).
_DIRECTION_SIGNS: dict[Value, tuple[int, ...]] = {
    d.value: tuple(1 if c == "F" else -1 for c in d.name) for d in DirectionFlag
}
_FORWARD = (1, 1, 1)


def _power_factors(cos_1: str, cos_2: str, cos_3: str) -> tuple[Value, ...]:
    return _PF[cos_1], _PF[cos_2], _PF[cos_3]


def _net_watts(direction: int, watts_1: int, watts_2: int, watts_3: int) -> tuple[Value, ...]:
    """RMS watts signed by ``State_Watts_Dir`` (protocol.md §5.4); an unknown direction counts forward."""
    s1, s2, s3 = _DIRECTION_SIGNS.get(direction, _FORWARD)
    w1, w2, w3 = s1 * watts_1, s2 * watts_2, s3 * watts_3
    return w1, w2, w3, w1 + w2 + w3


@dataclass(frozen=True, slots=True)
class Calculated:
    """Fields computed from other fields of the same block (protocol.md §5.3, §5.4)."""

    names: tuple[str, ...]
    inputs: tuple[str, ...]
    """The fields ``compute`` takes, in its argument order."""
    compute: Callable[..., tuple[Value, ...]]
    """The values of ``names`` from the values of ``inputs``."""


POWER_FACTORS = Calculated(
    tuple(f"Power_Factor_Ln_{n}" for n in (1, 2, 3)), tuple(f"Cos_Theta_Ln_{n}" for n in (1, 2, 3)), _power_factors
)
NET_WATTS = Calculated(
    (*(f"Net_Calc_Watts_Ln_{n}" for n in (1, 2, 3)), "Net_Calc_Watts_Tot"),
    ("State_Watts_Dir", *(f"RMS_Watts_Ln_{n}" for n in (1, 2, 3))),
    _net_watts,
)
CALCULATED: dict[BlockKind, tuple[Calculated, ...]] = {
    BlockKind.V3: (POWER_FACTORS,),
    BlockKind.V4A: (POWER_FACTORS, NET_WATTS),
    BlockKind.V4B: (POWER_FACTORS,),
}
"""Calculated fields per block kind, appended after the wire fields in this order."""
CALCULATED_NAMES = {name for calc in (POWER_FACTORS, NET_WATTS) for name in calc.names}
