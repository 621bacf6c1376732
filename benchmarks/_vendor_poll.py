"""The vendor side of ``bench_bus.py``: ekmmeters 0.2.5 polling V4 meters over a serial port, as shipped.

Runs in the benchmark's own environment (``benchmarks/.venv-ekmmeters``, with ``ekmmeters==0.2.5`` and
pyserial), never in the project's: ``bench_bus.py`` starts it as

    .venv-ekmmeters/bin/python benchmarks/_vendor_poll.py PORT SECONDS ADDRESS [ADDRESS …] [--force-wait S]

Opens ``ekmmeters.SerialPort(PORT, 9600)`` (with the vendor's default ``force_wait`` unless
``--force-wait`` is given), attaches one ``V4Meter`` per address and calls ``request()`` on them in
turn (A then B read each call; 0.2.5 never sends the close string) until ``SECONDS`` have passed; the
request in progress then is finished and counted. A read counts as good when ``request()`` returns
True and the read's ``Meter_Address`` is the meter asked; anything else is a failure (an exception
escaping ``request()`` too: 0.2.5's ``traceback.format_exc(sys.exc_info())`` turns any error in it into
a TypeError on Python ≥ 3.10). Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import time
from importlib.metadata import version
from typing import Any

import ekmmeters  # type: ignore[import-not-found,import-untyped,unused-ignore]
import serial  # type: ignore[import-not-found,import-untyped,unused-ignore]


def _default_force_wait() -> float:
    """The vendor's own default ``force_wait`` of ``SerialPort`` (0.2 s in 0.2.5)."""
    default = inspect.signature(ekmmeters.SerialPort.__init__).parameters["force_wait"].default
    return float(default)


def _request(meter: Any, address: str) -> tuple[bool, str]:
    """One ``request()``: (good, why not)."""
    try:
        ok = bool(meter.request())
    except Exception as exc:  # noqa: BLE001 - whatever escapes the vendor is a failed read, with its cause
        cause = exc.__context__
        return False, f"{type(exc).__name__}" + (f" while handling {type(cause).__name__}" if cause else "")
    if not ok:
        return False, f"request() False (A CRC {meter.m_a_crc}, B CRC {meter.m_b_crc})"
    got = meter.getField(ekmmeters.Field.Meter_Address)
    if got != address:
        return False, f"read of meter {got!r}"
    return True, ""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("port")
    parser.add_argument("seconds", type=float)
    parser.add_argument("addresses", nargs="+")
    parser.add_argument("--force-wait", type=float, default=None, help="SerialPort force_wait (vendor default)")
    args = parser.parse_args(argv)

    ekmmeters.ekm_set_log(ekmmeters.ekm_no_log)
    force_wait = _default_force_wait() if args.force_wait is None else args.force_wait
    port = (
        ekmmeters.SerialPort(args.port, 9600)
        if args.force_wait is None
        else ekmmeters.SerialPort(args.port, 9600, force_wait=args.force_wait)
    )
    if not port.initPort():
        print(f"ekmmeters SerialPort({args.port!r}).initPort() failed", file=sys.stderr)
        return 2
    meters = []
    for address in args.addresses:
        meter = ekmmeters.V4Meter(address)
        meter.attachPort(port)
        meters.append((address, meter))

    durations: list[float] = []
    good = 0
    errors: dict[str, int] = {}
    start = time.perf_counter()
    cpu = time.process_time()
    end = start
    calls = 0
    try:
        while end - start < args.seconds:
            address, meter = meters[calls % len(meters)]
            t0 = time.perf_counter()
            ok, why = _request(meter, address)
            end = time.perf_counter()
            durations.append(end - t0)
            calls += 1
            if ok:
                good += 1
            else:
                errors[why] = errors.get(why, 0) + 1
    finally:
        cpu = time.process_time() - cpu
        port.closePort()

    elapsed = end - start
    print(
        json.dumps(
            {
                "library": "ekmmeters",
                "version": version("ekmmeters"),
                "pyserial": serial.VERSION,
                "python": sys.version.split()[0],
                "port": args.port,
                "force_wait": force_wait,
                "force_wait_is_default": args.force_wait is None,
                "poll_sleep": port.m_wait_sleep,
                "meters": args.addresses,
                "calls": calls,
                "reads": good,
                "failures": calls - good,
                "errors": errors,
                "elapsed": elapsed,
                "cpu_s": cpu,
                "reads_per_s": good / elapsed if elapsed > 0 else 0.0,
                "median_request_s": statistics.median(durations) if durations else None,
                "min_request_s": min(durations, default=None),
                "max_request_s": max(durations, default=None),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
