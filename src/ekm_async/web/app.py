"""The aiohttp application: REST, a live stream, guarded writes, Prometheus metrics and a live page.

``create_app(poller, store=..., token=...)`` makes an application a user can run or mount in their own
(``parent.add_subapp("/ekm/", create_app(poller))``: with the trailing slash, as the page's links are
relative); it shares the caller's poller (and store).
Writes need ``Authorization: Bearer TOKEN``; with no token configured every write is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..blocks import Read
from ..catalogue import SETTINGS, Effect, json_object
from ..errors import (
    BusClosed,
    ConnectionLost,
    EkmError,
    FrameError,
    MeterUnavailable,
    Refused,
    ReplyTimeout,
    UnexpectedReply,
)
from ..meters import V3Meter, V4Meter
from ..poller import BaseObserver, Poller
from ..store import SqliteStore
from .metrics import bus_names, bus_of, public_text, registry_for

__all__ = ["StreamHub", "create_app"]

MAX_LIMIT = 10_000
log = logging.getLogger("ekm_async.web")


@dataclass(frozen=True, slots=True)
class WebOptions:
    allowed_hosts: frozenset[str] | None = None
    """Host header names answered (besides IP addresses and localhost); None: any (embedded apps)."""
    max_streams: int = 32
    """Live-stream clients at once; one more is answered 503."""
    write_timeout: float = 30.0
    """Seconds a write may take in all (waiting for the bus included) before it is answered 504."""
    keepalive: float = 15.0
    """Seconds between SSE comments that keep idle connections open."""


class ApiError(Exception):
    """An error answered as JSON ``{"error": code, "message": …}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _error(status: int, code: str, message: str, **headers: str) -> ApiError:
    return ApiError(status, code, message, **headers)


# Exceptions of a meter call → (HTTP status, error code). 4xx: the request; 5xx: the bus or the meter.
_FAILURES: tuple[tuple[type[BaseException], int, str], ...] = (
    (ValueError, 400, "bad-request"),
    (Refused, 409, "refused"),
    (MeterUnavailable, 503, "meter-unavailable"),
    (BusClosed, 503, "bus-closed"),
    (ConnectionLost, 503, "bus-lost"),
    (ReplyTimeout, 504, "meter-timeout"),
    (FrameError, 504, "bad-reply"),
    (UnexpectedReply, 504, "bad-reply"),
    (TimeoutError, 504, "timeout"),
)


def _read_json(read: Read) -> dict[str, Any]:
    return {
        "address": read.address,
        "time": read.time.isoformat() if read.time else None,
        "meter_time": read.meter_datetime.isoformat() if read.meter_datetime else None,
        "fields": dict(read.fields),
    }


class StreamHub(BaseObserver):
    """The poller's observer behind ``/api/stream``: every client has a bounded queue (oldest dropped)."""

    def __init__(self, size: int = 256, poller: Poller | None = None) -> None:
        """``poller``: the one whose buses an error must not show the whereabouts of."""
        self.poller = poller
        self.clients: set[asyncio.Queue[str | None]] = set()
        self.size = size
        self.dropped = 0
        self._writing: dict[asyncio.Queue[str | None], asyncio.Transport] = {}
        """The clients whose stream is being written to now, with their connection."""

    def subscribe(self) -> asyncio.Queue[str | None]:
        queue: asyncio.Queue[str | None] = asyncio.Queue(self.size)
        self.clients.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str | None]) -> None:
        self.clients.discard(queue)
        self._writing.pop(queue, None)

    @contextlib.contextmanager
    def writing(self, queue: asyncio.Queue[str | None], transport: asyncio.Transport | None) -> Iterator[None]:
        """While a message is written to the client of ``queue`` (a stalled client stays in here)."""
        if transport is not None:
            self._writing[queue] = transport
        try:
            yield
        finally:
            self._writing.pop(queue, None)

    def end(self) -> None:
        """Every stream ends (the service is shutting down): each is told, and a client that is not
        taking what was written to it is cut off, so that no stream holds up the shutdown."""
        for queue in self.clients:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)
        for transport in list(self._writing.values()):
            transport.abort()

    def _send(self, event: str, data: dict[str, Any]) -> None:
        message = f"event: {event}\ndata: {json.dumps(data)}\n\n"
        for queue in self.clients:
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(message)

    async def on_read(self, read: Read) -> None:
        self._send("read", _read_json(read))

    async def on_error(self, meter: str, error: Exception) -> None:
        said = str(error) if self.poller is None else public_text(self.poller, str(error))  # streams are public
        self._send("error", {"address": meter, "error": said, "time": datetime.now(UTC).isoformat()})


