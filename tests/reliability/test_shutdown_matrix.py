"""The shutdown-and-fault matrix: each cell is a real ``ekm-async`` process, a real signal and a real
fault — a broker, a gateway, a stdout pipe, a terminal, a disk, a database file or stream clients
failing, many of them at the worst moment (during a stop or a connect). Each asserts that the process
exits within its bound, that nothing that was or could have been committed is lost, that an expected
fault gives no traceback, and that one clear line says what failed.

All cells run at once (each in a thread of a module fixture, its processes real), so the matrix takes
about as long as its longest cell. The race cells (a fault at the moment of the signal) run once
here; ``EKM_RACE_RUNS=N`` runs each N times, as while developing.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ekm_async.cli.service import STOP_LIMIT

from .processes import (
    Proc,
    closing_gateway,
    connecting_to,
    ekm,
    integrity,
    json_reads,
    kill_all,
    mosquitto,
    rows,
    send_together,
    simulator,
    small_disk,
    stop,
    syn_dropping_gateway,
)

pytestmark = pytest.mark.timeout(180)

ADDRESS = "000300001184"
RACE_RUNS = int(os.environ.get("EKM_RACE_RUNS", "1"))
FAST = ["--sim-baud", "0"]
"""An unpaced simulated bus: reads as fast as the process makes them."""


@dataclass
class Outcome:
    """What a cell saw."""

    took: float | None = None
    """Seconds from the stop signal to the exit (None: it did not exit)."""
    code: int | None = None
    stderr: str = ""
    facts: dict[str, Any] = field(default_factory=dict)


def _finish(proc: Proc, outcome: Outcome, took: float | None) -> Outcome:
    outcome.took = took
    if took is None:
        proc.kill()
    outcome.code = proc.process.returncode
    outcome.stderr = proc.stderr.text()
    return outcome


def _http(url: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def _serving_port(proc: Proc) -> int:
    line = proc.wait_for(r"^serving http://", 20, where="stdout")
    return int(line.split(":")[2].split("/")[0])


# ---------------------------------------------------------------------------------------------------
# The cells


def broker_dies_with_the_stop(tmp: Path) -> Outcome:
    """The host shuts down: the broker and the poller get SIGTERM at the same instant."""
    with mosquitto(tmp) as (broker, port):
        proc = ekm(
            [
                "poll",
                "--simulate",
                "2",
                *FAST,
                "--interval",
                "0.2",
                "--db",
                "r.db",
                "--json",
                "--mqtt",
                f"mqtt://127.0.0.1:{port}",
            ],
            tmp,
        )
        proc.wait_committed(6, 30)
        send_together(signal.SIGTERM, broker, proc)
        outcome = _finish(proc, Outcome(), proc.wait_exit(60))
    outcome.facts = {"printed": len(json_reads(proc.stdout.snapshot())), "stored": len(rows(tmp / "r.db"))}
    return outcome


def stdout_pipe_never_read(tmp: Path) -> Outcome:
    """``poll --json | sleep 300``: the pipe fills, polling and committing go on, SIGTERM is heard."""
    proc = ekm(
        ["poll", "--simulate", "2", *FAST, "--interval", "0.02", "--json", "--db", "r.db"], tmp, read_stdout=False
    )
    try:
        proc.wait_committed(300, 60)  # a 64 kB pipe holds some 20 lines: far more were made since
        outcome = _finish(proc, Outcome(), stop(proc))
    finally:
        assert proc.process.stdout is not None
        proc.process.stdout.close()
    outcome.facts = {"stored": len(rows(tmp / "r.db")), "reported": proc.committed()}
    return outcome


def terminal_nobody_reads(tmp: Path) -> Outcome:
    """The live table on a terminal nobody drains (a stalled SSH session): polling goes on."""
    master, slave = os.openpty()
    try:
        proc = ekm(
            ["poll", "--simulate", "2", *FAST, "--interval", "0.05", "--db", "r.db"],
            tmp,
            stdout=slave,
            read_stdout=False,
        )
        os.close(slave)
        proc.wait_committed(5, 30)
        time.sleep(4.0)  # repaints four times a second: the pty's buffer is full long before this
        early = proc.committed()
        proc.wait_committed(early + 20, 20)
        outcome = _finish(proc, Outcome(), stop(proc))
    finally:
        os.close(master)
    outcome.facts = {"early": early, "stored": len(rows(tmp / "r.db")), "reported": proc.committed()}
    return outcome


def disk_fills_up(tmp: Path) -> Outcome:
    """The database's disk fills up while polling: an error line, the reads kept; at the stop, one line
    saying how many could not be committed, status 1."""
    with small_disk(tmp / "small", 384 * 1024) as (where, limit):
        proc = ekm(
            ["poll", "--simulate", "2", *FAST, "--interval", "0.01", "--json", "--db", str(where / "r.db")],
            tmp,
            limit_file_size=limit,
        )
        proc.wait_for(r"^error: cannot commit to ", 60)
        time.sleep(1.0)
        outcome = _finish(proc, Outcome(), stop(proc))
        outcome.facts = {
            "printed": len(json_reads(proc.stdout.snapshot())),
            "stored": len(rows(where / "r.db")),
            "integrity": integrity(where / "r.db"),
        }
    return outcome


def database_deleted(tmp: Path) -> Outcome:
    """The database file is deleted while in use: the store notices and goes on in a new file."""
    proc = ekm(["poll", "--simulate", "2", *FAST, "--interval", "0.1", "--json", "--db", "r.db"], tmp)
    proc.wait_committed(5, 30)
    deleted = time.time()
    for name in ("r.db", "r.db-wal", "r.db-shm"):
        (tmp / name).unlink(missing_ok=True)
    proc.wait_for(r"was deleted or replaced", 10)
    time.sleep(2.0)
    outcome = _finish(proc, Outcome(), stop(proc))
    later = [r for r in json_reads(proc.stdout.snapshot()) if r["time"] and _epoch(r["time"]) > deleted + 1.5]
    outcome.facts = {
        "later": {(r["Meter_Address"], round(_epoch(r["time"]), 3)) for r in later},
        "stored": {(a, round(t, 3)) for a, t in rows(tmp / "r.db")},
        "integrity": integrity(tmp / "r.db"),
    }
    return outcome


def _epoch(iso: str) -> float:
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(iso).timestamp()


def hangup(tmp: Path) -> Outcome:
    """SIGHUP (the terminal closed) stops like SIGTERM: every read printed is committed."""
    proc = ekm(["poll", "--simulate", "2", *FAST, "--interval", "0.1", "--json", "--db", "r.db"], tmp)
    proc.wait_committed(4, 30)
    outcome = _finish(proc, Outcome(), stop(proc, signal.SIGHUP))
    outcome.facts = {"printed": len(json_reads(proc.stdout.snapshot())), "stored": len(rows(tmp / "r.db"))}
    return outcome


def stop_while_connecting(tmp: Path) -> Outcome:
    """SIGTERM while the bus's connect hangs (a gateway whose SYNs are dropped): the start is cut short."""
    with syn_dropping_gateway() as port:
        waiting = connecting_to(port)
        proc = ekm(["poll", f"tcp://127.0.0.1:{port}", ADDRESS, "--db", "r.db"], tmp)
        deadline = time.monotonic() + 30
        while connecting_to(port) <= waiting:  # its SYN, dropped: it waits in the connect
            assert time.monotonic() < deadline, proc.stderr.text()
            assert proc.process.poll() is None, proc.stderr.text()
            time.sleep(0.05)
        time.sleep(0.5)
        return _finish(proc, Outcome(), stop(proc))


