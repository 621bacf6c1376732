"""Benchmark: process CPU per full V4 read and bus efficiency, per way the reply's bytes reach the host.

One ``ekm-async simulate`` process per arrival mode (``--arrival MODE``, two V4 meters, 9600 baud, 20 ms
turnaround) serves one paced bus over TCP and a pty; this process polls it with ekm-async — two tasks,
one per meter, ``await meter.read()`` back to back (A + B + close) — for ``--seconds`` (default 60), and
measures its own CPU (user + system) per good read and reads/s against the wire limit.

The modes (docs/wire.md names the source of each figure) and the way the client reaches them:

* ``bytes`` over the pty, pyserial-asyncio: every byte as it comes (a USB adapter in low-latency mode).
* ``ftdi`` over the pty: 62-byte packets or the 16 ms latency timer (FTDI AN232B-04).
* ``slices`` over TCP: 5 ms pieces (the simulator's default).
* ``ser2net`` over TCP: ser2net's packing rule with its defaults, as the simulator models it.
* ``idle:4`` over TCP: a gateway that sends after 4 idle character times.
* ``ser2net-real`` over TCP: Debian's ``ser2net`` itself (default chardelay) in front of the
  simulator's pty, which hands over byte by byte (skipped when ``ser2net`` is not installed).

The adapter's own delay (FTDI's timer, ser2net's chardelay) is no host's doing: besides the wire limit
(1.623 reads/s), each mode's *adapter limit* adds the mean delay between a reply's last byte on the line
and its last piece at the host, computed from the simulator's model of the mode for a host that asks
again the moment a reply is whole (:func:`adapter_delay`). The target (issue 16):
≤ 250 µs of CPU per read in every mode, and ≥ 99 % of the adapter limit.

ekmmeters 0.2.5 polls the same pty in the pty modes (``--no-vendor`` skips it), its CPU measured in its
own process.

Run from the project root::

    .venv/bin/python benchmarks/bench_arrival.py [--seconds S] [--modes bytes,ftdi,…] [--no-vendor] [--json]

Exit status 0 when every target is met, 1 when not, 2 when a simulator or the vendor's run failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _harness import (
    BYTE_TIME,
    READ_WIRE,
    RESULTS,
    TURNAROUND,
    WIRE_LIMIT,
    BenchError,
    children,
    cpu_model,
    dump_json,
    free_port,
    log,
    own_cpu,
    parser,
    run,
    simulator,
    vendor_python,
    vendor_report,
)
from ekm_async import EkmError, open_bus
from ekm_async.commands import CLOSE, LiveRead, live_read
from ekm_async.sim import Arrival
from ekm_async.sim.arrival import pieces
from ekm_async.wire import FRAME_LEN

HERE = Path(__file__).resolve().parent
ADDRESSES = ("000300001184", "000300001185")
CPU_TARGET = 250e-6
EFFICIENCY_TARGET = 0.99


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    arrival: str
    """The simulator's ``--arrival``."""
    transport: str
    """``pty`` or ``tcp`` (``ser2net``: TCP through Debian's ser2net in front of the pty)."""


MODES = {
    mode.name: mode
    for mode in (
        Mode("bytes", "bytes", "pty"),
        Mode("ftdi", "ftdi", "pty"),
        Mode("slices", "slices", "tcp"),
        Mode("ser2net", "ser2net", "tcp"),
        Mode("idle:4", "idle:4", "tcp"),
        Mode("ser2net-real", "bytes", "ser2net"),
    )
}


def adapter_delay(arrival: str, reads: int = 200) -> float:
    """Mean seconds from a reply's last byte on the line to its last piece at the host, under the model,
    for a host that sends each request the moment the reply before is whole (the best any host can
    do). A closed loop, not a random phase: an adapter driven by a timer (FTDI's 16 ms) locks the
    exchanges to its tick, and that phase — not the average one — is what every read then pays."""
    if arrival == "bytes":
        return 0.0
    policy = Arrival.parse(arrival)
    a, b = (len(live_read("0" * 12, read)) for read in (LiveRead.V4A, LiveRead.V4B))
    now, total = random.Random(0).uniform(0, 1), 0.0
    for n in range(reads):
        for request in (a + (len(CLOSE) if n else 0), b):
            first = now + request * BYTE_TIME + TURNAROUND
            times = [(first + (i + 1) * BYTE_TIME, 0x30) for i in range(FRAME_LEN)]
            now = pieces(policy, times, BYTE_TIME)[-1][0]
            total += now - times[-1][0]
    return total / (2 * reads)


