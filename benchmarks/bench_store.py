"""Benchmark: V4 reads stored per second, ekm-async's SqliteStore against the vendor's ekmmeters 0.2.5.

What it measures, in one run, on the same reads:

* **ekm-async SqliteStore** — ``--reads`` V4 reads (default 50,000) of ``--meters`` simulated meters
  (default 5, kWh scales 0, 1, 2 in turn): each meter's :class:`~ekm_async.sim.MeterModel` is
  ``advance``d one second per step and its A and B frames taken, the reads built as the bus builds
  them: ``a = decode(A)``, ``Read.of(a, decode(B, kwh_scale=a.kwh_scale), time=…)``. Every round
  decodes fresh ``Read`` objects (values not yet materialised), opens a fresh
  ``SqliteStore(path, batch_size=…, flush_interval=…)`` (file creation and schema not timed), then
  times ``await store.add(read)`` for every read and ``await store.close()`` (which commits the last
  batch): from handing the store the reads until everything is committed. Best of ``--rounds``
  (default 3). Each round is then verified: ``reads`` holds one row per read, and ``--sample`` rows
  (default 500, spread over the file) equal their read column by column (time, kind, raw frames and
  every field of ``read.fields``, none missing; NULL for the V3-only columns), value and type.
* **where its time goes** — the same reads, fresh again, in steps (best of ``--rounds`` each):
  materialising ``read.fields``; building the rows (``ekm_async.store.row_of``, values already
  materialised); plain ``sqlite3`` ``executemany`` + ``commit`` of those rows in batches of
  ``batch_size``, on a file with the store's schema and pragmas. The rest of the store's time, by
  difference: aiosqlite's hand-offs to its thread and the asyncio around them, the steps interleaved
  rather than each in a tight loop (caches), and noise (the steps and the rounds are timed apart).
* **ekmmeters 0.2.5 SqliteMeterDB** — the first ``--vendor-reads`` of the same reads (default 2,000):
  ``benchmarks/_vendor_store.py`` in the vendor's own environment (``benchmarks/.venv-ekmmeters``, made
  by ``_harness.vendor_python``), a fresh ``SqliteMeterDB(connection_string=…)`` and ``dbCreate()``
  per round, then for each read ``V4Meter.request()`` (stub port returning the read's frames; not
  timed) and ``meter.insert(db)`` (timed). Best of ``--vendor-rounds`` (default 3). Each round is
  verified there (row count, raw frames in order, a few field values equal to ekm-async's).

Both libraries run with their own defaults: the store in WAL mode with ``synchronous=NORMAL`` (no
fsync per commit; ``--synchronous FULL`` to change it), one transaction per batch; ekmmeters opens a
connection per read, builds the INSERT by string concatenation and commits it in the default rollback
journal (``synchronous=FULL``: fsyncs per read). The files live in a temporary directory (under
``--tmp`` if given), removed afterwards; the storage under it matters for the vendor's figure.

Target (issue 5): ekm-async at least 20,000 rows/s and at least 25 times the vendor's rows/s.

Run from the project root::

    .venv/bin/python benchmarks/bench_store.py [--reads N] [--vendor-reads N] [--meters N] [--rounds N]
        [--vendor-rounds N] [--batch-size N] [--flush-interval S] [--synchronous NORMAL|FULL]
        [--sample N] [--tmp DIR] [--json]

Exit status 0 when the target is met, 1 when not; 2 when a verification or the vendor's run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _harness import HERE, BenchError, Rate, dump_json, parser, run, vendor_python, vendor_report
from ekm_async import BlockKind, Read, SqliteStore, decode
from ekm_async.calculated import Value
from ekm_async.sim import MeterModel
from ekm_async.store import READ_COLUMNS, row_of

VENDOR_SCRIPT = HERE / "_vendor_store.py"
TARGET_ROWS_PER_S = 20_000.0
TARGET_RATIO = 25.0
FIRST_ADDRESS = 300001184  # 000300001184, the captured meter of examples/, then the next addresses
START = datetime(2026, 1, 5, 8, 0, 0, tzinfo=UTC)
STEP = 1.0  # seconds between two reads of a meter
# Fields the vendor's check compares with ekm-async's values: carried by only one of the V4 blocks
# (where both carry one, the vendor keeps B's value and ekm-async A's), and the address.
VENDOR_CHECKED = ("Meter_Address", "kWh_Tot", "Line_Freq", "Pulse_Cnt_1", "kWh_Tariff_1", "CT_Ratio")


# ---------------------------------------------------------------------------------------------------
# Reads


@dataclass(frozen=True, slots=True)
class Frames:
    """One read as the bus receives it: the A and B frames and when they arrived."""

    a: bytes
    b: bytes
    time: datetime


def build_frames(count: int, meters: int) -> list[Frames]:
    """``count`` reads of ``meters`` simulated V4 meters in turn, one second apart per meter."""
    models = [MeterModel(f"{FIRST_ADDRESS + n:012d}", kwh_scale=n % 3) for n in range(meters)]
    frames: list[Frames] = []
    step = 0
    while len(frames) < count:
        now = step * STEP
        for model in models[: count - len(frames)]:
            model.advance(now)
            frames.append(
                Frames(model.frame(BlockKind.V4A), model.frame(BlockKind.V4B), START + timedelta(seconds=now))
            )
        step += 1
    return frames


def fresh_reads(frames: Sequence[Frames]) -> list[Read]:
    """New ``Read`` objects of ``frames``, decoded as the bus decodes them; no value materialised yet."""
    reads: list[Read] = []
    for f in frames:
        a = decode(f.a)
        reads.append(Read.of(a, decode(f.b, kwh_scale=a.kwh_scale), time=f.time))
    return reads


# ---------------------------------------------------------------------------------------------------
# ekm-async


@dataclass(frozen=True, slots=True)
class Settings:
    batch_size: int
    flush_interval: float
    synchronous: str


async def store_round(path: Path, reads: list[Read], settings: Settings) -> float:
    """Seconds from handing a fresh store the first read to the close that commits the last."""
    store = SqliteStore(
        path,
        batch_size=settings.batch_size,
        flush_interval=settings.flush_interval,
        synchronous=settings.synchronous,
    )
    await store.open()
    try:
        add = store.add
        t0 = time.perf_counter()
        for read in reads:
            await add(read)
        await store.close()
        elapsed = time.perf_counter() - t0
    finally:
        await store.close()
    if store.accepted != len(reads) or store.committed != len(reads):
        raise BenchError(f"store accepted {store.accepted} and committed {store.committed} of {len(reads)} reads")
    return elapsed


def _same(got: object, want: object) -> bool:
    return got == want and type(got) is type(want)


def verify(path: Path, reads: list[Read], sample: int) -> int:
    """Row count == reads, and ``sample`` rows spread over the file equal their reads; values compared."""
    with sqlite3.connect(path) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM reads").fetchone()
        if count != len(reads):
            raise BenchError(f"{path.name}: {count} rows for {len(reads)} reads")
        picks = min(sample, len(reads))
        ids = sorted({1 + round(i * (len(reads) - 1) / max(1, picks - 1)) for i in range(picks)})
        cursor = db.execute(f"SELECT * FROM reads WHERE id IN ({', '.join('?' * len(ids))}) ORDER BY id", ids)
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    db.close()
    if [row[0] for row in rows] != ids:
        raise BenchError(f"{path.name}: ids are not 1..{len(reads)} in the order of the reads")
    compared = 0
    for row in rows:
        stored = dict(zip(names, row, strict=True))
        read = reads[stored.pop("id") - 1]
        fields = read.fields
        if read.time is None or read.b is None:
            raise BenchError("a read without its time or B block")
        expected: dict[str, Value | bytes | None] = {
            "time_utc": read.time.timestamp(),
            "kind": "v4",
            "raw_a": read.a.raw,
            "raw_b": read.b.raw,
        }
        missing = set(fields) - set(stored)
        if missing:
            raise BenchError(f"{path.name}: no column for the read's fields {sorted(missing)}")
        for name, got in stored.items():
            want = expected[name] if name in expected else fields.get(name)
            if not _same(got, want):
                raise BenchError(f"{path.name} row {row[0]}: {name} = {got!r}, the read's {want!r}")
            compared += 1
    return compared


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Best-of seconds per step, for all the reads."""

    materialise: float
    rows: float
    sqlite: float


