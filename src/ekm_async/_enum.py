"""The base of the enums the protocol's tables are keyed by."""

from __future__ import annotations

import enum

__all__ = ["TableKey"]


class TableKey(enum.Enum):
    """An :class:`enum.Enum` whose members hash by identity, in C.

    Members are singletons and compare by identity, so a dict sees no difference from ``Enum``'s own
    hash (of the member's name) — except its cost: ``Enum.__hash__`` is a Python function, and a read
    looks up about twenty table entries keyed by members (session transitions, layouts, plans).
    """

    __hash__ = object.__hash__
