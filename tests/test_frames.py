"""The incremental decoder: chunking does not matter, corrupted frames never pass, arbitrary bytes
only ever yield events, every byte received is accounted for, and the work is linear."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ekm_async import BlockKind, FrameError, RejectReason, commands, decode, encode
from ekm_async import frames as frames_module
from ekm_async.commands import LiveRead, Reply, SettingsPage
from ekm_async.crc import crc16
from ekm_async.frames import ACK, NAK, Ack, Echo, Echoed, Event, Frame, FrameDecoder, Nak, Rejected
from ekm_async.testing.strategies import LIVE_KINDS
from ekm_async.testing.strategies import labelled_frames as frames
from ekm_async.wire import TRAILER_OFFSET

REQUEST_A = commands.live_read("000300001184", LiveRead.V4A)
SYNC_BYTES = {0x02, 0x06, 0x15}


def run(decoder: FrameDecoder, chunks: Iterable[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.flush()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def wire_bytes(events: list[Event]) -> bytes:
    """The bytes the events stand for, in order."""
    return b"".join(e.raw if isinstance(e, (Frame, Rejected)) else (b"\x06" if e == ACK else b"\x15") for e in events)


def merge_garbage(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for e in events:
        if (
            isinstance(e, Rejected)
            and e.reason is RejectReason.GARBAGE
            and out
            and isinstance(out[-1], Rejected)
            and out[-1].reason is RejectReason.GARBAGE
        ):
            out[-1] = Rejected(RejectReason.GARBAGE, out[-1].raw + e.raw)
        else:
            out.append(e)
    return out


def damage(frame: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(frame)
    for at, value in edits:
        out[at] = value
    return bytes(out)


# A frame with a few bytes replaced by any value (a high bit, a wrong trailer, a bad CRC: whichever
# comes first in the frame decides, however the bytes are cut); the trailer is aimed at more often.
edit = st.tuples(
    st.one_of(st.integers(1, 254), st.integers(TRAILER_OFFSET - 2, 254)),
    st.one_of(st.integers(0, 255), st.integers(0x80, 0xFF)),
)
damaged = st.builds(damage, frames().map(lambda c: c[2]), st.lists(edit, min_size=1, max_size=3))

# A stream part: a valid frame, a damaged one, an ACK, a NAK, or garbage (which may hold STX/ACK/NAK
# bytes too).
part = st.one_of(
    frames().map(lambda c: ("frame", c[2])),
    damaged.map(lambda b: ("damaged", b)),
    st.just(("ack", b"\x06")),
    st.just(("nak", b"\x15")),
    st.binary(min_size=1, max_size=300).map(lambda b: ("garbage", b)),
)
clean_garbage = st.binary(min_size=1, max_size=300).filter(lambda b: not SYNC_BYTES & set(b))
clean_part = st.one_of(
    frames().map(lambda c: ("frame", c[2])),
    st.just(("ack", b"\x06")),
    st.just(("nak", b"\x15")),
    clean_garbage.map(lambda b: ("garbage", b)),
)


# ---------------------------------------------------------------------------------------------------
# (a) any chunking, same events


@given(
    st.lists(part, max_size=8),
    st.lists(st.integers(0, 3000), max_size=30),
    st.sampled_from([None, Reply.LIVE, Reply.BLOCK, Reply.ACK, Reply.NONE]),
)
def test_any_chunking_yields_the_same_events(
    parts: list[tuple[str, bytes]], cuts: list[int], awaited: Reply | None
) -> None:
    stream = b"".join(p for _, p in parts)
    whole, chunked, bytewise = FrameDecoder(), FrameDecoder(), FrameDecoder()
    for d in (whole, chunked, bytewise):
        d.expect(awaited)
    expected = run(whole, [stream])
    assert run(chunked, split(stream, cuts)) == expected
    assert run(bytewise, [bytes([b]) for b in stream]) == expected


@given(
    st.lists(damaged, min_size=1, max_size=3),
    st.lists(st.integers(0, 800), max_size=12),
    st.sampled_from([None, Reply.LIVE, Reply.BLOCK]),
)
def test_a_damaged_frame_is_rejected_alike_in_any_chunking(
    frames_: list[bytes], cuts: list[int], awaited: Reply | None
) -> None:
    """The first fault in a frame (a high bit, the live trailer, the CRC) decides the rejection and
    its bytes, whether the fault after it has arrived yet or not."""
    stream = b"".join(frames_)
    whole, chunked, bytewise = FrameDecoder(), FrameDecoder(), FrameDecoder()
    for d in (whole, chunked, bytewise):
        d.expect(awaited)
    expected = run(whole, [stream])
    assert run(chunked, split(stream, cuts)) == expected
    assert run(bytewise, [bytes([b]) for b in stream]) == expected


@given(st.lists(clean_part, max_size=8), st.lists(st.integers(0, 3000), max_size=30))
def test_clean_stream_yields_each_part(parts: list[tuple[str, bytes]], cuts: list[int]) -> None:
    """Where garbage holds no STX/ACK/NAK, every frame, ACK and NAK comes out, in order."""
    expected: list[Event] = []
    for name, data in parts:
        expected.append({"frame": Frame(data), "ack": ACK, "nak": NAK}.get(name, Rejected(RejectReason.GARBAGE, data)))
    stream = b"".join(p for _, p in parts)
    events = run(FrameDecoder(max_garbage=10**6), split(stream, cuts))
    assert merge_garbage(events) == merge_garbage(expected)


# ---------------------------------------------------------------------------------------------------
# (b) every single-bit flip of a valid frame is rejected


def assert_every_flip_rejected(frame: bytes, awaited: Reply | None) -> None:
    for i in range(len(frame)):
        for bit in range(8):
            bad = bytearray(frame)
            bad[i] ^= 1 << bit
            decoder = FrameDecoder()
            decoder.expect(awaited)
            events = run(decoder, [bytes(bad)])
            assert not any(isinstance(e, Frame) for e in events), (i, bit)
            assert any(isinstance(e, Rejected) for e in events), (i, bit)
            if awaited is not None:  # a block is awaited: a stray 06 or 15 is garbage too
                assert all(isinstance(e, Rejected) for e in events), (i, bit)
            assert wire_bytes(events) == bytes(bad)


@pytest.mark.parametrize("awaited", [None, Reply.LIVE, Reply.BLOCK])
def test_every_flip_of_the_captured_frame_is_rejected(frame_a: bytes, awaited: Reply | None) -> None:
    assert run(FrameDecoder(), [frame_a]) == [Frame(frame_a)]
    assert_every_flip_rejected(frame_a, awaited)


@given(frames())
def test_every_flip_of_any_frame_is_rejected(case: tuple[BlockKind, int, bytes]) -> None:
    kind, _, frame = case
    assert_every_flip_rejected(frame, Reply.LIVE if kind in LIVE_KINDS else Reply.BLOCK)


def test_what_a_frame_holds_is_left_to_decode_which_knows_the_evidence_of_each_byte(frame_a: bytes) -> None:
    """The decoder takes any 255 bytes from STX whose CRC holds: a trailer or a request type is judged by
    ``decode``, which rejects only what a captured frame contradicts (and flags what a guess expects)."""
    odd = bytearray(frame_a)
    odd[249:253] = b"0000"
    odd[253:] = crc16(odd[1:253])
    decoder = FrameDecoder()
    decoder.sent(REQUEST_A)
    assert decoder.feed(bytes(odd)[:200]) + decoder.feed(bytes(odd)[200:]) == [Frame(bytes(odd))]
    with pytest.raises(FrameError, match="trailer 30303030 at 249"):
        decode(bytes(odd))  # the V4 A trailer is in both captured frames
    block = encode("holidays", {"Holiday_1_Mon": 1, "Holiday_1_Day": 1})
    decoder.sent(REQUEST_A)
    assert decoder.feed(block) == [Frame(block)]  # a settings block where a live one was asked …
    with pytest.raises(FrameError):
        decode(block, "v4a")  # … is no V4 A block


# ---------------------------------------------------------------------------------------------------
# (c) arbitrary bytes: only events, never an exception; nothing lost


@given(
    st.binary(max_size=3000),
    st.lists(st.integers(0, 3000), max_size=30),
    st.sampled_from([None, Reply.LIVE, Reply.BLOCK, Reply.ACK, Reply.NONE]),
    st.integers(1, 300),
)
def test_arbitrary_bytes_only_yield_events_and_lose_nothing(
    data: bytes, cuts: list[int], awaited: Reply | None, max_garbage: int
) -> None:
    decoder = FrameDecoder(max_garbage=max_garbage)
    decoder.expect(awaited)
    events: list[Event] = []
    for chunk in split(data, cuts):
        events += decoder.feed(chunk)
        assert len(decoder.buffered) <= max(255, max_garbage)
        assert all(isinstance(e, (Frame, Ack, Nak, Rejected)) for e in events)
    events += decoder.flush()
    assert wire_bytes(events) == data
    assert decoder.buffered == b""
    for e in events:
        if isinstance(e, Frame):
            decode(e.raw, BlockKind.MONTHS)  # every Frame passes the whole-frame checks
        if isinstance(e, Rejected) and e.reason is RejectReason.GARBAGE:
            assert len(e.raw) <= max_garbage


@given(st.lists(part, max_size=6), st.lists(st.integers(0, 2000), max_size=20))
def test_work_is_linear(parts: list[tuple[str, bytes]], cuts: list[int]) -> None:
    """The CRC sees each received byte at most once, however the bytes are chunked."""
    stream = b"".join(p for _, p in parts)
    seen = 0
    real_update = frames_module.crc.update

    def counting(register: int, data: bytes | bytearray | memoryview) -> int:
        nonlocal seen
        seen += len(data)
        return real_update(register, data)

    frames_module.crc.update = counting  # type: ignore[assignment]
    try:
        run(FrameDecoder(), split(stream, cuts))
    finally:
        frames_module.crc.update = real_update  # type: ignore[assignment]
    assert seen <= len(stream)


def test_garbage_runs_are_bounded() -> None:
    decoder = FrameDecoder(max_garbage=100)
    events = decoder.feed(b"x" * 250)
    assert events == [Rejected(RejectReason.GARBAGE, b"x" * 100)] * 2
    assert decoder.buffered == b"x" * 50
    assert decoder.flush() == [Rejected(RejectReason.GARBAGE, b"x" * 50)]
    with pytest.raises(ValueError, match="max_garbage"):
        FrameDecoder(max_garbage=0)


# ---------------------------------------------------------------------------------------------------
# Exchanges: what is awaited, truncation, echo


def test_ack_and_nak_only_when_awaited(frame_a: bytes) -> None:
    decoder = FrameDecoder()
    decoder.sent(commands.password("00000000"))
    assert decoder.feed(b"\x06") == [ACK]
    assert decoder.feed(b"\x15") == [NAK]
    assert decoder.feed(frame_a[:3]) == []  # STX is not awaited: garbage, held until something ends it
    decoder.sent(REQUEST_A)  # new exchange: what was held is reported
    assert decoder.feed(b"\x06" + frame_a) == [Rejected(RejectReason.GARBAGE, b"\x06"), Frame(frame_a)]
    decoder.sent(commands.CLOSE)
    assert decoder.feed(b"\x06") == []
    assert decoder.flush() == [Rejected(RejectReason.GARBAGE, b"\x06")]


def test_sent_reports_a_truncated_frame(frame_a: bytes) -> None:
    decoder = FrameDecoder()
    decoder.sent(REQUEST_A)
    assert decoder.feed(frame_a[:120]) == []
    assert decoder.buffered == frame_a[:120]
    assert decoder.sent(REQUEST_A) == [Rejected(RejectReason.TRUNCATED, frame_a[:120])]
    assert decoder.feed(frame_a) == [Frame(frame_a)]


def test_seven_bit_violation_rejected_at_once(frame_a: bytes) -> None:
    decoder = FrameDecoder()
    bad = frame_a[:40] + b"\xb1"
    assert decoder.feed(bad + frame_a) == [Rejected(RejectReason.NOT_7BIT, bad), Frame(frame_a)]


@pytest.mark.parametrize("echo", [Echo.AUTO, Echo.ON])
@given(cuts=st.lists(st.integers(0, 400), max_size=10))
def test_local_echo_is_dropped_in_any_chunking(frame_a: bytes, echo: Echo, cuts: list[int]) -> None:
    decoder = FrameDecoder(echo=echo)
    decoder.sent(REQUEST_A)
    assert run(decoder, split(REQUEST_A + frame_a, cuts)) == [Echoed(REQUEST_A), Frame(frame_a)]
    assert decoder.echoes == 1


def test_auto_costs_nothing_without_an_echo(frame_a: bytes) -> None:
    decoder = FrameDecoder()
    assert decoder.echo is Echo.AUTO
    decoder.sent(REQUEST_A)
    assert decoder.feed(frame_a) == [Frame(frame_a)]
    decoder.sent(commands.password("00000000"))
    assert decoder.feed(b"\x06") == [ACK]
    assert decoder.echo is Echo.AUTO  # no echo came: none is assumed


def test_auto_learns_that_the_line_echoes(frame_a: bytes) -> None:
    decoder = FrameDecoder()
    decoder.sent(REQUEST_A)
    assert decoder.feed(REQUEST_A + frame_a) == [Echoed(REQUEST_A), Frame(frame_a)]
    assert decoder.echo is Echo.ON  # from now on the first bytes after a request are its echo, whatever they hold


def test_a_settings_request_echo_with_its_stx_is_no_frame() -> None:
    """The settings request holds STX at its 4th byte: unless its echo is known as one, it opens a fake
    frame that swallows the real reply."""
    block = encode("holidays", {"Holiday_1_Mon": 12, "Holiday_1_Day": 25})
    request = commands.settings_read(SettingsPage.HOLIDAYS)
    assert request[3] == 0x02
    for echo in (Echo.AUTO, Echo.ON):
        decoder = FrameDecoder(echo=echo)
        decoder.sent(request)
        assert decoder.feed(request + block) == [Echoed(request), Frame(block)]


SIX = "00049865"
"""A password whose request ends ``29 03 06 55``: an ACK byte in its own CRC."""


@pytest.mark.parametrize("echo", [Echo.AUTO, Echo.ON])
def test_a_password_echo_holding_an_ack_byte_is_no_acknowledgement(echo: Echo) -> None:
    request = commands.password(SIX)
    assert request.endswith(b")\x03\x06U")
    decoder = FrameDecoder(echo=echo)
    decoder.sent(request)
    assert decoder.feed(request) == [Echoed(request)]  # the echo, and silence: no ACK
    assert decoder.feed(b"\x15") == [NAK]
    decoder.sent(request)
    assert decoder.feed(request + b"\x06") == [Echoed(request), ACK]  # the meter's ACK, after the echo


@pytest.mark.parametrize("echo", [Echo.AUTO, Echo.ON])
@pytest.mark.parametrize("damage", ["cut short", "a byte changed", "late"])
def test_a_partial_damaged_or_late_echo_is_garbage_never_an_acknowledgement(echo: Echo, damage: str) -> None:
    request = commands.password(SIX)
    decoder = FrameDecoder(echo=echo)
    decoder.sent(request)
    if damage == "cut short":
        events = decoder.feed(request[:-4] + request[-2:])  # two bytes lost, the 06 kept
    elif damage == "a byte changed":
        events = decoder.feed(request[:5] + b"X" + request[6:])
    else:
        events = decoder.feed(b"\x00\x7f" + request)  # noise first, then the echo
    assert ACK not in events
    events += decoder.flush()
    assert ACK not in events
    assert any(isinstance(e, Rejected) for e in events)


def test_auto_an_echo_whose_first_byte_is_damaged_gives_no_acknowledgement() -> None:
    """Before any echo came, a password's echo whose SOH is damaged does not open an echo region: its
    bytes are garbage, and neither its STX nor the ACK byte its CRC holds counts (each follows two bytes
    of the request: of its echo). The meter's ACK behind it does."""
    request = commands.password(SIX)
    decoder = FrameDecoder()
    decoder.sent(request)
    echo = b"\x03" + request[1:]
    events = decoder.feed(echo)
    assert ACK not in events
    more = decoder.feed(b"\x06")
    assert more[-1] == ACK
    events += more[:-1] + decoder.flush()
    assert all(isinstance(e, Rejected) and e.reason is RejectReason.GARBAGE for e in events)
    assert b"".join(e.raw for e in events if isinstance(e, Rejected)) == echo


