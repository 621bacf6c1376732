"""What the benchmarks share: their error, the wire's figures, child processes (simulators and the vendor's
client), the vendor's environment, timing and process figures, and how a benchmark starts and ends.

* :class:`BenchError` — a simulator, the vendor's run or a verification misbehaved (exit status 2).
* The wire: 9600 baud 7E1, a 20 ms meter turnaround, what a full V4 read (A + B + close) puts on it and
  the reads/s that allows on one bus.
* :func:`children` starts processes and yields the first line each prints (a simulator's "ready" line,
  or its ports), stopping them however the block ends; :func:`simulator` is ``ekm-async simulate``
  serving V4 meters over TCP (and a pty); :func:`vendor_report` runs a script in the vendor's
  environment (:func:`vendor_python`) and returns the JSON object it prints.
* :class:`Rate` and :func:`timed`: best-of rounds of equal work; :func:`own_cpu`, :func:`own_rss`,
  :func:`proc_figures`, :func:`cpu_model`: this process's and another's CPU and memory.
* :func:`parser` (the description from a module's docstring, ``--json``), :func:`run` (``asyncio.run``
  with SIGTERM and SIGHUP cancelling it, and the exit statuses every benchmark gives), :func:`dump_json`.

The scripts of the vendor's side (``_vendor_*.py``) run in the vendor's environment, without ekm-async,
and import nothing from here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from ekm_async.commands import CLOSE, LiveRead, live_read
from ekm_async.wire import BITS_PER_CHAR, FRAME_LEN

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
"""Where benchmarks write their figures: the plots are kept in git, the JSON is not (.gitignore)."""

T = TypeVar("T")
PIPE = asyncio.subprocess.PIPE


class BenchError(Exception):
    """A simulator, the vendor's run or a verification misbehaved."""


# ---------------------------------------------------------------------------------------------------
# The wire

BAUD = 9600
TURNAROUND = 0.02
BYTE_TIME = BITS_PER_CHAR / BAUD
EXCHANGE_BYTES = 2 * FRAME_LEN + len(live_read("0" * 12, LiveRead.V4A)) + len(live_read("0" * 12, LiveRead.V4B))
"""A V4 A+B exchange: A request 19 + A reply 255 + B request 19 + B reply 255 = 548 characters."""
READ_BYTES = EXCHANGE_BYTES + len(CLOSE)  # 553: a full read ends with the close string
READ_WIRE = READ_BYTES * BYTE_TIME + 2 * TURNAROUND  # 0.616 s
WIRE_LIMIT = 1 / READ_WIRE  # 1.623 reads/s per bus


# ---------------------------------------------------------------------------------------------------
# Child processes

START_TIMEOUT = 30.0  # seconds for a child to print its first line
STOP_TIMEOUT = 5.0  # seconds for a child to exit after SIGTERM before it is killed


def ekm_async_cli() -> list[str]:
    """``ekm-async`` of this environment, or ``python -m ekm_async`` if its script is not installed."""
    script = Path(sys.executable).parent / "ekm-async"
    if script.exists():
        return [str(script)]
    found = shutil.which("ekm-async")
    return [found] if found else [sys.executable, "-m", "ekm_async"]


async def stop(process: asyncio.subprocess.Process) -> None:
    """Close its stdin, terminate it (kill it if it does not go) and reap it."""
    if process.stdin is not None:
        process.stdin.close()
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


EXITED_WHY = {0: " (stopped by a SIGINT or SIGTERM from elsewhere)"}


@contextlib.asynccontextmanager
async def children(
    commands: Sequence[Sequence[str]],
    *,
    what: str = "the simulator",
    stdin_pipe: bool = False,
    cpus: set[int] | None = None,
) -> AsyncIterator[list[str]]:
    """Start every command (stdin a pipe they can watch, else /dev/null; pinned to ``cpus`` if given) and
    yield the first line each prints on stdout. However the block ends they are stopped, and what they
    wrote on stderr is shown. :class:`BenchError` when one prints nothing in :data:`START_TIMEOUT`, or
    exits during the block (and, when the block raised one, which had exited)."""
    started: list[tuple[asyncio.subprocess.Process, IO[bytes]]] = []
    stdin = asyncio.subprocess.PIPE if stdin_pipe else asyncio.subprocess.DEVNULL
    with contextlib.ExitStack() as files:
        try:
            for argv in commands:
                errors = files.enter_context(tempfile.TemporaryFile())
                process = await asyncio.create_subprocess_exec(*argv, stdin=stdin, stdout=PIPE, stderr=errors)
                started.append((process, errors))
                if cpus:
                    os.sched_setaffinity(process.pid, cpus)
            lines = [await _first_line(process, errors, what) for process, errors in started]
            try:
                yield lines
            except BenchError as exc:
                raise BenchError(f"{exc}{await _gone(what, [process for process, _ in started])}") from None
            for process, _ in started:
                if process.returncode is not None:
                    raise BenchError(f"{what} exited during the run (status {process.returncode})")
        finally:
            await asyncio.gather(*(stop(process) for process, _ in started))
            for _, errors in started:
                text = _read(errors)
                if text:
                    print(f"{what} stderr:\n{text}", file=sys.stderr)


