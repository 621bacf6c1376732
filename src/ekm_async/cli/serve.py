"""``ekm-async serve``: the web service (REST, live stream, guarded writes, metrics, a live page)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from ..poller import Poller
from ..store import SqliteStore
from ..web import create_app
from .buses import add_bus_arguments, check_bus_arguments, interval_of, meters_from_args, usage_error

__all__ = ["add_serve_command"]


def add_serve_command(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="the web service: REST, live stream, writes, metrics, a live page",
        description="Poll the meters and serve them over HTTP; prints one line 'serving URL'.",
    )
    add_bus_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free port)")
    p.add_argument(
        "--token-file",
        dest="token_file",
        metavar="F",
        help="a file holding the bearer token writes need (no token: writes are refused)",
    )
    p.set_defaults(run=_run_serve)


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file is None:
        return None
    try:
        token = Path(args.token_file).read_text().strip()
    except OSError as exc:
        raise usage_error("serve", f"cannot read the token file: {exc}") from None
    if not token:
        raise usage_error("serve", f"the token file {args.token_file} is empty")
    return token


async def _serve(args: argparse.Namespace, token: str | None, out: TextIO) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(SqliteStore(args.db)) if args.db else None
        _, meters = await stack.enter_async_context(meters_from_args(args))
        poller = Poller(meters, interval=interval_of(args), observers=[store] if store else [], drain_timeout=30.0)
        await stack.enter_async_context(poller)
        runner = web.AppRunner(create_app(poller, store=store, token=token), access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else args.port
        writes = "writes need the token" if token else "writes disabled (no --token-file)"
        out.write(f"serving http://{args.host}:{port}/ — {len(meters)} meters, {writes}\n")
        out.flush()
        await stop.wait()
    return 0


def _run_serve(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    check_bus_arguments(args, "serve")
    if not 0 <= args.port <= 65535:
        raise usage_error("serve", "--port must be 0..65535")
    token = _token(args)
    try:
        return asyncio.run(_serve(args, token, out))
    except OSError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
