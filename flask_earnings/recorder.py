"""The background writer: tasks leave the request path through a queue and are stored in batches.

The request path only puts a task on a queue. One thread per app and process takes them off
in batches, works out how each call ended and what it earned, stores the whole batch in one
transaction, then sends the signals and writes the log lines, in lifecycle order. Between
batches it also looks for a rate version made by another process.
"""

from __future__ import annotations

import atexit
import dataclasses
import enum
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from blinker import NamedSignal
from flask import Flask

from . import signals
from .outcome import finished_task, started_task
from .storage import Batch, Store, record_row, task_row
from .tasks import Task, TaskStatus
from .tracking import TaskRun
from .versions import RateBook

logger = logging.getLogger("flask_earnings")

#: How long the writer sleeps between attempts while the database refuses a batch.
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)
#: How long, at interpreter exit, the writer may take to store what is still queued.
EXIT_FLUSH_SECONDS = 5.0


class Event(enum.Enum):
    STARTED = "started"
    FINISHED = "finished"


@dataclasses.dataclass(frozen=True, slots=True)
class _FlushMarker:
    done: threading.Event


_Item = tuple[Event, TaskRun] | _FlushMarker
_Notice = tuple[NamedSignal, Task, Mapping[str, Any]]


class Recorder:
    """One app's queue and writer thread (started on first use, again in a forked child)."""

    def __init__(
        self,
        app: Flask,
        store: Store,
        rate_book: RateBook,
        *,
        batch_size: int,
        flush_interval: float,
        pay_cancelled: bool,
    ) -> None:
        self._app = weakref.ref(app)
        self.store = store
        self.rate_book = rate_book
        self.pay_cancelled = pay_cancelled
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        #: Tasks stored as running, whose end is still to be written over them.
        self._stored_running: set[str] = set()
        _recorders.add(self)

    # The request side: one queue put per event.

    def started(self, run: TaskRun) -> None:
        self._put((Event.STARTED, run))

    def finished(self, run: TaskRun) -> None:
        self._put((Event.FINISHED, run))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before this call is stored; false on timeout."""
        if self._thread is None:
            return True
        if threading.current_thread() is self._thread:
            raise RuntimeError("flush() cannot wait for the writer from the writer's own thread")
        done = threading.Event()
        self._put(_FlushMarker(done))
        return done.wait(timeout)

    def _put(self, item: _Item) -> None:
        if self._thread is None:
            self._start()
        self._queue.put(item)

    def _start(self) -> None:
        with self._thread_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="flask-earnings-writer", daemon=True)
                thread.start()
                self._thread = thread

    def _after_fork_in_child(self) -> None:
        """A forked child starts clean: the parent's writer and queue stay the parent's."""
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._thread_lock = threading.Lock()
        self._stored_running = set()
        self.store.after_fork()

    # The writer side.

    def _run(self) -> None:
        while True:
            items = self._collect()
            if items is None:
                return
            if items:
                self._write(items)
            self.rate_book.refresh_if_due()

    def _collect(self) -> list[_Item] | None:
        """The next batch: wait for one item, then gather more for up to ``flush_interval``.

        Empty when nothing came for a while (time to look at the rates), ``None`` once the
        app is gone and nothing is left to write.
        """
        try:
            first = self._queue.get(timeout=min(1.0, self.rate_book.refresh_interval))
        except queue.Empty:
            return None if self._app() is None else []
        items = [first]
        deadline = time.monotonic() + self.flush_interval
        while len(items) < self.batch_size and not isinstance(items[-1], _FlushMarker):
            remaining = deadline - time.monotonic()
            try:
                items.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _write(self, items: list[_Item]) -> None:
        batch = Batch(inserts={}, updates={}, records=[])
        notices: list[_Notice] = []
        markers: list[_FlushMarker] = []
        now = datetime.now(UTC)
        for item in items:
            if isinstance(item, _FlushMarker):
                markers.append(item)
                continue
            event, run = item
            try:
                if event is Event.STARTED:
                    notices += self._add_started(batch, run)
                else:
                    notices += self._add_finished(batch, run, now)
            except Exception:
                logger.exception("Could not record task %s", run.id)
        self._store(batch)
        self._announce(notices)
        for marker in markers:
            marker.done.set()

    def _add_started(self, batch: Batch, run: TaskRun) -> list[_Notice]:
        task = started_task(run)
        batch.inserts[task.id] = task_row(task)
        created = dataclasses.replace(task, status=TaskStatus.CREATED, started_at=None)
        return [(signals.task_created, created, {}), (signals.task_started, task, {})]

    def _add_finished(self, batch: Batch, run: TaskRun, now: datetime) -> list[_Notice]:
        task = finished_task(run, pay_cancelled=self.pay_cancelled)
        row = task_row(task)
        if task.id in self._stored_running:
            batch.updates[task.id] = row
        else:  # started in this same batch: one insert of the final state
            batch.inserts[task.id] = row
        notices: list[_Notice] = [(_END_SIGNALS[task.status], task, {})]
        if task.earnings is not None:
            batch.records.append(record_row(task, now))
            notices.append((signals.earnings_recorded, task, {"earnings": task.earnings}))
        return notices

    def _store(self, batch: Batch) -> None:
        """Store the batch, trying again while the database refuses it."""
        if not len(batch):
            return
        attempt = 0
        while True:
            try:
                self.store.write(batch)
                break
            except Exception:
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                logger.exception("Storing %d task rows failed; trying again in %.1f s", len(batch), delay)
                attempt += 1
                time.sleep(delay)
        for task_id, row in batch.inserts.items():
            if row["status"] == TaskStatus.RUNNING.value:
                self._stored_running.add(task_id)
        self._stored_running.difference_update(batch.updates)

    def _announce(self, notices: list[_Notice]) -> None:
        app = self._app()
        if app is None or not notices:
            return
        with app.app_context():
            for signal, task, extra in notices:
                _log(signal, task)
                signals.send(signal, app, task=task, **extra)


_END_SIGNALS = {
    TaskStatus.COMPLETED: signals.task_completed,
    TaskStatus.FAILED: signals.task_failed,
    TaskStatus.CANCELLED: signals.task_cancelled,
}


def _log(signal: NamedSignal, task: Task) -> None:
    """The original module's log lines."""
    if signal is signals.task_completed:
        logger.info("✅ Task completed: %s", task.id)
    elif signal is signals.earnings_recorded and task.earnings is not None:
        earnings = task.earnings
        logger.info("💰 Earnings: %s tokens (%s/%s)", format(earnings.total, ".6f"), task.framework, task.task_type)
        logger.debug(
            "📊 Breakdown: { inputReward: %s, outputReward: %s, baseReward: %s, durationBonus: %s }",
            earnings.input_reward,
            earnings.output_reward,
            earnings.base_reward,
            earnings.duration_bonus,
        )
    elif signal is signals.task_failed:
        logger.warning("❌ Task failed: %s - %s", task.id, task.error)
    elif signal is signals.task_cancelled:
        logger.info("⏹️ Task cancelled: %s", task.id)


_recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for recorder in list(_recorders):
        recorder._after_fork_in_child()


def _flush_at_exit() -> None:
    for recorder in list(_recorders):
        if not recorder.flush(EXIT_FLUSH_SECONDS):
            logger.error("Task records still queued at exit could not be stored in %.0f s", EXIT_FLUSH_SECONDS)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_at_exit)