def gateway_closes_every_connection(tmp: Path) -> Outcome:
    """``--interval 0`` against a gateway that accepts and at once closes: back-off, not a hot loop."""
    with closing_gateway(tmp) as (gateway, port):
        proc = ekm(["poll", f"tcp://127.0.0.1:{port}", ADDRESS, "--interval", "0"], tmp)
        gateway.wait_for(r"^accepted 1$", 30, where="stdout")
        time.sleep(5.0)
        outcome = _finish(proc, Outcome(), stop(proc))
        outcome.facts = {"connections": int(gateway.stdout.snapshot()[-1].split()[1])}
    return outcome


def gateway_outage(tmp: Path) -> Outcome:
    """The gateway goes away for a while, then comes back on the same port: both are said on stderr."""
    with simulator(tmp, ADDRESS) as (gateway, port):
        proc = ekm(["poll", f"tcp://127.0.0.1:{port}", ADDRESS, "--interval", "0.2", "--db", "r.db"], tmp)
        proc.wait_committed(2, 30)
        gateway.kill()
        down = proc.wait_for(r"unreachable since", 10)
        with simulator(tmp, ADDRESS, port):
            back = proc.wait_for(r"is back", 15)
            before = proc.committed()
            proc.wait_committed(before + 1, 15)
            outcome = _finish(proc, Outcome(), stop(proc))
    outcome.facts = {"down": down, "back": back}
    return outcome


