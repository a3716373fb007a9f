"""Reading task records back: a page of tasks by filter, newest first (totals: :mod:`.reports`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from .storage import Store, task_from_row, tasks_with_earnings
from .tasks import Task

#: Task attributes a listing can be filtered on, by equality.
TASK_FILTERS = ("status", "framework", "task_type", "model", "client", "device_id", "endpoint")


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """Which tasks to list: equal to ``filters``, created in ``[since, until)``, newest first."""

    filters: Mapping[str, str]
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    offset: int = 0


def list_tasks(store: Store, query: TaskQuery) -> list[Task]:
    tasks = store.tables.tasks
    statement = (
        tasks_with_earnings(store.tables)
        .order_by(tasks.c.created_at.desc(), tasks.c.id.desc())
        .limit(query.limit)
        .offset(query.offset)
    )
    for name, value in query.filters.items():
        statement = statement.where(tasks.c[name] == value)
    if query.since is not None:
        statement = statement.where(tasks.c.created_at >= query.since)
    if query.until is not None:
        statement = statement.where(tasks.c.created_at < query.until)
    with store.connect() as connection:
        return [task_from_row(row) for row in connection.execute(statement).mappings()]
