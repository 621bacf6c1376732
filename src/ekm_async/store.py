"""Reads and settings in SQLite, through aiosqlite: an observer for a :class:`~ekm_async.Poller`.

* One ``reads`` table: the union of the V3 and V4 fields as typed columns (``REAL`` for scaled
  numbers, ``INTEGER``, ``TEXT``), the host time of the read (``time_utc``, seconds since the epoch,
  UTC), the meter kind and the raw A and B frames; indexed on (``Meter_Address``, ``time_utc``). A
  ``settings`` table keeps settings snapshots (every block raw, and its fields as JSON).
* WAL journal, ``synchronous=NORMAL``: a committed batch survives the process being killed; the file
  is never corrupted. The schema version is ``PRAGMA user_version``; opening an older file migrates it.
* Reads are batched: a batch is committed when it holds ``batch_size`` reads or ``flush_interval``
  seconds after its first read, whichever comes first. **Killing the process loses at most the reads
  of the batch not yet committed** — at most ``flush_interval`` seconds of reads. :meth:`close`
  commits everything accepted. SQL is parameterized throughout.
* A commit that fails (a full disk, an I/O error) keeps its reads pending and is tried again, every
  ``flush_interval`` doubled per failure up to ``retry_max``; ``commit_error`` says why meanwhile.
  At most ``max_pending`` reads wait: beyond that the oldest are dropped and counted in ``lost``.
  :meth:`close` tries once more, then raises :class:`~ekm_async.StoreError` naming how many reads
  were lost in all (none are lost silently).
* Before each commit the store checks that the file at ``path`` is still the one it opened (device
  and inode, as :class:`logging.handlers.WatchedFileHandler` does): a file deleted or replaced
  meanwhile is closed and ``path`` opened again (created if need be; counted in ``reopened``), so
  reads never go on into a file nobody can see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aiosqlite

from .audit import WriteRecord
from .blocks import Read
from .calculated import CALCULATED_NAMES, Value
from .errors import StoreError
from .layouts import LAYOUTS, MINUTES, RESET_INTERVALS, BlockKind, FieldSpec, FieldType
from .meters import Settings

__all__ = ["READ_COLUMNS", "SCHEMA_VERSION", "SqliteStore"]

_SQL_TYPE = {FieldType.INT: "INTEGER", FieldType.FLOAT: "REAL", FieldType.NUMBER: "INTEGER"}
log = logging.getLogger("ekm_async.store")


def _sql_type(spec: FieldSpec) -> str:
    if spec.type is FieldType.CODE:
        return "INTEGER" if spec.says_numbers else "TEXT"
    return _SQL_TYPE.get(spec.type, "TEXT")


def _field_columns() -> dict[str, str]:
    """Field name → SQL type: V4 A, then B, then V3's own fields, then the calculated ones."""
    columns: dict[str, str] = {}
    for kind in (BlockKind.V4A, BlockKind.V4B, BlockKind.V3):
        for spec in LAYOUTS[kind].fields:
            columns.setdefault(spec.name, _sql_type(spec))
    for name in sorted(CALCULATED_NAMES):
        columns[name] = "INTEGER"
    return columns


FIELD_COLUMNS = _field_columns()
META_COLUMNS = {"time_utc": "REAL NOT NULL", "kind": "TEXT NOT NULL", "raw_a": "BLOB NOT NULL", "raw_b": "BLOB"}
READ_COLUMNS = (*META_COLUMNS, *FIELD_COLUMNS)
"""The columns of ``reads`` (besides ``id``), in order."""


_V1_NAMES = {"Max_Demand_Interval_Reset": "Max_Demand_Reset_Interval"}
"""Columns named otherwise in schema version 1 (renamed by a later migration)."""


def _create_reads(names: dict[str, str]) -> str:
    """The ``reads`` table, its columns renamed per ``names`` (as an earlier schema version had them)."""
    columns = ",\n  ".join(
        f'"{names.get(name, name)}" {sql}' for name, sql in {**META_COLUMNS, **FIELD_COLUMNS}.items()
    )
    return f"CREATE TABLE reads (\n  id INTEGER PRIMARY KEY,\n  {columns}\n)"


def _case(column: str, codes: Mapping[int, int | str]) -> str:
    """``UPDATE reads`` turning ``column``'s codes into what they stand for (an unknown code: NULL)."""
    whens = " ".join(f"WHEN {code} THEN {said!r}" for code, said in codes.items())
    return f'UPDATE reads SET "{column}" = CASE "{column}" {whens} END'


