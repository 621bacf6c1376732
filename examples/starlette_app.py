"""A Starlette app whose lifespan opens the bus, a store and one poller, and whose endpoints use them.

    pip install starlette uvicorn
    python examples/starlette_app.py [URL] [ADDRESS…] [--port P] [--db FILE] [--run-for SECONDS]
    EKM_URL=/dev/ttyUSB0 EKM_ADDRESSES="000300001184 …" python -m uvicorn --app-dir examples starlette_app:app

    GET  /meters                     {address: {"kWh": …, "W": …}}: each meter's newest read (poller.status())
    GET  /meters/{address}/history   its stored reads, oldest first (?since=EPOCH_SECONDS&limit=N)
    POST /meters/{address}/relay     {"relay": 1, "state": "close", "seconds": 0} (errors: 400, 404, 409, 503, 504)
    GET  /events                     server-sent events: every read, from an observer of the poller

V4 meters; no URL: a simulated bus. The lifespan yields ``{"ekm": Ekm(…)}``, which Starlette hands to
every request as ``request.state.ekm``. The relay endpoint has no authentication here: add your own
before it listens anywhere but localhost. FastAPI takes the same lifespan and state:

    from fastapi import FastAPI, Request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Ekm]]:
        async with open_ekm(url, addresses) as ekm:
            yield {"ekm": ekm}

    app = FastAPI(lifespan=lifespan)

    @app.get("/meters")
    async def meters(request: Request) -> dict[str, dict[str, Value | None]]:
        return newest(request.state.ekm.poller)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from _common import DEFAULT_ADDRESS, example_bus, run
from ekm_async import BaseObserver, MeterUnavailable, Poller, Read, Refused, ReplyTimeout, SqliteStore, V4Meter
from ekm_async.calculated import Value

DEFAULT_ADDRESSES = [f"{int(DEFAULT_ADDRESS) + n:012d}" for n in range(3)]


class Broadcast(BaseObserver):
    """Every read to every subscriber: a bounded queue each (a slow client loses its oldest reads).
    ``None`` ends a subscriber's stream."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[Read | None]] = set()

    async def on_read(self, read: Read) -> None:
        self._put(read)

    def close(self) -> None:
        """End every stream (the server is stopping: else it waits for them)."""
        self._put(None)

    def _put(self, item: Read | None) -> None:
        for queue in self.queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(item)


@dataclass
class Ekm:
    """What the lifespan opened, for the endpoints."""

    poller: Poller
    store: SqliteStore
    broadcast: Broadcast


@asynccontextmanager
async def open_ekm(
    url: str | None,
    addresses: Sequence[str],
    *,
    db: str = ":memory:",
    interval: float = 5.0,
    broadcast: Broadcast | None = None,
) -> AsyncIterator[Ekm]:
    """The bus at ``url`` (None: a simulator), a store in ``db`` and one poller of ``addresses``, open."""
    bus_args = argparse.Namespace(url=url, addresses=list(addresses), v3=False)
    broadcast = broadcast or Broadcast()
    async with example_bus(bus_args) as bus, SqliteStore(db) as store:
        meters = [bus.v4(address) for address in addresses]
        async with Poller(meters, interval=interval, observers=[store, broadcast]) as poller:
            yield Ekm(poller, store, broadcast)


def make_app(
    url: str | None = None,
    addresses: Sequence[str] = (),
    *,
    db: str = ":memory:",
    interval: float = 5.0,
    broadcast: Broadcast | None = None,
) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Ekm]]:
        async with open_ekm(url, addresses or DEFAULT_ADDRESSES, db=db, interval=interval, broadcast=broadcast) as ekm:
            yield {"ekm": ekm}

    routes = [
        Route("/meters", meters),
        Route("/meters/{address}/history", history),
        Route("/meters/{address}/relay", relay, methods=["POST"]),
        Route("/events", events),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: as_json})


async def as_json(request: Request, exc: Exception) -> JSONResponse:
    """Errors as ``{"error": message}``, with their status."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)


# ---------------------------------------------------------------------------------------------------
# Endpoints


def ekm_of(request: Request) -> Ekm:
    ekm: Ekm = request.state.ekm
    return ekm


def polled(request: Request) -> tuple[Ekm, str]:
    """The request's state and its ``{address}``, a polled meter's (else 404)."""
    ekm, address = ekm_of(request), request.path_params["address"]
    if address not in ekm.poller.status():
        raise HTTPException(404, f"no meter {address} is polled here")
    return ekm, address


def summary(fields: Mapping[str, Value]) -> dict[str, Value | None]:
    return {"kWh": fields.get("kWh_Tot"), "W": fields.get("RMS_Watts_Tot")}


def newest(poller: Poller) -> dict[str, dict[str, Value | None]]:
    """Each polled meter's newest read (None values before its first)."""
    return {address: summary(s.last_read.fields if s.last_read else {}) for address, s in poller.status().items()}


