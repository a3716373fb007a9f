"""Signals, for apps that forward tasks and earnings to their own sinks.

Each is sent with the app as sender and the task snapshot as ``task`` (plus ``earnings``
for :data:`earnings_recorded`), at most once per task and in lifecycle order (a process killed
before signalling a stored batch sends nothing for it; see ``docs/signals.md``). They are sent
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

import logging
from typing import Any

from blinker import NamedSignal, Namespace
from flask import Flask

logger = logging.getLogger("flask_earnings")

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
#: This process now prices new tasks with another rate version (an edit made here or in any
#: other process, seen within ``EARNINGS_RATES_REFRESH_INTERVAL``); keyword ``version``.
rates_changed = _signals.signal("rates-changed")


def send(signal: NamedSignal, app: Flask, **kwargs: Any) -> None:
    """Call each receiver on its own, so that one that raises cannot silence the others.

    ``SystemExit`` is caught too: raised on the background writer's thread it would end the
    thread silently, and with it the storing of every later task.
    """
    for receiver in signal.receivers_for(app):
        try:
            receiver(app, **kwargs)
        except (Exception, SystemExit):
            logger.exception("A receiver of %s raised; it is skipped", signal.name)
