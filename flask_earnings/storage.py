"""The tables of task records and earnings, and the set-based writes the recorder makes.

The tables are SQLAlchemy Core tables on a ``MetaData``: the app's own (``db.metadata``,
so that Flask-Migrate/Alembic autogenerate sees them) or the extension's private one.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine

from .money import Money, register_sqlite_functions
from .rows import TASK_COLUMNS, Batch, RowWriter
from .tasks import EarningsBreakdown, Task, TaskStatus, TokensSource

TASKS_TABLE = "earnings_tasks"
RECORDS_TABLE = "earnings_records"
VERSIONS_TABLE = "earnings_rate_versions"


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, SQLite (which keeps no zone) included."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: task times are aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Tables:
    tasks: sa.Table
    records: sa.Table
    versions: sa.Table


def define_tables(metadata: sa.MetaData) -> Tables:
    """The tables on ``metadata``; defined once, found again on later calls."""
    if TASKS_TABLE in metadata.tables:
        return Tables(*(metadata.tables[name] for name in (TASKS_TABLE, RECORDS_TABLE, VERSIONS_TABLE)))
    tasks = sa.Table(
        TASKS_TABLE,
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("request_id", sa.String(200)),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("framework", sa.String(64), nullable=False),
        sa.Column("protocol", sa.String(16), nullable=False),
        sa.Column("task_type", sa.String(64), nullable=False),
        sa.Column("endpoint", sa.String(255), nullable=False),
        sa.Column("model", sa.String(255)),
        sa.Column("device_id", sa.String(255)),
        sa.Column("client", sa.String(255)),
        sa.Column("streamed", sa.Boolean, nullable=False),
        sa.Column("input_tokens", sa.BigInteger),
        sa.Column("output_tokens", sa.BigInteger),
        sa.Column("cached_tokens", sa.BigInteger),
        sa.Column("reasoning_tokens", sa.BigInteger),
        sa.Column("tokens_source", sa.String(16)),
        sa.Column("created_at", UTCDateTime, nullable=False, index=True),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("duration_ms", sa.BigInteger),
        sa.Column("http_status", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("rate_version", sa.Integer),
        # The process that ran the task (host, boot, pid, start time): a task left running by
        # a process that is gone can then be told from one that a live process still runs.
        sa.Column("owner", sa.String(255)),
    )
    records = sa.Table(
        RECORDS_TABLE,
        metadata,
        # One record per task, enforced by the key: a retried write cannot pay twice.
        sa.Column("task_id", sa.String(36), sa.ForeignKey(f"{TASKS_TABLE}.id"), primary_key=True),
        sa.Column("input_reward", Money, nullable=False),
        sa.Column("output_reward", Money, nullable=False),
        sa.Column("base_reward", Money, nullable=False),
        sa.Column("duration_bonus", Money, nullable=False),
        sa.Column("total", Money, nullable=False),
        sa.Column("rate_version", sa.Integer),
        sa.Column("recorded_at", UTCDateTime, nullable=False, index=True),
    )
    versions = sa.Table(
        VERSIONS_TABLE,
        metadata,
        # Append-only: a version is never updated or deleted; the key makes two writers of
        # the same next number fail but one.
        sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(255)),
        sa.Column("request_id", sa.String(200)),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("based_on", sa.Integer),
        sa.Column("rolled_back_from", sa.Integer),
        sa.Column("rate_table", sa.Text, nullable=False),
        sa.Column("changes", sa.Text, nullable=False),
    )
    return Tables(tasks, records, versions)


class Store:
    """Reads and writes the tables through one engine, found lazily (after any fork)."""

    def __init__(self, tables: Tables, engine: Callable[[], Engine], *, owned: bool) -> None:
        """``owned``: the engine and the tables are the extension's own (no ``db`` given),
        so it creates the tables and closes the engine's connections when it is done."""
        self.tables = tables
        self._engine_factory = engine
        self._engine: Engine | None = None
        self._owned = owned
        self._ready = False
        self._lock = threading.RLock()
        self._row_writer: RowWriter | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    engine = self._engine_factory()
                    if self._owned:
                        weakref.finalize(self, engine.dispose)
                    self._engine = engine
        return self._engine

    def after_fork(self) -> None:
        """Drop the parent's pooled connections without closing them under the parent."""
        if self._engine is not None:
            self._engine.dispose(close=False)
        self._lock = threading.RLock()

    def connect(self) -> Connection:
        """A connection with the tables in place and the SQLite money functions registered."""
        self._prepare()
        connection = self.engine.connect()
        register_sqlite_functions(connection.connection.dbapi_connection)
        return connection

    def write(self, batch: Batch) -> None:
        """One transaction; all of it is stored or none of it. Repeating it changes nothing."""
        with self.connect() as connection, connection.begin():
            self._writer(connection).write(connection, batch)

    def _writer(self, connection: Connection) -> RowWriter:
        if self._row_writer is None:
            self._row_writer = RowWriter(connection.dialect, self.tables.tasks.name, self.tables.records.name)
        return self._row_writer

    def load_task(self, task_id: str) -> Task | None:
        query = tasks_with_earnings(self.tables).where(self.tables.tasks.c.id == task_id)
        with self.connect() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else task_from_row(row)

    def create_tables(self) -> list[str]:
        """Create whichever of the tables are missing, with a ``db`` too (where a migration
        normally makes them); the names of those created. Existing tables are left as they are."""
        tables = [self.tables.tasks, self.tables.records, self.tables.versions]
        with self.engine.begin() as connection:
            inspector = sa.inspect(connection)
            missing = [table for table in tables if not inspector.has_table(table.name, schema=table.schema)]
            self.tables.tasks.metadata.create_all(connection, tables=missing, checkfirst=True)
        return [table.name for table in missing]

    def _prepare(self) -> None:
        if self._ready:
            return
        with self._lock:
            if not self._ready and self._owned:
                tables = [self.tables.tasks, self.tables.records, self.tables.versions]
                self.tables.tasks.metadata.create_all(self.engine, tables=tables, checkfirst=True)
            self._ready = True


_EARNINGS_COLUMNS = ("input_reward", "output_reward", "base_reward", "duration_bonus", "total")


def tasks_with_earnings(tables: Tables) -> sa.Select[Any]:
    """Every task row with its earnings columns (``NULL`` when it earned nothing)."""
    tasks, records = tables.tasks, tables.records
    return sa.select(tasks, *[records.c[name] for name in _EARNINGS_COLUMNS]).select_from(
        tasks.outerjoin(records, records.c.task_id == tasks.c.id)
    )


def task_from_row(row: Any) -> Task:
    values = {name: row[name] for name in TASK_COLUMNS if name != "owner"}
    values["status"] = TaskStatus(values["status"])
    values["streamed"] = bool(values["streamed"])
    if values["tokens_source"] is not None:
        values["tokens_source"] = TokensSource(values["tokens_source"])
    earnings = None
    if row["total"] is not None:
        earnings = EarningsBreakdown(**{name: row[name] for name in _EARNINGS_COLUMNS})
    return Task(**values, earnings=earnings)


def sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    """WAL lets the admin read while the writer writes; a busy timeout lets workers share a file."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def standalone_engine(uri: str) -> Engine:
    engine = sa.create_engine(uri)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", sqlite_pragmas)
    return engine
