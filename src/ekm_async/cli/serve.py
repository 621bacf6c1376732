"""``ekm-async serve``: the web service (REST, live stream, guarded writes, metrics, a live page)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TextIO

from aiohttp import web

from .._transport import listen_hint
from ..bus import Bus
from ..config import parse_tokens, read_secret
from ..errors import StoreError
from ..poller import Poller
from ..store import SqliteStore
from ..web import create_app
from .buses import add_bus_arguments, check_bus_arguments, interval_of, open_meters, open_store, usage_error
from .service import CommandError, Output, Stopper, Watch, counted, run_service

__all__ = ["add_serve_command", "serve_until_stopped", "start_web", "web_app"]


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
        help="a file holding the bearer token writes need, or several as NAME TOKEN lines (none: writes refused)",
    )
    p.add_argument("--tls-cert", dest="tls_cert", metavar="F", help="serve HTTPS with this certificate (and --tls-key)")
    p.add_argument("--tls-key", dest="tls_key", metavar="F", help="the certificate's private key")
    p.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name clients may use besides --host, localhost and IP addresses (repeatable)",
    )
    p.add_argument(
        "--max-streams", dest="max_streams", type=int, default=32, metavar="N", help="live-stream clients at once"
    )
    p.set_defaults(run=_run_serve)


def server_context(cert: Any, key: Any) -> ssl.SSLContext:
    """A TLS server context of a certificate and its key (files: call it off the event loop); a bad
    pair is a :class:`CommandError`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(f"cannot use the TLS certificate {cert} with its key {key}: {exc}", 2) from None
    return context


async def start_web(
    stack: contextlib.AsyncExitStack, app: web.Application, host: str, port: int, tls: tuple[Any, Any] | None
) -> str:
    """Serve ``app`` on ``host:port`` until ``stack`` closes — over HTTPS with ``tls``, (certificate,
    key) files, read off the event loop —; the URL it serves at."""
    context = await asyncio.to_thread(server_context, *tls) if tls is not None else None
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, host, port, ssl_context=context)
    try:
        await site.start()
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {listen_hint(exc)}") from None
    bound = runner.addresses[0][1] if runner.addresses else port
    return f"{'https' if context else 'http'}://{host}:{bound}/"


def _token(args: argparse.Namespace) -> dict[str, str]:
    if args.token_file is None:
        return {}
    try:
        return parse_tokens(read_secret(args.token_file))  # before any event loop runs
    except ValueError as exc:
        raise usage_error("serve", f"--token-file: {exc}") from None


def web_app(
    poller: Poller,
    store: SqliteStore | None,
    token: Mapping[str, str],
    *,
    host: str,
    allowed_hosts: Sequence[str],
    max_streams: int,
) -> web.Application:
    """The web service of ``serve`` and ``run``: it answers for the host it listens on too."""
    return create_app(poller, store=store, token=token, allowed_hosts=(host, *allowed_hosts), max_streams=max_streams)


Start = Callable[[contextlib.AsyncExitStack], Awaitable[list[Bus]]]
"""What a service starts on the stack (its buses, poller, web service; its first line on stdout): the
buses to watch."""


async def serve_until_stopped(
    command: str, store: SqliteStore | None, stderr: Output, stoppers: list[Stopper], start: Start
) -> int:
    """``serve``'s and ``run``'s life: the store opened, ``start`` on the stack, then the watch until a
    stop signal; a store that fails is status 1, a stop during the start is no failure."""
    stopper = Stopper(stderr, pending=lambda: store.pending if store is not None else 0)
    stoppers.append(stopper)

    def report(line: str) -> None:
        stderr.write(line + "\n")

    try:
        async with contextlib.AsyncExitStack() as stack:
            if store is not None:
                await open_store(stack, store, command)
            buses = await start(stack)
            stopper.started()
            Watch(report, buses, store).start(stack)
            await stopper.event.wait()
    except StoreError as exc:
        report(f"error: {exc}")
        return 1
    except asyncio.CancelledError as exc:
        if not stopper.took_over(exc):
            raise
    return 0


async def _serve(
    args: argparse.Namespace, token: dict[str, str], stdout: Output, stderr: Output, stoppers: list[Stopper]
) -> int:
    store = SqliteStore(args.db) if args.db else None

    async def start(stack: contextlib.AsyncExitStack) -> list[Bus]:
        bus, meters = await open_meters(stack, args)
        if store is not None:
            bus.add_write_listener(store.record_write)  # the audit trail, in the writes table
        poller = Poller(meters, interval=interval_of(args), observers=[store] if store else [], drain_timeout=5.0)
        await stack.enter_async_context(poller)
        app = web_app(
            poller, store, token, host=args.host, allowed_hosts=args.allowed_hosts, max_streams=args.max_streams
        )
        tls = (args.tls_cert, args.tls_key) if args.tls_cert is not None else None
        url = await start_web(stack, app, args.host, args.port, tls)
        writes = "writes need the token" if token else "writes disabled (no --token-file)"
        stdout.write(f"serving {url} — {counted(len(meters), 'meter')}, {writes}\n")
        return [bus]

    return await serve_until_stopped("serve", store, stderr, stoppers, start)


def _run_serve(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    check_bus_arguments(args, "serve")
    if not 0 <= args.port <= 65535:
        raise usage_error("serve", f"--port must be from 0 to 65535 (0: any free port); got {args.port}")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise usage_error("serve", "give --tls-cert and --tls-key together")
    if args.max_streams < 1:
        raise usage_error("serve", f"--max-streams must be 1 or more; got {args.max_streams}")
    token = _token(args)

    def main(stdout: Output, stderr: Output, stoppers: list[Stopper]) -> Any:
        return _serve(args, token, stdout, stderr, stoppers)

    return run_service(main, out, stored=True)
