"""Prometheus metrics (the ``prometheus`` extra, ``EARNINGS_METRICS``): what the tasks did and
earned, and how the background writer is keeping up.

The counters are counted off the request path, by receivers of the end signals
(``task_completed``, ``task_failed``, ``task_cancelled``), which the background writer sends
exactly once per task, after storing it (only a task that a full queue left to its request is
counted there). A spool replay or a crash recovery sends no signals, so nothing is counted
twice. The gauges are set by the writer after each of its loops.

The metrics are defined once per process, in prometheus_client's default registry, and are
the process's: several apps in one process add up in the same series. Under gunicorn,
prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) sums them over the
workers, those that have exited included for the counters; see ``docs/metrics.md``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import weakref
from typing import Any

from flask import Flask
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from . import signals
from .owners import Owner
from .recorder import Recorder
from .spool import SPOOL, SpoolFile
from .tasks import Task

TASKS = Counter("earnings_tasks", "Tasks that ended, by how they ended.", ["framework", "task_type", "status"])
INPUT_TOKENS = Counter("earnings_input_tokens", "Input tokens of the tasks that ended.", ["framework", "task_type"])
OUTPUT_TOKENS = Counter("earnings_output_tokens", "Output tokens of the tasks that ended.", ["framework", "task_type"])
#: Money is a ``Decimal`` everywhere else; the exposition format only has floats, so each
#: task's exact total becomes one at the last moment, as it is added.
EARNINGS = Counter("earnings", "Earnings recorded, in the rate table's unit.", ["framework", "task_type"])
#: A count that only grows, so a counter: in multiprocess mode the rows dropped by a worker
#: that has since exited still count (a ``livesum`` gauge would forget them).
DROPPED = Counter("earnings_dropped_records", "Task rows given up on: neither the database nor the spool took them.")
# Gauges of live processes only: ``livesum`` adds up the workers alive now.
QUEUE_DEPTH = Gauge("earnings_queue_depth", "Tasks waiting for the background writer.", multiprocess_mode="livesum")
SPOOL_BYTES = Gauge(
    "earnings_spool_bytes", "Bytes of spooled batches waiting for the database.", multiprocess_mode="livesum"
)

_END_SIGNALS = (signals.task_completed, signals.task_failed, signals.task_cancelled)

#: The recorders of the apps with metrics in this process; each writer reports all of them.
_recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()
#: Per recorder, the dropped rows counted so far, and by which process (a fork starts over).
_dropped_seen: weakref.WeakKeyDictionary[Recorder, tuple[Owner, int]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def install(app: Flask, recorder: Recorder) -> None:
    """Count the app's tasks as they end, and have its writer report the gauges."""
    for signal in _END_SIGNALS:
        signal.connect(_count, sender=app)
    _recorders.add(recorder)
    recorder.on_loop = _report


def exposition() -> tuple[bytes, str]:
    """The text exposition and its content type: this process's metrics, or with
    ``PROMETHEUS_MULTIPROC_DIR`` set, the sum over every process writing to that folder."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # as prometheus_client decides it
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


@functools.cache
def _series(framework: str, task_type: str, status: str) -> tuple[Counter, Counter, Counter, Counter]:
    """The labelled children of one kind of task (``labels()`` checks and locks on every call)."""
    return (
        TASKS.labels(framework, task_type, status),
        INPUT_TOKENS.labels(framework, task_type),
        OUTPUT_TOKENS.labels(framework, task_type),
        EARNINGS.labels(framework, task_type),
    )


def _count(sender: Flask, task: Task, **extra: Any) -> None:
    tasks, input_tokens, output_tokens, earned = _series(task.framework, task.task_type, task.status.value)
    tasks.inc()
    input_tokens.inc(task.input_tokens or 0)
    output_tokens.inc(task.output_tokens or 0)
    if task.earnings is not None:
        earned.inc(float(task.earnings.total))


def _report(recorder: Recorder) -> None:
    """The gauges, over every app with metrics in this process; and the newly dropped rows."""
    recorders = list(_recorders)
    QUEUE_DEPTH.set(sum(each.queued for each in recorders))
    SPOOL_BYTES.set(sum(_spool_bytes(each) for each in recorders))
    with _lock:
        owner, seen = _dropped_seen.get(recorder, (recorder.owner, 0))
        if owner != recorder.owner:  # a forked child: its recorder's count started again at 0
            seen = 0
        if recorder.dropped > seen:
            DROPPED.inc(recorder.dropped - seen)
        _dropped_seen[recorder] = (recorder.owner, recorder.dropped)


def _spool_bytes(recorder: Recorder) -> int:
    """The size of this process's spool files (no look at the disk while there are none)."""
    if not recorder.spool.waiting():
        return 0
    total = 0
    for path in recorder.spool_dir.glob(f"{SPOOL}-*"):
        file = SpoolFile.parse(path)
        if file is not None and file.owner == recorder.owner and file.claimed_by is None:
            with contextlib.suppress(FileNotFoundError):  # replayed meanwhile
                total += path.stat().st_size
    return total
