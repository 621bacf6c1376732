"""A faithful simulator of EKM Omnimeter v3/v4 meters on an RS-485 bus.

``MeterModel`` (a meter, sans-I/O), ``SimBus`` (meters on one wire, timing, local echo, how the host
receives the bytes (:class:`Arrival`), faults, a record of every transaction), ``SimServer`` (TCP, pty
and in-memory transports, paced like the wire).
"""

from .arrival import ARRIVALS, Arrival
from .bus import MAX_TURNAROUND, Emission, LocalEcho, SimBus, Transaction
from .faults import Fault, FaultKind
from .meter import MeterModel, MeterType
from .servers import MemoryTransport, SimServer
from .wire import Request, RequestKind, RequestParser

__all__ = [
    "ARRIVALS",
    "MAX_TURNAROUND",
    "Arrival",
    "Emission",
    "Fault",
    "FaultKind",
    "LocalEcho",
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