async def _gone(what: str, processes: list[asyncio.subprocess.Process]) -> str:
    """After an error: which of ``processes`` had exited, and how (empty when none had)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.5):
            await asyncio.gather(*(process.wait() for process in processes))
    gone = [f"status {p.returncode}{EXITED_WHY.get(p.returncode, '')}" for p in processes if p.returncode is not None]
    return f"; {what} had exited: {', '.join(gone)}" if gone else ""


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace").strip()


async def _first_line(process: asyncio.subprocess.Process, errors: IO[bytes], what: str) -> str:
    assert process.stdout is not None
    try:
        async with asyncio.timeout(START_TIMEOUT):
            line = (await process.stdout.readline()).decode(errors="replace").strip()
    except TimeoutError:
        raise BenchError(f"{what} printed nothing in {START_TIMEOUT:g} s") from None
    if not line:
        status = await process.wait()
        raise BenchError(f"{what} exited (status {status}): {_read(errors)}")
    return line


@dataclass(frozen=True, slots=True)
class Served:
    """Where ``ekm-async simulate`` serves its bus."""

    host: str
    port: int
    pty: str | None

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"


def parse_ready(line: str) -> Served:
    """``ready tcp=HOST:PORT [pty=PATH] …``, the line ``ekm-async simulate`` prints when listening."""
    words = dict(word.split("=", 1) for word in line.split()[1:] if "=" in word)
    host, _, port = words.get("tcp", "").rpartition(":")
    if not line.startswith("ready ") or not port.isdigit():
        raise BenchError(f"unexpected line from the simulator: {line!r}")
    return Served(host, int(port), words.get("pty"))


@contextlib.asynccontextmanager
async def simulator(
    addresses: Sequence[str], *, turnaround: float = TURNAROUND, pty: Path | None = None, extra: Sequence[str] = ()
) -> AsyncIterator[tuple[list[str], Served]]:
    """``ekm-async simulate`` serving one paced bus of V4 meters over TCP (and a pty at ``pty``) in its
    own process, with ``extra`` arguments (e.g. ``--arrival bytes``): (its command line, where it serves)."""
    argv = [*ekm_async_cli(), "simulate", "--tcp", "127.0.0.1:0"]
    argv += ["--pty", str(pty)] if pty is not None else []
    for address in addresses:
        argv += ["--meter", f"v4:{address}"]
    argv += ["--baud", str(BAUD), "--turnaround", repr(turnaround), *extra]
    async with children([argv]) as (line,):
        served = parse_ready(line)
        if pty is not None and served.pty is None:
            raise BenchError(f"the simulator serves no pty: {line!r}")
        yield argv, served


# ---------------------------------------------------------------------------------------------------
# The vendor's client: ekmmeters 0.2.5 in an environment of its own

VENDOR_VENV = HERE / ".venv-ekmmeters"
VENDOR_VERSION = "0.2.5"
VENDOR_REQUIREMENTS = (f"ekmmeters=={VENDOR_VERSION}", "pyserial")
SETUP_TIMEOUT = 900  # seconds for venv creation and pip install, each


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _setup(command: list[str], what: str) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=SETUP_TIMEOUT)
    except subprocess.CalledProcessError as exc:
        log(exc.stdout + exc.stderr)
        raise BenchError(f"{what} failed (exit {exc.returncode}): {' '.join(command)}") from exc
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what} took more than {SETUP_TIMEOUT} s: {' '.join(command)}") from exc


def vendor_python() -> Path:
    """The Python of ``benchmarks/.venv-ekmmeters``, created and provisioned when needed (``python -m
    venv``, ``pip install ekmmeters==0.2.5 pyserial``: PyPI must be reachable then)."""
    python = VENDOR_VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not python.exists():
        log(f"creating {VENDOR_VENV} …")
        _setup([sys.executable, "-m", "venv", str(VENDOR_VENV)], "python -m venv")
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m, serial; print(m.version('ekmmeters'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0 or probe.stdout.strip() != VENDOR_VERSION:
        log(f"installing {' '.join(VENDOR_REQUIREMENTS)} into {VENDOR_VENV} …")
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *VENDOR_REQUIREMENTS]
        _setup(pip, "pip install")
    return python


async def vendor_report(argv: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run ``argv`` (a script in the vendor's environment) for at most ``timeout`` seconds; the JSON object
    it prints. :class:`BenchError` when it does not finish or fails."""
    process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, stdout=PIPE, stderr=PIPE)
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        raise BenchError(f"the ekmmeters run did not finish: {' '.join(argv)}") from None
    finally:
        await stop(process)
    if process.returncode != 0:
        text = (out + err).decode(errors="replace")
        raise BenchError(f"the ekmmeters run failed (exit {process.returncode}): {text}")
    report: dict[str, Any] = json.loads(out)
    return report


