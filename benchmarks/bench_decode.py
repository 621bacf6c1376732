"""Benchmark: ekm-async V4 A+B decoding against the vendor's ekmmeters 0.2.5, on the same frames.

What it measures, in one run:

* **ekm-async decode+merge** — for each V4 A+B frame pair: ``a = decode(A)``,
  ``b = decode(B, kwh_scale=a.kwh_scale)``, ``read = Read.of(a, b)`` and every value of the merged read
  materialised (``read.fields``): the vendor's ``request()`` output. ``decode`` checks both frames
  whole (CRC, constants, every digit); values are converted once, on first use. Frames/s counts both
  frames of a pair.
* **… A and B blocks too** — the same, also materialising every field of both blocks (``a.fields``,
  ``b.fields``): B's copies of the fields A carries are work the merged read does not need.
* **… no value used** — the same without ``read.fields``: both frames checked whole and the read
  made, nothing converted — what a consumer that looks at a few fields pays before converting them.
  Not the figure compared with the vendor's (its ``request()`` converts every field).
* **ekm-async stream+decode** — the same bytes through a :class:`FrameDecoder` first (``sent()`` the
  V4 A/B request, ``feed()`` the response, by default a whole frame per chunk; see ``--chunk``), then
  the decode+merge above: stream framing, trailer and CRC checks as bytes arrive, then decoding.
* **ekmmeters 0.2.5 request()** — ``V4Meter.request()`` with a stub port that returns the same
  frames as 255-character ``str`` (what its ``SerialPort.getResponse`` returns) and does not sleep,
  so only its parse path is timed: unpack, field conversion, CRC, calculated fields, A+B merge.
  It runs in its own environment, ``benchmarks/.venv-ekmmeters``, created on the first run with
  ``python -m venv`` and ``pip install ekmmeters==0.2.5 pyserial`` (PyPI must be reachable then), and
  reused afterwards. Before timing, every pair is checked: ``request()`` must return True and the
  library's field values must equal ekm-async's (else the run fails).

The frames: ``--pairs`` distinct pairs (default 200): the captured V4 A frame of meter 000300001184
(``examples/captured_v4a.hex``) with a B frame built for it, then A+B pairs built with
:func:`ekm_async.encode` from it, with varied energy, volts, amps, watts and power factors, all
three kWh scales. Each side runs for at least ``--seconds`` (default 3) after a warm-up round.

Target (issue tracker): ekm-async decode+merge at least 15 times the vendor's frames/s.

Run from the project root::

    .venv/bin/python benchmarks/bench_decode.py [--seconds S] [--pairs N] [--chunk BYTES] [--json]
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from _harness import HERE, ROOT, dump_json, parser, run, timed, vendor_python, vendor_report
from ekm_async import BlockKind, FrameDecoder, Read, decode, encode
from ekm_async.calculated import Value
from ekm_async.commands import LiveRead, live_read
from ekm_async.frames import Frame
from ekm_async.layouts import LAYOUTS, FieldType
from ekm_async.model import DirectionFlag

CAPTURED_A = ROOT / "examples" / "captured_v4a.hex"
VENDOR_SCRIPT = HERE / "_vendor_parse.py"
TARGET_RATIO = 15.0
CALCULATED = frozenset(
    {
        *(f"Power_Factor_Ln_{n}" for n in (1, 2, 3)),
        *(f"Net_Calc_Watts_Ln_{n}" for n in (1, 2, 3)),
        "Net_Calc_Watts_Tot",
    }
)

Pair = tuple[bytes, bytes]


# ---------------------------------------------------------------------------------------------------
# Frames


def _split(total: int, parts: int, rng: random.Random) -> list[int]:
    """``total`` split into ``parts`` non-negative ints that add up to it."""
    cuts = sorted(rng.randint(0, total) for _ in range(parts - 1))
    return [hi - lo for lo, hi in zip([0, *cuts], [*cuts, total], strict=True)]


def _b_frame(a: Mapping[str, Value], scale: int, rng: random.Random) -> bytes:
    """A plausible V4 B frame for the A block ``a``: same meter, tariffs adding up to A's totals."""
    digits: int = 10**scale
    kwh = _split(round(float(a["kWh_Tot"]) * digits), 4, rng)
    rev = _split(round(float(a["Rev_kWh_Tot"]) * digits), 4, rng)
    watts = [max(0, int(a[f"RMS_Watts_Ln_{n}"]) + rng.randint(-20, 20)) for n in (1, 2, 3)]
    seconds = int(str(a["Meter_Time"])[12:]) + 1
    volts = [round(float(a[f"RMS_Volts_Ln_{n}"]) + rng.choice((-0.1, 0, 0.1)), 1) for n in (1, 2, 3)]
    fields: dict[str, Value] = {
        "Model": a["Model"],
        "Firmware": a["Firmware"],
        "Meter_Address": a["Meter_Address"],
        **{f"kWh_Tariff_{n}": kwh[n - 1] / digits for n in (1, 2, 3, 4)},
        **{f"Rev_kWh_Tariff_{n}": rev[n - 1] / digits for n in (1, 2, 3, 4)},
        **{f"RMS_Volts_Ln_{n}": volts[n - 1] for n in (1, 2, 3)},
        **{f"Amps_Ln_{n}": a[f"Amps_Ln_{n}"] for n in (1, 2, 3)},
        **{f"RMS_Watts_Ln_{n}": watts[n - 1] for n in (1, 2, 3)},
        "RMS_Watts_Tot": sum(watts),
        **{f"Cos_Theta_Ln_{n}": a[f"Cos_Theta_Ln_{n}"] for n in (1, 2, 3)},
        "RMS_Watts_Max_Demand": rng.randint(0, 9_999_999) / 10,
        "Max_Demand_Period": rng.choice((15, 30, 60)),
        **{f"Pulse_Ratio_{n}": rng.choice((1, 100, 1000)) for n in (1, 2, 3)},
        "CT_Ratio": rng.choice((100, 200, 400, 800)),
        "Max_Demand_Interval_Reset": rng.choice(("off", "monthly", "weekly", "daily", "hourly")),
        "Pulse_Output_Ratio": rng.choice((1, 800, 1600)),
        "Status_A": "30",
        "Status_B": "30",
        "Status_C": "30",
        "Meter_Time": f"{str(a['Meter_Time'])[:12]}{seconds % 60:02d}",
    }
    return encode("v4b", fields, kwh_scale=scale)


