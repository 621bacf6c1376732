"""Embed ekm-async in async web services: ``create_app(poller, store=..., token=...)`` (aiohttp)."""

from .app import WRITES, StreamHub, create_app

__all__ = ["WRITES", "StreamHub", "create_app"]