def serve_gateway_outage(tmp: Path) -> Outcome:
    """``serve`` while its gateway is down: /api/meters and /metrics show the outage."""
    with simulator(tmp, ADDRESS) as (gateway, sim_port):
        proc = ekm(["serve", f"tcp://127.0.0.1:{sim_port}", ADDRESS, "--interval", "0.2", "--port", "0"], tmp)
        port = _serving_port(proc)
        gateway.kill()
        proc.wait_for(r"unreachable since", 10)
        _, meters = _http(f"http://127.0.0.1:{port}/api/meters")
        _, metrics = _http(f"http://127.0.0.1:{port}/metrics")
        outcome = _finish(proc, Outcome(), stop(proc))
    import json  # noqa: PLC0415

    outcome.facts = {"buses": json.loads(meters)["buses"], "metrics": metrics.decode()}
    return outcome


def broker_unreachable(tmp: Path) -> Outcome:
    """``--mqtt`` to a port nobody listens on, ``--count 5``: the 5 states never delivered are reported."""
    proc = ekm(["poll", "--simulate", "2", *FAST, "--count", "5", "--mqtt", "mqtt://127.0.0.1:1", "--json"], tmp)
    proc.signalled_at = time.monotonic()
    return _finish(proc, Outcome(), proc.wait_exit(60))


def second_interrupt(tmp: Path) -> Outcome:
    """Ctrl-C, then Ctrl-C again while the first stop waits for a reader that never reads: at once."""
    proc = ekm(
        ["poll", "--simulate", "2", *FAST, "--interval", "0.02", "--json", "--db", "r.db"], tmp, read_stdout=False
    )
    try:
        proc.wait_committed(100, 30)  # the pipe is full by now
        proc.send(signal.SIGINT)
        time.sleep(0.3)
        again = time.monotonic()
        proc.process.send_signal(signal.SIGINT)
        took = proc.wait_exit(30)
        outcome = _finish(proc, Outcome(), took)
        outcome.facts = {"after_second": time.monotonic() - again if took is not None else None}
    finally:
        assert proc.process.stdout is not None
        proc.process.stdout.close()
    return outcome


