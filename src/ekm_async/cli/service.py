"""What the long-running commands (``poll``, ``serve``, ``simulate``) share: output that never blocks
the event loop, how they stop on a signal, and the reports of outages and storage failures.

How a long-running command stops (the README says the same to users):

* SIGTERM, SIGINT (Ctrl-C) and SIGHUP (the terminal went away) all ask for a stop. A signal that
  was ignored when the command started (``nohup``) stays ignored.
* A stop asked for while the command is still starting (a gateway that does not answer its connect)
  cancels the start at once.
* A running command stops polling, lets every observer take what was read, commits it, publishes to
  MQTT for up to 3 s, and exits: within :data:`STOP_LIMIT` seconds whatever else is failing. If
  it has not exited by then it says so in one line and exits with status 1 (it never has in the tests).
* A second signal exits at once (status 130), reporting how many reads were not yet committed.

Output is written by a thread of its own (:class:`Output`): a reader that does not read (a full pipe,
a terminal stopped with Ctrl-S, a stalled SSH session) delays only that thread, never polling or
committing; beyond :data:`OUTPUT_LIMIT` bytes waiting the oldest lines are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import logging
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn, TextIO

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from ..bus import Bus
from ..store import SqliteStore

__all__ = ["OUTPUT_LIMIT", "STOP_LIMIT", "CommandError", "Output", "Stopper", "Watch", "counted", "run_service"]

STOP_LIMIT = 15.0
"""Seconds from the first stop signal within which a long-running command has exited."""
OUTPUT_LIMIT = 4 << 20
"""Bytes of output a stream keeps waiting for a slow reader; beyond, the oldest lines are dropped."""
_FINISH_WAIT = 2.0
"""Seconds the output threads get at exit to write what is left."""
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_GONE = (errno.EPIPE, errno.ECONNRESET)
"""Write errors that mean the reader went away."""


def counted(n: int, noun: str) -> str:
    """``1 meter``, ``2 meters``, ``1,234 reads``."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _fd_of(stream: TextIO) -> int | None:
    """The file descriptor behind ``stream``, if it has one (a StringIO in tests has none)."""
    try:
        return stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


class _Sink:
    """Writes text to a stream from the output thread: straight to its file descriptor (no Python
    buffer whose lock a blocked thread could hold at interpreter exit), or to the object itself."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._fd = _fd_of(stream)
        self.encoding = getattr(stream, "encoding", None) or "utf-8"
        if self._fd is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()  # what Python buffered so far goes first

    def isatty(self) -> bool:
        return self._fd is not None and os.isatty(self._fd)

    def write(self, text: str) -> int:
        if self._fd is None:
            self._stream.write(text)
            self._stream.flush()
            return len(text)
        data = memoryview(text.encode(self.encoding, "replace"))
        while data:
            data = data[os.write(self._fd, data) :]
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered."""

    def fileno(self) -> int:
        if self._fd is None:
            raise io.UnsupportedOperation("fileno")
        return self._fd


