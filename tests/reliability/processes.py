"""Real processes for the shutdown matrix: the installed ``ekm-async``, mosquitto, a simulated gateway,
gateways that misbehave at the TCP level, and a small disk that fills up.

Everything here is synchronous (threads read the pipes): a cell of the matrix is a script run in a
thread of its own, so that all cells run at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

_BIN = Path(sys.executable).parent
CLI = [os.environ.get("EKM_CLI") or str(_BIN / "ekm-async")]
"""The command under test (``EKM_CLI`` may name another build, e.g. an older one to see a cell fail)."""
MOSQUITTO = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)
COMMITTED = re.compile(r"committed [\d,]+ reads? to .+ \(([\d,]+) in all\)")
"""A commit poll says on stderr; the group: how many reads in all."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Lines:
    """The lines of a pipe, gathered by a thread."""

    def __init__(self, pipe: IO[bytes] | None) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if pipe is not None:
            self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
            self._thread.start()

    def _pump(self, pipe: IO[bytes]) -> None:
        for raw in pipe:
            with self._lock:
                self.lines.append(raw.decode("utf-8", "replace"))

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def text(self) -> str:
        return "".join(self.snapshot())

    def join(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


STARTED: list[Proc] = []
"""Every process started here: whatever a cell's assertions did, :func:`kill_all` ends them."""


def kill_all() -> None:
    for proc in STARTED:
        proc.kill()
    STARTED.clear()


class Proc:
    """A process with its stderr (and optionally stdout) gathered; ``stdout`` may be a file or an fd."""

    def __init__(
        self,
        args: list[str],
        cwd: Path,
        *,
        stdout: Any = subprocess.PIPE,
        read_stdout: bool = True,
        limit_file_size: int | None = None,
    ) -> None:
        if limit_file_size is not None:  # util-linux's prlimit: RLIMIT_FSIZE for the process it starts
            args = ["prlimit", f"--fsize={limit_file_size}", "--", *args]
        self.args = args
        self.process = subprocess.Popen(args, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE)
        STARTED.append(self)
        self.stderr = Lines(self.process.stderr)
        self.stdout = Lines(self.process.stdout if read_stdout and stdout is subprocess.PIPE else None)
        self.signalled_at: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, sig: int) -> None:
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
        self.process.send_signal(sig)

    def wait_exit(self, limit: float) -> float | None:
        """Seconds from the first signal to the exit, or None if it did not exit within ``limit``."""
        try:
            self.process.wait(limit)
        except subprocess.TimeoutExpired:
            return None
        self.stderr.join()
        self.stdout.join()
        return time.monotonic() - (self.signalled_at or time.monotonic())

    def wait_for(self, pattern: str | Callable[[str], bool], limit: float, *, where: str = "stderr") -> str:
        """The first line of stderr (or stdout) that matches; ``AssertionError`` after ``limit`` s."""
        test = (lambda line: re.search(pattern, line) is not None) if isinstance(pattern, str) else pattern
        lines = self.stderr if where == "stderr" else self.stdout
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for line in lines.snapshot():
                if test(line):
                    return line
            if self.process.poll() is not None:
                time.sleep(0.1)  # what it printed last
                for line in lines.snapshot():
                    if test(line):
                        return line
                break
            time.sleep(0.05)
        raise AssertionError(
            f"no line matching {pattern!r} on {where} within {limit} s (exit {self.process.poll()}); "
            f"stderr: {self.stderr.text()[-3000:]}"
        )

    def committed(self) -> int:
        """The last committed total the process reported."""
        found = [int(m[1].replace(",", "")) for line in self.stderr.snapshot() if (m := COMMITTED.search(line))]
        return found[-1] if found else 0

    def wait_committed(self, at_least: int, limit: float) -> int:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if (n := self.committed()) >= at_least:
                return n
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        last, said = self.committed(), self.stderr.text()[-3000:]
        raise AssertionError(f"no commit of {at_least} reads within {limit} s (last {last}); stderr: {said}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def cpu_seconds(self) -> float:
        """User and system CPU the (running) process used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ekm(args: list[str], cwd: Path, **options: Any) -> Proc:
    return Proc([*CLI, *args], cwd, **options)


@contextlib.contextmanager
def simulator(cwd: Path, address: str, port: int = 0, *, baud: int = 9600) -> Iterator[tuple[Proc, int]]:
    """``ekm-async simulate`` over TCP (a gateway with one V4 meter), and its port."""
    proc = ekm(["simulate", "--tcp", f"127.0.0.1:{port}", "--meter", f"v4:{address}", "--baud", str(baud)], cwd)
    try:
        line = proc.wait_for(r"^ready tcp=", 20, where="stdout")
        yield proc, int(re.search(r"tcp=[\d.]+:(\d+)", line)[1])  # type: ignore[index]
    finally:
        proc.kill()


@contextlib.contextmanager
def mosquitto(cwd: Path) -> Iterator[tuple[Proc, int]]:
    """A broker of its own on a free port."""
    if MOSQUITTO is None:
        raise AssertionError("mosquitto not found: `apt-get install mosquitto`")
    port = free_port()
    config = cwd / f"mosquitto-{port}.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = Proc([MOSQUITTO, "-c", str(config)], cwd, read_stdout=False, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    try:
        yield proc, port
    finally:
        proc.kill()


@contextlib.contextmanager
def syn_dropping_gateway() -> Iterator[int]:
    """A port whose connects hang: its listener's accept queue is full, so the kernel drops further SYNs,
    as a gateway that is down behind a firewall does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    probe = socket.socket()
    probe.settimeout(0.5)
    try:
        probe.connect(("127.0.0.1", port))
    except TimeoutError:
        pass  # as wanted: the SYN is dropped
    else:
        raise AssertionError("the kernel accepted a connect beyond the full backlog")
    finally:
        probe.close()
    try:
        yield port
    finally:
        for s in [*fillers, listener]:
            s.close()


def connecting_to(port: int) -> int:
    """How many sockets on this host are sending their SYN to ``port`` (state SYN_SENT)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "02" and int(fields[2].split(":")[1], 16) == port:
            count += 1
    return count


_CLOSING_GATEWAY = """
import socket
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(listener.getsockname()[1], flush=True)
count = 0
while True:
    conn, _ = listener.accept()
    conn.close()
    count += 1
    print("accepted", count, flush=True)
"""


@contextlib.contextmanager
def closing_gateway(cwd: Path) -> Iterator[tuple[Proc, int]]:
    """A gateway process that accepts every connection and closes it at once, printing ``accepted N``."""
    proc = Proc([sys.executable, "-c", _CLOSING_GATEWAY], cwd)
    port = int(proc.wait_for(r"^\d+$", 10, where="stdout"))
    try:
        yield proc, port
    finally:
        proc.kill()


@contextlib.contextmanager
def small_disk(where: Path, size: int) -> Iterator[tuple[Path, int | None]]:
    """A directory on a tmpfs of ``size`` bytes; where no tmpfs can be mounted (not root), a plain
    directory and the file size limit a process must be given instead (RLIMIT_FSIZE: its writes
    beyond it fail, as on a full disk)."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, check=False
    )
    try:
        yield where, None if mounted.returncode == 0 else size
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def rows(path: Path) -> list[tuple[str, float]]:
    """(Meter_Address, time_utc) of every read in the file."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return [(a, t) for a, t in db.execute('SELECT "Meter_Address", time_utc FROM reads ORDER BY id')]


def integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def json_reads(lines: list[str]) -> list[dict[str, Any]]:
    """The whole JSON lines of ``poll --json`` (a last line cut short by a stop is left out)."""
    out = []
    for line in lines:
        if line.endswith("\n"):
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out


def send_together(sig: int, *procs: Proc) -> None:
    """One signal to several processes at the same instant (a host shutting down)."""
    for proc in procs:
        proc.send(sig)


def stop(proc: Proc, sig: int = signal.SIGTERM, limit: float = 30.0) -> float | None:
    proc.send(sig)
    return proc.wait_exit(limit)
