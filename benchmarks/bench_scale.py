"""Benchmark: one ekm-async process polling 100 simulated gateways × 10 V4 meters (issue 8).

What it measures. Simulated RS-485 gateways — one :class:`~ekm_async.sim.SimServer` TCP listener per bus,
``--meters`` (10) V4 meters per bus — are served from ``--sim-processes`` (4) separate processes
(``benchmarks/_scale_sim.py``, the buses spread evenly over them). This process opens every bus with
``open_bus("tcp://127.0.0.1:PORT")`` and polls every meter with one :class:`~ekm_async.Poller`
(``interval=0``: two workers per bus keep each bus busy back to back), taking every event from
``poller.events()``. Three runs, one after the other:

1. **Unpaced** — ``--buses`` (100) simulated buses with ``--baud 0`` (replies at once) and a
   ``--unpaced-turnaround`` (1 ms) meter turnaround, polled until ``--reads`` (100,000) full V4 reads
   (A + B + close) were made. Every ``--sample-every`` (5,000) reads: this process's CPU time
   (``getrusage(RUSAGE_SELF)``: user + system, this process only — the simulators' CPU is read from
   ``/proc/PID/stat`` and reported apart), its resident memory (``/proc/self/statm``), the number of
   live Python objects (``gc.get_objects``; its own cost is left out of the CPU figures) and the
   simulators' CPU. Figures after ``--warmup-reads`` (10 %): **CPU µs per read** (target ≤ 100), **total
   reads/s** and **memory** — flat when the resident memory at the end, and the least-squares line
   through the samples, grow by at most 5 % over the resident memory at the end of the warm-up.
   Also measured apart: the CPU of decoding every field of one read (``Read.fields``: lazy, so a
   consumer that never looks at the values never pays it) — add it for a consumer that does.
2. **Paced** — ``--paced-buses`` (100) buses at 9600 baud with a 20 ms turnaround, polled for
   ``--paced-warmup`` (5 s) + ``--paced-seconds`` (60 s). For each bus, from the reads completed in
   the window: reads/s = (reads − 1) / (time from its first to its last read), and its utilization
   against the wire limit — a V4 read is 553 characters (A request 19 + A reply 255 + B request 19 +
   B reply 255 + close 5) × 10 bits / 9600 baud + 2 × 20 ms turnaround = 616.0 ms: **1.623 reads/s
   per bus**. Target: every bus ≥ 95 %. Also: read latency (each meter's transaction time on the wire,
   ``bus.meter_stats[address].last_latency``, and the poller's ask → read time, ``ReadEvent.latency``,
   which includes waiting behind the other worker's read) and this process's CPU per paced read.
3. **Vendor** (unless ``--no-vendor``) — ekmmeters 0.2.5, the vendor client, in its own environment
   (``benchmarks/.venv-ekmmeters``, made by ``_harness.vendor_python``) via
   ``benchmarks/_scale_vendor.py`` (``_vendor_poll.py`` with its CPU time measured): one paced bus of
   ``--meters`` meters, served on a pty, for ``--vendor-seconds`` (30 s): reads/s, utilization and CPU
   per read. The vendor client is synchronous: one bus per process (or thread).

Writes ``--out``/``scale.json`` (every figure, every sample, the per-bus utilization) and
``--out``/``scale.png`` (matplotlib, Agg: the paced per-bus utilization with the 95 % line; the read
latency CDFs with the wire time; resident memory over the unpaced reads) — ``--out`` is
``benchmarks/results`` unless given, where git keeps the plot and ignores the JSON — and prints a
summary with PASS / FAIL per target and a Markdown table (ekm-async, ekmmeters, the physical limit)
for the README.

The machine matters: the simulators need several times the poller's CPU. Unless ``--no-pin``, this
process is pinned to the first CPU and the simulators to the others, so the poller's CPU per read is
its own (not inflated by sharing a core with them); the unpaced reads/s is then bounded by the
simulators' CPUs, a floor for the poller alone.

Run from the project root (needs ``pip install matplotlib`` for the plot)::

    .venv/bin/python benchmarks/bench_scale.py [--reads N] [--buses N] [--paced-buses N] [--paced-seconds S]
        [--sim-processes N] [--no-vendor] [--skip-unpaced] [--skip-paced] [--cprofile FILE] [--json]

Exit status 0 when every target is met, 1 when one is not, 2 when a simulator or the vendor's run failed.
POSIX only (``/proc``, the simulators' pty); Linux for the memory and simulator CPU figures.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import cProfile
import gc
import itertools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _harness import (
    BAUD,
    BYTE_TIME,
    HERE,
    READ_BYTES,
    READ_WIRE,
    RESULTS,
    TURNAROUND,
    WIRE_LIMIT,
    children,
    cpu_model,
    dump_json,
    log,
    own_cpu,
    own_rss,
    parser,
    proc_figures,
    run,
    vendor_python,
    vendor_report,
)
from _scale_sim import meter_address
from ekm_async import Bus, Poller, Read, ReadEvent, open_bus
from ekm_async.commands import CLOSE

if TYPE_CHECKING:
    from matplotlib.axes import Axes

SIM_SCRIPT = HERE / "_scale_sim.py"
VENDOR_SCRIPT = HERE / "_scale_vendor.py"

CPU_TARGET_US = 100.0
UTILIZATION_TARGET = 0.95
MEMORY_TOLERANCE = 0.05


# ---------------------------------------------------------------------------------------------------
# Simulators


@dataclass
class Fleet:
    """Simulator processes serving buses 0 … n-1 (in that order in ``urls``)."""

    urls: list[str]
    pids: list[int]
    argv: list[list[str]]
    pty: str | None = None

    def cpu_seconds(self) -> float:
        return sum(proc_figures(pid)[0] for pid in self.pids)

    def rss_bytes(self) -> int:
        return sum(proc_figures(pid)[1] for pid in self.pids)


def _split(total: int, parts: int) -> list[tuple[int, int]]:
    """(first, count) of ``parts`` nearly equal runs covering 0 … total-1 (no empty run)."""
    parts = max(1, min(parts, total))
    size, extra = divmod(total, parts)
    runs, first = [], 0
    for i in range(parts):
        count = size + (i < extra)
        runs.append((first, count))
        first += count
    return runs


@contextlib.asynccontextmanager
async def fleet(
    buses: int,
    meters: int,
    *,
    baud: int,
    turnaround: float,
    processes: int,
    pty: Path | None = None,
    arrival: str | None = None,
) -> AsyncIterator[Fleet]:
    """Simulator processes serving ``buses`` buses; every one stopped on the way out, however it ends.
    They run on :data:`SIM_CPUS` when the poller is pinned (see :func:`pin`)."""
    commands: list[list[str]] = []
    for n, (first, count) in enumerate(_split(buses, processes)):
        argv = [sys.executable, str(SIM_SCRIPT), "--first-bus", str(first), "--buses", str(count)]
        argv += ["--meters", str(meters), "--baud", str(baud), "--turnaround", repr(turnaround), "--watch-stdin"]
        argv += ["--arrival", arrival] if arrival else []
        commands.append([*argv, "--pty", str(pty)] if pty is not None and n == 0 else argv)
    async with children(commands, what="a simulator", stdin_pipe=True, cpus=SIM_CPUS) as lines:
        ready = [json.loads(line) for line in lines]
        urls = [f"tcp://127.0.0.1:{port}" for r in ready for port in r["ports"]]
        served_pty = next((r["pty"] for r in ready if r.get("pty")), None)
        yield Fleet(urls, [r["pid"] for r in ready], commands, served_pty)


# ---------------------------------------------------------------------------------------------------
# Figures


class LogHistogram:
    """Seconds in logarithmic bins (``per_decade`` per decade from ``low`` to ``high``): constant memory."""

    def __init__(self, low: float = 1e-4, high: float = 100.0, per_decade: int = 60) -> None:
        decades = math.log10(high / low)
        n = round(decades * per_decade)
        self.edges = [low * 10 ** (i / per_decade) for i in range(n + 1)]
        self.counts = [0] * (n + 2)  # below low, the bins, above high
        self.total = 0
        self.sum = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_right(self.edges, seconds)] += 1
        self.total += 1
        self.sum += seconds
        self.max = max(self.max, seconds)

    def quantile(self, q: float) -> float:
        """The upper edge of the bin holding quantile ``q`` (within one bin: ±2 % at 60 bins a decade)."""
        if not self.total:
            return 0.0
        rank = q * self.total
        seen = 0
        for i, count in enumerate(self.counts):
            seen += count
            if seen >= rank and count:
                return self.edges[min(i, len(self.edges) - 1)]
        return self.max

    def cdf(self) -> tuple[list[float], list[float]]:
        """(upper bin edge, fraction ≤ it) for the non-empty bins."""
        xs, ys, seen = [], [], 0
        for i, count in enumerate(self.counts):
            seen += count
            if count:
                xs.append(self.edges[min(i, len(self.edges) - 1)])
                ys.append(seen / self.total)
        return xs, ys

    def summary(self) -> dict[str, float]:
        return {
            "count": self.total,
            "mean_ms": self.sum / self.total * 1e3 if self.total else 0.0,
            "p50_ms": self.quantile(0.5) * 1e3,
            "p95_ms": self.quantile(0.95) * 1e3,
            "p99_ms": self.quantile(0.99) * 1e3,
            "max_ms": self.max * 1e3,
        }


def spread(seconds: Sequence[float]) -> dict[str, float]:
    """Milliseconds: count, mean, percentiles, max of exact samples."""
    if not seconds:
        return {"count": 0, "mean_ms": 0.0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    ms = sorted(s * 1e3 for s in seconds)

    def at(q: float) -> float:
        return ms[min(len(ms) - 1, int(q * len(ms)))]

    return {
        "count": len(ms),
        "mean_ms": statistics.fmean(ms),
        "p50_ms": at(0.5),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "max_ms": ms[-1],
    }


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (0 for fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0


def wire_totals(buses: Sequence[Bus]) -> dict[str, Any]:
    """The buses' wire counters, summed."""
    rejected: Counter[str] = Counter()
    totals = Counter[str]()
    for bus in buses:
        s = bus.stats
        totals.update(
            transactions=s.transactions,
            frames_ok=s.frames_ok,
            timeouts=s.timeouts,
            retries=s.retries,
            reconnects=s.reconnects,
            naks=s.naks,
            bytes_sent=s.bytes_sent,
            bytes_received=s.bytes_received,
        )
        rejected.update(s.rejected)
    return {**totals, "rejected": dict(rejected)}


