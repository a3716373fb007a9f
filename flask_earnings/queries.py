"""Reading task records back: a page of tasks by filter, newest first, or all of them for an
export (totals: :mod:`.reports`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .storage import Store, task_from_row, tasks_with_earnings
from .tasks import Task

#: Task attributes a listing can be filtered on, by equality.
TASK_FILTERS = ("status", "framework", "task_type", "model", "client", "device_id", "endpoint")
#: How many rows an export fetches at a time.
EXPORT_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """Which tasks to list: equal to ``filters``, created in ``[since, until)``, newest first;
    ``limit=None`` for all of them."""

    filters: Mapping[str, str]
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = 50
    offset: int = 0


def list_tasks(store: Store, query: TaskQuery) -> list[Task]:
    with store.connect() as connection:
        return [task_from_row(row) for row in connection.execute(_listing(store, query)).mappings()]


def iter_tasks(store: Store, query: TaskQuery) -> Iterator[Task]:
    """Every task of ``query``, fetched a chunk at a time (an export of millions stays small)."""
    with store.connect() as connection:
        result = connection.execution_options(yield_per=EXPORT_CHUNK).execute(_listing(store, query))
        for row in result.mappings():
            yield task_from_row(row)


def count_tasks(store: Store, query: TaskQuery) -> int:
    statement = sa.select(sa.func.count()).select_from(store.tables.tasks)
    for condition in _conditions(store.tables.tasks, query):
        statement = statement.where(condition)
    with store.connect() as connection:
        return int(connection.execute(statement).scalar_one())


def _listing(store: Store, query: TaskQuery) -> sa.Select[Any]:
    tasks = store.tables.tasks
    statement = tasks_with_earnings(store.tables).order_by(tasks.c.created_at.desc(), tasks.c.id.desc())
    for condition in _conditions(tasks, query):
        statement = statement.where(condition)
    if query.limit is not None:
        statement = statement.limit(query.limit)
    return statement.offset(query.offset) if query.offset else statement


def _conditions(tasks: sa.Table, query: TaskQuery) -> list[sa.ColumnElement[bool]]:
    conditions = [tasks.c[name] == value for name, value in query.filters.items()]
    if query.since is not None:
        conditions.append(tasks.c.created_at >= query.since)
    if query.until is not None:
        conditions.append(tasks.c.created_at < query.until)
    return conditions
