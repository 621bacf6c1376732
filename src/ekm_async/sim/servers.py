"""Serve a simulated bus: an asyncio TCP server (an RS-485 to Ethernet gateway), a pty for serial
clients, and in-memory transports for tests. One pump per bus writes the replies, paced as the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import termios
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .bus import SimBus

__all__ = ["MemoryTransport", "SimServer"]

Sink = Callable[[bytes], None]


class SimServer:
    """Serves one :class:`SimBus` over any number of TCP clients, a pty and in-memory transports.

    Use as ``async with SimServer(bus) as server:``; ``await server.start_tcp()``,
    ``await server.start_pty(link)``, ``server.connect_memory(protocol)``.
    """

    def __init__(self, bus: SimBus) -> None:
        self.bus = bus
        self._queue: asyncio.Queue[tuple[list[tuple[float, bytes]], Sink]] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_address: tuple[str, int] | None = None
        self._tcp_clients: set[asyncio.Transport] = set()
        self._pty: _Pty | None = None
        self._closed = False

    async def __aenter__(self) -> SimServer:
        self._ensure_pump()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _ensure_pump(self) -> None:
        if self._closed:
            raise RuntimeError("the simulator server is closed")
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run_pump(), name="ekm-sim-pump")

    # -----------------------------------------------------------------------------------------------
    # The host's bytes in, the bus's replies out

    def receive(self, data: bytes, sink: Sink) -> None:
        """``data`` arrived from a client whose replies go to ``sink``."""
        if self._closed:
            return  # a client still talking to a server that is gone: the bus hears nothing
        self._ensure_pump()
        emissions = self.bus.receive(data, asyncio.get_running_loop().time())
        if emissions:
            self._queue.put_nowait((self.bus.deliveries(emissions), sink))

    async def _run_pump(self) -> None:
        """Hand every piece over at its time, in order (one write each: a late piece is not merged)."""
        loop = asyncio.get_running_loop()
        while True:
            deliveries, sink = await self._queue.get()
            for at, data in deliveries:
                if (wait := at - loop.time()) > 0:
                    await asyncio.sleep(wait)
                _deliver(sink, data)

    # -----------------------------------------------------------------------------------------------
    # TCP

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen like an RS-485 gateway; returns (host, port). Restartable on the same port."""
        self._ensure_pump()
        loop = asyncio.get_running_loop()
        self._tcp = await loop.create_server(lambda: _TcpClient(self), host, port, reuse_address=True)
        sockname = self._tcp.sockets[0].getsockname()
        self._tcp_address = (sockname[0], sockname[1])
        return self._tcp_address

    async def stop_tcp(self) -> None:
        """Stop listening and drop every client (a gateway going away)."""
        if self._tcp is not None:
            self._tcp.close()
            for client in list(self._tcp_clients):
                client.abort()
            await self._tcp.wait_closed()
            self._tcp = None

    async def restart_tcp(self) -> tuple[str, int]:
        """Stop, then listen again on the same address."""
        if self._tcp_address is None:
            raise RuntimeError("the TCP server was never started")
        host, port = self._tcp_address
        await self.stop_tcp()
        return await self.start_tcp(host, port)

    # -----------------------------------------------------------------------------------------------
    # pty and memory

    async def start_pty(self, link: str | os.PathLike[str] | None = None) -> str:
        """Serve on a new pty; ``link`` (if given) becomes a symlink to it. Returns the link or device."""
        self._ensure_pump()
        self._pty = _Pty(self, Path(link) if link is not None else None)
        return self._pty.name

    def memory_connector(self) -> Callable[[asyncio.Protocol], Awaitable[asyncio.BaseTransport]]:
        """A ``connect=`` for :func:`ekm_async.open_bus`: the bus talks to this server in memory."""

        async def connect(protocol: asyncio.Protocol) -> asyncio.BaseTransport:
            return self.connect_memory(protocol)

        return connect

    def connect_memory(self, protocol: asyncio.Protocol) -> MemoryTransport:
        """A transport straight into the bus; replies reach ``protocol.data_received``."""
        self._ensure_pump()
        transport = MemoryTransport(self, protocol)
        protocol.connection_made(transport)
        return transport

    async def close(self) -> None:
        self._closed = True
        await self.stop_tcp()
        if self._pty is not None:
            self._pty.close()
            self._pty = None
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None