def fields_cost(read: Read, rounds: int = 2000) -> float:
    """CPU µs to decode every field of one V4 read (``Read.fields`` on a fresh ``Read`` each time)."""
    assert read.b is not None
    start = time.process_time()
    for _ in range(rounds):
        _ = Read.of(read.a, read.b, time=read.time).fields
    return (time.process_time() - start) / rounds * 1e6


# ---------------------------------------------------------------------------------------------------
# Run 1: unpaced


@dataclass(frozen=True, slots=True)
class Sample:
    reads: int
    seconds: float
    """Since polling started."""
    cpu_s: float
    """This process's CPU (user + system) since polling started, the sampling's own cost left out."""
    sys_s: float
    """Of which system (kernel: sockets, epoll)."""
    rss_bytes: int
    objects: int
    sim_cpu_s: float
    """The simulators' CPU since polling started."""


@dataclass
class Unpaced:
    buses: int
    meters_per_bus: int
    sim_processes: int
    turnaround_s: float
    reads: int = 0
    failures: int = 0
    dropped: int = 0
    warmup_reads: int = 0
    samples: list[Sample] = field(default_factory=list)
    cpu_us_per_read: float = 0.0
    """After the warm-up: this process's CPU per read."""
    cpu_sys_us_per_read: float = 0.0
    """Of which system (kernel)."""
    cpu_us_per_read_overall: float = 0.0
    reads_per_s: float = 0.0
    """After the warm-up."""
    poller_cpu_share: float = 0.0
    """CPU seconds per wall second of this process after the warm-up (1.0: one core busy)."""
    sim_cpu_us_per_read: float = 0.0
    sim_cpu_share: float = 0.0
    fields_us: float = 0.0
    """CPU µs of ``Read.fields`` (all fields) of one V4 read, measured apart."""
    rss_warm_bytes: int = 0
    rss_end_bytes: int = 0
    rss_growth: float = 0.0
    """(end − warm) / warm."""
    rss_slope_bytes_per_read: float = 0.0
    rss_fitted_growth: float = 0.0
    """The least-squares line's rise over the measured reads, over the resident memory when warm."""
    objects_warm: int = 0
    objects_end: int = 0
    latency: dict[str, float] = field(default_factory=dict)
    """Ask → read (``ReadEvent.latency``)."""
    latency_cdf: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))
    wire: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None

    @property
    def memory_flat(self) -> bool:
        return self.rss_growth <= MEMORY_TOLERANCE and self.rss_fitted_growth <= MEMORY_TOLERANCE


