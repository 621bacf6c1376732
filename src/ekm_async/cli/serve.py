"""``ekm-async serve``: the web service (REST, live stream, guarded writes, metrics, a live page)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from ..errors import StoreError
from ..poller import Poller
from ..store import SqliteStore
from ..web import create_app
from .buses import add_bus_arguments, check_bus_arguments, interval_of, open_meters, open_store, usage_error
from .service import CommandError, Output, Stopper, Watch, run_service

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


async def _serve(
    args: argparse.Namespace, token: str | None, stdout: Output, stderr: Output, stoppers: list[Stopper]
) -> int:
    store = SqliteStore(args.db) if args.db else None
    stopper = Stopper(stderr, pending=lambda: store.pending if store is not None else 0)
    stoppers.append(stopper)

    def report(line: str) -> None:
        stderr.write(line + "\n")

    try:
        async with contextlib.AsyncExitStack() as stack:
            if store is not None:
                await open_store(stack, store, "serve")
            bus, meters = await open_meters(stack, args)
            poller = Poller(meters, interval=interval_of(args), observers=[store] if store else [], drain_timeout=5.0)
            await stack.enter_async_context(poller)
            runner = web.AppRunner(create_app(poller, store=store, token=token), access_log=None, shutdown_timeout=2.0)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, args.host, args.port)
            try:
                await site.start()
            except OSError as exc:
                raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
            port = runner.addresses[0][1] if runner.addresses else args.port
            writes = "writes need the token" if token else "writes disabled (no --token-file)"
            stdout.write(f"serving http://{args.host}:{port}/ — {len(meters)} meters, {writes}\n")
            stopper.started()
            watch = asyncio.get_running_loop().create_task(Watch(report, [bus], store).run())
            stack.callback(watch.cancel)
            await stopper.event.wait()
    except StoreError as exc:
        report(f"error: {exc}")
        return 1
    except asyncio.CancelledError as exc:
        if not stopper.took_over(exc):
            raise
    return 0


def _run_serve(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    check_bus_arguments(args, "serve")
    if not 0 <= args.port <= 65535:
        raise usage_error("serve", "--port must be 0..65535")
    token = _token(args)

    def main(stdout: Output, stderr: Output, stoppers: list[Stopper]) -> Any:
        return _serve(args, token, stdout, stderr, stoppers)

    return run_service(main, out, stored=True)