# ---------------------------------------------------------------------------------------------------
# Timing, CPU and memory

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Rate:
    """Timed rounds of equal work; the best round gives the rate (least disturbed by other load)."""

    frames_per_round: int
    rounds: tuple[float, ...]

    @property
    def frames_per_s(self) -> float:
        return self.frames_per_round / min(self.rounds)

    @property
    def us_per_frame(self) -> float:
        return min(self.rounds) / self.frames_per_round * 1e6

    @property
    def median_us_per_frame(self) -> float:
        return statistics.median(self.rounds) / self.frames_per_round * 1e6

    def as_dict(self) -> dict[str, float]:
        return {
            "rounds": len(self.rounds),
            "frames_per_round": self.frames_per_round,
            "frames_per_s": self.frames_per_s,
            "us_per_frame": self.us_per_frame,
            "median_us_per_frame": self.median_us_per_frame,
        }


def timed(one_round: Callable[[], None], frames_per_round: int, seconds: float) -> Rate:
    """Run ``one_round`` once to warm up, then repeatedly for at least ``seconds``, timing each round."""
    one_round()
    rounds: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        one_round()
        rounds.append(time.perf_counter() - t0)
    return Rate(frames_per_round, tuple(rounds))


def own_rss() -> int:
    """This process's resident memory, bytes."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def own_cpu() -> tuple[float, float]:
    """This process's CPU seconds: (user + system, precise; system alone, from ``getrusage``)."""
    return time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_stime


def proc_figures(pid: int) -> tuple[float, int]:
    """(user + system CPU seconds, resident bytes) of process ``pid``; (0, 0) if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rpartition(b")")[2].split()
    except OSError:
        return 0.0, 0
    # After "pid (comm)": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
    # stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss …
    return (int(rest[11]) + int(rest[12])) / CLOCK_TICKS, int(rest[21]) * PAGE_SIZE


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# ---------------------------------------------------------------------------------------------------
# Starting and ending a benchmark


def parser(
    doc: str | None, *, json_help: str | None = "print the figures as one JSON object"
) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of ``doc``, with ``--json`` unless told not."""
    made = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    if json_help is not None:
        made.add_argument("--json", action="store_true", help=json_help)
    return made


def dump_json(figures: dict[str, Any], path: Path | None = None) -> str:
    """``figures`` as indented JSON; also written to ``path`` (its folder made) when given."""
    text = json.dumps(figures, indent=2)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return text


async def _cancelled_by_signals(coroutine: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        # Cancel (running every cleanup, the child processes' too) instead of dying where we stand.
        loop.add_signal_handler(sig, task.cancel)
    return await coroutine


EXIT_STATUS: dict[type[BaseException], tuple[int, str]] = {
    KeyboardInterrupt: (128 + signal.SIGINT, "interrupted"),
    asyncio.CancelledError: (128 + signal.SIGTERM, "terminated"),  # SIGTERM or SIGHUP
}


def run(name: str, coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coroutine)``, SIGTERM and SIGHUP cancelling it; the child processes are stopped on
    the way out however it ends. A :class:`BenchError` ends the program with status 2, Ctrl-C with 130,
    SIGTERM or SIGHUP with 143, each with one line on stderr that starts with ``name``."""
    try:
        return asyncio.run(_cancelled_by_signals(coroutine))
    except BenchError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except (KeyboardInterrupt, asyncio.CancelledError) as exc:
        status, why = EXIT_STATUS[type(exc)]
        print(f"{name}: {why}", file=sys.stderr)
        raise SystemExit(status) from None
