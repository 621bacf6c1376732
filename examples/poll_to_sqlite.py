"""Poll meters into an SQLite file, then query it (ekmmeters: ``SqliteMeterDB``, ``renderJsonReadsSince``).

    python examples/poll_to_sqlite.py [URL] [ADDRESS…] [--v3]

V3 and V4. A :class:`ekm_async.SqliteStore` is an observer of a :class:`ekm_async.Poller`: it stores
every read it is given, committing them in batches (every ``flush_interval`` seconds, or every
``batch_size`` reads). Its queries then read the file: ``latest()`` gives the newest read of every
meter, ``reads_since(address, since)`` the reads of one meter after a time, oldest first, as dicts of
column → value. The file is a temporary one here; give ``SqliteStore`` a path of your own to keep it.
The simulated meters run an hour per second, so their energy registers move between reads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import arguments, example_bus, run
from ekm_async import Poller, SqliteStore

ROWS = 3
"""How many reads of the first meter to show."""


def when(row: dict[str, Any]) -> str:
    """The host time of a stored read (``time_utc``: seconds since the epoch)."""
    return f"{datetime.fromtimestamp(row['time_utc'], UTC):%H:%M:%S.%f}"[:-3]


def row_line(row: dict[str, Any]) -> str:
    """A few columns of a stored read."""
    kwh, watts, volts, pulses = (row[c] for c in ("kWh_Tot", "RMS_Watts_Tot", "RMS_Volts_Ln_1", "Pulse_Cnt_1"))
    return f"{kwh:>10} kWh  {watts:>6} W  {volts} V  Pulse_Cnt_1 {pulses}"


async def main(args: argparse.Namespace) -> None:
    reads, interval = (15, 2.0) if args.url else (15, 0.05)
    with tempfile.TemporaryDirectory() as folder:
        async with SqliteStore(Path(folder) / "reads.db") as store, example_bus(args, time_scale=3600) as bus:
            meters = [bus.v3(a) if args.v3 else bus.v4(a) for a in args.addresses]
            started = datetime.now(UTC)
            async with Poller(meters, interval=interval, observers=[store], count=reads) as poller:
                # count= counts successful reads only: give up after twice the time they should take.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2 * reads * interval + 5):
                        await poller.wait()
            # Closing the poller let the store take every read queued for it; queries see only what is
            # committed, so commit the batch in progress now rather than flush_interval later.
            await store.flush()
            print(f"{store.committed} reads stored in {store.path}")

            print("newest read of each meter:")
            for address, row in sorted((await store.latest()).items()):
                print(f"  {address} {when(row)}  {row_line(row)}")

            address = meters[0].address
            print(f"{await store.count(address)} reads of {address}; the first {ROWS} since {started:%H:%M:%S}:")
            # Leaving the loop early: aclosing() closes the query's cursor now, not when it is collected.
            # (reads_since is an async generator, but typed AsyncIterator, which has no aclose().)
            async with contextlib.aclosing(store.reads_since(address, started)) as rows:  # type: ignore[type-var]
                shown = 0
                async for row in rows:
                    print(f"  {when(row)}  {row_line(row)}")
                    shown += 1
                    if shown == ROWS:
                        break


if __name__ == "__main__":
    run(main, arguments(__doc__, many=True))
