"""The kit for users' tests (ekm_async.testing): what its strategies draw holds what they promise, and
the pytest plugin's fixtures work in pytest-asyncio's auto and strict modes and leave nothing open."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ekm_async import FrameDecoder, FrameError, Read, decode
from ekm_async.frames import Frame
from ekm_async.layouts import LAYOUTS, BlockKind
from ekm_async.sim import RequestParser
from ekm_async.testing import strategies as ekm

from .conftest import EarlyRuns, early

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[1]


@given(ekm.labelled_frames())
def test_frames_decode_to_their_kind(drawn: ekm.LabelledFrame) -> None:
    block = decode(drawn.raw, drawn.kind, drawn.kwh_scale)
    assert block.kind is drawn.kind
    assert len(drawn.raw) == 255


@given(ekm.frames("v4a", address="000300001184"))
def test_frames_of_one_address(raw: bytes) -> None:
    assert decode(raw, "v4a").address == "000300001184"


@given(ekm.splits(ekm.frames(ekm.LIVE_KINDS)))
def test_splits_join_and_feed_to_one_frame(pieces: list[bytes]) -> None:
    assert all(pieces)
    decoder = FrameDecoder(echo="off")
    events = [event for piece in pieces for event in decoder.feed(piece)]
    assert [type(e) for e in events] == [Frame]
    assert events[0].raw == b"".join(pieces)


@given(st.data(), ekm.frames(ekm.LIVE_KINDS))
def test_garbage_around_a_frame_leaves_it_whole(data: st.DataObject, frame: bytes) -> None:
    damaged = data.draw(ekm.corrupted(st.just(frame), [ekm.Damage.GARBAGE_BEFORE, ekm.Damage.GARBAGE_AFTER]))
    assert frame in damaged
    assert len(damaged) > len(frame)


@given(st.data(), ekm.frames("v4a"))
def test_a_wrong_address_is_another_meters_sound_frame(data: st.DataObject, frame: bytes) -> None:
    damaged = data.draw(ekm.corrupted(st.just(frame), ekm.Damage.WRONG_ADDRESS))
    block = decode(damaged, "v4a")  # whole and sound: its CRC holds
    assert block.address != decode(frame, "v4a").address


@given(st.data(), ekm.frames("v4b"))
def test_an_echo_is_the_request_before_the_frame(data: st.DataObject, frame: bytes) -> None:
    damaged = data.draw(ekm.corrupted(st.just(frame), ekm.Damage.ECHO))
    request = damaged[: -len(frame)]
    assert damaged.endswith(frame)
    assert [r.raw for r in RequestParser().feed(request)] == [request]


@given(ekm.corrupted(ekm.frames("v4b"), [ekm.Damage.BIT_FLIP, ekm.Damage.TRUNCATED]))
def test_bit_flips_and_cuts_are_invalid_frames(damaged: bytes) -> None:
    with pytest.raises(FrameError):
        decode(damaged, "v4b")


@given(ekm.reads("v4"))
def test_v4_reads_merge_a_and_b_of_one_meter(read: Read) -> None:
    assert read.b is not None
    assert read.a.address == read.b.address == read.address
    assert {spec.name for spec in LAYOUTS[BlockKind.V4B].fields} <= set(read.fields)


@given(ekm.labelled_frames(ekm.LIVE_KINDS))
def test_totals_are_the_sums_of_their_parts(drawn: ekm.LabelledFrame) -> None:
    fields = decode(drawn.raw, drawn.kind, drawn.kwh_scale).fields
    unit = 10**drawn.kwh_scale
    checked = 0
    for total, parts in ekm.TOTALS:
        if total in fields and all(part in fields for part in parts):
            scale = unit if "kWh" in total else 1
            assert round(float(fields[total]) * scale) == sum(round(float(fields[p]) * scale) for p in parts)
            checked += 1
    assert checked >= 1  # every live block has at least its watts


@given(ekm.reads("v4"))
def test_a_reads_tariffs_add_up_to_its_total(read: Read) -> None:
    assert read.b is not None
    scale = 10**read.a.kwh_scale
    for total, tariffs in ekm.TOTALS[2:4]:
        assert round(float(read.a.fields[total]) * scale) == sum(
            round(float(read.b.fields[t]) * scale) for t in tariffs
        )


@given(ekm.reads("v3"))
def test_v3_reads(read: Read) -> None:
    assert read.b is None
    assert read.v3


@given(ekm.requests())
def test_requests_are_what_the_meters_parse(request: bytes) -> None:
    parsed = RequestParser().feed(request)
    assert [r.raw for r in parsed] == [request]


@pytest.mark.parametrize("make", [lambda: ekm.frames("v5"), lambda: ekm.reads("v2"), lambda: ekm.frames(kwh_scale=3)])
def test_bad_arguments_say_so(make: Callable[[], st.SearchStrategy[object]]) -> None:
    with pytest.raises(ValueError, match=r"must be|unknown block kind"):
        make()


# ---------------------------------------------------------------------------------------------------
# The plugin, as a user's test suite meets it


USER_TESTS = """
import asyncio
import pytest
from ekm_async import ReplyTimeout

