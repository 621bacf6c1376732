"""Toggle relay 1 and relay 2 a few times, reading the meter in between (EKM's relay loop sample).

V4 only. EKM's sample sends connect, password, write by hand for every step; here each
``set_relay`` is one such transaction, and each ``read`` shows the relays in ``State_Out``.
"""

from __future__ import annotations

import argparse
import asyncio

from _common import arguments, example_bus, run
from ekm_async import RelayState
from ekm_async.model import Relay, StateOut

LOOPS = 3


async def main(args: argparse.Namespace) -> None:
    pause = 1.0 if args.url else 0.0  # on a real meter: time to hear each relay click
    async with example_bus(args) as bus:
        meter = bus.v4(args.address)
        for loop in range(1, LOOPS + 1):
            print(f"loop {loop}")
            for relay in Relay:
                for state in (RelayState.OPEN, RelayState.CLOSE):
                    await meter.set_relay(relay, state)
                    relays = StateOut(int((await meter.read()).State_Out))  # relay 1, relay 2
                    print(f"  {state.name.lower():<5} relay {relay.value}: State_Out = {relays.name}")
                    await asyncio.sleep(pause)
        for relay in Relay:  # leave both relays open
            await meter.set_relay(relay, RelayState.OPEN)


if __name__ == "__main__":
    run(main, arguments(__doc__, v3=False))
