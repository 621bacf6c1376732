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
COMMITTED = re.compile(r"committed ([\d,]+) reads? to (.+) \(([\d,]+) in all\)")
"""A commit said on stderr: the reads it committed, the file, and how many in all."""


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
    """The totals committed, as the commits said them."""
    return [int(m[3].replace(",", "")) for m in COMMITTED.finditer(stderr)]


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
        if match and int(match[3].replace(",", "")) >= at_least:
            return int(match[3].replace(",", ""))
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


def test_each_commit_is_a_line_with_its_reads_and_the_total_where_no_table_counts_them(tmp_path: Path) -> None:
    """With --json (and wherever stderr is not the terminal the table is drawn on): a line per commit,
    its own reads and how many in all — not a running total that reads like a commit's count."""
    db = tmp_path / "reads.db"
    result = cli("poll", "--simulate", "2", "--sim-baud", "0", "--json", "--count", "10", "--db", str(db))
    assert result.returncode == 0, result.stderr
    said = list(COMMITTED.finditer(result.stderr))
    assert said
    each = [int(m[1]) for m in said]
    assert [int(m[3]) for m in said] == [sum(each[: n + 1]) for n in range(len(each))]
    assert commits(result.stderr)[-1] == 10
    assert all(m[2] == str(db) for m in said)


def test_the_table_counts_commits_and_shows_the_progress_toward_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("poll", "--simulate", "2", "--sim-baud", "0", "--count", "8", "--db", "reads.db")
    assert result.returncode == 0, result.stderr
    assert "[####################] 8/8 reads" in result.stdout
    assert "reads.db: 8 reads committed" in result.stdout  # counted once the store has closed: every read
    assert "— 2 meters," in result.stdout


def test_one_meter_is_one_meter() -> None:
    result = cli("poll", "--simulate", "1", "--sim-baud", "0", "--count", "1")
    assert result.returncode == 0, result.stderr
    assert "— 1 meter, interval 0 s" in result.stdout
    assert "[####################] 1/1 reads" in result.stdout


def test_the_table_shows_kwh_with_the_decimals_the_meter_counts_in() -> None:
    from types import SimpleNamespace  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    from ekm_async.bus import BusHealth  # noqa: PLC0415
    from ekm_async.cli.poll import _table  # noqa: PLC0415

    def status(kwh: float, scale: int) -> SimpleNamespace:
        fields = {"kWh_Tot": kwh, "RMS_Watts_Tot": 1641, "RMS_Volts_Ln_1": 118.0, "Amps_Ln_1": 7.5}
        read = SimpleNamespace(fields=fields, a=SimpleNamespace(kwh_scale=scale), time=None)
        return SimpleNamespace(last_read=read, ok=1, errors=0)

    statuses = {"000300001184": status(1234.5, 2), "000300001185": status(1234.56, 2), "000300001186": status(98.0, 1)}
    bus = SimpleNamespace(meter_stats={}, health=lambda: BusHealth(True, None, 0.0, "", False))
    console = Console(file=io.StringIO(), width=160)
    console.print(_table(SimpleNamespace(status=lambda: statuses), bus, "title", count=4))  # type: ignore[arg-type]
    text: str = console.file.getvalue()  # type: ignore[attr-defined]
    rows = {line.split()[1]: line.split()[3] for line in text.splitlines() if "0003000011" in line}
    assert rows == {"000300001184": "1234.50", "000300001185": "1234.56", "000300001186": "98.0"}
    assert "[###############-----] 3/4 reads" in text


def test_on_a_terminal_the_table_carries_the_commits_and_no_line_scrolls_it(tmp_path: Path) -> None:
    """stdout and stderr the same terminal (a user at a shell): a line per commit scrolled above the table
    every second; the table now counts them."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [*CLI, "poll", "--simulate", "2", "--sim-baud", "0", "--count", "8", "--db", "reads.db"],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        seen = bytearray()
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every end of the terminal closed
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(60) == 0, seen.decode(errors="replace")
    finally:
        os.close(master)
    screen = seen.decode(errors="replace")
    assert "reads.db: 8 reads committed" in screen
    assert "8/8 reads" in screen
    assert not re.search(r"committed [\d,]+ reads? to", screen)  # no line of its own, in any form
    assert len(stored(tmp_path / "reads.db")) == 8


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