@pytest.mark.parametrize("echo", [Echo.AUTO, Echo.ON])
@pytest.mark.parametrize(
    ("request_", "at", "into"),
    [
        (commands.password(SIX), 16, 0x15),  # its last byte into NAK
        (commands.password(SIX), 3, 0x06),  # its STX into ACK
        (commands.password(SIX), 14, 0x02),  # the byte before its ACK byte: the two before it no longer as sent
        (commands.password(SIX), 0, 0x03),  # its SOH: no echo region, its bytes garbage
        (commands.ct_ratio(800), 3, 0x06),  # a write's STX into ACK: no acknowledgement of the write
    ],
)
def test_an_echo_damaged_into_an_ack_or_nak_is_no_answer(echo: Echo, request_: bytes, at: int, into: int) -> None:
    damaged = request_[:at] + bytes([into]) + request_[at + 1 :]
    reply = b"\x15"
    decoder = FrameDecoder(echo=echo)
    decoder.sent(request_)
    events = decoder.feed(damaged + reply)
    assert all(isinstance(e, Rejected) and e.reason in {RejectReason.ECHO, RejectReason.GARBAGE} for e in events[:-1])
    assert events[-1] == NAK, events


def test_auto_noise_before_an_ack_counts_unless_it_continues_the_request() -> None:
    request = commands.password(SIX)
    decoder = FrameDecoder()
    decoder.sent(request)
    assert decoder.feed(b"\x7f\x06") == [Rejected(RejectReason.GARBAGE, b"\x7f"), ACK]
    decoder.sent(request)
    events = decoder.feed(b"\x7f)\x03\x06") + decoder.flush()  # the 06 follows ")\x03" as in the echo
    assert ACK not in events
    assert b"".join(e.raw for e in events if isinstance(e, Rejected)) == b"\x7f)\x03\x06"


