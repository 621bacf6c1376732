"""Benchmark: V4 reads per second on one simulated RS-485 bus, ekm-async against the vendor's ekmmeters 0.2.5.

What it measures, in one run, on one simulated bus: an ``ekm-async simulate`` process (started here with
``--tcp 127.0.0.1:0 --pty LINK --meter v4:000300001184 --meter v4:000300001185 --baud 9600
--turnaround 0.02``) serving a single :class:`~ekm_async.sim.SimBus` — one wire that requests and
replies share, paced at 9600 baud 7E1 — over TCP and over a pty at once. Then, one after the other
(two clients on one wire at the same time would garble each other), each for at least ``--seconds``
(default 60):

* **ekm-async** — ``open_bus("tcp://…")`` and two tasks, one per meter, each ``while: await
  meter.read()`` (A + B + close: one transaction). The bus serves them FIFO, so one read is always
  queued while the other is on the wire: the wire is kept busy back to back. A read that raises
  counts as a failure.
* **ekmmeters 0.2.5** — ``benchmarks/_vendor_poll.py`` in the vendor's own environment
  (``benchmarks/.venv-ekmmeters``, made by ``_harness.vendor_python``: ``python -m venv`` and
  ``pip install ekmmeters==0.2.5 pyserial`` on the first run, PyPI reachable then): ``SerialPort(pty,
  9600)`` with the vendor's default ``force_wait`` (0.2 s; ``--vendor-force-wait`` to change it) and
  ``V4Meter.request()`` on the two meters in turn (A then B, no close string). ``request()`` must
  return True with the read of the meter asked, else it is a failure.

Reads/s is good reads over the time from the first request to the end of the last read. The wire limit:
a V4 read is A request (19 bytes) + A reply (255) + B request (19) + B reply (255) + close (5) = 553
characters × 1.0417 ms = 576.0 ms on the wire, plus one 20 ms meter turnaround per reply: 616.0 ms,
1.623 reads/s at most on one bus. Target (issue 4): ekm-async at least 97 % of it.

Where ekm-async's time goes beyond the wire: its TCP connection is tapped (a wrapping transport and
protocol, nothing changed in the bus) to time, for every reply, the *host turn* (the reply's last byte
received → the next bytes written) and how *late* the reply was (its last byte, against the first byte
written after the previous reply plus the wire time of what was written since, the reply and the
turnaround: the simulator's pacing and loopback delays).

Run from the project root::

    .venv/bin/python benchmarks/bench_bus.py [--seconds S] [--vendor-force-wait S] [--no-vendor] [--json]

Exit status 0 when the target is met, 1 when not, 2 when the simulator or the vendor's run failed.
POSIX only (the simulator's pty).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

from _harness import (
    BAUD,
    BYTE_TIME,
    HERE,
    READ_BYTES,
    READ_WIRE,
    TURNAROUND,
    VENDOR_VERSION,
    WIRE_LIMIT,
    dump_json,
    parser,
    run,
    simulator,
    vendor_python,
    vendor_report,
)
from ekm_async import EkmError, FrameDecoder, open_bus
from ekm_async._transport import Connector, connector_for
from ekm_async.commands import CLOSE, LiveRead, live_read
from ekm_async.frames import Frame

VENDOR_SCRIPT = HERE / "_vendor_poll.py"
ADDRESSES = ("000300001184", "000300001185")
TARGET = 0.97

REQUEST_A = live_read(ADDRESSES[0], LiveRead.V4A)
REQUEST_B = live_read(ADDRESSES[0], LiveRead.V4B)


# ---------------------------------------------------------------------------------------------------
# A tap on ekm-async's connection: when bytes went out and came in


@dataclass(frozen=True, slots=True)
class WireEvent:
    direction: Literal["tx", "rx"]
    time: float
    data: bytes


class _TapTransport(asyncio.Transport):
    """Passes everything to the real transport; notes the time and bytes of every write."""

    def __init__(self, inner: asyncio.Transport, log: list[WireEvent]) -> None:
        super().__init__()
        self._inner = inner
        self._log = log

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._log.append(WireEvent("tx", time.perf_counter(), bytes(data)))
        self._inner.write(data)

    def close(self) -> None:
        self._inner.close()

    def abort(self) -> None:
        self._inner.abort()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)


class _TapProtocol(asyncio.Protocol):
    """Passes everything to the bus's protocol; notes the time and bytes of every read."""

    def __init__(self, inner: asyncio.Protocol, log: list[WireEvent]) -> None:
        self._inner = inner
        self._log = log

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._inner.connection_made(_TapTransport(transport, self._log))

    def data_received(self, data: bytes) -> None:
        self._log.append(WireEvent("rx", time.perf_counter(), data))
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def tapped(connect: Connector, log: list[WireEvent]) -> Callable[[asyncio.Protocol], Awaitable[asyncio.BaseTransport]]:
    """``connect``, with every byte in and out of the connection logged with its time."""

    async def connect_tapped(protocol: asyncio.Protocol) -> asyncio.BaseTransport:
        return await connect(_TapProtocol(protocol, log))

    return connect_tapped


