"""Which calls are tracked: POSTs to exact paths, the query string ignored."""

from __future__ import annotations

import pytest
from flask import Response

from flask_earnings.endpoints import EndpointRuleError

from . import payloads
from .conftest import MakeApp
from .helpers import TASK_HEADER, add_upstream_view, call

OLLAMA_PATHS = {
    "/api/chat": "chat",
    "/api/generate": "generate",
    "/api/embed": "embeddings",
    "/api/embeddings": "embeddings",
}
OPENAI_PATHS = {
    "/chat/completions": "chat/completions",
    "/completions": "completions",
    "/embeddings": "embeddings",
}
TRACKED = {
    prefix + path: ("ollama", task_type) for prefix in ("", "/ollama") for path, task_type in OLLAMA_PATHS.items()
}
TRACKED |= {
    prefix + path: ("vllm", task_type)
    for prefix in ("/openai", "/openai/v1", "/v1")
    for path, task_type in OPENAI_PATHS.items()
}
UNTRACKED = [
    "/api/chat/",
    "/api/chatty",
    "/api/tags",
    "/api/show",
    "/gateway/api/chat",
    "/ollama/api/ps",
    "/openai/v2/chat/completions",
    "/v1/models",
    "/v1/chat/completions/extra",
    "/v1/audio/transcriptions",
    "/",
]


@pytest.fixture(autouse=True)
def no_framework_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODEL_INFERENCE_FRAMEWORK", raising=False)


@pytest.mark.parametrize(("path", "expected"), TRACKED.items())
def test_tracked_paths_name_their_framework_and_task_type(
    make_app: MakeApp, path: str, expected: tuple[str, str]
) -> None:
    app, earnings = make_app()

    with app.app_context():
        assert earnings.is_trackable_endpoint(path)
        assert earnings.is_trackable_endpoint(path + "?stream=true")
        assert earnings.is_trackable_endpoint("http://gateway.local:8080" + path)
        assert (earnings.get_framework(path), earnings.get_task_type(path)) == expected


@pytest.mark.parametrize("path", UNTRACKED)
def test_near_misses_are_not_tracked(make_app: MakeApp, path: str) -> None:
    app, earnings = make_app()

    with app.app_context():
        assert not earnings.is_trackable_endpoint(path)
        assert earnings.get_framework(path) is None
        assert earnings.get_task_type(path) is None


def test_untracked_paths_and_gets_make_no_task(make_app: MakeApp) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/chatty", payloads.ollama_chat_reply(1, 1))

    @app.get("/api/chat")
    def chat_page() -> Response:
        return Response("a page", content_type="text/plain")

    client = app.test_client()
    responses = [
        client.post("/api/chatty", json=payloads.ollama_chat_request(), buffered=True),
        client.get("/api/chat", buffered=True),
    ]

    for response in responses:
        assert response.status_code == 200
        assert TASK_HEADER not in response.headers
    with app.app_context():
        assert earnings.flush(5)
        with earnings._state().store.connect() as connection:  # no row at all
            assert connection.execute(earnings._state().store.tables.tasks.select()).first() is None


def test_the_query_string_does_not_stop_tracking(make_app: MakeApp) -> None:
    app, _ = make_app()
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))

    response = app.test_client().post("/api/embed?keep_alive=5m", json=payloads.ollama_embed_request(), buffered=True)

    assert TASK_HEADER in response.headers


def test_extra_rules_add_and_remove_paths(make_app: MakeApp) -> None:
    app, earnings = make_app(
        endpoints={
            "/gateway/chat": {"protocol": "openai", "task_type": "chat/completions"},
            "/llamacpp/completion": {"protocol": "openai", "task_type": "completions", "framework": "llamacpp"},
            "/node/api/generate": {"protocol": "ollama", "task_type": "generate"},
            "/v1/embeddings": None,
        }
    )
    add_upstream_view(app, "/gateway/chat", payloads.openai_chat_reply(payloads.openai_usage(3, 4)))

    with app.app_context():
        assert earnings.get_framework("/gateway/chat") == "vllm"
        assert earnings.get_framework("/llamacpp/completion") == "llamacpp"
        assert (earnings.get_framework("/node/api/generate"), earnings.get_task_type("/node/api/generate")) == (
            "ollama",
            "generate",
        )
        assert not earnings.is_trackable_endpoint("/v1/embeddings")
    _, task = call(app, earnings, "/gateway/chat", payloads.openai_chat_request())
    assert (task.input_tokens, task.output_tokens, task.task_type) == (3, 4, "chat/completions")


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"no-slash": {"protocol": "openai", "task_type": "completions"}}, "no-slash: Must be a path"),
        ({"/x": {"protocol": "grpc", "task_type": "chat"}}, r"/x.protocol: Must be one of: ollama, openai"),
        ({"/x": {"protocol": "ollama", "task_type": "completions"}}, "/x.task_type: Must be one of: chat, generate"),
        ({"/x": {"protocol": "openai", "task_type": "chat/completions", "speed": 1}}, "/x.speed: Unknown field"),
        ({"/x": {"protocol": "openai", "task_type": "embeddings", "framework": "vLLM"}}, "/x.framework"),
        ({"/x": {"task_type": "embeddings"}}, "/x.protocol: Missing data"),
    ],
)
def test_a_bad_extra_rule_stops_the_app_naming_the_field(make_app: MakeApp, rules: dict, message: str) -> None:
    with pytest.raises(EndpointRuleError, match=message):
        make_app(endpoints=rules)
