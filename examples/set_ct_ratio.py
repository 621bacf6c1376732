"""Set the current-transformer ratio and read it back (ekmmeters: "CT Ratio", ``setCTRatio()``).

V3 and V4. Allowed ratios are the members of ``CTRatio`` (``800`` or ``"AMPS_800"`` work as well);
anything else raises ``ValueError`` before a byte is sent. ``CT_Ratio`` comes with every read.
"""

from __future__ import annotations

import argparse

from _common import arguments, example_bus, meter_of, run
from ekm_async import CTRatio, Refused


async def main(args: argparse.Namespace) -> None:
    async with example_bus(args) as bus:
        meter = meter_of(bus, args)
        try:
            await meter.set_ct_ratio(CTRatio.AMPS_800)  # every setter takes password=… (default 00000000)
        except Refused as exc:  # the meter did not acknowledge: wrong password, or it refused the value
            print(f"not set: {exc}")
            return
        read = await meter.read()
        print(f"CT is {read.CT_Ratio}")


if __name__ == "__main__":
    run(main, arguments(__doc__))
