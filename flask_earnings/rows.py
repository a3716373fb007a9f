"""Task and earnings rows, and the set-based, idempotent writes that store them.

A batch is written as plain SQL made once per dialect (see :class:`RowWriter`), rather than
through SQLAlchemy's per-row parameter processing: the writer stores thousands of rows a
second, and this is most of its cost.

Every write is an upsert that can be repeated: a task row only ever moves forward
(``running`` → ``interrupted`` → ``completed``/``failed``/``cancelled``, never back), and
an earnings record is written once per task. So a retried batch, a replayed spool file or
a recovered journal can never double a task or its earnings, in whatever order they come.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Connection, Dialect

from .money import format_money
from .tasks import EarningsBreakdown, Task

#: A task row: every attribute of the snapshot but its earnings, then the process that owns it.
TASK_COLUMNS = (*(field.name for field in dataclasses.fields(Task) if field.name != "earnings"), "owner")
RECORD_COLUMNS = (
    "task_id",
    "input_reward",
    "output_reward",
    "base_reward",
    "duration_bonus",
    "total",
    "rate_version",
    "recorded_at",
)
_TIME_COLUMNS = {"created_at", "started_at", "finished_at", "recorded_at"}
_MONEY_COLUMNS = {"input_reward", "output_reward", "base_reward", "duration_bonus", "total"}
FINAL_STATUSES = ("completed", "failed", "cancelled")

Row = tuple[Any, ...]


def task_row(task: Task, owner: str | None) -> Row:
    """The row of a task, in :data:`TASK_COLUMNS` order, with plain Python values."""
    return (
        task.id,
        task.request_id,
        task.status.value,
        task.framework,
        task.protocol,
        task.task_type,
        task.endpoint,
        task.model,
        task.device_id,
        task.client,
        task.streamed,
        task.input_tokens,
        task.output_tokens,
        task.cached_tokens,
        task.reasoning_tokens,
        None if task.tokens_source is None else task.tokens_source.value,
        task.created_at,
        task.started_at,
        task.finished_at,
        task.duration_ms,
        task.http_status,
        task.error,
        task.rate_version,
        owner,
    )


def record_row(task_id: str, earnings: EarningsBreakdown, rate_version: int | None, recorded_at: datetime) -> Row:
    return (
        task_id,
        earnings.input_reward,
        earnings.output_reward,
        earnings.base_reward,
        earnings.duration_bonus,
        earnings.total,
        rate_version,
        recorded_at,
    )


@dataclasses.dataclass(slots=True)
class Batch:
    """Rows for one transaction: the latest row of each task (by id), and earnings records."""

    tasks: dict[str, Row] = dataclasses.field(default_factory=dict)
    records: list[Row] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tasks) + len(self.records)

    def add_task(self, row: Row) -> None:
        self.tasks[row[0]] = row  # a later state of the same task replaces an earlier one

    def to_json(self) -> str:
        """One line of a spool file."""
        return json.dumps(
            {
                "tasks": [_plain(row) for row in self.tasks.values()],
                "records": [_plain(row) for row in self.records],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, line: str) -> Batch:
        data = json.loads(line)
        batch = cls()
        for row in data["tasks"]:
            batch.add_task(_typed(row, TASK_COLUMNS))
        batch.records = [_typed(row, RECORD_COLUMNS) for row in data["records"]]
        return batch


def _plain(row: Row) -> list[Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        return format_money(value) if isinstance(value, Decimal) else value

    return [plain(value) for value in row]


def _typed(values: Sequence[Any], columns: Sequence[str]) -> Row:
    return tuple(
        None
        if value is None
        else datetime.fromisoformat(value)
        if name in _TIME_COLUMNS
        else Decimal(value)
        if name in _MONEY_COLUMNS
        else value
        for name, value in zip(columns, values, strict=True)
    )


#: Rows a statement on SQLite: its driver lets go of the GIL for every statement it steps
#: through, and a busy request thread makes the writer wait for it back each time; one
#: statement of many rows waits once. (PostgreSQL's driver pipelines an ``executemany``.)
ROWS_A_STATEMENT = 200


class RowWriter:
    """Writes batches through one dialect: on SQLite, multi-row upserts of plain SQL made once
    for each number of rows; on PostgreSQL, an ``executemany`` of a one-row upsert."""

    def __init__(self, dialect: Dialect, tasks_table: str, records_table: str) -> None:
        if dialect.name not in ("sqlite", "postgresql"):
            raise RuntimeError(f"flask-earnings stores its records in SQLite or PostgreSQL, not {dialect.name}")
        quote = dialect.identifier_preparer.quote
        self._mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self._tasks_table = quote(tasks_table)
        self._records_table = quote(records_table)
        self._convert_tasks = _converter(dialect, TASK_COLUMNS)
        self._convert_records = _converter(dialect, RECORD_COLUMNS)
        self._statements: dict[tuple[str, int], str] = {}
        self._multi_row = dialect.name == "sqlite"

    def write(self, connection: Connection, batch: Batch) -> None:
        """Within the caller's transaction."""
        tasks = [self._convert_tasks(row) for row in batch.tasks.values()]
        records: dict[str, Row] = {}
        for row in batch.records:
            records.setdefault(row[0], self._convert_records(row))  # one a task, as the table wants
        for kind, rows in (("tasks", tasks), ("records", list(records.values()))):
            if not rows:
                continue
            if not self._multi_row:
                connection.exec_driver_sql(self._statement(kind, 1), rows)
                continue
            start = 0
            for size in statement_sizes(len(rows)):
                chunk = rows[start : start + size]
                start += size
                parameters = tuple(value for row in chunk for value in row)
                connection.exec_driver_sql(self._statement(kind, size), parameters)

    def _statement(self, kind: str, rows: int) -> str:
        statement = self._statements.get((kind, rows))
        if statement is None:
            if kind == "tasks":
                statement = _upsert_tasks(self._tasks_table, self._mark, rows)
            else:
                statement = _insert_records(self._records_table, self._mark, rows)
            self._statements[(kind, rows)] = statement
        return statement


