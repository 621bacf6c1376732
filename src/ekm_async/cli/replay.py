"""``ekm-async decode --capture FILE``: what the decoder makes of a capture, byte for byte as it came.

The capture (``--capture`` of ``read``, ``settings``, ``set``, ``poll`` and ``serve``) holds every byte
sent and received. Replayed, each request sent tells the decoder what comes next; each event received is
printed as one JSON object: a frame with its fields (decoded as the kind its request asked for) and any
anomalies, or what was rejected and why, an ACK, a NAK, an echo. The exit status is 1 if any frame was
rejected: such a capture is what a bug report about a meter needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from ..blocks import decode
from ..commands import block_asked
from ..errors import FrameError
from ..frames import Ack, Echoed, Event, Frame, FrameDecoder, Nak, Rejected
from ..layouts import BlockKind
from .service import CommandError

__all__ = ["replay"]


def replay(path: str, out: TextIO, *, strict: bool = False) -> int:
    try:
        lines = Path(path).read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read the capture {path}: {exc}", 2) from None
    decoder = FrameDecoder()
    asked: BlockKind | None = None
    scale: int | None = None
    bad = False
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if "capture" in record:
                continue
            when, direction, data = record["t"], record["dir"], bytes.fromhex(record["hex"])
        except (ValueError, KeyError, TypeError):
            raise CommandError(f"{path}:{number}: not a line of an ekm-async capture", 2) from None
        if direction == "tx":
            events = decoder.sent(data)
            asked = block_asked(data) or asked
            out.write(json.dumps({"t": when, "sent": data.decode("ascii", "replace")}) + "\n")
        else:
            events = decoder.feed(data)
        for event in events:
            report = _report(event, asked, scale, strict)
            if report.get("kind") == BlockKind.V4A.value and "fields" in report:
                scale = int(report["fields"]["kWh_Scale"])
            bad |= report["event"] == "rejected"
            out.write(json.dumps({"t": when, **report}) + "\n")
    for event in decoder.flush():
        report = _report(event, asked, scale, strict)
        bad |= report["event"] == "rejected"
        out.write(json.dumps(report) + "\n")
    return 1 if bad else 0


def _report(event: Event, asked: BlockKind | None, scale: int | None, strict: bool) -> dict[str, Any]:
    if isinstance(event, Frame):
        try:
            block = decode(event.raw, asked, scale, strict=strict)
        except FrameError as exc:
            return {"event": "rejected", "reason": exc.reason.value, "detail": exc.detail, "raw": event.raw.hex()}
        report: dict[str, Any] = {"event": "frame", "kind": block.kind.value, "fields": dict(block.fields)}
        if block.anomalies:
            report["anomalies"] = [str(a) for a in block.anomalies]
        return report
    if isinstance(event, Rejected):
        return {"event": "rejected", "reason": event.reason.value, "raw": event.raw.hex()}
    if isinstance(event, Echoed):
        return {"event": "echo", "raw": event.raw.hex()}
    return {"event": {Ack: "ack", Nak: "nak"}[type(event)]}
