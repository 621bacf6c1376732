"""Long fuzzing of the frame decoder: the state machine of ``tests/test_decoder_machine.py``, for longer.

Runs its ``DecoderMachine`` (the invariants are listed in that module) in batches of fresh random
examples until ``--seconds`` have passed or ``--examples`` examples have run, then prints how many
examples, steps and bytes fed it ran, the events the decoder gave and the ``decode()`` calls checked.
On a failure hypothesis shrinks it and the traceback ends with the minimal failing example (the steps
that replay it); the exit status is then 1.

Run from the project root::

    .venv/bin/python benchmarks/fuzz_long.py [--seconds S] [--examples N] [--steps N] [--batch N]
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

ROOT = Path(__file__).resolve().parents[1]


def report(totals: dict[str, int], seconds: float) -> str:
    events = ", ".join(f"{name.split()[1]} {n:,}" for name, n in sorted(totals.items()) if name.startswith("events "))
    return (
        f"{totals['examples']:,} examples, {totals['steps']:,} steps, {totals['bytes']:,} bytes fed"
        f" in {seconds:.0f} s ({totals['examples'] / seconds:,.1f} examples/s); events: {events or 'none'};"
        f" {totals['decode calls']:,} decode() calls checked"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="run this long at most (default 60)")
    parser.add_argument("--examples", type=int, default=None, help="run this many examples at most (default: no limit)")
    parser.add_argument("--steps", type=int, default=50, help="steps per example at most (default 50)")
    parser.add_argument("--batch", type=int, default=25, help="examples per hypothesis run (default 25)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or min(args.steps, args.batch, args.examples or 1) < 1:
        parser.error("--seconds must be positive; --examples, --steps and --batch at least 1")
    sys.path.insert(0, str(ROOT))  # the machine lives in the test package
    machine = importlib.import_module("tests.test_decoder_machine")
    totals = machine.TOTALS
    limit = math.inf if args.examples is None else args.examples
    config = settings(
        stateful_step_count=args.steps, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    started = last = time.monotonic()
    try:
        while totals["examples"] < limit and time.monotonic() - started < args.seconds:
            batch = int(min(args.batch, limit - totals["examples"]))
            run_state_machine_as_test(machine.DecoderMachine, settings=settings(config, max_examples=batch))
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                print(f"  … {report(totals, last - started)}", file=sys.stderr, flush=True)
    finally:
        print(f"fuzz_long: {report(totals, time.monotonic() - started)}", flush=True)
    print("fuzz_long: every invariant held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
