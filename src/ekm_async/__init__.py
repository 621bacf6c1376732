"""ekm-async: asyncio-native stack for EKM Omnimeter v3/v4 electricity meters on RS-485.

The names here are the public API (docs/architecture.md shows the layers). The protocol core has
no I/O: :func:`decode` and :func:`encode` for 255-byte frames, :func:`crc16`, the incremental
:class:`FrameDecoder`, the request encoders in :mod:`ekm_async.commands`. Above it: :func:`open_bus`,
meter handles, the :class:`Poller`, and :class:`SqliteStore` (imported on first use, so that
``import ekm_async`` loads neither aiosqlite nor aiohttp).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import commands
from ._version import __version__
from .blocks import Block, HolidaysBlock, LiveBlock, MonthsBlock, Read, SchedulesBlock, decode
from .bus import Bus, BusOptions, open_bus
from .crc import crc16
from .encoding import encode
from .errors import (
    BusClosed,
    ConnectionLost,
    EkmError,
    FrameError,
    LocalProtocolError,
    MeterError,
    MeterUnavailable,
    Refused,
    RejectReason,
    ReplyTimeout,
    StoreError,
    UnexpectedReply,
)
from .frames import FrameDecoder
from .layouts import BlockKind
from .meters import Settings, V3Meter, V4Meter
from .model import (
    CTRatio,
    LcdItem,
    MaxDemandPeriod,
    MaxDemandResetInterval,
    MonthDay,
    Period,
    PulseOutputRatio,
    RelayState,
    Season,
)
from .poller import BaseObserver, FailureEvent, Observer, Poller, ReadEvent, poll

if TYPE_CHECKING:
    from .store import SqliteStore


__all__ = [
    "BaseObserver",
    "Block",
    "BlockKind",
    "Bus",
    "BusClosed",
    "BusOptions",
    "CTRatio",
    "ConnectionLost",
    "EkmError",
    "FailureEvent",
    "FrameDecoder",
    "FrameError",
    "HolidaysBlock",
    "LcdItem",
    "LiveBlock",
    "LocalProtocolError",
    "MaxDemandPeriod",
    "MaxDemandResetInterval",
    "MeterError",
    "MeterUnavailable",
    "MonthDay",
    "MonthsBlock",
    "Observer",
    "Period",
    "Poller",
    "PulseOutputRatio",
    "Read",
    "ReadEvent",
    "Refused",
    "RejectReason",
    "RelayState",
    "ReplyTimeout",
    "SchedulesBlock",
    "Season",
    "Settings",
    "SqliteStore",
    "StoreError",
    "UnexpectedReply",
    "V3Meter",
    "V4Meter",
    "__version__",
    "commands",
    "crc16",
    "decode",
    "encode",
    "open_bus",
    "poll",
]


def __getattr__(name: str) -> Any:
    if name == "SqliteStore":  # aiosqlite is loaded with the store, not with the package
        from .store import SqliteStore  # noqa: PLC0415

        return SqliteStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
