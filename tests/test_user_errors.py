"""A user's mistakes on the command line (issue 20, "a newcomer's first hour"): each is one line on
stderr, in the user's words — the option, the value, what is allowed or what to try — never a
traceback, a Python exception's name or the text of a bare ``int()``."""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ekm_async import open_bus
from ekm_async.cli import main
from ekm_async.sim import MeterModel, SimBus, SimServer

PYTHON_WORDS = ("Traceback", "invalid literal", "could not convert", "is not a valid", "Error:", "FaultKind")
"""What a message for a user never says."""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``ekm-async ARGS…`` run by its ``main`` in this process; a ``SystemExit`` with a message is said
    on stderr with status 1, as the interpreter does."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(list(args), stdout=out)
        except SystemExit as exc:
            if isinstance(exc.code, str):
                err.write(exc.code + "\n")
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command said (after argparse's usage, if it printed one)."""
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    said = [line for line in lines if line.startswith(("ekm-async", "error:"))]
    assert len(said) == 1, result.stderr
    for word in PYTHON_WORDS:
        assert word not in result.stderr, result.stderr
    return said[0]


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------
# ekm-async simulate


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["--fault", "bogus"],
            "ekm-async simulate: --fault 'bogus': no fault kind 'bogus'; the kinds are crc, drop, truncate, "
            "garbage, delay, wrong-address, dead (a fault is KIND[=P][:SECONDS][@ADDRESS][#N,…], "
            "e.g. crc=0.01 or delay:2.5#3)",
        ),
        (["--fault", "crc#x"], "--fault 'crc#x': #N takes reply numbers counted from 1, like #3 or #1,4; got 'x'"),
        (["--fault", "crc#0"], "--fault 'crc#0': #N counts the replies from 1; got #0"),
        (["--fault", "crc=x"], "--fault 'crc=x': the probability (=P) must be a number from 0 to 1; got 'x'"),
        (["--fault", "crc=2"], "--fault 'crc=2': the probability must be from 0 to 1; got 2"),
        (["--fault", "delay:x"], "--fault 'delay:x': the seconds (:SECONDS) must be a number, 0 or more; got 'x'"),
        (["--fault", "delay:inf"], "--fault 'delay:inf': the seconds of a delay must be a number, 0 or more"),
        (["--fault", "dead@123"], "--fault 'dead@123': address must be exactly 12 digits; got '123'"),
        (["--turnaround", "-1"], "ekm-async simulate: --turnaround must be from 0 to 1.5 seconds; got -1"),
        (["--time-scale", "-1"], "--time-scale must be a number of simulated seconds per second, 0 or more"),
        (["--time-scale", "nan"], "(0: values stand still); got nan"),
        (["--tcp", "127.0.0.1:x"], "ekm-async simulate: --tcp: expected HOST:PORT with a port from 0 to 65535"),
        (["--tcp", "127.0.0.1:99999"], "(0: any free port), e.g. 127.0.0.1:5000; got '127.0.0.1:99999'"),
        (["--meter", "v4:123"], "ekm-async simulate: --meter: expected v3:ADDRESS or v4:ADDRESS"),
    ],
)
def test_a_bad_simulate_option_is_one_line_naming_it(args: list[str], said: str) -> None:
    result = cli("simulate", "--tcp", "127.0.0.1:0", "--baud", "0", *args)
    assert said in one_line(result)
    assert "usage:" not in result.stderr  # the one line only (argparse's own printed its usage block first)
    assert result.returncode == 2  # bad input, as every command says it (it was 1)


def test_simulate_on_a_port_in_use_says_so_and_what_to_try() -> None:
    with taken_port() as port:
        line = one_line(cli("simulate", "--tcp", f"127.0.0.1:{port}", "--baud", "0"))
    assert line == (
        f"ekm-async simulate: cannot listen on --tcp 127.0.0.1:{port}: another program is listening on that "
        "port: give another, or port 0 for any free one"
    )


def test_simulate_with_a_pty_link_in_a_missing_directory(tmp_path: Path) -> None:
    link = tmp_path / "nowhere" / "ttyEKM"
    line = one_line(cli("simulate", "--pty", str(link), "--baud", "0"))
    assert line == (
        f"ekm-async simulate: cannot make the pty link --pty {link}: the directory {link.parent} does not exist"
    )


async def test_a_timed_relay_on_a_simulator_whose_time_stands_still_stays_closed() -> None:
    """``simulate --time-scale 0`` (values stand still) and a relay closed for 5 s: it closes and stays
    closed — the simulator divided by the time scale, and the command got no reply."""
    model = MeterModel("000300001184", time_scale=0.0)
    async with (
        SimServer(SimBus([model], baud=0, turnaround=0.001)) as server,
        open_bus("sim://memory", connect=server.memory_connector(), timeout_margin=0.2) as bus,
    ):
        await bus.v4(model.address).set_relay(1, "close", 5)
    assert model.relays[0].closed
    assert model.relays[0].until is None