_NUMBERED = sorted(
    f.name
    for kind in (BlockKind.SCHEDULES, BlockKind.SCHEDULES_5_8, BlockKind.HOLIDAYS)
    for f in LAYOUTS[kind].fields
    if f.type is FieldType.NUMBER
)
"""The settings fields that hold a schedule or tariff number (0-based on the wire, counted from 1)."""

# Version → the statements that bring a file from the version before to it. Append, never edit.
MIGRATIONS: dict[int, Sequence[str]] = {
    1: (
        _create_reads(_V1_NAMES),
        'CREATE INDEX reads_address_time ON reads ("Meter_Address", time_utc)',
        'CREATE TABLE settings (\n  id INTEGER PRIMARY KEY,\n  "Meter_Address" TEXT NOT NULL,\n'
        "  time_utc REAL NOT NULL,\n  block TEXT NOT NULL,\n  kind TEXT NOT NULL,\n  kwh_scale INTEGER NOT NULL,\n"
        "  raw BLOB NOT NULL,\n  fields TEXT NOT NULL\n)",
        'CREATE INDEX settings_address_time ON settings ("Meter_Address", time_utc)',
    ),
    2: (  # V4 B offset 172 takes ekmmeters' name
        'ALTER TABLE reads RENAME COLUMN "Max_Demand_Reset_Interval" TO "Max_Demand_Interval_Reset"',
    ),
    3: (  # the audit trail of writes (ekm_async.audit)
        "CREATE TABLE writes (\n  id INTEGER PRIMARY KEY,\n  time_utc REAL NOT NULL,\n"
        '  "Meter_Address" TEXT NOT NULL,\n  setting TEXT NOT NULL,\n  arguments TEXT NOT NULL,\n'
        "  actor TEXT NOT NULL,\n  outcome TEXT NOT NULL,\n  error TEXT NOT NULL,\n  changes TEXT NOT NULL\n)",
        'CREATE INDEX writes_address_time ON writes ("Meter_Address", time_utc)',
    ),
    4: (  # one numbering and real units (docs/numbering.md): periods in minutes, intervals in words,
        # schedules and tariffs counted from 1 in the settings snapshots' fields
        _case("Max_Demand_Period", MINUTES),
        _case("Max_Demand_Interval_Reset", RESET_INTERVALS),
        "UPDATE settings SET fields = (SELECT json_group_object(key, CASE WHEN key IN "
        f"({', '.join(repr(n) for n in _NUMBERED)}) THEN value + 1 ELSE value END) FROM json_each(settings.fields)) "
        "WHERE kind IN ('schedules', 'schedules_5_8', 'holidays')",
    ),
}
SCHEMA_VERSION = max(MIGRATIONS)

