"""The simulator's asyncio servers: TCP (stop, restart), in-memory transports, the pty with pyserial
at 7E1 for consecutive clients, and the ``ekm-async simulate`` command in a subprocess."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
import serial

from ekm_async import BlockKind, commands, decode
from ekm_async.commands import LiveRead
from ekm_async.sim import MeterModel, SimBus, SimServer
from ekm_async.wire import BITS_PER_CHAR

pytestmark = pytest.mark.timeout(30)

X = "000300001184"
REQUEST_A = commands.live_read(X, LiveRead.V4A)
WAIT = 5.0
"""Seconds before a hung exchange fails the test."""


def bus(baud: int = 0) -> SimBus:
    return SimBus([MeterModel(X)], baud=baud, turnaround=0.02)


async def exchange(host: str, port: int, request: bytes = REQUEST_A) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), WAIT)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(255), WAIT)
    finally:
        writer.close()
        await writer.wait_closed()


# ---------------------------------------------------------------------------------------------------
# TCP


async def test_tcp_client_reads_a_v4_a_frame_paced_as_the_wire() -> None:
    async with SimServer(bus(9600)) as server:
        host, port = await server.start_tcp()
        loop = asyncio.get_running_loop()
        sent = loop.time()
        frame = await exchange(host, port)
        elapsed = loop.time() - sent
    block = decode(frame)
    assert block.kind is BlockKind.V4A
    assert block.address == X
    # The last byte cannot arrive before request + reply have crossed a 9600-baud wire.
    assert elapsed >= 0.95 * ((len(REQUEST_A) + 255) * BITS_PER_CHAR / 9600 + 0.02)


async def test_tcp_clients_share_the_bus_one_after_another() -> None:
    async with SimServer(bus()) as server:
        host, port = await server.start_tcp()
        first = decode(await exchange(host, port))
        second = decode(await exchange(host, port))
        assert first.address == second.address == X
        assert len(server.bus.transactions) == 2


async def test_stop_tcp_drops_clients_and_refuses_connections() -> None:
    async with SimServer(bus()) as server:
        host, port = await server.start_tcp()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), WAIT)
        try:
            writer.write(REQUEST_A)
            assert decode(await asyncio.wait_for(reader.readexactly(255), WAIT)).address == X
            await server.stop_tcp()
            try:
                rest = await asyncio.wait_for(reader.read(100), WAIT)
            except ConnectionResetError:
                rest = b""
            assert rest == b""
            assert reader.at_eof()
        finally:
            writer.close()
            await asyncio.gather(writer.wait_closed(), return_exceptions=True)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(asyncio.open_connection(host, port), WAIT)


async def test_restart_tcp_serves_again_on_the_same_port() -> None:
    async with SimServer(bus()) as server:
        address = await server.start_tcp()
        assert decode(await exchange(*address)).address == X
        assert await server.restart_tcp() == address
        assert decode(await exchange(*address)).address == X
        await server.stop_tcp()
        assert await server.restart_tcp() == address
        assert decode(await exchange(*address)).address == X


async def test_restart_tcp_needs_a_started_server() -> None:
    async with SimServer(bus()) as server:
        with pytest.raises(RuntimeError, match="never started"):
            await server.restart_tcp()


# ---------------------------------------------------------------------------------------------------
# In memory


class Collector(asyncio.Protocol):
    def __init__(self, size: int) -> None:
        self.size = size
        self.data = bytearray()
        self.full = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.size and not self.full.done():
            self.full.set_result(bytes(self.data))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def test_memory_transport_delivers_a_reply() -> None:
    async with SimServer(bus(9600)) as server:
        protocol = Collector(255)
        transport = server.connect_memory(protocol)
        transport.write(REQUEST_A)
        frame = await asyncio.wait_for(protocol.full, WAIT)
        assert decode(frame).address == X
        assert len(protocol.data) == 255
        assert transport.get_extra_info("peername") == "ekm-sim"
        transport.close()
        assert transport.is_closing()
        assert await asyncio.wait_for(protocol.lost, WAIT) is None
        with pytest.raises(RuntimeError, match="closed"):
            transport.write(REQUEST_A)


async def test_memory_transport_carries_a_whole_session() -> None:
    async with SimServer(bus()) as server:
        protocol = Collector(255 + 1 + 1)
        transport = server.connect_memory(protocol)
        transport.write(REQUEST_A + commands.password("00000000") + commands.ct_ratio(800) + commands.CLOSE)
        data = await asyncio.wait_for(protocol.full, WAIT)
        assert data[255:] == b"\x06\x06"
        assert server.bus.meter(X).ct_ratio == 800
        transport.close()


# ---------------------------------------------------------------------------------------------------
# pty


def serial_exchange(path: str, request: bytes = REQUEST_A) -> bytes:
    """One serial client, as a host on RS-485 opens it: 9600 7E1. Blocking: run it in a thread."""
    port = serial.Serial(path, 9600, bytesize=7, parity="E", stopbits=1, timeout=WAIT)
    try:
        port.write(request)
        return bytes(port.read(255))
    finally:
        port.close()


async def test_pty_serves_consecutive_7e1_clients(tmp_path: Path) -> None:
    link = tmp_path / "ekm-bus"
    async with SimServer(bus(9600)) as server:
        name = await server.start_pty(link)
        assert name == str(link)
        assert link.is_symlink()
        for n in (1, 2, 3):
            frame = await asyncio.wait_for(asyncio.to_thread(serial_exchange, name), 2 * WAIT)
            assert len(frame) == 255
            assert decode(frame).address == X
            assert len(server.bus.transactions) == n
    assert not link.exists()
    assert not link.is_symlink()


async def test_pty_without_link_returns_the_device() -> None:
    async with SimServer(bus()) as server:
        device = await server.start_pty()
        assert device.startswith("/dev/pts/")
        frame = await asyncio.wait_for(asyncio.to_thread(serial_exchange, device), 2 * WAIT)
        assert decode(frame).address == X


# ---------------------------------------------------------------------------------------------------
# ekm-async simulate


def cli() -> list[str]:
    script = Path(sys.executable).with_name("ekm-async")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ekm_async"]


async def test_simulate_cli_serves_tcp_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        *cli(),
        "simulate",
        "--tcp",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 3 * WAIT)).decode()
        assert line.startswith("ready tcp=127.0.0.1:")
        assert f"meters=v4:{X}" in line
        assert "baud=9600" in line
        port = int(line.split()[1].rpartition(":")[2])
        assert port > 0
        assert decode(await exchange("127.0.0.1", port)).address == X
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_simulate_cli_without_a_transport_fails() -> None:
    proc = await asyncio.create_subprocess_exec(
        *cli(), "simulate", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 3 * WAIT)
        assert proc.returncode != 0
        assert b"--tcp" in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
