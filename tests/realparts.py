"""Real parts for the tests: Debian's socat (a pair of connected ptys: a serial line with the bus on
one end and a test playing the meter on the other) and ser2net (an RS-485 gateway: a serial device
behind a raw TCP port or an RFC 2217 telnet port). ``scripts/test`` installs both; a test that needs
one fails when it is missing.

Each part is an async context manager that starts the process, waits until it is ready, and always
stops it again (SIGTERM, then SIGKILL), also when the test fails. The pytest fixtures ``pty_pair``
and ``ser2net`` wrap them (tests/conftest.py makes them available to every test).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

READY_TIMEOUT = 10.0
"""Seconds a part may take to come up."""
STOP_TIMEOUT = 5.0
"""Seconds a part may take to exit on SIGTERM before it is killed."""


def find(binary: str, package: str) -> str:
    """The path of ``binary`` (PATH, /usr/sbin, /usr/bin); the test fails if it is not installed."""
    path = shutil.which(binary) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin", "/usr/local/bin") if (p := Path(d) / binary).exists()), None
    )
    if path is None:
        pytest.fail(f"{binary} not found (PATH, /usr/sbin): these tests drive it for real; `apt-get install {package}`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until(ready: Callable[[], bool], what: str, process: asyncio.subprocess.Process, log: Path) -> None:
    """Wait (at most :data:`READY_TIMEOUT`) until ``ready()``; fail if the process exits first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    while not ready():
        if process.returncode is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{_tail(log)}")
        if loop.time() > deadline:
            pytest.fail(f"{what} not ready within {READY_TIMEOUT:g} s:\n{_tail(log)}")
        await asyncio.sleep(0.005)


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-4000:]
    except OSError:
        return ""


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT`; returns once the process is gone."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    await process.wait()


@contextlib.asynccontextmanager
async def _running(argv: list[str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    try:
        yield process
    finally:
        await asyncio.shield(_stop(process))


# ---------------------------------------------------------------------------------------------------
# socat: a serial line made of two ptys


@dataclass(frozen=True)
class PtyPair:
    """Two ptys joined by socat: what is written to one end is read from the other.

    ``a`` and ``b`` are symlinks to the ptys' slaves (``/dev/pts/N``). socat holds both slaves open
    itself, so a side that closes its end causes no hangup on the other: the line stays up.
    """

    a: Path
    b: Path
    process: asyncio.subprocess.Process
    log: Path

    @property
    def device_a(self) -> str:
        return os.path.realpath(self.a)

    @property
    def device_b(self) -> str:
        return os.path.realpath(self.b)


@contextlib.asynccontextmanager
async def socat_pty_pair(directory: Path) -> AsyncIterator[PtyPair]:
    """``socat -d -d pty,raw,echo=0,link=A pty,raw,echo=0,link=B`` in ``directory``: ready once both
    links exist and socat has entered its transfer loop."""
    socat = find("socat", "socat")
    a, b, log = directory / "pty-a", directory / "pty-b", directory / "socat.log"
    for link in (a, b):
        link.unlink(missing_ok=True)
    argv = [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"]
    async with _running(argv, log) as process:

        def ready() -> bool:
            return a.exists() and b.exists() and "starting data transfer loop" in _tail(log)

        await _until(ready, "socat", process, log)
        yield PtyPair(a, b, process, log)


# ---------------------------------------------------------------------------------------------------
# ser2net: a gateway in front of a serial device


@dataclass
class Ser2Net:
    """A ser2net of its own (``ser2net -n -d -u -c CONFIG`` in ``directory``): :meth:`add` its
    connections, then start it (the ``ser2net`` fixture or :func:`ser2net_running`)."""

    directory: Path
    process: asyncio.subprocess.Process | None = None
    ports: list[int] = field(default_factory=list)
    """The accepters' ports, in the order the connections were added."""
    _connections: list[str] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.directory / "ser2net.log"

    @property
    def config(self) -> Path:
        return self.directory / "ser2net.yaml"

    def add(self, accepter: str, connector: str, **options: str | int | bool) -> int:
        """A connection from ``accepter`` (``tcp`` or ``telnet(rfc2217),tcp``: a free port on 127.0.0.1
        is added, and returned) to ``connector`` (e.g. ``serialdev,/dev/pts/N,9600e71,local``), with
        the connection ``options`` of ser2net.yaml(5) (``chardelay_max=…`` for ``chardelay-max``)."""
        assert self.process is None, "ser2net is running: add connections before it starts"
        port = free_port()
        lines = [
            f"connection: &con{len(self.ports)}",
            f"    accepter: {accepter},127.0.0.1,{port}",
            f"    connector: {connector}",
        ]
        if options:
            lines.append("    options:")
            for name, value in options.items():
                text = str(value).lower() if isinstance(value, bool) else str(value)
                lines.append(f"      {name.replace('_', '-')}: {text}")
        self._connections.append("\n".join(lines))
        self.ports.append(port)
        return port

    def write_config(self) -> Path:
        self.config.write_text("%YAML 1.1\n---\n" + "\n\n".join(self._connections) + "\n")
        return self.config

    def holds(self, device: str) -> bool:
        """Whether ser2net has ``device`` open now (the serial side of a connection is up)."""
        assert self.process is not None
        try:
            entries = list(Path(f"/proc/{self.process.pid}/fd").iterdir())
        except FileNotFoundError:
            return False
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if os.readlink(entry) == device:
                    return True
        return False

    async def wait_released(self, device: str) -> None:
        """Wait until ser2net has closed ``device``: the connection that used it is over, and what
        it wrote to the device has been written."""
        assert self.process is not None
        await _until(lambda: not self.holds(device), f"ser2net releasing {device}", self.process, self.log)


def _listening(ports: list[int]) -> bool:
    """Whether every port of ``ports`` has a listening socket on 127.0.0.1 (Linux: /proc/net/tcp)."""
    wanted = {f"0100007F:{port:04X}" for port in ports}
    try:
        table = Path("/proc/net/tcp").read_text()
    except OSError:
        return False
    listening = {cols[1] for line in table.splitlines()[1:] if len(cols := line.split()) > 3 and cols[3] == "0A"}
    return wanted <= listening


@contextlib.asynccontextmanager
async def ser2net_running(gateway: Ser2Net) -> AsyncIterator[Ser2Net]:
    """Start ``gateway`` with its connections; ready once every accepter listens (found in
    /proc/net/tcp, so no test connection opens a device first)."""
    binary = find("ser2net", "ser2net")
    config = gateway.write_config()
    # -n: stay in the foreground, -d: log to stdout, -u: no UUCP lock files (/var/lock needs root).
    async with _running([binary, "-n", "-d", "-u", "-c", str(config)], gateway.log) as process:
        gateway.process = process
        try:
            await _until(lambda: _listening(gateway.ports), "ser2net", process, gateway.log)
            yield gateway
        finally:
            gateway.process = None


# ---------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
async def pty_pair(tmp_path: Path) -> AsyncIterator[PtyPair]:
    """A fresh socat pty pair (see :class:`PtyPair`)."""
    async with socat_pty_pair(tmp_path) as pair:
        yield pair


Ser2NetStarter = Callable[[Ser2Net], Awaitable[Ser2Net]]


@pytest.fixture
async def ser2net(tmp_path: Path) -> AsyncIterator[Ser2NetStarter]:
    """Starts a :class:`Ser2Net` once its connections are added: ``gw = Ser2Net(dir); port =
    gw.add(...); await ser2net(gw)``. Every one started is stopped when the test ends."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(gateway: Ser2Net) -> Ser2Net:
            return await stack.enter_async_context(ser2net_running(gateway))

        yield start


def open_nonblocking(path: str | os.PathLike[str], flags: int = os.O_RDWR) -> int:
    """A file descriptor of a tty, non-blocking and not becoming our controlling terminal."""
    return os.open(path, flags | os.O_NOCTTY | os.O_NONBLOCK)


def read_available(fd: int) -> bytes:
    """What can be read from ``fd`` now (b"" if nothing; a pty whose other side is gone reads as empty)."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            break
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