class Sampler:
    """Takes :class:`Sample` s into ``into``; what sampling costs is left out of the CPU figures."""

    def __init__(self, sims: Fleet, into: list[Sample]) -> None:
        self._sims = sims
        self._into = into
        self._excluded = 0.0
        self._t0, (self._c0, self._k0), self._s0 = time.perf_counter(), own_cpu(), sims.cpu_seconds()

    def __call__(self, reads: int) -> None:
        now, (cpu, system) = time.perf_counter(), own_cpu()
        rss = own_rss()
        objects = len(gc.get_objects())
        sim_cpu = self._sims.cpu_seconds() - self._s0
        cpu_s = cpu - self._c0 - self._excluded
        self._into.append(Sample(reads, now - self._t0, cpu_s, system - self._k0, rss, objects, sim_cpu))
        self._excluded += time.process_time() - cpu


async def run_unpaced(args: argparse.Namespace) -> Unpaced:
    result = Unpaced(args.buses, args.meters, args.sim_processes, args.unpaced_turnaround)
    result.warmup_reads = args.warmup_reads if args.warmup_reads is not None else args.reads // 10
    histogram = LogHistogram()
    last_read: Read | None = None
    profiler = cProfile.Profile() if args.cprofile else None
    async with (
        fleet(
            args.buses, args.meters, baud=0, turnaround=args.unpaced_turnaround, processes=args.sim_processes
        ) as sims,
        contextlib.AsyncExitStack() as stack,
    ):
        buses = [await stack.enter_async_context(open_bus(url, baud=BAUD)) for url in sims.urls]
        meters = [bus.v4(meter_address(b, m)) for b, bus in enumerate(buses) for m in range(args.meters)]
        poller = Poller(meters, interval=0, count=args.reads, queue_size=args.queue_size)
        gc.collect()
        sample = Sampler(sims, result.samples)
        sample(0)
        if profiler is not None:
            profiler.enable()
        reads, every, warm = 0, args.sample_every, result.warmup_reads
        async with poller:
            async for event in poller.events():
                if isinstance(event, ReadEvent):
                    reads += 1
                    histogram.add(event.latency)
                    if reads % every == 0 or reads == warm:
                        sample(reads)
                    last_read = event.read
                else:
                    result.failures += 1
        if profiler is not None:
            profiler.disable()
        if result.samples[-1].reads != reads:
            sample(reads)
        result.reads = sum(status.ok for status in poller.status().values())
        result.dropped = poller.dropped
        result.wire = wire_totals(buses)
    if profiler is not None:
        profiler.dump_stats(args.cprofile)
        result.profile = str(args.cprofile)
    analyse_unpaced(result)
    result.latency = histogram.summary()
    result.latency_cdf = histogram.cdf()
    if last_read is not None:
        result.fields_us = fields_cost(last_read)
    return result


