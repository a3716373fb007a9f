"""Reading the records back: tasks by filter, and the totals the admin overview shows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from .money import ZERO, money_sum
from .storage import Store, task_from_row, tasks_with_earnings
from .tasks import Task, TaskStatus

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


@dataclass(frozen=True, slots=True)
class Totals:
    tasks_by_status: Mapping[TaskStatus, int]
    earnings: Decimal

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks_by_status": {status.value: count for status, count in self.tasks_by_status.items()},
            "earnings": format(self.earnings, "f"),
        }


def totals(store: Store) -> Totals:
    tasks, records = store.tables.tasks, store.tables.records
    with store.connect() as connection:
        counts = connection.execute(sa.select(tasks.c.status, sa.func.count()).group_by(tasks.c.status)).all()
        earned = connection.execute(sa.select(money_sum(records.c.total))).scalar()
    by_status = {status: 0 for status in TaskStatus}
    by_status.update({TaskStatus(status): count for status, count in counts})
    return Totals(by_status, earned if earned is not None else ZERO)