def serve_stalled_streams(tmp: Path) -> Outcome:
    """``serve`` with stream clients that stopped reading: SIGTERM is not held up by them."""
    proc = ekm(["serve", "--simulate", "2", *FAST, "--interval", "0", "--port", "0"], tmp)
    port = _serving_port(proc)
    clients = []
    for _ in range(3):
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        client.connect(("127.0.0.1", port))
        client.sendall(b"GET /api/stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
        clients.append(client)
    try:
        time.sleep(5.0)  # hundreds of reads a second: the buffers on both sides are full
        return _finish(proc, Outcome(), stop(proc))
    finally:
        for client in clients:
            client.close()


def serve_disk_fills_up(tmp: Path) -> Outcome:
    """``serve`` whose database's disk fills up: /reads answers from what is committed, the stop says
    how many reads could not be committed."""
    with small_disk(tmp / "small", 384 * 1024) as (where, limit):
        proc = ekm(
            ["serve", "--simulate", "2", *FAST, "--interval", "0.01", "--port", "0", "--db", str(where / "r.db")],
            tmp,
            limit_file_size=limit,
        )
        port = _serving_port(proc)
        proc.wait_for(r"^error: cannot commit to ", 60)
        status, _ = _http(f"http://127.0.0.1:{port}/api/meters/{300001184:012d}/reads?limit=5")
        outcome = _finish(proc, Outcome(), stop(proc))
        outcome.facts = {"reads_status": status, "integrity": integrity(where / "r.db")}
    return outcome


CELLS: dict[str, Callable[[Path], Outcome]] = {
    "broker-dies-with-the-stop": broker_dies_with_the_stop,
    "stdout-pipe-never-read": stdout_pipe_never_read,
    "terminal-nobody-reads": terminal_nobody_reads,
    "disk-fills-up": disk_fills_up,
    "database-deleted": database_deleted,
    "hangup": hangup,
    "stop-while-connecting": stop_while_connecting,
    "gateway-closes-every-connection": gateway_closes_every_connection,
    "gateway-outage": gateway_outage,
    "serve-gateway-outage": serve_gateway_outage,
    "broker-unreachable": broker_unreachable,
    "second-interrupt": second_interrupt,
    "serve-stalled-streams": serve_stalled_streams,
    "serve-disk-fills-up": serve_disk_fills_up,
}
RACES = ("broker-dies-with-the-stop", "second-interrupt", "hangup")


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[Future[Outcome]]]]:
    """Every cell started at once, each in its own directory; races ``RACE_RUNS`` times."""
    runs = {name: RACE_RUNS if name in RACES else 1 for name in CELLS}
    # A shell starts a background job with SIGINT ignored, and ignored signals are inherited: the cells'
    # processes must get Ctrl-C as a user's would, so here SIGINT is handled (a handled signal is reset
    # to its default in a child), as in an interactive session.
    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with ThreadPoolExecutor(max_workers=sum(runs.values())) as pool:
            futures = {
                name: [pool.submit(CELLS[name], tmp_path_factory.mktemp(f"{name}-{n}")) for n in range(count)]
                for name, count in runs.items()
            }
            yield futures
    finally:
        kill_all()  # a cell that failed part-way leaves none of its processes behind
        if before is signal.SIG_IGN:
            signal.signal(signal.SIGINT, before)


def outcomes(matrix: dict[str, list[Future[Outcome]]], name: str) -> list[Outcome]:
    return [future.result(timeout=170) for future in matrix[name]]


def exits_cleanly(outcome: Outcome, *, within: float = STOP_LIMIT, codes: tuple[int, ...] = (0,)) -> None:
    assert outcome.took is not None, f"did not exit; stderr: {outcome.stderr[-2000:]}"
    assert outcome.took < within, f"took {outcome.took:.1f} s to exit; stderr: {outcome.stderr[-2000:]}"
    assert outcome.code in codes, f"exit status {outcome.code}; stderr: {outcome.stderr[-2000:]}"
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert "did not stop within" not in outcome.stderr, outcome.stderr


# ---------------------------------------------------------------------------------------------------
# The assertions, one test per cell


def test_broker_dying_with_the_stop_neither_hangs_nor_loses_a_read(matrix: Any) -> None:
    for outcome in outcomes(matrix, "broker-dies-with-the-stop"):
        exits_cleanly(outcome, codes=(0, 1))
        assert outcome.facts["stored"] == outcome.facts["printed"] > 0
        if outcome.code == 1:  # states the dying broker did not acknowledge: said, in one line
            assert "MQTT states were not delivered" in outcome.stderr, outcome.stderr


def test_a_stdout_pipe_nobody_reads_does_not_stop_polling_or_the_stop(matrix: Any) -> None:
    (outcome,) = outcomes(matrix, "stdout-pipe-never-read")
    exits_cleanly(outcome)
    assert outcome.facts["stored"] == outcome.facts["reported"] >= 300
    assert "lines of output were not written: stdout was not read" in outcome.stderr


def test_a_terminal_nobody_reads_does_not_stop_polling(matrix: Any) -> None:
    (outcome,) = outcomes(matrix, "terminal-nobody-reads")
    exits_cleanly(outcome)
    assert outcome.facts["stored"] == outcome.facts["reported"] >= outcome.facts["early"] + 20