def analyse_unpaced(result: Unpaced) -> None:
    """The figures after the warm-up, from the samples."""
    samples = result.samples
    first = next((s for s in samples if s.reads >= result.warmup_reads), samples[0])
    end = samples[-1]
    if end.reads > first.reads:
        n = end.reads - first.reads
        wall = end.seconds - first.seconds
        result.cpu_us_per_read = (end.cpu_s - first.cpu_s) / n * 1e6
        result.cpu_sys_us_per_read = (end.sys_s - first.sys_s) / n * 1e6
        result.reads_per_s = n / wall
        result.poller_cpu_share = (end.cpu_s - first.cpu_s) / wall
        result.sim_cpu_us_per_read = (end.sim_cpu_s - first.sim_cpu_s) / n * 1e6
        result.sim_cpu_share = (end.sim_cpu_s - first.sim_cpu_s) / wall
    result.cpu_us_per_read_overall = end.cpu_s / end.reads * 1e6 if end.reads else 0.0
    steady = [s for s in samples if s.reads >= first.reads]
    result.rss_warm_bytes, result.rss_end_bytes = first.rss_bytes, end.rss_bytes
    result.rss_growth = (end.rss_bytes - first.rss_bytes) / first.rss_bytes
    result.rss_slope_bytes_per_read = slope([s.reads for s in steady], [s.rss_bytes for s in steady])
    result.rss_fitted_growth = result.rss_slope_bytes_per_read * (end.reads - first.reads) / first.rss_bytes
    result.objects_warm, result.objects_end = first.objects, end.objects


# ---------------------------------------------------------------------------------------------------
# Run 2: paced


@dataclass
class Paced:
    buses: int
    meters_per_bus: int
    sim_processes: int
    seconds: float
    warmup_s: float
    arrival: str = "slices"
    """How the simulated buses handed over bytes (docs/wire.md)."""
    reads: int = 0
    """Completed in the window, all buses."""
    failures: int = 0
    dropped: int = 0
    reads_per_bus: list[int] = field(default_factory=list)
    failures_per_bus: list[int] = field(default_factory=list)
    rate_per_bus: list[float] = field(default_factory=list)
    """Reads/s: (reads − 1) / (first → last read completed in the window)."""
    utilization: list[float] = field(default_factory=list)
    """rate / wire limit."""
    cpu_us_per_read: float = 0.0
    cpu_sys_us_per_read: float = 0.0
    """Of which system (kernel: many small TCP segments: recv, epoll)."""
    poller_cpu_share: float = 0.0
    sim_cpu_share: float = 0.0
    transaction_latency: dict[str, float] = field(default_factory=dict)
    ask_latency: dict[str, float] = field(default_factory=dict)
    transaction_samples: list[float] = field(default_factory=list)
    ask_samples: list[float] = field(default_factory=list)
    wire: dict[str, Any] = field(default_factory=dict)

    @property
    def min_utilization(self) -> float:
        return min(self.utilization, default=0.0)

    @property
    def all_pass(self) -> bool:
        return bool(self.utilization) and self.min_utilization >= UTILIZATION_TARGET


@dataclass
class PacedLog:
    """What the paced run saw: read completion times and failures per bus, the window, CPU at its ends."""

    done: list[list[float]]
    failed: list[int]
    window: list[float] = field(default_factory=lambda: [math.inf, math.inf])
    cpu: list[tuple[float, float]] = field(default_factory=list)
    """(CPU, system CPU) of this process at the window's start and end."""
    sim_cpu: list[float] = field(default_factory=list)


async def run_paced(args: argparse.Namespace) -> Paced:
    arrival = args.arrival or "slices"
    result = Paced(args.paced_buses, args.meters, args.sim_processes, args.paced_seconds, args.paced_warmup, arrival)
    loop = asyncio.get_running_loop()
    async with (
        fleet(
            args.paced_buses,
            args.meters,
            baud=BAUD,
            turnaround=TURNAROUND,
            processes=args.sim_processes,
            arrival=args.arrival,
        ) as sims,
        contextlib.AsyncExitStack() as stack,
    ):
        buses = [await stack.enter_async_context(open_bus(url, baud=BAUD)) for url in sims.urls]
        index = {url: i for i, url in enumerate(sims.urls)}
        meters = [bus.v4(meter_address(b, m)) for b, bus in enumerate(buses) for m in range(args.meters)]
        log = PacedLog([[] for _ in buses], [0] * len(buses))

        async def consume(poller: Poller) -> None:
            async for event in poller.events():
                now, i = loop.time(), index[event.bus]
                if not isinstance(event, ReadEvent):
                    log.failed[i] += 1
                    continue
                log.done[i].append(now)
                if log.window[0] <= now <= log.window[1]:
                    result.ask_samples.append(event.latency)
                    latency = buses[i].meter_stats[event.read.address].last_latency
                    if latency is not None:
                        result.transaction_samples.append(latency)

        async with Poller(meters, interval=0, queue_size=args.queue_size) as poller:
            consumer = loop.create_task(consume(poller))
            try:
                for n, seconds in enumerate((args.paced_warmup, args.paced_seconds)):
                    await asyncio.sleep(seconds)
                    log.window[n] = loop.time()
                    log.cpu.append(own_cpu())
                    log.sim_cpu.append(sims.cpu_seconds())
            finally:
                await poller.aclose()
                await consumer
            result.dropped = poller.dropped
        result.wire = wire_totals(buses)
    analyse_paced(result, log)
    return result


