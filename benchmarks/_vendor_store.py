"""The vendor side of ``bench_store.py``: time ekmmeters 0.2.5 storing V4 reads through ``SqliteMeterDB``.

Runs in the benchmark's own environment (``benchmarks/.venv-ekmmeters``, with ``ekmmeters==0.2.5``),
never in the project's: ``bench_store.py`` starts it as

    .venv-ekmmeters/bin/python benchmarks/_vendor_store.py READS.json WORKDIR ROUNDS

READS.json holds ``{"reads": [{"address": ..., "a": hex, "b": hex, "check": {field: value}}, ...]}``: the
V4 A+B frame pairs of the reads (in the order ekm-async stored them) and, for each, a few field values
as ekm-async decoded them (fields that only one of the blocks carries, where the two libraries agree).

Each round makes a fresh ``SqliteMeterDB(connection_string=WORKDIR/vendor-N.db)`` and ``dbCreate()``s its
table, then for every read: ``meter.request()`` on the ``V4Meter`` of the read's address, whose stub port
returns the read's A and B frames as 255-character ``str`` (what ``SerialPort.getResponse`` returns)
without sleeping, then ``meter.insert(db)``, which inserts the meter's read buffer. Only the
``insert`` calls are timed (the clock is read around each one); ``request()`` (parsing) is not.

Then the round is checked, else the run exits non-zero: ``request()`` returned True every time, no
``insert`` raised (0.2.5's ``traceback.format_exc(sys.exc_info())`` turns any database error into a
TypeError on Python ≥ 3.10; a failed statement would otherwise go unnoticed), the table holds exactly
one row per read, its ``Raw_A`` / ``Raw_B`` columns are the reads' frames in order, and the checked
fields equal ekm-async's values. Prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import ekmmeters  # type: ignore[import-not-found,import-untyped,unused-ignore]


class StubPort:
    """Duck-typed ``ekmmeters.SerialPort``: ``write`` does nothing, ``getResponse`` returns the next frame."""

    def __init__(self) -> None:
        self.responses: list[str] = []
        self._next = 0

    def load(self, responses: list[str]) -> None:
        self.responses, self._next = responses, 0

    def write(self, output: str) -> None:
        """The request ``request()`` sends: dropped (the real port writes it and sleeps 0.2 s)."""

    def getResponse(self, context: str = "") -> str:
        """The next 255-character response: A, then B, of each read in turn."""
        response = self.responses[self._next]
        self._next += 1
        return response


def _fail(message: str) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(2)


def _check(path: Path, reads: list[dict[str, Any]]) -> int:
    """Check the vendor's table against the reads; returns the number of field values compared."""
    names = sorted({name for read in reads for name in read["check"]})
    columns = ", ".join(["Raw_A", "Raw_B", *names])
    with sqlite3.connect(path) as connection:
        rows = connection.execute(f"SELECT {columns} FROM Meter_Reads ORDER BY rowid").fetchall()
    connection.close()
    if len(rows) != len(reads):
        _fail(f"ekmmeters' Meter_Reads holds {len(rows)} rows for {len(reads)} inserts")
    compared = 0
    for i, (row, read) in enumerate(zip(rows, reads, strict=True)):
        if (row[0], row[1]) != (read["a"], read["b"]):
            _fail(f"row {i}: Raw_A / Raw_B are not the frames of read {i}")
        stored = dict(zip(names, row[2:], strict=True))
        for name, want in read["check"].items():
            if stored[name] != want:
                _fail(f"row {i}: ekmmeters stored {name} = {stored[name]!r}, ekm-async decoded {want!r}")
            compared += 1
    return compared


def main(argv: list[str]) -> None:
    reads: list[dict[str, Any]] = json.loads(Path(argv[1]).read_text())["reads"]
    workdir, rounds = Path(argv[2]), int(argv[3])
    responses: list[str] = []
    for read in reads:
        responses += [bytes.fromhex(read["a"]).decode("ascii"), bytes.fromhex(read["b"]).decode("ascii")]

    ekmmeters.ekm_set_log(ekmmeters.ekm_no_log)
    port = StubPort()
    meters: dict[str, Any] = {}
    for address in dict.fromkeys(read["address"] for read in reads):
        meters[address] = ekmmeters.V4Meter(address)
        meters[address].attachPort(port)
    order = [meters[read["address"]] for read in reads]

    insert_times: list[float] = []  # seconds per round: the insert calls only
    request_times: list[float] = []  # seconds per round: the request() calls (parsing), for reference
    compared = 0
    clock = time.perf_counter
    for n in range(rounds):
        path = workdir / f"vendor-{n}.db"
        db = ekmmeters.SqliteMeterDB(connection_string=str(path))
        db.dbCreate()
        port.load(responses)
        inserting = requesting = 0.0
        for i, meter in enumerate(order):
            t0 = clock()
            ok = meter.request()
            t1 = clock()
            if not ok:
                _fail(f"read {i}: ekmmeters request() returned False (A CRC {meter.m_a_crc}, B {meter.m_b_crc})")
            try:
                meter.insert(db)
            except Exception as exc:  # noqa: BLE001 - any error escaping the vendor fails the run, with its cause
                cause = exc.__context__
                _fail(f"read {i}: ekmmeters insert() raised {type(exc).__name__}: {exc} (while handling {cause!r})")
            t2 = clock()
            requesting += t1 - t0
            inserting += t2 - t1
        insert_times.append(inserting)
        request_times.append(requesting)
        compared += _check(path, reads)
        path.unlink()

    best, median = min(insert_times), statistics.median(insert_times)
    print(
        json.dumps(
            {
                "library": "ekmmeters",
                "version": version("ekmmeters"),
                "python": sys.version.split()[0],
                "sqlite": sqlite3.sqlite_version,
                "rounds": rounds,
                "rows_per_round": len(reads),
                "rows_per_s": len(reads) / best,
                "us_per_row": best / len(reads) * 1e6,
                "median_us_per_row": median / len(reads) * 1e6,
                "request_us_per_read": min(request_times) / len(reads) * 1e6,
                "verified_rows": rounds * len(reads),
                "fields_compared": compared,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv)