def test_a_full_disk_is_said_at_once_and_every_read_is_accounted_for_at_the_stop(matrix: Any) -> None:
    (outcome,) = outcomes(matrix, "disk-fills-up")
    exits_cleanly(outcome, codes=(1,))
    lines = [line for line in outcome.stderr.splitlines() if "could not be committed" in line]
    assert len(lines) == 1, outcome.stderr
    lost = int(lines[0].split("error: ")[1].split()[0])
    assert outcome.facts["stored"] + lost == outcome.facts["printed"], (outcome.facts, lost)
    assert lost > 0
    assert outcome.facts["integrity"] == "ok"


def test_a_deleted_database_is_opened_again_and_the_reads_go_on_into_it(matrix: Any) -> None:
    (outcome,) = outcomes(matrix, "database-deleted")
    exits_cleanly(outcome)
    assert outcome.facts["later"], "no read after the deletion"
    assert outcome.facts["later"] <= outcome.facts["stored"]
    assert outcome.facts["integrity"] == "ok"


def test_sighup_stops_like_sigterm_and_commits_every_read(matrix: Any) -> None:
    for outcome in outcomes(matrix, "hangup"):
        exits_cleanly(outcome)
        assert outcome.facts["stored"] == outcome.facts["printed"] > 0


def test_a_stop_during_a_hanging_connect_is_not_held_up_by_it(matrix: Any) -> None:
    (outcome,) = outcomes(matrix, "stop-while-connecting")
    exits_cleanly(outcome, within=5.0)  # the connect timeout is 10 s
    assert "cannot open the bus" not in outcome.stderr


def test_a_gateway_that_drops_every_connection_meets_back_off_not_a_hot_loop(matrix: Any) -> None:
    (outcome,) = outcomes(matrix, "gateway-closes-every-connection")
    exits_cleanly(outcome)
    # 5 s of back-off doubling from 0.1 s: about ten connections (before: tens of thousands).
    assert 2 <= outcome.facts["connections"] <= 25, outcome.facts
    assert len(outcome.stderr.splitlines()) <= 10, outcome.stderr


def test_a_gateway_outage_and_its_end_are_said(matrix: Any) -> None:
    (outcome,) = outcomes(matrix, "gateway-outage")
    exits_cleanly(outcome)
    assert "error: bus tcp://127.0.0.1:" in outcome.facts["down"]
    assert "reads wait until it is back" in outcome.facts["down"]


def test_serve_shows_a_gateway_outage_in_the_api_and_the_metrics(matrix: Any) -> None:
    (outcome,) = outcomes(matrix, "serve-gateway-outage")
    exits_cleanly(outcome)
    (bus,) = outcome.facts["buses"].values()
    assert bus["connected"] is False
    assert bus["outage"] is True
    assert bus["down_since"] is not None
    assert bus["down_reason"]
    assert "ekm_bus_outage{" in outcome.facts["metrics"]
    assert any(
        line.startswith("ekm_bus_outage{") and line.endswith(" 1.0") for line in outcome.facts["metrics"].splitlines()
    )


def test_states_a_broker_never_took_are_reported_with_a_failing_status(matrix: Any) -> None:
    (outcome,) = outcomes(matrix, "broker-unreachable")
    exits_cleanly(outcome, codes=(1,))
    assert "error: 5 MQTT states were not delivered to 127.0.0.1:1" in outcome.stderr


def test_a_second_interrupt_stops_at_once(matrix: Any) -> None:
    for outcome in outcomes(matrix, "second-interrupt"):
        assert outcome.took is not None, outcome.stderr
        assert outcome.code == 130, (outcome.code, outcome.stderr)
        assert outcome.facts["after_second"] < 1.0
        assert "Traceback" not in outcome.stderr


def test_stalled_stream_clients_do_not_hold_up_the_stop_of_serve(matrix: Any) -> None:
    (outcome,) = outcomes(matrix, "serve-stalled-streams")
    exits_cleanly(outcome, within=4.0)  # aiohttp's shutdown timeout is 2 s; it was twice 5 s


def test_serve_on_a_full_disk_answers_reads_and_says_what_it_could_not_commit(matrix: Any) -> None:
    (outcome,) = outcomes(matrix, "serve-disk-fills-up")
    exits_cleanly(outcome, codes=(1,))
    assert outcome.facts["reads_status"] == 200
    assert sum("could not be committed" in line for line in outcome.stderr.splitlines()) == 1
    assert outcome.facts["integrity"] == "ok"
