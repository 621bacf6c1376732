"""What every example shares: open the bus named on the command line, or a simulated one.

    python examples/NAME.py                          # an in-process simulated meter, no hardware
    python examples/NAME.py /dev/ttyUSB0 000300001184    # a real meter on a serial RS-485 adapter
    python examples/NAME.py tcp://10.0.0.5:50000 000300001184 --v3   # a V3 meter behind a TCP gateway

Nothing here is needed to use ekm-async: with a real bus an example only does
``async with ekm_async.open_bus(url) as bus: meter = bus.v4(address)``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import ekm_async
from ekm_async.sim import MeterModel, MeterType, SimBus, SimServer

DEFAULT_ADDRESS = "000300001184"


def _address(text: str) -> str:
    if not (len(text) == 12 and text.isdigit()):
        raise argparse.ArgumentTypeError(f"a meter address is 12 digits; got {text!r}")
    return text


def arguments(doc: str | None, *, v3: bool = True, many: bool = False) -> argparse.Namespace:
    """``[URL] [ADDRESS]`` (``[ADDRESS…]`` when ``many``), and ``--v3`` where the example supports V3."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", nargs="?", help="/dev/ttyUSB0, COM3, tcp://HOST:PORT … (default: a simulator)")
    parser.add_argument("addresses", nargs="*" if many else "?", type=_address, metavar="ADDRESS", help="12 digits")
    if v3:
        parser.add_argument("--v3", action="store_true", help="a V3 meter (default V4)")
    args = parser.parse_args()
    args.v3 = getattr(args, "v3", False)
    if not many:
        args.addresses = [args.addresses or DEFAULT_ADDRESS]
    elif not args.addresses:
        args.addresses = [f"{int(DEFAULT_ADDRESS) + n:012d}" for n in range(3)]
    args.address = args.addresses[0]
    return args


@asynccontextmanager
async def example_bus(args: argparse.Namespace, **sim: Any) -> AsyncIterator[ekm_async.Bus]:
    """The bus at ``args.url``; with no URL, a simulated bus holding a meter at each address.

    ``sim`` is passed to every simulated :class:`MeterModel` (how it starts); a real bus ignores it.
    """
    if args.url:
        async with ekm_async.open_bus(args.url) as bus:
            yield bus
        return
    kind = MeterType.V3 if args.v3 else MeterType.V4
    meters = [MeterModel(address, kind, **sim) for address in args.addresses]
    # baud=0: replies come at once, not paced as 9600 baud (where a V4 read takes about 0.6 s).
    async with (
        SimServer(SimBus(meters, baud=0, turnaround=0.001)) as server,
        ekm_async.open_bus("sim://memory", connect=server.memory_connector()) as bus,
    ):
        print(f"(no URL given: talking to a simulated {kind.value} bus)")
        yield bus


def meter_of(bus: ekm_async.Bus, args: argparse.Namespace) -> ekm_async.V3Meter | ekm_async.V4Meter:
    """The handle of ``args.address``: V3 with ``--v3``, else V4."""
    return bus.v3(args.address) if args.v3 else bus.v4(args.address)


def run(main: Callable[[argparse.Namespace], Coroutine[Any, Any, None]], args: argparse.Namespace) -> None:
    """``asyncio.run(main(args))``; a meter or bus error ends it with a one-line message, not a traceback."""
    try:
        asyncio.run(main(args))
    except (ekm_async.EkmError, OSError) as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)
