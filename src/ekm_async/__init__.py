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
from .crc import crc16
from .errors import EkmError, FrameError, RejectReason
from .frames import Ack, Event, Frame, FrameDecoder, Nak, Rejected
from .layouts import BlockKind, FieldSpec, FieldType, Layout, Scale
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

__version__ = "0.1.0"

__all__ = [
    "Ack",
    "Block",
    "BlockKind",
    "CTRatio",
    "DirectionFlag",
    "EkmError",
    "Event",
    "FieldSpec",
    "FieldType",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "HolidaysBlock",
    "Layout",
    "LcdItem",
    "LiveBlock",
    "MaxDemandPeriod",
    "MaxDemandResetInterval",
    "MonthDay",
    "MonthTotals",
    "MonthsBlock",
    "Nak",
    "Period",
    "PulseInput",
    "PulseOutputRatio",
    "Read",
    "RejectReason",
    "Rejected",
    "Relay",
    "RelayState",
    "Scale",
    "SchedulesBlock",
    "Season",
    "StateOut",
    "Value",
    "__version__",
    "commands",
    "crc16",
    "decode",
    "encode",
    "parse_meter_time",
    "power_factor",
]
