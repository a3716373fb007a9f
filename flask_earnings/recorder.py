"""The background writer: tasks leave the request path through a queue and are stored in batches.

The request path writes a task's line to the journal and puts the task on a bounded queue.
One thread per app and process takes tasks off in batches, works out how each call ended
and what it earned, and stores the batch in one transaction — or, while the database
refuses it, in the spool, to be replayed when it takes writes again. Then it sends the
signals and writes the log lines, in lifecycle order. Between batches it looks for a rate
version made by another process.

Should the queue ever be full (the writer cannot keep up), a task is not dropped and the
request does not wait: the request's own thread works it out and spools it.
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
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blinker import NamedSignal
from flask import Flask

from . import signals
from .money import format_money
from .outcome import finished_task, journalled, started_task
from .owners import Owner
from .recovery import recover, replay
from .rows import Batch, record_row, task_row
from .spool import Journal, Spool
from .storage import Store
from .tasks import Task, TaskStatus
from .tracking import TaskRun
from .versions import RateBook

logger = logging.getLogger("flask_earnings")

#: How long the writer leaves the database alone after a refused batch (spooling meanwhile).
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)
#: How long a batch may wait for the database or the spool before it is dropped (and counted).
GIVE_UP_SECONDS = 60.0
#: How long, at interpreter exit, the writer may take to store what is still queued.
EXIT_FLUSH_SECONDS = 10.0


class Event(enum.Enum):
    STARTED = "started"
    FINISHED = "finished"


@dataclasses.dataclass(frozen=True, slots=True)
class _Marker:
    """Not a task: a flush waiting for everything before it, or a journal file to delete."""

    done: threading.Event | None = None
    journal: Path | None = None


_Item = tuple[Event, TaskRun] | _Marker
_Notice = tuple[NamedSignal, Task, Mapping[str, Any]]


class Recorder:
    """One app's journal, queue, spool and writer thread (started on first use, and again in a
    forked child, which also becomes a new owner of its tasks)."""

    def __init__(
        self,
        app: Flask,
        store: Store,
        rate_book: RateBook,
        *,
        spool_dir: Path,
        batch_size: int,
        flush_interval: float,
        queue_size: int,
        pay_cancelled: bool,
    ) -> None:
        self._app = weakref.ref(app)
        self.store = store
        self.rate_book = rate_book
        self.spool_dir = spool_dir
        self.batch_size = batch_size
        #: Queued tasks that count as a backlog: the writer then takes them without waiting
        #: for more (at least one, or a batch size under four would never let it sleep).
        self._backlog = max(1, batch_size // 4)
        self.flush_interval = flush_interval
        self.queue_size = queue_size
        self.pay_cancelled = pay_cancelled
        #: Called by the writer after each of its loops (about once a second when idle): the metrics' gauges.
        self.on_loop: Callable[[Recorder], None] | None = None
        self._begin(Owner.current())
        _recorders.add(self)

    def _begin(self, owner: Owner) -> None:
        self.owner = owner
        self.spool = Spool(self.spool_dir, owner)
        self.journal = Journal(self.spool_dir, owner)
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._spill_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._database_retry_at = 0.0
        self._failures = 0
        self._recovered = False
        #: Tasks worked out by a request's thread because the queue was full.
        self.spilled = 0
        #: Task rows given up on: neither the database nor the spool would take them.
        self.dropped = 0

    # The request side.

    def started(self, run: TaskRun) -> None:
        """Journal the task, then queue it: the journal line keeps it even if the process dies."""
        started = journalled(run)
        closed = None
        try:
            closed = self.journal.record(started)
        except OSError:
            logger.exception("Could not journal task %s; it is queued all the same", run.id)
        self._put((Event.STARTED, run))
        if closed is not None:
            self._put(_Marker(journal=closed))

    def finished(self, run: TaskRun) -> None:
        self._put((Event.FINISHED, run))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before this call is stored (in the database, or in the
        spool while the database refuses writes); false on timeout."""
        if self._thread is None or not self._thread.is_alive():
            return self._queue.empty()  # no writer: nothing can still be on its way
        if threading.current_thread() is self._thread:
            raise RuntimeError("flush() cannot wait for the writer from the writer's own thread")
        done = threading.Event()
        self._queue.put(_Marker(done=done))
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float = EXIT_FLUSH_SECONDS) -> bool:
        """Store what is queued, give the database a last chance at the spool, then let the
        journal go: nothing in it is needed any more. What the database still refuses stays
        in the spool, for the next process of this host to replay."""
        if self._thread is None:
            return True  # never started (tracking is off): nothing was recorded, nothing to touch
        if not self.flush(timeout):
            logger.error("Task records still queued could not be stored in %.0f s; the journal keeps them", timeout)
            return False
        self._database_retry_at = 0.0  # whatever the back-off: this is the last chance
        self._recover_and_replay()
        path = self.journal.close()
        if path is not None:
            path.unlink(missing_ok=True)
        return True

    def stop(self, timeout: float = EXIT_FLUSH_SECONDS) -> bool:
        """:meth:`close`, then end the writer's thread (an app that is done, as in tests)."""
        closed = self.close(timeout)
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._stopping = True
            self._queue.put(_Marker())
            self._wake.set()
            thread.join(timeout)
        return closed

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def _put(self, item: _Item) -> None:
        if self._thread is None:
            self.start()
        if isinstance(item, _Marker) or self._queue.qsize() < self.queue_size:
            self._queue.put(item)
        else:
            self._spill(*item)

    def start(self) -> None:
        """Start the writer (its first chore: recovering what dead processes left)."""
        with self._thread_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="flask-earnings-writer", daemon=True)
                thread.start()
                self._thread = thread

    def _spill(self, event: Event, run: TaskRun) -> None:
        """The queue is full: work the task out here and spool it, rather than drop or wait."""
        with self._spill_lock:
            if not self.spilled:
                logger.warning("The task queue is full (%d); tasks are spooled by their requests", self.queue_size)
            self.spilled += 1
        try:
            if event is Event.STARTED:
                notices = self._start_notices(run)
            else:
                batch = Batch()
                task = self._add_finished(batch, run, datetime.now(UTC))
                self.spool.append(batch, sync=False)  # the writer syncs it, soon
                notices = self._end_notices(run, task)
            self._announce(notices)
        except Exception:
            logger.exception("Could not spool task %s", run.id)

    def _after_fork_in_child(self) -> None:
        """A forked child starts clean, as a new owner; the parent's queue and files stay the parent's."""
        self._begin(Owner.current())
        self.store.after_fork()

    # The writer's thread.

    def _run(self) -> None:
        while True:
            try:
                items = self._collect()
                if items is None or (self._stopping and self._queue.empty()):
                    if items:
                        self._write(items)
                    return
                if items:
                    self._write(items)
                self.spool.sync()
                self._recover_and_replay()
                self.rate_book.refresh_if_due()
                if self.on_loop is not None:
                    self.on_loop(self)
            except Exception:  # the writer must outlive any fault: it holds what is not stored yet
                logger.exception("The background writer met an unexpected fault; it carries on")
                time.sleep(0.1)

    def _collect(self) -> list[_Item] | None:
        """The next batch: wait for one item, let more gather for ``flush_interval``, take them.

        The writer sleeps while a batch gathers, so that a put on the request path never wakes
        it (a wake-up a request would cost more than the rest of tracking); ``flush()`` cuts
        the sleep short. Under load, when a quarter of a batch is waiting already, it does not
        sleep at all. Empty when nothing came for a while (time for the other chores), ``None``
        once the app is gone and nothing is left to write.
        """
        if self._queue.qsize() < self._backlog:
            try:
                first = self._queue.get(timeout=min(1.0, self.rate_book.refresh_interval))
            except queue.Empty:
                return None if self._app() is None else []
            gather = min(self.flush_interval, self.rate_book.seconds_until_refresh())
            if not isinstance(first, _Marker) and self._wake.wait(gather):
                self._wake.clear()
            items = [first]
        else:  # a full batch is waiting already
            items = []
        while len(items) < self.batch_size:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _write(self, items: list[_Item]) -> None:
        batch = Batch()
        notices: list[_Notice] = []
        markers: list[_Marker] = []
        running: dict[str, TaskRun] = {}
        now = datetime.now(UTC)
        for item in items:
            if isinstance(item, _Marker):
                markers.append(item)
                continue
            event, run = item
            try:
                if event is Event.STARTED:
                    running[run.id] = run
                    notices += self._start_notices(run)
                else:
                    running.pop(run.id, None)  # it ended within the batch: one row, its last
                    notices += self._end_notices(run, self._add_finished(batch, run, now))
            except Exception:
                logger.exception("Could not record task %s", run.id)
        for run in running.values():
            batch.add_task(task_row(started_task(run), str(self.owner)))
        self._store(batch)
        self._announce(notices)
        for marker in markers:
            if marker.journal is not None:
                marker.journal.unlink(missing_ok=True)  # every task in it is stored
            if marker.done is not None:
                marker.done.set()

    def _add_finished(self, batch: Batch, run: TaskRun, now: datetime) -> Task:
        task = finished_task(run, pay_cancelled=self.pay_cancelled)
        batch.add_task(task_row(task, str(self.owner)))
        if task.earnings is not None:
            batch.records.append(record_row(task.id, task.earnings, task.rate_version, now))
        return task

    def _store(self, batch: Batch) -> None:
        """In the database if it takes it, else in the spool; given up (and counted) only when
        neither would take it for ``GIVE_UP_SECONDS``."""
        if not len(batch):
            return
        if time.monotonic() >= self._database_retry_at and self._to_database(batch):
            return
        self._to_spool(batch)

    def _to_database(self, batch: Batch) -> bool:
        try:
            self.store.write(batch)
        except Exception as error:
            delay = RETRY_DELAYS[min(self._failures, len(RETRY_DELAYS) - 1)]
            self._failures += 1
            self._database_retry_at = time.monotonic() + delay
            logger.error(
                "The database refused %d task rows (%s); spooling them, next try in %.1f s", len(batch), error, delay
            )
            return False
        self._failures = 0
        return True

    def _to_spool(self, batch: Batch) -> None:
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while True:
            try:
                self.spool.append(batch)
                return
            except OSError:
                logger.exception("Could not spool %d task rows", len(batch))
            if time.monotonic() > deadline:
                self.dropped += len(batch)
                logger.error(
                    "Dropped %d task rows (%d in all): neither the database nor the spool took them",
                    len(batch),
                    self.dropped,
                )
                return
            time.sleep(1.0)
            if self._to_database(batch):
                return

    def _recover_and_replay(self) -> None:
        """Once the database takes writes: recover what dead processes left, replay our spool."""
        if time.monotonic() < self._database_retry_at:
            return
        try:
            if not self._recovered:
                recover(self.store, self.spool_dir, self.owner)
                self._recovered = True
            if self.spool.waiting() and self._queue.qsize() < self._backlog:
                self._replay()  # when the queue is not backed up: spooled work is safe already
        except Exception as error:
            self._failures += 1
            self._database_retry_at = time.monotonic() + RETRY_DELAYS[min(self._failures, len(RETRY_DELAYS)) - 1]
            logger.error("Recovery or replay could not finish (%s); trying again later", error)

    def _replay(self) -> None:
        paths = self.spool.take()
        while paths:
            try:
                batches = replay(self.store, paths[0])
            except Exception:
                self.spool.give_back(paths)
                raise
            logger.info("Replayed %d spooled batches from %s", batches, paths.pop(0).name)

    # Telling the app.

    def _start_notices(self, run: TaskRun) -> list[_Notice]:
        notices: list[_Notice] = []
        if signals.task_created.receivers or signals.task_started.receivers:
            task = started_task(run)
            created = dataclasses.replace(task, status=TaskStatus.CREATED, started_at=None)
            notices = [(signals.task_created, created, {}), (signals.task_started, task, {})]
        with run.lock:
            run.start_announced = True
            deferred, run.deferred = run.deferred, []
        return notices + deferred

    def _end_notices(self, run: TaskRun, task: Task) -> list[_Notice]:
        notices: list[_Notice] = [(_END_SIGNALS[task.status], task, {})]
        if task.earnings is not None:
            notices.append((signals.earnings_recorded, task, {"earnings": task.earnings}))
        with run.lock:
            if not run.start_announced:  # its start is still queued: these follow it
                run.deferred = notices
                return []
        return notices

    def _announce(self, notices: list[_Notice]) -> None:
        if not notices:
            return
        app = self._app()
        if app is None:
            return
        with app.app_context():
            for signal, task, extra in notices:
                _log(signal, task)
                if signal.receivers:
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
        if logger.isEnabledFor(logging.INFO):
            earnings = task.earnings
            logger.info("💰 Earnings: %s tokens (%s/%s)", format(earnings.total, ".6f"), task.framework, task.task_type)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "📊 Breakdown: { inputReward: %s, outputReward: %s, baseReward: %s, durationBonus: %s }",
                    *map(format_money, (earnings.input_reward, earnings.output_reward)),
                    *map(format_money, (earnings.base_reward, earnings.duration_bonus)),
                )
    elif signal is signals.task_failed:
        logger.warning("❌ Task failed: %s - %s", task.id, task.error)
    elif signal is signals.task_cancelled:
        logger.info("⏹️ Task cancelled: %s", task.id)


_recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for recorder in list(_recorders):
        recorder._after_fork_in_child()


def _close_at_exit() -> None:
    for recorder in list(_recorders):
        recorder.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_at_exit)