@dataclass
class Result:
    mode: str
    transport: str
    client: str
    seconds: float
    reads: int
    errors: dict[str, int]
    cpu_s: float
    reads_per_s: float = 0.0
    cpu_per_read_us: float = 0.0
    of_wire_limit: float = 0.0
    adapter_delay_ms: float = 0.0
    wakeups: int = 0
    """Voluntary context switches of the polling process: how often it slept and was woken."""
    wakeups_per_read: float = 0.0
    adapter_limit: float = 0.0
    of_adapter_limit: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reads_per_s = self.reads / self.seconds if self.seconds > 0 else 0.0
        self.cpu_per_read_us = 1e6 * self.cpu_s / self.reads if self.reads else 0.0
        self.wakeups_per_read = self.wakeups / self.reads if self.reads else 0.0
        self.of_wire_limit = self.reads_per_s / WIRE_LIMIT
        self.adapter_limit = 1 / (READ_WIRE + 2 * self.adapter_delay_ms / 1000)
        self.of_adapter_limit = self.reads_per_s / self.adapter_limit


def wakeups() -> int:
    """Voluntary context switches of this process so far (``getrusage``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw


async def wake_cost(period: float = 0.05, count: int = 60) -> float:
    """This machine's process CPU seconds per wakeup of an idle event loop (``asyncio.sleep(period)``).

    A process that sleeps until the next piece of a reply pays this per wakeup, whatever it then does:
    on a VM it is far more than the work of reading a frame, and it bounds CPU per read from below.
    """
    await asyncio.sleep(period)
    cpu0 = time.process_time()
    for _ in range(count):
        await asyncio.sleep(period)
    return (time.process_time() - cpu0) / count


async def poll(url: str, seconds: float) -> tuple[float, int, Counter[str], float, int, dict[str, Any]]:
    """(elapsed from the first request to the last read, good reads, errors, CPU seconds, wakeups, wire stats)."""
    errors: Counter[str] = Counter()
    reads = 0
    async with open_bus(url) as bus:
        meters = [bus.v4(address) for address in ADDRESSES]
        await asyncio.gather(*(meter.read() for meter in meters))  # warm up: connected, everything imported
        cpu0, _ = own_cpu()
        woken = wakeups()
        start = time.perf_counter()
        deadline = start + seconds
        last = start

        async def loop(meter: Any) -> None:
            nonlocal reads, last
            while time.perf_counter() < deadline:
                try:
                    await meter.read()
                except EkmError as exc:
                    errors[type(exc).__name__] += 1
                else:
                    reads += 1
                last = time.perf_counter()

        await asyncio.gather(*(loop(meter) for meter in meters))
        cpu1, _ = own_cpu()
        woken = wakeups() - woken
        s = bus.stats
        wire = {"rejected": dict(s.rejected), "timeouts": s.timeouts, "retries": s.retries, "frames_ok": s.frames_ok}
    return last - start, reads, errors, cpu1 - cpu0, woken, wire


@contextlib.asynccontextmanager
async def real_ser2net(pty: str, tmp: Path) -> AsyncIterator[str]:
    """Debian's ser2net serving ``pty`` on a TCP port with its default chardelay: yields its URL."""
    binary = shutil.which("ser2net")
    if binary is None:
        raise BenchError("ser2net is not installed (apt-get install ser2net)")
    port = free_port()
    config = tmp / "ser2net.yaml"
    config.write_text(
        "connection: &ekm\n"
        f"  accepter: tcp,127.0.0.1,{port}\n"
        f"  connector: serialdev,{Path(pty).resolve()},9600e71,local\n"
        "  options:\n    kickolduser: true\n"
    )
    argv = ["sh", "-c", f'echo ready; exec {binary} -n -d -c "{config}" -P "{tmp / "ser2net.pid"}"']
    async with children([argv], what="ser2net"):
        await _wait_port(port)
        yield f"tcp://127.0.0.1:{port}"


async def _wait_port(port: int) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return


