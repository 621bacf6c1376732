"""Open the wire a bus talks over: a serial device, a TCP gateway, or an RFC 2217 port server.

* ``tcp://HOST:PORT`` and ``socket://HOST:PORT``: asyncio's own TCP (an RS-485 to Ethernet gateway).
* a device path (``/dev/ttyUSB0``, ``COM3``): pyserial-asyncio at 9600 baud 7E1, the port opened and
  closed in an executor (pyserial-asyncio 0.6 would do both on the event loop); or serialx when
  ``backend="serialx"``. A pty (``/dev/pts/N``, e.g. the simulator's) is opened at 8N1: a pty has no
  parity and Linux refuses pyserial's second 7E1 ``tcsetattr`` on one (docs/architecture.md, "Traps").
* ``rfc2217://HOST:PORT``: serialx (``pip install ekm-async[serialx]``; pyserial-asyncio cannot
  watch an RFC 2217 port from the event loop on POSIX).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Awaitable, Callable
from importlib.util import find_spec
from typing import Any
from urllib.parse import urlsplit

__all__ = ["BACKENDS", "Connector", "connector_for", "listen_hint", "open_hint"]

OPEN_HINTS = {
    errno.ECONNREFUSED: "connection refused: is the gateway running, and is it that port?",
    errno.EHOSTUNREACH: "no route to the gateway's host",
    errno.ENETUNREACH: "no route to the gateway's network",
    errno.ENOENT: "no such device: is the adapter plugged in, and is it that name?",
    errno.EACCES: "permission denied: is this user in the group of the device (dialout)?",
    errno.EBUSY: "the device is busy: another program has it open",
}
"""What a failed open of a bus means, by errno, in words a user can act on."""
LISTEN_HINTS = {
    errno.EADDRINUSE: "another program is listening on that port: give another, or port 0 for any free one",
    errno.EADDRNOTAVAIL: "that address is not one of this machine's: try 127.0.0.1, or 0.0.0.0 for all of them",
    errno.EACCES: "ports below 1024 need root: give a port from 1024 up, or 0 for any free one",
}
"""Why a port could not be listened on (the simulator's, the web service's), and what to try."""


def open_hint(exc: BaseException) -> str | None:
    """What to check when a bus cannot be opened for ``exc`` (None: nothing known to say)."""
    if isinstance(exc, TimeoutError):  # the connect timed out (no errno): nothing answered at all
        return "no answer in time: is the gateway's address right?"
    return OPEN_HINTS.get(exc.errno) if isinstance(exc, OSError) and exc.errno is not None else None


def listen_hint(exc: OSError) -> str:
    """Why a port could not be listened on, in words (asyncio's own text names a tuple)."""
    if isinstance(exc, socket.gaierror):
        return "no such host name: give an address of this machine, like 127.0.0.1"
    return LISTEN_HINTS.get(exc.errno or 0) or exc.strerror or str(exc)


Connector = Callable[[asyncio.Protocol], Awaitable[asyncio.BaseTransport]]
"""Opens the wire for a protocol; returns its transport (the protocol's ``connection_made`` is called)."""

BACKENDS = ("pyserial", "serialx")
_TCP_SCHEMES = ("tcp", "socket")


def connector_for(url: str, *, baud: int = 9600, backend: str = "pyserial", connect_timeout: float = 10.0) -> Connector:
    """How to open ``url``; ``ValueError`` for a URL or backend that cannot be opened (nothing opened yet)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower() if "://" in url else ""
    if scheme in _TCP_SCHEMES:
        if not parts.hostname or parts.port is None:
            raise ValueError(f"url {url!r} needs a host and a port ({scheme}://HOST:PORT)")
        return _tcp(parts.hostname, parts.port, connect_timeout)
    if scheme == "rfc2217":
        if not parts.hostname or parts.port is None:
            raise ValueError(f"url {url!r} needs a host and a port (rfc2217://HOST:PORT)")
        return _serialx(url, baud, connect_timeout)
    if scheme:
        raise ValueError(f"url {url!r}: unknown scheme {scheme!r} (tcp://, socket://, rfc2217:// or a device)")
    if not url:
        raise ValueError("url must name a device or a tcp://, socket:// or rfc2217:// address")
    if backend == "serialx":
        return _serialx(url, baud, connect_timeout)
    return _pyserial(url, baud)


def _tcp(host: str, port: int, connect_timeout: float) -> Connector:
    async def connect(protocol: asyncio.Protocol) -> asyncio.BaseTransport:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                transport, _ = await loop.create_connection(lambda: protocol, host, port)
        except TimeoutError:
            raise TimeoutError(f"no connection to {host}:{port} within {connect_timeout:g} s") from None
        return transport

    return connect


def _is_pty(path: str) -> bool:
    return os.path.realpath(path).startswith("/dev/pts/")


def _pyserial(path: str, baud: int) -> Connector:
    import serial  # type: ignore[import-untyped]  # noqa: PLC0415 — only when a serial port is opened
    import serial_asyncio  # type: ignore[import-untyped]  # noqa: PLC0415

    class SerialTransport(serial_asyncio.SerialTransport):  # type: ignore[misc]
        """pyserial-asyncio 0.6's transport, closing the port in an executor instead of on the loop.

        (Overrides its private ``_call_connection_lost``; pyserial-asyncio is pinned below 0.7.)
        """

        def _call_connection_lost(self, exc: Exception | None) -> None:
            this: Any = self  # the base class is untyped
            port, protocol, loop = this._serial, this._protocol, this._loop
            self._write_buffer.clear()
            self._serial = self._protocol = self._loop = None
            try:
                protocol.connection_lost(exc)
            finally:
                loop.run_in_executor(None, _close_port, port)

    def open_port() -> Any:
        pty = _is_pty(path)
        return serial.serial_for_url(
            path,
            baudrate=baud,
            bytesize=serial.EIGHTBITS if pty else serial.SEVENBITS,
            parity=serial.PARITY_NONE if pty else serial.PARITY_EVEN,
            stopbits=serial.STOPBITS_ONE,
            timeout=0,
            write_timeout=0,
        )

    async def connect(protocol: asyncio.Protocol) -> asyncio.BaseTransport:
        loop = asyncio.get_running_loop()
        opening = loop.run_in_executor(None, open_port)
        try:
            port = await asyncio.shield(opening)
        except asyncio.CancelledError:  # the bus closed meanwhile: the port, once open, is closed again
            opening.add_done_callback(_close_opened)
            raise
        transport: asyncio.BaseTransport = SerialTransport(loop, protocol, port)
        return transport

    return connect


def _close_opened(opening: asyncio.Future[Any]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        asyncio.get_running_loop().run_in_executor(None, _close_port, opening.result())


def _close_port(port: Any) -> None:
    try:
        port.flush()
    finally:
        port.close()


def _serialx(url: str, baud: int, connect_timeout: float) -> Connector:
    if find_spec("serialx") is None:
        raise ValueError(f"{url!r} needs serialx: pip install 'ekm-async[serialx]'")

    async def connect(protocol: asyncio.Protocol) -> asyncio.BaseTransport:
        import serialx  # noqa: PLC0415 — optional extra

        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                transport, _ = await serialx.create_serial_connection(
                    loop,
                    lambda: protocol,
                    url,
                    baud,
                    parity=serialx.Parity.EVEN,
                    stopbits=serialx.StopBits.ONE,
                    byte_size=7,
                )
        except TimeoutError:
            raise TimeoutError(f"{url} did not open within {connect_timeout:g} s") from None
        return transport

    return connect