POLLER = web.AppKey("poller", Poller)
STORE: web.AppKey[SqliteStore | None] = web.AppKey("store")
TOKENS: web.AppKey[dict[str, bytes]] = web.AppKey("tokens")
HUB = web.AppKey("hub", StreamHub)
OPTIONS = web.AppKey("options", WebOptions)
METRICS = web.AppKey("metrics", CollectorRegistry)

# ---------------------------------------------------------------------------------------------------
# Handlers


def _meter_address(request: web.Request) -> str:
    address = request.match_info["address"]
    if address not in request.app[POLLER].status():
        raise _error(404, "unknown-meter", f"no meter {address} is polled here")
    return address


async def index(request: web.Request) -> web.Response:
    return web.Response(body=PAGE, content_type="text/html", charset="utf-8")


async def meters(request: web.Request) -> web.Response:
    poller = request.app[POLLER]
    names = bus_names(poller)
    insider = _token_given(request)  # where the gateways and the database are: for the token's holder only
    out = []
    for address, status in poller.status().items():
        meter = poller.meter(address)
        bus = bus_of(meter)
        wire = bus.meter_stats.get(address)
        out.append(
            {
                "address": address,
                "kind": "v4" if isinstance(meter, V4Meter) else "v3",
                "bus": names[id(bus)],
                "interval": status.interval,
                "ok": status.ok,
                "errors": status.errors,
                "last_error": status.last_error if insider else public_text(poller, status.last_error),
                "last_read": status.last_read.time.isoformat() if status.last_read and status.last_read.time else None,
                "latency": wire.last_latency if wire else None,
                "available": bus.available(address),
                "backoff_seconds": _backoff_left(wire.backed_off_until) if wire else None,
            }
        )
    buses = {}
    for meter in poller.meters():
        bus = bus_of(meter)
        stats = bus.stats
        health = bus.health()
        buses[names[id(bus)]] = {
            **({"url": bus.url} if insider else {}),
            "connected": bus.connected,
            "outage": health.outage,
            "down_since": health.down_since.isoformat() if health.down_since else None,
            "down_seconds": round(health.down_seconds, 1),
            "down_reason": health.reason if insider else public_text(poller, health.reason),
            "frames_ok": stats.frames_ok,
            "rejected": dict(stats.rejected),
            "anomalies": dict(stats.anomalies),
            "timeouts": stats.timeouts,
            "retries": stats.retries,
            "reconnects": stats.reconnects,
            "transactions": stats.transactions,
        }
    body: dict[str, Any] = {"meters": out, "buses": buses}
    store = request.app[STORE]
    if store is not None:
        body["store"] = {
            **({"path": str(store.path)} if insider else {}),
            "committed": store.committed,
            "pending": store.pending,
            "lost": store.lost,
            "commit_error": store.commit_error,
        }
    return web.json_response(body)


async def latest(request: web.Request) -> web.Response:
    address = _meter_address(request)
    read = request.app[POLLER].status()[address].last_read
    if read is not None:
        return web.json_response(_read_json(read))
    store = request.app[STORE]
    if store is not None:
        row = (await store.latest()).get(address)
        if row is not None:
            return web.json_response(_row_json(row))
    raise _error(404, "no-read", f"meter {address} has not been read yet")


def _backoff_left(until: float) -> float | None:
    """Seconds a meter stays backed off (None if it is not)."""
    left = until - asyncio.get_running_loop().time()
    return round(left, 1) if left > 0 else None


