"""Signals fire once per task, in lifecycle order, with snapshots; the original's log lines appear."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from flask import Flask

from flask_earnings import Task, TaskStatus
from flask_earnings.signals import earnings_recorded, task_completed

from . import payloads
from .conftest import MakeApp
from .helpers import add_upstream_view, call, received_signals


def test_a_completed_task_sends_each_signal_once_in_lifecycle_order(make_app: MakeApp) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/v1/chat/completions", payloads.openai_chat_reply(payloads.openai_usage(10, 20)))

    with received_signals(app) as received:
        _, task = call(app, earnings, "/v1/chat/completions", payloads.openai_chat_request())

    assert received.names(task.id) == ["task_created", "task_started", "task_completed", "earnings_recorded"]
    created, started, completed, recorded = (event[1] for event in received.events)
    assert created.status is TaskStatus.CREATED and created.started_at is None
    assert started.status is TaskStatus.RUNNING and started.started_at is not None and started.earnings is None
    assert completed == task  # the snapshot equals what was stored
    assert recorded == task
    [(_, _, extra)] = [event for event in received.events if event[0] == "earnings_recorded"]
    assert extra["earnings"] == task.earnings
    assert extra["earnings"].total == Decimal("10") * Decimal("0.0015") + 20 * Decimal("0.003") + Decimal("0.015")


def test_a_failed_task_sends_created_started_failed(make_app: MakeApp) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/chat", payloads.ollama_error(), status=404)

    with received_signals(app) as received:
        _, task = call(app, earnings, "/api/chat", payloads.ollama_chat_request())

    assert received.names(task.id) == ["task_created", "task_started", "task_failed"]
    assert received.of("task_failed")[0].error == "model 'llama9' not found"


def test_signals_are_sent_with_the_app_as_sender_and_only_to_its_receivers(make_app: MakeApp) -> None:
    app, earnings = make_app()
    other, _ = make_app()
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))

    with received_signals(app) as mine, received_signals(other) as theirs:
        call(app, earnings, "/api/embed", payloads.ollama_embed_request())

    assert len(mine.events) == 4
    assert theirs.events == []


def test_a_receiver_runs_in_an_app_context_after_the_task_is_stored(make_app: MakeApp) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))
    seen: list[Task | None] = []

    def look_it_up(sender: Flask, task: Task, **extra: object) -> None:
        seen.append(earnings.get_task(task.id))  # needs current_app, and the stored row

    task_completed.connect(look_it_up, app, weak=False)
    try:
        _, task = call(app, earnings, "/api/embed", payloads.ollama_embed_request())
    finally:
        task_completed.disconnect(look_it_up, app)

    assert seen == [task]


def test_many_tasks_each_get_their_signals_in_order(make_app: MakeApp) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))

    with received_signals(app) as received:
        tasks = [call(app, earnings, "/api/embed", payloads.ollama_embed_request())[1] for _ in range(20)]

    for task in tasks:
        assert received.names(task.id) == ["task_created", "task_started", "task_completed", "earnings_recorded"]


def test_the_original_log_lines(make_app: MakeApp, caplog: pytest.LogCaptureFixture) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/chat", payloads.ollama_chat_reply(26, 298))
    add_upstream_view(app, "/api/generate", payloads.ollama_error("unexpected EOF"), status=500)

    with caplog.at_level(logging.DEBUG, logger="flask_earnings"):
        _, done = call(app, earnings, "/api/chat", payloads.ollama_chat_request())
        _, failed = call(app, earnings, "/api/generate", payloads.ollama_generate_request())

    lines = [(record.levelname, record.getMessage()) for record in caplog.records if record.name == "flask_earnings"]
    assert lines == [
        ("INFO", f"✅ Task completed: {done.id}"),
        ("INFO", "💰 Earnings: 0.632000 tokens (ollama/chat)"),
        ("DEBUG", "📊 Breakdown: { inputReward: 0.026, outputReward: 0.596, baseReward: 0.01, durationBonus: 0 }"),
        ("WARNING", f"❌ Task failed: {failed.id} - unexpected EOF"),
    ]


def test_log_level_option_sets_the_extension_logger(make_app: MakeApp) -> None:
    logger = logging.getLogger("flask_earnings")
    previous = logger.level
    try:
        make_app(log_level="WARNING")
        assert logger.level == logging.WARNING
    finally:
        logger.setLevel(previous)


def test_earnings_recorded_is_importable_from_the_signals_module() -> None:
    assert earnings_recorded.name == "earnings-recorded"
    assert task_completed.name == "task-completed"
