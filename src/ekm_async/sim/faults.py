"""Faults a simulated bus can inject, each with a probability and optional triggers."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..wire import require_address

__all__ = ["Fault", "FaultKind"]


class FaultKind(enum.Enum):
    CRC = "crc"
    """A frame with one bit flipped: the CRC no longer matches."""
    DROP = "drop"
    """The meter acted on the request, but its reply is lost."""
    TRUNCATE = "truncate"
    """A frame cut short."""
    GARBAGE = "garbage"
    """Random bytes on the line before the reply."""
    DELAY = "delay"
    """The reply starts ``seconds`` late."""
    WRONG_ADDRESS = "wrong-address"
    """A live-data frame that carries another meter's address (CRC valid)."""
    DEAD = "dead"
    """The meter hears nothing and answers nothing."""


FRAME_ONLY = {FaultKind.CRC, FaultKind.TRUNCATE, FaultKind.WRONG_ADDRESS}
"""Faults that change a 255-byte frame; the others apply to any reply (DEAD: to any request)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault rule: applies with ``probability`` to the replies it can affect.

    ``address``: only that meter's replies. ``nth``: only those replies (1-based, counted over the
    replies this rule could affect). ``seconds``: the extra delay of a DELAY fault.
    """

    kind: FaultKind
    probability: float = 1.0
    address: str | None = None
    nth: frozenset[int] = frozenset()
    seconds: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be 0..1; got {self.probability}")
        if self.seconds < 0:
            raise ValueError(f"seconds must be ≥ 0; got {self.seconds}")
        if self.address is not None:
            require_address(self.address)

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """``KIND[=PROBABILITY][:SECONDS][@ADDRESS][#N[,N…]]``, e.g. ``crc=0.01``, ``dead@000300001184``,
        ``delay=0.1:2.5``, ``truncate#3`` (the third frame)."""
        rest, nth = spec.partition("#")[::2]
        rest, address = rest.partition("@")[::2]
        rest, seconds = rest.partition(":")[::2]
        kind, probability = rest.partition("=")[::2]
        try:
            return cls(
                FaultKind(kind.strip().lower()),
                float(probability) if probability else 1.0,
                address or None,
                frozenset(int(n) for n in nth.split(",")) if nth else frozenset(),
                float(seconds) if seconds else 1.0,
            )
        except ValueError as exc:
            kinds = ", ".join(k.value for k in FaultKind)
            raise ValueError(f"fault {spec!r}: {exc} (KIND[=P][:SECONDS][@ADDRESS][#N,…]; kinds: {kinds})") from None
