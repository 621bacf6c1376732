"""The ``ekm-async`` command line (docs/architecture.md, "The command line")."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn, TextIO

from .. import __version__
from ..blocks import decode
from ..errors import FrameError
from ..layouts import BlockKind
from ..sim.cli import run_simulator
from ..wire import FRAME_LEN, crc_fault, require_address
from .meter import add_meter_commands
from .poll import add_poll_command
from .replay import replay
from .run import add_config_commands, add_run_command
from .serve import add_serve_command
from .service import CommandError

__all__ = ["main"]


def _frame_report(text: str, kind: str | None, kwh_scale: int | None) -> tuple[dict[str, Any], bool]:
    """The JSON object for one hex frame, and whether the frame was good."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        detail = "not hex: give pairs of hex digits (0–9, a–f), spaces allowed, one frame per line"
        return {"kind": kind, "crc_ok": False, "error": "hex", "detail": detail}, False
    crc_ok = len(raw) == FRAME_LEN and crc_fault(raw) is None
    try:
        block = decode(raw, kind, kwh_scale)
    except FrameError as exc:
        report = {"kind": kind, "crc_ok": crc_ok, "error": exc.reason.value, "detail": exc.detail, "raw": raw.hex()}
        return report, False
    return {"kind": block.kind.value, "crc_ok": True, "fields": dict(block.fields)}, True


def _decode(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    if args.capture is not None:
        return replay(args.capture, stdout, strict=args.strict)
    frames: Iterable[str] = [" ".join(args.hex)] if args.hex else (line for line in stdin if line.strip())
    ok = True
    for text in frames:
        report, good = _frame_report(text.strip(), args.kind, args.kwh_scale)
        ok &= good
        stdout.write(json.dumps(report) + "\n")
    return 0 if ok else 1


def _meter_spec(text: str) -> tuple[str, str]:
    """``v4:ADDRESS`` or ``v3:ADDRESS``."""
    kind, _, address = text.partition(":")
    try:
        if kind not in ("v3", "v4"):
            raise ValueError(f"{kind!r} is not v3 or v4")
        return kind, require_address(address)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected v3:ADDRESS or v4:ADDRESS: {exc}") from None


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT with a port from 0 to 65535 (0: any free port), e.g. 127.0.0.1:5000; got {text!r}"
        )
    return host or "127.0.0.1", int(port)


def _simulate(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    return run_simulator(args, stdout)


class _Parser(argparse.ArgumentParser):
    """A bad command line is one line on stderr, status 2: what is wrong, and where the rest is said
    (argparse's own prints its whole usage block first). Subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        for pattern, said in _ARGPARSE_WORDS:
            message = pattern.sub(said, message)
        self.exit(2, f"{self.prog}: {message} (--help lists what it takes)\n")


_ARGPARSE_WORDS = (
    (re.compile(r"^argument (\S+): "), r"\1: "),
    (re.compile(r"invalid int value: (.*)"), r"must be a whole number; got \1"),
    (re.compile(r"invalid float value: (.*)"), r"must be a number; got \1"),
)
"""argparse's phrases → the user's words (``argument --count: invalid int value: 'x'`` → ``--count: must
be a whole number; got 'x'``)."""


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ekm-async", description="EKM Omnimeter v3/v4 over RS-485, asyncio-native.")
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
        "--capture",
        metavar="FILE",
        help="replay a capture (--capture of read, settings, set, poll, serve) through the decoder: "
        "one JSON object per request sent and per event received",
    )
    p.add_argument("--strict", action="store_true", help="with --capture: reject what only a guess expects")
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

    add_meter_commands(sub)
    add_poll_command(sub)
    add_serve_command(sub)
    add_run_command(sub)
    add_config_commands(sub)

    p = sub.add_parser(
        "simulate",
        help="serve simulated meters on a simulated RS-485 bus",
        description=(
            "Serve simulated V3/V4 meters over TCP (like an RS-485 gateway) and/or a pty. Prints one line "
            "'ready …' when listening; runs until interrupted."
        ),
    )
    p.add_argument("--tcp", type=_host_port, metavar="HOST:PORT", help="listen on TCP (port 0: any free port)")
    p.add_argument("--pty", metavar="LINK", help="create a pty and a symlink LINK to it")
    p.add_argument(
        "--meter",
        type=_meter_spec,
        action="append",
        metavar="v4:ADDRESS",
        help="a meter on the bus (repeatable; default v4:000300001184)",
    )
    p.add_argument(
        "--baud", type=int, choices=(9600, 0), default=9600, help="pace the wire at 9600 baud, or 0: no pacing"
    )
    p.add_argument("--turnaround", type=float, default=0.02, metavar="S", help="meter reply delay (default 0.02)")
    p.add_argument("--seed", type=int, default=0, help="seed of meter values and faults (default 0)")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="KIND[=P][:SECONDS][@ADDRESS][#N,…]; kinds: crc drop truncate garbage delay wrong-address dead",
    )
    p.add_argument(
        "--echo",
        nargs="?",
        const="exact",
        default="off",
        choices=("off", "exact", "delayed", "damaged"),
        help="echo the host's bytes back, as RS-485 adapters that hear themselves do (--echo: exact)",
    )
    p.add_argument(
        "--arrival",
        default=None,
        metavar="POLICY",
        help="how the host receives the line's bytes: bytes, slices (default), ftdi, ser2net, idle[:N] (docs/wire.md)",
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        dest="time_scale",
        metavar="X",
        help="simulated seconds per real second for energy and pulse counts (default 1)",
    )
    p.set_defaults(run=_simulate)
    return parser


def _own_parsers(parser: argparse.ArgumentParser) -> None:
    """Each subcommand's parser as a default of its own arguments: arguments it does not take are said
    with its usage, not the top level's."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(own_parser=sub)
                _own_parsers(sub)


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    parser = _parser()
    _own_parsers(parser)
    args, extra = parser.parse_known_args(argv)
    if extra:
        getattr(args, "own_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code: int = args.run(args, stdin or sys.stdin, stdout or sys.stdout)
    except KeyboardInterrupt:  # Ctrl-C before a command took over the signals: nothing to report
        return 130
    except CommandError as exc:
        sys.stderr.write(f"ekm-async {args.command}: {exc}\n")
        return exc.status
    except BrokenPipeError:  # whoever read our output stopped reading (`… | head`): so do we, quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
