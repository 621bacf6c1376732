"""SqliteStore (issue 5): schema, migrations, batching, durability on close, queries, settings snapshots.

Reads are built from the simulator's frames (no bus) or with :func:`ekm_async.encode`; what is in the
file is checked through a :mod:`sqlite3` connection of the test's own, so "committed" means committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ekm_async import BlockKind, LiveBlock, MonthsBlock, Read, SchedulesBlock, Settings, SqliteStore, decode, encode
from ekm_async.blocks import HolidaysBlock
from ekm_async.calculated import CALCULATED_NAMES
from ekm_async.errors import StoreError
from ekm_async.layouts import LAYOUTS, FieldType
from ekm_async.sim import MeterModel, MeterType
from ekm_async.store import READ_COLUMNS, SCHEMA_VERSION

X, Y, Z = "000300006001", "000300006002", "000300006003"
V3_ADDRESS = "000000006009"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
HOSTILE_ADDRESS = "O'Brien\";--x"
"""12 characters: what a Meter_Address (a text field) may hold, quotes and SQL comment included."""
HOSTILE_TIME = "'); DROP TABLE"
"""14 characters in the Meter_Time field."""

_models: dict[tuple[str, MeterType], MeterModel] = {}


def model(address: str, kind: MeterType = MeterType.V4) -> MeterModel:
    return _models.setdefault((address, kind), MeterModel(address, kind, seed=len(_models)))


def v4_read(address: str = X, when: datetime = T0, *, with_b: bool = True, step: int = 0) -> Read:
    """A V4 read of the simulated meter ``address``, ``step`` seconds of its life later."""
    m = model(address)
    m.advance(float(step))
    a = decode(m.frame(BlockKind.V4A), "v4a")
    assert isinstance(a, LiveBlock)
    b = decode(m.frame(BlockKind.V4B), "v4b", a.kwh_scale) if with_b else None
    return Read.of(a, b, time=when)


def v3_read(address: str = V3_ADDRESS, when: datetime = T0) -> Read:
    return Read.of(decode(model(address, MeterType.V3).frame(BlockKind.V3), "v3"), time=when)


def hostile_read(when: datetime = T0) -> Read:
    """A V3 read whose text fields hold quotes, a parenthesis, a semicolon and an SQL comment."""
    raw = encode(
        "v3",
        {"Meter_Address": HOSTILE_ADDRESS, "Meter_Time": HOSTILE_TIME, "Cos_Theta_Ln_1": "'100", "kWh_Tot": 12.5},
    )
    return Read.of(decode(raw, "v3"), time=when)


@contextlib.contextmanager
def connect(path: Path) -> Any:
    """The test's own connection to the file."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        yield db


def count(path: Path) -> int:
    with connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM reads").fetchone()[0])


async def wait_for(condition: Any, limit: float = 5.0, step: float = 0.005) -> None:
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(step)


def expected_columns() -> dict[str, str]:
    """The union of the V3, V4 A and V4 B fields with their SQL types, and the calculated fields."""
    sql = {FieldType.INT: "INTEGER", FieldType.FLOAT: "REAL", FieldType.NUMBER: "INTEGER"}
    out: dict[str, str] = {}
    for kind in (BlockKind.V3, BlockKind.V4A, BlockKind.V4B):
        for spec in LAYOUTS[kind].fields:
            typ = sql.get(spec.type, "TEXT")
            if spec.type is FieldType.CODE:  # what the codes stand for: minutes, or words
                typ = "INTEGER" if all(isinstance(said, int) for _, said in spec.codes) else "TEXT"
            assert out.setdefault(spec.name, typ) == typ, f"{spec.name} has two types"
    return out | dict.fromkeys(CALCULATED_NAMES, "INTEGER")


# ---------------------------------------------------------------------------------------------------
# Schema and migrations