def _row_json(row: dict[str, Any]) -> dict[str, Any]:
    meta = ("id", "time_utc", "kind", "raw_a", "raw_b")
    return {
        "address": row["Meter_Address"],
        "time": datetime.fromtimestamp(row["time_utc"], UTC).isoformat(),
        "kind": row["kind"],
        "raw_a": row["raw_a"].hex(),
        "raw_b": row["raw_b"].hex() if row["raw_b"] else None,
        "fields": {k: v for k, v in row.items() if k not in meta and v is not None},
    }


_SINCE_FORMS = "a time with its zone, like 2026-01-31T14:30:00Z, or epoch seconds, like 1769869800"
"""What ``since`` takes, in forms that survive a URL as typed (a ``+`` in a query string is a space)."""
_OFFSET = re.compile(r"\d\d(:?\d\d(:?\d\d(\.\d+)?)?)?")
"""A zone offset after its sign: ``05``, ``05:30``, ``0530``…"""


def _since(text: str | None) -> float:
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise _error(400, "bad-request", f"since must be {_SINCE_FORMS}; got {text!r}")
        return value
    when = _aware(text)
    if when is None:
        raise _error(400, "bad-request", _since_problem(text))
    return when.timestamp()


def _aware(text: str) -> datetime | None:
    """The time ``text`` gives with its zone, None if it gives none. A ``+`` of a zone offset typed into
    a URL arrives as a space (``…T08:00:00 00:00``): when that space is all that is wrong, it is taken."""
    for candidate in (text, _plus(text)):
        if candidate is None:
            continue
        try:
            when = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        if when.tzinfo is not None:
            return when
    return None


def _plus(text: str) -> str | None:
    """``text`` with the space before a trailing zone offset made the ``+`` it was (None if there is none)."""
    head, space, offset = text.rpartition(" ")
    return f"{head}+{offset}" if space and head and _OFFSET.fullmatch(offset) else None


def _since_problem(text: str) -> str:
    """Why ``text`` is not a ``since``, and what to write instead, in one line."""
    try:
        naive = datetime.fromisoformat(text)
    except ValueError:
        if " " in text:
            return (
                f"since must be {_SINCE_FORMS}; got {text!r} (a + in a URL arrives as a space: "
                "write it %2B, or give the time in UTC with Z)"
            )
        return f"since must be {_SINCE_FORMS}; got {text!r}"
    return (
        f"since needs a time zone: add Z for UTC, like {naive.isoformat()}Z (an offset's + is written %2B in "
        f"a URL), or give epoch seconds; got {text!r}"
    )


async def reads(request: web.Request) -> web.StreamResponse:
    address = _meter_address(request)
    store = request.app[STORE]
    if store is None:
        raise _error(404, "no-store", "this service keeps no database (start it with --db)")
    since = _since(request.query.get("since"))
    text = request.query.get("limit", "100")
    if not (text.isascii() and text.isdigit() and len(text) <= 6 and 1 <= int(text) <= MAX_LIMIT):
        raise _error(400, "bad-request", f"limit must be a whole number from 1 to {MAX_LIMIT}; got {text!r}")
    limit = int(text)
    # Streamed: at most a chunk of the store's rows and a batch of JSON in memory, however many are asked
    # for (a list of 10,000 reads made at once took ~110 MB).
    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    async with contextlib.aclosing(store.reads_since(address, since, limit=limit)) as found:
        row = await anext(found, None)  # a database that fails here is answered 503, before anything is sent
        await response.prepare(request)
        await response.write(f'{{"address": {json.dumps(address)}, "reads": ['.encode())
        batch: list[str] = []
        first = True
        try:
            while row is not None:
                batch.append(json.dumps(_row_json(row)))
                row = await anext(found, None)
                if len(batch) == _BATCH or row is None:
                    await response.write((("" if first else ", ") + ", ".join(batch)).encode())
                    batch, first = [], False
        except sqlite3.Error as exc:  # the answer has begun: cut it short, so no client takes it for whole
            log.warning("GET %s: the database failed while answering: %s", request.path, exc)
            if request.transport is not None:
                request.transport.abort()
            return response
    await response.write(b"]}")
    await response.write_eof()
    return response


_BATCH = 100
"""Reads written to a /reads response at a time."""