def test_auto_noise_ending_as_two_bytes_of_the_request_is_no_acknowledgement() -> None:
    """The decoder machine's case: after the password request for 00000000, noise ending ``00`` and an
    ACK. Byte by byte it is what an echo whose SOH was lost and whose next ``0`` was damaged into 06
    looks like, so the ACK is taken for a byte of the echo (docs/wire.md, "Echo"): never a false
    acknowledgement, at the cost of this ACK."""
    request = commands.password("00000000")
    decoder = FrameDecoder(max_garbage=1)
    decoder.sent(request)
    noise = b"\x02\x00\x00\x0000"
    assert decoder.feed(noise) == [Rejected(RejectReason.GARBAGE, bytes([b])) for b in noise]
    assert decoder.feed(b"\x06") == [Rejected(RejectReason.GARBAGE, b"\x06")]


@pytest.mark.parametrize("echo", [Echo.AUTO, Echo.ON])
@pytest.mark.parametrize("damaged", [False, True])
@pytest.mark.parametrize(("reply", "answer"), [(b"\x06", ACK), (b"\x15", NAK)])
@pytest.mark.parametrize("bytewise", [False, True])
def test_after_the_whole_echo_an_ack_counts_whatever_the_echo_ends_with(
    echo: Echo, damaged: bool, reply: bytes, answer: Event, bytewise: bool
) -> None:
    """The password request for 00001413 ends ``)\\x033)``: its last two bytes, ``3)``, are found earlier
    in it, followed by another byte. Once its echo came whole (exact, or with a byte changed) it is
    accounted for, and the meter's ACK or NAK after it is the answer, not a byte of the echo: it was
    dropped, and a correct password looked refused on every echoing line (1 password in ~1800)."""
    request = commands.password("00001413")
    assert request.endswith(b")\x033)")
    assert request[-2:] in request[:-2]
    heard = request[:5] + b"X" + request[6:] if damaged else request
    decoder = FrameDecoder(echo=echo, max_garbage=1)
    decoder.sent(request)
    data = heard + reply
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    said = Rejected(RejectReason.ECHO, heard) if damaged else Echoed(request)
    assert events == [said, answer]
    assert decoder.buffered == b""