# ---------------------------------------------------------------------------------------------------
# poll and serve: options, and a database that cannot be used

_BIN = Path(sys.executable).parent
CLI = [str(_BIN / "ekm-async")] if (_BIN / "ekm-async").exists() else [sys.executable, "-m", "ekm_async"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed ``ekm-async ARGS…`` as a user types it (what its threads print included)."""
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("command", ["poll", "serve"])
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--timeout-margin", "-1"], "--timeout-margin must be a number of seconds above 0, e.g. 0.5; got -1"),
        (["--timeout-margin", "nan"], "--timeout-margin must be a number of seconds above 0, e.g. 0.5; got nan"),
        (["--interval", "nan"], "--interval must be a number of seconds, 0 or more; got nan"),
        (["--interval", "inf"], "--interval must be a number of seconds, 0 or more; got inf"),
    ],
)
def test_a_bad_wire_or_interval_option_is_one_line_naming_it(command: str, args: list[str], said: str) -> None:
    result = cli(command, "--simulate", "1", *args)
    assert result.returncode == 2
    assert one_line(result) == f"ekm-async {command}: {said}"
    assert result.stdout == ""


def test_read_with_a_bad_timeout_margin_names_the_option() -> None:
    result = cli("read", "tcp://127.0.0.1:9", "000300001184", "--timeout-margin", "0")
    assert one_line(result) == "ekm-async read: --timeout-margin must be a number of seconds above 0, e.g. 0.5; got 0"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--port", "70000"], "ekm-async serve: --port must be from 0 to 65535 (0: any free port); got 70000"),
        (["--max-streams", "0"], "ekm-async serve: --max-streams must be 1 or more; got 0"),
    ],
)
def test_a_bad_serve_option_says_its_value(args: list[str], said: str) -> None:
    assert one_line(cli("serve", "--simulate", "1", *args)) == said


def test_serve_on_a_port_in_use_says_so_and_what_to_try() -> None:
    with taken_port() as port:
        result = cli("serve", "--simulate", "1", "--sim-baud", "0", "--port", str(port))
    assert one_line(result) == (
        f"error: cannot listen on 127.0.0.1:{port}: another program is listening on that port: give another, "
        "or port 0 for any free one"
    )
    assert result.stdout == ""


def unusable(tmp_path: Path, case: str) -> tuple[str, str]:
    """A --db that cannot be used, and why (as said after 'cannot use PATH as the database: ')."""
    if case == "missing directory":
        return str(tmp_path / "nowhere" / "reads.db"), (
            f"the directory {tmp_path / 'nowhere'} does not exist: make it, or give a file in a directory that does"
        )
    if case == "a directory":
        return str(tmp_path), f"that is a directory: give a file name in it, e.g. {tmp_path / 'reads.db'}"
    if case == "not SQLite":
        (tmp_path / "notes.txt").write_text("shopping: milk, eggs\n" * 200)
        return str(tmp_path / "notes.txt"), (
            "it is not an SQLite database: give the name of a new file, or of a database --db made before"
        )
    return "/dev/null", "that is not a regular file: give the name of a new file, or of a database --db made before"


@pytest.mark.parametrize("case", ["missing directory", "a directory", "not SQLite", "not a file"])
def test_poll_with_a_db_it_cannot_use_says_why_in_one_line_and_prints_nothing_on_stdout(
    tmp_path: Path, case: str
) -> None:
    """Once a 30-line traceback (and, racing the end of the event loop, aiosqlite's thread's own); then one
    line, but an empty line on stdout — what a script reading poll's output would take for a read."""
    db, why = unusable(tmp_path, case)
    result = run("poll", "--simulate", "1", "--sim-baud", "0", "--count", "1", "--db", db, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"error: cannot use {db} as the database: {why}\n"
    assert result.stdout == ""


@pytest.mark.parametrize("case", ["missing directory", "not SQLite"])
def test_serve_with_a_db_it_cannot_use_says_why_in_one_line(tmp_path: Path, case: str) -> None:
    db, why = unusable(tmp_path, case)
    result = run("serve", "--simulate", "1", "--sim-baud", "0", "--port", "0", "--db", db, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"error: cannot use {db} as the database: {why}\n"
    assert result.stdout == ""


def test_poll_in_process_with_a_db_it_cannot_use_prints_nothing_on_stdout(tmp_path: Path) -> None:
    result = cli("poll", "--simulate", "1", "--count", "1", "--db", str(tmp_path / "nowhere" / "reads.db"))
    assert result.returncode == 2
    assert result.stdout == ""
