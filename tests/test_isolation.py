"""Tracking never changes a response: status, headers (but the task id) and body are the same
with tracking on and off, whatever goes wrong inside tracking."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_earnings import TaskStatus, TokensSource
from flask_earnings import outcome as outcome_module
from flask_earnings import replies as replies_module
from flask_earnings import storage as storage_module
from flask_earnings.signals import earnings_recorded, task_completed, task_created, task_started

from . import payloads
from .conftest import MakeApp
from .helpers import TASK_HEADER, add_upstream_view, received_signals, stored_task

CALLS = [
    ("/api/chat", payloads.ollama_chat_request(), payloads.ollama_chat_reply(26, 298), 200),
    (
        "/v1/chat/completions",
        payloads.openai_chat_request(),
        payloads.openai_chat_reply(payloads.openai_usage(5, 8)),
        200,
    ),
    ("/v1/embeddings", payloads.openai_embeddings_request(), payloads.openai_error("Invalid API key", 401), 401),
]


def build(make_app: MakeApp, shape: str, **options: Any) -> Flask:
    app, _ = make_app(**options)
    for path, _, reply, status in CALLS:
        add_upstream_view(app, path, reply, status=status, shape=shape)
    return app


def exchange(app: Flask, path: str, body: Any) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
    response = app.test_client().post(path, json=body, buffered=True)
    headers = [(name, value) for name, value in response.headers.items() if name != TASK_HEADER]
    return response.status_code, headers, response.get_data(), response.headers.get(TASK_HEADER)


def boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("injected tracking fault")


@pytest.fixture
def raising_receivers() -> Iterator[None]:
    for signal in (task_created, task_started, task_completed, earnings_recorded):
        signal.connect(boom, weak=False)
    yield
    for signal in (task_created, task_started, task_completed, earnings_recorded):
        signal.disconnect(boom)


FAULTS = [
    "no fault",
    "raising signal receivers",
    "database refuses writes",
    "reading the reply raises",
    "working out the outcome raises",
    "raising device and client functions",
]


def inject(fault: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Break one part of tracking; returns the Earnings options the fault needs."""
    if fault == "raising signal receivers":
        request.getfixturevalue("raising_receivers")
    elif fault == "database refuses writes":
        monkeypatch.setattr(storage_module.Store, "write", boom)
    elif fault == "reading the reply raises":
        monkeypatch.setattr(replies_module.BufferedReply, "feed", boom)
    elif fault == "working out the outcome raises":
        monkeypatch.setattr(outcome_module, "read_prompt", boom)
    elif fault == "raising device and client functions":
        return {"device_id": boom, "client": boom}
    return {}


@pytest.mark.parametrize("shape", ["json", "relay"])
@pytest.mark.parametrize("fault", FAULTS)
def test_a_response_is_the_same_with_tracking_on_and_off(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, fault: str, shape: str
) -> None:
    untracked = build(make_app, shape, enabled=False)
    options = inject(fault, monkeypatch, request)
    tracked = build(make_app, shape, **options)

    for path, body, _, _ in CALLS:
        status, headers, data, task_id = exchange(tracked, path, body)
        plain_status, plain_headers, plain_data, no_task_id = exchange(untracked, path, body)

        assert (status, headers, data) == (plain_status, plain_headers, plain_data)
        assert task_id is not None
        assert no_task_id is None


def test_a_raising_receiver_is_logged_and_the_others_still_run(
    make_app: MakeApp, raising_receivers: None, caplog: pytest.LogCaptureFixture
) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))

    with received_signals(app) as received:
        response = app.test_client().post("/api/embed", json=payloads.ollama_embed_request(), buffered=True)
        task = stored_task(app, earnings, response.headers[TASK_HEADER])

    assert task.status is TaskStatus.COMPLETED
    assert received.names(task.id) == ["task_created", "task_started", "task_completed", "earnings_recorded"]
    assert "A receiver of earnings-recorded raised" in caplog.text


def test_a_receiver_that_calls_sys_exit_does_not_stop_the_writer(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))

    def leaving(sender: Flask, **extra: Any) -> None:
        raise SystemExit(3)

    task_completed.connect(leaving, app)
    try:
        first = app.test_client().post("/api/embed", json=payloads.ollama_embed_request(), buffered=True)
        stored_task(app, earnings, first.headers[TASK_HEADER])
        second = app.test_client().post("/api/embed", json=payloads.ollama_embed_request(), buffered=True)

        assert stored_task(app, earnings, second.headers[TASK_HEADER]).status is TaskStatus.COMPLETED
    finally:
        task_completed.disconnect(leaving, app)
    assert "A receiver of task-completed raised" in caplog.text


def test_a_database_that_refuses_writes_loses_nothing_once_it_accepts_them(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))
    monkeypatch.setattr(storage_module.Store, "write", boom)

    response = app.test_client().post("/api/embed", json=payloads.ollama_embed_request(), buffered=True)
    with app.app_context():
        assert earnings.flush(5)  # stored: in the spool, while the database refuses it
        assert earnings.get_task(response.headers[TASK_HEADER]) is None
    monkeypatch.undo()
    task = stored_task(app, earnings, response.headers[TASK_HEADER])  # replayed once it accepts writes

    assert task.status is TaskStatus.COMPLETED
    assert "The database refused" in caplog.text and "injected tracking fault" in caplog.text


def test_a_reader_fault_falls_back_to_an_estimate(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/chat", payloads.ollama_chat_reply(26, 298), shape="relay")
    monkeypatch.setattr(replies_module.BufferedReply, "feed", boom)

    response = app.test_client().post("/api/chat", json=payloads.ollama_chat_request(), buffered=True)
    task = stored_task(app, earnings, response.headers[TASK_HEADER])

    assert task.status is TaskStatus.COMPLETED
    assert task.tokens_source is TokensSource.ESTIMATED
    assert task.input_tokens == 5  # "Why is the sky blue?": 20 characters
    assert "Reading the reply of task" in caplog.text


def test_raising_device_and_client_functions_are_logged_and_left_out(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    app, earnings = make_app(device_id=boom, client=boom)
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))

    response = app.test_client().post("/api/embed", json=payloads.ollama_embed_request(), buffered=True)
    task = stored_task(app, earnings, response.headers[TASK_HEADER])

    assert (task.status, task.device_id, task.client) == (TaskStatus.COMPLETED, None, None)
    assert "EARNINGS_DEVICE_ID raised" in caplog.text and "EARNINGS_CLIENT raised" in caplog.text


def test_a_request_body_that_is_not_json_is_no_fault(make_app: MakeApp) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))

    response = app.test_client().post("/api/embed", data=b"\xff\xfe not json", buffered=True)
    task = stored_task(app, earnings, response.headers[TASK_HEADER])

    assert (task.status, task.input_tokens, task.model) == (TaskStatus.COMPLETED, 8, "all-minilm")
