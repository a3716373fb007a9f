"""Signals, for apps that forward tasks and earnings to their own sinks.

Each is sent with the app as sender and the task snapshot as ``task`` (plus ``earnings``
for :data:`earnings_recorded`), exactly once per task and in lifecycle order. They are sent
from the background writer, in an app context, once the task's state is stored, so a slow
receiver never slows a response. A receiver that raises is logged and skipped; the others
still run.

.. code-block:: python

    from flask_earnings.signals import earnings_recorded

    @earnings_recorded.connect_via(app)
    def to_ledger(sender, task, earnings, **extra):
        ledger.credit(task.device_id, earnings.total, reference=task.id)
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A tracked call arrived and became a task (``task.status == "created"``).
task_created = _signals.signal("task-created")
#: The task is running: the view is at work (``task.status == "running"``).
task_started = _signals.signal("task-started")
#: The reply was sent in full and read (``task.status == "completed"``, ``task.earnings`` set).
task_completed = _signals.signal("task-completed")
#: The call failed: an error status or body, an exception, a broken reply. Earns nothing.
task_failed = _signals.signal("task-failed")
#: The client went away before the reply was sent in full (``task.status == "cancelled"``).
task_cancelled = _signals.signal("task-cancelled")
#: A completed task's earnings were stored; keyword ``earnings`` is the breakdown.
earnings_recorded = _signals.signal("earnings-recorded")
