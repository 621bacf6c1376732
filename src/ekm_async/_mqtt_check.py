"""What an MQTT URL and topic prefix must look like (checked without aiomqtt: the config needs it too)."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

__all__ = ["DEFAULT_PORTS", "check_prefix", "check_url"]

DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883}
"""The broker's port when the URL gives none: MQTT's registered ports (IANA: 1883, and 8883 over TLS)."""
_SHAPE = "mqtt://[user:password@]host[:port] or mqtts://…"


def check_url(url: str) -> SplitResult:
    """``mqtt://[user:password@]host[:port]`` or ``mqtts://…`` (TLS), else ``ValueError``. The message
    never repeats the URL's password."""
    parts = urlsplit(url)
    shown = _without_password(parts)
    try:
        parts.port  # noqa: B018 — a bad port raises here
    except ValueError:
        raise ValueError(f"url must be {_SHAPE}; got {shown!r}") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.port == 0:
        raise ValueError(f"url must be {_SHAPE}; got {shown!r}")
    return parts


def _without_password(parts: SplitResult) -> str:
    if parts.password is None:
        return parts.geturl()
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def check_prefix(prefix: str, what: str = "prefix") -> str:
    """A topic prefix of one or more plain levels (``ekm``, ``site/ekm``), else ``ValueError``."""
    levels = prefix.strip("/").split("/")
    if not all(levels) or any(c in prefix for c in "#+\0"):
        raise ValueError(f"{what} must be one or more topic levels without wildcards; got {prefix!r}")
    return "/".join(levels)
