"""The web service (issue 6) against simulated buses: every endpoint, the token rules, the 4xx/5xx paths,
the live stream, the metrics, mounting in another app, and the real ``ekm-async serve``.

Every rig is a simulator served in memory (unpaced wire, 1 ms turnaround), a bus with a small timeout
margin, a poller (started only where a test wants reads) and the app under ``aiohttp.test_utils``.
Every request is bounded by ``GUARD`` seconds: a hang fails the test, it does not stall the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDictProxy
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from ekm_async import Bus, Poller, SqliteStore, open_bus
from ekm_async.catalogue import SETTINGS as WRITES
from ekm_async.cli import main as cli_main
from ekm_async.exchange import LATENCY_BUCKETS
from ekm_async.model import MaxDemandResetInterval, MonthDay, Period, Season
from ekm_async.sim import Fault, MeterModel, MeterType, SimBus, SimServer
from ekm_async.web import StreamHub, create_app
from ekm_async.web.app import HUB, METRICS, OPTIONS

GUARD = 10.0
"""Seconds after which a request (or a wait) is hung."""
A, B, C = "000300003001", "000300003002", "000300003003"
"""Two V4 meters and a V3 meter."""
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
V4_ONLY = sorted(name for name, spec in WRITES.items() if spec.v4_only)


# ---------------------------------------------------------------------------------------------------
# The rig


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The error code of a JSON error (and a check that the error is one)."""
        assert self.headers["Content-Type"].startswith("application/json"), (self.status, self.body)
        answer = self.json()
        assert set(answer) == {"error", "message"}, answer
        assert isinstance(answer["message"], str)
        assert answer["message"]
        return str(answer["error"])


@dataclass
class Rig:
    sim: SimBus
    bus: Bus
    poller: Poller
    app: web.Application
    client: TestClient[web.Request, web.Application]
    store: SqliteStore | None
    prefix: str = ""

    async def request(self, method: str, path: str, **kw: Any) -> Answer:
        async with asyncio.timeout(GUARD), self.client.request(method, self.prefix + path, **kw) as response:
            return Answer(response.status, response.headers, await response.read())

    async def get(self, path: str, **kw: Any) -> Answer:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Answer:
        return await self.request("POST", path, **kw)

    async def write(self, address: str, setting: str, body: Any = None, **kw: Any) -> Answer:
        """POST a setting with the token (unless ``headers`` say otherwise)."""
        kw.setdefault("headers", AUTH)
        if body is not None:
            kw["json"] = body
        return await self.post(f"/api/meters/{address}/{setting}", **kw)

    def untouched(self) -> Callable[[], None]:
        """A check that nothing went on the wire since now."""
        wire, transactions = len(self.sim.transactions), self.bus.stats.transactions

        def check() -> None:
            assert len(self.sim.transactions) == wire, "the bus was touched"
            assert self.bus.stats.transactions == transactions

        return check


def models() -> list[MeterModel]:
    return [
        MeterModel(A, MeterType.V4, seed=1),
        MeterModel(B, MeterType.V4, seed=2),
        MeterModel(C, MeterType.V3, seed=3),
    ]


