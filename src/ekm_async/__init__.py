"""ekm-async: asyncio-native EKM Omnimeter v3/v4 stack.

The pure core (no I/O): :func:`crc16`, the incremental :class:`FrameDecoder`, the block layouts with
:func:`decode` / :func:`encode`, and the request encoders in :mod:`ekm_async.commands`.
"""

from . import commands
from .blocks import (
    Block,
    HolidaysBlock,
    LiveBlock,
    MonthsBlock,
    MonthTotals,
    Read,
    SchedulesBlock,
    Value,
    decode,
    encode,
    parse_meter_time,
    power_factor,
)
from .bus import Bus, BusOptions, MeterStats, open_bus
from .crc import crc16
from .errors import (
    BusClosed,
    ConnectionLost,
    EkmError,
    FrameError,
    MeterError,
    MeterUnavailable,
    Refused,
    RejectReason,
    ReplyTimeout,
    UnexpectedReply,
)
from .frames import Ack, Event, Frame, FrameDecoder, Nak, Rejected
from .layouts import BlockKind, FieldSpec, FieldType, Layout, Scale
from .meters import Settings, V3Meter, V4Meter
from .model import (
    CTRatio,
    DirectionFlag,
    LcdItem,
    MaxDemandPeriod,
    MaxDemandResetInterval,
    MonthDay,
    Period,
    PulseInput,
    PulseOutputRatio,
    Relay,
    RelayState,
    Season,
    StateOut,
)
from .poller import BaseObserver, FailureEvent, MeterStatus, Observer, Poller, PollEvent, ReadEvent
from .protocol import WireStats
from .session import LocalProtocolError
from .store import SqliteStore

__version__ = "0.1.0"

__all__ = [
    "Ack",
    "BaseObserver",
    "Block",
    "BlockKind",
    "Bus",
    "BusClosed",
    "BusOptions",
    "CTRatio",
    "ConnectionLost",
    "DirectionFlag",
    "EkmError",
    "Event",
    "FailureEvent",
    "FieldSpec",
    "FieldType",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "HolidaysBlock",
    "Layout",
    "LcdItem",
    "LiveBlock",
    "LocalProtocolError",
    "MaxDemandPeriod",
    "MaxDemandResetInterval",
    "MeterError",
    "MeterStats",
    "MeterStatus",
    "MeterUnavailable",
    "MonthDay",
    "MonthTotals",
    "MonthsBlock",
    "Nak",
    "Observer",
    "Period",
    "PollEvent",
    "Poller",
    "PulseInput",
    "PulseOutputRatio",
    "Read",
    "ReadEvent",
    "Refused",
    "RejectReason",
    "Rejected",
    "Relay",
    "RelayState",
    "ReplyTimeout",
    "Scale",
    "SchedulesBlock",
    "Season",
    "Settings",
    "SqliteStore",
    "StateOut",
    "UnexpectedReply",
    "V3Meter",
    "V4Meter",
    "Value",
    "WireStats",
    "__version__",
    "commands",
    "crc16",
    "decode",
    "encode",
    "open_bus",
    "parse_meter_time",
    "power_factor",
]