def analyse_paced(result: Paced, log: PacedLog) -> None:
    """Per-bus rates and utilization in the window, CPU per read, latency spreads."""
    start, end = log.window
    for i, times in enumerate(log.done):
        inside = [t for t in times if start <= t <= end]
        rate = (len(inside) - 1) / (inside[-1] - inside[0]) if len(inside) >= 2 and inside[-1] > inside[0] else 0.0
        result.reads_per_bus.append(len(inside))
        result.rate_per_bus.append(rate)
        result.utilization.append(rate / WIRE_LIMIT)
        result.failures_per_bus.append(log.failed[i])
    result.reads = sum(result.reads_per_bus)
    result.failures = sum(log.failed)
    wall = end - start
    (c0, k0), (c1, k1) = log.cpu
    result.cpu_us_per_read = (c1 - c0) / result.reads * 1e6 if result.reads else 0.0
    result.cpu_sys_us_per_read = (k1 - k0) / result.reads * 1e6 if result.reads else 0.0
    result.poller_cpu_share = (c1 - c0) / wall
    result.sim_cpu_share = (log.sim_cpu[1] - log.sim_cpu[0]) / wall
    result.transaction_latency = spread(result.transaction_samples)
    result.ask_latency = spread(result.ask_samples)


# ---------------------------------------------------------------------------------------------------
# Run 3: the vendor client


