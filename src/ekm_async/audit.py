"""The audit trail of writes: every write a meter handle is asked for — through the web service, MQTT,
the command line or a user's own code — becomes one :class:`WriteRecord`: when, which meter, which
setting with which arguments (secrets replaced), who asked, and how it ended.

Each record is logged on the ``ekm_async.audit`` logger (at INFO, whatever the outcome) and
handed to the listeners of the meter's bus (:meth:`ekm_async.Bus.add_write_listener`; a
:class:`~ekm_async.SqliteStore` keeps them in its ``writes`` table). The library configures no handler:
the command line shows them on stderr.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import Refused

__all__ = ["SECRET_ARGUMENTS", "Outcome", "WriteRecord", "log", "outcome_of"]

log = logging.getLogger("ekm_async.audit")

SECRET_ARGUMENTS = frozenset({"new_password"})
"""Arguments never written to the trail (shown as ``********``)."""


class Outcome:
    """How a write ended (the values of :attr:`WriteRecord.outcome`)."""

    OK = "ok"
    """The meter acknowledged it."""
    REFUSED = "refused"
    """The meter did not acknowledge the password or the write (it may still have applied the write)."""
    FAILED = "failed"
    """The bus or the meter failed (timeout, bus closed, bad reply…)."""
    INVALID = "invalid"
    """Bad arguments: nothing was sent."""


@dataclass(frozen=True, slots=True)
class WriteRecord:
    time: datetime
    meter: str
    setting: str
    arguments: Mapping[str, Any]
    """As given, secrets replaced."""
    actor: str
    """Who asked: ``web alice from 10.0.0.7`` (the token's name), ``mqtt ekm/…/relay/1/set``, ``cli alice``;
    ``api`` for code that says nothing."""
    outcome: str
    error: str = ""
    changes: Mapping[str, str] = field(default_factory=dict)
    """What the write changed that a deployment must take over (``password``, ``address``)."""

    def message(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        said = f"write {self.setting}({arguments}) to meter {self.meter} by {self.actor}: {self.outcome}"
        return f"{said} ({self.error})" if self.error else said


def redacted(arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {k: "********" if k in SECRET_ARGUMENTS else _plain(v) for k, v in arguments.items()}


def _plain(value: Any) -> Any:
    """A value as JSON can keep it (enums by value, dates and the like as text)."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return getattr(value, "value", None) if hasattr(value, "value") else str(value)


def outcome_of(error: BaseException | None) -> str:
    if error is None:
        return Outcome.OK
    if isinstance(error, Refused):
        return Outcome.REFUSED
    if isinstance(error, ValueError):
        return Outcome.INVALID
    return Outcome.FAILED
