"""Hostile input to the web service: every case a clear 4xx (never a 500 or a traceback), nothing sent
to a meter, nothing about the infrastructure (gateway URLs, the database's path) to whoever lacks the
token; the Host allow-list against DNS rebinding; bounded live streams; /reads streamed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ekm_async import Poller, open_bus
from ekm_async.sim import MeterModel, MeterType, SimBus, SimServer
from ekm_async.web import create_app
from ekm_async.web.app import HUB, MAX_LIMIT

from .test_web import AUTH, GUARD, TOKEN, A, Rig, rig, until


async def raw(r: Rig, request: bytes) -> tuple[int, bytes]:
    """``request`` as bytes on a socket of its own (clients refuse to send some of these); status, body."""
    server = r.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        async with asyncio.timeout(GUARD):
            writer.write(request)
            await writer.drain()
            answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def post(path: str, body: bytes, *headers: bytes) -> bytes:
    lines = [b"POST " + path.encode() + b" HTTP/1.1", b"Host: localhost", b"Connection: close", *headers]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


RELAY = f"/api/meters/{A}/relay"
JSON = b"Content-Type: application/json"
BODY = b'{"relay": 1, "state": "close"}'
HOSTILE_REQUESTS: list[tuple[str, bytes, int, str]] = [
    # what, the request, the status, the error code
    (
        "a token of non-ASCII bytes",
        post(RELAY, BODY, JSON, b"Authorization: Bearer \xff\xfe\xc3\x28"),
        401,
        "unauthorized",
    ),
    (
        "a token of Latin-1 text",
        post(RELAY, BODY, JSON, "Authorization: Bearer s3crét".encode("latin-1")),
        401,
        "unauthorized",
    ),
    (
        "Basic instead of Bearer",
        post(RELAY, BODY, JSON, b"Authorization: Basic " + TOKEN.encode()),
        401,
        "unauthorized",
    ),
    ("a bearer without a token", post(RELAY, BODY, JSON, b"Authorization: Bearer"), 401, "unauthorized"),
    (
        "a body nested 100000 deep",
        post(RELAY, b"[" * 100_000 + b"]" * 100_000, JSON, b"Authorization: Bearer " + TOKEN.encode()),
        400,
        "bad-json",
    ),
    (
        "an object nested 9 deep",
        post(RELAY, b'{"relay": ' + b"[" * 9 + b"]" * 9 + b"}", JSON, b"Authorization: Bearer " + TOKEN.encode()),
        400,
        "bad-json",
    ),
    (
        "an unknown charset",
        post(
            RELAY, BODY, b"Content-Type: application/json; charset=klingon", b"Authorization: Bearer " + TOKEN.encode()
        ),
        415,
        "bad-charset",
    ),
    (
        "a body not UTF-8",
        post(RELAY, b'{"state": "\xff"}', JSON, b"Authorization: Bearer " + TOKEN.encode()),
        400,
        "bad-json",
    ),
    ("a JSON array", post(RELAY, b"[1, 2]", JSON, b"Authorization: Bearer " + TOKEN.encode()), 400, "bad-json"),
    ("a JSON string", post(RELAY, b'"close"', JSON, b"Authorization: Bearer " + TOKEN.encode()), 400, "bad-json"),
    (
        "NaN",
        post(RELAY, b'{"relay": NaN, "state": "close"}', JSON, b"Authorization: Bearer " + TOKEN.encode()),
        400,
        "bad-request",
    ),
    (
        "a huge number",
        post(
            RELAY,
            b'{"relay": 1' + b"0" * 5000 + b', "state": "close"}',
            JSON,
            b"Authorization: Bearer " + TOKEN.encode(),
        ),
        400,
        "bad-json",
    ),
]


@pytest.mark.parametrize(("what", "request_", "status", "code"), HOSTILE_REQUESTS, ids=[h[0] for h in HOSTILE_REQUESTS])
async def test_hostile_requests_are_answered_4xx_and_send_nothing(
    what: str, request_: bytes, status: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with rig() as r:
        untouched = r.untouched()
        got, body = await raw(r, request_)
        assert (got, json.loads(body)["error"]) == (status, code), body
        untouched()
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR], "logged as an internal error"


HOSTS = [
    ("evil.example", 400),
    ("evil.example:8080", 400),
    ("ekm.example.org", 200),
    ("EKM.Example.Org:443", 200),
    ("localhost", 200),
    ("localhost:8080", 200),
    ("127.0.0.1:8080", 200),
    ("10.1.2.3", 200),
    ("[::1]:8080", 200),
    ("[::1", 400),
    ("", 400),
]


@pytest.mark.parametrize(("host", "status"), HOSTS)
async def test_only_allowed_host_names_are_answered(host: str, status: int) -> None:
    """A page of another site whose name was made to resolve to this service (DNS rebinding) sends its
    own name as Host: refused. IP addresses and localhost cannot be rebound."""
    async with rig(app_options={"allowed_hosts": ["ekm.example.org"]}) as r:
        request = f"GET /api/meters HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        got, body = await raw(r, request)
        assert got == status, body
        if status == 400:
            assert json.loads(body)["error"] == "host-not-allowed"


async def test_without_a_host_list_any_host_is_answered() -> None:
    """An application mounted in the user's own checks hosts there (``allowed_hosts=None``)."""
    async with rig() as r:
        got, _ = await raw(r, b"GET /api/meters HTTP/1.1\r\nHost: anything.example\r\nConnection: close\r\n\r\n")
        assert got == 200