async def stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    most = request.app[OPTIONS].max_streams
    if len(hub.clients) >= most:
        raise _error(503, "too-many-streams", f"{most} live streams are open already", **{"Retry-After": "10"})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    queue = hub.subscribe()
    try:
        await response.write(b"retry: 2000\n\n")
        while True:
            try:
                async with asyncio.timeout(request.app[OPTIONS].keepalive):
                    message = await queue.get()
            except TimeoutError:
                message = ": keepalive\n\n"
            if message is None:
                break  # shutting down
            with hub.writing(queue, request.transport):
                await response.write(message.encode())
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        hub.unsubscribe(queue)
    return response


def _token_name(request: web.Request) -> str | None:
    """The name of the configured token the request carries, if it carries one."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    given = value.strip().encode("utf-8", "surrogateescape")  # whatever bytes a client sent: compared, never decoded
    found = None
    for name, token in request.app[TOKENS].items():  # every one compared: the time tells nothing of which
        if hmac.compare_digest(given, token) and scheme.lower() == "bearer":
            found = name
    return found


def _token_given(request: web.Request) -> bool:
    return _token_name(request) is not None


def _authorized(request: web.Request) -> str:
    """The name of the request's token; 403 when no token is configured, 401 without a good one."""
    if not request.app[TOKENS]:
        raise _error(403, "writes-disabled", "writes are disabled: no token is configured")
    name = _token_name(request)
    if name is None:
        raise _error(401, "unauthorized", "writes need Authorization: Bearer TOKEN", **{"WWW-Authenticate": "Bearer"})
    return name


async def write(request: web.Request) -> web.Response:
    """``POST /api/meters/{address}/{setting}``: the JSON body holds the setting's arguments by name
    (:data:`ekm_async.catalogue.SETTINGS`) and may carry ``password``, the meter's (default: the handle's)."""
    who = _authorized(request)
    address = _meter_address(request)
    name = request.match_info["setting"]
    spec = SETTINGS.get(name)
    if spec is None:
        raise _error(404, "unknown-setting", f"no setting {name!r}; settings: {', '.join(SETTINGS)}")
    meter = request.app[POLLER].meter(address)
    if not isinstance(meter, V3Meter | V4Meter):
        raise TypeError(f"meter {address} has no settings: {meter!r}")
    if spec.v4_only and not isinstance(meter, V4Meter):
        raise _error(400, "v4-only", f"{name} is a V4 setting; meter {address} is a V3")
    body = await _body(request)
    password = body.pop("password", None)
    try:
        arguments = spec.from_json(body)
        async with asyncio.timeout(request.app[OPTIONS].write_timeout):
            actor = f"web {who} from {request.remote or 'unknown'}"
            await meter.apply(spec, password=password, actor=actor, **arguments)
    except Exception as exc:
        for kind, status, code in _FAILURES:
            if isinstance(exc, kind):
                headers = {}
                if isinstance(exc, MeterUnavailable):
                    retry = max(1, round(exc.until - asyncio.get_running_loop().time()))
                    headers["Retry-After"] = str(retry)
                said = _failure(exc, address, request.app[OPTIONS].write_timeout)
                raise _error(status, code, said, **headers) from exc
        raise
    answer: dict[str, Any] = {"ok": True, "address": meter.address, "setting": name}
    if spec.effect is Effect.PASSWORD:
        answer["note"] = "the meter has a new password, held by this service only: update its configuration"
    return web.json_response(answer)


def _failure(exc: BaseException, address: str, timeout: float) -> str:
    """A failed write in words: without the bytes a meter sent (``brief``), never an exception's name."""
    if isinstance(exc, EkmError):
        return exc.brief
    if isinstance(exc, TimeoutError):
        return f"the write to meter {address} did not finish within {timeout:g} s (the bus may be busy): try again"
    return str(exc) or f"the write to meter {address} failed"


