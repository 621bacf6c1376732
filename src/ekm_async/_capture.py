"""A capture of a bus's traffic for bug reports: every byte both ways, with the time it was sent or
received, as JSON lines, passwords redacted (:func:`ekm_async.commands.redact`) — also where an
adapter echoes them back: received bytes from an SOH on are held until the next line, so that an
echoed password cut across two reads is still found (their time is then that of the next line); and
wherever the received bytes hold a password that was sent, or one that differs from it in one byte (a
damaged echo), whatever precedes it. A thread of its own
opens and writes the file, so the event loop never waits on the disk.

The first line describes the capture (``{"capture": "ekm-async", "version": …, "url": …, "baud": …}``);
then one line per write or read: ``{"t": EPOCH_SECONDS, "dir": "tx" | "rx", "hex": "…"}`` (a redacted
write also has ``"redacted": true``). ``ekm-async decode --capture FILE`` replays it through the decoder.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from typing import Any

from .commands import redact
from .wire import SOH

__all__ = ["Capture"]

_END = object()
_OPEN, _CLOSE = ord("("), ord(")")
_SECRET_SPAN = 21
"""Bytes from SOH to the end of an echoed password (``01 W1 02 0020(`` 8 digits ``) 03``)."""


class Capture:
    """Write the traffic of one bus to ``path`` (created or appended to)."""

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any]) -> None:
        self.path = os.fspath(path)
        self._lines: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lines.put(json.dumps({"capture": "ekm-async", **header}))
        self.error: OSError | None = None
        self._held = bytearray()
        """The bytes received from the last SOH on: an echoed password request may be coming."""
        self._secrets: set[bytes] = set()
        """The passwords sent: redacted wherever they turn up in what is received."""
        self._thread = threading.Thread(target=self._run, name="ekm-capture", daemon=True)
        self._thread.start()

    def tx(self, data: bytes) -> None:
        self._rx_rest()
        safe = redact(data)
        self._secrets.update(_spans(data, safe))
        line: dict[str, Any] = {"t": round(time.time(), 6), "dir": "tx", "hex": safe.hex()}
        if safe != data:
            line["redacted"] = True
        self._lines.put(json.dumps(line))

    def rx(self, data: bytes | memoryview) -> None:
        self._held = bytearray(_hide(redact(bytes(self._held) + data), self._secrets))
        soh = self._held.rfind(SOH, max(0, len(self._held) - _SECRET_SPAN))
        cut = soh if soh >= 0 else len(self._held)  # what may still become an echoed password is kept
        if self._secrets:  # the start of a password cut across two reads is kept too
            cut = min(cut, max(0, len(self._held) - max(map(len, self._secrets)) + 1))
        out, self._held = self._held[:cut], self._held[cut:]
        if out:
            self._lines.put(json.dumps({"t": round(time.time(), 6), "dir": "rx", "hex": bytes(out).hex()}))

    def _rx_rest(self) -> None:
        if self._held:
            held, self._held = bytes(self._held), bytearray()
            self._lines.put(json.dumps({"t": round(time.time(), 6), "dir": "rx", "hex": held.hex()}))

    def close(self, wait: float = 2.0) -> None:
        """Write what is queued (for at most ``wait`` seconds) and close the file."""
        self._rx_rest()
        self._lines.put(_END)
        self._thread.join(wait)

    def _run(self) -> None:
        try:
            with open(self.path, "a", encoding="ascii") as file:
                while (line := self._lines.get()) is not _END:
                    file.write(f"{line}\n")
                    if self._lines.empty():
                        file.flush()
        except OSError as exc:  # a capture that cannot be written does not stop the bus
            self.error = exc


def _spans(data: bytes, safe: bytes) -> list[bytes]:
    """The runs of ``data`` that ``safe`` (as long) hides."""
    runs, start = [], -1
    for i, (a, b) in enumerate(zip(data, safe, strict=True)):
        if a != b and start < 0:
            start = i
        elif a == b and start >= 0:
            runs.append(data[start:i])
            start = -1
    if start >= 0:
        runs.append(data[start:])
    return runs


def _hide(data: bytes, secrets: set[bytes]) -> bytes:
    """``data`` with every run that is one of ``secrets`` or differs from one in one byte, between
    parentheses as in a password request (one of them may be damaged too), made ``*``. Runs elsewhere —
    the digits of a frame — are left alone, so that a capture still replays."""
    if not secrets:
        return data
    out = bytearray(data)
    for secret in secrets:
        n = len(secret)
        for i in range(len(out) - n + 1):
            framed = (i > 0 and out[i - 1] == _OPEN) + (i + n < len(out) and out[i + n] == _CLOSE)
            if framed and sum(a != b for a, b in zip(out[i : i + n], secret, strict=True)) + (2 - framed) <= 2:
                out[i : i + n] = b"*" * n
    return bytes(out)
