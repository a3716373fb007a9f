"""Crash recovery: what a process that died left behind becomes durable and honest again.

Run by each new process's background writer before its first batch, and by
``flask earnings recover``. For every process of this host that is gone:

1. its spool files are replayed (the batches it could not store);
2. its journal's tasks that never got further are recorded ``interrupted``;
3. its tasks still ``running`` in the database become ``interrupted``.

Tasks of live processes are never touched, and all of it can be repeated safely: rows only
move forward (see :mod:`flask_earnings.rows`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from .outcome import begun_task
from .owners import Owner
from .rows import Batch, task_row
from .spool import JOURNAL, SPOOL, Started, orphans, read_batches, read_started
from .storage import Store
from .tasks import Task, TaskStatus

logger = logging.getLogger("flask_earnings")

INTERRUPTED_ERROR = "interrupted: the process serving the task stopped before the task ended ({owner})"
CHUNK = 2000


@dataclass(frozen=True, slots=True)
class Recovered:
    spooled_batches: int = 0
    journal_tasks: int = 0
    interrupted: int = 0

    def __bool__(self) -> bool:
        return bool(self.spooled_batches or self.journal_tasks or self.interrupted)


def recover(store: Store, directory: Path, here: Owner, *, dead_host: str | None = None) -> Recovered:
    """Recover what the dead processes of this host left (and, with ``dead_host``, mark the
    running tasks of that whole host interrupted: only say so when the host is gone)."""
    batches = _replay_spools(store, directory, here)
    started = _replay_journals(store, directory, here)
    interrupted = _interrupt_running(store, here, dead_host)
    found = Recovered(batches, started, interrupted)
    if found:
        logger.warning(
            "Recovered from stopped processes: %d spooled batches stored, %d journal tasks and %d running "
            "tasks marked interrupted",
            batches,
            started,
            interrupted,
        )
    return found


def replay(store: Store, path: Path) -> int:
    """Store every batch of a spool file, in order, then delete it; the number of batches."""
    count = store_merged(store, read_batches(path))
    path.unlink()
    return count


def _replay_spools(store: Store, directory: Path, here: Owner) -> int:
    return sum(replay(store, path) for path in orphans(directory, SPOOL, here))


def _replay_journals(store: Store, directory: Path, here: Owner) -> int:
    count = 0
    for path in orphans(directory, JOURNAL, here):
        owner = path.name.split("-", 1)[1].rpartition("-")[0]
        rows = (task_row(interrupted_task(started, owner), owner) for started in read_started(path))
        count += store_merged(store, (Batch(tasks={row[0]: row}) for row in rows))
        path.unlink()
    return count


def store_merged(store: Store, batches: Iterable[Batch]) -> int:
    """Store batches merged into transactions of about ``CHUNK`` rows (a spool of tasks
    spooled one by one is not replayed one commit at a time); the number of batches."""
    count = 0
    merged = Batch()
    for batch in batches:
        merged.tasks.update(batch.tasks)  # a later row of a task replaces an earlier one
        merged.records += batch.records
        count += 1
        if len(merged) >= CHUNK:
            store.write(merged)
            merged = Batch()
    store.write(merged)
    return count


def interrupted_task(started: Started, owner: str) -> Task:
    """A task known only from the journal: it began, and nothing more is known."""
    return begun_task(started, status=TaskStatus.INTERRUPTED, error=INTERRUPTED_ERROR.format(owner=owner))


def _interrupt_running(store: Store, here: Owner, dead_host: str | None) -> int:
    tasks = store.tables.tasks
    host = dead_host if dead_host is not None else here.host
    with store.connect() as connection:
        owners = connection.execute(
            sa.select(tasks.c.owner)
            .distinct()
            .where(tasks.c.status == "running", tasks.c.owner.like(f"{host}\\_%", escape="\\"))
        ).scalars()
        gone = [
            text
            for text in owners
            if (owner := Owner.parse(text)) is not None and (dead_host is not None or owner.is_gone(here))
        ]
    count = 0
    for text in gone:
        with store.connect() as connection, connection.begin():
            result = connection.execute(
                tasks.update()
                .where(tasks.c.status == "running", tasks.c.owner == text)
                .values(status="interrupted", error=INTERRUPTED_ERROR.format(owner=text), finished_at=None)
            )
            count += result.rowcount
    return count
