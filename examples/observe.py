"""Observers of a polling loop (ekmmeters: "Meter Observer", ``set_notify.py`` and ``set_summarize.py``).

V3 and V4. ekmmeters calls each registered ``MeterObserver.Update()`` after every read. In asyncio no
framework is needed: an async generator yields the reads, and each observer is a plain object whose
``update(read)`` is called for each of them (an observer that fails is reported, the loop goes on).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

from _common import arguments, example_bus, meter_of, run
from ekm_async import EkmError, Read, V3Meter, V4Meter

READS = 10


class Observer(Protocol):
    def update(self, read: Read) -> None: ...


class PulseNotifier:
    """set_notify.py: tell when pulse input 1 has counted (wire it up, or close it by hand)."""

    def __init__(self) -> None:
        self.last: int | None = None

    def update(self, read: Read) -> None:
        count = int(read.Pulse_Cnt_1)
        if self.last is not None and count > self.last:
            print(f"  Bells! Alarms! Pulse_Cnt_1 went from {self.last} to {count}")
        self.last = count


class VoltSummarizer:
    """set_summarize.py: lowest, highest and mean line 1 voltage of the reads seen."""

    def __init__(self) -> None:
        self.volts: list[float] = []

    def update(self, read: Read) -> None:
        self.volts.append(float(read.RMS_Volts_Ln_1))

    def summary(self) -> str:
        v = self.volts
        if not v:
            return "line 1: no reads"
        return f"line 1: {min(v)}–{max(v)} V, mean {sum(v) / len(v):.1f} V over {len(v)} reads"


async def reads(meter: V3Meter | V4Meter, count: int, interval: float) -> AsyncIterator[Read]:
    """``count`` reads, one every ``interval`` seconds; a failed read is reported and skipped."""
    for _ in range(count):
        try:
            yield await meter.read()
        except EkmError as exc:
            print(f"  read failed: {exc}")
        await asyncio.sleep(interval)


async def main(args: argparse.Namespace) -> None:
    notifier, summarizer = PulseNotifier(), VoltSummarizer()
    observers: list[Observer] = [notifier, summarizer]
    # A simulated meter runs 20 times faster, so its pulse counts move within the few reads here.
    async with example_bus(args, time_scale=20) as bus:
        meter = meter_of(bus, args)
        async for read in reads(meter, READS, 1.0 if args.url else 0.05):
            print(f"read: Pulse_Cnt_1 = {read.Pulse_Cnt_1}, RMS_Volts_Ln_1 = {read.RMS_Volts_Ln_1}")
            for observer in observers:
                try:
                    observer.update(read)
                except Exception as exc:  # noqa: BLE001 — as ekmmeters: one observer's error stops nothing
                    print(f"  {type(observer).__name__} failed: {exc!r}")
    print(summarizer.summary())


if __name__ == "__main__":
    run(main, arguments(__doc__))
