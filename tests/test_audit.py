"""The audit trail: every write asked of a meter — through the web service, MQTT, the command line or
code — is one record on the ``ekm_async.audit`` logger and in the store's ``writes`` table, with who
asked, what (secrets replaced), which meter and how it ended; a changed password or address says
what must be updated."""

from __future__ import annotations

import contextlib
import io
import logging
import sqlite3
from pathlib import Path

import pytest

from ekm_async import SqliteStore, open_bus
from ekm_async.audit import Outcome
from ekm_async.cli import main as cli_main
from ekm_async.errors import Refused
from ekm_async.sim import MeterModel, MeterType, RequestKind, SimBus, SimServer

from .test_cli_meter import simulator
from .test_web import A, rig, until

X = "000300004001"


def writes_table(path: Path) -> list[sqlite3.Row]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM writes ORDER BY id").fetchall()


async def test_code_writes_are_recorded_with_their_outcome_and_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ekm_async.audit")
    sim = SimBus([MeterModel(X, MeterType.V4)], baud=0, turnaround=0.001)
    async with (
        SimServer(sim) as server,
        open_bus("memory://audit", connect=server.memory_connector(), baud=1_000_000, timeout_margin=0.05) as bus,
        SqliteStore(tmp_path / "a.db") as store,
    ):
        bus.add_write_listener(store.record_write)
        meter = bus.v4(X)
        await meter.apply("relay", relay=1, state="close", seconds=5)
        await meter.apply("password", new_password="13572468", actor="tests")
        with pytest.raises(Refused):
            await meter.apply("ct-ratio", ratio=400, password="00000000")  # the old password: refused
        with pytest.raises(ValueError, match="ratio"):
            await meter.apply("ct-ratio", ratio=-1, actor="tests")
        records = await store.writes(X)
    rows = writes_table(tmp_path / "a.db")
    assert [(r["setting"], r["actor"], r["outcome"]) for r in rows] == [
        ("relay", "api", Outcome.OK),
        ("password", "tests", Outcome.OK),
        ("ct-ratio", "api", Outcome.REFUSED),
        ("ct-ratio", "tests", Outcome.INVALID),
    ]
    assert [r["Meter_Address"] for r in rows] == [X] * 4
    assert records[0]["setting"] == "ct-ratio"  # newest first
    assert records[-1]["arguments"] == {"relay": 1, "state": "close", "seconds": 5}
    assert records[-2]["arguments"] == {"new_password": "********"}
    assert "password" in records[-2]["changes"]
    assert rows[2]["error"] == f"meter {X}: password not acknowledged"
    assert sum(t.request.kind is RequestKind.WRITE for t in sim.transactions) == 2  # refused and invalid: no write
    text = "\n".join(caplog.messages) + "".join(str(tuple(r)) for r in rows)
    assert "13572468" not in text
    assert f"meter {X} has a new password, held by this process only" in text
    assert f"write relay(relay=1, state='close', seconds=5) to meter {X} by api: ok" in caplog.messages


async def test_web_writes_are_recorded_with_the_client_address(tmp_path: Path) -> None:
    async with rig(db=tmp_path / "w.db") as r:
        assert r.store is not None
        r.bus.add_write_listener(r.store.record_write)
        ok = await r.write(A, "relay", {"relay": 2, "state": "close"})
        denied = await r.write(A, "relay", {"relay": 2, "state": "close"}, headers={})  # no token: not asked
        password = await r.write(A, "password", {"new_password": "24681357"})
        assert (ok.status, denied.status, password.status) == (200, 401, 200)
        assert "update its configuration" in password.json()["note"]
        records = await r.store.writes()
    assert [(w["setting"], w["outcome"]) for w in records] == [("password", "ok"), ("relay", "ok")]
    assert all(w["actor"] == "web token from 127.0.0.1" for w in records)


async def test_an_address_changed_through_the_api_is_polled_at_the_new_address(tmp_path: Path) -> None:
    new = "000300003099"
    async with rig(db=tmp_path / "m.db", interval=0.05) as r:
        assert r.store is not None
        await r.poller.start()
        await until(lambda: r.poller.status()[A].ok >= 2, "reads of A")
        answer = await r.write(A, "address", {"new_address": new})
        assert answer.status == 200
        changed_at = len(r.sim.transactions)
        await until(lambda: new in r.poller.status() and r.poller.status()[new].ok >= 4, "reads at the new address")
        later = r.sim.transactions[changed_at:]
        asked = {t.request.address for t in later if t.request.kind is RequestKind.SIGN_ON}
        assert A not in asked
        assert new in asked
        assert r.poller.status()[new].errors == 0
        await r.poller.aclose()
    with contextlib.closing(sqlite3.connect(tmp_path / "m.db")) as db:
        stored = {row[0] for row in db.execute('SELECT "Meter_Address" FROM reads')}
    assert stored == {A, new, "000300003002", "000300003003"}


def test_the_command_line_records_its_user(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "ekm_async.audit")
    with simulator(f"v4:{X}") as url:
        code = cli_main(["set", url, X, "relay", "1", "close"], stdout=io.StringIO())
    assert code == 0
    record = next(m for m in caplog.messages if m.startswith("write relay"))
    assert record.startswith(f"write relay(relay=1, state='close', seconds=0) to meter {X} by cli ")
    assert record.endswith(": ok")


async def test_the_wire_log_shows_no_password_even_where_the_adapter_echoes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "ekm_async.wire")
    sim = SimBus([MeterModel(X, MeterType.V4, password="24681357")], baud=0, turnaround=0.001, echo=True)
    async with (
        SimServer(sim) as server,
        open_bus("memory://audit", connect=server.memory_connector(), baud=1_000_000, timeout_margin=0.05) as bus,
    ):
        meter = bus.v4(X, password="24681357")
        await meter.apply("password", new_password="97531864")
        await meter.apply("relay", relay=1, state="close")
    text = "\n".join(caplog.messages)
    assert "rx " in text
    assert "tx " in text
    for secret in (b"24681357", b"97531864"):
        assert secret.hex(" ") not in text
        assert secret.decode() not in text
    assert "not shown: the request held a password" in text


async def test_a_write_is_recorded_with_the_name_of_its_token(tmp_path: Path) -> None:
    async with rig(db=tmp_path / "t.db", token={"alice": "a-token", "bob": "b-token"}) as r:  # type: ignore[arg-type]
        assert r.store is not None
        r.bus.add_write_listener(r.store.record_write)
        as_bob = await r.write(A, "relay", {"relay": 1, "state": "close"}, headers={"Authorization": "Bearer b-token"})
        nobody = await r.write(A, "relay", {"relay": 1, "state": "open"}, headers={"Authorization": "Bearer c-token"})
        assert (as_bob.status, nobody.status) == (200, 401)
        records = await r.store.writes()
    assert [w["actor"] for w in records] == ["web bob from 127.0.0.1"]
