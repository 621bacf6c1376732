"""``ekm-async poll`` (issue 5): the README's first command, JSON lines, the live table, usage errors,
and a polling process killed with SIGKILL that leaves a sound file holding every read it reported
committed.

The README command is paced at 9600 baud (about 25 s): it is started once, in a subprocess, when the
session begins (``conftest.early``), and its test waits for it, so the other tests run meanwhile.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from ekm_async import Read, decode
from ekm_async.cli import main

from .conftest import EarlyRuns, early

pytestmark = pytest.mark.timeout(120)

_BIN = Path(sys.executable).parent
CLI = [str(_BIN / "ekm-async")] if (_BIN / "ekm-async").exists() else [sys.executable, "-m", "ekm_async"]
"""The installed console script (``python -m ekm_async`` if there is none)."""
SIMULATED = [f"{300001184 + n:012d}" for n in range(4)]
"""The addresses ``--simulate 4`` polls."""
COMMITTED = re.compile(r"committed (\d+) reads to (.+)")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``ekm-async ARGS…`` run by its ``main`` in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(list(args), stdout=out)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def stored(path: Path) -> list[sqlite3.Row]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM reads ORDER BY id").fetchall()


def decodes(row: sqlite3.Row) -> Read:
    """The raw frames of a stored V4 read, decoded again (a torn row would fail here)."""
    a = decode(row["raw_a"], "v4a")
    return Read.of(a, decode(row["raw_b"], "v4b", a.kwh_scale))


def commits(stderr: str) -> list[int]:
    return [int(m[1]) for m in COMMITTED.finditer(stderr)]


@contextlib.contextmanager
def polling(args: list[str], cwd: Path, stdout: Path) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    """``ekm-async ARGS…`` in a subprocess, stdout to a file, stderr lines to a queue (read by a thread);
    killed at the end if still running."""
    with stdout.open("w") as out:
        proc = subprocess.Popen([*CLI, *args], cwd=cwd, stdout=out, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        reader.join(10)


def wait_for_commit(lines: queue.Queue[str], at_least: int, limit: float, log: list[str]) -> int:
    """The first committed total ≥ ``at_least`` the process reports (every stderr line goes to ``log``)."""
    deadline = time.monotonic() + limit
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        log.append(line)
        match = COMMITTED.match(line)
        if match and int(match[1]) >= at_least:
            return int(match[1])
    raise AssertionError(f"no commit of {at_least} reads within {limit} s; stderr: {''.join(log)[-2000:]}")


# ---------------------------------------------------------------------------------------------------
# The README's first command, started at once (paced: ~25 s), checked by the module's last test


@early("readme-run")
def readme_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The README's first command, as a new user types it (paced: about 25 s, started with the session)."""
    where = tmp_path_factory.mktemp("readme")
    done = subprocess.run(
        [*CLI, "poll", "--simulate", "4", "--count", "40", "--db", "reads.db"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    return done, where


# ---------------------------------------------------------------------------------------------------
# Usage errors: exit 2 before anything is opened


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--simulate", "4", "tcp://127.0.0.1:9"], "--simulate takes no URL"),
        (["--simulate", "4", "--v3", "000000000001"], "--simulate takes no URL"),
        (["tcp://127.0.0.1:9"], "at least one ADDRESS"),
        ([], "at least one ADDRESS"),
        (["--simulate", "4", "--count", "0"], "--count"),
        (["tcp://127.0.0.1:9", "000300001184", "--count", "-2"], "--count"),
        (["--simulate", "0"], "1..999"),
        (["--simulate", "2", "--interval", "-1"], "--interval"),
        (["tcp://127.0.0.1:9", "12345"], "12345"),
        (["tcp://127.0.0.1:9", "000300001184", "--v3", "00000000000x"], "00000000000x"),
        (["ftp://127.0.0.1:21", "000300001184"], "scheme"),
        (["tcp://127.0.0.1", "000300001184"], "port"),
        (["--simulate", "2", "--sim-baud", "1200"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_before_anything_is_opened(tmp_path: Path, args: list[str], message: str) -> None:
    db = tmp_path / "reads.db"
    result = cli("poll", *args, "--db", str(db))
    assert result.returncode == 2, result
    assert message in result.stderr
    assert result.stdout == ""
    assert not db.exists()  # nothing opened: not even the store


# ---------------------------------------------------------------------------------------------------
# Output


def test_json_lines_one_per_read_with_json_numbers_and_the_reads_stored(tmp_path: Path) -> None:
    db = tmp_path / "reads.db"
    result = cli("poll", "--simulate", "3", "--sim-baud", "0", "--json", "--count", "12", "--db", str(db))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 12
    objects = [json.loads(line) for line in lines]
    assert {o["Meter_Address"] for o in objects} == set(SIMULATED[:3])
    for o in objects:
        assert isinstance(o["kWh_Tot"], float)
        assert isinstance(o["RMS_Volts_Ln_1"], float)
        assert isinstance(o["RMS_Watts_Tot"], int)
        assert isinstance(o["CT_Ratio"], int)  # a B field
        assert isinstance(o["Power_Factor_Ln_1"], int)  # a calculated one
        assert isinstance(o["Meter_Time"], str)
        assert datetime.fromisoformat(o["time"]).utcoffset() is not None
    assert commits(result.stderr)[-1] == 12
    assert f"to {db}" in result.stderr
    assert integrity(db) == "ok"
    rows = stored(db)
    assert len(rows) == 12
    assert sorted(r["Meter_Address"] for r in rows) == sorted(o["Meter_Address"] for o in objects)
    by_time = {(o["Meter_Address"], datetime.fromisoformat(o["time"]).timestamp()): o for o in objects}
    for row in rows:
        printed = by_time[row["Meter_Address"], row["time_utc"]]
        read = decodes(row)
        assert {k: printed[k] for k in read.fields} == dict(read.fields)


def test_the_live_table_shows_every_meter(tmp_path: Path) -> None:
    result = cli("poll", "--simulate", "3", "--sim-baud", "0", "--count", "9")
    assert result.returncode == 0, result.stderr
    for address in SIMULATED[:3]:
        assert address in result.stdout
    for column in ("meter", "kWh", "ok", "errors", "latency"):
        assert column in result.stdout
    assert "3 meters" in result.stdout
    assert "committed" not in result.stderr  # no --db, no store


# ---------------------------------------------------------------------------------------------------
# Killed and stopped


def test_a_process_killed_with_sigkill_leaves_a_sound_file_with_every_read_it_reported(tmp_path: Path) -> None:
    db = tmp_path / "reads.db"
    args = ["poll", "--simulate", "4", "--sim-baud", "0", "--interval", "0", "--db", str(db), "--json"]
    log: list[str] = []
    with polling(args, tmp_path, tmp_path / "out.jsonl") as (proc, lines):
        reported = wait_for_commit(lines, 200, 60.0, log)
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    assert integrity(db) == "ok"
    rows = stored(db)
    assert len(rows) >= reported
    for row in rows:  # every row whole
        assert decodes(row).address == row["Meter_Address"]


def test_sigterm_stops_polling_and_commits_every_read_printed(tmp_path: Path) -> None:
    db = tmp_path / "reads.db"
    args = ["poll", "--simulate", "2", "--sim-baud", "0", "--db", str(db), "--json"]
    log: list[str] = []
    with polling(args, tmp_path, tmp_path / "out.jsonl") as (proc, lines):
        wait_for_commit(lines, 1, 30.0, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    printed = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    reported = commits("".join(log + rest))
    assert integrity(db) == "ok"
    assert len(stored(db)) == len(printed) == reported[-1]


# ---------------------------------------------------------------------------------------------------
# The README's first command (its process has been running since the session began)


def test_the_readme_command_polls_40_reads_into_the_file(early_runs: EarlyRuns) -> None:
    done, where = early_runs.result("readme-run")
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, err
    db = where / "reads.db"
    assert integrity(db) == "ok"
    rows = stored(db)
    assert len(rows) == 40
    counts = {address: sum(r["Meter_Address"] == address for r in rows) for address in SIMULATED}
    assert counts == dict.fromkeys(SIMULATED, 10)  # four meters, in turn
    assert commits(err)[-1] == 40
    assert "reads.db" in err
    for address in SIMULATED:
        assert address in out  # the live table, rendered once at the end to a pipe
    for row in rows:
        assert decodes(row).address == row["Meter_Address"]


def test_the_live_table_shows_a_bus_outage() -> None:
    from types import SimpleNamespace  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    from ekm_async.bus import BusHealth  # noqa: PLC0415
    from ekm_async.cli.poll import _table  # noqa: PLC0415

    down = BusHealth(False, datetime.now().astimezone(), 21.4, "[Errno 111] Connection refused", True)
    bus = SimpleNamespace(meter_stats={}, health=lambda: down)
    poller = SimpleNamespace(status=dict)
    console = Console(file=io.StringIO(), width=120)
    console.print(_table(poller, bus, "title"))  # type: ignore[arg-type]
    assert "bus unreachable for 21 s: [Errno 111] Connection refused" in console.file.getvalue()  # type: ignore[attr-defined]