_INSERT_WRITE = (
    'INSERT INTO writes (time_utc, "Meter_Address", setting, arguments, actor, outcome, error, changes) '
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT = (
    f"INSERT INTO reads ({', '.join(f'{c!r}'.replace(chr(39), chr(34)) for c in READ_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(READ_COLUMNS))})"
)


def row_of(read: Read) -> tuple[Any, ...]:
    """The ``reads`` row of ``read``."""
    when = read.time or datetime.now(UTC)
    fields = read.fields
    meta = (when.timestamp(), "v3" if read.v3 else "v4", read.a.raw, read.b.raw if read.b else None)
    return (*meta, *map(fields.get, FIELD_COLUMNS))


class SqliteStore:
    """Reads (and settings snapshots) in an SQLite file. ``async with SqliteStore(path) as store:``

    As an observer of a poller it stores every read it is given (``on_read``); ``add`` does the same
    directly. Queries: :meth:`reads_since`, :meth:`latest`, :meth:`export_json`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        synchronous: str = "NORMAL",
        on_commit: Callable[[int], None] | None = None,
        max_pending: int = 20_000,
        retry_max: float = 30.0,
    ) -> None:
        """``on_commit(total)`` is called after every commit with the number of reads committed so far.
        ``max_pending``: reads kept while commits fail (about 2.7 kB each)."""
        if batch_size < 1 or flush_interval <= 0:
            raise ValueError("batch_size must be ≥ 1 and flush_interval > 0")
        if max_pending < batch_size or retry_max <= 0:
            raise ValueError("max_pending must be ≥ batch_size and retry_max > 0")
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL; got {synchronous!r}")
        self.path = os.fspath(path)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.retry_max = retry_max
        self._synchronous = synchronous.upper()
        self._on_commit = on_commit
        self._opened = False
        self._db: aiosqlite.Connection | None = None
        """None while open only if the file went away and could not be opened again yet."""
        self._identity: tuple[int, int] | None = None
        """(device, inode) of the file opened."""
        self._pending: list[tuple[Any, ...]] = []
        self._first_pending = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._writing: asyncio.Task[None] | None = None
        """A full batch being committed while the next one fills."""
        self._lock = asyncio.Lock()
        self._recording: set[asyncio.Task[None]] = set()
        """Audit records being stored."""
        self.writes_lost = 0
        """Audit records that could not be stored."""
        self._wake = asyncio.Event()
        self._lost_cause = ""
        self._committing = 0
        """Reads of the commit in progress."""
        self.accepted = 0
        """Reads handed to the store."""
        self.committed = 0
        """Reads committed to the file."""
        self.errors = 0
        """Reads reported to ``on_error`` (not stored)."""
        self.lost = 0
        """Reads accepted that will never be committed: dropped beyond ``max_pending`` while commits
        failed, or still pending when :meth:`close` could not commit them."""
        self.commit_error: str | None = None
        """Why the last commit failed, while commits fail; None once one succeeds."""
        self.failed_commits = 0
        self.reopened = 0
        """Times the file was found deleted or replaced, and ``path`` opened again."""

    # -----------------------------------------------------------------------------------------------
    # Lifecycle

    async def open(self) -> SqliteStore:
        self._db = await self._open_file()
        self._identity = await self._file_identity()
        self._opened = True
        self._flusher = asyncio.get_running_loop().create_task(self._flush_on_time(), name="ekm-store-flush")
        return self

    async def _open_file(self) -> aiosqlite.Connection:
        if self.path != ":memory:" and not self.path.startswith("file:"):
            # A path that cannot be opened fails here, in a thread that is done when it fails: aiosqlite's own
            # thread, failing, answers later, into an event loop that may have closed by then (a traceback).
            await asyncio.get_running_loop().run_in_executor(None, _openable, self.path)
        db = await aiosqlite.connect(self.path)
        try:
            await self._migrate(db)  # refuses a newer file before anything changes it
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute(f"PRAGMA synchronous={self._synchronous}")
        except BaseException:
            await db.close()
            raise
        return db

    async def _file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the file at ``path`` now; None if there is none (or it is not a file)."""
        if self.path == ":memory:" or self.path.startswith("file:"):
            return (0, 0)
        try:
            st = await asyncio.get_running_loop().run_in_executor(None, os.stat, self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    async def _check_file(self) -> aiosqlite.Connection:
        """The connection to the file at ``path``: the one opened, or, if that file was deleted or
        replaced, a new one (``sqlite3.Error`` if the path cannot be opened now)."""
        if self._db is not None and await self._file_identity() == self._identity:
            return self._db
        old, self._db = self._db, None
        if old is not None:
            log.warning("%s was deleted or replaced while open: opening it again", self.path)
            with contextlib.suppress(sqlite3.Error):
                await old.close()  # its WAL goes with it, before a new file takes the name
        try:
            self._db = await self._open_file()
        except (sqlite3.Error, RuntimeError, OSError) as exc:
            raise sqlite3.OperationalError(f"cannot open {self.path} again: {exc}") from exc
        self._identity = await self._file_identity()
        self.reopened += 1
        return self._db

    async def close(self) -> None:
        """Commit every read accepted, then close the file. :class:`~ekm_async.StoreError` if any read
        accepted could not be committed (the file is closed all the same)."""
        if not self._opened:
            return
        self._opened = False
        try:
            await asyncio.gather(*self._recording)  # audit records on their way are stored first
            if self._flusher is not None:
                self._flusher.cancel()
                await asyncio.gather(self._flusher, return_exceptions=True)
            try:
                await self._flush_pending()
            except (sqlite3.Error, OSError) as exc:
                self._drop(len(self._pending), str(exc))
            if self.lost:
                raise StoreError(self.path, self.lost, self._lost_cause)
        finally:
            db, self._db = self._db, None
            if db is not None:
                with contextlib.suppress(sqlite3.Error):  # e.g. the checkpoint at close on a full disk
                    await db.close()

    @property
    def pending(self) -> int:
        """Reads accepted and not yet committed."""
        return len(self._pending) + self._committing

    async def __aenter__(self) -> SqliteStore:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @staticmethod
    async def _migrate(db: aiosqlite.Connection) -> None:
        async with db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"schema version {version} is newer than this ekm-async's ({SCHEMA_VERSION})")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            await db.execute("BEGIN")
            try:
                for statement in MIGRATIONS[target]:
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version={target}")
            except BaseException:
                await db.rollback()
                raise
            await db.commit()

    def _connection(self) -> aiosqlite.Connection:
        if not self._opened:
            raise RuntimeError("the store is not open")
        if self._db is None:
            raise sqlite3.OperationalError(f"{self.path} went away and cannot be opened again yet")
        return self._db

    # -----------------------------------------------------------------------------------------------
    # Writing

    async def on_read(self, read: Read) -> None:
        """Observer: store ``read`` (batched)."""
        await self.add(read)

    async def on_error(self, meter: str, error: Exception) -> None:
        """Observer: failed reads are not stored; they are counted."""
        self.errors += 1

    async def add(self, read: Read) -> None:
        """Accept ``read``; it is committed with its batch."""
        if not self._opened:
            raise RuntimeError("the store is not open")
        if not self._pending:
            self._first_pending = time.monotonic()
            self._wake.set()
        if len(self._pending) >= self.max_pending:
            self._drop(1, self.commit_error or "too many reads pending")
        self._pending.append(row_of(read))
        self.accepted += 1
        if len(self._pending) >= self.batch_size and self.commit_error is None:  # failing: the flusher retries
            await self._settle()  # one batch on its way at a time
            rows, self._pending = self._pending, []
            self._writing = asyncio.get_running_loop().create_task(self._commit(rows), name="ekm-store-commit")

    async def add_many(self, reads: Iterable[Read]) -> None:
        for read in reads:
            await self.add(read)

    async def flush(self) -> None:
        """Commit what is pending now (after the batch on its way, if any)."""
        if not self._opened:
            raise RuntimeError("the store is not open")
        await self._flush_pending()

    async def _flush_pending(self) -> None:
        with contextlib.suppress(sqlite3.Error, OSError):
            await self._settle()  # a batch that failed is pending again: committed below or raised there
        rows, self._pending = self._pending, []
        if rows:
            await self._commit(rows)

    async def _make_visible(self) -> None:
        """Before a query: commit what was accepted, so that it is seen — unless commits are failing,
        in which case the query sees what is committed."""
        if self.commit_error is None:
            with contextlib.suppress(sqlite3.Error, OSError):
                await self._flush_pending()

    async def _settle(self) -> None:
        """Wait for the batch on its way; its failure is raised here (its rows are pending again)."""
        task, self._writing = self._writing, None
        if task is not None:
            await task

    async def _commit(self, rows: list[tuple[Any, ...]]) -> None:
        self._committing += len(rows)
        try:
            await self._commit_locked(rows)
        finally:
            self._committing -= len(rows)

    async def _commit_locked(self, rows: list[tuple[Any, ...]]) -> None:
        async with self._lock:
            try:
                db = await self._check_file()
                try:
                    await db.executemany(_INSERT, rows)
                    await db.commit()
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        await db.rollback()  # nothing of the batch stays half-inserted
                    raise
            except BaseException as exc:
                if isinstance(exc, sqlite3.Error | OSError):
                    self.commit_error = str(exc) or type(exc).__name__
                    self.failed_commits += 1
                self._requeue(rows)
                raise
            self.commit_error = None
            self.committed += len(rows)
            if self._on_commit is not None:
                self._on_commit(self.committed)

    def _requeue(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows whose commit failed: pending again, first, and due on time as when they arrived; beyond
        ``max_pending`` the oldest are dropped."""
        if not self._pending:
            self._first_pending = time.monotonic()
        self._pending[:0] = rows
        self._drop(len(self._pending) - self.max_pending, self.commit_error or "commit failed")
        self._wake.set()

    def _drop(self, count: int, cause: str) -> None:
        """Drop the ``count`` oldest pending reads: they are lost (counted, and reported at close)."""
        if count > 0:
            del self._pending[:count]
            self.lost += count
            self._lost_cause = cause
            log.error("%d reads dropped, never to be committed to %s: %s", count, self.path, cause)

    async def _flush_on_time(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                due = self._first_pending + self.flush_interval - time.monotonic()
                if due > 0:
                    await asyncio.sleep(due)
                    continue
                try:
                    await self._flush_pending()
                except (sqlite3.Error, OSError):  # kept pending; tried again, less and less often
                    failures += 1
                    backoff = self.flush_interval * 2 ** min(failures - 1, 30)
                    await asyncio.sleep(min(max(self.retry_max, self.flush_interval), backoff))
                else:
                    failures = 0

    def record_write(self, record: WriteRecord) -> None:
        """A write listener (``bus.add_write_listener(store.record_write)``): ``record`` goes to the
        ``writes`` table, committed at once in a task of its own (:meth:`close` waits for it). A record
        that cannot be committed is logged as an error and counted in :attr:`writes_lost`."""
        if not self._opened:
            raise RuntimeError("the store is not open")
        row = (
            record.time.timestamp(),
            record.meter,
            record.setting,
            json.dumps(dict(record.arguments)),
            record.actor,
            record.outcome,
            record.error,
            json.dumps(dict(record.changes)),
        )
        task = asyncio.get_running_loop().create_task(self._insert_write(row, record), name="ekm-store-write")
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _insert_write(self, row: tuple[Any, ...], record: WriteRecord) -> None:
        async with self._lock:
            try:
                db = await self._check_file()
                await db.execute(_INSERT_WRITE, row)
                await db.commit()
            except (sqlite3.Error, OSError) as exc:
                self.writes_lost += 1
                log.error("the audit record %r was not stored in %s: %s", record.message(), self.path, exc)

    async def writes(self, address: str | None = None, *, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest audit records (of ``address`` if given), newest first."""
        where, params = ('WHERE "Meter_Address" = ?', [address]) if address else ("", [])
        sql = f"SELECT * FROM writes {where} ORDER BY time_utc DESC, id DESC LIMIT ?"
        await asyncio.gather(*self._recording)
        async with self._connection().execute(sql, [*params, limit]) as cursor:
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]
        for row in rows:
            row["arguments"], row["changes"] = json.loads(row["arguments"]), json.loads(row["changes"])
        return rows

    async def save_settings(self, settings: Settings, when: datetime | None = None) -> None:
        """Store a settings snapshot: one row per block, raw and as JSON fields."""
        stamp = (when or settings.read.time or datetime.now(UTC)).timestamp()
        address = settings.read.address
        rows = [
            (address, stamp, name, block.kind.value, block.kwh_scale, block.raw, json.dumps(dict(block.fields)))
            for name, block in settings.blocks().items()
        ]
        db = self._connection()
        async with self._lock:
            await db.executemany(
                'INSERT INTO settings ("Meter_Address", time_utc, block, kind, kwh_scale, raw, fields) '
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            await db.commit()

    # -----------------------------------------------------------------------------------------------
    # Reading

    async def reads_since(
        self, address: str, since: datetime | float = 0.0, *, limit: int | None = None, chunk: int = 500
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The reads of ``address`` after ``since`` (a datetime or epoch seconds), oldest first, as dicts
        of column → value. Fetched in chunks of ``chunk`` rows."""
        if isinstance(since, datetime) and since.tzinfo is None:
            raise ValueError("since must be an aware datetime (e.g. datetime.now(UTC)) or epoch seconds")
        await self._make_visible()
        start = since.timestamp() if isinstance(since, datetime) else float(since)
        sql = 'SELECT * FROM reads WHERE "Meter_Address" = ? AND time_utc > ? ORDER BY time_utc, id'
        params: list[Any] = [address, start]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        async with self._connection().execute(sql, params) as cursor:
            names = [d[0] for d in cursor.description]
            while rows := await cursor.fetchmany(chunk):
                for row in rows:
                    yield dict(zip(names, row, strict=True))

    async def latest(self) -> dict[str, dict[str, Any]]:
        """The newest read of every meter, by address."""
        sql = (
            'SELECT r.* FROM reads r JOIN (SELECT "Meter_Address" AS a, MAX(time_utc) AS t FROM reads '
            'GROUP BY "Meter_Address") m ON r."Meter_Address" = m.a AND r.time_utc = m.t ORDER BY r.id'
        )
        await self._make_visible()
        async with self._connection().execute(sql) as cursor:
            names = [d[0] for d in cursor.description]
            return {row[names.index("Meter_Address")]: dict(zip(names, row, strict=True)) async for row in cursor}

    async def count(self, address: str | None = None) -> int:
        await self._make_visible()
        sql = "SELECT COUNT(*) FROM reads"
        params: tuple[str, ...] = ()
        if address is not None:
            sql, params = 'SELECT COUNT(*) FROM reads WHERE "Meter_Address" = ?', (address,)
        async with self._connection().execute(sql, params) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def export_json(self, address: str, since: datetime | float = 0.0) -> AsyncGenerator[str, None]:
        """JSON lines, one per read: every column, raw frames as hex, time also as ISO 8601 UTC."""
        async for row in self.reads_since(address, since):
            yield json.dumps(_jsonable(row))


def _jsonable(row: dict[str, Any]) -> dict[str, Value | None]:
    out: dict[str, Value | None] = {}
    for name, value in row.items():
        out[name] = value.hex() if isinstance(value, bytes) else value
    out["time"] = datetime.fromtimestamp(row["time_utc"], UTC).isoformat()
    return out


def _openable(path: str) -> None:
    """``sqlite3.Error`` if SQLite cannot open (or make) the file at ``path``."""
    sqlite3.connect(path).close()