@contextlib.asynccontextmanager
async def rig(
    *,
    faults: tuple[str, ...] = (),
    interval: float = 60.0,
    token: str | None = TOKEN,
    db: Path | None = None,
    write_timeout: float = 30.0,
    mount: str | None = None,
    keepalive: float | None = None,
    app_options: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[Rig]:
    """Meters A, B (V4) and C (V3) on one simulated bus; the poller is not started (``rig.poller.start()``)."""
    options = {"timeout_margin": 0.05, "baud": 1_000_000} | options
    async with contextlib.AsyncExitStack() as stack:
        sim = SimBus(models(), baud=0, turnaround=0.001, faults=[Fault.parse(f) for f in faults])
        server = await stack.enter_async_context(SimServer(sim))
        bus = await stack.enter_async_context(open_bus("memory://web", connect=server.memory_connector(), **options))
        store = await stack.enter_async_context(SqliteStore(db, flush_interval=0.05)) if db else None
        handles = [bus.v3(m.address) if m.type is MeterType.V3 else bus.v4(m.address) for m in sim.meters]
        poller = Poller(handles, interval=interval, observers=[store] if store else [], drain_timeout=5)
        stack.push_async_callback(poller.aclose)
        app = create_app(poller, store=store, token=token, write_timeout=write_timeout, **(app_options or {}))
        if keepalive is not None:
            app[OPTIONS] = dataclasses.replace(app[OPTIONS], keepalive=keepalive)
        root = app
        if mount is not None:
            root = web.Application()
            root.add_subapp(mount, app)
        client = await stack.enter_async_context(TestClient(TestServer(root)))
        yield Rig(sim, bus, poller, app, client, store, (mount or "").rstrip("/"))


async def until(predicate: Callable[[], bool], what: str, timeout: float = GUARD) -> None:
    """Wait for ``predicate`` (checked every 10 ms)."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def settled(r: Rig) -> None:
    """Stop polling and let the bus finish what is on it: its counters stop moving."""
    await r.poller.aclose()
    with contextlib.suppress(Exception):
        await r.bus.v4(A).read_a()  # FIFO: runs after whatever was left on the bus


# ---------------------------------------------------------------------------------------------------
# GET / and unknown routes


async def test_index_page_is_html_with_relative_urls() -> None:
    async with rig() as r:
        page = await r.get("/")
        assert page.status == 200
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        text = page.body.decode()
        assert "<!doctype html>" in text.lower()
        assert 'EventSource("api/stream")' in text
        assert 'fetch("api/meters")' in text
        assert not re.search(r"""["'`]/(api|metrics)""", text), "an absolute URL breaks the page when mounted"


async def test_unknown_route_and_method_are_json_errors() -> None:
    async with rig() as r:
        missing = await r.get("/nope")
        assert missing.status == 404
        assert missing.error == "not-found"
        wrong = await r.request("DELETE", "/api/meters")
        assert wrong.status == 405
        assert wrong.error == "method-not-allowed"


async def test_method_not_allowed_keeps_its_allow_header() -> None:
    """RFC 9110 §15.5.6: a 405 MUST carry Allow. The JSON middleware builds a new response without it."""
    async with rig() as r:
        wrong = await r.request("DELETE", "/api/meters")
        assert wrong.status == 405
        assert "GET" in wrong.headers.get("Allow", ""), dict(wrong.headers)


# ---------------------------------------------------------------------------------------------------
# GET /api/meters


async def test_meters_report_status_and_counters_of_each_meter_and_bus() -> None:
    async with rig(faults=(f"dead@{B}", "crc#2"), interval=0.0, quarantine_after=2, backoff=30.0) as r:
        before = await r.get("/api/meters")
        assert before.status == 200
        assert [m["address"] for m in before.json()["meters"]] == [A, B, C]
        assert all(m["ok"] == 0 and m["last_read"] is None for m in before.json()["meters"])
        await r.poller.start()
        status = r.poller.status()
        await until(lambda: status[A].ok >= 3 and status[C].ok >= 3 and status[B].errors >= 2, "reads and failures")
        await settled(r)
        answer = (await r.get("/api/meters")).json()
    by_address = {m["address"]: m for m in answer["meters"]}
    assert set(by_address) == {A, B, C}
    for address, meter in by_address.items():
        s = status[address]
        assert meter["kind"] == ("v3" if address == C else "v4")
        assert meter["bus"] == "bus1"  # its name: the URL is for the token's holder only
        assert meter["interval"] == 0.0
        assert (meter["ok"], meter["errors"], meter["last_error"]) == (s.ok, s.errors, s.last_error)
    assert by_address[A]["last_read"] == status[A].last_read.time.isoformat()  # type: ignore[union-attr]
    assert by_address[A]["available"] is True
    assert by_address[A]["latency"] == r.bus.meter_stats[A].last_latency
    assert by_address[A]["backoff_seconds"] is None
    dead = by_address[B]
    assert dead["ok"] == 0
    assert dead["last_read"] is None
    assert B in dead["last_error"]
    assert dead["available"] is False
    left = r.bus.meter_stats[B].backed_off_until - asyncio.get_running_loop().time()
    assert 0 < dead["backoff_seconds"] <= left + 0.2  # seconds left, not the loop's clock
    stats = r.bus.stats
    assert answer["buses"] == {
        "bus1": {
            "connected": True,
            "outage": False,
            "down_since": None,
            "down_seconds": 0.0,
            "down_reason": "",
            "frames_ok": stats.frames_ok,
            "rejected": dict(stats.rejected),
            "anomalies": {},
            "timeouts": stats.timeouts,
            "retries": stats.retries,
            "reconnects": stats.reconnects,
            "transactions": stats.transactions,
        }
    }
    assert stats.rejected["crc"] >= 1
    assert stats.timeouts >= 2
    assert stats.retries >= 1


# ---------------------------------------------------------------------------------------------------
# GET /api/meters/{address}/latest


async def test_latest_comes_from_the_poller() -> None:
    async with rig() as r:
        assert (await r.get(f"/api/meters/{A}/latest")).error == "no-read"  # no read, no store
        await r.poller.start()
        await until(lambda: all(s.ok for s in r.poller.status().values()), "a read of every meter")
        for address in (A, B, C):
            read = r.poller.status()[address].last_read
            assert read is not None
            answer = await r.get(f"/api/meters/{address}/latest")
            assert answer.status == 200
            got = answer.json()
            assert got["address"] == address
            assert got["time"] == read.time.isoformat()  # type: ignore[union-attr]
            assert got["meter_time"] == read.meter_datetime.isoformat()  # type: ignore[union-attr]
            assert got["fields"] == json.loads(json.dumps(dict(read.fields)))
            assert got["fields"]["Meter_Address"] == address


async def test_latest_comes_from_the_store_while_the_poller_has_none(tmp_path: Path) -> None:
    async with rig(db=tmp_path / "reads.db") as r:
        assert r.store is not None
        reads = [await r.bus.v4(A).read() for _ in range(3)]
        await r.store.add_many(reads)
        answer = await r.get(f"/api/meters/{A}/latest")
        assert answer.status == 200
        got = answer.json()
        newest = reads[-1]
        assert got["address"] == A
        assert got["time"] == newest.time.isoformat()  # type: ignore[union-attr]
        assert got["kind"] == "v4"
        assert got["raw_a"] == newest.a.raw.hex()
        assert got["raw_b"] == newest.b.raw.hex()  # type: ignore[union-attr]
        assert got["fields"]["RMS_Watts_Tot"] == newest.fields["RMS_Watts_Tot"]
        assert got["fields"]["CT_Ratio"] == newest.fields["CT_Ratio"]
        assert (await r.get(f"/api/meters/{C}/latest")).error == "no-read"  # in neither


async def test_latest_and_reads_of_an_unknown_meter_are_404(tmp_path: Path) -> None:
    async with rig(db=tmp_path / "reads.db") as r:
        for path in ("latest", "reads"):
            answer = await r.get(f"/api/meters/000300009999/{path}")
            assert answer.status == 404
            assert answer.error == "unknown-meter"


# ---------------------------------------------------------------------------------------------------
# GET /api/meters/{address}/reads


@contextlib.asynccontextmanager
async def stored(tmp_path: Path, n: int = 5) -> AsyncIterator[tuple[Rig, list[dict[str, Any]]]]:
    """A rig whose store holds ``n`` reads of A (and one of C), and those reads of A as the API lists them."""
    async with rig(db=tmp_path / "reads.db") as r:
        assert r.store is not None
        for _ in range(n):
            await r.store.add(await r.bus.v4(A).read())
        await r.store.add(await r.bus.v3(C).read())
        answer = await r.get(f"/api/meters/{A}/reads")
        assert answer.status == 200
        yield r, answer.json()["reads"]


async def test_reads_come_from_the_store_oldest_first(tmp_path: Path) -> None:
    async with stored(tmp_path) as (r, rows):
        assert len(rows) == 5
        times = [datetime.fromisoformat(row["time"]) for row in rows]
        assert times == sorted(times)
        assert all(t.tzinfo is not None for t in times)
        assert {row["address"] for row in rows} == {A}
        assert all(row["kind"] == "v4" and len(row["raw_a"]) == 510 and len(row["raw_b"]) == 510 for row in rows)
        assert all(row["fields"]["Meter_Address"] == A for row in rows)
        v3 = (await r.get(f"/api/meters/{C}/reads")).json()
        assert v3["address"] == C
        assert [row["kind"] for row in v3["reads"]] == ["v3"]
        assert v3["reads"][0]["raw_b"] is None
        assert (await r.get(f"/api/meters/{B}/reads")).json() == {"address": B, "reads": []}


async def test_reads_since_iso_with_a_zone_or_epoch_seconds(tmp_path: Path) -> None:
    async with stored(tmp_path) as (r, rows):
        second = datetime.fromisoformat(rows[1]["time"])
        z = second.astimezone(UTC).isoformat().replace("+00:00", "Z")
        plus_two = second.astimezone(timezone(timedelta(hours=2))).isoformat()
        for since in (rows[1]["time"], z, plus_two, repr(second.timestamp())):
            answer = await r.get(f"/api/meters/{A}/reads", params={"since": since})
            assert answer.status == 200, (since, answer.body)
            assert answer.json()["reads"] == rows[2:], since
        for since in ("0", "1e3", (second - timedelta(days=1)).isoformat()):
            assert (await r.get(f"/api/meters/{A}/reads", params={"since": since})).json()["reads"] == rows
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert (await r.get(f"/api/meters/{A}/reads", params={"since": future})).json()["reads"] == []


async def test_reads_limit_1_to_10000(tmp_path: Path) -> None:
    async with stored(tmp_path) as (r, rows):
        for limit, want in (("1", rows[:1]), ("2", rows[:2]), ("10000", rows)):
            answer = await r.get(f"/api/meters/{A}/reads", params={"limit": limit})
            assert answer.status == 200
            assert answer.json()["reads"] == want
        answer = await r.get(f"/api/meters/{A}/reads", params={"since": rows[0]["time"], "limit": "2"})
        assert answer.json()["reads"] == rows[1:3]


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "10001"},
        {"limit": "-1"},
        {"limit": "ten"},
        {"limit": "1.5"},
        {"since": "yesterday"},
        {"since": "2026-01-05T08:00:00"},  # no zone
        {"since": "2026-01-05"},  # no zone
        {"since": "nan"},  # neither a time nor epoch seconds
    ],
)
async def test_reads_with_a_bad_query_are_400(tmp_path: Path, query: dict[str, str]) -> None:
    async with stored(tmp_path, n=1) as (r, _):
        answer = await r.get(f"/api/meters/{A}/reads", params=query)
        assert answer.status == 400, (query, answer.body)
        assert answer.error == "bad-request"


