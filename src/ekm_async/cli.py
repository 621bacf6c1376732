"""The ``ekm-async`` command line (DESIGN.md §4)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from . import __version__
from .blocks import decode
from .crc import crc16
from .errors import FrameError
from .layouts import CRC_OFFSET, FRAME_LEN, BlockKind

__all__ = ["main"]


def _frame_report(text: str, kind: str | None, kwh_scale: int | None) -> tuple[dict[str, Any], bool]:
    """The JSON object for one hex frame, and whether the frame was good."""
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        return {"kind": kind, "crc_ok": False, "error": "hex", "detail": str(exc)}, False
    crc_ok = len(raw) == FRAME_LEN and crc16(raw[1:CRC_OFFSET]) == raw[CRC_OFFSET:]
    try:
        block = decode(raw, kind, kwh_scale)
    except FrameError as exc:
        report = {"kind": kind, "crc_ok": crc_ok, "error": exc.reason.value, "detail": exc.detail, "raw": raw.hex()}
        return report, False
    return {"kind": block.kind.value, "crc_ok": True, "fields": dict(block.fields)}, True


def _decode(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    frames: Iterable[str] = [" ".join(args.hex)] if args.hex else (line for line in stdin if line.strip())
    ok = True
    for text in frames:
        report, good = _frame_report(text.strip(), args.kind, args.kwh_scale)
        ok &= good
        stdout.write(json.dumps(report) + "\n")
    return 0 if ok else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ekm-async", description="EKM Omnimeter v3/v4 over RS-485, asyncio-native.")
    parser.add_argument("--version", action="version", version=f"ekm-async {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "decode",
        help="decode 255-byte frames given as hex",
        description=(
            "Decode one frame given as hex (spaces allowed) or, with no HEX, one frame per line of stdin. "
            "Prints one JSON object per frame; exits 1 if any frame was bad."
        ),
    )
    p.add_argument("hex", nargs="*", metavar="HEX", help="the frame as hex")
    p.add_argument(
        "--kind",
        choices=[k.value for k in BlockKind],
        help="block kind (default: tell V4 A from B by its request type)",
    )
    p.add_argument(
        "--kwh-scale",
        type=int,
        choices=(0, 1, 2),
        dest="kwh_scale",
        help="kWh decimals for blocks that do not carry them (V4 B, months; V3 default 1)",
    )
    p.set_defaults(run=_decode)
    return parser


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    code: int = args.run(args, stdin or sys.stdin, stdout or sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