def _a_variant(template: bytes, scale: int, rng: random.Random) -> bytes:
    """A V4 A frame of the captured meter with new readings, at kWh scale ``scale``."""
    digits: int = 10**scale

    def kwh(most: int) -> float:
        return rng.randint(0, most) / digits

    lines = [rng.randint(0, 12_000) for _ in (1, 2, 3)]
    weekday, hh, mm, ss = rng.randint(1, 7), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 58)
    fields: dict[str, Value] = {
        "kWh_Scale": scale,
        "kWh_Tot": kwh(99_999_999),
        "Reactive_Energy_Tot": kwh(9_999_999),
        "Rev_kWh_Tot": kwh(9_999_999),
        **{f"kWh_Ln_{n}": kwh(33_333_333) for n in (1, 2, 3)},
        **{f"Rev_kWh_Ln_{n}": kwh(3_333_333) for n in (1, 2, 3)},
        "Resettable_kWh_Tot": kwh(999_999),
        "Resettable_Rev_kWh_Tot": kwh(99_999),
        **{f"RMS_Volts_Ln_{n}": rng.randint(1150, 1260) / 10 for n in (1, 2, 3)},
        **{f"Amps_Ln_{n}": rng.randint(0, 1000) / 10 for n in (1, 2, 3)},
        **{f"RMS_Watts_Ln_{n}": lines[n - 1] for n in (1, 2, 3)},
        "RMS_Watts_Tot": sum(lines),
        **{f"Cos_Theta_Ln_{n}": rng.choice(("0100", "L099", "L095", "L087", "C098", "C000")) for n in (1, 2, 3)},
        **{f"Reactive_Pwr_Ln_{n}": rng.randint(0, 2000) for n in (1, 2, 3)},
        "Line_Freq": rng.randint(5990, 6010) / 100,
        **{f"Pulse_Cnt_{n}": rng.randint(0, 99_999_999) for n in (1, 2, 3)},
        "State_Watts_Dir": rng.choice(list(DirectionFlag)).value,
        "State_Out": rng.randint(1, 4),
        "Meter_Time": f"2202210{weekday}{hh:02d}{mm:02d}{ss:02d}",
    }
    return encode("v4a", fields, template=template)


