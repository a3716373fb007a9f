"""Every tracked path, with every reply shape, becomes one task with the exact earnings."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from flask import Response, jsonify

from flask_earnings import TaskStatus, TokensSource

from . import payloads
from .conftest import MakeApp
from .helpers import TASK_HEADER, add_upstream_view, call

# (request, reply, input tokens, output tokens, expected total) for each kind of call, with
# the totals worked out by hand from the default rate table (durations stay under 1 s).
OLLAMA_CALLS: dict[str, tuple[dict[str, Any], dict[str, Any], int, int, str]] = {
    # 26 × 0.001 + 298 × 0.002 + 0.01
    "/api/chat": (payloads.ollama_chat_request(), payloads.ollama_chat_reply(26, 298), 26, 298, "0.632"),
    # 26 × 0.001 + 290 × 0.002 + 0.01
    "/api/generate": (payloads.ollama_generate_request(), payloads.ollama_generate_reply(26, 290), 26, 290, "0.616"),
    # 8 × 0.0005 + 0.005
    "/api/embed": (payloads.ollama_embed_request(), payloads.ollama_embed_reply(8), 8, 0, "0.009"),
    # no counts: ceil(34 characters / 4) = 9 estimated; 9 × 0.0005 + 0.005
    "/api/embeddings": (payloads.ollama_embeddings_request(), payloads.ollama_embeddings_reply(), 9, 0, "0.0095"),
}
OPENAI_CALLS: dict[str, tuple[dict[str, Any], dict[str, Any], int, int, str]] = {
    # vLLM: 1234 × 0.0015 + 567 × 0.003 + 0.015
    "/chat/completions": (
        payloads.openai_chat_request(),
        payloads.openai_chat_reply(payloads.openai_usage(1234, 567)),
        1234,
        567,
        "3.567",
    ),
    # vLLM: 12 × 0.0015 + 34 × 0.003 + 0.015
    "/completions": (
        payloads.openai_completion_request(),
        payloads.openai_completion_reply(payloads.openai_usage(12, 34)),
        12,
        34,
        "0.135",
    ),
    # vLLM: 7 × 0.0008 + 0.008
    "/embeddings": (payloads.openai_embeddings_request(), payloads.openai_embeddings_reply(7), 7, 0, "0.0136"),
}

CASES = [
    pytest.param(prefix + suffix, "ollama", "ollama", *call_, id=prefix + suffix)
    for prefix in ("", "/ollama")
    for suffix, call_ in OLLAMA_CALLS.items()
] + [
    pytest.param(prefix + suffix, "vllm", "openai", *call_, id=prefix + suffix)
    for prefix in ("/openai", "/openai/v1", "/v1")
    for suffix, call_ in OPENAI_CALLS.items()
]


@pytest.fixture(autouse=True)
def no_framework_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODEL_INFERENCE_FRAMEWORK", raising=False)


@pytest.mark.parametrize("shape", ["json", "relay"])
@pytest.mark.parametrize(("path", "framework", "protocol", "body", "reply", "tokens_in", "tokens_out", "total"), CASES)
def test_each_tracked_path_records_one_task_with_exact_earnings(
    make_app: MakeApp,
    shape: str,
    path: str,
    framework: str,
    protocol: str,
    body: dict[str, Any],
    reply: dict[str, Any],
    tokens_in: int,
    tokens_out: int,
    total: str,
) -> None:
    app, earnings = make_app()
    add_upstream_view(app, path, reply, shape=shape)

    response, task = call(app, earnings, path, body)

    assert response.status_code == 200
    assert task.status is TaskStatus.COMPLETED
    assert (task.framework, task.protocol, task.endpoint) == (framework, protocol, path)
    assert (task.input_tokens, task.output_tokens) == (tokens_in, tokens_out)
    expected_source = TokensSource.ESTIMATED if path.endswith("/api/embeddings") else TokensSource.REPORTED
    assert task.tokens_source is expected_source
    assert task.model == body["model"]
    assert task.streamed is False
    assert task.http_status == 200
    assert task.error is None
    assert task.earnings is not None
    assert task.earnings.total == Decimal(total)
    breakdown = task.earnings
    assert breakdown.input_reward + breakdown.output_reward + breakdown.base_reward + breakdown.duration_bonus == (
        breakdown.total
    )


def test_the_task_type_follows_the_original_names(make_app: MakeApp) -> None:
    app, earnings = make_app()
    expected = {
        "/api/chat": "chat",
        "/api/generate": "generate",
        "/api/embed": "embeddings",
        "/ollama/api/embeddings": "embeddings",
        "/v1/chat/completions": "chat/completions",
        "/openai/completions": "completions",
        "/openai/v1/embeddings": "embeddings",
    }
    for path in expected:
        add_upstream_view(app, path, {"error": "unused"}, status=500)
    for path, task_type in expected.items():
        _, task = call(app, earnings, path, {"model": "m"})
        assert task.task_type == task_type, path


def test_the_documented_example_vllm_chat_with_the_duration_bonus(make_app: MakeApp) -> None:
    """vLLM chat, 1234 in, 567 out, over a second: 1.851 + 1.701 + 0.015 + 0.01 = 3.577."""
    app, earnings = make_app()

    @app.post("/v1/chat/completions")
    def slow_chat() -> Response:
        time.sleep(1.1)
        return jsonify(payloads.openai_chat_reply(payloads.openai_usage(1234, 567)))

    _, task = call(app, earnings, "/v1/chat/completions", payloads.openai_chat_request())

    assert task.duration_ms is not None and task.duration_ms >= 1100
    assert task.earnings is not None
    assert task.earnings.input_reward == Decimal("1.851")
    assert task.earnings.output_reward == Decimal("1.701")
    assert task.earnings.base_reward == Decimal("0.015")
    assert task.earnings.duration_bonus == Decimal("0.01")
    assert task.earnings.total == Decimal("3.577")


def test_ollama_counts_left_out_mean_zero_not_unknown(make_app: MakeApp) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/chat", payloads.ollama_chat_reply(prompt_eval_count=None, eval_count=None))

    _, task = call(app, earnings, "/api/chat", payloads.ollama_chat_request())

    assert (task.input_tokens, task.output_tokens, task.tokens_source) == (0, 0, TokensSource.REPORTED)
    assert task.earnings is not None and task.earnings.total == Decimal("0.01")


def test_cached_and_reasoning_tokens_are_kept(make_app: MakeApp) -> None:
    app, earnings = make_app()
    usage = payloads.openai_usage(100, 50, cached=64, reasoning=20)
    add_upstream_view(app, "/v1/chat/completions", payloads.openai_chat_reply(usage))

    _, task = call(app, earnings, "/v1/chat/completions", payloads.openai_chat_request())

    assert (task.input_tokens, task.output_tokens) == (100, 50)
    assert (task.cached_tokens, task.reasoning_tokens) == (64, 20)


def test_a_reply_without_usage_is_estimated_from_the_text_and_says_so(make_app: MakeApp) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/v1/chat/completions", payloads.openai_chat_reply(usage=None))
    # "Why is the sky blue?" is 20 characters: 5 tokens; the reply's 48 characters: 12.
    _, task = call(app, earnings, "/v1/chat/completions", payloads.openai_chat_request("Why is the sky blue?"))

    assert task.tokens_source is TokensSource.ESTIMATED
    assert (task.input_tokens, task.output_tokens) == (5, 12)
    assert task.earnings is not None
    assert task.earnings.total == Decimal("5") * Decimal("0.0015") + 12 * Decimal("0.003") + Decimal("0.015")


def test_malformed_usage_is_estimated_and_logged(make_app: MakeApp, caplog: pytest.LogCaptureFixture) -> None:
    app, earnings = make_app()
    reply = payloads.openai_chat_reply({"prompt_tokens": "many", "completion_tokens": 3, "total_tokens": 3})
    add_upstream_view(app, "/v1/chat/completions", reply)

    _, task = call(app, earnings, "/v1/chat/completions", payloads.openai_chat_request())

    assert task.status is TaskStatus.COMPLETED
    assert task.tokens_source is TokensSource.ESTIMATED
    assert "usage.prompt_tokens is not a whole number" in caplog.text


def test_the_model_comes_from_the_request_else_from_the_reply(make_app: MakeApp) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/generate", payloads.ollama_generate_reply(3, 4, model="from-reply"))

    _, named = call(app, earnings, "/api/generate", payloads.ollama_generate_request(model="from-request"))
    _, unnamed = call(app, earnings, "/api/generate", {"prompt": "hi", "stream": False})

    assert named.model == "from-request"
    assert unnamed.model == "from-reply"


def test_a_task_carries_the_request_id_device_and_client(make_app: MakeApp) -> None:
    app, earnings = make_app(device_id="node-7", client=lambda: "alice")
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))

    before = datetime.now(UTC)
    response, task = call(
        app, earnings, "/api/embed", payloads.ollama_embed_request(), headers={"X-Request-ID": "req-42"}
    )

    assert response.headers[TASK_HEADER] == task.id
    assert task.request_id == "req-42"
    assert (task.device_id, task.client) == ("node-7", "alice")
    assert task.rate_version == 1
    for moment in (task.created_at, task.started_at, task.finished_at):
        assert moment is not None and moment.tzinfo is not None and moment.utcoffset().total_seconds() == 0
    assert task.started_at is not None and task.finished_at is not None
    assert before <= task.created_at <= task.started_at <= task.finished_at
    assert task.duration_ms is not None and 0 <= task.duration_ms < 1000


def test_device_id_may_be_a_function(make_app: MakeApp) -> None:
    app, earnings = make_app(device_id=lambda: "gpu-box-3")
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))

    _, task = call(app, earnings, "/api/embed", payloads.ollama_embed_request())

    assert task.device_id == "gpu-box-3"


def test_each_call_is_its_own_task(make_app: MakeApp) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))

    ids = {call(app, earnings, "/api/embed", payloads.ollama_embed_request())[1].id for _ in range(5)}

    assert len(ids) == 5
