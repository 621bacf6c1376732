"""Close and open the relays, for good or for a few seconds (ekmmeters: "Set Relay", ``setRelay()``).

V4 only. ``set_relay(relay, state, seconds=0)``: relay 1 or 2, ``RelayState.CLOSE`` or ``OPEN``
(``"close"`` / ``"open"`` work as well), and 0 seconds to hold the state, or 1–9999 seconds after which
the relay goes back. ``State_Out`` in every read shows both relays.
"""

from __future__ import annotations

import argparse
import asyncio

from _common import arguments, example_bus, run
from ekm_async import RelayState, V4Meter
from ekm_async.model import Relay, StateOut


async def show(meter: V4Meter, what: str) -> None:
    read = await meter.read()
    print(f"{what:<28} State_Out = {StateOut(int(read.State_Out)).name} (relay 1, relay 2)")


async def main(args: argparse.Namespace) -> None:
    async with example_bus(args) as bus:
        meter = bus.v4(args.address)

        await meter.set_relay(Relay.RELAY_1, RelayState.CLOSE)  # hold: until told otherwise
        await show(meter, "relay 1 closed:")
        await meter.set_relay(Relay.RELAY_1, RelayState.OPEN)
        await show(meter, "relay 1 open again:")

        await meter.set_relay(2, "close", seconds=1)  # closed for one second, then open again
        await show(meter, "relay 2 closed for 1 s:")
        await asyncio.sleep(1.5)
        await show(meter, "1.5 s later:")


if __name__ == "__main__":
    run(main, arguments(__doc__, v3=False))
