"""A user's mistakes on the command line (issue 20, "a newcomer's first hour"): each is one line on
stderr, in the user's words — the option, the value, what is allowed or what to try — never a
traceback, a Python exception's name or the text of a bare ``int()``."""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
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
        (["--tcp", "127.0.0.1:x"], "argument --tcp: expected HOST:PORT with a port from 0 to 65535"),
        (["--tcp", "127.0.0.1:99999"], "(0: any free port), e.g. 127.0.0.1:5000; got '127.0.0.1:99999'"),
        (["--meter", "v4:123"], "argument --meter: expected v3:ADDRESS or v4:ADDRESS"),
    ],
)
def test_a_bad_simulate_option_is_one_line_naming_it(args: list[str], said: str) -> None:
    line = one_line(cli("simulate", "--tcp", "127.0.0.1:0", "--baud", "0", *args))
    assert said in line


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
