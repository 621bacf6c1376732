"""Your own aiohttp application with ekm-async's web app mounted in it, under /ekm/, sharing one poller.

    python examples/aiohttp_app.py [URL] [ADDRESS…] [--v3] [--port P] [--token T] [--db FILE] [--run-for S]

``create_app(poller, store=store, token=token)`` is ekm-async's application (the live page, REST, the
SSE stream, guarded writes, /metrics); ``app.add_subapp("/ekm/", …)`` mounts it in yours. It needs the
poller and the store when your app is built, so they are made up front, unopened; the app's
``cleanup_ctx`` opens the bus, the store and the poller when the server starts and closes them, in
reverse, when it stops. Your own handlers reach the same poller through ``request.app[POLLER]``.
Writes (``POST /ekm/api/meters/{address}/{setting}``) need ``Authorization: Bearer TOKEN``; without
``--token`` (or ``EKM_TOKEN``) they are refused. Serves until Ctrl-C, or for ``--run-for`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator

from aiohttp import web

from _common import DEFAULT_ADDRESS, example_bus, run
from ekm_async import Poller, SqliteStore
from ekm_async.web import create_app

POLLER = web.AppKey("poller", Poller)
STORE = web.AppKey("store", SqliteStore)


async def home(request: web.Request) -> web.Response:
    """A route of your own, using the shared poller."""
    polled = len(request.app[POLLER].status())
    return web.Response(text=f"my app: {polled} meters are polled; see /ekm/\n")


def make_app(args: argparse.Namespace) -> web.Application:
    """Your application: ``args`` has the bus's ``url`` (None: a simulator), the meters' ``addresses``,
    ``v3``, the ``interval`` between reads, the store's ``db`` and the write ``token`` (or None)."""
    poller = Poller(interval=args.interval)
    store = SqliteStore(args.db)
    poller.add_observer(store)  # every read is stored

    async def ekm(app: web.Application) -> AsyncIterator[None]:
        async with example_bus(args) as bus, store:
            for address in args.addresses:
                poller.add(bus.v3(address) if args.v3 else bus.v4(address))
            async with poller:  # closed first: the store then commits its last reads, then the bus closes
                yield

    # normalize_path_middleware: /ekm redirects to /ekm/ (the page's links are relative to it).
    app = web.Application(middlewares=[web.normalize_path_middleware()])
    app[POLLER], app[STORE] = poller, store
    app.cleanup_ctx.append(ekm)
    app.router.add_get("/", home)
    app.add_subapp("/ekm/", create_app(poller, store=store, token=args.token))
    return app


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", nargs="?", help="/dev/ttyUSB0, COM3, tcp://HOST:PORT … (default: a simulator)")
    parser.add_argument("addresses", nargs="*", metavar="ADDRESS", help="12 digits (default: 3 simulated meters)")
    parser.add_argument("--v3", action="store_true", help="V3 meters (default V4)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port (default 8080)")
    parser.add_argument("--token", default=os.environ.get("EKM_TOKEN"), help="allow writes with this bearer token")
    parser.add_argument("--db", default=":memory:", help="keep the reads in this SQLite file (default: in memory)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between reads of a meter")
    parser.add_argument("--run-for", type=float, metavar="SECONDS", help="stop after this long (default: Ctrl-C)")
    args = parser.parse_args()
    args.addresses = args.addresses or [f"{int(DEFAULT_ADDRESS) + n:012d}" for n in range(3)]
    return args


async def main(args: argparse.Namespace) -> None:
    app = make_app(args)
    runner = web.AppRunner(app)
    await runner.setup()  # runs the cleanup_ctx: the bus, store and poller are open from here on
    try:
        await web.TCPSite(runner, args.host, args.port).start()
        host, port = runner.addresses[0][:2]
        print(f"serving http://{host}:{port}/ (ekm-async at http://{host}:{port}/ekm/)", flush=True)
        print(f"writes: {'Authorization: Bearer …' if args.token else 'refused (no --token)'}", flush=True)
        if args.run_for is None:
            await asyncio.Event().wait()  # until Ctrl-C
        else:
            await asyncio.sleep(args.run_for)
    finally:
        await runner.cleanup()  # the poller, the store and the bus close
    reads, stored = sum(status.ok for status in app[POLLER].status().values()), app[STORE].committed
    print(f"stopped after {args.run_for} s: {reads} reads of {len(args.addresses)} meters, {stored} stored")


if __name__ == "__main__":
    run(main, arguments())
