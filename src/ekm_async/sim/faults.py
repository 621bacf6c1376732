"""Faults a simulated bus can inject, each with a probability and optional triggers."""

from __future__ import annotations

import enum
import math
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
            raise ValueError(f"the probability must be from 0 to 1; got {self.probability:g}")
        if not 0 <= self.seconds < math.inf:
            raise ValueError(f"the seconds of a delay must be a number, 0 or more; got {self.seconds:g}")
        if any(n < 1 for n in self.nth):
            raise ValueError(f"#N counts the replies from 1; got #{min(self.nth)}")
        if self.address is not None:
            require_address(self.address)

    @classmethod
    def parse(cls, spec: str, *, option: str = "fault") -> Fault:
        """``KIND[=PROBABILITY][:SECONDS][@ADDRESS][#N[,N…]]``, e.g. ``crc=0.01``, ``dead@000300001184``,
        ``delay=0.1:2.5``, ``truncate#3`` (the third frame). ``ValueError``, in words that begin with
        ``option`` and the spec, for anything else."""
        rest, nth = spec.partition("#")[::2]
        rest, address = rest.partition("@")[::2]
        rest, seconds = rest.partition(":")[::2]
        kind, probability = rest.partition("=")[::2]
        try:
            return cls(
                _kind(kind),
                _number(probability, "the probability (=P) must be a number from 0 to 1") if probability else 1.0,
                address or None,
                frozenset(_nth(n) for n in nth.split(",")) if nth else frozenset(),
                _number(seconds, "the seconds (:SECONDS) must be a number, 0 or more") if seconds else 1.0,
            )
        except ValueError as exc:
            raise ValueError(f"{option} {spec!r}: {exc} (a fault is {SYNTAX}, e.g. crc=0.01 or delay:2.5#3)") from None


SYNTAX = "KIND[=P][:SECONDS][@ADDRESS][#N,…]"
"""How a fault is written on the command line."""


def _kind(text: str) -> FaultKind:
    kinds = ", ".join(k.value for k in FaultKind)
    word = text.strip().lower()
    if not word:
        raise ValueError(f"a fault needs a kind: {kinds}")
    try:
        return FaultKind(word)
    except ValueError:
        raise ValueError(f"no fault kind {text.strip()!r}; the kinds are {kinds}") from None


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{what}; got {text!r}") from None


def _nth(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"#N takes reply numbers counted from 1, like #3 or #1,4; got {text!r}")
    return int(text)