def build_pairs(count: int, seed: int = 2024) -> list[Pair]:
    """``count`` distinct V4 A+B pairs; the first is the captured A frame; kWh scales 0, 1, 2 in turn."""
    rng = random.Random(seed)
    captured = bytes.fromhex(CAPTURED_A.read_text().strip())
    pairs: list[Pair] = []
    seen: set[Pair] = set()
    while len(pairs) < count:
        a_raw = captured if not pairs else _a_variant(captured, len(pairs) % 3, rng)
        a = decode(a_raw)
        pair = (a_raw, _b_frame(a.fields, a.kwh_scale, rng))
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    return pairs


_CODES = {
    spec.name: {said: code for code, said in spec.codes}
    for layout in LAYOUTS.values()
    for spec in layout.fields
    if spec.type is FieldType.CODE
}
"""Code fields (minutes, words in ekm-async) → the wire's code, which ekmmeters keeps as its text."""


def _texts(fields: Mapping[str, Value], names: frozenset[str] | set[str]) -> dict[str, str]:
    """Fields as the text ekmmeters keeps (``str()`` of the value: same float and int formatting)."""
    return {name: str(_CODES.get(name, {}).get(value, value)) for name, value in fields.items() if name in names}


def expectations(pair: Pair) -> dict[str, Any]:
    """The pair as hex, with the field values ekm-async decodes, for the vendor side to check against.

    A and B blocks: every field (B's power factors included). The merged read: the fields only one of
    the blocks carries; the shared ones differ by design (ekm-async keeps A's, ekmmeters B's).
    """
    a = decode(pair[0])
    b = decode(pair[1], kwh_scale=a.kwh_scale)
    read = Read.of(a, b)
    a_names = {f.name for f in LAYOUTS[BlockKind.V4A].fields}
    b_names = {f.name for f in LAYOUTS[BlockKind.V4B].fields}
    return {
        "a": pair[0].hex(),
        "b": pair[1].hex(),
        "a_fields": _texts(a.fields, a_names),
        "b_fields": _texts(b.fields, b_names | (set(b.fields) & CALCULATED)),
        "read": _texts(read.fields, a_names ^ b_names),
    }


# ---------------------------------------------------------------------------------------------------
# Timing


def decode_round(pairs: list[Pair], *, both_blocks: bool = False, values: bool = True) -> Callable[[], None]:
    """Decode each pair and materialise every value of the merged read (``read.fields``).

    ``both_blocks``: also materialise every field of the A and B blocks themselves (work the merged
    read does not need: B's copies of the fields A carries), for comparison. ``values=False``: no
    value at all (both frames checked whole, the read made): what a consumer of a few fields pays
    before converting them.
    """

    def one_round() -> None:
        for a_raw, b_raw in pairs:
            a = decode(a_raw)
            read = Read.of(a, decode(b_raw, kwh_scale=a.kwh_scale))
            if both_blocks:
                _ = read.a.fields, read.b.fields  # type: ignore[union-attr]
            if values:
                _ = read.fields

    return one_round


def _frame_of(events: list[Any]) -> bytes:
    if len(events) != 1 or not isinstance(events[0], Frame):
        raise RuntimeError(f"FrameDecoder: expected one Frame, got {events!r}")
    return events[0].raw


def stream_round(pairs: list[Pair], chunk: int) -> Callable[[], None]:
    address = str(decode(pairs[0][0])["Meter_Address"])
    request_a, request_b = live_read(address, LiveRead.V4A), live_read(address, LiveRead.V4B)

    def chunks(frame: bytes) -> list[bytes]:
        return [frame[i : i + chunk] for i in range(0, len(frame), chunk)]

    prepared = [(chunks(a), chunks(b)) for a, b in pairs]
    decoder = FrameDecoder()

    def receive(request: bytes, pieces: list[bytes]) -> bytes:
        decoder.sent(request)
        events = []
        for piece in pieces:
            events += decoder.feed(piece)
        return _frame_of(events)

    def one_round() -> None:
        for a_chunks, b_chunks in prepared:
            a = decode(receive(request_a, a_chunks))
            _ = Read.of(a, decode(receive(request_b, b_chunks), kwh_scale=a.kwh_scale)).fields

    return one_round


# ---------------------------------------------------------------------------------------------------
# The vendor's side