def statement_sizes(rows: int) -> Iterator[int]:
    """``rows`` split into statements of ``ROWS_A_STATEMENT`` rows and then of powers of two.

    So that a writer prepares a handful of statements, not one for every number of rows a
    batch can hold: the driver keeps each statement it prepares in its cache, and a writer
    that made one for every number grew by some 20 MB over 100,000 requests.
    """
    whole, rest = divmod(rows, ROWS_A_STATEMENT)
    yield from [ROWS_A_STATEMENT] * whole
    size = 1 << (ROWS_A_STATEMENT.bit_length() - 1)
    while rest:
        if rest >= size:
            yield size
            rest -= size
        size >>= 1


def _values(columns: int, mark: str, rows: int) -> str:
    one = "(" + ", ".join([mark] * columns) + ")"
    return ", ".join([one] * rows)


def _upsert_tasks(table: str, mark: str, rows: int) -> str:
    columns = ", ".join(TASK_COLUMNS)
    updates = ", ".join(f"{name} = excluded.{name}" for name in TASK_COLUMNS if name != "id")
    final = ", ".join(f"'{status}'" for status in FINAL_STATUSES)
    return (
        f"INSERT INTO {table} ({columns}) VALUES {_values(len(TASK_COLUMNS), mark, rows)} "
        f"ON CONFLICT (id) DO UPDATE SET {updates} "
        # A row only moves forward: running → interrupted → final; a final row never changes.
        f"WHERE ({table}.status = 'running' AND excluded.status <> 'running') "
        f"OR ({table}.status = 'interrupted' AND excluded.status IN ({final}))"
    )


def _insert_records(table: str, mark: str, rows: int) -> str:
    columns = ", ".join(RECORD_COLUMNS)
    values = _values(len(RECORD_COLUMNS), mark, rows)
    return f"INSERT INTO {table} ({columns}) VALUES {values} ON CONFLICT (task_id) DO NOTHING"


def _converter(dialect: Dialect, columns: Iterable[str]) -> Callable[[Row], Row]:
    """Plain values → what the driver takes. PostgreSQL's takes them all; SQLite stores times
    as SQLAlchemy does (naive UTC text, so SQLAlchemy reads them back) and money as text."""
    if dialect.name != "sqlite":
        return lambda row: row
    times = [index for index, name in enumerate(columns) if name in _TIME_COLUMNS]
    money = [index for index, name in enumerate(columns) if name in _MONEY_COLUMNS]

    def convert(row: Row) -> Row:
        values = list(row)
        for index in times:
            value = values[index]
            if value is not None:
                if value.tzinfo is not UTC:
                    value = value.astimezone(UTC)
                values[index] = value.isoformat(" ", "microseconds")[:26]  # without the "+00:00"
        for index in money:
            value = values[index]
            if value is not None:
                values[index] = format(value, "f")
        return tuple(values)

    return convert