async def test_live_streams_are_capped() -> None:
    async with rig(app_options={"max_streams": 2}) as r:
        opened = [await r.client.get("/api/stream") for _ in range(2)]
        try:
            assert [s.status for s in opened] == [200, 200]
            await until(lambda: len(r.app[HUB].clients) == 2, "two clients")
            refused = await r.get("/api/stream")
            assert refused.status == 503
            assert refused.error == "too-many-streams"
            assert refused.headers["Retry-After"] == "10"
        finally:
            for stream in opened:
                stream.close()


async def test_nothing_infrastructural_without_the_token(tmp_path: Path) -> None:
    async with rig(db=tmp_path / "secret-place.db") as r:
        await r.poller.start()
        await until(lambda: all(s.ok for s in r.poller.status().values() if s.address != "x"), "reads")
        public = await r.get("/api/meters")
        metrics = await r.get("/metrics")
        inside = await r.get("/api/meters", headers=AUTH)
    text = public.body.decode() + metrics.body.decode()
    for secret in ("memory://web", str(tmp_path), TOKEN):
        assert secret not in text
    assert "secret-place.db" in metrics.body.decode()  # the file's name, not where it is
    assert inside.json()["buses"]["bus1"]["url"] == "memory://web"
    assert inside.json()["store"]["path"] == str(tmp_path / "secret-place.db")


async def test_reads_are_streamed_whole(tmp_path: Path) -> None:
    async with rig(db=tmp_path / "r.db", interval=0) as r:
        await r.poller.start()
        await until(lambda: r.store is not None and r.store.committed >= 240, "240 reads committed", 60)
        await r.poller.aclose()
        async with r.client.get(f"/api/meters/{A}/reads", params={"limit": str(MAX_LIMIT)}) as response:
            assert response.status == 200
            assert response.headers["Transfer-Encoding"] == "chunked"
            body = json.loads(await response.read())
    with contextlib.closing(sqlite3.connect(tmp_path / "r.db")) as db:
        stored = db.execute('SELECT count(*) FROM reads WHERE "Meter_Address" = ?', (A,)).fetchone()[0]
    assert body["address"] == A
    assert len(body["reads"]) == stored >= 80
    times = [read["time"] for read in body["reads"]]
    assert times == sorted(times)


async def test_errors_shown_without_the_token_do_not_say_where_the_gateway_is() -> None:
    """The gateway goes away: the reason (``Connect call failed ('127.0.0.1', PORT)``) names it — as
    ``bus1`` for whoever lacks the token (the meters' last errors and the live stream likewise)."""
    sim = SimBus([MeterModel(A, MeterType.V4)], baud=0, turnaround=0.001)
    async with SimServer(sim) as server:
        host, port = await server.start_tcp()
        url = f"tcp://{host}:{port}"
        options = {
            "timeout_margin": 0.05,
            "baud": 1_000_000,
            "reconnect_delay": 0.02,
            "reconnect_max": 0.05,
            "connect_timeout": 0.5,
        }
        async with open_bus(url, **options) as bus:
            poller = Poller([bus.v4(A)], interval=0.05)
            app = create_app(poller, token=TOKEN)
            async with TestClient(TestServer(app)) as client, poller:
                stream = await client.get("/api/stream")
                await until(lambda: poller.status()[A].ok >= 1, "a read")
                await server.stop_tcp()
                await until(lambda: bus.health().outage and "127.0.0.1" in bus.health().reason, "an outage")
                public = await (await client.get("/api/meters")).text()
                inside = await (await client.get("/api/meters", headers=AUTH)).text()
                events = b""
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        while b"event: error" not in events:
                            events += await stream.content.readany()
                stream.close()
    assert host in inside
    assert str(port) in inside
    for where in (url, f"{host}:{port}", host):
        assert where not in public, where
        assert where.encode() not in events, where
    assert json.loads(public)["buses"]["bus1"]["down_reason"]  # said, without the address