async def run_vendor(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    python = await asyncio.to_thread(vendor_python)
    addresses = [meter_address(0, m) for m in range(args.meters)]
    pty = tmp / "ttyEKM"
    async with fleet(1, args.meters, baud=BAUD, turnaround=TURNAROUND, processes=1, pty=pty) as sims:
        assert sims.pty is not None
        argv = [str(python), str(VENDOR_SCRIPT), sims.pty, repr(args.vendor_seconds), *addresses]
        report = await vendor_report(argv, 60 + 2 * args.vendor_seconds)
    report["utilization"] = report["reads_per_s"] / WIRE_LIMIT
    report["argv"] = argv
    return report


# ---------------------------------------------------------------------------------------------------
# Report


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def verdicts(unpaced: Unpaced | None, paced: Paced | None) -> list[tuple[str, str, str, bool]]:
    """(target, measured, goal, passed)."""
    rows: list[tuple[str, str, str, bool]] = []
    if unpaced is not None:
        rows.append(
            (
                "CPU per full V4 read (unpaced, poller process)",
                f"{unpaced.cpu_us_per_read:.1f} µs",
                f"≤ {CPU_TARGET_US:g} µs",
                unpaced.cpu_us_per_read <= CPU_TARGET_US,
            )
        )
        rows.append(
            (
                f"memory flat over {unpaced.reads:,} reads",
                f"{unpaced.rss_growth:+.1%} end, {unpaced.rss_fitted_growth:+.1%} fitted",
                f"≤ +{MEMORY_TOLERANCE:.0%}",
                unpaced.memory_flat,
            )
        )
    if paced is not None:
        below = sum(u < UTILIZATION_TARGET for u in paced.utilization)
        rows.append(
            (
                f"every paced bus vs wire limit ({paced.buses} buses)",
                f"min {paced.min_utilization:.1%}, {below} below",
                f"≥ {UTILIZATION_TARGET:.0%}",
                paced.all_pass,
            )
        )
    return rows


def readme_table(unpaced: Unpaced | None, paced: Paced | None, vendor: dict[str, Any] | None) -> str:
    """A Markdown table: ekm-async, the vendor client, the physical limit."""
    vend = vendor or {}
    vname = f"ekmmeters {vend.get('version', '0.2.5')}"
    na = "–"
    rows = [
        ("", f"ekm-async {version('ekm-async')}", vname, "physical limit"),
        (
            "reads/s on one bus (9600 baud, 20 ms turnaround)",
            f"{statistics.fmean(paced.rate_per_bus):.3f} (min {min(paced.rate_per_bus):.3f})" if paced else na,
            f"{vend['reads_per_s']:.3f}" if vendor else na,
            f"{WIRE_LIMIT:.3f}",
        ),
        (
            "of the wire limit",
            f"{statistics.fmean(paced.utilization):.1%} (min {paced.min_utilization:.1%})" if paced else na,
            f"{vend['utilization']:.1%}" if vendor else na,
            "100 %",
        ),
        (
            "paced buses polled at once by one process",
            f"{paced.buses} × {paced.meters_per_bus} meters" if paced else na,
            "1 (synchronous)",
            na,
        ),
        (
            "CPU per V4 read, paced",
            f"{paced.cpu_us_per_read:.0f} µs" if paced else na,
            f"{vend['cpu_us_per_read']:.0f} µs" if vendor and vend.get("cpu_us_per_read") else na,
            na,
        ),
        (
            "CPU per V4 read, unpaced (fields not decoded)",
            f"{unpaced.cpu_us_per_read:.0f} µs" if unpaced else na,
            na,
            na,
        ),
        ("decoding every field of a read", f"{unpaced.fields_us:.0f} µs" if unpaced else na, na, na),
        (
            f"reads/s, unpaced, {unpaced.buses} buses × {unpaced.meters_per_bus} meters"
            if unpaced
            else "reads/s, unpaced",
            f"{unpaced.reads_per_s:,.0f}" if unpaced else na,
            na,
            f"{unpaced.buses * WIRE_LIMIT:.1f} at 9600 baud" if unpaced else na,
        ),
        (
            f"resident memory over {unpaced.reads:,} reads" if unpaced else "resident memory",
            f"{_mib(unpaced.rss_warm_bytes)} → {_mib(unpaced.rss_end_bytes)} ({unpaced.rss_growth:+.1%})"
            if unpaced
            else na,
            f"{vend['maxrss_kib'] / 1024:.1f} MiB (1 bus, peak)" if vendor else na,
            na,
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def print_report(
    args: argparse.Namespace, unpaced: Unpaced | None, paced: Paced | None, vendor: dict[str, Any] | None
) -> None:
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs ({args.pinning}); Python {platform.python_version()}")
    print(
        f"V4 read on the wire: {READ_BYTES} bytes × {BYTE_TIME * 1e3:.4f} ms + 2 × {TURNAROUND * 1e3:g} ms"
        f" = {READ_WIRE * 1e3:.1f} ms → wire limit {WIRE_LIMIT:.3f} reads/s per bus"
    )
    if unpaced is not None:
        u = unpaced
        print(
            f"\nunpaced: {u.buses} buses × {u.meters_per_bus} meters over {u.sim_processes} simulator processes"
            f" (baud 0, turnaround {u.turnaround_s * 1e3:g} ms), {u.reads:,} reads, {u.failures} failures,"
            f" {u.dropped} events dropped; after {u.warmup_reads:,} warm-up reads:"
        )
        print(
            f"  {u.reads_per_s:,.0f} reads/s; poller CPU {u.cpu_us_per_read:.1f} µs/read"
            f" ({u.cpu_sys_us_per_read:.1f} of it system; overall incl. warm-up {u.cpu_us_per_read_overall:.1f}),"
            f" {u.poller_cpu_share:.0%} of a core;"
            f" simulators {u.sim_cpu_us_per_read:.1f} µs/read, {u.sim_cpu_share:.0%} of a core"
        )
        print(f"  decoding every field of a read (Read.fields, measured apart): {u.fields_us:.1f} µs")
        print(
            f"  resident memory {_mib(u.rss_warm_bytes)} → {_mib(u.rss_end_bytes)} ({u.rss_growth:+.2%}),"
            f" slope {u.rss_slope_bytes_per_read * 1e4 / 1024:+.1f} KiB per 10k reads"
            f" (fitted {u.rss_fitted_growth:+.2%}); Python objects {u.objects_warm:,} → {u.objects_end:,}"
        )
        print("  reads  seconds  cpu µs/read(interval)  RSS MiB  objects")
        prev: Sample | None = None
        for s in u.samples:
            interval = (
                f"{(s.cpu_s - prev.cpu_s) / (s.reads - prev.reads) * 1e6:8.1f}"
                if prev is not None and s.reads > prev.reads
                else "       –"
            )
            print(f"  {s.reads:7,d} {s.seconds:7.1f}  {interval:>21}  {s.rss_bytes / 2**20:7.1f}  {s.objects:7,d}")
            prev = s
        lat = u.latency
        print(
            f"  ask → read latency: median {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f}, p99 {lat['p99_ms']:.1f},"
            f" max {lat['max_ms']:.1f}"
        )
        print(f"  wire: {json.dumps(u.wire)}")
        if u.profile:
            print(f"  cProfile of the unpaced polling written to {u.profile} (its CPU figures are inflated by it)")
    if paced is not None:
        p = paced
        print(
            f"\npaced: {p.buses} buses × {p.meters_per_bus} meters at {BAUD} baud, turnaround {TURNAROUND * 1e3:g} ms,"
            f" arrival {p.arrival},"
            f" {p.warmup_s:g} s warm-up + {p.seconds:g} s window: {p.reads:,} reads, {p.failures} failures,"
            f" {p.dropped} events dropped"
        )
        util = p.utilization
        print(
            f"  utilization per bus: min {min(util):.2%}, median {statistics.median(util):.2%},"
            f" max {max(util):.2%} (reads/s min {min(p.rate_per_bus):.4f}, mean {statistics.fmean(p.rate_per_bus):.4f})"
        )
        worst = sorted(range(len(util)), key=util.__getitem__)[:5]
        print("  lowest: " + ", ".join(f"bus {i} {util[i]:.2%} ({p.reads_per_bus[i]} reads)" for i in worst))
        print(
            f"  poller CPU {p.cpu_us_per_read:.1f} µs/read ({p.cpu_sys_us_per_read:.1f} of it system),"
            f" {p.poller_cpu_share:.1%} of a core;"
            f" simulators {p.sim_cpu_share:.0%} of a core"
        )
        t, a = p.transaction_latency, p.ask_latency
        print(
            f"  transaction time (A request → B reply): median {t['p50_ms']:.1f} ms, p95 {t['p95_ms']:.1f},"
            f" p99 {t['p99_ms']:.1f}, max {t['max_ms']:.1f} (wire {(READ_WIRE - len(CLOSE) * BYTE_TIME) * 1e3:.1f})"
        )
        print(
            f"  ask → read (includes waiting behind the other worker): median {a['p50_ms']:.1f} ms,"
            f" p95 {a['p95_ms']:.1f}, max {a['max_ms']:.1f}"
        )
        print(f"  wire: {json.dumps(p.wire)}")
    if vendor is not None:
        v = vendor
        print(
            f"\nvendor: ekmmeters {v['version']}, 1 bus × {len(v['meters'])} meters over a pty, force_wait"
            f" {v['force_wait']:g} s: {v['reads']} reads in {v['elapsed']:.1f} s = {v['reads_per_s']:.3f} reads/s"
            f" ({v['utilization']:.1%} of the wire limit), {v['failures']} failures,"
            f" CPU {v['cpu_us_per_read']:.0f} µs/read, peak RSS {v['maxrss_kib'] / 1024:.1f} MiB"
        )
    rows = verdicts(unpaced, paced)
    if rows:
        print()
        widths = [max(len(r[:3][i]) for r in rows) for i in range(3)]
        print(f"{'target':{widths[0]}}  {'measured':{widths[1]}}  {'goal':{widths[2]}}  result")
        for name, measured, goal, ok in rows:
            print(f"{name:{widths[0]}}  {measured:{widths[1]}}  {goal:{widths[2]}}  {'PASS' if ok else 'FAIL'}")
    print("\nREADME table:\n" + readme_table(unpaced, paced, vendor))


def plot(path: Path, unpaced: Unpaced | None, paced: Paced | None) -> bool:
    """The figure; False (with a note) when matplotlib is not installed."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 — a benchmark-only dependency

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib): no plot written", file=sys.stderr)
        return False
    panels = int(paced is not None) + int(paced is not None or unpaced is not None) + int(unpaced is not None)
    if not panels:
        return False
    fig, axes = plt.subplots(panels, 1, figsize=(10, 3.6 * panels), squeeze=False)
    free = iter(axes[:, 0])
    if paced is not None:
        _plot_utilization(next(free), paced)
    _plot_latency(next(free), unpaced, paced)
    if unpaced is not None:
        _plot_memory(next(free), unpaced)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_utilization(ax: Axes, paced: Paced) -> None:
    util = [u * 100 for u in paced.utilization]
    colors = ["tab:blue" if u >= UTILIZATION_TARGET * 100 else "tab:red" for u in util]
    ax.bar(range(len(util)), util, width=0.8, color=colors)
    ax.axhline(UTILIZATION_TARGET * 100, color="tab:red", linestyle="--", linewidth=1, label="target 95 %")
    ax.axhline(100, color="black", linewidth=0.8, label=f"wire limit {WIRE_LIMIT:.3f} reads/s")
    low = min(min(util, default=100), UTILIZATION_TARGET * 100)
    ax.set_ylim(max(0.0, low - 3), 101.5)
    ax.set_xlim(-1, len(util))
    ax.set_xlabel("bus")
    ax.set_ylabel("utilization, % of wire limit")
    ax.set_title(
        f"Paced: {paced.buses} buses × {paced.meters_per_bus} V4 meters at {BAUD} baud, one process, "
        f"{paced.seconds:g} s — min {paced.min_utilization:.1%}, mean {statistics.fmean(paced.utilization):.1%}"
    )
    ax.legend(loc="lower right")


def _plot_latency(ax: Axes, unpaced: Unpaced | None, paced: Paced | None) -> None:
    if unpaced is not None and unpaced.latency_cdf[0]:
        xs, ys = unpaced.latency_cdf
        ax.step([x * 1e3 for x in xs], ys, where="post", label=f"unpaced, ask → read ({unpaced.buses} buses)")
    if paced is not None:
        for samples, label in (
            (paced.transaction_samples, "paced, transaction (A request → B reply)"),
            (paced.ask_samples, "paced, ask → read (incl. waiting behind the other worker)"),
        ):
            ms = sorted(s * 1e3 for s in samples)
            if ms:
                ax.step(ms, [(i + 1) / len(ms) for i in range(len(ms))], where="post", label=label)
        wire_ms = (READ_WIRE - len(CLOSE) * BYTE_TIME) * 1e3
        ax.axvline(wire_ms, color="black", linestyle=":", linewidth=1)
        ax.text(wire_ms, 0.02, " wire time A+B", rotation=90, va="bottom", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("read latency, ms (log)")
    ax.set_ylabel("fraction of reads ≤")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("Read latency (CDF)")
    ax.legend(loc="upper left", fontsize=8)


def _plot_memory(ax: Axes, unpaced: Unpaced) -> None:
    reads = [s.reads for s in unpaced.samples]
    ax.plot(reads, [s.rss_bytes / 2**20 for s in unpaced.samples], marker="o", markersize=3, label="RSS")
    ax.axvspan(0, unpaced.warmup_reads, color="grey", alpha=0.15, label="warm-up")
    ax.set_xlabel("reads (unpaced)")
    ax.set_ylabel("resident memory, MiB")
    ax.set_ylim(0, max(s.rss_bytes for s in unpaced.samples) / 2**20 * 1.15)
    cpu = ax.twinx()
    pairs = [(a, b) for a, b in itertools.pairwise(unpaced.samples) if b.reads > a.reads]
    per_read = [(b.cpu_s - a.cpu_s) / (b.reads - a.reads) * 1e6 for a, b in pairs]
    cpu.plot([b.reads for _, b in pairs], per_read, color="tab:orange", marker=".", label="CPU µs/read (interval)")
    cpu.axhline(CPU_TARGET_US, color="tab:orange", linestyle="--", linewidth=1, label="CPU target")
    cpu.set_ylabel("poller CPU per read, µs")
    cpu.set_ylim(0, max(CPU_TARGET_US, *per_read) * 1.15)
    handles = ax.get_legend_handles_labels()[0] + cpu.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_title(
        f"Unpaced: {unpaced.buses} buses × {unpaced.meters_per_bus} meters, {unpaced.reads:,} reads at"
        f" {unpaced.reads_per_s:,.0f}/s — RSS {unpaced.rss_growth:+.1%} after warm-up"
    )


def figures_json(
    args: argparse.Namespace, unpaced: Unpaced | None, paced: Paced | None, vendor: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "benchmark": "bench_scale.py",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv],
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "pinning": args.pinning,
            "python": platform.python_version(),
        },
        "ekm_async": version("ekm-async"),
        "wire": {
            "baud": BAUD,
            "turnaround_s": TURNAROUND,
            "read_bytes": READ_BYTES,
            "read_wire_s": READ_WIRE,
            "limit_reads_per_s": WIRE_LIMIT,
        },
        "targets": {
            "cpu_us_per_read": CPU_TARGET_US,
            "utilization": UTILIZATION_TARGET,
            "memory_growth": MEMORY_TOLERANCE,
        },
        "verdicts": [{"target": t, "measured": m, "goal": g, "pass": ok} for t, m, g, ok in verdicts(unpaced, paced)],
        "unpaced": {**asdict(unpaced), "memory_flat": unpaced.memory_flat} if unpaced else None,
        "paced": {**asdict(paced), "min_utilization": paced.min_utilization, "all_pass": paced.all_pass}
        if paced
        else None,
        "vendor": vendor,
        "readme_table": readme_table(unpaced, paced, vendor),
    }


# ---------------------------------------------------------------------------------------------------
# Main


async def measure(args: argparse.Namespace) -> tuple[Unpaced | None, Paced | None, dict[str, Any] | None]:
    with tempfile.TemporaryDirectory(prefix="ekm-bench-scale-") as tmp:
        unpaced = paced = vendor = None
        if not args.skip_unpaced:
            log(f"unpaced: {args.buses} buses × {args.meters} meters, {args.reads:,} reads …")
            unpaced = await run_unpaced(args)
        if not args.skip_paced:
            log(f"paced: {args.paced_buses} buses, {args.paced_warmup:g} + {args.paced_seconds:g} s …")
            paced = await run_paced(args)
        if not args.no_vendor:
            log(f"vendor: ekmmeters on 1 bus for {args.vendor_seconds:g} s …")
            vendor = await run_vendor(args, Path(tmp))
    return unpaced, paced, vendor


SIM_CPUS: set[int] = set()
"""The CPUs the simulators may use (empty: any)."""


def pin() -> str:
    """Where there are CPUs enough, this process on the first, the simulators on the others: so
    the poller's CPU time per read is its own, not inflated by sharing its core with the simulators
    (which need several times its CPU). Returns a description for the report."""
    global SIM_CPUS  # noqa: PLW0603 — set once, before any simulator starts
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "not pinned (one CPU)"
    os.sched_setaffinity(0, {cpus[0]})
    SIM_CPUS = set(cpus[1:])
    return f"poller on CPU {cpus[0]}, simulators on CPU {','.join(map(str, cpus[1:]))}"


def main(argv: list[str] | None = None) -> int:
    options = parser(__doc__, json_help="print the JSON figures instead of the report")
    options.add_argument("--buses", type=int, default=100, help="buses in the unpaced run (default 100)")
    options.add_argument("--meters", type=int, default=10, help="V4 meters per bus (default 10)")
    options.add_argument("--reads", type=int, default=100_000, help="reads in the unpaced run (default 100,000)")
    options.add_argument("--warmup-reads", type=int, default=None, help="unpaced reads not measured (default 10 %%)")
    options.add_argument("--sample-every", type=int, default=5000, help="reads between samples (default 5,000)")
    options.add_argument("--unpaced-turnaround", type=float, default=0.001, help="seconds (default 0.001)")
    options.add_argument("--paced-buses", type=int, default=100, help="buses in the paced run (default 100)")
    options.add_argument("--paced-seconds", type=float, default=60.0, help="paced window (default 60)")
    options.add_argument("--paced-warmup", type=float, default=5.0, help="seconds before the window (default 5)")
    options.add_argument("--sim-processes", type=int, default=4, help="simulator processes (default 4)")
    options.add_argument("--queue-size", type=int, default=10_000, help="the poller's event queue (default 10,000)")
    options.add_argument("--vendor-seconds", type=float, default=30.0, help="the ekmmeters run (default 30)")
    options.add_argument("--no-vendor", action="store_true", help="skip the ekmmeters run")
    options.add_argument("--skip-unpaced", action="store_true")
    options.add_argument("--skip-paced", action="store_true")
    options.add_argument(
        "--arrival", help="how the paced buses hand over bytes: bytes, slices (default), ftdi, … (docs/wire.md)"
    )
    options.add_argument("--cprofile", type=Path, metavar="FILE", help="cProfile the unpaced polling into FILE")
    options.add_argument("--out", type=Path, default=RESULTS, help="where scale.json and scale.png go")
    options.add_argument("--no-pin", action="store_true", help="let the poller and the simulators share every CPU")
    args = options.parse_args(argv)
    if min(args.buses, args.meters, args.reads, args.sample_every, args.paced_buses, args.sim_processes) < 1:
        options.error("counts must be ≥ 1")
    if args.meters > 1000 or args.paced_seconds <= 0 or args.paced_warmup < 0 or args.vendor_seconds <= 0:
        options.error("--meters ≤ 1000, --paced-seconds and --vendor-seconds > 0, --paced-warmup ≥ 0")
    args.pinning = "not pinned (--no-pin)" if args.no_pin else pin()
    print(f"CPUs: {args.pinning}", file=sys.stderr)
    unpaced, paced, vendor = run("bench_scale", measure(args))
    figures = figures_json(args, unpaced, paced, vendor)
    text = dump_json(figures, args.out / "scale.json")
    plotted = plot(args.out / "scale.png", unpaced, paced)
    if args.json:
        print(text)
    else:
        print_report(args, unpaced, paced, vendor)
        print(f"\nwrote {args.out / 'scale.json'}" + (f" and {args.out / 'scale.png'}" if plotted else ""))
    return 0 if all(ok for *_, ok in verdicts(unpaced, paced)) else 1


if __name__ == "__main__":
    sys.exit(main())