{mark}
async def test_reads_every_default_meter(ekm_sim, ekm_bus):
    assert len(ekm_sim.addresses) == 3
    for address in ekm_sim.addresses[:2]:
        assert (await ekm_bus.v4(address).read()).address == address
    assert (await ekm_bus.v3(ekm_sim.addresses[2]).read()).v3

{mark}
@pytest.mark.ekm_sim(meters=["v4:000000000007"], time_scale=0, baud=9600, arrival="bytes")
async def test_the_marker_sets_meters_values_and_faults(ekm_sim, ekm_bus):
    ekm_sim.set("000000000007", volts=231.5, line=2)
    read = await ekm_bus.v4("000000000007").read()
    assert read.RMS_Volts_Ln_2 == 231.5
    ekm_sim.inject("dead")
    with pytest.raises(ReplyTimeout):
        await ekm_bus.v4("000000000007").read()
    ekm_sim.clear_faults()
    assert (await ekm_bus.v4("000000000007").read()).address == "000000000007"
    assert ekm_sim.transactions

PORTS = []

{mark}
async def test_a_port_is_opened(ekm_sim, ekm_bus):
    PORTS.append(int(ekm_sim.url.rsplit(":", 1)[1]))
    reader, writer = await asyncio.open_connection("127.0.0.1", PORTS[0])  # the gateway listens
    writer.close()

def test_and_closed_once_the_test_ended():
    import socket
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", PORTS[0]), timeout=2).close()
"""


MODES = ("auto", "strict")


@early("users-tests")
def users_tests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """The plugin in a user's suite, in each of pytest-asyncio's modes (started with the session: its
    processes mostly wait on their simulated buses)."""
    done = {}
    for mode in MODES:
        where = tmp_path_factory.mktemp(f"users-tests-{mode}")
        mark = "@pytest.mark.asyncio" if mode == "strict" else ""
        (where / "test_user.py").write_text(USER_TESTS.format(mark=mark))
        flags = ("-W", "error::ResourceWarning", "-o", f"asyncio_mode={mode}")
        done[mode] = pytest_run(where, *flags, "-o", "asyncio_default_fixture_loop_scope=function", "test_user.py")
    return done


@pytest.mark.parametrize("mode", MODES)
def test_the_plugin_runs_a_users_tests(early_runs: EarlyRuns, mode: str) -> None:
    done = early_runs.result("users-tests")[mode]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout, done.stdout


BAD_MARKERS = [
    ('metres=["v4:000000000001"]', r".*ekm_sim: unknown option\(s\) \['metres'\].*"),
    ('meters=["v5:000000000001"]', r".*ekm_sim: meters: 'v5:000000000001' is not v4:ADDRESS, v3:ADDRESS.*"),
    ('meters=["v4:12"]', r".*ekm_sim: address must be exactly 12 digits.*"),
    ('faults=["gremlins"]', r".*ekm_sim: fault 'gremlins': no fault kind 'gremlins'; the kinds are crc, .*"),
    ('baud="fast"', r".*ekm_sim: baud must be a whole number; got 'fast'$"),  # was int()'s 'invalid literal'
    ("turnaround=None", r".*ekm_sim: turnaround must be a number; got None$"),
]


def test_a_bad_marker_is_said_in_one_line(pytester: pytest.Pytester) -> None:
    tests = [
        f"@pytest.mark.ekm_sim({marker})\nasync def test_{n}(ekm_sim):\n    pass\n"
        for n, (marker, _) in enumerate(BAD_MARKERS)
    ]
    pytester.makepyfile(test_user="import pytest\n\n" + "\n".join(tests))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "asyncio_mode=auto")
    result.assert_outcomes(errors=len(BAD_MARKERS))
    result.stdout.re_match_lines([said for _, said in BAD_MARKERS], consecutive=False)
    result.stdout.no_fnmatch_line("*Traceback*")


# ---------------------------------------------------------------------------------------------------
# examples/testing, as its README section runs it (started with the session: it mostly waits)


def pytest_run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest ARGS… in a process of its own, as a user runs it in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@early("examples-testing")
def examples_testing(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    return pytest_run(ROOT, "examples/testing")


def test_the_testing_example_runs_as_it_is(early_runs: EarlyRuns) -> None:
    done = early_runs.result("examples-testing")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout


@early("readme-test-file")
def readme_test_file(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """The README's "Testing your application" file, as a user copies it (no help from this suite)."""
    readme = (ROOT / "README.md").read_text()
    (code,) = [block for block in readme.split("```python\n")[1:] if block.startswith("# test_my_app.py")]
    where = tmp_path_factory.mktemp("readme-test-file")
    (where / "test_my_app.py").write_text(code.split("```", 1)[0])
    return pytest_run(where, "test_my_app.py", "-o", "asyncio_mode=auto")


def test_the_readme_test_file_runs_as_written(early_runs: EarlyRuns) -> None:
    done = early_runs.result("readme-test-file")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