def test_the_tail_of_an_echo_past_a_region_begun_too_early_is_no_acknowledgement() -> None:
    """On a line known to echo, noise before an echo whose SOH is damaged: the region, as long as what was
    sent, begins at the noise and ends before the echo does. The echo's own ACK byte (``\\x7f\\x06``, the
    CRC of 82065494) comes after it and is still no acknowledgement; the meter's NAK behind it counts."""
    request = commands.password("82065494")
    assert request.endswith(b"\x03\x7f\x06")
    decoder = FrameDecoder(echo=Echo.ON)
    decoder.sent(request)
    events = decoder.feed(b"\x11U" + b"\x11" + request[1:] + b"\x15")
    assert events == [
        Rejected(RejectReason.ECHO, b"\x11U\x11" + request[1:-2]),
        Rejected(RejectReason.GARBAGE, b"\x7f"),
        Rejected(RejectReason.GARBAGE, b"\x06"),
        NAK,
    ]


@pytest.mark.parametrize("bytewise", [False, True])
def test_auto_noise_then_an_echo_damaged_right_before_its_own_ack_byte_is_no_acknowledgement(bytewise: bool) -> None:
    """The password request for 15779121 ends ``)\\x03\\x06V``: its CRC holds 06. One byte of noise, then
    its echo with the ETX damaged into STX: the region the echo opens ends at the STX (a reply's start),
    so it was no echo; the noise moves the echo's 06 off its place, and ``)\\x02`` is not in the request.
    The four bytes before the 06 are, but for one, the four the request holds before its 06: a byte of
    the echo, never the meter's acknowledgement (a write would follow a password not acknowledged)."""
    request = commands.password("15779121")
    assert request.endswith(b")\x03\x06V")
    own = request.index(b"\x06")
    assert own == len(request) - 2
    heard = b">" + request[: own - 1] + b"\x02" + request[own:]
    decoder = FrameDecoder(max_garbage=1)
    decoder.sent(request)
    chunks = [heard[i : i + 1] for i in range(len(heard))] if bytewise else [heard]
    events = [event for chunk in chunks for event in decoder.feed(chunk)] + decoder.flush()
    assert ACK not in events
    assert events == [Rejected(RejectReason.GARBAGE, bytes([b])) for b in heard]
    # The meter's answer behind such an echo still counts.
    decoder.sent(request)
    events = [event for chunk in chunks for event in decoder.feed(chunk)] + decoder.feed(b"\x15")
    assert events[-1] == NAK