def _insert_sql() -> str:
    columns = ", ".join(f'"{name}"' for name in READ_COLUMNS)
    return f"INSERT INTO reads ({columns}) VALUES ({', '.join('?' * len(READ_COLUMNS))})"


async def breakdown_round(path: Path, frames: Sequence[Frames], settings: Settings) -> Breakdown:
    """The store's work in steps: ``read.fields``, ``row_of``, plain sqlite3 batches with its pragmas."""
    reads = fresh_reads(frames)
    t0 = time.perf_counter()
    for read in reads:
        _ = read.fields
    t1 = time.perf_counter()
    rows = [row_of(read) for read in reads]
    t2 = time.perf_counter()
    async with SqliteStore(path):  # the schema, as the store makes it
        pass
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={settings.synchronous}")
        sql, size = _insert_sql(), settings.batch_size
        t3 = time.perf_counter()
        for start in range(0, len(rows), size):
            db.executemany(sql, rows[start : start + size])
            db.commit()
        t4 = time.perf_counter()
        (count,) = db.execute("SELECT COUNT(*) FROM reads").fetchone()
    finally:
        db.close()
    if count != len(rows):
        raise BenchError(f"plain sqlite3: {count} rows for {len(rows)}")
    return Breakdown(t1 - t0, t2 - t1, t4 - t3)


