"""The embedding examples, in process: ekm-async's aiohttp app mounted in a user's own aiohttp app, and a
Starlette app whose lifespan owns the bus, store and poller; then both as scripts serving ``--run-for``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import httpx
import pytest
from aiohttp.test_utils import TestClient as AiohttpClient
from aiohttp.test_utils import TestServer

from ekm_async import Refused, ReplyTimeout, V4Meter

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette ≥ 1.? asks for httpx2 in place of httpx
    from starlette.testclient import TestClient

pytestmark = pytest.mark.timeout(30)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ADDRESSES = ["000300001184", "000300001185", "000300001186"]
FAST = 0.05
"""Seconds between reads of a simulated meter here."""
T = TypeVar("T")


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """Import an example (examples import their neighbour ``_common``, so examples/ goes on the path)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module


async def until(check: Callable[[], Awaitable[T | None]], timeout: float = 5.0) -> T:
    async with asyncio.timeout(timeout):
        while not (found := await check()):
            await asyncio.sleep(0.02)
    return found


def eventually(check: Callable[[], T | None], timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return found


# ---------------------------------------------------------------------------------------------------
# aiohttp: create_app mounted under /ekm/


def aiohttp_args(**changes: Any) -> argparse.Namespace:
    return argparse.Namespace(
        **{"url": None, "addresses": ADDRESSES, "v3": False, "interval": FAST, "db": ":memory:", "token": "s3cret"}
        | changes
    )


async def test_aiohttp_app_mounts_ekm_beside_its_own_routes(example: Callable[[str], ModuleType]) -> None:
    app = example("aiohttp_app").make_app(aiohttp_args())
    async with AiohttpClient(TestServer(app)) as client:
        home = await client.get("/")
        assert home.status == 200
        assert (await home.text()).startswith("my app: 3 meters are polled")

        listing = await (await client.get("/ekm/api/meters")).json()
        assert [m["address"] for m in listing["meters"]] == ADDRESSES
        assert {m["kind"] for m in listing["meters"]} == {"v4"}

        page = await client.get("/ekm/")
        assert page.status == 200
        assert page.content_type == "text/html"
        assert "<html" in await page.text()
        slashless = await client.get("/ekm", allow_redirects=False)
        assert (slashless.status, slashless.headers["Location"]) == (308, "/ekm/")

        async def counted() -> str | None:
            text = await (await client.get("/ekm/metrics")).text()
            return text if re.search(r'^ekm_reads_total\{[^}]*meter="000300001186"[^}]*\} [1-9]', text, re.M) else None

        metrics = await until(counted)
        assert re.search(r'^ekm_reads_total\{[^}]*meter="000300001184"[^}]*\} [1-9]', metrics, re.M)

        stored = await (await client.get("/ekm/api/meters/000300001184/reads")).json()
        assert stored["reads"], "the store given to create_app is the one the poller fills"

        relay = "/ekm/api/meters/000300001184/relay"
        body = {"relay": 1, "state": "close"}
        assert (await client.post(relay, json=body)).status == 401
        written = await client.post(relay, json=body, headers={"Authorization": "Bearer s3cret"})
        assert written.status == 200, await written.text()

        async with client.get("/ekm/api/stream") as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
            async with asyncio.timeout(5):
                while await stream.content.readline() != b"event: read\n":
                    pass
                data = json.loads((await stream.content.readline()).removeprefix(b"data: "))
            assert data["address"] in ADDRESSES


async def test_aiohttp_app_polls_v3_meters_too(example: Callable[[str], ModuleType]) -> None:
    app = example("aiohttp_app").make_app(aiohttp_args(v3=True, addresses=ADDRESSES[:1]))
    async with AiohttpClient(TestServer(app)) as client:

        async def read() -> dict[str, Any] | None:
            answer = await client.get(f"/ekm/api/meters/{ADDRESSES[0]}/latest")
            return await answer.json() if answer.status == 200 else None

        assert (await until(read))["fields"]["Model"] == "1012"  # a V3's
        listing = await (await client.get("/ekm/api/meters")).json()
        assert [m["kind"] for m in listing["meters"]] == ["v3"]


# ---------------------------------------------------------------------------------------------------
# Starlette: the lifespan opens the poller; endpoints of its own


@pytest.fixture
def starlette_client(example: Callable[[str], ModuleType]) -> Iterator[TestClient]:
    with TestClient(example("starlette_app").make_app(interval=FAST)) as client:  # runs the lifespan
        yield client


def test_starlette_meters_show_the_newest_reads(starlette_client: TestClient) -> None:
    def read_all() -> dict[str, dict[str, Any]] | None:
        meters: dict[str, dict[str, Any]] = starlette_client.get("/meters").json()
        return meters if all(m["kWh"] is not None for m in meters.values()) else None

    meters = eventually(read_all)
    assert list(meters) == ADDRESSES
    for values in meters.values():
        assert isinstance(values["kWh"], float)
        assert values["kWh"] > 0
        assert isinstance(values["W"], int)


def test_starlette_history_comes_from_the_store(starlette_client: TestClient) -> None:
    def two_rows() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = starlette_client.get(f"/meters/{ADDRESSES[1]}/history").json()
        return rows if len(rows) >= 2 else None

    rows = eventually(two_rows)
    assert set(rows[0]) == {"time", "kWh", "W"}
    times = [row["time"] for row in rows]
    assert times == sorted(times)
    later = starlette_client.get(f"/meters/{ADDRESSES[1]}/history", params={"since": times[0], "limit": 1}).json()
    assert [row["time"] for row in later] == [times[1]]
    assert starlette_client.get(f"/meters/{ADDRESSES[1]}/history", params={"limit": "x"}).status_code == 400
    assert starlette_client.get("/meters/000399999999/history").status_code == 404


def test_starlette_relay_writes_and_maps_errors(starlette_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"/meters/{ADDRESSES[0]}/relay"
    done = starlette_client.post(url, json={"relay": 1, "state": "close", "seconds": 0})
    assert (done.status_code, done.json()) == (200, {"ok": True})
    bad_relay = starlette_client.post(url, json={"relay": 3, "state": "close"})
    assert bad_relay.status_code == 400
    assert "relay must be 1 or 2; got 3" in bad_relay.json()["error"]
    assert starlette_client.post(url, json={"relay": 1}).status_code == 400  # no state
    assert starlette_client.post(url, content=b"not json").status_code == 400
    assert starlette_client.post(url, json=[1, "close"]).status_code == 400
    assert starlette_client.post(url, json={"relay": 1, "state": "close", "seconds": "x"}).status_code == 400
    assert starlette_client.post("/meters/000399999999/relay", json={"relay": 1, "state": "close"}).status_code == 404

    for error, status in (
        (Refused(ADDRESSES[0], "write not acknowledged"), 409),
        (ReplyTimeout(ADDRESSES[0], "no reply"), 504),
    ):

        async def failing(*args: object, error: Exception = error, **kwargs: object) -> None:
            raise error

        monkeypatch.setattr(V4Meter, "set_relay", failing)
        answer = starlette_client.post(url, json={"relay": 1, "state": "open"})
        assert (answer.status_code, answer.json()) == (status, {"error": str(error)})


def test_starlette_events_stream_the_observers_reads(starlette_client: TestClient) -> None:
    seen: set[str] = set()
    with starlette_client.stream("GET", "/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                assert set(data) == {"address", "kWh", "W"}
                seen.add(data["address"])
                if seen == set(ADDRESSES):
                    break
    assert seen == set(ADDRESSES)


# ---------------------------------------------------------------------------------------------------
# As scripts: serve for --run-for seconds, with a simulator


def serve(script: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``script`` on a free port; its process and the URL it printed."""
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), "--port", "0", "--interval", "0.1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=EXAMPLES.parent,
    )
    assert process.stdout is not None
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        assert lines[0] == "(no URL given: talking to a simulated v4 bus)\n", lines
        served = re.match(r"serving (http://127\.0\.0\.1:\d+/)", lines[1])
        assert served, lines
    except BaseException:
        process.kill()
        finish(process)
        raise
    return process, served[1]


def finish(process: subprocess.Popen[str]) -> tuple[str, str]:
    """What the process printed after its URL, once it ended by itself."""
    assert process.stdout is not None
    assert process.stderr is not None
    with process:  # closes its pipes
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        return process.stdout.read(), process.stderr.read()


def test_aiohttp_script_serves_for_run_for_seconds() -> None:
    process, url = serve("aiohttp_app.py", "--run-for", "1.5")
    try:
        assert httpx.get(url).text.startswith("my app: 3 meters are polled")
        assert httpx.get(url + "ekm/api/meters").json()["meters"]
    finally:
        out, err = finish(process)
    assert process.returncode == 0, out + err
    assert err == ""
    assert out.startswith("writes: refused (no --token)\n")
    stopped = re.search(r"^stopped after 1\.5 s: (\d+) reads of 3 meters, (\d+) stored$", out, re.M)
    assert stopped, out
    assert int(stopped[1]) >= 3
    assert stopped[2] == stopped[1]


@pytest.mark.skipif(importlib.util.find_spec("uvicorn") is None, reason="serving the Starlette app needs uvicorn")
def test_starlette_script_serves_with_uvicorn() -> None:
    process, url = serve("starlette_app.py", "--run-for", "1.5")
    try:
        assert list(httpx.get(url + "meters").json()) == ADDRESSES
    finally:
        out, err = finish(process)
    assert process.returncode == 0, out + err
    assert err == ""
    assert out == "stopped after 1.5 s\n"


@pytest.mark.skipif(importlib.util.find_spec("uvicorn") is not None, reason="uvicorn is installed")
def test_starlette_script_without_uvicorn_says_what_to_install() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "starlette_app.py"), "--run-for", "1"],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        "error: serving needs uvicorn: pip install uvicorn\n",
    )