async def meters(request: Request) -> JSONResponse:
    return JSONResponse(newest(ekm_of(request).poller))


async def history(request: Request) -> JSONResponse:
    ekm, address = polled(request)
    try:
        since = float(request.query_params.get("since", 0))
        limit = int(request.query_params.get("limit", 100))
    except ValueError:
        raise HTTPException(400, "since is epoch seconds, limit an integer") from None
    found = ekm.store.reads_since(address, since, limit=max(1, min(limit, 10_000)))
    return JSONResponse(
        [{"time": row["time_utc"], "kWh": row["kWh_Tot"], "W": row["RMS_Watts_Tot"]} async for row in found]
    )


async def relay(request: Request) -> JSONResponse:
    ekm, address = polled(request)
    meter = ekm.poller.meter(address)
    if not isinstance(meter, V4Meter):
        raise HTTPException(400, f"meter {address} is a V3: it has no relays")
    try:
        body = await request.json()
        which, state, seconds = body["relay"], body["state"], body.get("seconds", 0)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise HTTPException(400, 'the body is {"relay": 1 or 2, "state": "open" or "close", "seconds": 0}') from None
    try:
        await meter.set_relay(which, state, seconds)
    except ValueError as exc:  # a relay, state or seconds out of range: nothing was sent
        raise HTTPException(400, str(exc)) from exc
    except Refused as exc:  # the meter did not acknowledge (its password?)
        raise HTTPException(409, str(exc)) from exc
    except MeterUnavailable as exc:  # backed off after failing to answer
        raise HTTPException(503, str(exc)) from exc
    except ReplyTimeout as exc:
        raise HTTPException(504, str(exc)) from exc
    return JSONResponse({"ok": True})


async def events(request: Request) -> StreamingResponse:
    broadcast = ekm_of(request).broadcast

    async def stream() -> AsyncIterator[str]:
        queue: asyncio.Queue[Read | None] = asyncio.Queue(100)
        broadcast.queues.add(queue)
        try:
            while (read := await queue.get()) is not None:
                yield f"event: read\ndata: {json.dumps({'address': read.address, **summary(read.fields)})}\n\n"
        finally:
            broadcast.queues.discard(queue)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


app = make_app(
    os.environ.get("EKM_URL"), os.environ.get("EKM_ADDRESSES", "").split(), db=os.environ.get("EKM_DB", ":memory:")
)
"""For ``uvicorn starlette_app:app``: configured by EKM_URL, EKM_ADDRESSES (space-separated), EKM_DB."""


# ---------------------------------------------------------------------------------------------------
# python examples/starlette_app.py: serve with uvicorn


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", nargs="?", help="/dev/ttyUSB0, COM3, tcp://HOST:PORT … (default: a simulator)")
    parser.add_argument("addresses", nargs="*", metavar="ADDRESS", help="12 digits (default: 3 simulated meters)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port (default 8000)")
    parser.add_argument("--db", default=":memory:", help="keep the reads in this SQLite file (default: in memory)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between reads of a meter")
    parser.add_argument("--run-for", type=float, metavar="SECONDS", help="stop after this long (default: Ctrl-C)")
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    try:
        import uvicorn  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415 — only to serve
    except ImportError:
        sys.exit("error: serving needs uvicorn: pip install uvicorn")
    broadcast = Broadcast()
    web_app = make_app(args.url, args.addresses, db=args.db, interval=args.interval, broadcast=broadcast)
    config = uvicorn.Config(web_app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    if server.started:
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        print(f"serving http://{host}:{port}/meters", flush=True)
        stop = asyncio.get_running_loop().time() + (args.run_for if args.run_for is not None else float("inf"))
        while not server.should_exit:  # set by Ctrl-C, or by us
            await asyncio.sleep(0.1)
            server.should_exit |= asyncio.get_running_loop().time() >= stop
        broadcast.close()  # uvicorn waits for open /events streams to end before the lifespan's shutdown
    await serving
    if args.run_for is not None:
        print(f"stopped after {args.run_for} s")


if __name__ == "__main__":
    run(main, arguments())
