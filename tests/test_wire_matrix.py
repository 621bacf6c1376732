"""The bus on every simulated arrival policy × local echo × meter turnaround, on a paced 9600-baud wire.

Each scenario is one arrival policy (how the line's bytes reach the host: ``bytes``, ``slices``, ``ftdi``,
``ser2net``, ``idle:4``), one local echo of the simulated adapter (off, exact, delayed, damaged) and one
meter turnaround (the simulator's default, 0, and :data:`MAX_TURNAROUND`), against a bus with its default
echo option (``auto``). In every scenario:

* a V4 read (A + B) and a V3 read deliver exactly the frames the simulated meters sent, with their
  values; a settings read (``read_settings``) delivers the meter's months, schedules and holidays;
* a write with the password 00049865 — whose request's CRC holds 06, an ACK byte: its echo must never
  count as an acknowledgement — is acknowledged by a meter with that password, one session on the wire
  (sign-on, password, write, close), and refused by a meter with another password, without a write on
  the wire (sign-on, password, close);
* the bus's counters show the echo was there (exact and delayed echoes dropped as such, damaged ones
  rejected as ``echo`` or ``garbage``, nothing else rejected, no retry), and the host received the line
  in the pieces of the policy.

A paced read takes ~0.6 s of wire time, and an exchange with a 1.5 s turnaround more than 1.5 s: the
whole matrix runs at once (:func:`matrix`, every scenario on its own simulator and bus), and each policy's
test reports its failing scenarios by name.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from ekm_async import BusOptions, Refused, commands, open_bus
from ekm_async.blocks import Block
from ekm_async.calculated import Value
from ekm_async.catalogue import setting
from ekm_async.commands import LiveRead
from ekm_async.exchange import LATENCY_BUCKETS
from ekm_async.layouts import BlockKind
from ekm_async.sim import ARRIVALS, MAX_TURNAROUND, Arrival, LocalEcho, MeterModel, RequestKind, SimBus, SimServer
from ekm_async.sim.servers import Sink
from ekm_async.wire import FRAME_LEN

from .test_bus import (
    CLOSE,
    GUARD,
    Rig,
    X,
    Y,
    Z,
    sessions,
    settings_session,
    v3,
    v3_read,
    v4,
    v4_read,
    write_session,
)

POLICIES = ["bytes", "slices", "ftdi", "ser2net", "idle:4"]
ECHOES = list(LocalEcho)
TURNAROUND = SimBus([]).turnaround
"""The simulator's default meter turnaround (20 ms)."""
TURNAROUNDS = [TURNAROUND, 0.0, MAX_TURNAROUND]
ACK_PASSWORD = "00049865"
"""A password whose request's CRC holds 06 (ACK): its echo holds an ACK byte."""
ACK = b"\x06"
CT_RATIO = 800

SLOW_MARGIN = BusOptions().timeout_margin + MAX_TURNAROUND
"""The bus's ``timeout_margin`` with the longest turnaround: 2.0 s.

An exchange's reply is late ``(request bytes + reply bytes) × byte time + timeout_margin`` after its
request was sent (``exchange.Timing.wait``): the margin is what the meter's turnaround and the line's
delivery (at most ser2net's 20 ms hold here) may add to the wire time. The default margin, 0.5 s, is meant
for turnarounds of a few tens of milliseconds; with a 1.5 s turnaround the turnaround is added on top of
it, so the same 0.5 s is left for the delivery and a busy event loop as at the default turnaround."""

LARGEST_PIECE = {
    "bytes": (1, 1),  # one byte per piece
    "slices": (5, 5),  # 5 ms of wire time: 5 characters of 1.04 ms
    "ftdi": (16, 16),  # what came within one 16 ms tick of the latency timer (a 62-byte packet never fills)
    "ser2net": (20, 20),  # sent 20 ms after its first byte (the line is never quiet within a frame)
    "idle:4": (FRAME_LEN, 1024),  # a frame whole (and its echo with it when the turnaround is 0)
}
"""The size of the largest piece the host receives (from, to) under each policy, when the echo (if any)
comes at the wire's pace; a delayed echo comes at once, in pieces as large as the device's buffer."""


# ---------------------------------------------------------------------------------------------------
# The premise


def test_the_password_s_request_holds_an_ack_byte_in_its_crc() -> None:
    assert ACK[0] in commands.password(ACK_PASSWORD)[-2:]