@dataclass(frozen=True, slots=True)
class Spread:
    """Milliseconds: how many, mean, median, 95th percentile, max."""

    count: int
    mean_ms: float
    median_ms: float
    p95_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Spread:
        if not seconds:
            return cls(0, 0.0, 0.0, 0.0, 0.0)
        ms = sorted(s * 1e3 for s in seconds)
        return cls(len(ms), statistics.fmean(ms), statistics.median(ms), ms[int(0.95 * (len(ms) - 1))], ms[-1])


@dataclass(frozen=True, slots=True)
class Gaps:
    """Where a read's time goes beyond the wire, from the tap."""

    turn_after_a: Spread
    """A reply's last byte received → the B request written."""
    turn_after_b: Spread
    """B reply's last byte received → the close string (and the next read's A request) written."""
    late: Spread
    """Reply's last byte received, later than the first byte written since the previous reply + wire time."""


def _messages(data: bytes) -> list[bytes]:
    """One write split into what the bus sent: it writes a close string with the next request."""
    out = []
    while data.startswith(CLOSE) and len(data) > len(CLOSE):
        out.append(CLOSE)
        data = data[len(CLOSE) :]
    return [*out, data]


def analyse(log: list[WireEvent]) -> Gaps:
    """Host turns and reply lateness from the tapped connection's log."""
    decoder = FrameDecoder()
    turns: dict[bytes, list[float]] = {REQUEST_A[-5:]: [], REQUEST_B[-5:]: []}
    late: list[float] = []
    frame_end: float | None = None
    last_request = frame_end_request = b""
    first_write: float | None = None
    written = 0
    for event in log:
        if event.direction == "tx":
            for message in _messages(event.data):
                decoder.sent(message)
                if message.startswith(b"/?"):
                    last_request = message
            if first_write is None:
                first_write = event.time
                if frame_end is not None and frame_end_request in turns:
                    turns[frame_end_request].append(event.time - frame_end)
            written += len(event.data)
            continue
        for item in decoder.feed(event.data):
            if not isinstance(item, Frame) or first_write is None:
                continue
            expected = (written + len(item.raw)) * BYTE_TIME + TURNAROUND
            late.append(event.time - first_write - expected)
            frame_end, frame_end_request = event.time, last_request[-5:]
            first_write, written = None, 0
    return Gaps(Spread.of(turns[REQUEST_A[-5:]]), Spread.of(turns[REQUEST_B[-5:]]), Spread.of(late))


# ---------------------------------------------------------------------------------------------------
# The two clients


@dataclass(frozen=True, slots=True)
class Result:
    client: str
    transport: str
    seconds: float
    """From the first request to the end of the last read."""
    reads: int
    failures: int
    errors: dict[str, int]
    reads_per_s: float
    of_wire_limit: float
    ms_per_read: float
    details: dict[str, Any] = field(default_factory=dict)


def _result(
    client: str, transport: str, *, seconds: float, reads: int, errors: dict[str, int], details: dict[str, Any]
) -> Result:
    rate = reads / seconds if seconds > 0 else 0.0
    return Result(
        client=client,
        transport=transport,
        seconds=seconds,
        reads=reads,
        failures=sum(errors.values()),
        errors=errors,
        reads_per_s=rate,
        of_wire_limit=rate / WIRE_LIMIT,
        ms_per_read=seconds / reads * 1e3 if reads else float("inf"),
        details=details,
    )


