"""A faithful simulator of EKM Omnimeter v3/v4 meters on an RS-485 bus.

``MeterModel`` (a meter, sans-I/O), ``SimBus`` (meters on one wire, timing, echo, faults, a record of
every transaction), ``SimServer`` (TCP, pty and in-memory transports, paced like the wire).
"""

from .bus import Emission, SimBus, Transaction
from .faults import Fault, FaultKind
from .meter import MeterModel, MeterType
from .servers import MemoryTransport, SimServer
from .wire import Request, RequestKind, RequestParser

__all__ = [
    "Emission",
    "Fault",
    "FaultKind",
    "MemoryTransport",
    "MeterModel",
    "MeterType",
    "Request",
    "RequestKind",
    "RequestParser",
    "SimBus",
    "SimServer",
    "Transaction",
]