async def test_schema_has_typed_columns_for_v3_and_v4_fields_an_index_wal_and_its_version(tmp_path: Path) -> None:
    path = tmp_path / "reads.db"
    async with SqliteStore(path):
        pass
    with connect(path) as db:
        info = {row["name"]: (row["type"], row["notnull"], row["pk"]) for row in db.execute("PRAGMA table_info(reads)")}
        assert info["id"] == ("INTEGER", 0, 1)
        assert info["time_utc"] == ("REAL", 1, 0)
        assert info["kind"] == ("TEXT", 1, 0)
        assert info["raw_a"] == ("BLOB", 1, 0)
        assert info["raw_b"] == ("BLOB", 0, 0)
        fields = {
            name: typ for name, (typ, _, _) in info.items() if name not in ("id", "time_utc", "kind", "raw_a", "raw_b")
        }
        assert fields == expected_columns()
        assert list(info)[1:] == list(READ_COLUMNS)
        for name, typ in {
            "Meter_Address": "TEXT",
            "Meter_Time": "TEXT",
            "kWh_Tot": "REAL",
            "Max_Demand": "REAL",  # V3 only
            "Line_Freq": "REAL",  # V4 A only
            "RMS_Watts_Max_Demand": "REAL",  # V4 B only
            "CT_Ratio": "INTEGER",
            "Max_Demand_Period": "INTEGER",  # minutes
            "Max_Demand_Interval_Reset": "TEXT",  # "off" … "hourly"
            "Cos_Theta_Ln_1": "TEXT",
            "Meter_Status_Code": "TEXT",
            "Power_Factor_Ln_1": "INTEGER",
            "Net_Calc_Watts_Tot": "INTEGER",
        }.items():
            assert fields[name] == typ, name
        indexes = {row["name"] for row in db.execute("PRAGMA index_list(reads)")}
        assert indexes
        by_columns = {name: [r["name"] for r in db.execute(f"PRAGMA index_info({name})")] for name in indexes}
        assert ["Meter_Address", "time_utc"] in by_columns.values()
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        settings = {row["name"]: row["type"] for row in db.execute("PRAGMA table_info(settings)")}
        assert settings == {
            "id": "INTEGER",
            "Meter_Address": "TEXT",
            "time_utc": "REAL",
            "block": "TEXT",
            "kind": "TEXT",
            "kwh_scale": "INTEGER",
            "raw": "BLOB",
            "fields": "TEXT",
        }