async def poll_ekm_async(url: str, seconds: float) -> Result:
    """Two tasks, one per meter, reading back to back through one bus for at least ``seconds``."""
    log: list[WireEvent] = []
    errors: Counter[str] = Counter()
    reads = 0
    done: list[float] = []
    async with open_bus(url, connect=tapped(connector_for(url), log), baud=BAUD) as bus:
        meters = [bus.v4(address) for address in ADDRESSES]
        start = time.perf_counter()
        deadline = start + seconds

        async def poll(meter: Any) -> None:
            nonlocal reads
            while time.perf_counter() < deadline:
                try:
                    await meter.read()
                except EkmError as exc:
                    errors[type(exc).__name__] += 1
                else:
                    reads += 1
                done.append(time.perf_counter())

        await asyncio.gather(*(poll(meter) for meter in meters))
        stats = bus.stats
        wire = {
            "transactions": stats.transactions,
            "frames_ok": stats.frames_ok,
            "timeouts": stats.timeouts,
            "retries": stats.retries,
            "reconnects": stats.reconnects,
            "rejected": dict(stats.rejected),
            "bytes_sent": stats.bytes_sent,
            "bytes_received": stats.bytes_received,
        }
    first_write = next((e.time for e in log if e.direction == "tx"), start)
    elapsed = max(done, default=first_write) - first_write
    details = {
        "version": version("ekm-async"),
        "tasks": len(meters),
        "wire": wire,
        "gaps": asdict(analyse(log)),
    }
    return _result(
        f"ekm-async {details['version']}", "tcp", seconds=elapsed, reads=reads, errors=dict(errors), details=details
    )


async def poll_vendor(python: Path, pty: str, seconds: float, force_wait: float | None) -> Result:
    """``_vendor_poll.py`` in the vendor's environment, polling both meters over the pty."""
    argv = [str(python), str(VENDOR_SCRIPT), pty, repr(seconds), *ADDRESSES]
    if force_wait is not None:
        argv += ["--force-wait", repr(force_wait)]
    report = await vendor_report(argv, 60 + 2 * seconds)
    name = f"ekmmeters {report['version']}"
    return _result(
        name, "pty", seconds=report["elapsed"], reads=report["reads"], errors=report["errors"], details=report
    )


# ---------------------------------------------------------------------------------------------------
# Report


