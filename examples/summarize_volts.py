"""A voltage summary of every meter over each interval: an observer of a Poller (ekmmeters: ``set_summarize.py``).

    python examples/summarize_volts.py [URL] [ADDRESS…] [--v3]

V3 and V4. ekmmeters' summarizer is a ``MeterObserver`` that keeps the lowest, mean and highest
voltage over a number of seconds given to its constructor. Here it is an observer of a
:class:`ekm_async.Poller` (any object with ``async def on_read(self, read)`` and ``async def
on_error(self, meter, error)``): it keeps min/mean/max of RMS_Volts_Ln_1..3 per meter and prints a
line for a meter when a read of it falls past the end of its current interval. Intervals are timed
by when each read arrived (``read.time``), not by when the observer's task gets to it.

The observer is told nothing when polling ends, so after the poller is closed ``finish()`` prints
the intervals still open (marked "partial").
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from statistics import fmean

from _common import arguments, example_bus, run
from ekm_async import Poller, Read

LINES = (1, 2, 3)


@dataclass
class Interval:
    """One meter's volts over one interval."""

    start: datetime
    volts: dict[int, list[float]] = field(default_factory=lambda: {n: [] for n in LINES})
    reads: int = 0
    failures: int = 0

    def add(self, read: Read) -> None:
        self.reads += 1
        for n in LINES:
            self.volts[n].append(float(read[f"RMS_Volts_Ln_{n}"]))

    def line(self, address: str, seconds: float, *, partial: bool = False) -> str:
        head = f"{address} {self.start:%H:%M:%S.%f}"[:-4] + f" +{seconds:g} s  {self.reads:>2} reads"
        if self.failures:
            head += f" ({self.failures} failed)"
        lines = (f"Ln_{n} {min(v):.1f}/{fmean(v):.2f}/{max(v):.1f} V" for n, v in self.volts.items() if v)
        return "  ".join((head, *lines)) + ("  (partial)" if partial else "")


class VoltSummarizer:
    """An observer: min/mean/max of each line's volts per meter, one line per ``seconds`` interval."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.open: dict[str, Interval] = {}
        """Meter address → its interval in progress."""

    def _interval(self, address: str, when: datetime) -> Interval:
        """The interval of ``address`` that ``when`` falls in; an interval that ended is printed first."""
        current = self.open.get(address)
        if current is None:
            current = self.open[address] = Interval(when)
        elif when >= current.start + timedelta(seconds=self.seconds):
            print(current.line(address, self.seconds))
            ended = (when - current.start) // timedelta(seconds=self.seconds)  # more than one if reads stopped
            current = self.open[address] = Interval(current.start + ended * timedelta(seconds=self.seconds))
        return current

    async def on_read(self, read: Read) -> None:
        self._interval(read.address, read.time or datetime.now(UTC)).add(read)

    async def on_error(self, meter: str, error: Exception) -> None:
        self._interval(meter, datetime.now(UTC)).failures += 1

    def finish(self) -> None:
        """Print the intervals still open."""
        for address, interval in self.open.items():
            if interval.reads:
                print(interval.line(address, self.seconds, partial=True))
        self.open.clear()


async def main(args: argparse.Namespace) -> None:
    # On a real bus: a line per meter every minute, reads every 5 s, for 3 minutes.
    seconds, interval, run_for = (60.0, 5.0, 180.0) if args.url else (0.25, 0.02, 0.8)
    summarizer = VoltSummarizer(seconds)
    async with example_bus(args) as bus:
        print(f"min/mean/max volts of each line, per meter, every {seconds:g} s (UTC)")
        meters = [bus.v3(a) if args.v3 else bus.v4(a) for a in args.addresses]
        async with Poller(meters, interval=interval, observers=[summarizer]):
            await asyncio.sleep(run_for)
    summarizer.finish()


if __name__ == "__main__":
    run(main, arguments(__doc__, many=True))
