"""How the line's bytes reach the host: the pieces an adapter or a gateway hands them over in (sans-I/O).

A byte is on the line from the moment its last bit is; when the host *receives* it depends on what sits
in between. Each :class:`Arrival` is the packing rule of one kind of device, with its documented
defaults (docs/wire.md names the sources):

* ``bytes``: every byte as it comes — a USB adapter in low-latency mode, a hardware UART.
* ``slices``: a piece every 5 ms of wire time, and what is left once the line has been quiet for 1.5
  character times (the simulator's own pace before arrival policies, which handed the last byte over
  as it was complete: no device can know sooner that a reply has ended).
* ``ftdi``: an FTDI USB adapter: a packet of 62 data bytes when its buffer is full, else what it holds
  when its 16 ms latency timer expires (FTDI application note AN232B-04).
* ``ser2net``: Debian's ser2net with its defaults: what it read is sent once the line has been quiet
  for 2 character times (at least 1 ms), at the latest 20 ms after the first byte, or when its 64-byte
  buffer is full (``ser2net.yaml(5)``: chardelay-scale 20, chardelay-min 1000 µs, chardelay-max
  20000 µs, dev-to-net-bufsize 64).
* ``idle:N``: a gateway that packs until the line has been idle for N character times (N = 4 when not
  given), up to 1024 bytes.

:func:`pieces` turns timed emissions into (time, bytes) deliveries under a policy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ARRIVALS", "Arrival", "pieces"]


@dataclass(frozen=True, slots=True)
class Arrival:
    """A packing rule: a piece goes to the host when the first of these is due (0: that rule is off)."""

    name: str
    packet: int = 0
    """Bytes that fill the device's buffer: sent as soon as there are this many."""
    idle_chars: float = 0.0
    """Send once the line has been quiet for this many character times…"""
    idle_min: float = 0.0
    """…but at least this many seconds."""
    hold_max: float = 0.0
    """Send at the latest this many seconds after the piece's first byte."""
    tick: float = 0.0
    """Send what is held when a timer of this period expires (FTDI's latency timer)."""

    def __post_init__(self) -> None:
        if min(self.packet, self.idle_chars, self.idle_min, self.hold_max, self.tick) < 0:
            raise ValueError(f"arrival {self.name!r}: every figure must be ≥ 0")
        if not (self.packet or self.idle_chars or self.hold_max or self.tick):
            raise ValueError(f"arrival {self.name!r} never sends anything")

    @classmethod
    def parse(cls, spec: str) -> Arrival:
        """``bytes``, ``slices``, ``ftdi``, ``ser2net``, ``idle`` or ``idle:N`` (N character times)."""
        name, _, arg = spec.partition(":")
        if name == "idle" and arg:
            try:
                chars = float(arg)
            except ValueError:
                chars = -1.0
            if not 0 < chars <= 1000:
                raise ValueError(f"arrival {spec!r}: idle:N needs N character times, 0 < N ≤ 1000")
            return cls(spec, packet=_IDLE_BUFFER, idle_chars=chars)
        if name not in ARRIVALS or arg:
            raise ValueError(f"unknown arrival {spec!r}; one of {', '.join(ARRIVALS)} or idle:N")
        return ARRIVALS[name]

    def due(self, first: float, last: float, byte_time: float) -> float:
        """When a piece whose first byte came at ``first`` and latest at ``last`` is sent by the timers."""
        due = math.inf
        if self.idle_chars:
            due = last + max(self.idle_min, self.idle_chars * byte_time)
        if self.hold_max:
            due = min(due, first + self.hold_max)
        if self.tick:
            due = min(due, math.ceil(first / self.tick) * self.tick)
        return due


_IDLE_BUFFER = 1024

ARRIVALS: dict[str, Arrival] = {
    policy.name: policy
    for policy in (
        Arrival("bytes", packet=1),
        Arrival("slices", idle_chars=1.5, hold_max=0.005),
        Arrival("ftdi", packet=62, tick=0.016),
        Arrival("ser2net", packet=64, idle_chars=2.0, idle_min=0.001, hold_max=0.020),
        Arrival("idle", packet=_IDLE_BUFFER, idle_chars=4.0),
    )
}
"""The named policies (``idle`` is ``idle:4``)."""


def pieces(arrival: Arrival, bytes_at: Iterable[tuple[float, int]], byte_time: float) -> list[tuple[float, bytes]]:
    """The pieces the host receives of bytes that are complete on the line at the given times (in
    order), under ``arrival``; ``byte_time`` is a character's time on the line (for idle rules)."""
    out: list[tuple[float, bytes]] = []
    held = bytearray()
    first = last = 0.0
    for at, byte in bytes_at:
        if held and (due := arrival.due(first, last, byte_time)) <= at:
            out.append((due, bytes(held)))
            held.clear()
        if not held:
            first = at
        held.append(byte)
        last = at
        if arrival.packet and len(held) >= arrival.packet:
            out.append((at, bytes(held)))
            held.clear()
    if held:
        out.append((arrival.due(first, last, byte_time), bytes(held)))
    return out