def test_the_matrix_has_every_named_arrival_policy() -> None:
    assert {Arrival.parse(p).name.partition(":")[0] for p in POLICIES} == set(ARRIVALS)


# ---------------------------------------------------------------------------------------------------
# The rig: a simulator that notes the pieces it hands the host, three meters, a bus with default options


class PieceServer(SimServer):
    """A :class:`SimServer` that notes the size of every piece it hands a client (one write of its pump
    each: a memory transport gives each to ``data_received`` as it is, unless the bus paused reading)."""

    def __init__(self, bus: SimBus) -> None:
        super().__init__(bus)
        self.pieces: list[int] = []

    def receive(self, data: bytes, sink: Sink) -> None:
        def noted(piece: bytes) -> None:
            self.pieces.append(len(piece))
            sink(piece)

        super().receive(data, noted)


def meters() -> list[MeterModel]:
    """X (V4) has the password 00049865, Y (V4) and Z (V3) the default one; their time stands still, so
    that what they send can be asked of them again after a read."""
    return [
        v4(X, password=ACK_PASSWORD, time_scale=0),
        v4(Y, time_scale=0),
        v3(Z, time_scale=0),
    ]


def live(model: MeterModel, kind: BlockKind) -> dict[str, Value]:
    """The fields of a live block as ``model`` sends them, but Line_Freq (drawn afresh for each frame)."""
    fields = model.live_fields(kind)
    fields.pop("Line_Freq", None)
    return fields


def same_fields(block: Block, expected: dict[str, Value]) -> None:
    got = {name: block.fields.get(name) for name in expected}
    wrong = {name: (got[name], value) for name, value in expected.items() if got[name] != value}
    assert not wrong, f"{block.kind.value} block: (got, meter's) {wrong}"


# ---------------------------------------------------------------------------------------------------
# What a scenario does, each checked against the meters and the wire


async def read_v4(r: Rig) -> None:
    start = await r.mark()
    read = await r.bus.v4(X).read()
    assert await r.wire(start) == v4_read(X)
    a, b = r.sim.transactions[start : start + 2]
    assert read.b is not None
    assert read.a.raw == a.reply, "the A block is not the frame the meter sent"
    assert read.b.raw == b.reply, "the B block is not the frame the meter sent"
    same_fields(read.a, live(r.model(X), BlockKind.V4A))
    same_fields(read.b, live(r.model(X), BlockKind.V4B))


async def read_v3(r: Rig) -> None:
    start = await r.mark()
    read = await r.bus.v3(Z).read()
    assert await r.wire(start) == v3_read(Z)
    assert read.v3
    assert read.a.raw == r.sim.transactions[start].reply, "the V3 block is not the frame the meter sent"
    same_fields(read.a, live(r.model(Z), BlockKind.V3))


async def read_settings(r: Rig) -> None:
    start = await r.mark()
    got = await r.bus.v4(X).read_settings()
    assert await r.wire(start) == settings_session("V4A", X)
    sign_on, *pages, _ = r.sim.transactions[start : start + 7]
    assert got.read.a.raw == sign_on.reply
    assert sorted(b.raw for b in got.blocks().values()) == sorted(t.reply or b"" for t in pages)
    for name, block in got.blocks().items():
        same_fields(block, r.model(X).settings_fields(block.kind, reverse=name == "months_reverse"))


async def write_acknowledged(r: Rig) -> None:
    start = await r.mark()
    await r.bus.v4(X, password=ACK_PASSWORD).set_ct_ratio(CT_RATIO)
    assert await r.wire(start) == write_session("V4A", X, "00D0", ACK_PASSWORD)
    _, password, write, _ = r.sim.transactions[start : start + 4]
    assert password.reply == write.reply == ACK
    assert r.model(X).ct_ratio == CT_RATIO
    assert r.model(X).writes == [("00D0", f"{CT_RATIO:04d}")]


async def write_refused(r: Rig) -> None:
    start = await r.mark()
    with pytest.raises(Refused, match="password not acknowledged"):
        await r.bus.v4(Y, password=ACK_PASSWORD).set_ct_ratio(CT_RATIO)
    assert await r.wire(start) == [("V4A", Y), ("password", ACK_PASSWORD), CLOSE]  # no write on the wire
    assert r.sim.transactions[start + 1].reply is None  # the meter kept silent: nothing but an echo held 06
    assert r.model(Y).ct_ratio == 200
    assert r.model(Y).writes == []