def _schema(path: Path) -> list[tuple[str, str, str]]:
    with connect(path) as db:
        return [tuple(r) for r in db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name")]


async def test_a_file_at_version_0_is_created_and_reopening_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "reads.db"
    with connect(path) as db:  # an SQLite file at user_version 0, with a table of someone else's
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('kept')")
        db.commit()
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    async with SqliteStore(path) as store:
        await store.add(v4_read())
    schema = _schema(path)
    assert {name for _, name, _ in schema} >= {"reads", "settings", "notes"}
    async with SqliteStore(path) as store:
        assert await store.count() == 1
        await store.add(v4_read(step=1))
    assert _schema(path) == schema
    with connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert [tuple(row) for row in db.execute("SELECT text FROM notes")] == [("kept",)]
    assert count(path) == 2


async def test_an_older_file_is_migrated_in_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The migration path: a version-N file opened by a version N+1 store gets the new statements; a
    migration that fails leaves the file as it was."""
    import ekm_async.store as store_module  # noqa: PLC0415 — patched for this test only

    path = tmp_path / "reads.db"
    async with SqliteStore(path) as store:
        await store.add(v4_read())
    nxt = SCHEMA_VERSION + 1
    broken = {**store_module.MIGRATIONS, nxt: ("ALTER TABLE reads ADD COLUMN note TEXT", "THIS IS NOT SQL")}
    monkeypatch.setattr(store_module, "MIGRATIONS", broken)
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", nxt)
    with pytest.raises(sqlite3.Error):
        await SqliteStore(path).open()
    with connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert "note" not in {row["name"] for row in db.execute("PRAGMA table_info(reads)")}
    good = {**store_module.MIGRATIONS, nxt: ("ALTER TABLE reads ADD COLUMN note TEXT",)}
    monkeypatch.setattr(store_module, "MIGRATIONS", good)
    async with SqliteStore(path) as store:
        assert await store.count() == 1
    with connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == nxt
        assert "note" in {row["name"] for row in db.execute("PRAGMA table_info(reads)")}
        assert db.execute("SELECT COUNT(*) FROM reads").fetchone()[0] == 1


async def test_a_file_of_a_newer_schema_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    with connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        db.commit()
    with pytest.raises(RuntimeError, match=rf"schema version {SCHEMA_VERSION + 1} is newer"):
        await SqliteStore(path).open()
    with connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []


async def test_refusing_a_newer_file_leaves_it_untouched(tmp_path: Path) -> None:
    """A file the store will not use must not be changed: ``open`` switches it to WAL before it looks
    at the version (store.py ``open``), so a newer program's rollback-journal file comes back in WAL."""
    path = tmp_path / "newer.db"
    with connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        db.commit()
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    with pytest.raises(RuntimeError, match="newer"):
        await SqliteStore(path).open()
    with connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_bad_options_raise_value_error(tmp_path: Path) -> None:
    for options in ({"batch_size": 0}, {"flush_interval": 0}, {"flush_interval": -1.0}, {"synchronous": "OFF"}):
        with pytest.raises(ValueError):  # noqa: PT011 — each message names its option
            SqliteStore(tmp_path / "x.db", **options)
    assert not (tmp_path / "x.db").exists()


async def test_a_store_that_is_not_open_refuses_reads(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    with pytest.raises(RuntimeError, match="not open"):
        await store.add(v4_read())
    async with store:
        pass
    with pytest.raises(RuntimeError, match="not open"):
        await store.add(v4_read())


# ---------------------------------------------------------------------------------------------------
# Batching and durability


async def test_a_full_batch_is_committed_without_waiting_for_the_flush_interval(tmp_path: Path) -> None:
    path = tmp_path / "reads.db"
    totals: list[int] = []
    async with SqliteStore(path, batch_size=10, flush_interval=60.0, on_commit=totals.append) as store:
        for n in range(9):
            await store.add(v4_read(when=T0 + timedelta(seconds=n)))
        await asyncio.sleep(0.05)
        assert count(path) == 0
        assert store.committed == 0
        await store.add(v4_read(when=T0 + timedelta(seconds=9)))
        await wait_for(lambda: count(path) == 10)  # the size did it: the flush interval is a minute
        assert store.committed == 10
        assert totals == [10]
        for n in range(10, 25):
            await store.add(v4_read(when=T0 + timedelta(seconds=n)))
        await wait_for(lambda: count(path) == 20)
        await asyncio.sleep(0.05)
        assert count(path) == 20  # the last 5 wait for their batch to fill (or for its time)
        assert totals == [10, 20]
        assert store.accepted == 25
    assert totals == [10, 20, 25]
    assert count(path) == 25


async def test_a_partial_batch_is_committed_after_the_flush_interval(tmp_path: Path) -> None:
    path = tmp_path / "reads.db"
    totals: list[int] = []
    async with SqliteStore(path, batch_size=500, flush_interval=0.1, on_commit=totals.append) as store:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await store.add(v4_read())
        assert count(path) == 0
        await wait_for(lambda: count(path) == 1)
        waited = loop.time() - start
        assert waited >= 0.09
        assert waited < 1.0
        assert totals == [1]
        # a second batch, later: committed on its own time too
        await asyncio.sleep(0.05)
        await store.add(v4_read(step=1))
        await store.add(v4_read(step=1))
        await wait_for(lambda: count(path) == 3)
        assert totals == [1, 3]
    assert totals == [1, 3]


async def test_close_commits_every_read_accepted(tmp_path: Path) -> None:
    path = tmp_path / "reads.db"
    totals: list[int] = []
    store = SqliteStore(path, batch_size=1000, flush_interval=60.0, on_commit=totals.append)
    async with store:
        for n in range(25):
            await store.on_read(v4_read(when=T0 + timedelta(seconds=n), step=1))
        await store.on_error(X, TimeoutError("no answer"))
        assert count(path) == 0
    assert store.accepted == store.committed == 25
    assert store.errors == 1
    assert totals == [25]
    assert count(path) == 25
    await store.close()  # closing twice is harmless


async def test_concurrent_writers_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    path = tmp_path / "reads.db"
    async with SqliteStore(path, batch_size=7, flush_interval=0.01) as store:

        async def writer(address: str) -> None:
            for n in range(30):
                await store.add(v4_read(address, T0 + timedelta(seconds=n)))
                if n % 4 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(*(writer(a) for a in (X, Y, Z)))
    with connect(path) as db:
        got = db.execute('SELECT "Meter_Address", time_utc FROM reads').fetchall()
    assert len(got) == 90
    assert len(set(map(tuple, got))) == 90


class FailOnce:
    """The next insert of a read of ``address`` fails once, as a transient error (disk full, I/O) would,
    part-way through its batch: a temporary trigger on the store's own connection (a test hook)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.armed = True

    def __call__(self, address: str) -> bool:
        if address == self.address and self.armed:
            self.armed = False
            return True
        return False

    async def install(self, store: SqliteStore) -> None:
        db = store._connection()
        await db.create_function("fail_once", 1, self)
        await db.execute(
            "CREATE TEMP TRIGGER fail_once BEFORE INSERT ON reads "
            "WHEN fail_once(NEW.\"Meter_Address\") BEGIN SELECT RAISE(FAIL, 'disk full'); END"
        )


def addresses(path: Path) -> list[str]:
    """The Meter_Address of every row, in order."""
    with connect(path) as db:
        return [row[0] for row in db.execute('SELECT "Meter_Address" FROM reads ORDER BY id')]


async def test_a_batch_that_failed_part_way_is_not_committed_twice(tmp_path: Path) -> None:
    """The rows inserted before the failing one stay in the open transaction; ``flush`` keeps the batch
    pending to try again, so unless that transaction is rolled back first they are committed twice."""
    path = tmp_path / "reads.db"
    failure = FailOnce(Y)
    async with SqliteStore(path, batch_size=100, flush_interval=60.0) as store:
        await failure.install(store)
        await store.add(v4_read(X))
        await store.add(v4_read(Y))
        with pytest.raises(sqlite3.Error):
            await store.flush()
        await store.flush()  # the batch is tried again, and goes in
    assert addresses(path) == [X, Y]


async def test_reads_of_a_batch_whose_commit_failed_once_are_committed_on_close(tmp_path: Path) -> None:
    """A full batch whose commit failed once is pending again; ``close`` must still commit it ("every
    read the store accepted is committed before shutdown completes"), not give up on the old error."""
    path = tmp_path / "reads.db"
    failure = FailOnce(Y)
    async with SqliteStore(path, batch_size=2, flush_interval=60.0) as store:
        await failure.install(store)
        await store.add(v4_read(X))
        with contextlib.suppress(sqlite3.Error):  # the failure may surface here, or not at all
            await store.add(v4_read(Y))
        await asyncio.sleep(0.05)
        assert not failure.armed  # the batch was tried, and failed
        assert store.accepted == 2
    assert sorted(addresses(path)) == [X, Y]
    assert store.committed == 2


async def test_a_batch_whose_commit_failed_once_is_committed_on_time(tmp_path: Path) -> None:
    """After a transient failure the rows are pending again; they must still be committed within about
    ``flush_interval`` (the documented bound of what a kill -9 can lose), not only when the next batch
    fills or the store closes."""
    path = tmp_path / "reads.db"
    failure = FailOnce(Y)
    async with SqliteStore(path, batch_size=2, flush_interval=0.1) as store:
        await failure.install(store)
        await store.add(v4_read(X))
        with contextlib.suppress(sqlite3.Error):  # the failure may surface here, or not at all
            await store.add(v4_read(Y))
        with contextlib.suppress(TimeoutError):
            await wait_for(lambda: len(addresses(path)) >= 2, limit=1.5)
        assert not failure.armed  # the batch was tried, and failed once
        assert sorted(addresses(path)) == [X, Y], "the failed batch was not tried again on time"


# ---------------------------------------------------------------------------------------------------
# What is stored


async def test_v3_and_v4_reads_share_the_table_with_nulls_where_a_field_is_absent(tmp_path: Path) -> None:
    path = tmp_path / "reads.db"
    reads = [v4_read(X), v3_read(when=T0 + timedelta(seconds=1)), v4_read(Y, T0 + timedelta(seconds=2), with_b=False)]
    async with SqliteStore(path) as store:
        await store.add_many(reads)
    with connect(path) as db:
        stored = db.execute("SELECT * FROM reads ORDER BY id").fetchall()
    assert [row["kind"] for row in stored] == ["v4", "v3", "v4"]
    names = {
        kind: {spec.name for spec in LAYOUTS[kind].fields} for kind in (BlockKind.V3, BlockKind.V4A, BlockKind.V4B)
    }
    v4_only_a = sorted(names[BlockKind.V4A] - names[BlockKind.V3])
    v3_only = sorted(names[BlockKind.V3] - names[BlockKind.V4A] - names[BlockKind.V4B])
    b_only = sorted(names[BlockKind.V4B] - names[BlockKind.V4A])
    assert "Line_Freq" in v4_only_a
    assert "Max_Demand" in v3_only
    assert "RMS_Watts_Max_Demand" in b_only
    for read, row in zip(reads, stored, strict=True):
        assert row["raw_a"] == read.a.raw
        assert row["raw_b"] == (read.b.raw if read.b else None)
        assert read.time is not None
        assert row["time_utc"] == read.time.timestamp()
        assert row["Meter_Address"] == read.address
        assert row["Meter_Time"] == read.fields["Meter_Time"]
        for column in expected_columns():
            assert row[column] == read.fields.get(column), column
            if column in read.fields:
                assert type(row[column]) is type(read.fields[column]), column
    full_v4, v3, a_only = stored
    assert all(full_v4[name] is not None for name in [*v4_only_a, *b_only])
    assert all(full_v4[name] is None for name in v3_only)
    assert all(v3[name] is None for name in v4_only_a)
    assert all(v3[name] is not None for name in v3_only)
    assert all(a_only[name] is None for name in b_only)
    assert all(a_only[name] is not None for name in v4_only_a)


async def test_text_with_quotes_is_stored_verbatim_and_queries_are_parameterized(tmp_path: Path) -> None:
    path = tmp_path / "reads.db"
    hostile = hostile_read()
    async with SqliteStore(path) as store:
        await store.add(hostile)
        await store.add(v4_read(X))
        await store.flush()
        assert await store.count(HOSTILE_ADDRESS) == 1
        assert await store.count("' OR '1'='1") == 0
        assert await store.count('" OR 1=1 --') == 0
        assert await store.count() == 2
        [row] = [r async for r in store.reads_since(HOSTILE_ADDRESS)]
        assert row["Meter_Address"] == HOSTILE_ADDRESS
        assert row["Meter_Time"] == HOSTILE_TIME
        assert row["Cos_Theta_Ln_1"] == "'100"
        assert row["kWh_Tot"] == 12.5
        assert row["raw_a"] == hostile.a.raw
        assert [r async for r in store.reads_since("x' OR 'a'='a")] == []
        assert [r async for r in store.reads_since(X + "' --")] == []
        latest = await store.latest()
        assert set(latest) == {HOSTILE_ADDRESS, X}
        [line] = [line async for line in store.export_json(HOSTILE_ADDRESS)]
        assert json.loads(line)["Meter_Time"] == HOSTILE_TIME
    with connect(path) as db:
        query = 'SELECT "Meter_Time" FROM reads WHERE "Meter_Address" = ?'
        assert db.execute(query, (HOSTILE_ADDRESS,)).fetchone()[0] == HOSTILE_TIME
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"reads", "settings", "writes"}


# ---------------------------------------------------------------------------------------------------
# Queries


async def _stored(path: Path) -> list[Read]:
    """X: 7 reads one minute apart (added out of order), Y: 3, a V3 meter: 2."""
    xs = [v4_read(X, T0 + timedelta(minutes=n), step=60) for n in range(7)]
    ys = [v4_read(Y, T0 + timedelta(minutes=n, seconds=30), step=60) for n in range(3)]
    v3s = [v3_read(when=T0 + timedelta(minutes=n)) for n in range(2)]
    async with SqliteStore(path) as store:
        await store.add_many([*xs[3:], *ys, *xs[:3], *v3s])
    return xs


async def test_reads_since_a_time_oldest_first_with_limit_and_chunks(tmp_path: Path) -> None:
    path = tmp_path / "reads.db"
    xs = await _stored(path)
    async with SqliteStore(path) as store:
        every = [row async for row in store.reads_since(X)]
        assert [row["time_utc"] for row in every] == [r.time.timestamp() for r in xs if r.time]
        assert [row["raw_a"] for row in every] == [r.a.raw for r in xs]
        assert {row["Meter_Address"] for row in every} == {X}
        since = T0 + timedelta(minutes=2)
        after = [row async for row in store.reads_since(X, since)]
        assert [row["raw_a"] for row in after] == [r.a.raw for r in xs[3:]]  # strictly after `since`
        assert [row["raw_a"] async for row in store.reads_since(X, since.timestamp())] == [r.a.raw for r in xs[3:]]
        assert [row["raw_a"] async for row in store.reads_since(X, since, limit=2)] == [r.a.raw for r in xs[3:5]]
        assert [row["raw_a"] async for row in store.reads_since(X, chunk=2)] == [r.a.raw for r in xs]
        assert [row["raw_a"] async for row in store.reads_since(X, chunk=1, limit=5)] == [r.a.raw for r in xs[:5]]
        assert [row async for row in store.reads_since(X, T0 + timedelta(hours=1))] == []
        assert [row async for row in store.reads_since("000000000000")] == []
        assert await store.count(X) == 7
        assert await store.count(Y) == 3
        assert await store.count() == 12


async def test_latest_gives_the_newest_read_of_every_meter(tmp_path: Path) -> None:
    path = tmp_path / "reads.db"
    xs = await _stored(path)
    async with SqliteStore(path) as store:
        latest = await store.latest()
        assert set(latest) == {X, Y, V3_ADDRESS}
        assert latest[X]["raw_a"] == xs[-1].a.raw
        assert latest[X]["time_utc"] == (T0 + timedelta(minutes=6)).timestamp()
        assert latest[Y]["time_utc"] == (T0 + timedelta(minutes=2, seconds=30)).timestamp()
        assert latest[V3_ADDRESS]["time_utc"] == (T0 + timedelta(minutes=1)).timestamp()
        assert latest[V3_ADDRESS]["kind"] == "v3"
    async with SqliteStore(tmp_path / "empty.db") as empty:
        assert await empty.latest() == {}


async def test_export_json_lines_with_hex_frames_and_iso_time(tmp_path: Path) -> None:
    path = tmp_path / "reads.db"
    xs = await _stored(path)
    async with SqliteStore(path) as store:
        lines = [line async for line in store.export_json(X, T0 + timedelta(minutes=3))]
        v3_lines = [line async for line in store.export_json(V3_ADDRESS)]
    assert len(lines) == 3
    for line, read in zip(lines, xs[4:], strict=True):
        assert "\n" not in line
        obj = json.loads(line)
        assert obj["raw_a"] == read.a.raw.hex()
        assert read.b is not None
        assert obj["raw_b"] == read.b.raw.hex()
        assert bytes.fromhex(obj["raw_a"]) == read.a.raw
        when = datetime.fromisoformat(obj["time"])
        assert when == read.time
        assert when.utcoffset() == timedelta(0)
        assert obj["time_utc"] == when.timestamp()
        assert obj["Meter_Address"] == X
        for name, value in read.fields.items():
            assert obj[name] == value, name
            assert type(obj[name]) is type(value), name  # JSON numbers stay numbers, texts stay texts
        assert obj["Max_Demand"] is None  # a V3 field: null
    assert len(v3_lines) == 2
    assert all(json.loads(line)["raw_b"] is None for line in v3_lines)


async def test_save_settings_keeps_one_row_per_block_whose_raw_decodes_to_its_fields(tmp_path: Path) -> None:
    path = tmp_path / "reads.db"
    m = model(Z)
    a = decode(m.frame(BlockKind.V4A), "v4a")
    scale = a.kwh_scale
    months_forward = decode(m.frame(BlockKind.MONTHS), "months", scale)
    months_reverse = decode(m.frame(BlockKind.MONTHS, reverse=True), "months", scale)
    schedules = decode(m.frame(BlockKind.SCHEDULES), "schedules")
    schedules_5_8 = decode(m.frame(BlockKind.SCHEDULES_5_8), "schedules_5_8")
    holidays = decode(m.frame(BlockKind.HOLIDAYS), "holidays")
    assert isinstance(months_forward, MonthsBlock)
    assert isinstance(months_reverse, MonthsBlock)
    assert isinstance(schedules, SchedulesBlock)
    assert isinstance(schedules_5_8, SchedulesBlock)
    assert isinstance(holidays, HolidaysBlock)
    snapshot = Settings(Read.of(a, time=T0), months_forward, months_reverse, schedules, schedules_5_8, holidays)
    kinds = {
        "months_forward": (BlockKind.MONTHS, scale),
        "months_reverse": (BlockKind.MONTHS, scale),
        "schedules": (BlockKind.SCHEDULES, None),
        "schedules_5_8": (BlockKind.SCHEDULES_5_8, None),
        "holidays": (BlockKind.HOLIDAYS, None),
    }
    later = T0 + timedelta(hours=1)
    async with SqliteStore(path) as store:
        await store.save_settings(snapshot)
        await store.save_settings(snapshot, when=later)
        assert await store.count() == 0  # not reads
    with connect(path) as db:
        stored = db.execute("SELECT * FROM settings ORDER BY id").fetchall()
    assert len(stored) == 10
    assert [row["time_utc"] for row in stored] == [T0.timestamp()] * 5 + [later.timestamp()] * 5
    assert {row["Meter_Address"] for row in stored} == {Z}
    assert [row["block"] for row in stored[:5]] == list(snapshot.blocks())
    for row in stored:
        kind, kwh_scale = kinds[row["block"]]
        block = snapshot.blocks()[row["block"]]
        assert row["raw"] == block.raw
        fields = json.loads(row["fields"])
        assert fields == dict(block.fields)
        assert fields == dict(decode(row["raw"], kind, kwh_scale).fields)
        assert row["kind"] == kind.value
        assert row["kwh_scale"] == (kwh_scale or 0)  # with the kind, enough to decode the raw block again
        assert fields == dict(decode(row["raw"], row["kind"], row["kwh_scale"]).fields)
    assert json.loads(stored[0]["fields"])["Month_1_Tot"] == m.months[0][0][0]


# ---------------------------------------------------------------------------------------------------
# Commits that keep failing, a file that goes away


class FailAlways(FailOnce):
    """Every insert fails, as on a full disk, until ``heal()``."""

    def __call__(self, address: str) -> bool:
        return self.armed

    def heal(self) -> None:
        self.armed = False


async def failing_store(path: Path, reads: int, max_pending: int) -> tuple[SqliteStore, FailAlways]:
    """A store whose commits all fail, given ``reads`` reads; it retries every 20 to 50 ms."""
    store = await SqliteStore(path, batch_size=2, flush_interval=0.02, max_pending=max_pending, retry_max=0.05).open()
    failure = FailAlways(X)
    await failure.install(store)
    for step in range(reads):
        with contextlib.suppress(sqlite3.Error):
            await store.add(v4_read(X, step=step))
    return store, failure


async def test_failing_commits_keep_at_most_max_pending_reads_and_close_names_every_read_lost(tmp_path: Path) -> None:
    path = tmp_path / "reads.db"
    store, _ = await failing_store(path, 9, max_pending=5)
    await wait_for(lambda: store.commit_error is not None)
    assert "disk full" in (store.commit_error or "")
    assert store.pending == 5  # the oldest went, counted
    assert store.lost == 4
    with pytest.raises(StoreError, match=r"^9 reads could not be committed to .*reads.db: .*disk full") as caught:
        await store.close()
    assert caught.value.lost == 9
    assert store.committed == 0
    assert addresses(path) == []


async def test_a_store_that_recovers_commits_what_it_kept_and_close_still_reports_what_it_dropped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "reads.db"
    store, failure = await failing_store(path, 5, max_pending=3)
    await wait_for(lambda: store.lost == 2)
    failure.heal()
    await wait_for(lambda: store.commit_error is None and store.committed == 3, limit=2.0)
    with pytest.raises(StoreError, match=r"^2 reads could not be committed"):
        await store.close()
    assert len(addresses(path)) == 3


async def test_queries_answer_from_what_is_committed_while_commits_fail(tmp_path: Path) -> None:
    path = tmp_path / "reads.db"
    async with SqliteStore(path, batch_size=100, flush_interval=60.0) as store:
        await store.add(v4_read(X, T0))
        await store.flush()
        failure = FailAlways(X)
        await failure.install(store)
        await store.add(v4_read(X, T0 + timedelta(seconds=1)))
        with pytest.raises(sqlite3.Error):
            await store.flush()
        assert store.commit_error is not None
        assert [row["time_utc"] async for row in store.reads_since(X)] == [T0.timestamp()]
        assert await store.count() == 1
        failure.heal()
    assert len(addresses(path)) == 2


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_file_deleted_or_replaced_while_open_is_opened_again_at_its_path(tmp_path: Path, how: str) -> None:
    path = tmp_path / "reads.db"
    async with SqliteStore(path, batch_size=100, flush_interval=60.0) as store:
        await store.add(v4_read(X, T0))
        await store.flush()
        for name in ("reads.db", "reads.db-wal", "reads.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        if how == "replaced":
            (tmp_path / "other.db").touch()
            (tmp_path / "other.db").rename(path)
        await store.add(v4_read(X, T0 + timedelta(seconds=1)))
        await store.flush()
        assert store.reopened == 1
        assert await store.count() == 1  # the new file holds what came after
    with connect(path) as db:
        assert [row[0] for row in db.execute("SELECT time_utc FROM reads")] == [(T0 + timedelta(seconds=1)).timestamp()]
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_a_file_that_cannot_be_opened_again_is_a_commit_error_and_is_tried_again(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "reads.db"
    store = await SqliteStore(path, batch_size=100, flush_interval=0.02, retry_max=0.05).open()
    try:
        for name in ("reads.db", "reads.db-wal", "reads.db-shm"):
            (folder / name).unlink(missing_ok=True)
        folder.rmdir()
        await store.add(v4_read(X, T0))
        await wait_for(lambda: store.commit_error is not None)
        assert "cannot open" in (store.commit_error or "")
        folder.mkdir()
        await wait_for(lambda: store.committed == 1, limit=2.0)
        assert store.reopened == 1
    finally:
        await store.close()


async def test_a_version_1_file_gets_ekmmeters_name_for_v4_b_offset_172_and_keeps_its_reads(tmp_path: Path) -> None:
    import ekm_async.store as store_module  # noqa: PLC0415

    path = tmp_path / "v1.db"
    with connect(path) as db:
        for statement in store_module.MIGRATIONS[1]:
            db.execute(statement)
        old_name = '"Max_Demand_Reset_Interval"'
        db.execute(f"INSERT INTO reads (time_utc, kind, raw_a, {old_name}) VALUES (1.0, 'v4', x'00', 3)")
        db.execute("PRAGMA user_version=1")
        db.commit()
    async with SqliteStore(path) as store:
        assert await store.count() == 1
    with connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 2
        columns = {row["name"] for row in db.execute("PRAGMA table_info(reads)")}
        assert "Max_Demand_Interval_Reset" in columns
        assert "Max_Demand_Reset_Interval" not in columns
        assert db.execute('SELECT "Max_Demand_Interval_Reset" FROM reads').fetchone()[0] == "daily"  # 3, in words


async def test_a_version_3_file_gets_minutes_words_and_numbers_counted_from_1(tmp_path: Path) -> None:
    """Schema 4 (docs/numbering.md): stored codes become what they stand for, and the settings snapshots'
    schedule and tariff numbers are counted from 1 — as a fresh decode of their raw frames gives them."""
    import ekm_async.store as store_module  # noqa: PLC0415

    holidays = decode(encode("holidays", {"Weekend_Schd": 1, "Holiday_Schd": 8, "Holiday_1_Mon": 12}), "holidays")
    schedules = decode(
        encode("schedules", {"Schedule_1_Period_2_Tariff": 4, "Season_2_Schedule": 3, "Schedule_1_Period_2_Hour": 7}),
        "schedules",
    )
    path = tmp_path / "v3.db"
    with connect(path) as db:
        for version in (1, 2, 3):
            for statement in store_module.MIGRATIONS[version]:
                db.execute(statement)
        columns = '(time_utc, kind, raw_a, "Max_Demand_Period", "Max_Demand_Interval_Reset")'
        db.execute(f"INSERT INTO reads {columns} VALUES (1.0, 'v4', x'00', 2, 3)")
        db.execute(f"INSERT INTO reads {columns} VALUES (2.0, 'v4', x'00', 3, 0)")
        for block in (holidays, schedules):
            numbered = {s.name for s in LAYOUTS[block.kind].fields if s.type is FieldType.NUMBER}
            old = {name: value - 1 if name in numbered else value for name, value in block.fields.items()}  # type: ignore[operator]
            db.execute(
                'INSERT INTO settings ("Meter_Address", time_utc, block, kind, kwh_scale, raw, fields) '
                "VALUES (?, 1.0, ?, ?, 0, ?, ?)",
                (X, block.kind.value, block.kind.value, block.raw, json.dumps(old)),
            )
        db.execute("PRAGMA user_version=3")
        db.commit()
    async with SqliteStore(path):
        pass
    with connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 4
        rows = db.execute('SELECT "Max_Demand_Period", "Max_Demand_Interval_Reset" FROM reads ORDER BY time_utc')
        assert [tuple(row) for row in rows] == [(30, "daily"), (60, "off")]
        for kind, fields in db.execute("SELECT kind, fields FROM settings"):
            block = holidays if kind == "holidays" else schedules
            assert json.loads(fields) == dict(block.fields)
    assert (holidays.Weekend_Schd, holidays.Holiday_Schd) == (1, 8)
    assert (schedules.Schedule_1_Period_2_Tariff, schedules.Season_2_Schedule) == (4, 3)