async def run_vendor(python: Path, pairs: list[Pair], seconds: float) -> dict[str, Any]:
    """Time ekmmeters' ``request()`` over ``pairs`` in its own environment; its JSON report."""
    data = {
        "address": str(decode(pairs[0][0])["Meter_Address"]),
        "pairs": [expectations(pair) for pair in pairs],
    }
    with tempfile.TemporaryDirectory(prefix="bench-ekm-") as tmp:
        frames = Path(tmp) / "frames.json"
        frames.write_text(json.dumps(data))
        return await vendor_report([str(python), str(VENDOR_SCRIPT), str(frames), str(seconds)], 60 + 20 * seconds)


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    options = parser(__doc__)
    options.add_argument("--seconds", type=float, default=3.0, help="minimum time per measurement (default 3)")
    options.add_argument("--pairs", type=int, default=200, help="distinct V4 A+B frame pairs (default 200)")
    options.add_argument("--chunk", type=int, default=255, help="bytes per FrameDecoder.feed() (default 255)")
    args = options.parse_args(argv)
    if args.seconds <= 0 or args.pairs < 1 or args.chunk < 1:
        options.error("--seconds, --pairs and --chunk must be positive")

    pairs = build_pairs(args.pairs)
    per_round = 2 * len(pairs)
    python = run("bench_decode", asyncio.to_thread(vendor_python))
    ours = timed(decode_round(pairs), per_round, args.seconds)
    stream = timed(stream_round(pairs, args.chunk), per_round, args.seconds)
    both = timed(decode_round(pairs, both_blocks=True), per_round, args.seconds)
    checked = timed(decode_round(pairs, values=False), per_round, args.seconds)
    vendor = run("bench_decode", run_vendor(python, pairs, args.seconds))

    ratio = ours.frames_per_s / vendor["frames_per_s"]
    stream_ratio = stream.frames_per_s / vendor["frames_per_s"]
    passed = ratio >= TARGET_RATIO
    scales = sorted({decode(a).kwh_scale for a, _ in pairs})

    if args.json:
        figures = {
            "pairs": len(pairs),
            "frames_per_round": per_round,
            "kwh_scales": scales,
            "min_seconds": args.seconds,
            "chunk": args.chunk,
            "python": sys.version.split()[0],
            "ekm_async": ours.as_dict(),
            "ekm_async_stream": stream.as_dict(),
            "ekm_async_both_blocks": both.as_dict(),
            "ekm_async_no_values": checked.as_dict(),
            "vendor": vendor,
            "ratio": ratio,
            "ratio_stream": stream_ratio,
            "target_ratio": TARGET_RATIO,
            "pass": passed,
        }
        print(dump_json(figures))
        return 0

    vendor_name = f"ekmmeters {vendor['version']} request()"
    rows = [
        ("ekm-async decode+merge", ours.frames_per_s, ours.us_per_frame, ours.median_us_per_frame),
        (
            f"ekm-async stream+decode ({args.chunk} B chunks)",
            stream.frames_per_s,
            stream.us_per_frame,
            stream.median_us_per_frame,
        ),
        ("ekm-async decode+merge, A and B blocks too", both.frames_per_s, both.us_per_frame, both.median_us_per_frame),
        (
            "ekm-async decode+merge, no value used",
            checked.frames_per_s,
            checked.us_per_frame,
            checked.median_us_per_frame,
        ),
        (vendor_name, vendor["frames_per_s"], vendor["us_per_frame"], vendor["median_us_per_frame"]),
    ]
    width = max(len(r[0]) for r in rows)
    print(
        f"V4 A+B: {len(pairs)} distinct pairs ({per_round} frames, kWh scales {scales}), "
        f"≥ {args.seconds:g} s each, Python {sys.version.split()[0]}"
    )
    print(
        f"ekmmeters verified: request() True for all {vendor['verified_pairs']} pairs, "
        f"{vendor['fields_compared']} field values equal to ekm-async's"
    )
    print(f"best round of each (median in brackets)\n{'':{width}}  {'frames/s':>11}  {'µs/frame':>9}")
    for name, rate, us, median in rows:
        print(f"{name:{width}}  {rate:11,.0f}  {us:9.2f}  ({median:.2f})")
    print(f"ratio ekm-async/vendor: {ratio:.1f}×  (stream+decode: {stream_ratio:.1f}×)")
    print(f"target ≥ {TARGET_RATIO:g}×: {'PASS' if passed else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