OPS: dict[str, tuple[Callable[[Rig], Awaitable[None]], int]] = {
    "v4 read": (read_v4, 2),
    "v3 read": (read_v3, 1),
    "settings": (read_settings, 6),
    "write": (write_acknowledged, 1),
    "refused write": (write_refused, 1),
}
"""What a scenario does → (how, the blocks it accepts)."""


@dataclass(frozen=True)
class Scenario:
    policy: str
    echo: LocalEcho
    turnaround: float

    @property
    def name(self) -> str:
        return f"arrival {self.policy}, echo {self.echo.value}, turnaround {self.turnaround:g} s"

    @property
    def options(self) -> dict[str, Any]:
        """``open_bus`` options: the defaults, but the margin of the longest turnaround (SLOW_MARGIN)."""
        return {"timeout_margin": SLOW_MARGIN} if self.turnaround > TURNAROUND else {}

    @property
    def runs(self) -> list[tuple[str, ...]]:
        """What each bus of the scenario does, one after the other. One bus does it all (so that the bus
        carries what it learnt of the echo from one transaction to the next) — but with a 1.5 s turnaround,
        where each exchange takes more than 1.5 s, each transaction has a bus of its own, and the settings
        read (6 more exchanges like the reads' — 9 s of waiting) is left out."""
        if self.turnaround == MAX_TURNAROUND:
            return [(op,) for op in OPS if op != "settings"]
        return [tuple(OPS)]


SCENARIOS = {
    policy: [Scenario(policy, echo, turnaround) for turnaround in TURNAROUNDS for echo in ECHOES] for policy in POLICIES
}


async def run(s: Scenario, ops: tuple[str, ...]) -> list[int]:
    """Do ``ops`` on a bus of the scenario's own; returns the sizes of the pieces the host received."""
    sim = SimBus(
        meters(), baud=9600, turnaround=s.turnaround, echo=s.echo, arrival=Arrival.parse(s.policy), history=None
    )
    server = PieceServer(sim)
    async with asyncio.timeout(GUARD), server:
        async with open_bus("memory://sim", connect=server.memory_connector(), **s.options) as bus:
            r = Rig(sim, server, bus, "memory://sim")
            for op in ops:
                await OPS[op][0](r)
            check_counters(s, r, ops)
        assert len(sessions(sim.transactions)) == len(ops)  # each contiguous, closed
        return server.pieces


def check_counters(s: Scenario, r: Rig, ops: tuple[str, ...]) -> None:
    assert r.bus.options.echo == "auto"
    stats = r.bus.stats
    requests = sum(t.request.kind is not RequestKind.CLOSE for t in r.sim.transactions)
    rejected = {reason: n for reason, n in stats.rejected.items() if n}
    assert stats.frames_ok == sum(OPS[op][1] for op in ops), f"{stats.frames_ok} blocks accepted"
    assert stats.timeouts == ops.count("refused write"), "only the refused password's wait may run out"
    assert stats.retries == 0, "no reply may be missed"
    assert stats.naks == 0, f"{stats.naks} NAKs"
    if s.echo is LocalEcho.OFF:
        assert (stats.echoes, rejected) == (0, {}), f"no echo, yet {stats.echoes} dropped, rejected: {rejected}"
    elif s.echo is LocalEcho.DAMAGED:
        # One bit of every echo is changed: none is exact, each is rejected (as an echo, or as garbage when the
        # line is not yet known to echo and its first byte was changed) — never as a frame or a reply.
        assert stats.echoes == 0, f"{stats.echoes} damaged echoes taken for exact ones"
        assert set(rejected) <= {"echo", "garbage"}, f"rejected: {rejected}"
        damaged = rejected.get("echo", 0) + rejected.get("garbage", 0)
        assert damaged >= requests, f"{damaged} damaged echoes rejected for {requests} requests: was the echo there?"
    else:
        # Every request's echo was there and dropped whole (a close string's with the request after it).
        assert stats.echoes >= requests, f"{stats.echoes} echoes dropped for {requests} requests: was the echo there?"
        assert rejected == {}, f"rejected: {rejected}"
    # A lower bound, which no load can break: the simulator hands no reply over before its turnaround.
    assert sum(stats.exchange_buckets[: bisect.bisect_left(LATENCY_BUCKETS, s.turnaround)]) == 0