# ---------------------------------------------------------------------------------------------------
# The vendor's side


def _vendor_reads(frames: Sequence[Frames]) -> list[dict[str, Any]]:
    out = []
    for read, f in zip(fresh_reads(frames), frames, strict=True):
        out.append(
            {
                "address": read.address,
                "a": f.a.hex(),
                "b": f.b.hex(),
                "check": {name: read.fields[name] for name in VENDOR_CHECKED},
            }
        )
    return out


async def run_vendor(python: Path, frames: Sequence[Frames], rounds: int, workdir: Path) -> dict[str, Any]:
    """ekmmeters' ``SqliteMeterDB`` inserts of ``frames`` in its own environment; its JSON report."""
    data = workdir / "vendor-reads.json"
    data.write_text(json.dumps({"reads": _vendor_reads(frames)}))
    command = [str(python), str(VENDOR_SCRIPT), str(data), str(workdir), str(rounds)]
    return await vendor_report(command, 120 + 0.2 * len(frames) * rounds)


# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Results:
    ours: Rate
    verified_rows: int
    values_compared: int
    breakdown: Breakdown


async def run_ours(workdir: Path, frames: list[Frames], args: argparse.Namespace, settings: Settings) -> Results:
    rounds: list[float] = []
    verified = compared = 0
    for n in range(args.rounds):
        path = workdir / f"ekm-async-{n}.db"
        reads = fresh_reads(frames)
        rounds.append(await store_round(path, reads, settings))
        compared += verify(path, reads, args.sample)
        verified += len(reads)
        del reads
        for file in workdir.glob(f"{path.name}*"):
            file.unlink()
    steps: list[Breakdown] = []
    for n in range(args.rounds):
        path = workdir / f"steps-{n}.db"
        steps.append(await breakdown_round(path, frames, settings))
        for file in workdir.glob(f"{path.name}*"):
            file.unlink()
    best = Breakdown(min(s.materialise for s in steps), min(s.rows for s in steps), min(s.sqlite for s in steps))
    return Results(Rate(len(frames), tuple(rounds)), verified, compared, best)


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    options = parser(__doc__)
    options.add_argument("--reads", type=_positive(int), default=50_000, help="reads stored by ekm-async (50,000)")
    options.add_argument("--vendor-reads", type=_positive(int), default=2_000, help="reads stored by ekmmeters (2,000)")
    options.add_argument("--meters", type=_positive(int), default=5, help="simulated meters (5)")
    options.add_argument("--rounds", type=_positive(int), default=3, help="ekm-async rounds, best counts (3)")
    options.add_argument("--vendor-rounds", type=_positive(int), default=3, help="ekmmeters rounds, best counts (3)")
    options.add_argument("--batch-size", type=_positive(int), default=500, help="SqliteStore batch_size (500)")
    options.add_argument("--flush-interval", type=_positive(float), default=1.0, help="SqliteStore flush_interval (1)")
    options.add_argument("--synchronous", choices=("NORMAL", "FULL"), default="NORMAL", help="SqliteStore (NORMAL)")
    options.add_argument("--sample", type=_positive(int), default=500, help="rows compared per round (500)")
    options.add_argument("--tmp", type=Path, default=None, help="directory for the temporary files")
    args = options.parse_args(argv)

    settings = Settings(args.batch_size, args.flush_interval, args.synchronous)
    python = run("bench_store", asyncio.to_thread(vendor_python))
    frames = build_frames(max(args.reads, args.vendor_reads), args.meters)
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=args.tmp) as tmp:
        workdir = Path(tmp)
        results = run("bench_store: verification failed", run_ours(workdir, frames[: args.reads], args, settings))
        vendor = run("bench_store", run_vendor(python, frames[: args.vendor_reads], args.vendor_rounds, workdir))

    ours = results.ours
    ratio = ours.frames_per_s / vendor["rows_per_s"]
    passed = ours.frames_per_s >= TARGET_ROWS_PER_S and ratio >= TARGET_RATIO
    steps = results.breakdown
    per_row = 1e6 / args.reads
    step_us = {
        "read_fields": steps.materialise * per_row,
        "row_of": steps.rows * per_row,
        "sqlite3_executemany_commit": steps.sqlite * per_row,
    }
    step_us["rest_by_difference"] = ours.us_per_frame - sum(step_us.values())
    scales = sorted({decode(f.a).kwh_scale for f in frames[: args.meters]})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # other work on the machine skews figures

    if args.json:
        figures = {
            "reads": args.reads,
            "meters": args.meters,
            "kwh_scales": scales,
            "batch_size": args.batch_size,
            "flush_interval": args.flush_interval,
            "synchronous": args.synchronous,
            "python": sys.version.split()[0],
            "sqlite": sqlite3.sqlite_version,
            "cpus": os.cpu_count(),
            "load_average_1min": load,
            "ekm_async": {
                "rounds": len(ours.rounds),
                "rows_per_round": ours.frames_per_round,
                "rows_per_s": ours.frames_per_s,
                "us_per_row": ours.us_per_frame,
                "median_us_per_row": ours.median_us_per_frame,
                "verified_rows": results.verified_rows,
                "values_compared": results.values_compared,
                "steps_us_per_row": step_us,
            },
            "vendor": vendor,
            "ratio": ratio,
            "target_rows_per_s": TARGET_ROWS_PER_S,
            "target_ratio": TARGET_RATIO,
            "pass": passed,
        }
        print(dump_json(figures))
        return 0 if passed else 1

    print(
        f"V4 reads of {args.meters} simulated meters (kWh scales {scales}); Python {sys.version.split()[0]}, "
        f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs"
        + ("" if load is None else f", load average {load:.2f} at the end")
    )
    print(
        f"ekm-async SqliteStore: {args.reads:,} reads per round, {args.rounds} rounds, batch_size {args.batch_size}, "
        f"flush_interval {args.flush_interval:g} s, WAL synchronous={args.synchronous}; verified: one row per "
        f"read in every round, {results.values_compared:,} sampled column values equal to the reads'"
    )
    print(
        f"ekmmeters {vendor['version']} SqliteMeterDB: {vendor['rows_per_round']:,} reads per round, "
        f"{vendor['rounds']} rounds; verified: {vendor['verified_rows']:,} rows, frames in order, "
        f"{vendor['fields_compared']:,} field values equal to ekm-async's"
    )
    rows = [
        ("ekm-async SqliteStore add() … close()", ours.frames_per_s, ours.us_per_frame, ours.median_us_per_frame),
        (
            f"ekmmeters {vendor['version']} V4Meter.insert(SqliteMeterDB)",
            vendor["rows_per_s"],
            vendor["us_per_row"],
            vendor["median_us_per_row"],
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"best round of each (median in brackets)\n{'':{width}}  {'rows/s':>9}  {'µs/row':>8}")
    for name, rate, us, median in rows:
        print(f"{name:{width}}  {rate:9,.0f}  {us:8.2f}  ({median:.2f})")
    print(
        "ekm-async's µs/row in steps (best of each): "
        f"read.fields {step_us['read_fields']:.2f}, row_of {step_us['row_of']:.2f}, "
        f"sqlite3 executemany+commit {step_us['sqlite3_executemany_commit']:.2f}, "
        f"the rest (by difference) {step_us['rest_by_difference']:.2f}"
    )
    print(f"(ekmmeters request(), not timed above: {vendor['request_us_per_read']:.2f} µs/read)")
    print(f"ratio ekm-async/vendor: {ratio:.1f}×")
    print(f"target ≥ {TARGET_ROWS_PER_S:,.0f} rows/s and ≥ {TARGET_RATIO:g}×: {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
