"""Small pieces the tests share: upstream-shaped views, a call that waits for its task, signal capture."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, request
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from flask_earnings import Earnings, Task, TaskStatus
from flask_earnings import signals as earnings_signals

TASK_HEADER = "X-Earnings-Task-Id"


def database_away(self: Any, batch: Any) -> None:
    """In place of ``Store.write``: the database refuses every write, as a server that is down."""
    raise sa.exc.OperationalError("INSERT", {}, ConnectionRefusedError("the database is away"))


def add_upstream_view(
    app: Flask,
    path: str,
    payload: Any,
    *,
    status: int = 200,
    shape: str = "json",
    content_type: str = "application/json",
) -> None:
    """A view at ``path`` that answers like an upstream would.

    ``shape="json"`` returns the body whole; ``shape="relay"`` hands it over through a
    generator in two chunks, as a proxy relaying an upstream reply does.
    """
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()

    def view() -> Response:
        request.get_json(silent=True)  # a gateway reads the request, as any view would
        if shape == "json":
            return Response(body, status=status, content_type=content_type)
        half = len(body) // 2
        return Response(iter([body[:half], body[half:]]), status=status, content_type=content_type)

    app.add_url_rule(path, endpoint=f"upstream {path}", view_func=view, methods=["POST"])


def call(app: Flask, earnings: Earnings, path: str, body: Any, **kwargs: Any) -> tuple[TestResponse, Task]:
    """POST ``body`` to ``path``, close the response, wait for the writer, return the task."""
    response = app.test_client().post(path, json=body, buffered=True, **kwargs)
    task = stored_task(app, earnings, response.headers[TASK_HEADER])
    return response, task


def stored_task(app: Flask, earnings: Earnings, task_id: str, *, timeout: float = 10) -> Task:
    """The task once it has ended and is stored.

    On a real server the client can hold the whole reply a moment before the server closes
    the response, which is when the task ends; so this waits (boundedly) for that.
    """
    deadline = time.monotonic() + timeout
    with app.app_context():
        while True:
            assert earnings.flush(timeout), "the writer did not store the queued tasks in time"
            task = earnings.get_task(task_id)
            if (task is not None and task.status is not TaskStatus.RUNNING) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
    assert task is not None, f"task {task_id} was not stored"
    return task


def wait_for(received: Received, name: str, count: int, *, timeout: float = 10) -> list[Task]:
    """The first ``count`` tasks signalled by ``name``, waiting (boundedly) for them."""
    deadline = time.monotonic() + timeout
    while len(received.of(name)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    tasks = received.of(name)
    assert len(tasks) == count, received.names()
    return tasks


SIGNALS = {
    "task_created": earnings_signals.task_created,
    "task_started": earnings_signals.task_started,
    "task_completed": earnings_signals.task_completed,
    "task_failed": earnings_signals.task_failed,
    "task_cancelled": earnings_signals.task_cancelled,
    "earnings_recorded": earnings_signals.earnings_recorded,
}


@dataclass
class Received:
    events: list[tuple[str, Task, dict[str, Any]]] = field(default_factory=list)

    def names(self, task_id: str | None = None) -> list[str]:
        return [name for name, task, _ in self.events if task_id is None or task.id == task_id]

    def of(self, name: str) -> list[Task]:
        return [task for event, task, _ in self.events if event == name]


@contextmanager
def received_signals(app: Flask) -> Iterator[Received]:
    received = Received()
    lock = threading.Lock()
    connections = []
    for name, signal in SIGNALS.items():

        def receiver(sender: Flask, task: Task, _name: str = name, **extra: Any) -> None:
            assert sender is app
            with lock:
                received.events.append((_name, task, extra))

        signal.connect(receiver, sender=app, weak=False)
        connections.append((signal, receiver))
    try:
        yield received
    finally:
        for signal, receiver in connections:
            signal.disconnect(receiver, sender=app)


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """Serve ``app`` on a real local port, in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