def print_report(command: list[str], ours: Result, vendor: Result | None, seconds: float) -> None:
    print(f"simulator: {' '.join(command)}")
    print(
        f"V4 read on the wire: {READ_BYTES} bytes × {BYTE_TIME * 1e3:.4f} ms = {READ_BYTES * BYTE_TIME * 1e3:.1f} ms"
        f" + 2 × {TURNAROUND * 1e3:g} ms turnaround = {READ_WIRE * 1e3:.1f} ms → wire limit {WIRE_LIMIT:.3f} reads/s"
    )
    print(f"each client ≥ {seconds:g} s on the same simulated bus, one after the other")
    rows = [ours] if vendor is None else [ours, vendor]
    names = {
        ours.client: f"{ours.client} (2 tasks, FIFO bus)",
        **({vendor.client: f"{vendor.client} (force_wait {vendor.details['force_wait']:g} s)"} if vendor else {}),
    }
    width = max(len(name) for name in names.values())
    print(
        f"{'client':{width}}  {'over':4}  {'seconds':>7}  {'reads':>5}  {'failures':>8}  {'reads/s':>7}"
        f"  {'of wire limit':>13}  {'ms/read':>7}"
    )
    for r in rows:
        print(
            f"{names[r.client]:{width}}  {r.transport:4}  {r.seconds:7.1f}  {r.reads:5d}  {r.failures:8d}"
            f"  {r.reads_per_s:7.3f}  {r.of_wire_limit:12.1%}  {r.ms_per_read:7.1f}"
        )
    for r in rows:
        if r.errors:
            print(f"{r.client} failures: {r.errors}")
    if vendor is not None:
        print(f"ratio ekm-async / ekmmeters: {ours.reads_per_s / vendor.reads_per_s:.2f}×")
        print(
            f"ekmmeters request(): median {vendor.details['median_request_s'] * 1e3:.1f} ms"
            f" (min {vendor.details['min_request_s'] * 1e3:.1f}, max {vendor.details['max_request_s'] * 1e3:.1f});"
            f" it sleeps force_wait after each of its 2 writes and 2 replies ({4 * vendor.details['force_wait']:g} s"
            f" a read) and polls the port every {vendor.details['poll_sleep'] * 1e3:g} ms"
        )
    gaps = ours.details["gaps"]
    after_a, after_b, late = (Spread(**gaps[k]) for k in ("turn_after_a", "turn_after_b", "late"))
    wire = ours.details["wire"]
    print(
        f"ekm-async beyond the wire, ms per read: host turns {after_a.mean_ms + after_b.mean_ms:.2f}"
        f" (after A: mean {after_a.mean_ms:.2f}, p95 {after_a.p95_ms:.2f}, max {after_a.max_ms:.2f};"
        f" after B: mean {after_b.mean_ms:.2f}, p95 {after_b.p95_ms:.2f}, max {after_b.max_ms:.2f})"
        f" + replies late {2 * late.mean_ms:.2f} (2 × mean {late.mean_ms:.2f}, median {late.median_ms:.2f},"
        f" p95 {late.p95_ms:.2f}, max {late.max_ms:.2f}) → {READ_WIRE * 1e3:.1f}"
        f" + {after_a.mean_ms + after_b.mean_ms + 2 * late.mean_ms:.2f} ms (measured {ours.ms_per_read:.1f})"
    )
    print(
        f"ekm-async wire counters: {wire['transactions']} transactions, {wire['frames_ok']} frames ok,"
        f" {wire['timeouts']} timeouts, {wire['retries']} retries, {wire['reconnects']} reconnects,"
        f" rejected {wire['rejected'] or 0}"
    )
    passed = ours.of_wire_limit >= TARGET
    print(
        f"target ekm-async ≥ {TARGET:.0%} of the wire limit: {ours.of_wire_limit:.1%} → {'PASS' if passed else 'FAIL'}"
    )


async def measure(args: argparse.Namespace) -> tuple[list[str], Result, Result | None]:
    python = None if args.no_vendor else await asyncio.to_thread(vendor_python)
    with tempfile.TemporaryDirectory(prefix="ekm-bench-bus-") as tmp:
        async with simulator(ADDRESSES, pty=Path(tmp) / "ttyEKM") as (command, served):
            assert served.pty is not None
            ours = await poll_ekm_async(served.url, args.seconds)
            vendor = None
            if python is not None:
                vendor = await poll_vendor(python, served.pty, args.seconds, args.vendor_force_wait)
    return command, ours, vendor


def main(argv: list[str] | None = None) -> int:
    options = parser(__doc__)
    options.add_argument("--seconds", type=float, default=60.0, help="minimum time per client (default 60)")
    options.add_argument(
        "--vendor-force-wait",
        type=float,
        default=None,
        metavar="S",
        help="ekmmeters SerialPort force_wait (default: the vendor's own default, 0.2 s)",
    )
    options.add_argument("--no-vendor", action="store_true", help="skip the ekmmeters run")
    args = options.parse_args(argv)
    if args.seconds <= 0 or (args.vendor_force_wait is not None and args.vendor_force_wait < 0):
        options.error("--seconds must be positive and --vendor-force-wait not negative")
    command, ours, vendor = run("bench_bus", measure(args))
    passed = ours.of_wire_limit >= TARGET
    if args.json:
        figures = {
            "simulator": command,
            "meters": list(ADDRESSES),
            "baud": BAUD,
            "turnaround_s": TURNAROUND,
            "read_bytes": READ_BYTES,
            "read_wire_s": READ_WIRE,
            "wire_limit_reads_per_s": WIRE_LIMIT,
            "min_seconds": args.seconds,
            "python": sys.version.split()[0],
            "ekm_async": asdict(ours),
            "vendor": asdict(vendor) if vendor is not None else None,
            "vendor_expected_version": VENDOR_VERSION,
            "ratio": ours.reads_per_s / vendor.reads_per_s if vendor is not None and vendor.reads_per_s else None,
            "target": TARGET,
            "pass": passed,
        }
        print(dump_json(figures))
    else:
        print_report(command, ours, vendor, args.seconds)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
