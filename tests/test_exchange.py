"""The sans-I/O exchange: what answers what, and late replies across the exchanges of one connection."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ekm_async.commands import LiveRead
from ekm_async.encoding import encode
from ekm_async.exchange import Accepted, Exchange, Line, Send, Timing, Waiting, WireStats, read_b, sign_on
from ekm_async.frames import Frame
from ekm_async.layouts import BlockKind

X, Y = "000300001184", "000300001185"
TIMING = Timing(byte_time=0.001, margin=0.05)


def a_block(address: str = X) -> Frame:
    return Frame(encode(BlockKind.V4A, {"Meter_Address": address}))


def b_block(address: str = X) -> Frame:
    return Frame(encode(BlockKind.V4B, {"Meter_Address": address}, kwh_scale=0))


def exchange(line: Line, stats: WireStats | None = None) -> Exchange:
    return Exchange(X, TIMING, retries=2, stats=stats or WireStats(), line=line)


def test_a_wrong_frame_is_asked_again_when_no_reply_is_owed() -> None:
    stats = WireStats()
    ex = exchange(Line(), stats)
    first = ex.begin(sign_on(X, LiveRead.V4A, BlockKind.V4A))
    assert not first.settle_first
    decision = ex.receive(b_block(), 0.1)  # a B where an A was asked, and nothing was late
    assert isinstance(decision, Send)
    assert (stats.rejected["request-type"], stats.retries, stats.rejected["late"]) == (1, 1, 0)


def test_a_timeout_leaves_a_reply_owed_to_the_next_exchange_which_settles_first() -> None:
    line = Line()
    ex = exchange(line)
    ex.begin(sign_on(X, LiveRead.V4A, BlockKind.V4A))
    again = ex.expire()
    assert isinstance(again, Send)
    assert again.settle_first
    assert isinstance(ex.receive(a_block(), 0.2), Accepted)  # the late reply, or the repeat's: one is owed
    assert line.owed == 1
    ex.close()
    nxt = exchange(line)
    assert nxt.begin(sign_on(X, LiveRead.V4A, BlockKind.V4A)).settle_first
    assert isinstance(nxt.receive(a_block(), 0.3), Accepted)  # answered in time: nothing is owed any more
    assert line.owed == 0
    assert not nxt.begin(read_b(X, 0)).settle_first


@given(owed=st.integers(1, 3), stale=st.lists(st.sampled_from(["a", "other"]), min_size=1, max_size=3))
def test_an_owed_reply_is_dropped_and_the_wait_for_the_own_goes_on(owed: int, stale: list[str]) -> None:
    """While replies are owed, whole frames that answer something else (another kind, another meter)
    are each one of them: no repeat is sent, the wait is extended by a block's wire time and margin,
    and the block asked for still answers. Once none is owed, the next wrong frame is asked again."""
    stats = WireStats()
    line = Line(owed=owed)
    ex = exchange(line, stats)
    ex.begin(read_b(X, 0))
    frames = {"a": a_block(), "other": b_block(Y)}
    for n, what in enumerate(stale):
        decision = ex.receive(frames[what], 0.1)
        if n < owed:
            assert decision == Waiting(TIMING.settle_limit)
        else:
            assert isinstance(decision, Send)
            break
    late = min(owed, len(stale))
    assert stats.rejected["late"] == late
    assert line.owed == owed - late
    if len(stale) <= owed:
        assert stats.retries == 0
        accepted = ex.receive(b_block(), 0.2)
        assert isinstance(accepted, Accepted)
        assert accepted.block is not None
        assert line.owed == owed - late  # accepted after a late reply: the rest may still come
