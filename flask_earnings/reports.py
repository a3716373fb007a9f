"""The summary of the records: counts, tokens and earnings, grouped, over a time range.

One query serves every reader — the ``flask earnings report`` command, the admin dashboard
and its CSV, and the JSON API — so that they cannot disagree. Sums are taken by the
database (money with :class:`~flask_earnings.money.money_sum`, exact on SQLite too), one
row per group and status; the statuses are folded into each group's row here, and the
grand total is the sum of the groups, so every figure adds up to the last decimal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import GenericFunction

from .money import MONEY_CONTEXT, ZERO, format_money, money_sum
from .storage import Store
from .tasks import TaskStatus

#: What a report can be grouped by, and the task column each reads.
GROUPS = {
    "framework": "framework",
    "task_type": "task_type",
    "model": "model",
    "client": "client",
    "device": "device_id",
    "hour": "created_at",
    "day": "created_at",
}
#: What a report can be narrowed to, by equality (``device`` is the task's ``device_id``).
FILTERS = ("status", "framework", "task_type", "model", "client", "device", "endpoint")


def task_column(name: str) -> str:
    """The task column a grouping or filter reads (``device`` is ``device_id``)."""
    return GROUPS.get(name, name)


class ReportError(ValueError):
    """A report asked for something there is no such thing as (a grouping, a filter)."""


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """Tasks created in ``[since, until)`` (UTC), equal to ``filters``, grouped by ``group_by``."""

    group_by: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    filters: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [name for name in self.group_by if name not in GROUPS]
        if unknown:
            raise ReportError(f"Cannot group by {', '.join(unknown)}; choose from {', '.join(GROUPS)}.")
        if len(set(self.group_by)) != len(self.group_by):
            raise ReportError("Each grouping can be given once.")
        bad = [name for name in self.filters if name not in FILTERS]
        if bad:
            raise ReportError(f"Cannot filter on {', '.join(bad)}; choose from {', '.join(FILTERS)}.")
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise ReportError("since and until must be aware times (UTC unless a zone is given).")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ReportError("since must come before until.")


@dataclass(slots=True)
class ReportRow:
    """One group's figures (the whole report's, for the total row)."""

    key: tuple[str | None, ...]
    by_status: dict[TaskStatus, int] = field(default_factory=lambda: {status: 0 for status in TaskStatus})
    input_tokens: int = 0
    output_tokens: int = 0
    earnings: Decimal = ZERO

    @property
    def tasks(self) -> int:
        return sum(self.by_status.values())

    def add(self, other: ReportRow) -> None:
        for status, count in other.by_status.items():
            self.by_status[status] += count
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.earnings = MONEY_CONTEXT.add(self.earnings, other.earnings)

    def to_dict(self, group_by: Sequence[str]) -> dict[str, Any]:
        return {
            **dict(zip(group_by, self.key, strict=True)),
            "tasks": self.tasks,
            "by_status": {status.value: count for status, count in self.by_status.items()},
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "earnings": format_money(self.earnings),
        }


@dataclass(frozen=True, slots=True)
class Report:
    query: ReportQuery
    rows: list[ReportRow]
    total: ReportRow

    def to_dict(self) -> dict[str, Any]:
        query = self.query
        return {
            "group_by": list(query.group_by),
            "since": None if query.since is None else query.since.isoformat(),
            "until": None if query.until is None else query.until.isoformat(),
            "filters": dict(query.filters),
            "rows": [row.to_dict(query.group_by) for row in self.rows],
            "total": self.total.to_dict(()),
        }


class time_bucket(GenericFunction[str]):  # noqa: N801 - SQL functions are lower case
    """A UTC time cut to its hour (``2026-12-04T10:00Z``) or day (``2026-12-04``), as text."""

    type = sa.String()
    inherit_cache = True


_BUCKET_FORMATS = {
    "sqlite": {"hour": "%Y-%m-%dT%H:00Z", "day": "%Y-%m-%d"},
    "postgresql": {"hour": 'YYYY-MM-DD"T"HH24:00"Z"', "day": "YYYY-MM-DD"},
}


@compiles(time_bucket, "sqlite")
def _bucket_sqlite(element: time_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    unit, column = _bucket_arguments(element, compiler, **kw)
    # SQLite keeps the UTC time as text, 'YYYY-MM-DD HH:MM:SS.ffffff', which strftime reads.
    return f"strftime('{_BUCKET_FORMATS['sqlite'][unit]}', {column})"


@compiles(time_bucket, "postgresql")
def _bucket_postgresql(element: time_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    unit, column = _bucket_arguments(element, compiler, **kw)
    return f"to_char({column} AT TIME ZONE 'UTC', '{_BUCKET_FORMATS['postgresql'][unit]}')"


@compiles(time_bucket)
def _bucket_other(element: time_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    raise sa.exc.CompileError(f"Reports by hour or day are not written for {compiler.dialect.name}")


def _bucket_arguments(element: time_bucket, compiler: SQLCompiler, **kw: Any) -> tuple[str, str]:
    unit_clause, column_clause = list(element.clauses)
    unit = unit_clause.value
    if unit not in ("hour", "day"):
        raise sa.exc.CompileError(f"no time bucket {unit!r}")
    return unit, compiler.process(column_clause, **kw)


def summary(store: Store, query: ReportQuery) -> Report:
    """The report: one row per group (ordered by its key), and their total."""
    tasks, records = store.tables.tasks, store.tables.records
    keys = [_group_column(tasks, name) for name in query.group_by]
    statement = (
        sa.select(
            *keys,
            tasks.c.status,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(tasks.c.input_tokens), 0),
            sa.func.coalesce(sa.func.sum(tasks.c.output_tokens), 0),
            money_sum(records.c.total),
        )
        .select_from(tasks.outerjoin(records, records.c.task_id == tasks.c.id))
        .group_by(*keys, tasks.c.status)
    )
    for condition in _conditions(tasks, query):
        statement = statement.where(condition)
    rows: dict[tuple[str | None, ...], ReportRow] = {}
    with store.connect() as connection:
        for values in connection.execute(statement):
            key = tuple(values[: len(keys)])
            status, count, input_tokens, output_tokens, earned = values[len(keys) :]
            row = rows.setdefault(key, ReportRow(key))
            row.by_status[TaskStatus(status)] += count
            row.input_tokens += int(input_tokens)
            row.output_tokens += int(output_tokens)
            if earned is not None:
                row.earnings = MONEY_CONTEXT.add(row.earnings, earned)
    ordered = [rows[key] for key in sorted(rows, key=_sort_key)]
    total = ReportRow(())
    for row in ordered:
        total.add(row)
    return Report(query, ordered, total)


def _group_column(tasks: sa.Table, name: str) -> sa.ColumnElement[Any]:
    if name in ("hour", "day"):
        return time_bucket(sa.literal(name, literal_execute=True), tasks.c.created_at).label(name)
    return tasks.c[task_column(name)].label(name)


def _conditions(tasks: sa.Table, query: ReportQuery) -> list[sa.ColumnElement[bool]]:
    conditions = [tasks.c[task_column(name)] == value for name, value in query.filters.items()]
    if query.since is not None:
        conditions.append(tasks.c.created_at >= query.since.astimezone(UTC))
    if query.until is not None:
        conditions.append(tasks.c.created_at < query.until.astimezone(UTC))
    return conditions


def _sort_key(key: tuple[str | None, ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((value is None, value or "") for value in key)


def csv_header(report: Report) -> list[str]:
    return [*report.query.group_by, "tasks", *(status.value for status in TaskStatus), *_AMOUNTS]


def csv_rows(report: Report) -> list[list[str]]:
    """The report as CSV cells, one line per group (no total line: a spreadsheet sums them);
    the admin's download and ``flask earnings report --format csv`` both write these."""
    return [
        [
            *("" if value is None else value for value in row.key),
            str(row.tasks),
            *(str(row.by_status[status]) for status in TaskStatus),
            str(row.input_tokens),
            str(row.output_tokens),
            format_money(row.earnings),
        ]
        for row in report.rows
    ]


_AMOUNTS = ("input_tokens", "output_tokens", "earnings")
