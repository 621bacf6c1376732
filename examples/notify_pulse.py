"""Tell when a pulse count changes: an observer of a Poller (ekmmeters: ``set_notify.py``, "Meter Observer").

    python examples/notify_pulse.py [URL] [ADDRESS] [--v3]

V3 and V4. ekmmeters calls ``update()`` of each ``MeterObserver`` registered with a meter after every
``request()``. Here a :class:`ekm_async.Poller` reads the meters and hands every read to each of its
observers: any object with ``async def on_read(self, read)`` and ``async def on_error(self, meter,
error)``. Each observer has its own queue and task, so a slow or failing one never holds up the reads.

The first read of a meter sets the counts to compare with; after that every read whose Pulse_Cnt_1,
_2 or _3 differs from the read before rings the bell. On a real meter wire pulse input 1 (two wires you
close by hand will do); as in ekmmeters you may want ``await meter.set_pulse_input_ratio(1, 1)`` and
``await meter.set_lcd(["Pulse_Cnt_1"])`` first (this example changes no setting). The simulated meter
runs 10 times faster, so its pulse counts move between most of the reads here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from _common import arguments, example_bus, meter_of, run
from ekm_async import Poller, Read

PULSE_INPUTS = (1, 2, 3)


class PulseNotifier:
    """An observer: rings when a pulse count of a meter differs from the meter's read before."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[int, ...]] = {}
        """Meter address → its pulse counts at its last read."""
        self.changes = 0
        self.failures = 0

    async def on_read(self, read: Read) -> None:
        counts = tuple(int(read[f"Pulse_Cnt_{n}"]) for n in PULSE_INPUTS)
        before = self.last.get(read.address)
        self.last[read.address] = counts
        if before is None:
            print(f"{read.address}: pulse counts {', '.join(map(str, counts))}; watching for changes")
            return
        changed = [
            f"Pulse_Cnt_{n} {old} → {new}"
            for n, old, new in zip(PULSE_INPUTS, before, counts, strict=True)
            if new != old
        ]
        if changed:
            self.changes += 1
            self.notify(read.address, changed)

    async def on_error(self, meter: str, error: Exception) -> None:
        self.failures += 1
        print(f"{meter}: read failed: {error}")

    def notify(self, address: str, changed: list[str]) -> None:
        """ekmmeters' ``doNotify()``: anything Python can do (here: print)."""
        print(f"Bells! Alarms! {address}: {', '.join(changed)}")


async def main(args: argparse.Namespace) -> None:
    reads, interval = (60, 1.0) if args.url else (12, 0.05)
    notifier = PulseNotifier()
    async with example_bus(args, time_scale=10) as bus:
        meter = meter_of(bus, args)
        async with Poller([meter], interval=interval, observers=[notifier], count=reads) as poller:
            # count= counts successful reads only: give up after twice the time they should take.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2 * reads * interval + 5):
                    await poller.wait()
        # Leaving the poller's block let the notifier take every read queued for it.
        status = poller.status()[meter.address]
    print(f"{status.ok} reads, {status.errors} failures; {notifier.changes} reads rang the bell")


if __name__ == "__main__":
    run(main, arguments(__doc__))