async def test_reads_since_a_zone_offset_typed_into_a_url_whose_plus_arrived_as_a_space(tmp_path: Path) -> None:
    """``curl '…/reads?since=2026-01-05T08:00:00+00:00'``: the server gets ``…08:00:00 00:00`` (a ``+`` in a
    query string is a space). That space before a zone offset is all that is wrong: it is taken as the ``+``."""
    async with stored(tmp_path) as (r, rows):
        second = datetime.fromisoformat(rows[1]["time"])
        for typed in (rows[1]["time"], second.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()):
            assert "+" in typed
            answer = await r.get(f"/api/meters/{A}/reads?since={typed}")  # as typed: not %2B
            assert answer.status == 200, (typed, answer.body)
            assert answer.json()["reads"] == rows[2:], typed


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "since=2026-13-05T08:00:00+00:00",  # a + typed, and a month 13: say how to write the +
            "since must be a time with its zone, like 2026-01-31T14:30:00Z, or epoch seconds, like 1769869800; "
            "got '2026-13-05T08:00:00 00:00' (a + in a URL arrives as a space: write it %2B, or give the time "
            "in UTC with Z)",
        ),
        (
            "since=2026-01-05T08:00:00",
            "since needs a time zone: add Z for UTC, like 2026-01-05T08:00:00Z (an offset's + is written %2B in "
            "a URL), or give epoch seconds; got '2026-01-05T08:00:00'",
        ),
        (
            "since=yesterday",
            "since must be a time with its zone, like 2026-01-31T14:30:00Z, or epoch seconds, like 1769869800; "
            "got 'yesterday'",
        ),
        ("limit=ten", "limit must be a whole number from 1 to 10000; got 'ten'"),
        ("limit=1.5", "limit must be a whole number from 1 to 10000; got '1.5'"),
        ("limit=0", "limit must be a whole number from 1 to 10000; got '0'"),
        ("limit=" + "9" * 5000, "limit must be a whole number from 1 to 10000; got '" + "9" * 5000 + "'"),
    ],
    ids=["plus-as-space", "no-zone", "not-a-time", "limit-word", "limit-fraction", "limit-0", "limit-huge"],
)
async def test_a_bad_query_says_what_to_write_in_a_form_that_survives_a_url(
    tmp_path: Path, query: str, message: str
) -> None:
    async with stored(tmp_path, n=1) as (r, _):
        answer = await r.get(f"/api/meters/{A}/reads?{query}")
        assert answer.status == 400, (query, answer.body)
        assert answer.error == "bad-request"
        assert answer.json()["message"] == message
        assert "+00:00" not in message  # what a URL turns into a space is never suggested


async def test_reads_of_the_poller_reach_the_api_through_the_store(tmp_path: Path) -> None:
    async with rig(db=tmp_path / "reads.db", interval=0.01) as r:
        assert r.store is not None
        await r.poller.start()
        await until(lambda: r.poller.status()[C].ok >= 3, "reads of C")
        await r.poller.aclose()  # the store takes every read
        rows = (await r.get(f"/api/meters/{C}/reads")).json()["reads"]
        assert len(rows) == r.poller.status()[C].ok == await r.store.count(C)
        assert rows[-1]["time"] == r.poller.status()[C].last_read.time.isoformat()  # type: ignore[union-attr]
        assert rows[-1]["raw_a"] == r.poller.status()[C].last_read.a.raw.hex()  # type: ignore[union-attr]


async def test_reads_without_a_store_are_404() -> None:
    async with rig() as r:
        answer = await r.get(f"/api/meters/{A}/reads")
        assert answer.status == 404
        assert answer.error == "no-store"


