"""Screenshot the live page of ``ekm-async serve --simulate 4`` into docs/serve.png (the README shows it).

    .venv/bin/python scripts/screenshot.py                       # write docs/serve.png
    .venv/bin/python scripts/screenshot.py --seconds 5 --out /tmp/x.png

Starts ``ekm-async serve --simulate N --port 0`` (paced at the real 9600 baud), starts the system Chromium
headless with a throw-away profile, drives it over the DevTools protocol (CDP, on aiohttp's websocket
client), lets the page collect reads for a while and captures the viewport. tests/test_web_browser.py uses
the same machinery (``serve``, ``chromium``, ``Page``) to check that the page shows live values.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
DOC_IMAGE = ROOT / "docs" / "serve.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--window-size=1200,800",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
SERVING = re.compile(r"serving (http://\S+/)")


def find_chromium() -> str:
    """The system Chromium (Debian's ``chromium`` package), or FileNotFoundError saying how to get it."""
    found = shutil.which("chromium") or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if found is None:
        raise FileNotFoundError(
            f"no chromium on PATH or at {CHROMIUM}: install Debian's package (apt-get install chromium) as .ci/run does"
        )
    return found


# -------------------------------------------------------------------------------------------------
# ekm-async serve


@contextlib.asynccontextmanager
async def serve(args: Sequence[str], *, stderr: Path | None = None, timeout: float = 20.0) -> AsyncIterator[str]:
    """Run ``ekm-async serve --port 0 ARGS``; yield its URL once it listens; SIGTERM it (then kill) on exit.

    The server's stderr goes to the file ``stderr`` (else to ours); it is quoted if the server fails to start.
    """
    exe = Path(sys.executable).with_name("ekm-async")
    with contextlib.ExitStack() as files:
        err = files.enter_context(stderr.open("wb")) if stderr is not None else None
        proc = await asyncio.create_subprocess_exec(
            str(exe), "serve", "--port", "0", *args, stdout=asyncio.subprocess.PIPE, stderr=err
        )
        try:
            assert proc.stdout is not None
            try:
                async with asyncio.timeout(timeout):
                    line = (await proc.stdout.readline()).decode(errors="replace")
            except TimeoutError:
                raise RuntimeError(f"ekm-async serve printed no 'serving' line in {timeout:g} s") from None
            found = SERVING.search(line)
            if found is None:
                with contextlib.suppress(TimeoutError):  # it is exiting: let asyncio reap it and keep its status
                    async with asyncio.timeout(5):
                        await proc.wait()
                await _stop(proc)
                log = stderr.read_text(errors="replace") if stderr is not None else ""
                raise RuntimeError(f"ekm-async serve did not start (exit {proc.returncode}): {line!r}\n{log}")
            yield found.group(1)
        finally:
            await _stop(proc)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


# -------------------------------------------------------------------------------------------------
# Chromium over the DevTools protocol


class CdpError(RuntimeError):
    """A DevTools command answered with an error, or JavaScript threw."""


class Browser:
    """One websocket to the browser; pages are flattened sessions on it (``Target.attachToTarget``)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, timeout: float) -> None:
        self._ws = ws
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    break
                data = message.json()
                future = self._pending.pop(data.get("id", -1), None)
                if future is not None and not future.done():
                    future.set_result(data)
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(CdpError("the DevTools connection closed"))
            self._pending.clear()

    async def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; CdpError on an error answer, TimeoutError if none."""
        if self._reader.done():
            raise CdpError("the DevTools connection closed")
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            async with asyncio.timeout(self._timeout):
                await self._ws.send_json(message)
                answer = await future
        finally:
            self._pending.pop(ident, None)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def new_page(self, width: int, height: int) -> Page:
        """A blank tab with a ``width`` × ``height`` CSS-pixel viewport at device scale 1."""
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        page = Page(self, attached["sessionId"])
        await page.send(
            "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
        )
        return page

    async def close(self) -> None:
        """Ask Chromium to close (the caller kills it anyway) and drop the connection; at most a few seconds."""
        with contextlib.suppress(CdpError, TimeoutError, aiohttp.ClientError, ConnectionError):
            async with asyncio.timeout(3):
                await self.send("Browser.close")
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        with contextlib.suppress(TimeoutError, aiohttp.ClientError, ConnectionError):
            async with asyncio.timeout(3):
                await self._ws.close()


class Page:
    """One tab: navigate, evaluate JavaScript, wait for a condition, capture the viewport."""

    def __init__(self, browser: Browser, session: str) -> None:
        self._browser = browser
        self._session = session

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self._browser.send(method, self._session, **params)

    async def navigate(self, url: str) -> None:
        answer = await self.send("Page.navigate", url=url)
        if answer.get("errorText"):
            raise CdpError(f"cannot load {url}: {answer['errorText']}")

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` (promises awaited); CdpError if it throws."""
        answer = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise CdpError(f"{expression!r} threw: {details.get('exception', {}).get('description', details)}")
        return answer["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, what: str = "", every: float = 0.1) -> Any:
        """Evaluate ``expression`` until its value is truthy and return it; TimeoutError (quoting the last
        value) after ``timeout`` seconds."""
        value: Any = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if loop.time() >= deadline:
                raise TimeoutError(f"waited {timeout:g} s for {what or expression}; last value: {value!r}")
            await asyncio.sleep(every)

    async def screenshot(self, path: Path) -> int:
        """Write the viewport as a PNG to ``path``; return its size in bytes."""
        answer = await self.send("Page.captureScreenshot", format="png")
        data = base64.b64decode(answer["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return len(data)


@contextlib.asynccontextmanager
async def chromium(timeout: float = 15.0) -> AsyncIterator[Browser]:
    """Start the system Chromium headless with a fresh profile; yield a Browser connected over CDP.

    Chromium runs in a process group of its own: on exit the whole group is killed and the profile removed.
    """
    exe = find_chromium()
    home = Path(tempfile.mkdtemp(prefix="ekm-chromium-"))
    profile = home / "profile"
    profile.mkdir()
    log = home / "chromium.log"
    proc: asyncio.subprocess.Process | None = None
    try:
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                exe,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "about:blank",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
            )
        endpoint = await _devtools_endpoint(proc, profile / "DevToolsActivePort", log, timeout)
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(timeout):
                ws = await http.ws_connect(endpoint, max_msg_size=0)
            browser = Browser(ws, timeout)
            try:
                yield browser
            finally:
                await browser.close()
    finally:
        try:
            if proc is not None:
                await _kill_group(proc)
        finally:
            _remove(home)


async def _devtools_endpoint(proc: asyncio.subprocess.Process, active_port: Path, log: Path, timeout: float) -> str:
    """The browser's websocket URL, from the DevToolsActivePort file Chromium writes once it listens."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            port, path = active_port.read_text().split("\n")[:2]
            if port.strip() and path.strip():
                return f"ws://127.0.0.1:{int(port)}{path.strip()}"
        if proc.returncode is not None or loop.time() >= deadline:
            state = f"exited {proc.returncode}" if proc.returncode is not None else f"not listening after {timeout:g} s"
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"chromium {state}; its output ends:\n{tail}")
        await asyncio.sleep(0.05)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL Chromium's process group (browser, renderers, crashpad…) and reap the browser."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group leader is not reaped yet: its pid is still the group's
    async with asyncio.timeout(10):
        await proc.wait()


def _remove(home: Path) -> None:
    for _ in range(20):  # killed children may still be closing files in the profile for a moment
        shutil.rmtree(home, ignore_errors=True)
        if not home.exists():
            return
        time.sleep(0.05)


# -------------------------------------------------------------------------------------------------
# The page


async def shot(out: Path, meters: int, seconds: float, width: int, height: int) -> int:
    async with serve(["--simulate", str(meters)]) as url, chromium() as browser:
        page = await browser.new_page(width, height)
        await page.navigate(url)
        await page.wait_for(
            f"[...document.querySelectorAll('.power > span')].filter(s => s.textContent !== '–').length >= {meters}",
            timeout=30,
            what=f"{meters} meters to show a power value",
        )
        print(f"{url}: {meters} meters shown; collecting reads for {seconds:g} s", file=sys.stderr)
        await asyncio.sleep(seconds)
        await page.wait_for(
            f"document.querySelectorAll('#chart polyline').length === {meters}", timeout=10, what="the chart"
        )
        size = await page.screenshot(out)
        print(f"wrote {out} ({size} bytes, {width}×{height})", file=sys.stderr)
        return size


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DOC_IMAGE, help=f"the PNG to write (default {DOC_IMAGE})")
    parser.add_argument("--meters", type=int, default=4, help="simulated meters (default 4)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of reads before the shot (default 20)")
    parser.add_argument("--size", default="1200x800", help="viewport WIDTHxHEIGHT (default 1200x800)")
    args = parser.parse_args(argv)
    width, height = (int(n) for n in args.size.lower().split("x"))
    asyncio.run(shot(args.out, args.meters, args.seconds, width, height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