async def measure_mode(mode: Mode, seconds: float, python: Path | None) -> list[Result]:
    delay = adapter_delay(mode.arrival if mode.transport != "ser2net" else "ser2net")
    out = []
    with tempfile.TemporaryDirectory(prefix="ekm-bench-arrival-") as tmp:
        link = Path(tmp) / "ttyEKM"
        async with simulator(ADDRESSES, pty=link, extra=["--arrival", mode.arrival]) as (_, served):
            log(f"{mode.name}: ekm-async over {mode.transport}, {seconds:g} s")
            if mode.transport == "ser2net":
                async with real_ser2net(str(link), Path(tmp)) as url:
                    elapsed, reads, errors, cpu, woken, wire = await poll(url, seconds)
            else:
                url = str(link) if mode.transport == "pty" else served.url
                elapsed, reads, errors, cpu, woken, wire = await poll(url, seconds)
            out.append(
                Result(
                    mode.name,
                    mode.transport,
                    "ekm-async",
                    elapsed,
                    reads,
                    dict(errors),
                    cpu,
                    adapter_delay_ms=1000 * delay,
                    wakeups=woken,
                    details=wire,
                )
            )
            if python is not None and mode.transport == "pty":
                log(f"{mode.name}: ekmmeters over the pty, {seconds:g} s")
                argv = [str(python), str(HERE / "_vendor_poll.py"), str(link), repr(seconds), *ADDRESSES]
                report = await vendor_report(argv, 60 + 2 * seconds)
                out.append(
                    Result(
                        mode.name,
                        "pty",
                        f"ekmmeters {report['version']}",
                        report["elapsed"],
                        report["reads"],
                        report["errors"],
                        report["cpu_s"],
                        adapter_delay_ms=1000 * delay,
                    )
                )
    return out


def print_report(results: list[Result], seconds: float, wake: float) -> None:
    print(f"bench_arrival: 2 V4 meters, 9600 baud, {TURNAROUND * 1000:g} ms turnaround, {seconds:g} s per client")
    print(f"  CPU: {cpu_model()}; Python {sys.version.split()[0]}")
    print(f"  wire limit {WIRE_LIMIT:.3f} reads/s ({READ_WIRE * 1000:.1f} ms per read)")
    print(f"  this machine: {wake * 1e6:.0f} µs of process CPU per wakeup of an idle event loop")
    print(
        f"  {'mode':<13} {'client':<16} {'reads':>6} {'err':>4} {'CPU/read':>10} {'wakes/read':>10}"
        f" {'reads/s':>8} {'of wire':>8} {'adapter +ms':>11} {'of adapter':>10}"
    )
    for r in results:
        wakes = f"{r.wakeups_per_read:>10.1f}" if r.client == "ekm-async" else f"{'':>10}"
        print(
            f"  {r.mode:<13} {r.client:<16} {r.reads:>6} {sum(r.errors.values()):>4} {r.cpu_per_read_us:>8.0f}µs"
            f" {wakes} {r.reads_per_s:>8.3f} {100 * r.of_wire_limit:>7.1f}% {2 * r.adapter_delay_ms:>11.1f}"
            f" {100 * r.of_adapter_limit:>9.1f}%"
        )


def main(argv: list[str] | None = None) -> int:
    options = parser(__doc__)
    options.add_argument("--seconds", type=float, default=60.0, help="time per client and mode (default 60)")
    options.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    options.add_argument("--no-vendor", action="store_true", help="skip the ekmmeters runs")
    args = options.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes or args.seconds <= 0:
        options.error(f"--modes of {', '.join(MODES)} (got {', '.join(unknown) or 'none'}); --seconds > 0")

    async def everything() -> tuple[list[Result], float]:
        python = None if args.no_vendor else await asyncio.to_thread(vendor_python)
        wake = await wake_cost()
        results: list[Result] = []
        for name in modes:
            results += await measure_mode(MODES[name], args.seconds, python)
        return results, wake

    results, wake = run("bench_arrival", everything())
    ours = [r for r in results if r.client == "ekm-async"]
    passed = all(
        r.cpu_per_read_us <= CPU_TARGET * 1e6 and r.of_adapter_limit >= EFFICIENCY_TARGET and not r.errors for r in ours
    )
    figures = {
        "seconds": args.seconds,
        "cpu": cpu_model(),
        "python": sys.version.split()[0],
        "wire_limit_reads_per_s": WIRE_LIMIT,
        "wake_cost_s": wake,
        "results": [asdict(r) for r in results],
        "passed": passed,
    }
    text = dump_json(figures, RESULTS / "arrival.json")
    if args.json:
        print(text)
    else:
        print_report(results, args.seconds, wake)
        verdict = "met" if passed else "NOT met"
        target = f"≤ {CPU_TARGET * 1e6:.0f} µs per read and ≥ {EFFICIENCY_TARGET:.0%} of the adapter limit"
        print(f"  target {target}: {verdict}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