class Output:
    """One output stream, written by a thread of its own.

    ``write(text)`` queues text and returns at once. ``show(renderable)`` (with ``live=True``) makes
    ``renderable`` the live display, drawn by the thread when it can (only the latest counts);
    written text then appears above it. A stream whose reader went away (EPIPE) is ``broken``:
    ``on_broken`` is called in the event loop, and nothing more is written.
    """

    def __init__(self, stream: TextIO, *, live: bool = False, width: int | None = None) -> None:
        self._sink = _Sink(stream)
        self._lines: deque[str] = deque()
        self._size = 0
        self._cond = threading.Condition()
        self._shown: RenderableType | None = None
        self._drawn: RenderableType | None = None
        self._closing = False
        self._live = live
        self.dropped = 0
        """Lines dropped because the reader did not keep up."""
        self.broken = False
        """Writing failed (``error`` says why): nothing more is written."""
        self.error: OSError | None = None
        self.on_broken: Callable[[], None] | None = None
        """Called in the bound loop when the reader went away (EPIPE)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="ekm-output", daemon=True)
        self._console = Console(file=self._sink, width=width if width or self._sink.isatty() else 120)  # type: ignore[arg-type]
        self._thread.start()

    @property
    def is_terminal(self) -> bool:
        return self._sink.isatty()

    def bind(self, loop: asyncio.AbstractEventLoop, on_broken: Callable[[], None]) -> None:
        """Call ``on_broken`` in ``loop`` when the reader goes away."""
        self._loop, self.on_broken = loop, on_broken

    def write(self, text: str) -> None:
        with self._cond:
            if self.broken or self._closing:
                self.dropped += 1
                return
            self._lines.append(text)
            self._size += len(text)
            while self._size > OUTPUT_LIMIT and len(self._lines) > 1:
                self._size -= len(self._lines.popleft())
                self.dropped += 1
            self._cond.notify()

    def show(self, renderable: RenderableType) -> None:
        with self._cond:
            self._shown = renderable
            self._cond.notify()

    @property
    def unwritten(self) -> int:
        """Lines still waiting."""
        return len(self._lines)

    def finish(self, wait: float = _FINISH_WAIT) -> bool:
        """Write what is left (and the last live display) within ``wait`` seconds; False if the reader
        did not take it all by then. Called once the event loop has finished."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(wait)
        return not self._thread.is_alive()

    # The thread

    def _run(self) -> None:
        live = Live(console=self._console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
        started = False  # the live display starts with the first thing shown: nothing shown, nothing drawn
        try:
            while True:
                with self._cond:
                    while not self._lines and self._shown is self._drawn and not self._closing:
                        self._cond.wait()
                    lines = list(self._lines)
                    self._lines.clear()
                    self._size = 0
                    shown, closing = self._shown, self._closing
                for text in lines:
                    if self._live:
                        live.console.print(Text(text.rstrip("\n")), soft_wrap=True)
                    else:
                        self._sink.write(text)
                if self._live and shown is not None and shown is not self._drawn:
                    if not started:
                        live.start()
                        started = True
                    live.update(shown, refresh=True)
                    self._drawn = shown
                if closing and not self._lines:
                    if started:
                        live.stop()
                        if not self._sink.isatty():
                            self._sink.write("\n")  # a terminal gets its newline from rich; a file or pipe does not
                    return
        except OSError as exc:  # EPIPE: the reader went away; EIO: the terminal did; ENOSPC, …
            with self._cond:
                self.broken, self.error = True, exc
                self.dropped += len(self._lines)
                self._lines.clear()
            if (
                exc.errno in _GONE
                and self._loop is not None
                and self.on_broken is not None
                and not self._loop.is_closed()
            ):
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self._loop.call_soon_threadsafe(self.on_broken)


AUDIT = "ekm_async.audit"


class _OutputHandler(logging.Handler):
    """Log records as lines of an :class:`Output` (the library's warnings, and the audit trail of
    writes, on the command's stderr)."""

    def __init__(self, output: Output) -> None:
        super().__init__(logging.INFO)
        self.output = output
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING and record.name != AUDIT:
            return
        prefix = "audit: " if record.name == AUDIT else ""
        self.output.write(prefix + self.format(record) + "\n")


@contextlib.contextmanager
def _logging_to(output: Output) -> Iterator[None]:
    """The command's logging (the library never configures any): warnings and errors, and every write
    of the audit trail, as lines of ``output``, while the command runs."""
    root, audit = logging.getLogger(), logging.getLogger(AUDIT)
    handler, levels = _OutputHandler(output), (root.level, audit.level)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    audit.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        audit.setLevel(levels[1])


class Stopper:
    """The stop signals of a long-running command (see the module's documentation).

    Make it first thing in the command's main coroutine; ``started()`` once everything is open: from
    then on a signal sets ``event`` (the command stops in order) instead of cancelling the start.
    ``pending`` tells the report of a second signal how many reads are not yet committed.
    """

    def __init__(self, report: Output, *, pending: Callable[[], int] = lambda: 0) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._main = task
        self._report = report
        self._pending = pending
        self._started = False
        self._watchdog: threading.Timer | None = None
        self.event = asyncio.Event()
        self.signal: int | None = None
        """The first stop signal received."""
        self.cancelled_start = False
        self._installed: list[int] = []
        for sig in _STOP_SIGNALS:
            if signal.getsignal(sig) is signal.SIG_IGN:
                continue  # e.g. SIGHUP under nohup
            self._loop.add_signal_handler(sig, self._on_signal, sig)
            self._installed.append(sig)

    def started(self) -> None:
        self._started = True

    def _on_signal(self, sig: int) -> None:
        if self.signal is not None:
            self._now(sig)
            return
        self.signal = sig
        self.event.set()
        self._watchdog = threading.Timer(STOP_LIMIT, self._overdue)
        self._watchdog.daemon = True
        self._watchdog.start()
        if not self._started:
            self.cancelled_start = True
            self._main.cancel()

    def _now(self, sig: int) -> None:
        self._exit(f"{signal.Signals(sig).name} again: stopping now", 130)

    def _overdue(self) -> None:
        self._exit(f"error: did not stop within {STOP_LIMIT:g} s of the signal: exiting now", 1)

    def _exit(self, message: str, status: int) -> NoReturn:
        """Exit at once, saying why (and what is lost) in one line, as far as stderr takes it in 0.5 s."""
        pending = self._pending()
        self._report.write(message + (f"; {counted(pending, 'read')} not committed" if pending else "") + "\n")
        self._report.finish(0.5)
        os._exit(status)

    def close(self) -> None:
        """Done (the command's last step): the watchdog is no longer needed, signals are default again."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        for sig in self._installed:
            with contextlib.suppress(ValueError, RuntimeError):
                self._loop.remove_signal_handler(sig)

    def took_over(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the cancellation of the start by a stop signal (then it is taken back)."""
        if isinstance(exc, asyncio.CancelledError) and self.cancelled_start:
            self._main.uncancel()
            return True
        return False


def _clock(when: Any) -> str:
    return str(when.astimezone().strftime("%H:%M:%S")) if when is not None else "?"


@dataclass
class Watch:
    """Tells, once per change, what a running command's user must know: a bus that has been unreachable
    longer than a read takes on the wire and its return, commits that fail and their recovery, reads
    dropped, a database file deleted or replaced under the command."""

    report: Callable[[str], None]
    buses: Iterable[Bus]
    store: SqliteStore | None = None
    _down: set[int] = field(default_factory=set)
    _failing: bool = False
    _lost: int = 0
    _reopened: int = 0

    def check(self) -> None:
        for bus in self.buses:
            health = bus.health()
            if health.outage and id(bus) not in self._down:
                self._down.add(id(bus))
                self.report(
                    f"error: bus {bus.url} unreachable since {_clock(health.down_since)} ({health.reason}); "
                    "reads wait until it is back"
                )
            elif health.connected and id(bus) in self._down:
                self._down.discard(id(bus))
                self.report(f"bus {bus.url} is back")
        store = self.store
        if store is None:
            return
        if store.commit_error is not None and not self._failing:
            self._failing = True
            self.report(f"error: cannot commit to {store.path}: {store.commit_error}; reads are kept and tried again")
        elif store.commit_error is None and self._failing:
            self._failing = False
            self.report(f"committing to {store.path} again")
        if store.reopened > self._reopened:
            self._reopened = store.reopened
            self.report(
                f"warning: {store.path} was deleted or replaced while in use: opened it again, "
                "the reads from now on go there"
            )
        if store.lost > self._lost:
            self.report(
                f"error: {counted(store.lost - self._lost, 'read')} dropped, never to be committed to {store.path}"
            )
            self._lost = store.lost

    def start(self, stack: contextlib.AsyncExitStack, also: Callable[[], None] | None = None) -> Watch:
        """:meth:`run` in a task of its own until ``stack`` closes."""
        task = asyncio.get_running_loop().create_task(self.run(also=also))
        stack.callback(task.cancel)
        return self

    async def run(self, every: float = 0.25, also: Callable[[], None] | None = None) -> None:
        """Check every ``every`` seconds (and call ``also``, e.g. to redraw a live table)."""
        while True:
            self.check()
            if also is not None:
                also()
            await asyncio.sleep(every)


class CommandError(Exception):
    """What ends a command with one line on stderr and an exit status (2: the user's input, 1: the rest)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


Main = Callable[[Output, Output, list[Stopper]], Coroutine[Any, Any, int]]


def run_service(main: Main, out: TextIO, *, live: bool = False, stored: bool = False) -> int:
    """Run a long-running command's ``main(stdout, stderr, stoppers)`` on a new event loop, its output
    through :class:`Output` threads and its logging on stderr; the exit status it returns, or that of
    the :class:`CommandError` it raised. ``stored``: the reads also went to a database, so output
    lines that could not be written lost nothing."""
    stdout, stderr = Output(out, live=live), Output(sys.stderr)
    stoppers: list[Stopper] = []
    try:
        with _logging_to(stderr):
            code = asyncio.run(main(stdout, stderr, stoppers))
    except CommandError as exc:
        stderr.write(f"error: {exc}\n")
        code = exc.status
    before = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    for sig, handler in before.items():  # the loop is gone: a signal while the output finishes ends it at once
        if handler is not signal.SIG_IGN:
            signal.signal(sig, _exit_now)
    try:
        return _finish(code, stdout, stderr, stored, stoppers)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _finish(code: int, stdout: Output, stderr: Output, stored: bool, stoppers: list[Stopper]) -> int:
    """The output written (as far as its readers take it), its losses said; the exit status."""
    written = stdout.finish()
    unwritten = stdout.dropped + (0 if written else max(1, stdout.unwritten))
    if unwritten and not _gone(stdout):
        elsewhere = "" if stored else "; the reads are in no other place"
        said = f"{counted(unwritten, 'line')} of output {'was' if unwritten == 1 else 'were'} not written"
        stderr.write(f"warning: {said}: stdout was not read{elsewhere}\n")
        if not stored:
            code = code or 1
    stderr.finish()
    for stopper in stoppers:
        stopper.close()
    return code


def _exit_now(sig: int, frame: object) -> None:
    os._exit(130)


def _gone(output: Output) -> bool:
    """The reader went away (a closed pipe): what it did not read it did not want."""
    return output.error is not None and output.error.errno in _GONE