# ---------------------------------------------------------------------------------------------------
# GET /api/stream


async def sse(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of each event; ("retry", ms) and ("comment", text) for those lines."""
    event, data = "message", []
    while line := await response.content.readline():
        text = line.decode().rstrip("\r\n")
        if not text:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif text.startswith(":"):
            yield "comment", text[1:].strip()
        else:
            name, _, value = text.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "retry":
                yield "retry", value


async def collect(
    r: Rig, done: Callable[[list[tuple[str, Any]]], bool], start: Callable[[], Awaitable[Any]] | None = None
) -> list[tuple[str, Any]]:
    """Events of /api/stream (data parsed as JSON) until ``done(events)``; ``start`` runs once connected."""
    got: list[tuple[str, Any]] = []
    async with asyncio.timeout(GUARD), r.client.get(r.prefix + "/api/stream") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        async for event, data in sse(response):
            got.append((event, json.loads(data) if event in ("read", "error") else data))
            if event == "retry" and start is not None:
                await start()
            if done(got):
                return got
    pytest.fail(f"the stream ended: {got}")


async def test_stream_delivers_reads_as_they_happen_and_errors_of_a_dead_meter() -> None:
    async with rig(faults=(f"dead@{B}",), interval=0.02) as r:
        connected = datetime.now(UTC)

        def done(events: list[tuple[str, Any]]) -> bool:
            reads = [data["address"] for event, data in events if event == "read"]
            errors = [data["address"] for event, data in events if event == "error"]
            return reads.count(A) >= 3 and reads.count(C) >= 3 and errors.count(B) >= 1

        events = await collect(r, done, r.poller.start)
        assert events[0] == ("retry", "2000")
        reads = [data for event, data in events if event == "read"]
        errors = [data for event, data in events if event == "error"]
        assert {read["address"] for read in reads} == {A, C}
        for read in reads:
            assert datetime.fromisoformat(read["time"]) >= connected
            assert read["fields"]["Meter_Address"] == read["address"]
            assert datetime.fromisoformat(read["meter_time"]).year == 2026
        times = [datetime.fromisoformat(read["time"]) for read in reads if read["address"] == A]
        assert times == sorted(times)
        assert len(set(times)) == len(times), "each read once"
        assert all(e["address"] == B and B in e["error"] and datetime.fromisoformat(e["time"]) for e in errors)
        status = r.poller.status()
        await until(lambda: not r.app[HUB].clients, "the stream to unsubscribe")
        assert status[A].ok >= len(times)


async def test_stream_sends_keepalive_comments_and_unsubscribes_on_disconnect() -> None:
    async with rig(keepalive=0.05) as r:
        events = await collect(r, lambda got: sum(e == "comment" for e, _ in got) >= 2)
        assert events == [("retry", "2000"), ("comment", "keepalive"), ("comment", "keepalive")]
        await until(lambda: not r.app[HUB].clients, "the stream to unsubscribe")


async def test_stream_hub_drops_the_oldest_for_a_slow_client() -> None:
    hub = StreamHub(size=2)
    queue = hub.subscribe()
    for n in range(3):
        await hub.on_error(f"00030000000{n}", RuntimeError(f"boom {n}"))
    assert hub.dropped == 1
    messages = [queue.get_nowait() for _ in range(queue.qsize())]
    assert [json.loads(m.split("data: ")[1])["error"] for m in messages] == ["boom 1", "boom 2"]
    assert all(m.startswith("event: error\n") and m.endswith("\n\n") for m in messages)


# ---------------------------------------------------------------------------------------------------
# GET /metrics


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_match_the_bus_and_poller_counters() -> None:
    async with rig(faults=(f"dead@{B}", "crc#2,5"), interval=0.0, quarantine_after=2, backoff=30.0) as r:
        await r.poller.start()
        status = r.poller.status()
        await until(lambda: status[A].ok >= 5 and status[C].ok >= 5 and status[B].errors >= 2, "reads and failures")
        await settled(r)
        answer = await r.get("/metrics")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == CONTENT_TYPE_LATEST
    samples = scrape(answer.body.decode())
    bus = frozenset({("bus", "bus1")})
    stats = r.bus.stats
    for attribute in ("frames_ok", "timeouts", "retries", "reconnects", "naks", "transactions"):
        assert samples[f"ekm_{attribute}_total", bus] == getattr(stats, attribute), attribute
    assert stats.rejected["crc"] == 2
    rejected = {
        dict(labels)["reason"]: v for (name, labels), v in samples.items() if name == "ekm_frames_rejected_total"
    }
    assert rejected == dict(stats.rejected)
    assert samples["ekm_bus_connected", bus] == 1
    assert stats.timeouts >= 2
    assert stats.retries >= 2
    # The histogram: cumulative buckets, count and sum as the bus counted them.
    running = 0
    for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), stats.exchange_buckets, strict=True):
        running += count
        assert samples["ekm_exchange_latency_seconds_bucket", bus | {("le", bound)}] == running, bound
    assert samples["ekm_exchange_latency_seconds_count", bus] == sum(stats.exchange_buckets) > 0
    assert samples["ekm_exchange_latency_seconds_sum", bus] == pytest.approx(stats.exchange_seconds)
    for address, s in status.items():
        labels = frozenset({("meter", address), ("bus", "bus1")})
        assert samples["ekm_reads_total", labels] == s.ok
        assert samples["ekm_read_errors_total", labels] == s.errors
        assert samples["ekm_meter_available", labels] == (0 if address == B else 1)
    assert status[B].ok == 0


async def test_metrics_of_apps_in_one_process_do_not_clash() -> None:
    async with rig() as r:
        other = create_app(r.poller)
        assert other[METRICS] is not r.app[METRICS]
        assert (await r.get("/metrics")).status == 200


# ---------------------------------------------------------------------------------------------------
# POST /api/meters/{address}/{setting}: every setting


Check = Callable[[Rig, MeterModel], Awaitable[None]]


async def _fields(r: Rig, address: str) -> dict[str, Any]:
    return dict((await r.bus.v4(address).read()).fields)


async def _relay(r: Rig, m: MeterModel) -> None:
    assert m.relays[1].closed
    assert m.relays[1].until is not None  # timed
    assert (await r.bus.v4(A).read_a()).fields["State_Out"] == 2  # relay 2 on


async def _ct(r: Rig, m: MeterModel) -> None:
    assert m.ct_ratio == 400
    assert (await _fields(r, A))["CT_Ratio"] == 400


async def _period(r: Rig, m: MeterModel) -> None:
    assert m.max_demand_period == 30
    assert (await _fields(r, A))["Max_Demand_Period"] == 30  # minutes


async def _reset_interval(r: Rig, m: MeterModel) -> None:
    assert m.max_demand_reset_interval == MaxDemandResetInterval.DAILY
    assert (await _fields(r, A))["Max_Demand_Interval_Reset"] == "daily"


async def _reset_now(r: Rig, m: MeterModel) -> None:
    assert m.writes[-1] == ("0040", "000000")


async def _time(r: Rig, m: MeterModel) -> None:
    assert m.writes[-1][0] == "0060"
    assert abs(m.clock - datetime(2027, 3, 4, 5, 6, 7)) < timedelta(seconds=5)
    read = await r.bus.v4(A).read()
    assert read.meter_datetime is not None
    assert read.meter_datetime.replace(tzinfo=None) - datetime(2027, 3, 4, 5, 6, 7) < timedelta(seconds=5)


async def _pulse_in(r: Rig, m: MeterModel) -> None:
    assert m.pulse_ratios == [1, 250, 1]
    assert (await _fields(r, A))["Pulse_Ratio_2"] == 250


async def _pulse_out(r: Rig, m: MeterModel) -> None:
    assert m.pulse_output_ratio == 40
    assert (await _fields(r, A))["Pulse_Output_Ratio"] == 40


async def _zero(r: Rig, m: MeterModel) -> None:
    assert m.writes[-1] == ("00D3", "")
    assert m.resettable[0] < 0.01


async def _lcd(r: Rig, m: MeterModel) -> None:
    assert m.lcd == [1, 12, 28]


async def _weekend(r: Rig, m: MeterModel) -> None:
    assert (m.weekend_schedule, m.holiday_schedule) == (2, 3)


async def _password(r: Rig, m: MeterModel) -> None:
    assert m.password == "12345678"
    # The poller's handle follows: later writes (with no password in the body) are acknowledged.
    answer = await r.write(A, "ct-ratio", {"ratio": 600})
    assert answer.status == 200, answer.body
    assert m.ct_ratio == 600
    # The old password is refused now.
    assert (await r.write(A, "ct-ratio", {"ratio": 800, "password": "00000000"})).status == 409
    assert m.ct_ratio == 600


async def _address(r: Rig, m: MeterModel) -> None:
    assert m.address == "000300003099"
    assert [x.address for x in r.sim.meters] == ["000300003099", B, C]


async def _schedule(r: Rig, m: MeterModel) -> None:
    assert m.schedules[0] == [Period(6, 30, 1), Period(22, 0, 2), Period(0, 0, 1), Period(0, 0, 1)]  # schedule 1


async def _seasons(r: Rig, m: MeterModel) -> None:
    assert m.seasons == [Season(1, 1, 1), Season(6, 1, 2), Season(0, 0, 1), Season(0, 0, 1)]


async def _holidays(r: Rig, m: MeterModel) -> None:
    assert m.holidays[:3] == [MonthDay(1, 1), MonthDay(7, 4), MonthDay(0, 0)]


VALID: dict[str, tuple[dict[str, Any] | None, Check]] = {
    "relay": ({"relay": 2, "state": "close", "seconds": 600}, _relay),
    "ct-ratio": ({"ratio": 400}, _ct),
    "max-demand-period": ({"period": 30}, _period),
    "max-demand-reset-interval": ({"interval": "daily"}, _reset_interval),
    "max-demand-reset-now": (None, _reset_now),
    "time": ({"when": "2027-03-04T05:06:07"}, _time),
    "pulse-input-ratio": ({"line": 2, "ratio": 250}, _pulse_in),
    "pulse-output-ratio": ({"ratio": 40, "password": "00000000"}, _pulse_out),
    "zero-resettable": ({}, _zero),
    "lcd": ({"items": ["kWh_Tot", 12, "line_freq"]}, _lcd),
    "weekend-holiday-schedules": ({"weekend": 2, "holiday": 3}, _weekend),
    "password": ({"new_password": "12345678"}, _password),
    "address": ({"new_address": "000300003099"}, _address),
    "schedule": ({"schedule": 1, "periods": [[6, 30, 1], [22, 0, 2]]}, _schedule),
    "seasons": ({"seasons": [[1, 1, 1], [6, 1, 2]]}, _seasons),
    "holidays": ({"dates": [[1, 1], [7, 4]]}, _holidays),
}


def test_every_write_setting_has_a_case() -> None:
    assert set(VALID) == set(WRITES)


@pytest.mark.parametrize("setting", sorted(VALID))
async def test_every_write_setting_succeeds_and_reaches_the_meter(setting: str) -> None:
    body, check = VALID[setting]
    async with rig() as r:
        meter = r.sim.meter(A)
        answer = await r.write(A, setting, body)
        assert answer.status == 200, answer.body
        assert answer.json()["ok"] is True
        assert answer.json()["setting"] == setting
        assert answer.json()["address"] == (meter.address if setting == "address" else A)
        await check(r, meter)


async def test_set_time_without_a_body_sets_now() -> None:
    async with rig() as r:
        answer = await r.write(A, "time")
        assert answer.status == 200
        assert abs(r.sim.meter(A).clock - datetime.now()) < timedelta(seconds=5)


@pytest.mark.parametrize("setting", ["ct-ratio", "max-demand-period", "weekend-holiday-schedules", "holidays"])
async def test_settings_both_versions_have_work_on_a_v3(setting: str) -> None:
    body, _ = VALID[setting]
    async with rig() as r:
        answer = await r.write(C, setting, body)
        assert answer.status == 200, answer.body
        assert r.sim.meter(C).writes, "written"


@pytest.mark.parametrize("setting", V4_ONLY)
async def test_v4_only_setting_on_a_v3_is_400_before_the_bus(setting: str) -> None:
    body, _ = VALID[setting]
    async with rig() as r:
        untouched = r.untouched()
        answer = await r.write(C, setting, body)
        assert answer.status == 400
        assert answer.error == "v4-only"
        untouched()
        assert r.sim.meter(C).writes == []


async def test_the_meter_follows_its_new_address() -> None:
    """After ``POST …/A/address {"new_address": N}`` answers ``{"address": N}``, the service should know the
    meter as N. It keeps it under A: N is 404 for every endpoint, /api/meters lists A, and A's bus counters
    (``bus.meter_stats[A]``) no longer move, so availability and latency of the meter are reported stale."""
    new = "000300003099"
    async with rig() as r:
        answer = await r.write(A, "address", {"new_address": new})
        assert answer.status == 200
        assert answer.json()["address"] == new
        listed = [m["address"] for m in (await r.get("/api/meters")).json()["meters"]]
        follow_up = await r.write(new, "ct-ratio", {"ratio": 400})
        assert (listed, follow_up.status) == ([new, B, C], 200), (listed, follow_up.body)


# ---------------------------------------------------------------------------------------------------
# POST: bad requests, before the bus


@pytest.mark.parametrize(
    ("setting", "body", "code"),
    [
        ("ct-ratio", b"{not json", "bad-json"),
        ("ct-ratio", b"[400]", "bad-json"),
        ("ct-ratio", b'"ratio"', "bad-json"),
        ("ct-ratio", b"\xff\xfe{}", "bad-json"),
        ("ct-ratio", {}, "bad-request"),  # missing ratio
        ("ct-ratio", {"ratio": 400, "extra": 1}, "bad-request"),
        ("ct-ratio", {"ratio": 123}, "bad-request"),  # not a CT ratio
        ("ct-ratio", {"ratio": "400", "password": "1234"}, "bad-request"),  # not 8 digits
        ("ct-ratio", {"ratio": 400, "password": 12345678}, "bad-request"),
        ("relay", {"relay": 3, "state": "close"}, "bad-request"),
        ("relay", {"relay": 1, "state": "close", "seconds": 10000}, "bad-request"),
        ("relay", {"relay": 1, "state": "close", "seconds": None}, "bad-request"),
        ("max-demand-period", {"period": 45}, "bad-request"),
        ("max-demand-reset-now", {"now": True}, "bad-request"),
        ("time", {"when": "yesterday"}, "bad-request"),
        ("time", {"when": 1700000000}, "bad-request"),
        ("time", {"when": "1999-12-31T23:59:59"}, "bad-request"),
        ("pulse-input-ratio", {"line": 4, "ratio": 1}, "bad-request"),
        ("pulse-input-ratio", {"line": 1, "ratio": 0}, "bad-request"),
        ("pulse-output-ratio", {"ratio": 3}, "bad-request"),
        ("lcd", {"items": []}, "bad-request"),
        ("lcd", {"items": "kWh_Tot"}, "bad-request"),
        ("lcd", {"items": ["not-an-item"]}, "bad-request"),
        ("lcd", {"items": 5}, "bad-request"),  # a number, not a list
        ("lcd", {"items": None}, "bad-request"),
        ("weekend-holiday-schedules", {"weekend": 9, "holiday": 1}, "bad-request"),
        ("password", {"new_password": "1234"}, "bad-request"),
        ("address", {"new_address": 300003099}, "bad-request"),
        ("schedule", {"schedule": 9, "periods": []}, "bad-request"),
        ("schedule", {"schedule": 0, "periods": []}, "bad-request"),  # schedules are 1–8
        ("schedule", {"schedule": 1, "periods": [[25, 0, 1]]}, "bad-request"),
        ("schedule", {"schedule": 1, "periods": [[1, 0, 0]]}, "bad-request"),  # tariffs are 1–4
        ("schedule", {"schedule": 1, "periods": [[1, 0, 1]] * 5}, "bad-request"),
        ("seasons", {"seasons": [[13, 1, 1]]}, "bad-request"),
        ("seasons", {"seasons": [[1, 1, 0]]}, "bad-request"),
        ("max-demand-period", {"period": 2}, "bad-request"),  # a code, not minutes
        ("max-demand-reset-interval", {"interval": 3}, "bad-request"),  # a code, not a word
        ("seasons", {"seasons": 4}, "bad-request"),
        ("holidays", {"dates": [[2, 30]]}, "bad-request"),
        ("holidays", {"dates": [{"month": 1, "day": 1}]}, "bad-request"),
    ],
)
async def test_bad_bodies_are_400_before_the_bus_is_touched(setting: str, body: Any, code: str) -> None:
    async with rig() as r:
        untouched = r.untouched()
        kw = {"data": body, "headers": AUTH | {"Content-Type": "application/json"}} if isinstance(body, bytes) else {}
        answer = await r.write(A, setting, None if isinstance(body, bytes) else body, **kw)
        assert answer.status == 400, answer.body
        assert answer.error == code
        untouched()
        assert r.sim.meter(A).writes == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the body is not JSON (expecting property name enclosed in double quotes at character 2)"),
        (b'{"ratio": 400', "the body is not JSON (expecting ',' delimiter at character 14)"),
        (b"\xff\xfe{}", "the body is not UTF-8 text"),  # was "'utf-8' codec can't decode byte 0xff in position 0…"
    ],
)
async def test_a_body_that_is_not_json_says_where_and_what_to_send(body: bytes, message: str) -> None:
    async with rig() as r:
        answer = await r.write(A, "ct-ratio", None, data=body, headers=AUTH | {"Content-Type": "application/json"})
        assert answer.status == 400
        assert answer.error == "bad-json"
        said = answer.json()["message"]
        assert said == f"{message}: send a JSON object of the setting's arguments by name, in UTF-8"


@pytest.mark.parametrize(
    ("setting", "body", "message"),
    [
        ("relay", {"relay": 1}, 'relay needs "state", like {"relay": 1, "state": "close", "seconds": 5}'),
        ("ct-ratio", {"ratio": 800, "colour": "red"}, 'ct-ratio takes "ratio"; "colour" is not one of them'),
        ("zero-resettable", {"now": True}, 'zero-resettable takes nothing but the password; "now" is not one of them'),
        ("ct-ratio", [800], "a JSON object is needed ({…}); got an array"),  # was "…, not list"
        ("ct-ratio", "800", "a JSON object is needed ({…}); got a string"),
        ("max-demand-period", {"period": 2}, "period must be 15, 30 or 60 minutes; got 2"),  # a code, not minutes
        ("relay", {"relay": 1, "state": 1}, "state must be open or close; got 1"),  # was "one of 0 (OPEN), 1 (CLOSE)"
    ],
)
async def test_a_bad_body_is_said_in_the_users_words(setting: str, body: Any, message: str) -> None:
    async with rig() as r:
        answer = await r.write(A, setting, body)
        assert answer.status == 400
        assert message in answer.json()["message"]
        assert r.sim.meter(A).writes == []


async def test_unknown_meter_and_setting_are_404() -> None:
    async with rig() as r:
        untouched = r.untouched()
        unknown_meter = await r.write("000300009999", "ct-ratio", {"ratio": 400})
        assert unknown_meter.status == 404
        assert unknown_meter.error == "unknown-meter"
        unknown_setting = await r.write(A, "frobnicate", {"x": 1})
        assert unknown_setting.status == 404
        assert unknown_setting.error == "unknown-setting"
        assert "ct-ratio" in unknown_setting.json()["message"]
        untouched()


# ---------------------------------------------------------------------------------------------------
# POST: the token


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"X-Token": TOKEN},
    ],
)
async def test_writes_with_a_missing_or_wrong_token_are_401(headers: dict[str, str]) -> None:
    async with rig() as r:
        untouched = r.untouched()
        for address in (A, "000300009999"):  # an unknown meter is not told apart without the token
            answer = await r.write(address, "ct-ratio", {"ratio": 400}, headers=headers)
            assert answer.status == 401
            assert answer.error == "unauthorized"
            assert answer.headers["WWW-Authenticate"] == "Bearer"
        untouched()
        assert r.sim.meter(A).ct_ratio == 200


@pytest.mark.parametrize("auth", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN} "])
async def test_the_right_token_is_accepted(auth: str) -> None:
    async with rig() as r:
        answer = await r.write(A, "ct-ratio", {"ratio": 400}, headers={"Authorization": auth})
        assert answer.status == 200
        assert r.sim.meter(A).ct_ratio == 400


@pytest.mark.parametrize("token", [None, ""])
async def test_with_no_token_configured_every_write_is_403(token: str | None) -> None:
    async with rig(token=token) as r:
        untouched = r.untouched()
        for headers in ({}, AUTH, {"Authorization": "Bearer "}):
            answer = await r.write(A, "ct-ratio", {"ratio": 400}, headers=headers)
            assert answer.status == 403
            assert answer.error == "writes-disabled"
        untouched()
        assert (await r.get("/api/meters")).status == 200  # reading needs no token


# ---------------------------------------------------------------------------------------------------
# POST: the meter and the bus fail


async def test_a_refused_write_is_409() -> None:
    async with rig() as r:
        answer = await r.write(A, "ct-ratio", {"ratio": 400, "password": "99999999"})
        assert answer.status == 409
        assert answer.error == "refused"
        assert r.sim.meter(A).ct_ratio == 200
        assert r.bus.available(A)  # the meter answered: not backed off


async def test_a_dead_meter_is_504_then_503_once_backed_off() -> None:
    async with rig(faults=(f"dead@{B}",), quarantine_after=2, backoff=7.0) as r:
        started = time.monotonic()
        for _ in range(2):
            answer = await r.write(B, "ct-ratio", {"ratio": 400})
            assert answer.status == 504
            assert answer.error == "meter-timeout"
            assert B in answer.json()["message"]
        wire = len(r.sim.transactions)
        backed_off = await r.write(B, "ct-ratio", {"ratio": 400})
        assert backed_off.status == 503
        assert backed_off.error == "meter-unavailable"
        assert 1 <= int(backed_off.headers["Retry-After"]) <= 7
        assert len(r.sim.transactions) == wire, "a backed-off meter is not asked"
        assert time.monotonic() - started < 3
        assert (await r.write(A, "ct-ratio", {"ratio": 400})).status == 200  # the others are served
        meters = {m["address"]: m for m in (await r.get("/api/meters")).json()["meters"]}
        assert meters[B]["available"] is False
        assert meters[A]["available"] is True


async def test_the_overall_write_timeout_is_504() -> None:
    async with rig(faults=(f"dead@{B}",), write_timeout=0.1, timeout_margin=0.5) as r:
        answer = await r.write(B, "ct-ratio", {"ratio": 400})
        assert answer.status == 504
        assert answer.error == "timeout"  # not the bus's own "meter-timeout", 0.5 s later
        assert answer.json()["message"] == (
            f"the write to meter {B} did not finish within 0.1 s (the bus may be busy): try again"
        )  # was "TimeoutError"


async def test_bad_replies_are_504() -> None:
    async with rig(faults=(f"crc@{A}",)) as r:
        answer = await r.write(A, "ct-ratio", {"ratio": 400})
        assert answer.status == 504
        assert answer.error == "bad-reply"
        assert not re.search(r"\b[0-9a-f]{2}( [0-9a-f]{2}){8}", answer.json()["message"])  # no bytes, as hex
        assert r.sim.meter(A).ct_ratio == 200


async def test_a_closed_bus_is_503() -> None:
    async with rig() as r:
        await r.bus.close()
        answer = await r.write(A, "ct-ratio", {"ratio": 400})
        assert answer.status == 503
        assert answer.error == "bus-closed"


# ---------------------------------------------------------------------------------------------------
# Mounted in another application


async def test_mounted_under_a_prefix_the_page_and_its_urls_work() -> None:
    async with rig(mount="/ekm/", interval=0.02) as r:
        page = await r.get("/")  # /ekm/
        assert page.status == 200
        text = page.body.decode()
        base = "/ekm/"
        for url in ("api/meters", "api/stream"):
            assert f'"{url}"' in text
        # The page's URLs, resolved against /ekm/ as a browser does.
        async with asyncio.timeout(GUARD), r.client.get(urljoin(base, "api/meters")) as meters:
            assert meters.status == 200
            assert [m["address"] for m in (await meters.json())["meters"]] == [A, B, C]
        await r.poller.start()
        await until(lambda: r.poller.status()[A].ok >= 1, "a read")
        assert (await r.get(f"/api/meters/{A}/latest")).json()["address"] == A
        events = await collect(r, lambda got: any(e == "read" for e, _ in got))
        assert events[-1][0] == "read"
        assert (await r.get("/metrics")).status == 200
        assert (await r.write(A, "ct-ratio", {"ratio": 400})).status == 200
        assert r.sim.meter(A).ct_ratio == 400
        missing = await r.get("/nope")
        assert missing.status == 404
        assert missing.error == "not-found"


# ---------------------------------------------------------------------------------------------------
# ekm-async serve


def test_serve_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for argv, message in (
        (["--token-file", str(tmp_path / "missing")], "--token-file: cannot read"),
        (["--token-file", str(empty)], "is empty"),
        (["--port", "70000"], "--port must be from 0 to 65535 (0: any free port); got 70000"),
        (["--tls-cert", str(empty)], "give --tls-cert and --tls-key together"),
        (["--max-streams", "0"], "--max-streams must be 1 or more; got 0"),
    ):
        with pytest.raises(SystemExit) as exit_:
            cli_main(["serve", "--simulate", "1", "--sim-baud", "0", *argv])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err


_SCRIPT = Path(sys.executable).with_name("ekm-async")
PROGRAM = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "ekm_async"]
"""The installed command (``python -m ekm_async`` if there is none)."""


@contextlib.asynccontextmanager
async def started(
    args: list[str], first_line: str, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``ekm-async ARGS…`` running, and the first group of ``first_line`` (a pattern its first line of
    output must fully match); killed at the end if still running."""
    process = await asyncio.create_subprocess_exec(
        *PROGRAM,
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    try:
        async with asyncio.timeout(GUARD):
            line = (await process.stdout.readline()).decode()  # type: ignore[union-attr]
        match = re.fullmatch(first_line, line)
        assert match, (line, await process.stderr.read())  # type: ignore[union-attr]
        yield process, match[1]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, *args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``ekm-async serve --simulate 2 --sim-baud 0 --port 0 --token-file F`` and the URL it prints."""
    token = tmp_path / "token"
    token.write_text(f"{TOKEN}\n")
    command = ["serve", "--simulate", "2", "--sim-baud", "0", "--port", "0", "--token-file", str(token), *args]
    first = r"serving (http://127\.0\.0\.1:(\d+)/) — 2 meters, writes need the token\n"
    async with started(command, first) as (process, url):
        yield process, url


def listening_on(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on ``port`` (Linux /proc)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                host, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(host)
    return found


async def test_serve_runs_the_service_on_localhost_and_stops_on_sigterm(tmp_path: Path) -> None:
    async with serving(tmp_path) as (process, url), aiohttp.ClientSession(base_url=url) as http:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        if Path("/proc/net/tcp").exists():
            assert listening_on(port) == {"0100007F"}, "binds 127.0.0.1 only"
        async with asyncio.timeout(GUARD):
            async with http.get("/") as page:
                assert page.status == 200
                assert "EventSource" in await page.text()
            addresses = ["000300001184", "000300001185"]
            async with http.get("api/meters") as meters:
                assert [m["address"] for m in (await meters.json())["meters"]] == addresses
            async with http.get("api/stream") as stream:
                seen: set[str] = set()
                async for event, data in sse(stream):
                    if event == "read":
                        seen.add(json.loads(data)["address"])
                    if seen == set(addresses):
                        break
            async with http.get(f"api/meters/{addresses[0]}/latest") as latest:
                assert (await latest.json())["address"] == addresses[0]
            async with http.get(f"api/meters/{addresses[0]}/reads") as reads:
                assert reads.status == 404  # no --db
            async with http.post(f"api/meters/{addresses[1]}/ct-ratio", json={"ratio": 400}) as denied:
                assert denied.status == 401
            async with http.post(f"api/meters/{addresses[1]}/ct-ratio", json={"ratio": 400}, headers=AUTH) as ok:
                assert ok.status == 200, await ok.text()

            async def ct_ratio() -> Any:
                async with http.get(f"api/meters/{addresses[1]}/latest") as answer:
                    return (await answer.json())["fields"]["CT_Ratio"]

            while await ct_ratio() != 400:  # the next read shows the write
                await asyncio.sleep(0.01)
            async with http.get("metrics") as metrics:
                samples = scrape(await metrics.text())
                assert samples["ekm_reads_total", frozenset({("meter", addresses[0]), ("bus", "bus1")})] > 0
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(GUARD):
            assert await process.wait() == 0


async def test_serve_stops_on_sigterm_while_a_stream_is_open(tmp_path: Path) -> None:
    """A browser with the page open holds /api/stream. SIGTERM should still stop the service promptly;
    it waits for the stream handler, which never ends: aiohttp's 60 s shutdown timeout."""
    async with serving(tmp_path) as (process, url), aiohttp.ClientSession(base_url=url) as http:
        async with asyncio.timeout(GUARD), http.get("api/stream") as stream:
            async for event, _ in sse(stream):
                if event == "read":
                    break
            process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    await process.wait()
            stopped = process.returncode
        assert stopped == 0, f"still serving {time.monotonic() - started:.1f} s after SIGTERM"


def documented_bodies() -> dict[str, dict[str, Any]]:
    """The example body of every setting in docs/settings.md."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "settings.md").read_text()
    return {m[1]: json.loads(m[2]) for m in re.finditer(r"^\| `([a-z-]+)`:.*? \| `(\{.*?\})` \|", text, re.M)}


def test_docs_give_a_body_for_every_setting() -> None:
    assert set(documented_bodies()) == set(WRITES)


@pytest.mark.parametrize("setting", sorted(WRITES))
async def test_the_documented_body_of_every_setting_is_accepted(setting: str) -> None:
    async with rig() as r:
        answer = await r.write(A, setting, documented_bodies()[setting])
        assert answer.status == 200, answer.body
        assert any(m.writes for m in r.sim.meters), "the write reached the meter"
