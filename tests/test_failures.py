"""A call that fails is a failed task: its error is kept, and it earns nothing."""

from __future__ import annotations

import pytest
from flask import Response, jsonify

from flask_earnings import TaskStatus

from . import payloads
from .conftest import MakeApp
from .helpers import TASK_HEADER, add_upstream_view, call, received_signals, stored_task


@pytest.mark.parametrize("shape", ["json", "relay"])
def test_an_ollama_error_status_fails_the_task_with_its_message(make_app: MakeApp, shape: str) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/chat", payloads.ollama_error("model 'llama9' not found"), status=404, shape=shape)

    response, task = call(app, earnings, "/api/chat", payloads.ollama_chat_request(model="llama9"))

    assert response.status_code == 404
    assert task.status is TaskStatus.FAILED
    assert task.error == "model 'llama9' not found"
    assert task.http_status == 404
    assert task.earnings is None


def test_an_openai_error_status_fails_the_task_with_its_message(make_app: MakeApp) -> None:
    app, earnings = make_app()
    add_upstream_view(
        app, "/v1/chat/completions", payloads.openai_error("The model `gpt-9` does not exist."), status=404
    )

    _, task = call(app, earnings, "/v1/chat/completions", payloads.openai_chat_request(model="gpt-9"))

    assert (task.status, task.error, task.earnings) == (TaskStatus.FAILED, "The model `gpt-9` does not exist.", None)


def test_older_vllm_flat_error_objects_are_read_too(make_app: MakeApp) -> None:
    app, earnings = make_app()
    flat = {"object": "error", "message": "max_tokens is too large", "type": "BadRequestError", "code": 400}
    add_upstream_view(app, "/v1/completions", flat, status=400)

    _, task = call(app, earnings, "/v1/completions", payloads.openai_completion_request())

    assert (task.status, task.error) == (TaskStatus.FAILED, "max_tokens is too large")


def test_an_error_body_under_a_success_status_fails_the_task(make_app: MakeApp) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/generate", payloads.ollama_error("unexpected EOF"), status=200)

    _, task = call(app, earnings, "/api/generate", payloads.ollama_generate_request())

    assert (task.status, task.error, task.earnings) == (TaskStatus.FAILED, "unexpected EOF", None)


def test_an_error_status_without_a_readable_body_names_the_status(make_app: MakeApp) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/chat", b"<html>Bad Gateway</html>", status=502, content_type="text/html")

    _, task = call(app, earnings, "/api/chat", payloads.ollama_chat_request())

    assert (task.status, task.error) == (TaskStatus.FAILED, "HTTP 502")


def test_a_success_status_with_an_unreadable_body_fails_the_task(make_app: MakeApp) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/chat", b"<html>surprise</html>", status=200, content_type="text/html")

    response, task = call(app, earnings, "/api/chat", payloads.ollama_chat_request())

    assert response.data == b"<html>surprise</html>"
    assert task.status is TaskStatus.FAILED
    assert task.error is not None and task.error.startswith("unreadable reply: reply is not JSON")


def test_a_view_that_raises_fails_the_task_with_the_exception(make_app: MakeApp) -> None:
    app, earnings = make_app()

    @app.post("/api/chat")
    def broken() -> Response:
        raise ConnectionError("upstream refused the connection")

    response, task = call(app, earnings, "/api/chat", payloads.ollama_chat_request())

    assert response.status_code == 500
    assert task.status is TaskStatus.FAILED
    assert task.error == "ConnectionError: upstream refused the connection"
    assert task.http_status == 500
    assert task.earnings is None


def test_an_exception_that_propagates_out_of_the_app_still_fails_the_task(make_app: MakeApp) -> None:
    """With PROPAGATE_EXCEPTIONS (testing, debug) no response is made and after_request never runs."""
    app, earnings = make_app(config={"PROPAGATE_EXCEPTIONS": True})

    @app.post("/api/generate")
    def broken() -> Response:
        raise ValueError("bad prompt")

    with received_signals(app) as received:
        with pytest.raises(ValueError, match="bad prompt"):
            app.test_client().post("/api/generate", json=payloads.ollama_generate_request())
        with app.app_context():
            assert earnings.flush(10)
    [failed] = received.of("task_failed")
    task = stored_task(app, earnings, failed.id)

    assert (task.status, task.error, task.http_status) == (TaskStatus.FAILED, "ValueError: bad prompt", None)


def test_an_aborted_request_is_a_failed_task(make_app: MakeApp) -> None:
    app, earnings = make_app()

    @app.post("/v1/embeddings")
    def unauthorised() -> Response:
        response = jsonify(payloads.openai_error("Invalid API key", 401))
        response.status_code = 401
        return response

    response, task = call(app, earnings, "/v1/embeddings", payloads.openai_embeddings_request())

    assert response.headers[TASK_HEADER] == task.id
    assert (task.status, task.error, task.http_status) == (TaskStatus.FAILED, "Invalid API key", 401)