_SEND_BODY = "send a JSON object of the setting's arguments by name, in UTF-8"


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    try:
        body = await request.json(loads=json_object)
    except LookupError:
        raise _error(415, "bad-charset", f"unknown charset {request.charset!r}: send UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        said = f"the body is not JSON ({exc.msg.lower()} at character {exc.pos + 1}): {_SEND_BODY}"
        raise _error(400, "bad-json", said) from None
    except UnicodeDecodeError:
        raise _error(400, "bad-json", f"the body is not UTF-8 text: {_SEND_BODY}") from None
    except ValueError as exc:
        raise _error(400, "bad-json", f"the body must be a JSON object: {exc}") from None
    assert isinstance(body, dict)
    return body


async def metrics(request: web.Request) -> web.Response:
    data = generate_latest(request.app[METRICS])
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


PAGE = files(__package__).joinpath("static/index.html").read_bytes()


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error as JSON with its status: ours, and aiohttp's own 404 and 405."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _json_error(exc.status, exc.code, exc.message, exc.headers)
    except sqlite3.Error as exc:  # the database failed (a full disk, a file that went away): not a bug here
        log.warning("%s %s: the database failed: %s", request.method, request.path, exc)
        return _json_error(503, "store-unavailable", f"the database cannot be read now: {exc}", {"Retry-After": "5"})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return _json_error(exc.status, exc.reason.lower().replace(" ", "-"), exc.reason, kept)
    except Exception:  # a bug: logged with its traceback, answered as JSON
        log.exception("%s %s failed", request.method, request.path)
        return _json_error(500, "internal", "internal error (logged by the service)", {})


@web.middleware
async def _host_check(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A request for a host name not allowed is answered 400 (DNS rebinding: a page of another site
    that made its name resolve to this service's address)."""
    allowed = request.app[OPTIONS].allowed_hosts
    if allowed is not None and not _host_ok(request.host, allowed):
        raise _error(400, "host-not-allowed", "this service does not answer for that host name")
    return await handler(request)


def _host_ok(header: str, allowed: frozenset[str]) -> bool:
    host = header.lower()
    if host.startswith("["):  # [IPv6]:port
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host in allowed or host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _json_error(status: int, code: str, message: str, headers: dict[str, str]) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


def create_app(
    poller: Poller,
    *,
    store: SqliteStore | None = None,
    token: str | Mapping[str, str] | None = None,
    write_timeout: float = 30.0,
    allowed_hosts: Iterable[str] | None = None,
    max_streams: int = 32,
) -> web.Application:
    """The application for ``poller`` (its meters, reads and counters), reads from ``store`` if given;
    writes need ``Authorization: Bearer {token}`` (none configured: writes refused). ``token``: one, or
    several by name (the audit trail says which one a write came with).

    ``allowed_hosts``: the host names a request's ``Host`` header may carry — besides ``localhost`` and
    any IP address, which no DNS rebinding can forge — else it is answered 400 (None: any host, for an
    application mounted in one that checks hosts itself). ``max_streams``: live-stream clients at once.
    """
    if max_streams < 1:
        raise ValueError(f"max_streams must be ≥ 1; got {max_streams}")
    hosts = None if allowed_hosts is None else frozenset(h.lower().strip("[]") for h in allowed_hosts)
    app = web.Application(middlewares=[_json_errors, _host_check])
    hub = StreamHub(poller=poller)

    async def end_streams(_: web.Application) -> None:
        hub.end()

    app.on_shutdown.append(end_streams)
    poller.add_observer(hub)
    app[POLLER] = poller
    app[STORE] = store
    tokens = {"token": token} if isinstance(token, str) else dict(token or {})
    app[TOKENS] = {name: value.encode() for name, value in tokens.items() if value}
    app[HUB] = hub
    app[OPTIONS] = WebOptions(allowed_hosts=hosts, max_streams=max_streams, write_timeout=write_timeout)
    app[METRICS] = registry_for(poller, store)
    app.router.add_get("/", index)
    app.router.add_get("/api/meters", meters)
    app.router.add_get("/api/meters/{address}/latest", latest)
    app.router.add_get("/api/meters/{address}/reads", reads)
    app.router.add_get("/api/stream", stream)
    app.router.add_post("/api/meters/{address}/{setting}", write)
    app.router.add_get("/metrics", metrics)
    return app
