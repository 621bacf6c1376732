"""Embed ekm-async in async web services: ``create_app(poller, store=..., token=...)`` (aiohttp)."""

from .app import StreamHub, create_app

__all__ = ["StreamHub", "create_app"]