def test_auto_a_damaged_echo_does_not_tell_the_line_echoes(frame_a: bytes) -> None:
    """Only an exact echo tells that the line echoes: garbage that happens to start as a request does
    (a damaged echo looks the same) must not make the decoder take every reply's first bytes for one."""
    damaged = REQUEST_A[:3] + b"X" + REQUEST_A[4:]
    decoder = FrameDecoder()
    decoder.sent(REQUEST_A)
    assert decoder.feed(damaged + frame_a) == [Rejected(RejectReason.ECHO, damaged), Frame(frame_a)]
    assert decoder.echo is Echo.AUTO
    for _ in range(3):
        decoder.sent(REQUEST_A)
        assert decoder.feed(frame_a) == [Frame(frame_a)]


@pytest.mark.parametrize("noise", [b"/", b"/x", b"\x01", b"\x01\x7f", b"\x01\x01"])
def test_auto_garbage_that_starts_as_the_request_does_never_swallows_the_reply(frame_a: bytes, noise: bytes) -> None:
    """On a line that does not echo, garbage holding the request's first byte opens an echo region; the
    first byte that differs from the request (before two matched) ends it as garbage and is looked at
    again: the reply behind it is decoded, and the line is not taken to echo."""
    for request in (REQUEST_A, commands.password("00000000")):
        if not request.startswith(noise[:1]):
            continue
        decoder = FrameDecoder()
        decoder.sent(request)
        reply = frame_a if request is REQUEST_A else b"\x06"
        events = decoder.feed(noise + reply)
        assert events[-1] == (Frame(frame_a) if request is REQUEST_A else ACK), events
        assert all(isinstance(e, Rejected) and e.reason is RejectReason.GARBAGE for e in events[:-1])
        assert decoder.echo is Echo.AUTO