def _deliver(sink: Sink, data: bytes) -> None:
    sink(data)


class _TcpClient(asyncio.Protocol):
    def __init__(self, server: SimServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server._tcp_clients.add(transport)

    def data_received(self, data: bytes) -> None:
        self._server.receive(data, self._write)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._server._tcp_clients.discard(self._transport)
        self._transport = None


class MemoryTransport(asyncio.Transport):
    """An in-memory connection to a simulated bus (for tests and ``--simulate``)."""

    def __init__(self, server: SimServer, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._server = server
        self._protocol = protocol
        self._closing = False
        self._paused = False
        self._held = bytearray()
        """What arrived while reading was paused (a socket's receive buffer)."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            raise RuntimeError("write on a closed MemoryTransport")
        self._server.receive(bytes(data), self._deliver)

    def _deliver(self, data: bytes) -> None:
        if self._closing:
            return
        if self._paused or self._held:  # behind what is held, in order
            self._held += data
        else:
            self._protocol.data_received(data)

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        """Reading goes on: what arrived meanwhile comes in one piece, in the next turn of the loop."""
        if self._paused:
            self._paused = False
            asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        if self._held and not self._paused:
            held, self._held = bytes(self._held), bytearray()
            self._deliver(held)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": "ekm-sim"}.get(name, default)


class _Pty:
    """A pty whose slave is the meter bus for serial clients, one client after another.

    A pty ignores character size and parity: it stores 7E1 as 8N1. Linux then refuses (EINVAL) a
    ``tcsetattr`` that would change nothing but such bits — so pyserial's 7E1 at 9600 baud works on a
    fresh pty (38400 baud) but fails once the pty holds 8N1 at 9600 (docs/architecture.md, "Traps"). The simulator
    therefore keeps the slave's stored speed at the fresh pty's, checking every few milliseconds:
    every client's 9600-baud request then changes something and is accepted.
    """

    _TICK = 0.02

    def __init__(self, server: SimServer, link: Path | None) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._master, slave = os.openpty()
        self.device = os.ttyname(slave)
        self._speed = termios.tcgetattr(slave)[4]
        os.close(slave)
        os.set_blocking(self._master, False)
        self._link = link
        if link is not None:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(self.device)
        self.name = str(link) if link is not None else self.device
        self._client = False
        self._timer: asyncio.TimerHandle | None = None
        self._tick()

    def _tick(self) -> None:
        if not self._client:
            self._look_for_client()
        self._keep_speed()
        self._timer = self._loop.call_later(self._TICK, self._tick)

    def _look_for_client(self) -> None:
        """No client known: a read tells (EIO: no one has the slave open)."""
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            data = b""
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            return
        self._client = True
        self._loop.add_reader(self._master, self._readable)
        if data:
            self._server.receive(data, self._write)

    def _keep_speed(self) -> None:
        slave = os.open(self.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            attrs = termios.tcgetattr(slave)
            if attrs[4] != self._speed or attrs[5] != self._speed:
                attrs[4] = attrs[5] = self._speed
                termios.tcsetattr(slave, termios.TCSANOW, attrs)
        finally:
            os.close(slave)

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            self._client = False  # the client closed the slave
            self._loop.remove_reader(self._master)
            return
        self._server.receive(data, self._write)

    def _write(self, data: bytes) -> None:
        if not self._client:
            return  # nobody to hear it: do not leave it for the next client
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._master, view) :]
            except BlockingIOError:
                return  # the client is not reading: drop the rest, as a line would
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                return

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._client:
            self._loop.remove_reader(self._master)
        os.close(self._master)
        if self._link is not None:
            with contextlib.suppress(FileNotFoundError):
                self._link.unlink()
