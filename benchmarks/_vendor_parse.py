"""The vendor side of ``bench_decode.py``: time ekmmeters 0.2.5's ``V4Meter.request()`` on given frames.

Runs in the benchmark's own environment (``benchmarks/.venv-ekmmeters``, with ``ekmmeters==0.2.5``),
never in the project's: ``bench_decode.py`` starts it as

    .venv-ekmmeters/bin/python benchmarks/_vendor_parse.py FRAMES.json SECONDS

FRAMES.json holds ``{"address": ..., "pairs": [{"a": hex, "b": hex, "a_fields": {...}, "b_fields": {...},
"read": {...}}, ...]}``: each V4 A+B frame pair and the fields ekm-async decoded from it, as text.

A stub port hands ``request()`` the frames (A, then B, as the library's ``getResponse`` would return
them: 255-character ``str``) without the real port's 0.2 s sleeps, so only parsing is timed:
unpack, field conversion, CRC, calculated fields and the A+B merge. A first, untimed pass checks
that ``request()`` returns True for every pair and that the library's field values equal
ekm-async's; any difference or failure exits non-zero. Prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import ekmmeters  # type: ignore[import-not-found,import-untyped,unused-ignore]

_STRING = 3  # MeterData.StringValue: the index of a field's text in a SerialBlock entry


class StubPort:
    """Duck-typed ``ekmmeters.SerialPort``: ``write`` does nothing, ``getResponse`` returns the next frame."""

    def __init__(self, responses: list[str]) -> None:
        self._responses = responses
        self._next = 0

    def write(self, output: str) -> None:
        """The request ``request()`` sends: dropped (the real port writes it and sleeps 0.2 s)."""

    def getResponse(self, context: str = "") -> str:
        """The next 255-character response, cycling through the frames in order A, B, A, B, …"""
        response = self._responses[self._next]
        self._next = (self._next + 1) % len(self._responses)
        return response


def _fail(message: str) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(2)


def _request(meter: Any) -> bool:
    """``meter.request()``; an exception in it (ekmmeters 0.2.5 re-raises as TypeError) fails the run."""
    try:
        return bool(meter.request())
    except Exception as exc:
        print(f"ekmmeters request() raised {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def _compare(block: Any, expected: dict[str, str], what: str) -> int:
    """Check the block's text values against ekm-async's; returns the number of fields compared."""
    for name, want in expected.items():
        got = block[name][_STRING]  # our field names are ekmmeters' own
        if got != want:
            _fail(f"{what}: ekmmeters {name} = {got!r}, ekm-async {want!r}")
    return len(expected)


def main(argv: list[str]) -> None:
    data = json.loads(Path(argv[1]).read_text())
    seconds = float(argv[2])
    pairs = data["pairs"]
    responses: list[str] = []
    for pair in pairs:
        responses += [bytes.fromhex(pair["a"]).decode("ascii"), bytes.fromhex(pair["b"]).decode("ascii")]

    ekmmeters.ekm_set_log(ekmmeters.ekm_no_log)
    meter = ekmmeters.V4Meter(data["address"])
    meter.attachPort(StubPort(responses))

    # Untimed pass: every request() must succeed and agree with ekm-async, field by field.
    compared = 0
    for i, pair in enumerate(pairs):
        if not _request(meter):
            _fail(f"pair {i}: ekmmeters request() returned False (A CRC ok: {meter.m_a_crc}, B: {meter.m_b_crc})")
        compared += _compare(meter.m_blk_a, pair["a_fields"], f"pair {i} A block")
        compared += _compare(meter.m_blk_b, pair["b_fields"], f"pair {i} B block")
        compared += _compare(meter.getReadBuffer(), pair["read"], f"pair {i} merged read")

    # Timed: rounds of one request() per pair, for at least ``seconds``; the best and median round count.
    rounds: list[float] = []
    failed = 0
    request = meter.request
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        for _ in pairs:
            if not request():
                failed += 1
        rounds.append(time.perf_counter() - t0)
    if failed:
        _fail(f"ekmmeters request() returned False {failed} times in {len(rounds) * len(pairs)} timed calls")

    frames_per_round = 2 * len(pairs)
    best, median = min(rounds), statistics.median(rounds)
    print(
        json.dumps(
            {
                "library": "ekmmeters",
                "version": version("ekmmeters"),
                "python": sys.version.split()[0],
                "rounds": len(rounds),
                "frames_per_round": frames_per_round,
                "frames_per_s": frames_per_round / best,
                "us_per_frame": best / frames_per_round * 1e6,
                "median_us_per_frame": median / frames_per_round * 1e6,
                "verified_pairs": len(pairs),
                "fields_compared": compared,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv)
