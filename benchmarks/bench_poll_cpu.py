"""Benchmark: CPU per full V4 read of the poller and bus alone, without sockets (issue 8's analysis).

``bench_scale.py`` measures the CPU of one process polling 100 TCP gateways; that figure includes
asyncio's socket machinery and the system calls (two sends and two receives per read). This one
takes them away to show the floor of the Python side: every bus talks to an in-process fake gateway
that answers each A and B request at once (``call_soon``) with frames made once by the simulator, so
no meter is simulated while measuring. What remains is the poller, the bus and its session table,
the frame decoder, ``decode()`` of both blocks (validated, fields not converted), the event stream
and its consumer, and the event loop's scheduling.

Run from the project root::

    .venv/bin/python benchmarks/bench_poll_cpu.py [--buses 100] [--meters 10] [--reads 30000] [--rounds 3]
"""

from __future__ import annotations

import asyncio
import sys
import time

from _harness import parser
from ekm_async import Poller, commands, open_bus
from ekm_async._protocol import MeterProtocol
from ekm_async.commands import LiveRead
from ekm_async.sim import MeterModel, MeterType, SimBus


def replies_of(addresses: list[str]) -> dict[bytes, bytes]:
    """Request → reply, for the A and B requests of every meter (made once, by the simulator)."""
    out: dict[bytes, bytes] = {}
    for address in addresses:
        sim = SimBus([MeterModel(address, MeterType.V4)], baud=0, turnaround=0)
        for read in (LiveRead.V4A, LiveRead.V4B):
            request = commands.live_read(address, read)
            (emission,) = sim.receive(request, 0.0)
            out[request] = emission.data
        sim.receive(commands.CLOSE, 0.0)
    return out


class FakeGateway(asyncio.Transport):
    """Answers each known request at once; the close string and anything else get no answer."""

    def __init__(self, protocol: MeterProtocol, replies: dict[bytes, bytes]) -> None:
        super().__init__()
        self._protocol, self._replies, self._loop = protocol, replies, asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        rest = bytes(data)
        while rest:
            if rest.startswith(commands.CLOSE):
                rest = rest[len(commands.CLOSE) :]
                continue
            end = rest.find(b"\r\n") + 2 or len(rest)
            reply = self._replies.get(rest[:end])
            if reply is not None:
                self._loop.call_soon(self._protocol.data_received, reply)
            rest = rest[end:]

    def abort(self) -> None:
        self._loop.call_soon(self._protocol.connection_lost, None)

    def close(self) -> None:
        self.abort()

    def is_closing(self) -> bool:
        return False


async def one_round(buses: int, meters: int, reads: int) -> tuple[float, float]:
    """(CPU µs per read, reads/s) of one poller reading ``reads`` times from ``buses`` × ``meters``."""
    opened = []
    for b in range(buses):
        addresses = [f"{300_000_000_000 + b * 1000 + m:012d}" for m in range(meters)]
        replies = replies_of(addresses)

        async def connect(protocol: asyncio.Protocol, replies: dict[bytes, bytes] = replies) -> asyncio.BaseTransport:
            assert isinstance(protocol, MeterProtocol)
            transport = FakeGateway(protocol, replies)
            protocol.connection_made(transport)
            return transport

        bus = await open_bus(f"memory://{b}", connect=connect, baud=1_000_000)
        opened.append((bus, addresses))
    poller = Poller([bus.v4(a) for bus, addresses in opened for a in addresses], interval=0, count=reads)
    seen = 0
    cpu, wall = time.process_time(), time.perf_counter()
    async with poller:
        async for _ in poller.events():
            seen += 1
            if seen == reads:
                break
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    for bus, _ in opened:
        await bus.close()
    return cpu / seen * 1e6, seen / wall


def main(argv: list[str] | None = None) -> int:
    options = parser(__doc__, json_help=None)
    options.add_argument("--buses", type=int, default=100)
    options.add_argument("--meters", type=int, default=10)
    options.add_argument("--reads", type=int, default=30_000)
    options.add_argument("--rounds", type=int, default=3)
    args = options.parse_args(argv)
    if min(args.buses, args.meters, args.reads, args.rounds) < 1:
        options.error("every count must be ≥ 1")
    results = [asyncio.run(one_round(args.buses, args.meters, args.reads)) for _ in range(args.rounds)]
    for n, (cpu, rate) in enumerate(results, 1):
        print(f"round {n}: {cpu:.1f} µs CPU per read, {rate:,.0f} reads/s")
    best = min(cpu for cpu, _ in results)
    where = f"{args.buses} buses × {args.meters} meters"
    print(f"best: {best:.1f} µs CPU per full V4 read, poller + bus without sockets ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
