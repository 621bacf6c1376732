"""Change the meter password, use the new one, and change it back (ekmmeters: ``setMeterPassword()``).

V3 and V4. Every write sends the password first; a wrong one is not acknowledged and the setter
raises ``Refused`` (nothing was changed). After ``set_password`` the handle uses the new password;
pass ``password=`` to a setter to use another one for that call.

Careful on a real meter: EKM has no back door. If a password is lost, it is gone.
"""

from __future__ import annotations

import argparse

from _common import arguments, example_bus, meter_of, run
from ekm_async import CTRatio, Refused

OLD = "00000000"  # the factory default
NEW = "12345678"


async def main(args: argparse.Namespace) -> None:
    async with example_bus(args) as bus:
        meter = meter_of(bus, args)  # bus.v4(address, password=...) starts with another password

        await meter.set_password(NEW, password=OLD)
        print(f"password changed to {NEW}; this handle now sends {meter.password}")

        try:
            await meter.set_ct_ratio(CTRatio.AMPS_400, password=OLD)
        except Refused as exc:
            print(f"the old password is refused: {exc}")

        await meter.set_ct_ratio(CTRatio.AMPS_400)  # with the new password
        print(f"the new one is accepted: CT_Ratio = {(await meter.read()).CT_Ratio}")

        await meter.set_password(OLD)
        print(f"password back to {OLD}")


if __name__ == "__main__":
    run(main, arguments(__doc__))
