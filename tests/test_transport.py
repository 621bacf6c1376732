"""Every way to open a bus: tcp://, socket://, a serial device (pyserial-asyncio and serialx), and
rfc2217:// — each against the simulator — and the errors for what cannot be opened."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import serial
import serial.rfc2217

import ekm_async
from ekm_async import _transport as transport_module
from ekm_async.sim import MeterModel, MeterType, SimBus, SimServer

V4, V3 = "000300001184", "000000001234"


@pytest.fixture
async def server() -> AsyncIterator[SimServer]:
    bus = SimBus([MeterModel(V4), MeterModel(V3, MeterType.V3)], baud=0, turnaround=0.002)
    async with SimServer(bus) as srv:
        yield srv


async def read_both(url: str, **options: Any) -> tuple[float, float]:
    async with asyncio.timeout(10), ekm_async.open_bus(url, **options) as bus:
        v4 = await bus.v4(V4).read()
        v3 = await bus.v3(V3).read()
        return float(v4.kWh_Tot), float(v3.kWh_Tot)


@pytest.mark.parametrize("scheme", ["tcp", "socket"])
async def test_tcp_gateway(server: SimServer, scheme: str) -> None:
    host, port = await server.start_tcp()
    v4, v3 = await read_both(f"{scheme}://{host}:{port}")
    assert v4 > 0
    assert v3 > 0


@pytest.mark.parametrize("backend", ["pyserial", "serialx"])
async def test_serial_device_consecutive_clients(server: SimServer, tmp_path: Path, backend: str) -> None:
    path = await server.start_pty(tmp_path / "ekm-pty")
    first = await read_both(path, backend=backend)
    second = await read_both(path, backend=backend)  # the pty serves client after client
    assert first[0] > 0
    assert second[0] >= first[0]


async def test_pyserial_opens_and_closes_the_port_off_the_loop(
    server: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = await server.start_pty(tmp_path / "ekm-pty")
    loop_thread = threading.get_ident()
    threads: dict[str, int] = {}
    real_open = serial.serial_for_url
    closed = threading.Event()

    def open_port(*args: Any, **kwargs: Any) -> Any:
        threads["open"] = threading.get_ident()
        port = real_open(*args, **kwargs)
        real_close = port.close

        def close() -> None:
            threads["close"] = threading.get_ident()
            real_close()
            closed.set()

        port.close = close
        return port

    monkeypatch.setattr(serial, "serial_for_url", open_port)
    await read_both(path)
    assert await asyncio.to_thread(closed.wait, 5)
    assert threads["open"] != loop_thread
    assert threads["close"] != loop_thread


class RecordingSerial:
    """What an RFC 2217 port server drives: records the settings the client asks for."""

    def __init__(self) -> None:
        self.baudrate, self.bytesize, self.parity, self.stopbits = 115200, 8, "N", 1
        self.xonxoff = self.rtscts = self.dtr = self.rts = self.break_condition = False
        self.cts = self.dsr = self.ri = self.cd = False

    def reset_input_buffer(self) -> None: ...

    def reset_output_buffer(self) -> None: ...


class PortManager(serial.rfc2217.PortManager):  # type: ignore[misc]
    """pyserial's server side of RFC 2217, also acknowledging the state masks as RFC 2217 asks
    (pyserial stores them silently; serialx, like most clients of ser2net, waits for the answer)."""

    _ACKS: ClassVar[dict[bytes, bytes]] = {
        serial.rfc2217.SET_MODEMSTATE_MASK: serial.rfc2217.SERVER_SET_MODEMSTATE_MASK,
        serial.rfc2217.SET_LINESTATE_MASK: serial.rfc2217.SERVER_SET_LINESTATE_MASK,
    }

    def _telnet_process_subnegotiation(self, suboption: bytes) -> None:
        super()._telnet_process_subnegotiation(suboption)
        if suboption[0:1] == serial.rfc2217.COM_PORT_OPTION and suboption[1:2] in self._ACKS:
            self.rfc2217_send_subnegotiation(self._ACKS[suboption[1:2]], suboption[2:3])


async def start_rfc2217_server(sim: SimServer, port_settings: RecordingSerial) -> tuple[asyncio.Server, int]:
    """A minimal RFC 2217 port server whose 'port' is the simulated bus."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        manager = PortManager(port_settings, writer)

        def to_network(data: bytes) -> None:
            writer.write(b"".join(manager.escape(data)))

        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                payload = b"".join(manager.filter(data))
                if payload:
                    sim.receive(payload, to_network)
        writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_rfc2217_port_server(server: SimServer) -> None:
    settings = RecordingSerial()
    rfc, port = await start_rfc2217_server(server, settings)
    async with rfc:
        v4, v3 = await read_both(f"rfc2217://127.0.0.1:{port}")
    assert v4 > 0
    assert v3 > 0
    assert (settings.baudrate, settings.bytesize, settings.parity, settings.stopbits) == (9600, 7, "E", 1)


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("ftp://host:21", {}, "unknown scheme"),
        ("tcp://host", {}, "needs a host and a port"),
        ("rfc2217://:4000", {}, "needs a host and a port"),
        ("", {}, "must name a device"),
        ("/dev/ttyUSB0", {"backend": "usb"}, "backend must be one of"),
        ("tcp://h:1", {"retries": -1}, "retries"),
        ("tcp://h:1", {"baud": 0}, "baud"),
        ("tcp://h:1", {"timeout_margin": 0}, "timeout_margin"),
        ("tcp://h:1", {"backoff": 10, "backoff_max": 5}, "backoff"),
    ],
)
def test_what_cannot_be_opened_is_refused_before_anything_opens(
    url: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ekm_async.open_bus(url, **options)


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ValueError, match="speed"):
        ekm_async.open_bus("tcp://h:1", speed=9600)


def test_rfc2217_without_serialx_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport_module, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"pip install 'ekm-async\[serialx\]'"):
        ekm_async.open_bus("rfc2217://127.0.0.1:4000")


async def test_unreachable_gateway_raises_at_open() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await ekm_async.open_bus(f"tcp://127.0.0.1:{port}")


async def test_missing_device_raises_at_open(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="no-such-tty"):
        await ekm_async.open_bus(str(tmp_path / "no-such-tty"))