def check_pieces(s: Scenario, pieces: list[int]) -> None:
    assert pieces, "nothing came"
    packet = Arrival.parse(s.policy).packet
    assert not packet or max(pieces) <= packet, f"a piece of {max(pieces)} bytes; the buffer holds {packet}"
    if s.echo is not LocalEcho.DELAYED:
        low, high = LARGEST_PIECE[s.policy]
        assert low <= max(pieces) <= high, f"the largest piece has {max(pieces)} bytes, not {low}–{high}"


async def play(s: Scenario) -> list[str]:
    """The scenario's failures, each named."""
    results = await asyncio.gather(*(run(s, ops) for ops in s.runs), return_exceptions=True)
    failures = [
        f"{s.name} [{', '.join(ops)}]: {type(result).__name__}: {result}"
        for ops, result in zip(s.runs, results, strict=True)
        if isinstance(result, BaseException)
    ]
    if not failures:
        try:
            check_pieces(s, [size for result in results if isinstance(result, list) for size in result])
        except AssertionError as exc:
            failures.append(f"{s.name} [pieces]: {exc}")
    return failures


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def matrix() -> dict[str, list[str]]:
    """Every scenario of every policy at once (a paced wire mostly waits); policy → its failures."""
    outcomes = await asyncio.gather(*(play(s) for policy in POLICIES for s in SCENARIOS[policy]))
    named = iter(outcomes)
    return {policy: [f for _ in SCENARIOS[policy] for f in next(named)] for policy in POLICIES}


@pytest.mark.parametrize("policy", POLICIES)
def test_reads_and_writes_on_every_echo_and_turnaround(policy: str, matrix: dict[str, list[str]]) -> None:
    failures = matrix[policy]
    assert not failures, f"{len(failures)} failure(s) among the {len(SCENARIOS[policy])} scenarios:\n" + "\n".join(
        failures
    )


# ---------------------------------------------------------------------------------------------------
# A damaged echo whose changed byte became its request's first byte (ETX 03 → SOH 01, "?" → "/")


@dataclass(frozen=True)
class Damage:
    seed: int
    """A simulator seed with which the echo of the last of ``requests`` has one byte changed into that
    request's first byte."""
    requests: tuple[bytes, ...]
    """What a fresh bus sends first, up to the request whose echo is so damaged."""


WRITE = setting("ct-ratio").request(ratio=CT_RATIO)
SIGN_ON = commands.live_read(X, LiveRead.V4A)
DAMAGES = {
    "read": Damage(127, (SIGN_ON,)),  # "/?0003…": the echo's "?" became "/"
    "password": Damage(126, (SIGN_ON, commands.password(ACK_PASSWORD))),  # its ETX became SOH
    "write": Damage(380, (SIGN_ON, commands.password(ACK_PASSWORD), WRITE)),  # its ETX became SOH
}


@pytest.mark.parametrize("case", DAMAGES)
def test_these_seeds_damage_an_echo_into_its_requests_first_byte(case: str) -> None:
    """The premise of the test below: the simulator's echoes with these seeds."""
    damage = DAMAGES[case]
    twin = SimBus(meters(), baud=9600, echo=LocalEcho.DAMAGED, seed=damage.seed)
    for request in damage.requests:
        echo = twin.receive(request, 0.0)[0].data
    changed = [i for i, (sent, heard) in enumerate(zip(request, echo, strict=True)) if sent != heard]
    assert len(changed) == 1
    assert echo[changed[0]] == request[0], (request, echo)


@pytest.mark.parametrize("case", DAMAGES)
async def test_a_damaged_echo_never_costs_the_reply_behind_it(case: str) -> None:
    """A byte of the echo damaged into the request's first byte is damage, not an echo beginning there
    (which would swallow the reply behind it: an ACK lost is a write refused, a block a timeout)."""
    damage = DAMAGES[case]
    sim = SimBus(meters(), baud=9600, echo=LocalEcho.DAMAGED, seed=damage.seed, history=None)
    server = SimServer(sim)
    async with (
        asyncio.timeout(GUARD),
        server,
        open_bus("memory://sim", connect=server.memory_connector()) as bus,
    ):
        r = Rig(sim, server, bus, "memory://sim")
        if case == "read":
            await read_v4(r)
        else:
            await write_acknowledged(r)  # Refused: the ACK of the password, or of the write, went missing
        assert (bus.stats.timeouts, bus.stats.retries) == (0, 0)