@pytest.mark.parametrize("echo", [Echo.AUTO, Echo.ON])
@pytest.mark.parametrize("at", [2, 5, 9, 15])
def test_a_byte_of_an_echo_damaged_into_the_requests_first_byte_keeps_the_echo_its_length(echo: Echo, at: int) -> None:
    """Once its first bytes matched, an echo begins where it began: a later byte damaged into SOH is
    damage, not an echo beginning there — which would swallow the meter's answer behind it."""
    request = commands.password("00000000")
    damaged = request[:at] + b"\x01" + request[at + 1 :]
    decoder = FrameDecoder(echo=echo)
    decoder.sent(REQUEST_A)
    assert decoder.feed(REQUEST_A) == [Echoed(REQUEST_A)]  # the line echoes
    decoder.sent(request)
    assert decoder.feed(damaged + b"\x06") == [Rejected(RejectReason.ECHO, damaged), ACK]


@given(
    password=st.text("0123456789", min_size=8, max_size=8),
    cuts=st.lists(st.integers(0, 40), max_size=6),
    answer=st.sampled_from([b"", b"\x06", b"\x15"]),
    echo=st.sampled_from([Echo.AUTO, Echo.ON]),
)
def test_with_an_exact_echo_only_the_meters_answer_counts(
    password: str, cuts: list[int], answer: bytes, echo: Echo
) -> None:
    request = commands.password(password)
    decoder = FrameDecoder(echo=echo)
    decoder.sent(request)
    events = run(decoder, split(request + answer, cuts)) + decoder.flush()
    assert events == [Echoed(request), *{b"\x06": [ACK], b"\x15": [NAK]}.get(answer, [])]


def test_off_takes_an_echo_as_it_comes(frame_a: bytes) -> None:
    decoder = FrameDecoder(echo=Echo.OFF)
    decoder.sent(REQUEST_A)
    assert decoder.feed(REQUEST_A + frame_a) == [Rejected(RejectReason.GARBAGE, REQUEST_A), Frame(frame_a)]
